//! Dialog state of one leg (RFC 3261 §12) and the requests we build in
//! it: in-dialog requests (§12.2.1.1), ACK for a 2xx (§13.2.2.4), CANCEL
//! (§9.1), and the initial INVITE of a callee leg.

use crate::sip::addr::{CSeq, NameAddr};
use crate::sip::message::{Header, StartLine};
use crate::sip::response::{keyed_hash, random_token};
use crate::sip::transaction::Peer;
use crate::sip::{HeaderName, Method, SipMessage};
use bytes::Bytes;
use bytestring::ByteString;
use std::net::SocketAddr;

/// What names a dialog (RFC 3261 §12): the Call-ID and both tags. A
/// request belongs to a dialog only if all three match; the Call-ID alone
/// is guessable and shared by nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog a request received by us names: its To tag is ours,
    /// its From tag the sender's (§12.2.2).
    pub fn of_request(req: &SipMessage) -> Option<DialogId> {
        Some(DialogId {
            call_id: req.call_id()?.to_string(),
            local_tag: tag_of(req.header(&HeaderName::To)?)?,
            remote_tag: tag_of(req.header(&HeaderName::From)?).unwrap_or_default(),
        })
    }
}

/// The tag parameter of a From/To header value.
pub fn tag_of(header_value: &str) -> Option<String> {
    tag_in(header_value).map(str::to_string)
}

/// The tag parameter of a From/To header value, borrowed.
pub fn tag_in(header_value: &str) -> Option<&str> {
    NameAddr::parse(header_value).ok().and_then(|a| a.tag())
}

/// Our side of one dialog.
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    /// Our From/To header value (with our tag).
    pub local: String,
    /// Their From/To header value (with their tag).
    pub remote: String,
    /// Where in-dialog requests go (their Contact URI).
    pub remote_target: String,
    pub peer: Peer,
    pub local_cseq: u32,
    /// Our address for Via and Contact on this leg.
    pub via_addr: SocketAddr,
    /// Route headers of in-dialog requests: the Record-Route of the
    /// dialog-creating request or response (§12.1.1, §12.1.2), so proxies
    /// that asked to stay on the path (loose routing) see our requests.
    pub route_set: Vec<String>,
}

pub fn host_port(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => v.to_string(),
        SocketAddr::V6(v) => format!("[{}]:{}", v.ip(), v.port()),
    }
}

/// The addresses we listen on, for the Via and Contact of messages we
/// send: a TLS peer is given our TLS address, others the plain one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalAddrs {
    /// UDP and TCP.
    pub plain: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
}

impl From<Vec<SocketAddr>> for LocalAddrs {
    fn from(plain: Vec<SocketAddr>) -> LocalAddrs {
        LocalAddrs { plain, tls: Vec::new() }
    }
}

/// Our address for Via and Contact toward `peer`: the listen address of
/// its transport and IP family (a v6 peer cannot reach a v4 sent-by).
pub fn local_addr_for(local: &LocalAddrs, peer: Peer) -> SocketAddr {
    let listen = match peer.transport {
        crate::sip::transaction::TransportKind::Tls if !local.tls.is_empty() => &local.tls,
        _ => &local.plain,
    };
    listen
        .iter()
        .find(|a| a.is_ipv4() == peer.addr.is_ipv4())
        .or(listen.first())
        .copied()
        .unwrap_or(peer.addr)
}

pub fn new_branch() -> String {
    format!("z9hG4bK{}", random_token())
}

pub fn via(peer: Peer, via_addr: SocketAddr, branch: &str) -> String {
    format!(
        "SIP/2.0/{} {};branch={branch};rport",
        peer.transport.via_name(),
        host_port(via_addr)
    )
}

pub fn contact(peer: Peer, via_addr: SocketAddr) -> String {
    use crate::sip::transaction::TransportKind;
    let t = match peer.transport {
        TransportKind::Udp => "",
        TransportKind::Tcp => ";transport=tcp",
        TransportKind::Tls => ";transport=tls",
    };
    format!("<sip:switchboard@{}{t}>", host_port(via_addr))
}

