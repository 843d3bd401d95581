//! Transfers with real peers: a SIPp transferor sends a blind REFER; a
//! raw-socket transferor with two calls sends REFER with Replaces; SIPp
//! transferees and targets. Who ended up talking to whom is read from the
//! peers' own scenarios (who got which request) and the call records.

use crate::baresip_peer::{baresip_command, press_keys, start_baresip_with_keys};
use crate::calls::{callee, caller, records};
use crate::harness::{free_port, Daemon};
use crate::raw_client::RawClient;
use std::time::{Duration, Instant};
use switchboard::sip::{HeaderName, SipMessage};

#[test]
fn a_blind_transfer_moves_the_caller_to_the_target_and_releases_the_transferor() {
    let d = Daemon::start("");
    let transferor = callee(&d, "1002", "uas_refer.xml", &["-key", "target", "1004"]);
    let target = callee(&d, "1004", "uas_answer.xml", &[]);
    // The caller holds 4 s, transferred after 0.5 s, then hangs up.
    let uac = caller(&d, "1001", "1002", 4000, "uac_call.xml");
    assert_eq!(uac.code, 0, "{}", uac.errors);
    let t = transferor.wait();
    assert_eq!(t.code, 0, "transferor: {}\n{}", t.errors, t.messages);
    assert!(
        t.logs.contains("notify SIP/2.0 100 Trying") && t.logs.contains("notify SIP/2.0 200 OK"),
        "{}",
        t.logs
    );
    let target = target.wait();
    assert_eq!(target.code, 0, "target: {}", target.errors);
    assert!(
        target.messages.contains("Referred-By: <sip:transferor@127.0.0.1>"),
        "{}",
        target.messages
    );
    let r = records(&d);
    assert_eq!(r.len(), 2, "{r:#?}");
    assert_eq!(
        (r[0]["callee"].as_str(), r[0]["transferred_to"].as_str()),
        (Some("1002"), Some("1004"))
    );
    assert_eq!(
        (r[1]["caller"].as_str(), r[1]["callee"].as_str()),
        (Some("1001"), Some("1004"))
    );
    assert_eq!(r[1]["transfer"]["by"], "1002");
    assert_eq!(r[1]["transfer"]["kind"], "blind");
    assert_eq!(r[1]["transfer"]["outcome"], "connected");
    assert_eq!(r[1]["hangup_side"], "caller");
}

