//! Bad input never stops the daemon: garbage and truncated datagrams,
//! malformed requests, half messages and garbage on TCP, unknown methods.

use crate::harness::{free_port, sipp_register, Daemon};
use crate::raw_client::RawClient;
use std::time::Duration;
use switchboard::sip::{HeaderName, SipMessage};

#[test]
fn garbage_and_truncated_datagrams_then_a_valid_register() {
    let d = Daemon::start("");
    let mut c = RawClient::udp(d.addr());
    c.send_raw(b"\x00\xff\xfe garbage that is not SIP at all");
    c.send_raw(b"REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;bra");
    // Content-Length larger than the datagram: answerable, so 400.
    let truncated = c
        .request("REGISTER", "sip:pbx.test", "1001", "", "trunc-1")
        .replace("Content-Length: 0", "Content-Length: 500");
    c.send_raw(truncated.as_bytes());
    let r = c.recv().expect("400 for a truncated but answerable request");
    assert_eq!(r.status(), Some(400));
    assert!(r.reason().contains("Content-Length"), "{}", r.reason());
    // Parsed but invalid: CSeq method does not match.
    let bad = c
        .request("OPTIONS", "sip:pbx.test", "1001", "", "bad-cseq")
        .replace("OPTIONS\r\nContent", "INVITE\r\nContent");
    c.send_raw(bad.as_bytes());
    let r = c.recv().unwrap();
    assert_eq!(r.status(), Some(400));
    assert_eq!(r.reason(), "Bad Request (CSeq method does not match)");
    // Latin-1 in a display name: SIP text is UTF-8 (RFC 3261 §7.3.1).
    let latin1: Vec<u8> = c
        .request("OPTIONS", "sip:pbx.test", "1001", "", "latin-1")
        .replacen("From: ", "From: \"Jos\x01\" ", 1)
        .bytes()
        .map(|b| if b == 1 { 0xe9 } else { b })
        .collect();
    c.send_raw(&latin1);
    let r = c.recv().expect("400 for a head that is not UTF-8");
    assert_eq!(r.status(), Some(400));
    assert_eq!(r.reason(), "Bad Request (message head is not UTF-8)");
    assert_eq!(r.call_id(), Some("latin-1"));
    // The daemon still serves a real peer.
    assert_eq!(sipp_register(&d, "1001", "demo1001", 120, free_port(), &[]).code, 0);
}

#[test]
fn options_and_unsupported_methods() {
    let d = Daemon::start("");
    let mut c = RawClient::udp(d.addr());
    let r = c.send_request("OPTIONS", "sip:pbx.test", "1001", "").unwrap();
    assert_eq!(r.status(), Some(200));
    assert!(r.header(&HeaderName::Allow).unwrap().contains("REGISTER"));
    assert_eq!(r.header(&HeaderName::Accept), Some("application/sdp"));
    let r = c.send_request("FOO", "sip:pbx.test", "1001", "").unwrap();
    assert_eq!(r.status(), Some(501));
    assert!(r.header(&HeaderName::Allow).is_some());
    let r = c.send_request("PUBLISH", "sip:pbx.test", "1001", "").unwrap();
    assert_eq!(r.status(), Some(405));
    let r = c.send_request("CANCEL", "sip:pbx.test", "1001", "").unwrap();
    assert_eq!(r.status(), Some(481));
    let r = c.send_request("OPTIONS", "mailto:x@y", "1001", "").unwrap();
    assert_eq!(r.status(), Some(416));
}

#[test]
fn a_retransmitted_request_gets_the_same_response() {
    let d = Daemon::start("");
    let mut c = RawClient::udp(d.addr());
    let req = c.request("OPTIONS", "sip:pbx.test", "1001", "", "retrans-1");
    c.send_raw(req.as_bytes());
    let first = c.recv().unwrap();
    c.send_raw(req.as_bytes());
    let second = c.recv().unwrap();
    assert_eq!(
        first.to_bytes(),
        second.to_bytes(),
        "absorbed by the server transaction"
    );
}

