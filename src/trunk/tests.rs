//! Outbound registration on virtual time, without sockets.

use super::*;
use crate::config::Config;
use crate::sip::digest::Credentials;
use crate::sip::SipMessage;
use bytes::Bytes;
use std::path::Path;
use std::time::{Duration, Instant};

fn trunks() -> Vec<crate::config::Trunk> {
    Config::parse(
        Path::new("t.toml"),
        "[[trunks]]\nname = \"main\"\naddress = \"127.0.0.1:5099\"\nusername = \"acme\"\npassword = \"s3cret\"\nregister = true\nexpires_s = 300\n\
         [[trunks]]\nname = \"byip\"\naddress = \"127.0.0.2\"\n\
         [[accounts]]\ndomain = \"pbx.test\"\n",
    )
    .unwrap()
    .trunks
}

/// The next REGISTER the registrations send (status changes skipped).
fn next_register(regs: &mut Registrations) -> Option<Outgoing> {
    loop {
        match regs.poll_output()? {
            TrunkOutput::Register(r) => return Some(r),
            TrunkOutput::Status(_) | TrunkOutput::Ping(_) => continue,
        }
    }
}

fn start(now: Instant) -> Registrations {
    Registrations::new(&trunks(), |_| "127.0.0.1:5060".parse().unwrap(), "sb", now)
}

/// The provider's answer to `req`.
fn answer(req: &SipMessage, status: u16, extra: &str) -> SipMessage {
    let mut text = format!("SIP/2.0 {status} X\r\n");
    for h in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        text.push_str(&format!("{}: {}\r\n", h.as_str(), req.header(&h).unwrap()));
    }
    text.push_str(extra);
    text.push_str("Content-Length: 0\r\n\r\n");
    SipMessage::parse_datagram(Bytes::from(text)).unwrap()
}

use crate::sip::HeaderName;

#[test]
fn registers_answering_the_challenge_and_refreshes_before_expiry() {
    let t0 = Instant::now();
    let mut regs = start(t0);
    regs.handle_timeout(t0);
    let first = next_register(&mut regs).expect("REGISTER at start");
    assert!(next_register(&mut regs).is_none(), "the trunk by IP does not register");
    assert_eq!(first.trunk, "main");
    assert_eq!(first.to.addr, "127.0.0.1:5099".parse().unwrap());
    assert_eq!(first.req.request_uri(), Some("sip:127.0.0.1"));
    assert!(first
        .req
        .header(&HeaderName::Contact)
        .unwrap()
        .contains("+sip.instance"));
    let challenge = "WWW-Authenticate: Digest realm=\"prov\", nonce=\"abc\", qop=\"auth\", algorithm=SHA-256\r\n";
    regs.on_response("main", &answer(&first.req, 401, challenge), t0);
    let second = next_register(&mut regs).expect("answered REGISTER");
    assert_eq!(
        second.req.call_id(),
        first.req.call_id(),
        "one registration, same Call-ID"
    );
    assert_eq!(second.req.header(&HeaderName::CSeq), Some("2 REGISTER"));
    let auth = second.req.header(&HeaderName::Authorization).unwrap();
    let c = Credentials::parse(auth).unwrap();
    assert_eq!((&*c.username, &*c.realm, &*c.uri), ("acme", "prov", "sip:127.0.0.1"));
    assert_eq!(c.expected_response("s3cret", "REGISTER").as_deref(), Some(&*c.response));
    regs.on_response("main", &answer(&second.req, 200, "Expires: 100\r\n"), t0);
    assert_eq!(regs.statuses()[0].1, RegStatus::Registered { expires_s: 100 });
    assert!(matches!(
        regs.poll_output(),
        Some(TrunkOutput::Status(c)) if c.status.name() == "registered"
    ));
    regs.handle_timeout(t0 + Duration::from_secs(79));
    assert!(next_register(&mut regs).is_none());
    regs.handle_timeout(t0 + Duration::from_secs(80));
    let refresh = next_register(&mut regs).expect("refresh");
    assert_eq!(refresh.req.header(&HeaderName::CSeq), Some("3 REGISTER"));
}

