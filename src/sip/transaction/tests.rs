//! Transaction layer tests under virtual time: retransmission schedules,
//! absorption of retransmitted requests, timeouts and termination.

use super::*;
use crate::sip::response::response_to;

const T1: Duration = Duration::from_millis(500);

fn peer(t: TransportKind) -> Peer {
    Peer {
        transport: t,
        addr: "127.0.0.1:5070".parse().unwrap(),
    }
}

fn request(method: &str, branch: &str) -> SipMessage {
    let raw = format!(
        "{method} sip:1002@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
From: <sip:1001@127.0.0.1>;tag=f\r\nTo: <sip:1002@127.0.0.1>\r\nCall-ID: tx-test\r\n\
CSeq: 1 {method}\r\nMax-Forwards: 70\r\n\r\n"
    );
    SipMessage::parse_datagram(Bytes::from(raw)).unwrap()
}

fn drain(l: &mut TransactionLayer) -> (Vec<Transmit>, Vec<TxEvent>) {
    let mut t = Vec::new();
    let mut e = Vec::new();
    while let Some(x) = l.poll_transmit() {
        t.push(x);
    }
    while let Some(x) = l.poll_event() {
        e.push(x);
    }
    (t, e)
}

fn status_of(t: &Transmit) -> u16 {
    SipMessage::parse_datagram(t.data.clone()).unwrap().status().unwrap()
}

/// Advances virtual time to each deadline until `until`, returning the
/// offsets (from `start`) at which something was transmitted.
fn run_until(l: &mut TransactionLayer, start: Instant, until: Duration) -> (Vec<Duration>, Vec<TxEvent>) {
    let mut sends = Vec::new();
    let mut events = Vec::new();
    while let Some(at) = l.poll_timeout() {
        if at > start + until {
            break;
        }
        l.handle_timeout(at);
        let (t, e) = drain(l);
        sends.extend(t.iter().map(|_| at - start));
        events.extend(e);
    }
    (sends, events)
}

#[test]
fn non_invite_server_absorbs_retransmissions_and_ends_after_timer_j() {
    let mut l = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    let req = request("REGISTER", "z9hG4bKa");
    l.handle_request(req.clone(), peer(TransportKind::Udp), now).unwrap();
    let (t, e) = drain(&mut l);
    assert!(t.is_empty());
    let TxEvent::Request { key, .. } = &e[0] else {
        panic!("{e:?}")
    };
    // Retransmission before any response: absorbed silently.
    l.handle_request(req.clone(), peer(TransportKind::Udp), now).unwrap();
    assert_eq!(drain(&mut l), (vec![], vec![]));
    assert!(l.server_request(key).is_some());
    l.respond(key, response_to(&req, 200, None, "t"), now).unwrap();
    let (t, _) = drain(&mut l);
    assert_eq!(status_of(&t[0]), 200);
    // Answered: the request is let go while the transaction waits out Timer J.
    assert!(l.server_request(key).is_none());
    // Retransmission after the final response: the same 200 again, not a new TU event.
    l.handle_request(req.clone(), peer(TransportKind::Udp), now + T1)
        .unwrap();
    let (t, e) = drain(&mut l);
    assert_eq!((t.len(), e.len()), (1, 0));
    assert_eq!(status_of(&t[0]), 200);
    assert_eq!(l.len(), 1);
    // Still absorbed just before Timer J; forgotten (without an event, the
    // TU has nothing to do) within a second after it.
    let (_, e) = run_until(&mut l, now, T1 * 64 - T1);
    assert!(e.is_empty());
    l.handle_request(req.clone(), peer(TransportKind::Udp), now + T1 * 64 - T1)
        .unwrap();
    let (t, e) = drain(&mut l);
    assert_eq!((t.len(), e.len()), (1, 0));
    let (_, e) = run_until(&mut l, now, T1 * 64 + Duration::from_secs(1));
    assert!(e.is_empty());
    assert!(l.is_empty() && l.poll_timeout().is_none());
    l.handle_request(req.clone(), peer(TransportKind::Udp), now + T1 * 66)
        .unwrap();
    let (t, e) = drain(&mut l);
    assert!(t.is_empty());
    assert!(matches!(e[..], [TxEvent::Request { .. }]), "{e:?}");
}

