//! Via processing at the transport edge: stamping `received`/`rport` on
//! requests (RFC 3261 §18.2.1, RFC 3581 §4) and choosing where a response
//! goes (RFC 3261 §18.2.2, RFC 3581 §4).

use super::addr::Via;
use super::message::SipMessage;
use super::text::{push_decimal, push_ip};
use std::net::{IpAddr, SocketAddr};

/// Adds `received` when the sent-by host is not the packet's source IP,
/// and fills an empty `rport` with the source port.
pub fn stamp_received(msg: &mut SipMessage, source: SocketAddr) {
    let Some(top) = msg.top_via() else { return };
    let Ok(via) = Via::parse(top) else { return };
    let rport = via.param("rport");
    let wants_rport = rport.is_some_and(str::is_empty);
    let host_is_source = via.host.parse::<IpAddr>().ok() == Some(source.ip());
    if host_is_source && !wants_rport {
        return;
    }
    // One buffer, the Via as written up to its parameters, then the
    // parameters but received/rport, then ours (this runs for every request).
    let mut out = String::with_capacity(top.len() + 48);
    out.push_str(&top[..via.params.as_ptr() as usize - top.as_ptr() as usize]);
    for p in via.params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let name = p.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("rport") {
            continue;
        }
        out.push(';');
        out.push_str(p);
    }
    out.push_str(";received=");
    push_ip(&mut out, source.ip());
    if wants_rport {
        out.push_str(";rport=");
        push_decimal(&mut out, u32::from(source.port()));
    } else if let Some(r) = rport {
        out.push_str(";rport=");
        out.push_str(r);
    }
    msg.set_top_via(out);
}

/// Where a response to a request received over UDP goes: `received` +
/// `rport` if present, else `received` + sent-by port, else sent-by
/// (default port 5060). Returns None if the Via is unusable.
pub fn response_destination(top_via: &str) -> Option<SocketAddr> {
    destination_of(&Via::parse(top_via).ok()?)
}

/// [`response_destination`] of a Via already parsed.
pub fn destination_of(via: &Via) -> Option<SocketAddr> {
    let ip: IpAddr = match via.param("received") {
        Some(r) => r.parse().ok()?,
        None => via.host.parse().ok()?,
    };
    let port = match via.param("rport").and_then(|p| p.parse().ok()) {
        Some(p) => p,
        None => via.port.unwrap_or(5060),
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(via: &str) -> SipMessage {
        let raw = format!(
            "OPTIONS sip:x SIP/2.0\r\nVia: {via}\r\nCall-ID: a\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@b>\r\n\r\n"
        );
        SipMessage::parse_datagram(Bytes::from(raw)).unwrap()
    }

    #[test]
    fn rport_and_received_are_filled() {
        let mut m = msg("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport, SIP/2.0/UDP other");
        let src: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        stamp_received(&mut m, src);
        let top = m.top_via().unwrap().to_string();
        assert_eq!(
            top,
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;received=192.0.2.7;rport=40000"
        );
        assert_eq!(m.header_values(&crate::sip::HeaderName::Via).count(), 2);
        assert_eq!(response_destination(&top), Some(src));
    }

    #[test]
    fn a_stale_received_is_replaced_and_the_via_kept_as_written() {
        let mut m = msg("SIP/2.0/UDP  phone.example:5060 ;received=198.51.100.1;branch=z9hG4bK1;rport=7000");
        stamp_received(&mut m, "192.0.2.7:40000".parse().unwrap());
        assert_eq!(
            m.top_via().unwrap(),
            "SIP/2.0/UDP  phone.example:5060 ;branch=z9hG4bK1;received=192.0.2.7;rport=7000"
        );
    }

    #[test]
    fn no_rport_uses_sent_by_port() {
        let mut m = msg("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1");
        stamp_received(&mut m, "192.0.2.7:40000".parse().unwrap());
        assert_eq!(
            response_destination(m.top_via().unwrap()),
            Some("192.0.2.7:5070".parse().unwrap())
        );
        let mut same = msg("SIP/2.0/UDP [::1]:5062;branch=z9hG4bK1");
        stamp_received(&mut same, "[::1]:5062".parse().unwrap());
        assert_eq!(same.top_via().unwrap(), "SIP/2.0/UDP [::1]:5062;branch=z9hG4bK1");
        assert_eq!(
            response_destination(same.top_via().unwrap()),
            Some("[::1]:5062".parse().unwrap())
        );
    }
}