#[test]
fn failures_back_off_doubling_or_as_the_provider_says() {
    let t0 = Instant::now();
    let mut regs = start(t0);
    regs.handle_timeout(t0);
    let r = next_register(&mut regs).unwrap();
    let challenge = "WWW-Authenticate: Digest realm=\"prov\", nonce=\"abc\"\r\n";
    regs.on_response("main", &answer(&r.req, 401, challenge), t0);
    let r = next_register(&mut regs).unwrap();
    // A second challenge to our answer: the password is wrong.
    regs.on_response("main", &answer(&r.req, 401, challenge), t0);
    assert!(next_register(&mut regs).is_none(), "no third try at once");
    assert!(matches!(&regs.statuses()[0].1, RegStatus::Failing { code: 401, .. }));
    assert_eq!(regs.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    // No answer at all: the wait doubles.
    let t1 = t0 + Duration::from_secs(30);
    regs.handle_timeout(t1);
    assert!(next_register(&mut regs).is_some());
    regs.on_timeout("main", t1);
    assert_eq!(regs.poll_timeout(), Some(t1 + Duration::from_secs(60)));
    assert!(matches!(&regs.statuses()[0].1, RegStatus::Failing { code: 408, .. }));
    // The provider names its own wait.
    let t2 = t1 + Duration::from_secs(60);
    regs.handle_timeout(t2);
    let r = next_register(&mut regs).unwrap();
    regs.on_response("main", &answer(&r.req, 503, "Retry-After: 7\r\n"), t2);
    assert_eq!(regs.poll_timeout(), Some(t2 + Duration::from_secs(7)));
    assert_eq!(regs.statuses()[0].2, 3, "three failures in a row");
}

/// The next keep-alive the registrations send.
fn next_ping(regs: &mut Registrations) -> Option<Outgoing> {
    std::iter::from_fn(|| regs.poll_output()).find_map(|o| match o {
        TrunkOutput::Ping(p) => Some(p),
        _ => None,
    })
}

#[test]
fn a_silent_provider_is_failing_and_its_return_registers_again_at_once() {
    let t0 = Instant::now();
    let mut regs = start(t0);
    regs.handle_timeout(t0);
    let r = next_register(&mut regs).unwrap();
    regs.on_response("main", &answer(&r.req, 200, "Expires: 600\r\n"), t0);
    // Pinged every 30 s (the default) while registered.
    let t1 = t0 + Duration::from_secs(30);
    assert_eq!(regs.poll_timeout(), Some(t1));
    regs.handle_timeout(t1);
    let ping = next_ping(&mut regs).expect("OPTIONS");
    assert_eq!(ping.req.method(), Some(&crate::sip::Method::Options));
    assert_eq!(ping.to.addr, "127.0.0.1:5099".parse().unwrap());
    regs.on_ping_result("main", Some(&answer(&ping.req, 200, "")), t1);
    assert_eq!(regs.statuses()[0].1, RegStatus::Registered { expires_s: 600 });
    // No answer: failing, and still pinged.
    let t2 = t1 + Duration::from_secs(30);
    regs.handle_timeout(t2);
    assert!(next_ping(&mut regs).is_some());
    regs.on_ping_result("main", None, t2);
    assert!(matches!(&regs.statuses()[0].1, RegStatus::Failing { code: 408, .. }));
    let t3 = t2 + Duration::from_secs(30);
    assert_eq!(regs.poll_timeout(), Some(t3));
    // It answers again: a REGISTER goes at once, not at the 480 s refresh.
    regs.handle_timeout(t3);
    let ping = next_ping(&mut regs).expect("still pinged");
    regs.on_ping_result("main", Some(&answer(&ping.req, 200, "")), t3);
    assert_eq!(regs.poll_timeout(), Some(t3));
    regs.handle_timeout(t3);
    let again = next_register(&mut regs).expect("REGISTER after the provider came back");
    regs.on_response("main", &answer(&again.req, 200, "Expires: 600\r\n"), t3);
    assert_eq!(regs.statuses()[0].1, RegStatus::Registered { expires_s: 600 });
}

/// `req`'s answer with its top Via seen from `received:rport`.
fn answer_seen_from(req: &SipMessage, status: u16, received: &str, rport: u16) -> SipMessage {
    let via = req
        .header(&HeaderName::Via)
        .unwrap()
        .replace(";rport", &format!(";received={received};rport={rport}"));
    let text = String::from_utf8(answer(req, status, "").to_bytes().to_vec())
        .unwrap()
        .replacen(req.header(&HeaderName::Via).unwrap(), &via, 1);
    SipMessage::parse_datagram(Bytes::from(text)).unwrap()
}

#[test]
fn when_the_provider_sees_us_at_another_address_we_register_again_at_once() {
    let t0 = Instant::now();
    let mut regs = start(t0);
    regs.handle_timeout(t0);
    let r = next_register(&mut regs).unwrap();
    regs.on_response("main", &answer_seen_from(&r.req, 200, "198.51.100.7", 40000), t0);
    let t1 = t0 + Duration::from_secs(30);
    regs.handle_timeout(t1);
    let ping = next_ping(&mut regs).unwrap();
    // Same mapping: nothing to do but ping again later.
    regs.on_ping_result(
        "main",
        Some(&answer_seen_from(&ping.req, 200, "198.51.100.7", 40000)),
        t1,
    );
    assert_eq!(regs.poll_timeout(), Some(t1 + Duration::from_secs(30)));
    let t2 = t1 + Duration::from_secs(30);
    regs.handle_timeout(t2);
    let ping = next_ping(&mut regs).unwrap();
    // The NAT moved us: register from the new mapping now.
    regs.on_ping_result(
        "main",
        Some(&answer_seen_from(&ping.req, 200, "198.51.100.7", 41234)),
        t2,
    );
    regs.handle_timeout(t2);
    assert!(next_register(&mut regs).is_some(), "registered again at once");
}

#[test]
fn interval_too_brief_asks_again_with_the_minimum_and_the_instance_is_stable() {
    let t0 = Instant::now();
    let mut regs = start(t0);
    regs.handle_timeout(t0);
    let r = next_register(&mut regs).unwrap();
    assert_eq!(r.req.header(&HeaderName::Expires), Some("300"));
    regs.on_response("main", &answer(&r.req, 423, "Min-Expires: 900\r\n"), t0);
    let again = next_register(&mut regs).expect("asked again at once");
    assert_eq!(again.req.header(&HeaderName::Expires), Some("900"));
    // The same trunk gets the same +sip.instance in another run.
    let mut other = start(t0);
    other.handle_timeout(t0);
    let o = next_register(&mut other).unwrap();
    assert_eq!(o.req.header(&HeaderName::Contact), r.req.header(&HeaderName::Contact));
}
