//! Monitoring with real peers and real audio: a SIPp customer plays
//! 440 Hz, a baresip agent 1000 Hz, a baresip supervisor 2000 Hz; each
//! baresip records what it receives, and the bands of each recording tell
//! who heard whom.

use crate::baresip_peer::{received_audio, rms, sox, start_baresip_via};
use crate::harness::{free_port, Daemon, Sipp};
use std::path::Path;
use std::time::Instant;

pub fn tone(dir: &Path, hz: u32) -> std::path::PathBuf {
    let path = dir.join(format!("tone{hz}.wav"));
    let (p, f) = (path.to_str().unwrap().to_string(), hz.to_string());
    sox(&[
        "-n", "-r", "8000", "-c", "1", "-b", "16", &p, "synth", "20", "sine", &f, "vol", "0.3",
    ]);
    path
}

/// RMS of a recording's `band` (Hz) from `start` s for `len` s.
pub fn band(file: &Path, start: f64, len: f64, band: (u32, u32)) -> f64 {
    let (s, l, b) = (
        format!("{start:.2}"),
        format!("{len:.2}"),
        format!("{}-{}", band.0, band.1),
    );
    rms(&sox(&[
        file.to_str().unwrap(),
        "-n",
        "trim",
        &s,
        &l,
        "sinc",
        &b,
        "stat",
    ]))
}

const CUSTOMER: (u32, u32) = (420, 460);
const AGENT: (u32, u32) = (950, 1050);
const SUPERVISOR: (u32, u32) = (1950, 2050);

/// A customer call to agent 1004 monitored by supervisor 1003 with `code`:
/// (what the supervisor heard of the customer, of the agent; what the
/// agent heard of the supervisor, of the customer), each the RMS of its
/// band while the supervisor was on.
fn monitored(code: &str) -> (f64, f64, f64, f64) {
    let d = Daemon::start("");
    let wav = tempfile::tempdir().unwrap();
    let server = format!("127.0.0.1:{}", d.port);
    let (agent, _) = start_baresip_via(&server, "", "1004", &tone(wav.path(), 1000), true, &[]);
    d.wait_for_log("registered aor=1004@pbx.test");
    let customer = crate::calls::caller_in_background(&d, "1001", "1004", 7000);
    d.wait_for_log("call answered");
    let answered = Instant::now();
    // The supervisor comes in a moment later, as in life (and baresip's
    // recorder, started by the agent's first audio, misses a stream that
    // changes at the very start).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let dial = format!("/dial sip:{code}1004@{server}");
    let (supervisor, _) = start_baresip_via(&server, "", "1003", &tone(wav.path(), 2000), false, &["-e", &dial]);
    d.wait_for_log("monitoring");
    let joined = answered.elapsed().as_secs_f64();
    assert_eq!(customer.wait().code, 0);
    d.wait_for_log("call ended");
    let (sup_dir, agent_dir) = (supervisor.stop(), agent.stop());
    let sup = received_audio(sup_dir.path());
    let ag = received_audio(agent_dir.path());
    assert_eq!((sup.len(), ag.len()), (1, 1), "{sup:?} {ag:?}");
    // The supervisor's recording starts when it joined; the agent's at the answer.
    let r = (
        band(&sup[0], 0.5, 2.0, CUSTOMER),
        band(&sup[0], 0.5, 2.0, AGENT),
        band(&ag[0], joined + 0.5, 2.0, SUPERVISOR),
        band(&ag[0], joined + 0.5, 2.0, CUSTOMER),
    );
    let records = crate::calls::records(&d);
    let mode = match code {
        "*81" => "listen",
        "*82" => "whisper",
        _ => "barge",
    };
    assert!(
        records
            .iter()
            .any(|x| x["caller"] == "1003" && x["monitor"]["agent"] == "1004" && x["monitor"]["mode"] == mode),
        "{records:#?}"
    );
    r
}

