//! Queues, agent states and ring groups with real peers: SIPp and baresip
//! agents, SIPp and baresip callers, over loopback; who answered what is
//! read back from the call records and `ctl`.

use crate::baresip_peer::{received_audio, rms, sox, start_baresip_via};
use crate::calls::{callee, records, tone_alaw};
use crate::harness::{free_port, Daemon, Sipp, SippRun};
use std::time::{Duration, Instant};

/// Users 1005 and 1006 besides the demo ones, and queue 3001 "Support" of
/// 1004–1006 with the shipped music, with `keys` added.
fn with_queue(keys: &str) -> String {
    let moh = concat!(env!("CARGO_MANIFEST_DIR"), "/sounds/moh.wav");
    format!(
        "[[accounts.users]]\nextension = \"1005\"\npassword = \"demo1005\"\n\
         [[accounts.users]]\nextension = \"1006\"\npassword = \"demo1006\"\n\
         [[accounts.queues]]\nnumber = \"3001\"\nname = \"Support\"\nmoh = \"{moh}\"\n{keys}\n"
    )
}

/// `count` calls from 1001 to `to`, one at a time, each held `hold_ms`.
fn calls_to(d: &Daemon, to: &str, count: u32, hold_ms: u32, scenario: &str) -> SippRun {
    let (mp, hold, m) = (free_port().to_string(), hold_ms.to_string(), count.to_string());
    Sipp::new(scenario, free_port())
        .target(&d.target())
        .args(&[
            "-s", to, "-au", "1001", "-ap", "demo1001", "-key", "caller", "1001", "-d", &hold, "-mp", &mp, "-m", &m,
            "-l", "1",
        ])
        .file("audio.al", &tone_alaw(1))
        .run()
}

fn agent_of(record: &serde_json::Value) -> String {
    record["queues"][0]["agent"].as_str().unwrap_or("-").to_string()
}

