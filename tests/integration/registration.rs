//! Registrar behaviour seen from real peers: digest auth, bindings listed
//! by `ctl`, persistence across restart and kill -9, removal, bans.

use crate::harness::{free_port, sipp, sipp_register, Daemon};
use crate::raw_client::RawClient;
use std::time::Duration;

#[test]
fn sipp_registers_with_digest_auth_and_is_listed() {
    let d = Daemon::start("");
    let port = free_port();
    let run = sipp_register(&d, "1001", "demo1001", 600, port, &[]);
    assert_eq!(run.code, 0, "sipp failed: {}", run.errors);
    assert!(
        run.logs
            .contains(&format!("binding <sip:1001@127.0.0.1:{port}>;expires=600")),
        "{}",
        run.logs
    );
    let regs = d.registrations();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0]["aor"], "1001@pbx.test");
    assert_eq!(regs[0]["contact"], format!("sip:1001@127.0.0.1:{port}"));
    assert_eq!(regs[0]["user_agent"], "sipp-test");
    // The human table lists it too.
    let table = String::from_utf8(d.ctl(&["registrations"]).stdout).unwrap();
    assert!(
        table.contains("1001@pbx.test") && table.contains(&format!("127.0.0.1:{port}")),
        "{table}"
    );
}

#[test]
fn sipp_registers_over_tcp() {
    let d = Daemon::start("");
    let port = free_port();
    let run = sipp_register(&d, "1003", "demo1003", 300, port, &["-t", "t1"]);
    assert_eq!(run.code, 0, "sipp failed: {}", run.errors);
    let regs = d.registrations();
    assert_eq!(regs[0]["transport"], "TCP");
}