/// Challenges are sent statelessly (RFC 3261 §8.2.7), so the answer to a
/// retransmitted REGISTER must be the same answer, tag and nonce included
/// (SIPp, like a phone's transaction layer, takes a different one for a new
/// response); another request gets another tag and nonce.
#[test]
fn a_retransmitted_register_gets_the_same_challenge() {
    let d = Daemon::start("");
    let mut c = RawClient::udp(d.addr());
    let register = |c: &mut RawClient, call_id: &str| {
        c.request(
            "REGISTER",
            "sip:pbx.test",
            "1001",
            "Contact: <sip:1001@127.0.0.1>\r\n",
            call_id,
        )
    };
    let req = register(&mut c, "retrans-2");
    c.send_raw(req.as_bytes());
    let first = c.recv_final().unwrap();
    assert_eq!(first.status(), Some(401));
    c.send_raw(req.as_bytes());
    let second = c.recv_final().unwrap();
    let other = register(&mut c, "retrans-3");
    c.send_raw(other.as_bytes());
    let third = c.recv_final().unwrap();
    // Same second for the first two, almost surely; a second boundary
    // between them changes the nonce's time, so compare what must match.
    let challenge = |m: &SipMessage| m.header(&HeaderName::WwwAuthenticate).unwrap().to_string();
    let to = |m: &SipMessage| m.header(&HeaderName::To).unwrap().to_string();
    assert_eq!(to(&first), to(&second));
    assert_ne!(to(&first), to(&third));
    assert_ne!(challenge(&first), challenge(&third));
    if first.to_bytes() != second.to_bytes() {
        let nonce_head = |m: &SipMessage| challenge(m).split("nonce=\"").nth(1).unwrap()[..16].to_string();
        assert_ne!(
            nonce_head(&first),
            nonce_head(&second),
            "differ only by the second they were issued in"
        );
    }
}

#[test]
fn tcp_half_message_and_garbage_do_not_stall_other_clients() {
    let d = Daemon::start("");
    // One client sends half a message and goes quiet.
    let mut stalled = RawClient::tcp(d.addr());
    stalled.send_raw(b"OPTIONS sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKhalf\r\n");
    // Another sends two messages in one write: both answered, in order.
    let mut busy = RawClient::tcp(d.addr());
    let a = busy.request("OPTIONS", "sip:pbx.test", "1001", "", "two-a");
    let b = busy.request("OPTIONS", "sip:pbx.test", "1001", "", "two-b");
    busy.send_raw(format!("{a}{b}").as_bytes());
    assert_eq!(busy.recv().unwrap().call_id(), Some("two-a"));
    assert_eq!(busy.recv().unwrap().call_id(), Some("two-b"));
    // A third sends a message whose Content-Length is garbage: 400, then closed.
    let mut bad = RawClient::tcp(d.addr());
    let m = bad
        .request("OPTIONS", "sip:pbx.test", "1001", "", "bad-cl")
        .replace("Content-Length: 0", "Content-Length: x");
    bad.send_raw(m.as_bytes());
    assert_eq!(bad.recv().unwrap().status(), Some(400));
    assert!(bad.recv().is_none(), "connection closed after a framing error");
    // An oversized declared body is refused before being buffered.
    let mut huge = RawClient::tcp(d.addr());
    let m = huge
        .request("OPTIONS", "sip:pbx.test", "1001", "", "huge")
        .replace("Content-Length: 0", "Content-Length: 900000");
    huge.send_raw(m.as_bytes());
    assert_eq!(huge.recv().unwrap().status(), Some(400));
    // The stalled client still cannot block registration.
    assert_eq!(
        sipp_register(&d, "1002", "demo1002", 120, free_port(), &["-t", "t1"]).code,
        0
    );
    drop(stalled);
}

