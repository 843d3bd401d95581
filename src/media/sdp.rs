//! SDP handling for the relay (RFC 4566, RFC 3264): reads where a party
//! wants audio sent, and rewrites an offer/answer so that media flows
//! through our relay ports. Codecs, `a=rtpmap`/`a=fmtp` (incl. RFC 4733
//! telephone-event) and direction attributes pass through unchanged.

use std::net::{IpAddr, SocketAddr};

/// Media direction (RFC 3264 §5.1); absent means sendrecv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// What we need from a party's SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInfo {
    /// Where the party receives RTP for the first audio stream; None when
    /// the connection address is 0.0.0.0 (RFC 2543 hold) or the port is 0.
    pub rtp: Option<SocketAddr>,
    pub direction: Direction,
    /// Payload types offered on the audio m-line.
    pub payload_types: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is not text")]
    NotText,
    #[error("SDP has no audio stream")]
    NoAudio,
    #[error("SDP has no usable connection address")]
    NoConnection,
}

/// Reads the first audio stream of an SDP body.
pub fn media_info(body: &[u8]) -> Result<MediaInfo, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotText)?;
    let mut session_c: Option<String> = None;
    let mut session_dir = Direction::SendRecv;
    // (port, payload types, media-level address, media-level direction)
    type AudioLine = (u16, Vec<u8>, Option<String>, Option<Direction>);
    let mut audio: Option<AudioLine> = None;
    let mut in_audio = false;
    let mut seen_audio = false;
    for line in text.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            in_audio = m.starts_with("audio ") && !seen_audio;
            if in_audio {
                seen_audio = true;
                let mut parts = m.split_whitespace().skip(1);
                let port = parts
                    .next()
                    .and_then(|p| p.split('/').next()?.parse().ok())
                    .unwrap_or(0);
                let pts = parts.skip(1).filter_map(|p| p.parse().ok()).collect();
                audio = Some((port, pts, None, None));
            }
            continue;
        }
        if let Some(c) = line.strip_prefix("c=") {
            let addr = c
                .split_whitespace()
                .nth(2)
                .map(|a| a.split('/').next().unwrap_or(a).to_string());
            match (&mut audio, in_audio) {
                (Some(a), true) => a.2 = addr,
                (None, _) => session_c = addr,
                _ => {}
            }
            continue;
        }
        if let Some(attr) = line.strip_prefix("a=") {
            let dir = match attr {
                "sendrecv" => Some(Direction::SendRecv),
                "sendonly" => Some(Direction::SendOnly),
                "recvonly" => Some(Direction::RecvOnly),
                "inactive" => Some(Direction::Inactive),
                _ => None,
            };
            if let Some(d) = dir {
                match (&mut audio, in_audio) {
                    (Some(a), true) => a.3 = Some(d),
                    (None, _) => session_dir = d,
                    _ => {}
                }
            }
        }
    }
    let (port, payload_types, media_c, media_dir) = audio.ok_or(SdpError::NoAudio)?;
    let c = media_c.or(session_c).ok_or(SdpError::NoConnection)?;
    let ip: IpAddr = c.parse().map_err(|_| SdpError::NoConnection)?;
    let rtp = (!ip.is_unspecified() && port != 0).then_some(SocketAddr::new(ip, port));
    Ok(MediaInfo {
        rtp,
        direction: media_dir.unwrap_or(session_dir),
        payload_types,
    })
}

/// Rewrites an SDP so the party that receives it sends audio to `relay`
/// (RTP port; RTCP is port + 1). Only the first audio stream is relayed;
/// other streams are refused with port 0 (RFC 3264 §6). ICE candidates and
/// explicit `a=rtcp` lines are dropped since they name the far party.
pub fn rewrite(body: &[u8], relay: SocketAddr) -> Result<Vec<u8>, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotText)?;
    let (ip_ver, ip) = match relay.ip() {
        IpAddr::V4(a) => ("IP4", a.to_string()),
        IpAddr::V6(a) => ("IP6", a.to_string()),
    };
    let mut out = String::with_capacity(text.len() + 32);
    let mut seen_audio = false;
    let mut found = false;
    for line in text.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            let _port = parts.next();
            let rest = parts.next().unwrap_or("");
            if kind == "audio" && !seen_audio {
                seen_audio = true;
                found = true;
                out.push_str(&format!("m={kind} {} {rest}\r\n", relay.port()));
            } else {
                out.push_str(&format!("m={kind} 0 {rest}\r\n"));
            }
            continue;
        }
        if line.starts_with("c=") {
            out.push_str(&format!("c=IN {ip_ver} {ip}\r\n"));
            continue;
        }
        if let Some(o) = line.strip_prefix("o=") {
            // Origin names us now (RFC 4566 §5.2); keep session id/version.
            let f: Vec<&str> = o.split_whitespace().collect();
            if f.len() == 6 {
                out.push_str(&format!("o=switchboard {} {} IN {ip_ver} {ip}\r\n", f[1], f[2]));
                continue;
            }
        }
        if line.starts_with("a=candidate") || line.starts_with("a=rtcp:") || line.starts_with("a=ice-") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if !found {
        return Err(SdpError::NoAudio);
    }
    Ok(out.into_bytes())
}