#[test]
fn sha256_digest_when_offered_first() {
    let d = Daemon::start("digest_algorithms = [\"SHA-256\", \"MD5\"]\n");
    let mut c = RawClient::udp(d.addr());
    let ch = c.send_request("REGISTER", "sip:pbx.test", "1001", "").unwrap();
    let offers: Vec<&str> = ch
        .header_values(&switchboard::sip::HeaderName::WwwAuthenticate)
        .collect();
    assert!(
        offers[0].contains("algorithm=SHA-256") && offers[1].contains("algorithm=MD5"),
        "{offers:?}"
    );
    let r = c.register("sip:pbx.test", "1001", "demo1001", 120).unwrap();
    assert_eq!(r.status(), Some(200));
    d.wait_for_log("registered aor=1001@pbx.test");
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_403() {
    let d = Daemon::start("");
    let wrong = sipp(
        &d.target(),
        "register_rejected.xml",
        free_port(),
        &["-s", "1001", "-au", "1001", "-ap", "nope"],
    );
    assert_eq!(wrong.code, 0, "expected 401 then 403: {}", wrong.errors);
    let unknown = sipp(
        &d.target(),
        "register_rejected.xml",
        free_port(),
        &["-s", "7777", "-au", "7777", "-ap", "nope"],
    );
    assert_eq!(unknown.code, 0, "expected 401 then 403: {}", unknown.errors);
    // Byte-level comparison of the two rejections, apart from per-request fields.
    let mut c = RawClient::udp(d.addr());
    let a = c.register("sip:pbx.test", "1001", "bad", 60).unwrap();
    let b = c.register("sip:pbx.test", "7777", "bad", 60).unwrap();
    let shape = |m: &switchboard::sip::SipMessage| {
        (
            m.status(),
            m.headers
                .iter()
                .map(|h| h.name.as_str().to_string())
                .collect::<Vec<_>>(),
            m.body.clone(),
        )
    };
    assert_eq!(shape(&a), shape(&b));
    assert_eq!(a.status(), Some(403));
    assert!(d.registrations().is_empty());
}

#[test]
fn one_users_failures_lock_only_that_user_and_a_scanner_is_banned_until_lifted() {
    let d = Daemon::start("max_auth_failures = 4\nban_after_usernames = 3\nfailure_window_s = 60\nban_s = 600\n");
    let mut c = RawClient::udp(d.addr());
    let statuses: Vec<Option<u16>> = (0..4)
        .map(|_| c.register("sip:pbx.test", "1001", "guess", 60).and_then(|m| m.status()))
        .collect();
    assert_eq!(
        statuses,
        vec![Some(403), Some(403), Some(503), Some(503)],
        "two rejections, then throttled; the fourth failure locks 1001 out from here"
    );
    d.wait_for_log("user locked out from this source");
    // Another phone behind the same address, with its right password: served.
    let mut colleague = RawClient::udp(d.addr());
    let ok = colleague.register("sip:pbx.test", "1002", "demo1002", 60).unwrap();
    assert_eq!(ok.status(), Some(200), "never refused for someone else's failures");
    // Guessing extensions (the scanner pattern) bans the address.
    let mut scanner = RawClient::udp(d.addr());
    for ext in ["1003", "1004"] {
        scanner.register("sip:pbx.test", ext, "guess", 60);
    }
    d.wait_for_log("banning source after failed authentications");
    scanner.set_timeout(Duration::from_secs(2));
    assert!(
        scanner.register("sip:pbx.test", "1004", "demo1004", 60).is_none(),
        "banned: silence"
    );
    // Even correct credentials from the banned address get nothing now.
    let run = sipp(
        &d.target(),
        "register.xml",
        free_port(),
        &[
            "-s",
            "1001",
            "-au",
            "1002",
            "-ap",
            "demo1002",
            "-key",
            "expires",
            "60",
            "-recv_timeout",
            "2000",
        ],
    );
    assert_ne!(run.code, 0, "banned source must not register");
    let bans = String::from_utf8(d.ctl(&["bans"]).stdout).unwrap();
    assert!(bans.contains("127.0.0.1"), "{bans}");
    // IPv6 loopback is another source: still served.
    let mut v6 = RawClient::udp(format!("[::1]:{}", d.port).parse().unwrap());
    assert_eq!(
        v6.register("sip:pbx.test", "1002", "demo1002", 60).unwrap().status(),
        Some(200)
    );
    // The admin lifts the ban.
    let out = String::from_utf8(d.ctl(&["unban", "127.0.0.1"]).stdout).unwrap();
    assert!(out.contains("lifted"), "{out}");
    scanner.set_timeout(Duration::from_secs(5));
    let ok = scanner.register("sip:pbx.test", "1004", "demo1004", 60).unwrap();
    assert_eq!(ok.status(), Some(200));
}

/// Addresses in `trusted_networks` are never throttled or banned.
#[test]
fn a_trusted_network_is_never_banned() {
    let d = Daemon::start("max_auth_failures = 2\nban_after_usernames = 2\ntrusted_networks = [\"127.0.0.0/8\"]\n");
    let mut c = RawClient::udp(d.addr());
    for ext in ["1001", "1002", "1003", "1001", "1001"] {
        let r = c.register("sip:pbx.test", ext, "guess", 60).unwrap();
        assert_eq!(r.status(), Some(403), "{ext}");
    }
    let ok = c.register("sip:pbx.test", "1001", "demo1001", 60).unwrap();
    assert_eq!(ok.status(), Some(200));
}

#[test]
fn bindings_survive_restart_and_kill_9_and_expires_0_removes_them() {
    let mut d = Daemon::start("");
    let port = free_port();
    let contact = format!("sip:1002@127.0.0.1:{port}");
    assert_eq!(sipp_register(&d, "1002", "demo1002", 900, port, &[]).code, 0);
    assert_eq!(d.registered_contacts("1002@pbx.test"), vec![contact.clone()]);
    d.stop();
    d.restart();
    assert_eq!(
        d.registered_contacts("1002@pbx.test"),
        vec![contact.clone()],
        "after graceful restart"
    );
    // A second binding, acknowledged just before the crash, must survive too.
    let port2 = free_port();
    assert_eq!(sipp_register(&d, "1002", "demo1002", 900, port2, &[]).code, 0);
    d.kill9();
    d.restart();
    let mut contacts = d.registered_contacts("1002@pbx.test");
    contacts.sort();
    let mut want = vec![contact.clone(), format!("sip:1002@127.0.0.1:{port2}")];
    want.sort();
    assert_eq!(contacts, want, "after kill -9");
    // Expires: 0 removes one contact (SIPp sends it in the header).
    let run = sipp_register(&d, "1002", "demo1002", 0, port, &[]);
    assert_eq!(run.code, 0, "{}", run.errors);
    assert!(
        run.logs.contains(&format!("binding <sip:1002@127.0.0.1:{port2}>")),
        "200 lists the remaining binding: {}",
        run.logs
    );
    assert_eq!(
        d.registered_contacts("1002@pbx.test"),
        vec![format!("sip:1002@127.0.0.1:{port2}")]
    );
    d.kill9();
    d.restart();
    assert_eq!(
        d.registered_contacts("1002@pbx.test"),
        vec![format!("sip:1002@127.0.0.1:{port2}")]
    );
}

#[test]
fn too_brief_expiry_gets_423_and_wildcard_removes_all() {
    // The wildcard removal below answers in the RFC 2069 form: allowed here.
    let d = Daemon::start("allow_legacy_digest = true");
    let mut c = RawClient::udp(d.addr());
    let r = c.register("sip:pbx.test", "1004", "demo1004", 5).unwrap();
    assert_eq!(r.status(), Some(423));
    assert_eq!(r.header(&switchboard::sip::HeaderName::MinExpires), Some("60"));
    assert_eq!(
        c.register("sip:pbx.test", "1004", "demo1004", 120).unwrap().status(),
        Some(200)
    );
    assert_eq!(d.registered_contacts("1004@pbx.test").len(), 1);
    let mut other = RawClient::tcp(d.addr());
    let ok = other.register("sip:pbx.test", "1004", "demo1004", 120).unwrap();
    assert_eq!(
        ok.header_values(&switchboard::sip::HeaderName::Contact).count(),
        2,
        "200 lists both bindings"
    );
    // Contact: * with Expires: 0 needs auth too; the raw client answers the challenge.
    let removed = wildcard_unregister(&mut c);
    assert_eq!(removed.status(), Some(200));
    assert!(d.registered_contacts("1004@pbx.test").is_empty());
}

/// By default an answer without qop (RFC 2069, replayable: no nonce
/// count) is refused, and nothing is removed.
#[test]
fn digest_answers_without_qop_are_refused_by_default() {
    let d = Daemon::start("");
    let mut c = RawClient::udp(d.addr());
    assert_eq!(
        c.register("sip:pbx.test", "1004", "demo1004", 120).unwrap().status(),
        Some(200)
    );
    assert_eq!(wildcard_unregister(&mut c).status(), Some(403));
    assert_eq!(d.registered_contacts("1004@pbx.test").len(), 1);
}

fn wildcard_unregister(c: &mut RawClient) -> switchboard::sip::SipMessage {
    // Answers the challenge in the RFC 2069 form (no qop, no nonce count),
    // which RawClient::register does not use, so that form is exercised
    // against the daemon too.
    use switchboard::sip::digest::{compute_response, Algorithm, Credentials};
    let call_id = "wildcard-1";
    let req = c.request(
        "REGISTER",
        "sip:pbx.test",
        "1004",
        "Contact: *\r\nExpires: 0\r\n",
        call_id,
    );
    c.send_raw(req.as_bytes());
    let ch = c.recv_final().unwrap();
    assert_eq!(ch.status(), Some(401));
    let www = ch.header(&switchboard::sip::HeaderName::WwwAuthenticate).unwrap();
    let nonce = www
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let mut cr = Credentials {
        username: "1004".into(),
        realm: "pbx.test".into(),
        nonce: nonce.as_str().into(),
        uri: "sip:pbx.test".into(),
        ..Default::default()
    };
    cr.response = compute_response(Algorithm::Md5, "1004", "pbx.test", "demo1004", "REGISTER", &cr).into();
    let auth = format!(
        "Contact: *\r\nExpires: 0\r\nAuthorization: Digest username=\"1004\", realm=\"pbx.test\", nonce=\"{nonce}\", uri=\"sip:pbx.test\", response=\"{}\"\r\n",
        cr.response
    );
    let req = c.request("REGISTER", "sip:pbx.test", "1004", &auth, call_id);
    c.send_raw(req.as_bytes());
    c.recv_final().unwrap()
}
