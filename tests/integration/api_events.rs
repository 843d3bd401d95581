//! The event stream during a real SIPp call: the callee's leg rings (with
//! the caller's contact card), is answered, ends, and the conversation
//! ends, in that order; each event reaches the client within 100 ms of the
//! SIP message that caused it, as the callee's SIPp trace dates it.

use crate::api::Api;
use crate::calls::{callee, caller};
use reqwest::Method;
use serde_json::Value;
use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Unix ms of a SIPp trace time `YYYY-MM-DD HH:MM:SS.micros` (UTC).
fn trace_ms(stamp: &str) -> i64 {
    let (date, time) = stamp.trim().split_once(' ').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, micros) = time.split_once('.').unwrap();
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from the civil date (proleptic Gregorian).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + micros.parse::<i64>().unwrap() / 1000
}

/// When the SIPp trace `log` shows a message whose first line starts
/// with `start` (`INVITE`, `SIP/2.0 200`, `BYE`…) first.
fn traced(log: &str, start: &str) -> i64 {
    for block in log.split("----------------------------------------------- ").skip(1) {
        let (stamp, rest) = block.split_once('\n').unwrap();
        let first = rest
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.contains("message"))
            .unwrap_or("");
        if first.starts_with(start) {
            return trace_ms(stamp);
        }
    }
    panic!("no {start} in the trace:\n{log}");
}

#[test]
fn a_calls_events_stream_in_order_within_100_ms_of_its_sip_messages() {
    let api = Api::start();
    let owner = api.token("1001");
    let card = r#"{"name": "Known Caller", "phones": ["1002"], "tags": ["vip"]}"#;
    assert_eq!(api.send(Method::POST, "/api/v1/contacts", &owner, card).0, 201);
    let stream = api.events(&owner, "");
    // Each event with the time it reached this client.
    let (tx, rx) = mpsc::channel::<(i64, Value)>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
            if let Some(data) = line.strip_prefix("data:") {
                if tx.send((now_ms(), serde_json::from_str(data.trim()).unwrap())).is_err() {
                    return;
                }
            }
        }
    });
    let phone = callee(&api.d, "1004", "uas_answer.xml", &["-m", "1"]);
    assert_eq!(caller(&api.d, "1002", "1004", 300, "uac_call.xml").code, 0);
    let trace = phone.wait().messages;
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|(_, e): &(i64, Value)| e["event"] == "conversation_ended")
    {
        let e = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the stream goes on to the call's end");
        seen.push(e);
    }
    let leg: Vec<&(i64, Value)> = seen
        .iter()
        .filter(|(_, e)| e["event"] == "leg_state" && e["party"] == "1004")
        .collect();
    let phases: Vec<&str> = leg.iter().map(|(_, e)| e["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["trying", "early", "confirmed", "terminated"], "{seen:#?}");
    assert_eq!(
        leg[0].1["caller"]["contact"]["name"], "Known Caller",
        "ringing carries the card"
    );
    assert_eq!(leg[0].1["caller"]["number"], "1002");
    let ended = seen.last().unwrap();
    assert!(ended.0 >= leg[3].0, "the conversation ends after its legs");
    for ((arrived, e), sip) in leg.iter().zip(["INVITE", "SIP/2.0 180", "SIP/2.0 200", "BYE"]) {
        let at = traced(&trace, sip);
        assert!(
            (arrived - at).abs() < 100,
            "{} reached the client {} ms from the {sip}",
            e["phase"],
            arrived - at
        );
    }
}
