//! Presence with real peers: a SIPp watcher SUBSCRIBEs to a user and gets
//! NOTIFYs with the right PIDF basic status as the user registers and
//! unregisters; other packages and unknown users are refused.

use crate::harness::{free_port, sipp_register, Daemon, Sipp};
use crate::raw_client::RawClient;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use switchboard::sip::{HeaderName, SipMessage};

#[test]
fn watcher_sees_registration_and_unregistration() {
    let d = Daemon::start("");
    let watcher = Sipp::new("subscribe_presence.xml", free_port())
        .target(&d.target())
        .args(&[
            "-s", "1002", "-au", "1001", "-ap", "demo1001", "-key", "watcher", "1001",
        ])
        .spawn();
    d.wait_for_log("subscription created");
    let port = free_port();
    assert_eq!(sipp_register(&d, "1002", "demo1002", 600, port, &[]).code, 0);
    // Unregister (Expires: 0): the 200 lists no binding, so SIPp's own check fails; the daemon's state is what counts.
    sipp_register(&d, "1002", "demo1002", 0, port, &[]);
    assert!(d.registered_contacts("1002@pbx.test").is_empty());
    let run = watcher.wait();
    assert_eq!(run.code, 0, "{}\n{}", run.errors, run.messages);
    let states: Vec<&str> = run.logs.lines().filter_map(|l| l.strip_prefix("notify ")).collect();
    assert_eq!(
        states,
        vec!["<basic>closed</basic>", "<basic>open</basic>", "<basic>closed</basic>"]
    );
}

#[test]
fn other_packages_and_unknown_users_are_refused() {
    let d = Daemon::start("");
    let mut c = RawClient::udp(d.addr());
    let r = c
        .send_request(
            "SUBSCRIBE",
            "sip:1002@pbx.test",
            "1001",
            "Event: message-summary\r\nContact: <sip:1001@127.0.0.1:9>\r\n",
        )
        .unwrap();
    assert_eq!(r.status(), Some(489));
    assert!(r
        .header(&switchboard::sip::HeaderName::AllowEvents)
        .unwrap()
        .contains("presence"));
    // Unauthenticated: challenged before anything about the user is revealed.
    let r = c
        .send_request(
            "SUBSCRIBE",
            "sip:7777@pbx.test",
            "1001",
            "Event: presence\r\nContact: <sip:1001@127.0.0.1:9>\r\n",
        )
        .unwrap();
    assert_eq!(r.status(), Some(407));
}

/// A response to a request received by a raw client (Via, From, To,
/// Call-ID and CSeq copied; a To tag added).
fn answer(req: &SipMessage, status: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for name in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        for v in req.header_values(&name) {
            let tagged = name == HeaderName::To && !v.contains("tag=");
            let v = if tagged {
                format!("{v};tag=callee")
            } else {
                v.to_string()
            };
            out.push_str(&format!("{}: {v}\r\n", name.as_str()));
        }
    }
    out + "Content-Length: 0\r\n\r\n"
}

/// Presence follows call state through domain events, not a once-a-second
/// poll: the watcher's NOTIFY comes within 100 ms of the callee's phone
/// ringing and of the call ending.
#[test]
fn presence_notifies_within_100_ms_of_a_call_state_change() {
    let d = Daemon::start("");
    let mut callee = RawClient::udp(d.addr());
    assert_eq!(
        callee
            .register("sip:pbx.test", "1002", "demo1002", 600)
            .unwrap()
            .status(),
        Some(200)
    );
    // The watcher: 1003 subscribes to 1002's presence and timestamps every NOTIFY note.
    let mut watcher = RawClient::udp(d.addr());
    let extra = format!("Event: presence\r\nExpires: 600\r\n{}", watcher.contact("1003"));
    let ok = watcher.authenticated("SUBSCRIBE", "sip:1002@pbx.test", "1003", "demo1003", &extra);
    assert_eq!(ok.unwrap().status(), Some(200));
    let (notes_tx, notes) = mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        watcher.set_timeout(Duration::from_secs(30));
        while let Some(m) = watcher.recv() {
            if m.method().map(|x| x.as_str()) != Some("NOTIFY") {
                continue;
            }
            watcher.send_raw(answer(&m, "200 OK").as_bytes());
            let body = String::from_utf8_lossy(&m.body).to_string();
            let note = body
                .split("<note>")
                .nth(1)
                .and_then(|n| n.split('<').next())
                .unwrap_or("")
                .to_string();
            if notes_tx.send((Instant::now(), note)).is_err() {
                return;
            }
        }
    });
    let next_note = || notes.recv_timeout(Duration::from_secs(10)).expect("a NOTIFY");
    assert_eq!(next_note().1, "Available");
    std::thread::scope(|s| {
        let caller = s.spawn(|| crate::calls::caller(&d, "1001", "1002", 0, "uac_fail.xml"));
        let invite = loop {
            let m = callee.recv().expect("the INVITE to the callee");
            if m.method().map(|x| x.as_str()) == Some("INVITE") {
                break m;
            }
        };
        let ringing_at = Instant::now();
        callee.send_raw(answer(&invite, "180 Ringing").as_bytes());
        let (at, note) = next_note();
        assert_eq!(note, "Ringing");
        assert!(
            at.saturating_duration_since(ringing_at) < Duration::from_millis(100),
            "{:?}",
            at - ringing_at
        );
        let busy_at = Instant::now();
        callee.send_raw(answer(&invite, "486 Busy Here").as_bytes());
        let (at, note) = next_note();
        assert_eq!(note, "Available");
        assert!(
            at.saturating_duration_since(busy_at) < Duration::from_millis(100),
            "{:?}",
            at - busy_at
        );
        assert_eq!(caller.join().unwrap().code, 0);
    });
}

