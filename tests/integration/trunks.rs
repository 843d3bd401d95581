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