#[test]
fn a_failed_blind_transfer_ends_with_an_announcement_and_does_not_call_back() {
    let d = Daemon::start("");
    // 1003 has no device: the transfer fails.
    let transferor = callee(&d, "1002", "uas_refer.xml", &["-key", "target", "1003"]);
    let started = Instant::now();
    let uac = caller(&d, "1001", "1002", 0, "uac_wait_bye.xml");
    assert_eq!(uac.code, 0, "the transferee was hung up: {}", uac.errors);
    // After the announcement (about 2 s), not at once.
    assert!(started.elapsed() > Duration::from_millis(1500));
    assert_eq!(transferor.wait().code, 0);
    let r = records(&d);
    assert_eq!(r.len(), 2, "{r:#?}");
    assert_eq!(r[1]["transfer"]["outcome"], "failed", "{}", r[1]);
    assert!(
        r.iter().all(|x| x["legs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["party"] == "1002")
            .count()
            <= 1),
        "the transferor was not called back: {r:#?}"
    );
}

/// A raw UDP transferor (1001) with calls of its own.
struct Transferor {
    c: RawClient,
}

/// One of the transferor's dialogs with the PBX.
struct Dialog {
    call_id: String,
    our_tag: String,
    their_tag: String,
    target: String,
    cseq: u32,
}

impl Transferor {
    fn call(&mut self, d: &Daemon, to: &str, n: u32) -> Dialog {
        self.call_with(d, to, n, "")
    }

    /// A call with `extra` header lines in its INVITE.
    fn call_with(&mut self, d: &Daemon, to: &str, n: u32, extra: &str) -> Dialog {
        let ruri = format!("sip:{to}@127.0.0.1:{}", d.port);
        let call_id = format!("xfer-{n}-{}", free_port());
        let our_tag = format!("t{n}");
        let local = self.c.local;
        let sdp = format!(
            "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n",
            free_port()
        );
        let resp = self
            .c
            .challenged("INVITE", &ruri, "1001", "demo1001", |_, auth| {
                format!(
                    "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id}{};rport\r\nMax-Forwards: 70\r\n\
                     From: <sip:1001@pbx.test>;tag={our_tag}\r\nTo: <sip:{to}@pbx.test>\r\nCall-ID: {call_id}\r\n\
                     CSeq: {} INVITE\r\nContact: <sip:1001@{local}>\r\n{extra}{auth}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                    auth.len(),
                    if auth.is_empty() { 1 } else { 2 },
                    sdp.len()
                )
            })
            .expect("an answer");
        assert_eq!(resp.status(), Some(200), "{resp:?}");
        let their_tag = switchboard::sip::dialog::tag_in(resp.header(&HeaderName::To).unwrap())
            .unwrap()
            .to_string();
        let target = switchboard::sip::dialog::contact_uri(&resp).unwrap();
        let dlg = Dialog {
            call_id,
            our_tag,
            their_tag,
            target,
            cseq: 2,
        };
        self.send(&dlg, "ACK", 2, "");
        dlg
    }

    fn send(&mut self, dlg: &Dialog, method: &str, cseq: u32, extra: &str) {
        let local = self.c.local;
        let msg = format!(
            "{method} {} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{}{method}{cseq};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:1001@pbx.test>;tag={}\r\nTo: <sip:x@pbx.test>;tag={}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:1001@{local}>\r\n{extra}Content-Length: 0\r\n\r\n",
            dlg.target, dlg.call_id, dlg.our_tag, dlg.their_tag, dlg.call_id
        );
        self.c.send_raw(msg.as_bytes());
    }

    /// Answers requests 200 and collects everything for `within`.
    fn collect(&mut self, within: Duration) -> Vec<SipMessage> {
        let mut got = Vec::new();
        let until = Instant::now() + within;
        self.c.set_timeout(Duration::from_millis(200));
        while Instant::now() < until {
            let Some(m) = self.c.recv() else { continue };
            if m.is_request() && m.method() != Some(&switchboard::sip::Method::Ack) {
                let mut ok = String::from("SIP/2.0 200 OK\r\n");
                for name in [
                    HeaderName::Via,
                    HeaderName::From,
                    HeaderName::To,
                    HeaderName::CallId,
                    HeaderName::CSeq,
                ] {
                    for v in m.header_values(&name) {
                        ok.push_str(&format!("{}: {v}\r\n", name.as_str()));
                    }
                }
                ok.push_str("Content-Length: 0\r\n\r\n");
                self.c.send_raw(ok.as_bytes());
            }
            got.push(m);
        }
        got
    }
}

fn summary(got: &[SipMessage]) -> Vec<String> {
    got.iter()
        .map(|m| match m.status() {
            Some(s) => format!("{s} {}", m.call_id().unwrap_or("")),
            None => format!(
                "{} {} {}",
                m.method().map(|x| x.as_str().to_string()).unwrap_or_default(),
                m.call_id().unwrap_or(""),
                String::from_utf8_lossy(&m.body).trim()
            ),
        })
        .collect()
}

#[test]
fn an_attended_transfer_joins_the_transferee_and_the_target_and_ends_both_calls() {
    let d = Daemon::start("");
    let transferee = callee(&d, "1002", "uas_answer.xml", &[]);
    let target = callee(&d, "1004", "uas_hangup.xml", &["-d", "1500"]);
    let mut t = Transferor {
        c: RawClient::udp(d.addr()),
    };
    let first = t.call(&d, "1002", 1);
    let second = t.call(&d, "1004", 2);
    // REFER on the first call, Replaces naming the second (escaped).
    let replaces = format!(
        "{}%3Bto-tag%3D{}%3Bfrom-tag%3D{}",
        second.call_id, second.their_tag, second.our_tag
    );
    t.send(
        &first,
        "REFER",
        first.cseq + 1,
        &format!("Refer-To: <sip:1004@127.0.0.1?Replaces={replaces}>\r\n"),
    );
    let got = summary(&t.collect(Duration::from_secs(2)));
    let has = |s: &str| got.iter().any(|g| g.starts_with(s));
    assert!(has(&format!("202 {}", first.call_id)), "{got:#?}");
    assert!(has(&format!("NOTIFY {} SIP/2.0 100 Trying", first.call_id)), "{got:#?}");
    assert!(has(&format!("NOTIFY {} SIP/2.0 200 OK", first.call_id)), "{got:#?}");
    assert!(
        has(&format!("BYE {}", first.call_id)) && has(&format!("BYE {}", second.call_id)),
        "{got:#?}"
    );
    // The target hangs up 1.5 s after answering: its BYE reaches the
    // transferee, the party it was joined to.
    assert_eq!(target.wait().code, 0);
    let transferee = transferee.wait();
    assert_eq!(
        transferee.code, 0,
        "the transferee got the target's BYE: {}",
        transferee.errors
    );
    let r = records(&d);
    let to: Vec<(&str, &str)> = r
        .iter()
        .map(|x| {
            (
                x["callee"].as_str().unwrap(),
                x["transferred_to"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert!(
        to.contains(&("1002", "1004")) && to.contains(&("1004", "1002")),
        "{to:?}"
    );
}

#[test]
fn an_attended_transfer_to_a_queue_is_refused_and_both_calls_stay() {
    let moh = concat!(env!("CARGO_MANIFEST_DIR"), "/sounds/moh.wav");
    let d = Daemon::start_with_demo_tail(&format!(
        "[[accounts.queues]]\nnumber = \"3001\"\nmembers = [\"1004\"]\nmoh = \"{moh}\"\n"
    ));
    let _transferee = callee(&d, "1002", "uas_answer.xml", &[]);
    let mut t = Transferor {
        c: RawClient::udp(d.addr()),
    };
    let first = t.call(&d, "1002", 1);
    // The consult call waits in the queue (nobody is logged in).
    let second = t.call(&d, "3001", 2);
    let replaces = format!(
        "{}%3Bto-tag%3D{}%3Bfrom-tag%3D{}",
        second.call_id, second.their_tag, second.our_tag
    );
    t.send(
        &first,
        "REFER",
        first.cseq + 1,
        &format!("Refer-To: <sip:3001@127.0.0.1?Replaces={replaces}>\r\n"),
    );
    let got = t.collect(Duration::from_millis(800));
    let refused = got
        .iter()
        .find(|m| m.status().is_some())
        .unwrap_or_else(|| panic!("{:#?}", summary(&got)));
    assert_eq!(
        (refused.status(), refused.reason()),
        (Some(403), "Queues accept blind transfers only")
    );
    assert!(!got.iter().any(|m| m.method() == Some(&switchboard::sip::Method::Bye)));
    let calls = String::from_utf8(d.ctl(&["calls"]).stdout).unwrap();
    assert!(
        calls.contains(&first.call_id) && calls.contains(&second.call_id),
        "{calls}"
    );
}

#[test]
fn a_blind_transfer_to_a_queue_follows_the_queue() {
    let moh = concat!(env!("CARGO_MANIFEST_DIR"), "/sounds/moh.wav");
    let d = Daemon::start_with_demo_tail(&format!(
        "[[accounts.queues]]\nnumber = \"3001\"\nname = \"Support\"\nmembers = [\"1004\"]\nmoh = \"{moh}\"\n\
         acw_limit_enabled = true\nacw_limit_s = 0\n"
    ));
    let transferor = callee(&d, "1002", "uas_refer.xml", &["-key", "target", "3001"]);
    let agent = callee(&d, "1004", "uas_answer.xml", &[]);
    let uac = caller(&d, "1001", "1002", 4000, "uac_call.xml");
    assert_eq!(uac.code, 0, "{}", uac.errors);
    assert_eq!(transferor.wait().code, 0);
    let agent = agent.wait();
    assert_eq!(agent.code, 0, "{}", agent.errors);
    assert!(agent.messages.contains("X-Queue: 3001"), "{}", agent.messages);
    let r = records(&d);
    assert_eq!(r[1]["transfer"]["outcome"], "connected", "{}", r[1]);
    assert_eq!(r[1]["queues"][0]["agent"], "1004", "{}", r[1]);
}

#[test]
fn a_blind_transfer_to_a_group_rings_its_members() {
    let d = Daemon::start("");
    // Group 2001 (Sales): 1002 and 1004; 1002 is the transferor, on a call.
    let transferor = callee(&d, "1003", "uas_refer.xml", &["-key", "target", "2001"]);
    let member = callee(&d, "1004", "uas_answer.xml", &[]);
    let uac = caller(&d, "1001", "1003", 4000, "uac_call.xml");
    assert_eq!(uac.code, 0, "{}", uac.errors);
    assert_eq!(transferor.wait().code, 0);
    assert_eq!(member.wait().code, 0);
    let r = records(&d);
    assert_eq!(
        (r[1]["callee"].as_str(), r[1]["transfer"]["outcome"].as_str()),
        (Some("1004"), Some("connected"))
    );
}

#[test]
fn an_invite_with_replaces_takes_over_a_call() {
    let d = Daemon::start("");
    let other = callee(&d, "1002", "uas_answer.xml", &[]);
    // 1001's desk phone calls 1002...
    let mut desk = Transferor {
        c: RawClient::udp(d.addr()),
    };
    let first = desk.call(&d, "1002", 1);
    // ...and 1001's softphone takes the call over (RFC 3891).
    let mut soft = Transferor {
        c: RawClient::udp(d.addr()),
    };
    let replaces = format!(
        "Replaces: {};to-tag={};from-tag={}\r\n",
        first.call_id, first.their_tag, first.our_tag
    );
    let taken = soft.call_with(&d, "1002", 3, &replaces);
    let got = summary(&desk.collect(Duration::from_millis(800)));
    assert!(
        got.iter().any(|g| g.starts_with(&format!("BYE {}", first.call_id))),
        "{got:#?}"
    );
    // The softphone now talks with 1002: its BYE reaches 1002.
    soft.send(&taken, "BYE", taken.cseq + 1, "");
    let other = other.wait();
    assert_eq!(
        other.code, 0,
        "1002 got the BYE of the phone that took the call: {}",
        other.errors
    );
    assert_eq!(
        other.messages.matches("INVITE sip:").count(),
        1,
        "no new INVITE to 1002"
    );
}

#[test]
fn an_agent_transfers_blind_by_dialling_hash_hash_number_hash() {
    let d = Daemon::start("");
    let wav = tempfile::tempdir().unwrap();
    let silence = crate::baresip_peer::silence_wav(wav.path(), 20);
    let (agent, ctrl) = start_baresip_with_keys(&d, "1003", &silence, true);
    let target = callee(&d, "1004", "uas_answer.xml", &[]);
    let customer = crate::calls::caller_in_background(&d, "1001", "1003", 5000);
    d.wait_for_log("call answered");
    // RFC 4733 digits from the agent's phone, a key at a time.
    press_keys(ctrl, "##1004#");
    d.wait_for_log("blind transfer");
    let customer = customer.wait();
    assert_eq!(customer.code, 0, "{}", customer.errors);
    assert_eq!(target.wait().code, 0, "the customer's BYE reached 1004");
    drop(agent);
    let r = records(&d);
    assert_eq!(r.len(), 2, "{r:#?}");
    assert_eq!(
        (r[1]["callee"].as_str(), r[1]["transfer"]["by"].as_str()),
        (Some("1004"), Some("1003"))
    );
}

#[test]
fn baresip_transfers_blind_and_the_target_hears_the_transferee() {
    let d = Daemon::start("");
    let wav = tempfile::tempdir().unwrap();
    let silence = crate::baresip_peer::silence_wav(wav.path(), 20);
    let (agent, ctrl) = start_baresip_with_keys(&d, "1003", &silence, true);
    let server = format!("127.0.0.1:{}", d.port);
    let (target, _) = crate::baresip_peer::start_baresip_via(&server, "", "1004", &silence, true, &[]);
    d.wait_for_log("registered aor=1004@pbx.test");
    let customer = crate::calls::caller_in_background(&d, "1001", "1003", 5000);
    d.wait_for_log("call answered");
    let answer = baresip_command(ctrl, "transfer", &format!("sip:1004@{server}"));
    assert!(answer.contains("\"ok\":true") || answer.contains("CALL_"), "{answer}");
    d.wait_for_log("blind transfer");
    let customer = customer.wait();
    assert_eq!(customer.code, 0, "{}", customer.errors);
    d.wait_for_log("call ended");
    drop(agent);
    let dir = target.stop();
    let heard = crate::baresip_peer::received_audio(dir.path());
    assert_eq!(heard.len(), 1, "{heard:?}");
    let tone = crate::baresip_peer::rms(&crate::baresip_peer::sox(&[
        heard[0].to_str().unwrap(),
        "-n",
        "trim",
        "0.5",
        "2",
        "sinc",
        "420-460",
        "stat",
    ]));
    assert!(tone > 0.05, "the target heard the transferee's 440 Hz ({tone})");
    let r = records(&d);
    assert_eq!(
        (
            r[1]["callee"].as_str(),
            r[1]["transfer"]["by"].as_str(),
            r[1]["transfer"]["outcome"].as_str()
        ),
        (Some("1004"), Some("1003"), Some("connected"))
    );
}

#[test]
fn an_agent_transfers_attended_by_dialling_star_2() {
    let d = Daemon::start("");
    let wav = tempfile::tempdir().unwrap();
    let silence = crate::baresip_peer::silence_wav(wav.path(), 20);
    let (agent, ctrl) = start_baresip_with_keys(&d, "1003", &silence, true);
    let target = callee(&d, "1002", "uas_answer.xml", &[]);
    let customer = crate::calls::caller_in_background(&d, "1001", "1003", 6000);
    d.wait_for_log("call answered");
    // Consult 1002 (the customer waits with music), then complete.
    press_keys(ctrl, "*21002#");
    d.wait_for_log("consult for an attended transfer");
    d.wait_for_log("consult answered");
    press_keys(ctrl, "*2");
    d.wait_for_log("attended transfer completed");
    let customer = customer.wait();
    assert_eq!(customer.code, 0, "{}", customer.errors);
    assert_eq!(target.wait().code, 0, "the customer's BYE reached 1002");
    drop(agent);
    let r = records(&d);
    assert_eq!(r.len(), 1, "{r:#?}");
    assert_eq!(r[0]["transferred_to"], "1002", "{}", r[0]);
}
