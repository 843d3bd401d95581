//! The call state machine without a network: INVITE in, effects out.

use super::*;
use crate::config::Config;
use crate::registrar::Registrar;
use crate::sip::transaction::TransportKind;
use bytes::Bytes;
use std::path::Path;

const SDP: &str = "v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

fn config() -> Config {
    Config::parse(
        Path::new("t.toml"),
        "[server]\nlisten = [\"127.0.0.1:5060\"]\n[[accounts]]\ndomain = \"pbx.test\"\n\
         [[accounts.users]]\nextension = \"1001\"\npassword = \"p\"\n\
         [[accounts.users]]\nextension = \"1002\"\npassword = \"p\"\n",
    )
    .unwrap()
}

fn manager(cfg: &Config) -> CallManager {
    CallManager::new(
        crate::server::call_config(cfg),
        RelayPool::new("127.0.0.1".parse().unwrap(), 40000, 40999),
    )
}

fn peer(port: u16) -> Peer {
    Peer {
        transport: TransportKind::Udp,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn invite() -> (TxKey, SipMessage) {
    let raw = format!(
        "INVITE sip:1002@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKa1;rport\r\n\
         From: \"Olivia\" <sip:1001@pbx.test>;tag=a\r\nTo: <sip:1002@pbx.test>\r\nCall-ID: call-a\r\n\
         CSeq: 2 INVITE\r\nContact: <sip:1001@127.0.0.1:6000>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    let msg = SipMessage::parse_datagram(Bytes::from(raw)).unwrap();
    (
        crate::sip::transaction::TransactionLayer::server_key(&msg).unwrap(),
        msg,
    )
}

fn registrar_with_1002(now: u64) -> Registrar {
    let mut r = Registrar::new();
    let reg = SipMessage::parse_datagram(Bytes::from(
        "REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKr\r\nFrom: <sip:1002@pbx.test>;tag=r\r\n\
         To: <sip:1002@pbx.test>\r\nCall-ID: reg\r\nCSeq: 1 REGISTER\r\nContact: <sip:1002@127.0.0.1:7000>\r\n\r\n",
    ))
    .unwrap();
    let settings = config().registrar;
    r.register(&reg, "1002@pbx.test", peer(7000), &settings, now).unwrap();
    r
}

fn effects(m: &mut CallManager) -> Vec<CallEffect> {
    std::iter::from_fn(|| m.poll_effect()).collect()
}

fn respond_from_callee(req: &SipMessage, status: u16, sdp: Option<&str>) -> SipMessage {
    let mut r = response_to(req, status, None, "callee-tag");
    r.push_header(HeaderName::Contact, "<sip:1002@127.0.0.1:7000>");
    if let Some(s) = sdp {
        r.push_header(HeaderName::ContentType, "application/sdp");
        r.body = Bytes::from(s.replace("192.0.2.1", "192.0.2.2").replace("4000", "5000"));
    }
    r
}

/// Starts a call from 1001 and dials 1002; returns the callee INVITE.
fn dialled(m: &mut CallManager, cfg: &Config, now: Instant) -> (CallRef, TxKey, SipMessage, oneshot::Receiver<Reply>) {
    let (key, inv) = invite();
    let account = &cfg.accounts[0];
    let id = m
        .start_call(key.clone(), inv, peer(6000), account, account.user("1001").unwrap())
        .unwrap();
    let e = effects(m);
    assert!(matches!(&e[..], [CallEffect::StartDialplan { info, .. }] if info.to == "1002" && info.from == "1001"));
    let registrar = registrar_with_1002(crate::unix_now());
    let (tx, rx) = oneshot::channel();
    let req = DialRequest {
        targets: vec!["1002".into()],
        timeout: Some(Duration::from_secs(20)),
        external: false,
        account,
        registrar: &registrar,
    };
    m.dial(id, req, tx, now);
    let e = effects(m);
    let [CallEffect::Request { req, to }] = &e[..] else {
        panic!("{e:?}")
    };
    assert_eq!(to.addr, peer(7000).addr, "sent where the callee registered from");
    assert_eq!(req.request_uri(), Some("sip:1002@127.0.0.1:7000"));
    assert_ne!(req.call_id(), Some("call-a"), "the callee leg has its own Call-ID");
    let body = std::str::from_utf8(&req.body).unwrap();
    assert!(
        body.contains("c=IN IP4 127.0.0.1") && !body.contains("192.0.2.1"),
        "{body}"
    );
    assert!(body.contains("telephone-event"), "codecs pass through");
    (id, key, req.clone(), rx)
}

#[tokio::test]
async fn answered_call_bridges_and_caller_bye_ends_both_legs() {
    let cfg = config();
    let mut m = manager(&cfg);
    let now = Instant::now();
    let (_id, a_key, b_invite, mut dial_reply) = dialled(&mut m, &cfg, now);
    let b_key = client_key(&b_invite).unwrap();
    m.on_response(&b_key, respond_from_callee(&b_invite, 180, None), now);
    let e = effects(&mut m);
    assert!(matches!(&e[..], [CallEffect::Respond { key, resp }] if key == &a_key && resp.status() == Some(180)));
    m.on_response(&b_key, respond_from_callee(&b_invite, 200, Some(SDP)), now);
    let e = effects(&mut m);
    let ack = e.iter().find_map(|x| match x {
        CallEffect::Stateless { msg, .. } => Some(msg.clone()),
        _ => None,
    });
    let ack = ack.expect("callee 2xx ACKed");
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.request_uri(), Some("sip:1002@127.0.0.1:7000"));
    assert!(ack.header(&HeaderName::To).unwrap().contains("tag=callee-tag"));
    let ok = e.iter().find_map(|x| match x {
        CallEffect::Respond { key, resp } if key == &a_key => Some(resp.clone()),
        _ => None,
    });
    let ok = ok.expect("caller answered");
    assert_eq!(ok.status(), Some(200));
    let body = std::str::from_utf8(&ok.body).unwrap();
    assert!(
        body.contains("c=IN IP4 127.0.0.1") && !body.contains("192.0.2.2"),
        "{body}"
    );
    assert!(dial_reply.try_recv().is_err(), "dial returns only when the call ends");
    assert_eq!(m.views()[0].state, "connected");
    // The callee retransmits its 2xx after the transaction ended: the same
    // ACK goes again, byte for byte (a new branch would be a new ACK).
    m.on_stray_response(&respond_from_callee(&b_invite, 200, Some(SDP)));
    let again = match &effects(&mut m)[..] {
        [CallEffect::Stateless { msg, .. }] => msg.to_bytes(),
        e => panic!("{e:?}"),
    };
    assert_eq!(again, ack.to_bytes());
    // Caller hangs up.
    let bye_raw = "BYE sip:switchboard@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKbye\r\n\
        From: <sip:1001@pbx.test>;tag=a\r\nTo: <sip:1002@pbx.test>;tag=x\r\nCall-ID: call-a\r\nCSeq: 3 BYE\r\n\r\n";
    let bye = SipMessage::parse_datagram(Bytes::from(bye_raw)).unwrap();
    let bye_key = crate::sip::transaction::TransactionLayer::server_key(&bye).unwrap();
    m.on_in_dialog(bye_key.clone(), bye).unwrap();
    let e = effects(&mut m);
    let to_callee = e.iter().find_map(|x| match x {
        CallEffect::Request { req, .. } => Some(req.clone()),
        _ => None,
    });
    assert_eq!(to_callee.unwrap().method(), Some(&Method::Bye));
    let stored = e.iter().find_map(|x| match x {
        CallEffect::RespondAfterWrite { key, resp, record } if key == &bye_key => Some((resp.status(), record.clone())),
        _ => None,
    });
    let (status, record) = stored.expect("200 to BYE after the record is stored");
    assert_eq!(status, Some(200));
    assert_eq!(
        (record.disposition.as_str(), record.hangup_side.as_str()),
        ("answered", "caller")
    );
    assert_eq!(
        dial_reply.try_recv().unwrap(),
        Reply::Dialed(crate::dialplan::DialOutcome::new("answered", 200))
    );
    assert!(m.is_empty());
    assert_eq!(m.relay_ports_in_use(), 0);
}

#[tokio::test]
async fn ring_timeout_cancels_and_reports_no_answer() {
    let cfg = config();
    let mut m = manager(&cfg);
    let now = Instant::now();
    let (id, a_key, b_invite, mut dial_reply) = dialled(&mut m, &cfg, now);
    m.handle_timeout(now + Duration::from_secs(21));
    let e = effects(&mut m);
    let [CallEffect::Request { req, .. }] = &e[..] else {
        panic!("{e:?}")
    };
    assert_eq!(req.method(), Some(&Method::Cancel));
    assert_eq!(req.top_via(), b_invite.top_via(), "CANCEL reuses the INVITE's branch");
    assert_eq!(
        dial_reply.try_recv().unwrap(),
        Reply::Dialed(crate::dialplan::DialOutcome::new("no-answer", 480))
    );
    // The script ends: the caller gets the dial's failure, after the record is written.
    m.script_done(id, Ok(()));
    let e = effects(&mut m);
    assert!(matches!(&e[..], [CallEffect::RespondAfterWrite { key, resp, record }]
        if key == &a_key && resp.status() == Some(480) && record.disposition == "no-answer"));
}

#[tokio::test]
async fn busy_callee_maps_to_486_and_a_late_cancel_is_harmless() {
    let cfg = config();
    let mut m = manager(&cfg);
    let now = Instant::now();
    let (id, a_key, b_invite, mut dial_reply) = dialled(&mut m, &cfg, now);
    let b_key = client_key(&b_invite).unwrap();
    m.on_response(&b_key, respond_from_callee(&b_invite, 486, None), now);
    assert_eq!(
        dial_reply.try_recv().unwrap(),
        Reply::Dialed(crate::dialplan::DialOutcome::new("busy", 486))
    );
    m.on_cancel(&a_key);
    let e = effects(&mut m);
    assert!(matches!(&e[..], [CallEffect::RespondAfterWrite { resp, record, .. }]
        if resp.status() == Some(487) && record.disposition == "cancelled"));
    m.script_done(id, Ok(()));
    assert!(effects(&mut m).is_empty(), "the call is already over");
}

#[tokio::test]
async fn requests_for_unknown_dialogs_get_481_and_scripts_errors_500() {
    let cfg = config();
    let mut m = manager(&cfg);
    let raw = "BYE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKz\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: nope\r\nCSeq: 1 BYE\r\n\r\n";
    let bye = SipMessage::parse_datagram(Bytes::from(raw)).unwrap();
    let key = crate::sip::transaction::TransactionLayer::server_key(&bye).unwrap();
    assert_eq!(m.on_in_dialog(key, bye).unwrap_err().status, 481);
    let (key, inv) = invite();
    let account = &cfg.accounts[0];
    let id = m
        .start_call(key, inv, peer(6000), account, account.user("1001").unwrap())
        .unwrap();
    effects(&mut m);
    m.script_done(id, Err(crate::dialplan::DialplanError::Script("x.lua:1: boom".into())));
    let e = effects(&mut m);
    assert!(matches!(&e[..], [CallEffect::RespondAfterWrite { resp, .. }] if resp.status() == Some(500)));
}