/// The route set a UAC learns from a 2xx: its Record-Route, reversed (§12.1.2).
pub fn route_set_of_response(resp: &SipMessage) -> Vec<String> {
    let mut r: Vec<String> = resp
        .header_values(&HeaderName::RecordRoute)
        .map(str::to_string)
        .collect();
    r.reverse();
    r
}

/// The route set a UAS learns from the request: its Record-Route, in order (§12.1.1).
pub fn route_set_of_request(req: &SipMessage) -> Vec<String> {
    req.header_values(&HeaderName::RecordRoute)
        .map(str::to_string)
        .collect()
}

/// The Contact URI of a message (for the remote target).
pub fn contact_uri(msg: &SipMessage) -> Option<String> {
    let c = msg.header_values(&HeaderName::Contact).next()?;
    NameAddr::parse(c).ok().map(|a| a.uri_text.to_string())
}

fn header(name: HeaderName, value: impl Into<ByteString>) -> Header {
    Header {
        name,
        value: value.into(),
    }
}

pub fn request(method: Method, uri: &str, headers: Vec<Header>, body: Bytes) -> SipMessage {
    SipMessage {
        start: StartLine::Request {
            method,
            uri: ByteString::from(uri),
        },
        headers,
        body,
    }
}

impl Dialog {
    /// The dialog's identifier as requests from the other party name it.
    pub fn id(&self) -> DialogId {
        DialogId {
            call_id: self.call_id.clone(),
            local_tag: tag_of(&self.local).unwrap_or_default(),
            remote_tag: tag_of(&self.remote).unwrap_or_default(),
        }
    }

    /// A new in-dialog request with the next CSeq (§12.2.1.1).
    pub fn request(&mut self, method: Method, body: Option<(&str, Bytes)>) -> SipMessage {
        if method != Method::Ack {
            self.local_cseq += 1;
        }
        let branch = new_branch();
        let mut h = vec![
            header(HeaderName::Via, via(self.peer, self.via_addr, &branch)),
            header(HeaderName::MaxForwards, "70"),
            header(HeaderName::From, self.local.clone()),
            header(HeaderName::To, self.remote.clone()),
            header(HeaderName::CallId, self.call_id.clone()),
            header(HeaderName::CSeq, format!("{} {}", self.local_cseq, method)),
        ];
        h.extend(self.routes());
        if matches!(method, Method::Invite | Method::Update) {
            h.push(header(HeaderName::Contact, contact(self.peer, self.via_addr)));
        }
        let body = match body {
            Some((ctype, b)) => {
                h.push(header(HeaderName::ContentType, ctype.to_string()));
                b
            }
            None => Bytes::new(),
        };
        request(method, &self.remote_target.clone(), h, body)
    }

    /// ACK for a 2xx to our INVITE with CSeq `cseq` (§13.2.2.4). Its
    /// branch comes from the dialog and `cseq`, so the ACK sent again for
    /// each retransmission of the 2xx is the same request, byte for byte
    /// (§13.2.2.4, §17.1.1.3): a new branch would make it a second ACK to
    /// the peer (SIPp aborts such a call).
    pub fn ack(&self, cseq: u32) -> SipMessage {
        let branch = format!("z9hG4bK{:016x}", keyed_hash((&self.call_id, &self.local, cseq, "ACK")));
        let h = vec![
            header(HeaderName::Via, via(self.peer, self.via_addr, &branch)),
            header(HeaderName::MaxForwards, "70"),
            header(HeaderName::From, self.local.clone()),
            header(HeaderName::To, self.remote.clone()),
            header(HeaderName::CallId, self.call_id.clone()),
            header(HeaderName::CSeq, format!("{cseq} ACK")),
        ];
        let h = h.into_iter().chain(self.routes()).collect();
        request(Method::Ack, &self.remote_target, h, Bytes::new())
    }

    fn routes(&self) -> impl Iterator<Item = Header> + '_ {
        self.route_set.iter().map(|r| header(HeaderName::Route, r.clone()))
    }
}

