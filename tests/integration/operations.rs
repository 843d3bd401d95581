//! Admin operations: `check` with file:line errors, SIGHUP reload that keeps
//! registrations, `ctl` against a stopped daemon.

use crate::harness::{free_port, sipp_register, Daemon, BIN};
use crate::raw_client::RawClient;
use std::process::Command;

#[test]
fn check_accepts_the_shipped_config_and_names_file_line_of_errors() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/switchboard.toml");
    let ok = Command::new(BIN).args(["check", "-c", shipped]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = [\"nonsense\"]\n[[accounts]]\ndomain = \"a.test\"\n[[accounts.users]]\nextension = \"1\"\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "-c"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    let name = bad.display().to_string();
    assert!(
        err.contains(&format!("{name}:2:11: invalid listen address \"nonsense\"")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{name}:6:13: missing password for extension \"1\"")),
        "{err}"
    );
    // `run` refuses the same file with the same messages.
    let run = Command::new(BIN).args(["run", "-c"]).arg(&bad).output().unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8(run.stderr).unwrap().contains(":2:11:"));
}

#[test]
fn version_flag() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("switchboard "));
}

#[test]
fn sighup_reloads_users_and_keeps_registrations() {
    let d = Daemon::start("");
    let port = free_port();
    assert_eq!(sipp_register(&d, "1001", "demo1001", 600, port, &[]).code, 0);
    let text = std::fs::read_to_string(&d.config_path).unwrap();
    std::fs::write(
        &d.config_path,
        text.replace("password = \"demo1004\"", "password = \"changed\""),
    )
    .unwrap();
    d.signal("-HUP");
    d.wait_for_log("configuration reloaded");
    assert_eq!(
        d.registered_contacts("1001@pbx.test").len(),
        1,
        "registration kept across reload"
    );
    let mut c = RawClient::udp(d.addr());
    assert_eq!(
        c.register("sip:pbx.test", "1004", "demo1004", 120).unwrap().status(),
        Some(403)
    );
    assert_eq!(
        c.register("sip:pbx.test", "1004", "changed", 120).unwrap().status(),
        Some(200)
    );
    // A broken config on reload is refused and the old one keeps running.
    std::fs::write(&d.config_path, "[server]\nbogus = 1\n").unwrap();
    d.signal("-HUP");
    d.wait_for_log("reload refused");
    assert_eq!(
        c.register("sip:pbx.test", "1004", "changed", 120).unwrap().status(),
        Some(200)
    );
}

#[test]
fn ctl_reports_an_unreachable_daemon_clearly() {
    let mut d = Daemon::start("");
    d.stop();
    let out = d.ctl(&["registrations"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the daemon"));
}

#[test]
fn a_panic_in_the_core_task_ends_the_process_with_a_failure_status() {
    let mut d = crate::harness::Daemon::start_with_env(
        "",
        "",
        &crate::harness::default_dialplan(),
        vec![(switchboard::ctl::FAULT_INJECTION, "1")],
    );
    d.control("fault panic-core");
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(101), "{status}");
    d.wait_for_log("panic: ");
    assert!(d
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("fault injection: panic in the core task")));
}

/// A MESSAGE from 1001 to `to` with a text body, answering the challenge.
fn message(c: &mut crate::raw_client::RawClient, to: &str, text: &str) -> Option<switchboard::sip::SipMessage> {
    let uri = format!("sip:{to}@pbx.test");
    c.challenged("MESSAGE", &uri, "1001", "demo1001", |c, auth| {
        let head = c.request("MESSAGE", &uri, "1001", auth, "store-fault-msg");
        let head = head.replace("Content-Length: 0\r\n\r\n", "");
        format!(
            "{head}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )
    })
}

/// When the store cannot write, nothing changes in memory either: a
/// REGISTER gets 500 and no binding appears; a chat message gets 500 and
/// is not pushed; once writes work again, so does everything.
#[test]
fn a_failed_store_write_changes_nothing_and_the_client_gets_500() {
    use crate::raw_client::RawClient;
    use std::time::Duration;
    let d = crate::harness::Daemon::start_with_env(
        "",
        "",
        &crate::harness::default_dialplan(),
        vec![(switchboard::ctl::FAULT_INJECTION, "1")],
    );
    let mut phone = RawClient::udp(d.addr());
    assert_eq!(
        phone
            .register("sip:pbx.test", "1002", "demo1002", 600)
            .unwrap()
            .status(),
        Some(200)
    );
    d.control("fault store-fail on");
    let mut other = RawClient::udp(d.addr());
    let r = other.register("sip:pbx.test", "1004", "demo1004", 600).unwrap();
    assert_eq!((r.status(), r.reason()), (Some(500), "Storage Failure"));
    assert!(
        d.registered_contacts("1004@pbx.test").is_empty(),
        "no binding without its row"
    );
    let mut sender = RawClient::udp(d.addr());
    let r = message(&mut sender, "1002", "lost?").unwrap();
    assert_eq!(r.status(), Some(500));
    phone.set_timeout(Duration::from_millis(500));
    assert!(phone.recv().is_none(), "an unstored message is never pushed");
    d.control("fault store-fail off");
    let r = other.register("sip:pbx.test", "1004", "demo1004", 600).unwrap();
    assert_eq!(r.status(), Some(200));
    assert_eq!(message(&mut sender, "1002", "kept").unwrap().status(), Some(202));
    phone.set_timeout(Duration::from_secs(5));
    let pushed = phone.recv().expect("the stored message is pushed");
    assert_eq!(&pushed.body[..], b"kept");
}