#[test]
fn a_stateless_answer_leaves_nothing_and_its_retransmission_is_a_new_request() {
    let mut l = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    let req = request("REGISTER", "z9hG4bKs");
    l.handle_request(req.clone(), peer(TransportKind::Udp), now).unwrap();
    let (_, e) = drain(&mut l);
    let TxEvent::Request { key, .. } = &e[0] else { panic!() };
    l.respond_statelessly(key, response_to(&req, 401, None, "t"), now)
        .unwrap();
    let (t, _) = drain(&mut l);
    assert_eq!(status_of(&t[0]), 401);
    assert!(l.is_empty() && l.poll_timeout().is_none());
    l.handle_request(req.clone(), peer(TransportKind::Udp), now + T1)
        .unwrap();
    let (t, e) = drain(&mut l);
    assert!(t.is_empty());
    assert!(matches!(e[..], [TxEvent::Request { .. }]), "{e:?}");

    // An INVITE is still answered statefully: its error waits for the ACK.
    let invite = request("INVITE", "z9hG4bKi");
    l.handle_request(invite.clone(), peer(TransportKind::Udp), now).unwrap();
    let (_, e) = drain(&mut l);
    let TxEvent::Request { key, .. } = &e[0] else { panic!() };
    l.respond_statelessly(key, response_to(&invite, 407, None, "t"), now)
        .unwrap();
    assert!(l.server_request(key).is_none() && !l.is_empty());
}

#[test]
fn non_invite_server_over_tcp_ends_at_once() {
    let mut l = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    let req = request("OPTIONS", "z9hG4bKb");
    l.handle_request(req.clone(), peer(TransportKind::Tcp), now).unwrap();
    let (_, e) = drain(&mut l);
    let TxEvent::Request { key, .. } = &e[0] else { panic!() };
    l.respond(key, response_to(&req, 200, None, "t"), now).unwrap();
    l.handle_timeout(now);
    assert!(l.is_empty());
}

#[test]
fn invite_server_retransmits_error_with_timer_g_until_ack() {
    let mut l = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    let req = request("INVITE", "z9hG4bKc");
    l.handle_request(req.clone(), peer(TransportKind::Udp), now).unwrap();
    let (t, e) = drain(&mut l);
    assert_eq!(status_of(&t[0]), 100, "100 Trying sent at once");
    let TxEvent::Request { key, .. } = &e[0] else { panic!() };
    l.respond(key, response_to(&req, 486, None, "t"), now).unwrap();
    drain(&mut l);
    // Timer G: T1, 2T1, 4T1, then capped at T2 = 4 s.
    let (sends, _) = run_until(&mut l, now, Duration::from_millis(7600));
    let ms: Vec<u128> = sends.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, vec![500, 1500, 3500, 7500]);
    let ack = request("ACK", "z9hG4bKc");
    l.handle_request(ack, peer(TransportKind::Udp), now + Duration::from_secs(8))
        .unwrap();
    let (sends, events) = run_until(&mut l, now, Duration::from_secs(14));
    assert!(sends.is_empty(), "no retransmission after ACK: {sends:?}");
    assert_eq!(
        events,
        vec![TxEvent::Terminated { key: (**key).clone() }],
        "Timer I ends it"
    );
}

#[test]
fn invite_server_timer_h_reports_missing_ack() {
    let mut l = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    let req = request("INVITE", "z9hG4bKd");
    l.handle_request(req.clone(), peer(TransportKind::Udp), now).unwrap();
    let (_, e) = drain(&mut l);
    let TxEvent::Request { key, .. } = &e[0] else { panic!() };
    l.respond(key, response_to(&req, 603, None, "t"), now).unwrap();
    let (_, events) = run_until(&mut l, now, T1 * 64);
    assert_eq!(
        events,
        vec![
            TxEvent::Timeout { key: (**key).clone() },
            TxEvent::Terminated { key: (**key).clone() }
        ]
    );
}

#[test]
fn invite_server_2xx_absorbs_retransmitted_invite_and_passes_ack_up() {
    let mut l = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    let req = request("INVITE", "z9hG4bKe");
    l.handle_request(req.clone(), peer(TransportKind::Udp), now).unwrap();
    let (_, e) = drain(&mut l);
    let TxEvent::Request { key, .. } = &e[0] else { panic!() };
    l.respond(key, response_to(&req, 200, None, "t"), now).unwrap();
    drain(&mut l);
    l.handle_request(req.clone(), peer(TransportKind::Udp), now).unwrap();
    assert_eq!(drain(&mut l), (vec![], vec![]), "absorbed in Accepted");
    // ACK for 2xx carries a new branch: it reaches the TU.
    l.handle_request(request("ACK", "z9hG4bKnew"), peer(TransportKind::Udp), now)
        .unwrap();
    let (_, e) = drain(&mut l);
    assert!(matches!(e[0], TxEvent::StrayAck { .. }));
}