const HEARD: f64 = 0.05;
const NOT_HEARD: f64 = 0.01;

#[test]
fn a_listening_supervisor_hears_both_and_nobody_hears_them() {
    let (customer, agent, sup_at_agent, customer_at_agent) = monitored("*81");
    assert!(
        customer > HEARD && agent > HEARD,
        "supervisor heard customer {customer}, agent {agent}"
    );
    assert!(
        sup_at_agent < NOT_HEARD,
        "the agent did not hear the supervisor ({sup_at_agent})"
    );
    assert!(
        customer_at_agent > HEARD,
        "the agent still hears the customer ({customer_at_agent})"
    );
}

#[test]
fn a_whispering_supervisor_is_heard_by_the_agent() {
    let (customer, agent, sup_at_agent, customer_at_agent) = monitored("*82");
    assert!(
        customer > HEARD && agent > HEARD,
        "supervisor heard customer {customer}, agent {agent}"
    );
    assert!(sup_at_agent > HEARD, "the agent heard the whisper ({sup_at_agent})");
    assert!(customer_at_agent > HEARD, "and the customer ({customer_at_agent})");
}

#[test]
fn a_barging_supervisor_talks_with_both() {
    let (customer, agent, sup_at_agent, customer_at_agent) = monitored("*83");
    assert!(
        customer > HEARD && agent > HEARD,
        "supervisor heard customer {customer}, agent {agent}"
    );
    assert!(
        sup_at_agent > HEARD && customer_at_agent > HEARD,
        "{sup_at_agent} {customer_at_agent}"
    );
}

#[test]
fn agents_may_not_monitor() {
    let d = Daemon::start("");
    let mp = free_port().to_string();
    let run = Sipp::new("uac_fail.xml", free_port())
        .target(&d.target())
        .args(&[
            "-s", "*811002", "-au", "1004", "-ap", "demo1004", "-key", "caller", "1004", "-mp", &mp,
        ])
        .run();
    assert!(run.logs.contains("final 403"), "{}", run.logs);
}

#[test]
fn a_supervisor_of_another_group_is_refused() {
    // 1003 supervises group 2001 (1002, 1004); 1001 is in none of its groups.
    let d = Daemon::start("");
    let mp = free_port().to_string();
    let run = Sipp::new("uac_fail.xml", free_port())
        .target(&d.target())
        .args(&[
            "-s", "*811001", "-au", "1003", "-ap", "demo1003", "-key", "caller", "1003", "-mp", &mp,
        ])
        .run();
    assert!(run.logs.contains("final 403"), "{}", run.logs);
    d.saw_log("monitoring refused");
}

#[test]
fn a_listener_follows_the_call_when_the_agent_transfers_it() {
    let d = Daemon::start("");
    let wav = tempfile::tempdir().unwrap();
    let server = format!("127.0.0.1:{}", d.port);
    // Agent 1004 (group 2001, supervised by 1003) plays 1000 Hz; 1002, the
    // transfer's target and also of group 2001, plays 1500 Hz.
    let (agent, ctrl) = crate::baresip_peer::start_baresip_with_keys(&d, "1004", &tone(wav.path(), 1000), true);
    let (target, _) = start_baresip_via(&server, "", "1002", &tone(wav.path(), 1500), true, &[]);
    d.wait_for_log("registered aor=1002@pbx.test");
    let customer = crate::calls::caller_in_background(&d, "1001", "1004", 9000);
    d.wait_for_log("call answered");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let dial = format!("/dial sip:*811004@{server}");
    let (supervisor, _) = start_baresip_via(&server, "", "1003", &tone(wav.path(), 2000), false, &["-e", &dial]);
    d.wait_for_log("monitoring");
    let joined = Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    crate::baresip_peer::baresip_command(ctrl, "transfer", &format!("sip:1002@{server}"));
    d.wait_for_log("blind transfer");
    d.wait_for_log("call answered");
    let taken = joined.elapsed().as_secs_f64();
    assert_eq!(customer.wait().code, 0);
    let sup = supervisor.stop();
    drop((agent, target));
    let rec = received_audio(sup.path());
    assert_eq!(rec.len(), 1);
    let after = |b| band(&rec[0], taken + 0.5, 2.0, b);
    let (customer_band, target_band) = (after(CUSTOMER), after((1450, 1550)));
    assert!(
        customer_band > HEARD && target_band > HEARD,
        "after the transfer the supervisor hears the customer ({customer_band}) and the new agent ({target_band})"
    );
}