fn ctl_json(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let out = d.ctl(args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn agent_state(d: &Daemon, aor: &str) -> (String, Option<String>) {
    let agents = ctl_json(d, &["agents"]);
    let a = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["aor"] == aor)
        .unwrap_or_else(|| panic!("{aor} not in {agents}"));
    (
        a["state"].as_str().unwrap().to_string(),
        a["reason"].as_str().map(str::to_string),
    )
}

/// Nine callers one after the other into 3001 with three ready SIPp
/// agents: who answered each.
fn nine_calls(strategy: &str) -> Vec<String> {
    let d = Daemon::start_with_demo_tail(&with_queue(&format!(
        "members = [\"1004\", \"1005\", \"1006\"]\nstrategy = \"{strategy}\"\nacw_limit_enabled = true\nacw_limit_s = 0"
    )));
    let _agents: Vec<_> = ["1004", "1005", "1006"]
        .iter()
        .map(|a| callee(&d, a, "uas_answer.xml", &["-m", "20"]))
        .collect();
    let run = calls_to(&d, "3001", 9, 300, "uac_call.xml");
    assert_eq!(
        run.code,
        0,
        "callers failed: {}\n{}",
        run.errors,
        d.log.lock().unwrap().join("\n")
    );
    let r = records(&d);
    assert_eq!(r.len(), 9, "{r:?}");
    for rec in &r {
        assert_eq!(rec["queues"][0]["outcome"], "answered", "{rec}");
        assert_eq!(rec["disposition"], "answered");
    }
    r.iter().map(agent_of).collect()
}

fn count(took: &[String], ext: &str) -> usize {
    took.iter().filter(|t| *t == ext).count()
}

#[test]
fn longest_idle_spreads_nine_calls_three_each() {
    let took = nine_calls("longest_idle");
    for ext in ["1004", "1005", "1006"] {
        assert_eq!(count(&took, ext), 3, "{took:?}");
    }
}

#[test]
fn round_robin_takes_members_in_turn() {
    let took = nine_calls("round_robin");
    let expected: Vec<String> = ["1004", "1005", "1006"]
        .repeat(3)
        .into_iter()
        .map(String::from)
        .collect();
    // Records are listed oldest first.
    assert_eq!(took, expected);
}

#[test]
fn linear_always_offers_the_first_free_member() {
    let took = nine_calls("linear");
    assert_eq!(count(&took, "1004"), 9, "{took:?}");
}

#[test]
fn ring_all_rings_every_ready_member_and_the_first_answer_wins() {
    let d = Daemon::start_with_demo_tail(&with_queue(
        "members = [\"1004\", \"1005\", \"1006\"]\nstrategy = \"ring_all\"",
    ));
    let agents: Vec<_> = ["1004", "1005", "1006"]
        .iter()
        .map(|a| callee(&d, a, "uas_answer.xml", &["-m", "1"]))
        .collect();
    let run = calls_to(&d, "3001", 1, 300, "uac_call.xml");
    assert_eq!(run.code, 0, "{}", run.errors);
    // Every phone was offered the call and showed the queue and the
    // caller (those that had not answered yet got a CANCEL, which this
    // scenario does not expect: its exit code says nothing here).
    for agent in agents {
        let a = agent.wait();
        assert!(a.messages.contains("X-Queue: 3001"), "{}", a.messages);
        assert!(a.messages.contains("From: \"Support: Olivia Owner\""), "{}", a.messages);
    }
    let r = records(&d);
    let parties: Vec<&str> = r[0]["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["party"].as_str().unwrap())
        .collect();
    for ext in ["1004", "1005", "1006"] {
        assert!(parties.contains(&ext), "{ext} was rung: {parties:?}");
    }
    assert!(["1004", "1005", "1006"].contains(&agent_of(&r[0]).as_str()));
}

#[test]
fn a_caller_hears_the_music_then_talks_to_the_agent_who_goes_through_after_call_work() {
    let d = Daemon::start_with_demo_tail(&with_queue(
        "members = [\"1004\"]\nacw_limit_enabled = true\nacw_limit_s = 1",
    ));
    let wav = tempfile::tempdir().unwrap();
    let tone = wav.path().join("tone.wav");
    sox(&[
        "-n",
        "-r",
        "8000",
        "-c",
        "1",
        "-b",
        "16",
        tone.to_str().unwrap(),
        "synth",
        "3",
        "sine",
        "1000",
        "vol",
        "0.5",
    ]);
    let silence = crate::baresip_peer::silence_wav(wav.path(), 30);
    let server = format!("127.0.0.1:{}", d.port);
    // The agent answers by itself and plays a 1000 Hz tone for 3 s, then hangs up.
    let (agent, _) = start_baresip_via(&server, "", "1004", &tone, true, &[]);
    d.wait_for_log("registered aor=1004@pbx.test");
    let out = d.ctl(&["agent", "1004", "not_ready", "coffee"]);
    assert!(out.status.success());
    let dial = format!("/dial sip:3001@{server}");
    let (caller, _) = start_baresip_via(&server, "", "1003", &silence, false, &["-e", &dial]);
    d.wait_for_log("caller queued");
    // The caller waits with the agent not ready: music only.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ctl_json(&d, &["queues"])[0]["waiting"], 1);
    let out = d.ctl(&["agent", "1004", "ready"]);
    assert!(out.status.success());
    d.wait_for_log("queue call answered");
    d.wait_for_log("agent state aor=1004@pbx.test state=acw");
    let acw_started = Instant::now();
    d.wait_for_log("after-call work limit reached");
    let acw = acw_started.elapsed();
    assert!(
        acw > Duration::from_millis(500) && acw < Duration::from_millis(2000),
        "a 1 s limit ended after-call work after {acw:?}"
    );
    assert_eq!(agent_state(&d, "1004@pbx.test").0, "ready");
    let caller_dir = caller.stop();
    drop(agent);
    let recorded = received_audio(caller_dir.path());
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let file = recorded[0].to_str().unwrap();
    // 0.5–1.5 s: the queue's music, as loud as the file itself.
    let (music, original) = crate::baresip_peer::music_levels(file, "0.5", "1");
    assert!(
        music > original * 0.5 && music < original * 2.0,
        "the caller heard the music (RMS {music}, the file's {original})"
    );
    // The agent's tone came after: most of the signal near 1000 Hz.
    let length: f64 = String::from_utf8(
        std::process::Command::new("soxi")
            .args(["-D", file])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let tail = format!("{}", length - 2.0);
    let tone_rms = rms(&sox(&[file, "-n", "trim", &tail, "1.5", "sinc", "900-1100", "stat"]));
    assert!(tone_rms > 0.2, "the caller heard the agent's tone (RMS {tone_rms})");
    let r = records(&d);
    assert_eq!(agent_of(&r[0]), "1004");
    assert!(r[0]["queues"][0]["wait_s"].as_u64().unwrap() >= 2, "{}", r[0]);
    assert_eq!(r[0]["queues"][0]["acw_s"], 1, "the after-call work's length: {}", r[0]);
}

#[test]
fn an_agent_who_does_not_answer_is_skipped_and_made_not_ready() {
    let d = Daemon::start_with_demo_tail(&with_queue(
        "members = [\"1004\", \"1005\"]\nstrategy = \"linear\"\nagent_timeout_s = 1\nretry_s = 0\nmax_no_answer = 1",
    ));
    let absent = callee(&d, "1004", "uas_ring.xml", &["-m", "1"]);
    let _present = callee(&d, "1005", "uas_answer.xml", &["-m", "2"]);
    let run = calls_to(&d, "3001", 1, 2500, "uac_call.xml");
    assert_eq!(run.code, 0, "{}", run.errors);
    let absent = absent.wait();
    assert_eq!(absent.code, 0, "1004 rang and was cancelled: {}", absent.errors);
    let r = records(&d);
    assert_eq!(agent_of(&r[0]), "1005");
    assert!(r[0]["queues"][0]["wait_s"].as_u64().unwrap() >= 1, "{}", r[0]);
    assert_eq!(
        agent_state(&d, "1004@pbx.test"),
        ("not_ready".to_string(), Some("no answer".to_string()))
    );
}

#[test]
fn full_queues_refuse_empty_ones_refuse_or_overflow_after_max_wait() {
    let d = Daemon::start_with_demo_tail(&with_queue(
        "members = [\"1004\"]\nwhen_no_agents = \"refuse\"\n\
         [[accounts.queues]]\nnumber = \"3002\"\nmembers = [\"1004\"]\nmax_callers = 0\n\
         [[accounts.queues]]\nnumber = \"3003\"\nmembers = [\"1004\"]\nmax_wait_s = 1\noverflow = 603\n",
    ));
    let refused = calls_to(&d, "3001", 1, 100, "uac_fail.xml");
    assert!(refused.logs.contains("final 480"), "{}", refused.logs);
    let full = calls_to(&d, "3002", 1, 100, "uac_fail.xml");
    assert!(full.logs.contains("final 486"), "{}", full.logs);
    // Answered at once, then overflows after 1 s to a hang-up.
    let started = Instant::now();
    let waited = calls_to(&d, "3003", 1, 100, "uac_wait_bye.xml");
    assert_eq!(waited.code, 0, "{}", waited.errors);
    assert!(started.elapsed() >= Duration::from_secs(1));
    let r = records(&d);
    let outcomes: Vec<(&str, &str)> = r
        .iter()
        .map(|x| {
            (
                x["queues"][0]["queue"].as_str().unwrap(),
                x["queues"][0]["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [("3001", "refused"), ("3002", "refused"), ("3003", "overflow")]
    );
}

#[test]
fn a_caller_who_hangs_up_while_waiting_is_abandoned_and_the_agent_stops_ringing() {
    let d = Daemon::start_with_demo_tail(&with_queue("members = [\"1004\"]\nagent_timeout_s = 30"));
    let agent = callee(&d, "1004", "uas_ring.xml", &["-m", "1"]);
    let run = calls_to(&d, "3001", 1, 1000, "uac_call.xml");
    assert_eq!(run.code, 0, "{}", run.errors);
    let agent = agent.wait();
    assert_eq!(agent.code, 0, "the agent's phone got its CANCEL: {}", agent.errors);
    let r = records(&d);
    assert_eq!(r[0]["queues"][0]["outcome"], "abandoned", "{}", r[0]);
    let q = &ctl_json(&d, &["queues"])[0];
    assert_eq!(
        (q["abandoned"].as_u64(), q["waiting"].as_u64()),
        (Some(1), Some(0)),
        "{q}"
    );
}

#[test]
fn ring_groups_ring_in_turn_and_a_member_who_does_not_answer_is_passed() {
    let d = Daemon::start_with_demo_tail(&with_queue(
        "members = [\"1004\"]\n\
         [[accounts.groups]]\nnumber = \"2003\"\nmembers = [\"1004\", \"1005\"]\nstrategy = \"sequential\"\nmember_timeout_s = 1\n",
    ));
    let _first = callee(&d, "1004", "uas_ring.xml", &["-m", "1"]);
    let _second = callee(&d, "1005", "uas_answer.xml", &["-m", "1"]);
    let run = calls_to(&d, "2003", 1, 300, "uac_call.xml");
    assert_eq!(run.code, 0, "{}", run.errors);
    let r = records(&d);
    assert_eq!(r[0]["callee"], "1005", "{}", r[0]);
    let legs: Vec<(&str, u64)> = r[0]["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["party"].as_str().unwrap(), l["sip_code"].as_u64().unwrap()))
        .collect();
    assert!(
        legs.contains(&("1004", 487)),
        "1004 rang first and was cancelled: {legs:?}"
    );
    let first_start = |p: &str| {
        r[0]["legs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["party"] == p)
            .unwrap()["start_ms"]
            .as_u64()
            .unwrap()
    };
    assert!(
        first_start("1005") >= first_start("1004") + 900,
        "1005 rang after 1004's second"
    );
}

#[test]
fn a_random_group_gives_every_member_calls_and_skips_one_not_ready() {
    let d = Daemon::start_with_demo_tail(&with_queue(
        "members = [\"1004\"]\n\
         [[accounts.groups]]\nnumber = \"2004\"\nmembers = [\"1004\", \"1005\", \"1006\"]\nstrategy = \"random\"\n",
    ));
    let _members: Vec<_> = ["1004", "1005", "1006"]
        .iter()
        .map(|a| callee(&d, a, "uas_answer.xml", &["-m", "40"]))
        .collect();
    let run = calls_to(&d, "2004", 24, 50, "uac_call.xml");
    assert_eq!(run.code, 0, "{}", run.errors);
    let took: Vec<String> = records(&d)
        .iter()
        .map(|r| r["callee"].as_str().unwrap().to_string())
        .collect();
    for ext in ["1004", "1005", "1006"] {
        assert!(count(&took, ext) > 0, "{ext} got none of {took:?}");
    }
    // One member not ready is never rung.
    assert!(d.ctl(&["agent", "1006", "not_ready"]).status.success());
    let run = calls_to(&d, "2004", 6, 50, "uac_call.xml");
    assert_eq!(run.code, 0, "{}", run.errors);
    let later: Vec<String> = records(&d)
        .iter()
        .skip(24)
        .map(|r| r["callee"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(later.len(), 6);
    assert_eq!(count(&later, "1006"), 0, "{later:?}");
}

/// 1004 dials a feature code; the phone hears the confirmation and is
/// hung up.
fn feature_code(d: &Daemon, code: &str) {
    let mp = free_port().to_string();
    let run = Sipp::new("uac_wait_bye.xml", free_port())
        .target(&d.target())
        .args(&[
            "-s", code, "-au", "1004", "-ap", "demo1004", "-key", "caller", "1004", "-mp", &mp,
        ])
        .run();
    assert_eq!(run.code, 0, "{code}: {}", run.errors);
}

#[test]
fn feature_codes_change_the_agent_state_and_it_survives_a_kill() {
    let mut d = Daemon::start_with_demo_tail(&with_queue("members = [\"1004\"]"));
    let _phone = callee(&d, "1004", "uas_answer.xml", &["-m", "1"]);
    assert_eq!(agent_state(&d, "1004@pbx.test").0, "ready");
    feature_code(&d, "*51");
    assert_eq!(
        agent_state(&d, "1004@pbx.test"),
        ("not_ready".to_string(), Some("break".to_string()))
    );
    feature_code(&d, "*50");
    assert_eq!(agent_state(&d, "1004@pbx.test").0, "ready");
    feature_code(&d, "*51lunch");
    d.kill9();
    d.restart();
    assert_eq!(
        agent_state(&d, "1004@pbx.test"),
        ("not_ready".to_string(), Some("lunch".to_string()))
    );
}

#[test]
fn a_supervisor_watching_an_agent_sees_the_state_in_presence() {
    let d = Daemon::start_with_demo_tail(&with_queue("members = [\"1004\"]"));
    let _phone = callee(&d, "1004", "uas_answer.xml", &["-m", "1"]);
    let watcher = Sipp::new("subscribe_agent.xml", free_port())
        .target(&d.target())
        .args(&[
            "-s", "1004", "-au", "1003", "-ap", "demo1003", "-key", "watcher", "1003",
        ])
        .spawn();
    d.wait_for_log("subscription created");
    assert!(d.ctl(&["agent", "1004", "not_ready", "training"]).status.success());
    assert!(d.ctl(&["agent", "1004", "ready"]).status.success());
    let run = watcher.wait();
    assert_eq!(run.code, 0, "{}\n{}", run.errors, run.messages);
    let notes: Vec<&str> = run.logs.lines().filter_map(|l| l.strip_prefix("notify ")).collect();
    assert_eq!(
        notes,
        [
            "<note>Available</note>",
            "<note>Not ready</note>",
            "<note>Available</note>"
        ]
    );
}

#[test]
fn an_agent_talking_on_a_direct_call_is_offered_no_queue_or_group_call() {
    let d = Daemon::start_with_demo_tail(&with_queue(
        "members = [\"1004\", \"1005\"]\nstrategy = \"linear\"\nacw_limit_enabled = true\nacw_limit_s = 0\n\
         [[accounts.groups]]\nnumber = \"2003\"\nmembers = [\"1004\", \"1005\"]\n",
    ));
    let busy = callee(&d, "1004", "uas_answer.xml", &["-m", "1"]);
    let _free = callee(&d, "1005", "uas_answer.xml", &["-m", "2"]);
    // 1002 talks with 1004 directly for 4 s.
    let direct = crate::calls::caller_in_background(&d, "1002", "1004", 4000);
    d.wait_for_log("call answered");
    assert_eq!(agent_state(&d, "1004@pbx.test").0, "in_call");
    let queued = calls_to(&d, "3001", 1, 300, "uac_call.xml");
    assert_eq!(queued.code, 0, "{}", queued.errors);
    let grouped = calls_to(&d, "2003", 1, 300, "uac_call.xml");
    assert_eq!(grouped.code, 0, "{}", grouped.errors);
    assert_eq!(direct.wait().code, 0);
    assert_eq!(busy.wait().code, 0, "1004 got only its direct call");
    let r = records(&d);
    let queue_call = r
        .iter()
        .find(|x| x["callee"] == "1005" && !x["queues"].is_null())
        .expect("queue call");
    assert_eq!(agent_of(queue_call), "1005");
    assert!(
        r.iter().any(|x| x["callee"] == "1005" && x["queues"].is_null()),
        "the group call went to 1005: {r:#?}"
    );
}

#[test]
fn without_the_limit_after_call_work_lasts_until_the_agent_ends_it() {
    let d = Daemon::start_with_demo_tail(&with_queue("members = [\"1004\"]"));
    let _phone = callee(&d, "1004", "uas_answer.xml", &["-m", "1"]);
    let run = calls_to(&d, "3001", 1, 300, "uac_call.xml");
    assert_eq!(run.code, 0, "{}", run.errors);
    d.wait_for_log("agent state aor=1004@pbx.test state=acw");
    // A second caller waits: 1004 is in after-call work.
    let waiting = crate::calls::caller_in_background(&d, "1001", "3001", 1500);
    assert_eq!(waiting.wait().code, 0);
    assert_eq!(agent_state(&d, "1004@pbx.test").0, "acw", "still in after-call work");
    feature_code(&d, "*52");
    assert_eq!(agent_state(&d, "1004@pbx.test").0, "ready");
    let r = records(&d);
    assert_eq!(
        r.iter().filter(|x| x["queues"][0]["outcome"] == "abandoned").count(),
        1,
        "{r:#?}"
    );
}