#[test]
fn cancel_finds_its_invite() {
    let mut l = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    l.handle_request(request("INVITE", "z9hG4bKf"), peer(TransportKind::Udp), now)
        .unwrap();
    let cancel = request("CANCEL", "z9hG4bKf");
    assert!(l.invite_for_cancel(&cancel).is_some());
    assert!(l.invite_for_cancel(&request("CANCEL", "z9hG4bKother")).is_none());
}

#[test]
fn non_invite_client_timer_e_doubles_to_t2_then_timer_f() {
    let mut l = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    let key = l
        .send_request(request("OPTIONS", "z9hG4bKg"), peer(TransportKind::Udp), now)
        .unwrap();
    assert_eq!(drain(&mut l).0.len(), 1);
    let (sends, events) = run_until(&mut l, now, T1 * 64);
    let ms: Vec<u128> = sends.iter().map(Duration::as_millis).collect();
    // 0.5, 1.5, 3.5, 7.5, then every 4 s up to 32 s.
    assert_eq!(&ms[..5], &[500, 1500, 3500, 7500, 11500]);
    assert!(ms.windows(2).skip(3).all(|w| w[1] - w[0] == 4000));
    assert_eq!(
        events,
        vec![TxEvent::Timeout { key: key.clone() }, TxEvent::Terminated { key }]
    );
}

#[test]
fn non_invite_client_final_response_then_timer_k() {
    let mut l = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    let req = request("OPTIONS", "z9hG4bKh");
    let key = l.send_request(req.clone(), peer(TransportKind::Udp), now).unwrap();
    drain(&mut l);
    l.handle_response(response_to(&req, 200, None, "x"), peer(TransportKind::Udp), now);
    let (_, e) = drain(&mut l);
    assert!(matches!(&e[0], TxEvent::Response { response, .. } if response.status() == Some(200)));
    let (sends, events) = run_until(&mut l, now, Duration::from_secs(6));
    assert!(sends.is_empty());
    assert_eq!(events, vec![TxEvent::Terminated { key }]);
}

#[test]
fn invite_client_timer_a_doubles_then_timer_b() {
    let mut l = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    let key = l
        .send_request(request("INVITE", "z9hG4bKi"), peer(TransportKind::Udp), now)
        .unwrap();
    drain(&mut l);
    let (sends, events) = run_until(&mut l, now, T1 * 64);
    let ms: Vec<u128> = sends.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, vec![500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(
        events,
        vec![TxEvent::Timeout { key: key.clone() }, TxEvent::Terminated { key }]
    );
}

#[test]
fn invite_client_acks_error_responses_and_each_retransmission() {
    let mut l = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    let req = request("INVITE", "z9hG4bKj");
    l.send_request(req.clone(), peer(TransportKind::Udp), now).unwrap();
    drain(&mut l);
    l.handle_response(response_to(&req, 180, None, "x"), peer(TransportKind::Udp), now);
    let busy = response_to(&req, 486, None, "x");
    l.handle_response(busy.clone(), peer(TransportKind::Udp), now);
    let (t, e) = drain(&mut l);
    let ack = SipMessage::parse_datagram(t[0].data.clone()).unwrap();
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.header(&HeaderName::CSeq), Some("1 ACK"));
    assert!(ack.header(&HeaderName::To).unwrap().contains("tag=x"));
    assert_eq!(ack.top_via(), req.top_via());
    assert_eq!(e.len(), 2, "180 and 486 delivered");
    l.handle_response(busy, peer(TransportKind::Udp), now);
    let (t, e) = drain(&mut l);
    assert_eq!(
        (t.len(), e.len()),
        (1, 0),
        "retransmitted 486 re-ACKed, not re-delivered"
    );
}

#[test]
fn rfc2543_requests_without_magic_cookie_still_match() {
    let mut l = TransactionLayer::new(TimerConfig::default());
    let now = Instant::now();
    let req = request("OPTIONS", "oldbranch");
    l.handle_request(req.clone(), peer(TransportKind::Udp), now).unwrap();
    drain(&mut l);
    l.handle_request(req, peer(TransportKind::Udp), now).unwrap();
    assert_eq!(drain(&mut l).1.len(), 0, "retransmission matched");
}