#[test]
fn a_listening_supervisor_barges_in_by_pressing_3() {
    let d = Daemon::start("");
    let wav = tempfile::tempdir().unwrap();
    let server = format!("127.0.0.1:{}", d.port);
    let (agent, _) = start_baresip_via(&server, "", "1004", &tone(wav.path(), 1000), true, &[]);
    d.wait_for_log("registered aor=1004@pbx.test");
    let customer = crate::calls::caller_in_background(&d, "1001", "1004", 10000);
    d.wait_for_log("call answered");
    let answered = Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let ctrl = free_port();
    let dial = format!("/dial sip:*811004@{server}");
    let (supervisor, _) = start_baresip_via(
        &server,
        &format!("module ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl}\n"),
        "1003",
        &tone(wav.path(), 2000),
        false,
        &["-e", &dial],
    );
    d.wait_for_log("monitoring");
    let joined = answered.elapsed().as_secs_f64();
    // A recording loses the time of late or lost packets, so its clock runs
    // behind the wall clock under load: the listen-only window ends well
    // before the switch (a CI run saw 6 ms of barge inside a 0.2 s margin).
    std::thread::sleep(std::time::Duration::from_millis(2500));
    crate::baresip_peer::baresip_command(ctrl, "sndcode", "3");
    d.wait_for_log("monitoring mode switched");
    let switched = answered.elapsed().as_secs_f64();
    assert_eq!(customer.wait().code, 0);
    drop(supervisor);
    let dir = agent.stop();
    let rec = received_audio(dir.path());
    assert_eq!(rec.len(), 1);
    let before = band(&rec[0], joined + 0.3, 0.8, SUPERVISOR);
    let after = band(&rec[0], switched + 0.5, 2.0, SUPERVISOR);
    assert!(
        before < NOT_HEARD && after > HEARD,
        "the agent hears the supervisor only after 3: {before} then {after}"
    );
}

#[test]
fn ctl_call_has_a_supervisor_listen_to_an_agents_call() {
    // `ctl call 1003 *811004`: the supervisor's phone rings, and once it
    // answers it listens to agent 1004's call, until that call ends.
    let d = Daemon::start("");
    let agent = crate::calls::callee(&d, "1004", "uas_answer.xml", &["-m", "1"]);
    let supervisor = crate::calls::callee(&d, "1003", "uas_answer.xml", &["-m", "1"]);
    let customer = crate::calls::caller_in_background(&d, "1001", "1004", 3000);
    d.wait_for_log("call answered");
    let out = d.ctl(&["call", "1003", "*811004"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let started: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(started["conversation"].as_u64().is_some(), "{started}");
    d.wait_for_log("monitoring");
    assert_eq!(customer.wait().code, 0);
    assert_eq!(agent.wait().code, 0);
    assert_eq!(
        supervisor.wait().code,
        0,
        "the supervisor's leg ended with the call it listened to"
    );
    d.wait_for_log("call ended");
    let records = crate::calls::records(&d);
    assert!(
        records
            .iter()
            .any(|x| x["caller"] == "1003" && x["monitor"]["agent"] == "1004" && x["monitor"]["mode"] == "listen"),
        "{records:#?}"
    );
    let refused = d.ctl(&["call", "1002", "1001"]);
    assert!(!refused.status.success(), "1002 has no registered phone");
}