/// A watcher that answers a NOTIFY with 481 is gone: its subscription
/// ends, and later changes send it nothing.
#[test]
fn a_notify_answered_481_ends_the_subscription() {
    let d = Daemon::start("");
    let mut watcher = RawClient::udp(d.addr());
    let extra = format!("Event: presence\r\nExpires: 600\r\n{}", watcher.contact("1003"));
    let ok = watcher.authenticated("SUBSCRIBE", "sip:1002@pbx.test", "1003", "demo1003", &extra);
    assert_eq!(ok.unwrap().status(), Some(200));
    let first = watcher.recv().expect("the first NOTIFY");
    assert_eq!(first.method().map(|m| m.as_str()), Some("NOTIFY"));
    watcher.send_raw(answer(&first, "481 Call/Transaction Does Not Exist").as_bytes());
    d.wait_for_log("subscription ended: the watcher is gone");
    // 1002 registers: a live subscription would NOTIFY now.
    let mut phone = RawClient::udp(d.addr());
    assert_eq!(
        phone
            .register("sip:pbx.test", "1002", "demo1002", 600)
            .unwrap()
            .status(),
        Some(200)
    );
    d.wait_for_log("registered");
    watcher.set_timeout(Duration::from_millis(500));
    assert!(watcher.recv().is_none(), "no NOTIFY after the 481");
}

/// Agent states follow the agent's devices and calls, and the agent's own
/// choice set with `ctl agent`.
#[test]
fn agent_states_follow_registrations_calls_and_ctl() {
    let d = crate::harness::Daemon::start("");
    let agents = |d: &crate::harness::Daemon| -> Vec<serde_json::Value> {
        let out = d.ctl(&["agents"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let callee = crate::calls::callee(&d, "1002", "uas_answer.xml", &[]);
    d.saw_log("agent state aor=1002@pbx.test state=ready");
    let out = d.ctl(&["agent", "1002", "not_ready", "lunch", "break"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["reason"].as_str()),
        (Some("not_ready"), Some("lunch break"))
    );
    assert_eq!(agents(&d)[0]["state"], "not_ready");
    let out = d.ctl(&["agent", "1002", "ready"]);
    assert!(out.status.success());
    // A call: ringing, in_call, then ready again when it ends.
    let uac = crate::calls::caller(&d, "1001", "1002", 300, "uac_call.xml");
    assert_eq!(uac.code, 0, "{}", uac.errors);
    assert_eq!(callee.wait().code, 0);
    d.saw_log("agent state aor=1002@pbx.test state=ringing");
    d.saw_log("agent state aor=1002@pbx.test state=in_call");
    let states: Vec<String> = d
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("agent state aor=1002@pbx.test"))
        .map(|l| l.rsplit("state=").next().unwrap().to_string())
        .collect();
    assert_eq!(states, ["ready", "not_ready", "ready", "ringing", "in_call", "ready"]);
    let bad = d.ctl(&["agent", "9999", "ready"]);
    assert!(!bad.status.success(), "an unknown user is refused");
}

/// A user whose device registered before a restart is an agent again
/// after it, ready, without registering anew.
#[test]
fn agents_registered_before_a_restart_are_ready_after_it() {
    let mut d = crate::harness::Daemon::start("");
    let reg = crate::harness::sipp_register(&d, "1002", "demo1002", 600, crate::harness::free_port(), &[]);
    assert_eq!(reg.code, 0, "{}", reg.errors);
    d.kill9();
    d.restart();
    let out = d.ctl(&["agents"]);
    let agents: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (agents[0]["aor"].as_str(), agents[0]["state"].as_str()),
        (Some("1002@pbx.test"), Some("ready")),
        "{agents:?}"
    );
}