/// CANCEL for a pending INVITE: same Request-URI, top Via, From, To,
/// Call-ID and CSeq number (§9.1).
pub fn cancel_for(invite: &SipMessage) -> SipMessage {
    let mut h = Vec::with_capacity(6);
    for hd in &invite.headers {
        match hd.name {
            HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::MaxForwards => {
                h.push(hd.clone())
            }
            HeaderName::CSeq => h.push(header(HeaderName::CSeq, CSeq::same_number(&hd.value, &Method::Cancel))),
            _ => {}
        }
    }
    request(Method::Cancel, invite.request_uri().unwrap_or(""), h, Bytes::new())
}

/// What a new callee leg's INVITE needs.
pub struct CalleeInvite<'a> {
    pub target_uri: &'a str,
    pub peer: Peer,
    pub via_addr: SocketAddr,
    pub from_number: &'a str,
    pub from_name: Option<&'a str>,
    pub to_user: &'a str,
    pub from_domain: &'a str,
    pub to_domain: &'a str,
    pub max_forwards: u8,
    pub sdp: Bytes,
    pub user_agent: &'a str,
}

impl CalleeInvite<'_> {
    /// Returns the INVITE and the dialog it starts (remote tag unknown yet).
    pub fn build(&self) -> (SipMessage, Dialog) {
        let call_id = format!("{}@switchboard", random_token());
        let from_tag = random_token();
        let display = self
            .from_name
            .map(|n| format!("\"{}\" ", n.replace('"', "")))
            .unwrap_or_default();
        let local = format!(
            "{display}<sip:{}@{}>;tag={from_tag}",
            self.from_number, self.from_domain
        );
        let remote = format!("<sip:{}@{}>", self.to_user, self.to_domain);
        let mut dialog = Dialog {
            call_id: call_id.clone(),
            local,
            remote,
            remote_target: self.target_uri.to_string(),
            peer: self.peer,
            local_cseq: 0,
            via_addr: self.via_addr,
            route_set: Vec::new(),
        };
        let mut req = dialog.request(Method::Invite, Some(("application/sdp", self.sdp.clone())));
        for h in req.headers.iter_mut() {
            if h.name == HeaderName::MaxForwards {
                h.value = ByteString::from(self.max_forwards.to_string());
            }
        }
        req.push_header(HeaderName::Allow, crate::sip::method::ALLOWED_IN_CALL);
        req.push_header(HeaderName::UserAgent, self.user_agent.to_string());
        (req, dialog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::TransportKind;

    #[test]
    fn requests_in_a_dialog_carry_its_route_set() {
        let resp = SipMessage::parse_datagram(Bytes::from_static(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nRecord-Route: <sip:p2;lr>, <sip:p1;lr>\r\n\
              Record-Route: <sip:p0;lr>\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
        ))
        .unwrap();
        // A UAC reverses the 2xx's Record-Route; a UAS keeps the request's order.
        assert_eq!(
            route_set_of_response(&resp),
            ["<sip:p0;lr>", "<sip:p1;lr>", "<sip:p2;lr>"]
        );
        assert_eq!(
            route_set_of_request(&resp),
            ["<sip:p2;lr>", "<sip:p1;lr>", "<sip:p0;lr>"]
        );
        let mut d = Dialog {
            call_id: "c".into(),
            local: "<sip:a@x>;tag=1".into(),
            remote: "<sip:b@x>;tag=2".into(),
            remote_target: "sip:b@192.0.2.9".into(),
            peer: Peer {
                transport: TransportKind::Udp,
                addr: "127.0.0.1:5060".parse().unwrap(),
            },
            local_cseq: 1,
            via_addr: "127.0.0.1:5070".parse().unwrap(),
            route_set: route_set_of_response(&resp),
        };
        let bye = d.request(Method::Bye, None);
        let ack = d.ack(1);
        for req in [bye, ack] {
            assert_eq!(
                req.request_uri(),
                Some("sip:b@192.0.2.9"),
                "loose routing: the target stays"
            );
            let routes: Vec<&str> = req.header_values(&HeaderName::Route).collect();
            assert_eq!(routes, ["<sip:p0;lr>", "<sip:p1;lr>", "<sip:p2;lr>"]);
        }
    }
}
