//! Calls through the B2BUA with real peers: SIPp caller → switchboard →
//! SIPp callee with RTP through the relay; failures mapped back; call
//! records written and kept.

use crate::harness::{free_port, sipp_register, Daemon, Sipp};
use crate::raw_client::RawClient;
use switchboard::media::g711::linear_to_alaw;

/// One second of a 440 Hz tone as raw PCMA, for SIPp's rtp_stream.
pub fn tone_alaw(seconds: usize) -> Vec<u8> {
    (0..8000 * seconds)
        .map(|i| {
            let s = (f64::from(i as u32) * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin() * 8000.0;
            linear_to_alaw(s as i16)
        })
        .collect()
}

/// Registers `user` from `port` and starts a SIPp callee there.
pub fn callee(d: &Daemon, user: &str, scenario: &str, extra: &[&str]) -> crate::harness::SippChild {
    let port = free_port();
    let reg = sipp_register(d, user, &format!("demo{user}"), 600, port, &[]);
    assert_eq!(reg.code, 0, "callee registration failed: {}", reg.errors);
    let mp = free_port().to_string();
    Sipp::new(scenario, port).args(&["-mp", &mp]).args(extra).spawn()
}

/// A SIPp call from `caller` to `to` with `scenario`, held `hold_ms` once
/// answered, streaming a 440 Hz tone (`audio.al`).
pub fn caller_sipp(d: &Daemon, caller: &str, to: &str, hold_ms: u32, scenario: &str) -> Sipp {
    let mp = free_port().to_string();
    let hold = hold_ms.to_string();
    let pass = format!("demo{caller}");
    Sipp::new(scenario, free_port())
        .target(&d.target())
        .args(&[
            "-s", to, "-au", caller, "-ap", &pass, "-key", "caller", caller, "-d", &hold, "-mp", &mp,
        ])
        .file("audio.al", &tone_alaw(10))
}

/// Places a call from `caller` to `to` holding it for `hold_ms`.
pub fn caller(d: &Daemon, caller: &str, to: &str, hold_ms: u32, scenario: &str) -> crate::harness::SippRun {
    caller_sipp(d, caller, to, hold_ms, scenario).run()
}

/// The same call (`uac_call.xml`), left running: `wait()` for its end.
pub fn caller_in_background(d: &Daemon, caller: &str, to: &str, hold_ms: u32) -> crate::harness::SippChild {
    caller_sipp(d, caller, to, hold_ms, "uac_call.xml").spawn()
}

pub fn records(d: &Daemon) -> Vec<serde_json::Value> {
    let out = d.ctl(&["--json", "cdr"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn status(d: &Daemon) -> String {
    String::from_utf8(d.ctl(&["status"]).stdout).unwrap()
}

#[test]
fn sipp_call_with_rtp_through_the_relay() {
    let d = Daemon::start("");
    let uas = callee(&d, "1002", "uas_answer.xml", &["-rtp_echo"]);
    let uac = caller(&d, "1001", "1002", 2000, "uac_call.xml");
    let uas = uas.wait();
    assert_eq!(
        uac.code,
        0,
        "caller failed: {}\nDAEMON:\n{}",
        uac.errors,
        d.log.lock().unwrap().join("\n")
    );
    assert_eq!(uas.code, 0, "callee failed: {}\n{}", uas.errors, uas.messages);
    // The callee saw our relay, not the caller, in the SDP.
    assert!(
        uas.messages.contains("c=IN IP4 127.0.0.1") && !uas.messages.contains("o=caller"),
        "{}",
        uas.messages
    );
    let r = records(&d);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["disposition"], "answered");
    assert_eq!(
        (r[0]["caller"].as_str(), r[0]["callee"].as_str()),
        (Some("1001"), Some("1002"))
    );
    assert_eq!(r[0]["hangup_side"], "caller");
    // ~2 s of 20 ms packets went out, and the callee's echo came back through the relay.
    let (from_caller, from_callee) = (
        r[0]["rtp_from_caller"].as_u64().unwrap(),
        r[0]["rtp_from_callee"].as_u64().unwrap(),
    );
    assert!(from_caller >= 50, "relay saw {from_caller} packets from the caller");
    assert!(
        from_callee >= 50,
        "relay saw {from_callee} echoed packets from the callee"
    );
    let s = status(&d);
    assert!(s.contains("calls: 0") && s.contains("relay ports in use: 0"), "{s}");
}

/// The "final CODE REASON" line logged by uac_fail.xml.
fn final_line(run: &crate::harness::SippRun) -> String {
    run.logs
        .lines()
        .find(|l| l.starts_with("final "))
        .unwrap_or_else(|| panic!("no final response: {}\n{}", run.errors, run.messages))
        .to_string()
}

#[test]
fn callee_busy_gives_486_and_a_busy_record() {
    let d = Daemon::start("");
    let uas = callee(&d, "1002", "uas_busy.xml", &[]);
    let uac = caller(&d, "1001", "1002", 0, "uac_fail.xml");
    assert_eq!(uac.code, 0, "{}", uac.errors);
    assert!(final_line(&uac).starts_with("final 486"), "{}", final_line(&uac));
    assert_eq!(uas.wait().code, 0);
    let r = records(&d);
    assert_eq!(
        (r[0]["disposition"].as_str(), r[0]["sip_code"].as_u64()),
        (Some("busy"), Some(486))
    );
}

#[test]
fn unregistered_callee_gets_480_and_unknown_number_404() {
    let d = Daemon::start("");
    let run = caller(&d, "1001", "1003", 0, "uac_fail.xml");
    assert!(final_line(&run).starts_with("final 480"), "{}", final_line(&run));
    let run = caller(&d, "1001", "1999", 0, "uac_fail.xml");
    assert!(final_line(&run).starts_with("final 404"), "{}", final_line(&run));
    let r = records(&d);
    let d: Vec<_> = r
        .iter()
        .map(|x| x["disposition"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(d, vec!["no-answer", "failed"]);
}

#[test]
fn caller_cancels_while_ringing() {
    let d = Daemon::start("");
    let uas = callee(&d, "1002", "uas_ring.xml", &[]);
    let uac = caller(&d, "1001", "1002", 0, "uac_cancel.xml");
    assert_eq!(uac.code, 0, "{}\n{}", uac.errors, uac.messages);
    let uas = uas.wait();
    assert_eq!(uas.code, 0, "callee saw the CANCEL: {}\n{}", uas.errors, uas.messages);
    let r = records(&d);
    assert_eq!(
        (r[0]["disposition"].as_str(), r[0]["hangup_side"].as_str()),
        (Some("cancelled"), Some("caller"))
    );
    let s = status(&d);
    assert!(s.contains("calls: 0") && s.contains("relay ports in use: 0"), "{s}");
}

#[test]
fn callee_hangs_up_with_bye() {
    let d = Daemon::start("");
    let uas = callee(&d, "1002", "uas_hangup.xml", &["-d", "500"]);
    let uac = caller(&d, "1001", "1002", 0, "uac_wait_bye.xml");
    assert_eq!(uac.code, 0, "{}\n{}", uac.errors, uac.messages);
    assert_eq!(uas.wait().code, 0);
    let r = records(&d);
    assert_eq!(
        (r[0]["disposition"].as_str(), r[0]["hangup_side"].as_str()),
        (Some("answered"), Some("callee"))
    );
}

#[test]
fn hold_and_resume_are_answered_by_the_pbx_and_not_passed_on() {
    let d = Daemon::start("");
    let uas = callee(&d, "1002", "uas_answer.xml", &[]);
    let uac = caller(&d, "1001", "1002", 0, "uac_hold.xml");
    let uas = uas.wait();
    assert_eq!(uac.code, 0, "{}\n{}", uac.errors, uac.messages);
    assert_eq!(uas.code, 0, "{}\n{}", uas.errors, uas.messages);
    assert!(
        uac.logs.contains("held a=recvonly") && uac.logs.contains("resumed a=sendrecv"),
        "{}",
        uac.logs
    );
    // The callee saw one INVITE: the hold and the resume stayed with us.
    assert_eq!(uas.messages.matches("INVITE sip:").count(), 1, "{}", uas.messages);
    d.saw_log("call put on hold");
    d.saw_log("call taken off hold");
}

#[test]
fn outbound_calls_need_permission() {
    let d = Daemon::start("");
    let run = caller(&d, "1004", "0611223344", 0, "uac_fail.xml");
    assert_eq!(
        final_line(&run).split(" SIP/2.0").next().unwrap(),
        "final 403 Outbound calls not permitted for 1004"
    );
    // Allowed, but no trunk exists yet.
    let run = caller(&d, "1001", "0611223344", 0, "uac_fail.xml");
    assert!(
        final_line(&run).starts_with("final 503 No trunk"),
        "{}",
        final_line(&run)
    );
}

fn status_number(d: &Daemon, key: &str) -> u64 {
    let s = status(d);
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key} line: {s}"))
}

/// Waits until every SIP transaction has ended (they outlive their calls
/// by 64*T1 to absorb retransmissions), checking `ctl status`.
fn wait_for_idle(d: &Daemon) {
    for _ in 0..200 {
        if status_number(d, "transactions: ") == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("transactions never drained: {}", status(d));
}

/// (resident, live heap) in KiB, from `ctl status`.
fn memory_kib(d: &Daemon) -> (u64, u64) {
    let s = status(d);
    let line = s
        .lines()
        .find_map(|l| l.strip_prefix("memory: "))
        .unwrap_or_else(|| panic!("no memory line: {s}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers[..] {
        [rss, heap] => (rss, heap),
        _ => panic!("memory line: {line}"),
    }
}

/// A thousand short answered calls in a row leave no call, no relay port
/// and no memory growth behind. Bound: once two thousand calls have warmed
/// up allocator arenas and caches, the next thousand grow the live heap
/// (glibc mallinfo2) by at most 256 KiB, about 256 bytes per call — a leak of
/// any call's state would exceed it — and the resident memory, noisier
/// because the allocator keeps and returns pages as it likes, by at most
/// 2 MiB.
#[test]
fn a_thousand_short_calls_leave_nothing_behind() {
    // T1 = 100 ms so finished transactions leave within 64*T1 = 6.4 s.
    let d = Daemon::start_with(
        "",
        "[sip]\nt1_ms = 100\nt2_ms = 400\n",
        &crate::harness::default_dialplan(),
    );
    let uas = callee(&d, "1002", "uas_answer.xml", &["-m", "3000", "-timeout", "300s"]);
    let run = || {
        let mp = free_port().to_string();
        Sipp::new("uac_call.xml", free_port())
            .target(&d.target())
            .args(&[
                "-s", "1002", "-au", "1001", "-ap", "demo1001", "-key", "caller", "1001", "-d", "0", "-mp", &mp,
            ])
            .args(&["-m", "1000", "-r", "100", "-l", "20", "-timeout", "120s"])
            .file("audio.al", &tone_alaw(1))
            .run()
    };
    for _ in 0..2 {
        let warm = run();
        assert_eq!(warm.code, 0, "{}", warm.errors);
    }
    wait_for_idle(&d);
    let before = memory_kib(&d);
    let second = run();
    assert_eq!(second.code, 0, "{}", second.errors);
    let uas = uas.wait();
    assert_eq!(uas.code, 0, "{}", uas.errors);
    wait_for_idle(&d);
    let after = memory_kib(&d);
    let s = status(&d);
    assert!(s.contains("calls: 0") && s.contains("relay ports in use: 0"), "{s}");
    assert!(s.contains("dialplans running: 0"), "{s}");
    assert_eq!(records(&d).len(), 50, "ctl cdr shows the last 50 by default");
    let all = d.ctl(&["--json", "cdr", "--limit", "5000"]);
    let all: Vec<serde_json::Value> = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(all.len(), 3000);
    assert!(all.iter().all(|r| r["disposition"] == "answered"));
    println!("(rss, live heap) after 2000 calls: {before:?} KiB, after 3000: {after:?} KiB");
    assert!(
        after.1 <= before.1 + 256,
        "live heap grew from {before:?} KiB to {after:?} KiB"
    );
    assert!(
        after.0 <= before.0 + 2048,
        "resident memory grew from {before:?} KiB to {after:?} KiB"
    );
}

/// The callee sends its 200 OK again after the daemon ACKed it (as a phone
/// does when the ACK is late or lost): each copy is ACKed with the same
/// ACK, byte for byte (RFC 3261 §13.2.2.4), so the callee sees a
/// retransmission and not a second ACK. The callee is hand-driven to
/// replay its answer on cue; the caller is SIPp.
#[test]
fn a_retransmitted_answer_gets_the_same_ack() {
    use switchboard::sip::response::response_to;
    use switchboard::sip::{HeaderName, Method, SipMessage};
    let d = Daemon::start("");
    let mut callee = crate::raw_client::RawClient::udp(d.addr());
    let reg = callee.register("sip:pbx.test", "1002", "demo1002", 600).unwrap();
    assert_eq!(reg.status(), Some(200));
    let media = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mp = free_port().to_string();
    let caller = Sipp::new("uac_call.xml", free_port())
        .target(&d.target())
        .args(&[
            "-s", "1002", "-au", "1001", "-ap", "demo1001", "-key", "caller", "1001", "-d", "0", "-mp", &mp, "-m", "1",
        ])
        .file("audio.al", &tone_alaw(1))
        .spawn();
    let next = |callee: &mut crate::raw_client::RawClient, method: Method| -> SipMessage {
        loop {
            let m = callee.recv().unwrap_or_else(|| panic!("no {method:?} came"));
            if m.method() == Some(&method) {
                return m;
            }
        }
    };
    let invite = next(&mut callee, Method::Invite);
    let mut ok = response_to(&invite, 200, None, "raw-callee");
    ok.push_header(HeaderName::Contact, format!("<sip:1002@{}>", callee.local));
    ok.push_header(HeaderName::ContentType, "application/sdp");
    ok.body = format!(
        "v=0\r\no=callee 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n",
        media.local_addr().unwrap().port()
    )
    .into();
    let ok = ok.to_bytes();
    callee.send_raw(&ok);
    let first = next(&mut callee, Method::Ack);
    callee.send_raw(&ok);
    let second = next(&mut callee, Method::Ack);
    assert_eq!(
        String::from_utf8_lossy(&second.to_bytes()),
        String::from_utf8_lossy(&first.to_bytes())
    );
    // The caller hangs up; the BYE reaches us and is answered.
    let bye = next(&mut callee, Method::Bye);
    callee.send_raw(&response_to(&bye, 200, None, "raw-callee").to_bytes());
    let run = caller.wait();
    assert_eq!(run.code, 0, "{}\n{}", run.errors, run.messages);
}

/// An in-dialog request of a raw caller (fixed tags, so it can be replayed).
fn in_dialog(c: &RawClient, method: &str, call_id: &str, to: &str, cseq: u32, extra: &str) -> String {
    format!(
        "{method} sip:1002@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP {}:{};branch=z9hG4bK{method}{cseq};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1001@pbx.test>;tag=raw-caller\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n",
        c.local.ip(),
        c.local.port()
    )
}

/// A call from a raw caller (1001) to 1002, answered and ACKed; returns
/// the caller and the To header (with our tag) of its dialog.
fn raw_call(d: &Daemon, call_id: &str) -> (RawClient, String) {
    let mut caller = RawClient::udp(d.addr());
    let sdp = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let contact = caller.contact("1001");
    let ok = caller
        .challenged("INVITE", "sip:1002@pbx.test", "1001", "demo1001", |c, auth| {
            let cseq = if auth.is_empty() { 1 } else { 2 };
            let head = in_dialog(
                c,
                "INVITE",
                call_id,
                "<sip:1002@pbx.test>",
                cseq,
                &format!("{contact}{auth}"),
            );
            let head = head.replace("Content-Length: 0\r\n\r\n", "");
            format!(
                "{head}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            )
        })
        .expect("a final response");
    assert_eq!(ok.status(), Some(200));
    let to = ok.header(&switchboard::sip::HeaderName::To).unwrap().to_string();
    caller.send_raw(in_dialog(&caller, "ACK", call_id, &to, 2, "").as_bytes());
    (caller, to)
}

/// A call in progress when the daemon is killed gets a record with
/// disposition "interrupted" (its legs, start and answer times) at the
/// restart: history has no hole.
#[test]
fn a_call_alive_at_a_kill_9_is_recorded_as_interrupted_after_restart() {
    let mut d = Daemon::start("");
    let _callee = callee(&d, "1002", "uas_answer.xml", &[]);
    let _caller = raw_call(&d, "killed-call");
    d.kill9();
    d.restart(); // ready only after the recovery
    let log = d.log.lock().unwrap().join("\n");
    assert!(
        log.contains("calls interrupted by the last stop recorded calls=1"),
        "{log}"
    );
    let recs = records(&d);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(r["disposition"], "interrupted");
    assert_eq!(r["call_id"], "killed-call");
    assert!(r["answer_ms"].as_u64().is_some(), "{r}");
    let legs = r["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 2, "{r}");
    assert_eq!(
        (legs[0]["party"].as_str(), legs[1]["party"].as_str()),
        (Some("1001"), Some("1002"))
    );
    // A second restart finds nothing left to recover.
    d.stop();
    d.restart();
    assert_eq!(records(&d).len(), 1);
}

/// A ban drops what would start something, never the requests of calls
/// already up: the caller's BYE after its own address got banned ends the
/// call normally.
#[test]
fn a_ban_does_not_cut_calls_already_up() {
    let d = Daemon::start("ban_after_usernames = 2\n");
    let callee = callee(&d, "1002", "uas_answer.xml", &[]);
    let (mut caller, to) = raw_call(&d, "kept-call");
    let mut scanner = RawClient::udp(d.addr());
    for ext in ["1003", "1004"] {
        scanner.register("sip:pbx.test", ext, "guess", 60);
    }
    d.wait_for_log("banning source after failed authentications");
    caller.send_raw(in_dialog(&caller, "BYE", "kept-call", &to, 3, "").as_bytes());
    assert_eq!(caller.recv_final().unwrap().status(), Some(200));
    assert_eq!(callee.wait().code, 0);
    assert_eq!(records(&d)[0]["disposition"], "answered");
}

/// Someone who knows a call's full dialog id but sends from another
/// address must prove to be the party: its BYE is challenged and, without
/// the caller's credentials, the call stays up; the caller's own BYE ends it.
#[test]
fn a_bye_from_another_address_is_challenged_and_the_call_stays_up() {
    let d = Daemon::start("");
    let callee = callee(&d, "1002", "uas_answer.xml", &[]);
    let call_id = "stolen-dialog";
    let (mut caller, to) = raw_call(&d, call_id);
    // The same BYE, from 127.0.0.2.
    let mut stranger = RawClient::udp_from(d.addr(), "127.0.0.2:0");
    stranger.send_raw(in_dialog(&stranger, "BYE", call_id, &to, 2, "").as_bytes());
    assert_eq!(stranger.recv_final().unwrap().status(), Some(407));
    // With another user's credentials: refused.
    let bye = stranger.challenged("BYE", "sip:1002@pbx.test", "1004", "demo1004", |c, auth| {
        in_dialog(c, "BYE", call_id, &to, if auth.is_empty() { 3 } else { 4 }, auth)
    });
    assert_eq!(bye.unwrap().status(), Some(403));
    assert!(status(&d).contains("calls: 1\n"), "{}", status(&d));
    // The caller hangs up from its own address.
    caller.send_raw(in_dialog(&caller, "BYE", call_id, &to, 5, "").as_bytes());
    assert_eq!(caller.recv_final().unwrap().status(), Some(200));
    assert_eq!(callee.wait().code, 0);
}
