//! Internal chat with real peers: SIPp senders and receivers through the
//! daemon; offline delivery on registration, in order and exactly once;
//! group fan-out and permissions; history kept across kill -9.

use crate::harness::{free_port, sipp_register, Daemon, Sipp, SippChild, SippRun};

/// Sends `text` from `from` to `to`; returns the "status …" line SIPp logged.
pub fn send(d: &Daemon, from: &str, to: &str, text: &str) -> String {
    let pass = format!("demo{from}");
    let run = Sipp::new("message_send.xml", free_port())
        .target(&d.target())
        .args(&[
            "-s", to, "-au", from, "-ap", &pass, "-key", "sender", from, "-key", "text", text,
        ])
        .run();
    assert_eq!(run.code, 0, "{}\n{}", run.errors, run.messages);
    run.logs
        .lines()
        .find(|l| l.starts_with("status "))
        .unwrap_or("no status")
        .to_string()
}

/// Registers `user` from a port and starts a receiver for `n` messages there.
pub fn receiver(d: &Daemon, user: &str, n: usize) -> SippChild {
    let port = free_port();
    assert_eq!(sipp_register(d, user, &format!("demo{user}"), 600, port, &[]).code, 0);
    Sipp::new("message_recv.xml", port)
        .args(&["-m", &n.to_string()])
        .spawn()
}

pub fn got(run: &SippRun) -> Vec<String> {
    run.logs
        .lines()
        .filter_map(|l| l.strip_prefix("got "))
        .map(|l| l.split(['\r', '\n', ' ']).take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

fn ctl_json(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["chat"];
    all.extend_from_slice(args);
    let out = d.ctl(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn private_message_reaches_a_registered_receiver_intact() {
    let d = Daemon::start("");
    let rx = receiver(&d, "1002", 1);
    assert_eq!(send(&d, "1001", "1002", "hello-1002"), "status 202");
    let run = rx.wait();
    assert_eq!(run.code, 0, "{}", run.errors);
    assert_eq!(got(&run), vec!["1001: hello-1002"]);
    let hist = ctl_json(&d, &["history", "1002", "1001"]);
    assert_eq!(hist[0]["body"].as_str().unwrap().trim(), "hello-1002");
    // Only the two parties can read it.
    let other = d.ctl(&["chat", "history", "1003", "1001"]);
    let seen: serde_json::Value = serde_json::from_slice(&other.stdout).unwrap_or_default();
    assert!(
        seen.as_array().is_none_or(|a| a.is_empty()),
        "1003 sees nothing of 1001-1002: {seen}"
    );
}

#[test]
fn offline_messages_arrive_in_order_exactly_once_on_registration() {
    let mut d = Daemon::start("");
    assert_eq!(send(&d, "1001", "1004", "first"), "status 202");
    assert_eq!(send(&d, "1003", "1004", "second"), "status 202");
    // A restart between sending and registering loses nothing.
    d.kill9();
    d.restart();
    let rx = receiver(&d, "1004", 2);
    let run = rx.wait();
    assert_eq!(run.code, 0, "{}", run.errors);
    assert_eq!(got(&run), vec!["1001: first", "1003: second"]);
    d.wait_for_log("chat message delivered id=2");
    // Registering again delivers nothing more: a receiver for one message times out.
    let port = free_port();
    assert_eq!(sipp_register(&d, "1004", "demo1004", 600, port, &[]).code, 0);
    let again = Sipp::new("message_recv.xml", port).args(&["-timeout", "3s"]).run();
    assert!(got(&again).is_empty(), "delivered twice: {:?}", got(&again));
    let unread = ctl_json(&d, &["unread", "1004"]);
    let total: u64 = unread
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["unread"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 2);
    ctl_json(&d, &["read", "1004", "1001"]);
    let unread = ctl_json(&d, &["unread", "1004"]);
    let left: Vec<_> = unread
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["unread"].as_u64() > Some(0))
        .collect();
    assert_eq!(left.len(), 1, "{unread}");
    assert_eq!(left[0]["conversation"], "1003");
}

#[test]
fn group_messages_fan_out_to_members_but_not_the_sender() {
    let d = Daemon::start("");
    // Group 2001 (Sales): members 1002, 1004, supervisor 1003.
    let r1002 = receiver(&d, "1002", 1);
    let r1003 = receiver(&d, "1003", 1);
    let r1004 = receiver(&d, "1004", 1);
    assert_eq!(send(&d, "1004", "2001", "team-news"), "status 202");
    for rx in [r1002, r1003] {
        let run = rx.wait();
        assert_eq!(got(&run), vec!["1004: team-news"], "{}", run.errors);
    }
    let sender_side = r1004;
    drop(sender_side);
    d.wait_for_log("chat message delivered id=1");
    let log = d.log.lock().unwrap().join("\n");
    assert!(!log.contains("to=1004@pbx.test"), "the sender got its own message");
}

#[test]
fn group_permissions_refuse_outsiders_and_store_nothing() {
    let d = Daemon::start("");
    let r1001 = receiver(&d, "1001", 1);
    // 1004 is an agent outside Support (2002); 1003 supervises Sales, not Support.
    assert!(send(&d, "1004", "2002", "sneaky").starts_with("status 403 Not a member of group 2002"));
    assert!(send(&d, "1003", "2002", "sneaky").starts_with("status 403 Not a member of group 2002"));
    assert_eq!(send(&d, "1004", "9999", "nobody"), "status 404");
    // The owner may write anywhere; Support's member gets only that one.
    assert_eq!(send(&d, "1002", "2002", "from-admin"), "status 202");
    let run = r1001.wait();
    assert_eq!(got(&run), vec!["1002: from-admin"]);
    let hist = ctl_json(&d, &["history", "1001", "2002"]);
    assert_eq!(
        hist.as_array().unwrap().len(),
        1,
        "refused messages were not stored: {hist}"
    );
}

#[test]
fn chat_switch_off_gives_403() {
    let d = Daemon::start("");
    let text = std::fs::read_to_string(&d.config_path).unwrap();
    std::fs::write(&d.config_path, text.replace("chat = true", "chat = false")).unwrap();
    d.signal("-HUP");
    d.wait_for_log("configuration reloaded");
    assert!(send(&d, "1001", "1002", "hi").starts_with("status 403 Chat is disabled for this account"));
}

#[test]
fn muted_users_keep_history_but_get_no_push() {
    let d = Daemon::start("");
    assert_eq!(ctl_json(&d, &["mute", "1002", "on"])["muted"], true);
    let port = free_port();
    assert_eq!(sipp_register(&d, "1002", "demo1002", 600, port, &[]).code, 0);
    let rx = Sipp::new("message_recv.xml", port).args(&["-timeout", "3s"]).spawn();
    assert_eq!(send(&d, "1001", "1002", "quiet"), "status 202");
    assert!(got(&rx.wait()).is_empty(), "a muted user's phone is not pushed to");
    let hist = ctl_json(&d, &["history", "1002", "1001"]);
    assert_eq!(hist[0]["body"].as_str().unwrap().trim(), "quiet");
    let unread = ctl_json(&d, &["unread", "1002"]);
    assert_eq!(unread[0]["unread"], 1);
}