/// The session id and version of an SDP's origin line (RFC 4566 §5.2).
pub fn origin(body: &[u8]) -> Option<(String, u64)> {
    let text = std::str::from_utf8(body).ok()?;
    let o = text.lines().find_map(|l| l.trim_end().strip_prefix("o="))?;
    let f: Vec<&str> = o.split_whitespace().collect();
    Some((f.get(1)?.to_string(), f.get(2)?.parse().ok()?))
}

/// Our answer to a party's re-INVITE that we take ourselves (hold and
/// resume, RFC 3264 §8.4): its own offer pointed at `relay`, with the
/// direction complemented (sendonly → recvonly, recvonly → sendonly,
/// inactive and sendrecv kept) and our origin line `previous` (the last
/// SDP we sent this party) with the version incremented.
pub fn answer_in_kind(offer: &[u8], relay: SocketAddr, previous: Option<(String, u64)>) -> Result<Vec<u8>, SdpError> {
    let rewritten = String::from_utf8(rewrite(offer, relay)?).map_err(|_| SdpError::NotText)?;
    let mut out = String::with_capacity(rewritten.len());
    for line in rewritten.lines() {
        let line = match line {
            "a=sendonly" => "a=recvonly".to_string(),
            "a=recvonly" => "a=sendonly".to_string(),
            l if l.starts_with("o=") => match &previous {
                Some((id, version)) => {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    format!("o=switchboard {id} {} {}", version + 1, f[3..].join(" "))
                }
                None => l.to_string(),
            },
            l => l.to_string(),
        };
        out.push_str(&line);
        out.push_str("\r\n");
    }
    Ok(out.into_bytes())
}

/// Our own SDP answer (RFC 3264 §6) for when the PBX answers a call:
/// PCMU if offered, else PCMA, plus telephone-event with the offer's
/// payload type. None when the offer has neither codec.
pub fn answer(offer: &MediaInfo, offer_body: &[u8], relay: SocketAddr) -> Option<Vec<u8>> {
    answer_preferring(offer, offer_body, relay, None)
}

/// [`answer`], choosing `preferred` (0 or 8) when the offer has it: the
/// codec of a party this one will be joined to (the relay does not
/// transcode).
pub fn answer_preferring(
    offer: &MediaInfo,
    offer_body: &[u8],
    relay: SocketAddr,
    preferred: Option<u8>,
) -> Option<Vec<u8>> {
    let pt = preferred
        .into_iter()
        .chain([0u8, 8])
        .find(|p| offer.payload_types.contains(p))?;
    let text = std::str::from_utf8(offer_body).ok()?;
    let dtmf = text.lines().find_map(|l| {
        let rest = l.strip_prefix("a=rtpmap:")?;
        let (num, codec) = rest.split_once(' ')?;
        codec
            .to_ascii_lowercase()
            .starts_with("telephone-event/8000")
            .then(|| num.trim().parse::<u8>().ok())?
    });
    Some(our_sdp(relay, &[pt], dtmf))
}

/// Our own offer, for a call the PBX places first (click-to-call): PCMU
/// and PCMA, and telephone-event as 101.
pub fn offer(relay: SocketAddr) -> Vec<u8> {
    our_sdp(relay, &[0, 8], Some(101))
}

