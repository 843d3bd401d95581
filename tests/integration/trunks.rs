//! Trunks to providers, with SIPp playing the provider: switchboard
//! registers (digest, checked by the provider), refreshes before expiry,
//! and shows the status in `ctl trunks`.

use crate::harness::{default_dialplan, free_port, Daemon, Sipp};

/// A `[[trunks]]` entry for a provider at 127.0.0.1:`port`.
fn trunk(name: &str, port: u16, extra: &str) -> String {
    format!(
        "[[trunks]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\nusername = \"acme\"\npassword = \"s3cret\"\n{extra}"
    )
}

fn trunk_status(d: &Daemon, name: &str) -> serde_json::Value {
    let out = d.ctl(&["--json", "trunks"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    list.into_iter().find(|t| t["name"] == name).expect("trunk listed")
}

#[test]
fn registers_with_the_provider_answering_its_challenge_and_refreshes() {
    let port = free_port();
    let provider = Sipp::new("provider_register.xml", port).spawn();
    let d = Daemon::start_with("", &trunk("main", port, "register = true\n"), &default_dialplan());
    d.wait_for_log("trunk registered trunk=main expires_s=2");
    // Refreshed at 80 % of the 2 s granted, answering a new challenge.
    d.wait_for_log("trunk registered trunk=main expires_s=3600");
    let run = provider.wait();
    assert_eq!(
        run.code, 0,
        "the provider accepted both answers: {}\n{}",
        run.errors, run.logs
    );
    assert!(run.logs.contains("register sip:127.0.0.1 first"), "{}", run.logs);
    let t = trunk_status(&d, "main");
    assert_eq!(
        (t["status"].as_str(), t["expires_s"].as_u64()),
        (Some("registered"), Some(3600)),
        "{t}"
    );
}

#[test]
fn a_wrong_password_shows_the_trunk_failing_with_the_providers_code() {
    let port = free_port();
    let provider = Sipp::new("provider_register.xml", port).spawn();
    let d = Daemon::start_with(
        "",
        &trunk("main", port, "register = true\n").replace("s3cret", "wrong"),
        &default_dialplan(),
    );
    d.wait_for_log("trunk registration failed trunk=main code=403");
    let t = trunk_status(&d, "main");
    assert_eq!(
        (t["status"].as_str(), t["last_code"].as_u64()),
        (Some("failing"), Some(403)),
        "{t}"
    );
    assert_eq!(t["failures"], 1);
    assert_ne!(provider.wait().code, 0, "the provider saw a bad answer");
}

/// 1001 (allowed out) calls an external number; it goes out through the
/// account's trunk, which challenges the INVITE.
fn call_out(d: &Daemon) -> crate::harness::SippRun {
    crate::calls::caller(d, "1001", "0611223344", 500, "uac_call.xml")
}

#[test]
fn an_external_call_goes_out_through_the_trunk_answering_its_challenge() {
    let port = free_port();
    let mp = free_port().to_string();
    let provider = Sipp::new("provider_invite.xml", port).args(&["-mp", &mp]).spawn();
    let d = Daemon::start_with_account(&trunk("main", port, ""), "trunks = [\"main\"]\n");
    let uac = call_out(&d);
    let run = provider.wait();
    assert_eq!(
        run.code, 0,
        "the provider took the answered challenge: {}\n{}",
        run.errors, run.messages
    );
    assert_eq!(uac.code, 0, "{}\n{}", uac.errors, uac.messages);
    // The number in the Request-URI, the trunk's user in From.
    assert!(run.logs.contains("request sip:0611223344@127.0.0.1"), "{}", run.logs);
    assert!(run.logs.contains("<sip:acme@127.0.0.1>;tag="), "{}", run.logs);
    let r = crate::calls::records(&d);
    assert_eq!(
        (
            r[0]["callee"].as_str(),
            r[0]["direction"].as_str(),
            r[0]["disposition"].as_str()
        ),
        (Some("0611223344"), Some("outbound"), Some("answered"))
    );
}

#[test]
fn a_failing_provider_makes_the_call_fail_over_to_the_next_trunk() {
    let (down, up) = (free_port(), free_port());
    let mp = free_port().to_string();
    let first = Sipp::new("provider_down.xml", down).spawn();
    let second = Sipp::new("provider_invite.xml", up).args(&["-mp", &mp]).spawn();
    let sections = trunk("down", down, "") + &trunk("up", up, "");
    let d = Daemon::start_with_account(&sections, "trunks = [\"down\", \"up\"]\n");
    let uac = call_out(&d);
    assert_eq!(uac.code, 0, "{}\n{}", uac.errors, uac.messages);
    assert_eq!(first.wait().code, 0, "the first provider was tried");
    assert_eq!(second.wait().code, 0, "the second took the call");
    d.wait_for_log("failing over to the next trunk trunk=up");
    assert_eq!(crate::calls::records(&d)[0]["disposition"], "answered");
}

#[test]
fn without_a_trunk_an_external_call_gets_503() {
    let d = Daemon::start("");
    let uac = crate::calls::caller(&d, "1001", "0611223344", 0, "uac_fail.xml");
    assert_eq!(uac.code, 0, "{}", uac.errors);
    assert!(uac.logs.contains("final 503"), "{}", uac.logs);
}