#[test]
fn ipv6_over_udp_and_tcp() {
    let d = Daemon::start("");
    let v6: std::net::SocketAddr = format!("[::1]:{}", d.port).parse().unwrap();
    let mut u = RawClient::udp(v6);
    let r = u.register("sip:pbx.test", "1001", "demo1001", 120).unwrap();
    assert_eq!(r.status(), Some(200));
    let via = r.top_via().unwrap().to_string();
    assert!(via.contains(&format!("rport={}", u.local.port())), "{via}");
    let mut t = RawClient::tcp(v6);
    assert_eq!(
        t.send_request("OPTIONS", "sip:[::1]", "1001", "").unwrap().status(),
        Some(200)
    );
    let regs = d.registrations();
    assert_eq!(regs[0]["source"], format!("[::1]:{}", u.local.port()));
    u.set_timeout(Duration::from_secs(5));
}

#[test]
fn an_oversize_datagram_is_dropped_and_a_burst_is_answered_whole() {
    let d = Daemon::start_with(
        "",
        "[sip]\nmax_message_size = 1024\n",
        &crate::harness::default_dialplan(),
    );
    let mut c = RawClient::udp(d.addr());
    let padding = format!("X-Padding: {}\r\nContent-Length: 0", "p".repeat(1100));
    let too_big = c
        .request("OPTIONS", "sip:pbx.test", "1001", "", "too-big")
        .replace("Content-Length: 0", &padding);
    c.send_raw(too_big.as_bytes());
    // Answered in order of arrival: had the first been answered, its
    // answer would come first.
    let r = c.send_request("OPTIONS", "sip:pbx.test", "1001", "").unwrap();
    assert_eq!(r.status(), Some(200));
    assert_ne!(r.call_id(), Some("too-big"));
    // More requests than one read takes (recv_batch::BATCH), sent at once.
    let sent: Vec<String> = (0..3 * switchboard::recv_batch::BATCH)
        .map(|i| format!("burst-{i}"))
        .collect();
    for id in &sent {
        let req = c.request("OPTIONS", "sip:pbx.test", "1001", "", id);
        c.send_raw(req.as_bytes());
    }
    let mut answered: Vec<String> = (0..sent.len())
        .map(|_| c.recv().expect("an answer for each request of the burst"))
        .map(|r| r.call_id().unwrap().to_string())
        .collect();
    answered.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(answered, expected);
}

/// Reads from a raw TCP connection until the daemon closes it (true) or
/// `wait` passes with the connection still open (false).
pub fn closed_within(s: &mut std::net::TcpStream, wait: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// TCP connections are capped per IP address (the daemon's file
/// descriptors are shared with the relay), and one that sends nothing is
/// closed after the partial-message timeout; a client that sends requests
/// is served meanwhile.
#[test]
fn tcp_connections_are_capped_per_ip_and_silent_ones_closed() {
    let d = Daemon::start_with(
        "",
        "[sip]\ntcp_partial_timeout_s = 1\ntcp_max_connections_per_ip = 2\n",
        &crate::harness::default_dialplan(),
    );
    let mut first = RawClient::tcp(d.addr());
    let r = first.send_request("OPTIONS", "sip:pbx.test", "1001", "").unwrap();
    assert_eq!(r.status(), Some(200));
    // The second connection says nothing: closed after a second.
    let mut silent = std::net::TcpStream::connect(d.addr()).unwrap();
    // A third is over the cap: closed at once.
    let mut third = std::net::TcpStream::connect(d.addr()).unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(5)), "over the cap");
    d.wait_for_log("connection refused: too many connections");
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)),
        "silent connection closed"
    );
    // The first is still served.
    let r = first.send_request("OPTIONS", "sip:pbx.test", "1001", "").unwrap();
    assert_eq!(r.status(), Some(200));
}

/// A connection that has sent a message and then stays silent is closed
/// after the idle timeout.
#[test]
fn an_idle_tcp_connection_is_closed_after_the_idle_timeout() {
    let d = Daemon::start_with(
        "",
        "[sip]\ntcp_idle_timeout_s = 1\n",
        &crate::harness::default_dialplan(),
    );
    let mut c = RawClient::tcp(d.addr());
    let r = c.send_request("OPTIONS", "sip:pbx.test", "1001", "").unwrap();
    assert_eq!(r.status(), Some(200));
    let crate::raw_client::Conn::Tcp(stream, _) = &mut c.conn else {
        unreachable!()
    };
    assert!(closed_within(stream, Duration::from_secs(5)), "idle connection closed");
}