/// A session with one audio stream at `relay`: G.711 payload types
/// `codecs` (0 PCMU, 8 PCMA), and RFC 4733 events as `dtmf`.
fn our_sdp(relay: SocketAddr, codecs: &[u8], dtmf: Option<u8>) -> Vec<u8> {
    let (ver, ip) = match relay.ip() {
        IpAddr::V4(a) => ("IP4", a.to_string()),
        IpAddr::V6(a) => ("IP6", a.to_string()),
    };
    let session: u32 = rand::random();
    let mut s = format!(
        "v=0\r\no=switchboard {session} {session} IN {ver} {ip}\r\ns=switchboard\r\nc=IN {ver} {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP",
        relay.port()
    );
    for pt in codecs.iter().chain(&dtmf) {
        s.push_str(&format!(" {pt}"));
    }
    s.push_str("\r\n");
    for pt in codecs {
        s.push_str(&format!(
            "a=rtpmap:{pt} {}/8000\r\n",
            if *pt == 0 { "PCMU" } else { "PCMA" }
        ));
    }
    if let Some(d) = dtmf {
        s.push_str(&format!("a=rtpmap:{d} telephone-event/8000\r\na=fmtp:{d} 0-16\r\n"));
    }
    s.push_str("a=ptime:20\r\na=sendrecv\r\n");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n\
c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=rtcp:49171\r\na=candidate:1 1 UDP 1 192.0.2.10 49170 typ host\r\n\
m=video 51372 RTP/AVP 31\r\nc=IN IP4 192.0.2.11\r\n";

    #[test]
    fn reads_address_codecs_and_direction() {
        let m = media_info(OFFER.as_bytes()).unwrap();
        assert_eq!(m.rtp, Some("192.0.2.10:49170".parse().unwrap()));
        assert_eq!(m.payload_types, vec![0, 8, 101]);
        assert_eq!(m.direction, Direction::SendRecv);
        let hold = OFFER.replace(
            "m=audio 49170 RTP/AVP 0 8 101\r\n",
            "m=audio 49170 RTP/AVP 0 8 101\r\na=sendonly\r\n",
        );
        assert_eq!(media_info(hold.as_bytes()).unwrap().direction, Direction::SendOnly);
        let relay: SocketAddr = "192.0.2.9:30000".parse().unwrap();
        let ours = String::from_utf8(answer_in_kind(hold.as_bytes(), relay, Some(("77".into(), 3))).unwrap()).unwrap();
        assert!(
            ours.contains("a=recvonly\r\n") && !ours.contains("a=sendonly"),
            "{ours}"
        );
        assert!(ours.contains("o=switchboard 77 4 IN IP4 192.0.2.9\r\n"), "{ours}");
        assert!(
            ours.contains("m=audio 30000 ") && ours.contains("c=IN IP4 192.0.2.9"),
            "{ours}"
        );
        assert_eq!(origin(ours.as_bytes()), Some(("77".into(), 4)));
        let old_hold = OFFER.replace("c=IN IP4 192.0.2.10\r\nt=0", "c=IN IP4 0.0.0.0\r\nt=0");
        assert_eq!(media_info(old_hold.as_bytes()).unwrap().rtp, None);
        assert_eq!(media_info(b"v=0\r\nm=video 1 RTP/AVP 31\r\n"), Err(SdpError::NoAudio));
    }

    #[test]
    fn answer_picks_g711_and_keeps_dtmf_type() {
        let m = media_info(OFFER.as_bytes()).unwrap();
        let a = String::from_utf8(answer(&m, OFFER.as_bytes(), "127.0.0.1:20000".parse().unwrap()).unwrap()).unwrap();
        assert!(a.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{a}");
        assert!(a.contains("a=rtpmap:101 telephone-event/8000"));
        let only_g729 = OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 18");
        let m = media_info(only_g729.as_bytes()).unwrap();
        assert!(answer(&m, only_g729.as_bytes(), "127.0.0.1:20000".parse().unwrap()).is_none());
    }

    #[test]
    fn rewrite_points_audio_at_the_relay_and_keeps_codecs() {
        let out = String::from_utf8(rewrite(OFFER.as_bytes(), "127.0.0.1:30000".parse().unwrap()).unwrap()).unwrap();
        assert!(
            out.contains("o=switchboard 2890844526 2890844526 IN IP4 127.0.0.1\r\n"),
            "{out}"
        );
        assert!(out.contains("c=IN IP4 127.0.0.1\r\n"));
        assert!(out.contains("m=audio 30000 RTP/AVP 0 8 101\r\n"));
        assert!(out.contains("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"));
        assert!(out.contains("m=video 0 RTP/AVP 31\r\n"), "other streams refused");
        assert!(!out.contains("a=rtcp:") && !out.contains("a=candidate"));
        assert!(!out.contains("192.0.2"), "no trace of the far party: {out}");
        let m = media_info(out.as_bytes()).unwrap();
        assert_eq!(m.rtp, Some("127.0.0.1:30000".parse().unwrap()));
        let v6 = String::from_utf8(rewrite(OFFER.as_bytes(), "[::1]:30002".parse().unwrap()).unwrap()).unwrap();
        assert!(v6.contains("c=IN IP6 ::1\r\n"));
    }
}
