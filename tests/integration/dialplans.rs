//! Dialplans in the running daemon: a Lua error fails one call with 500
//! and a file:line log, a dialplan edited on disk routes the next call
//! while a call in progress goes on, and call records survive kill -9.

use crate::calls::{callee, caller, records};
use crate::harness::Daemon;
use std::path::Path;

fn write_plan(dir: &Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("plan.lua");
    std::fs::write(&p, body).unwrap();
    p
}

fn final_code(run: &crate::harness::SippRun) -> String {
    run.logs
        .lines()
        .find_map(|l| l.strip_prefix("final "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .unwrap_or_else(|| panic!("no final response: {}", run.errors))
}

#[test]
fn lua_error_fails_only_that_call() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(
        dir.path(),
        "-- route\nif call.to == \"1999\" then\n  local t = nil\n  return t.field\nend\ndial(call.to)\n",
    );
    let d = Daemon::start_with("", "", &plan);
    let run = caller(&d, "1001", "1999", 0, "uac_fail.xml");
    assert_eq!(final_code(&run), "500");
    let line = d.wait_for_log("dialplan error");
    assert!(line.contains(&format!("{}:4:", plan.display())), "{line}");
    // The next call is routed normally.
    let uas = callee(&d, "1002", "uas_answer.xml", &[]);
    let ok = caller(&d, "1001", "1002", 200, "uac_call.xml");
    assert_eq!(ok.code, 0, "{}", ok.errors);
    assert_eq!(uas.wait().code, 0);
}

#[test]
fn instruction_limit_stops_a_runaway_script() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), "while true do end\n");
    let d = Daemon::start_with("", "[dialplan]\ninstruction_limit = 100000\n", &plan);
    let run = caller(&d, "1001", "1002", 0, "uac_fail.xml");
    assert_eq!(final_code(&run), "500");
    let line = d.wait_for_log("dialplan error");
    assert!(line.contains("instruction limit"), "{line}");
}

#[test]
fn edited_dialplan_routes_the_next_call_while_one_is_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), "dial(call.to)\n");
    let d = Daemon::start_with("", "", &plan);
    let uas = callee(&d, "1002", "uas_answer.xml", &[]);
    let first = std::thread::scope(|s| {
        let first = s.spawn(|| caller(&d, "1001", "1002", 3000, "uac_call.xml"));
        d.wait_for_log("call answered");
        // Edit the dialplan while the first call is up.
        std::fs::write(&plan, "hangup(603)\n").unwrap();
        let second = caller(&d, "1001", "1002", 0, "uac_fail.xml");
        assert_eq!(final_code(&second), "603", "the next call follows the new dialplan");
        first.join().unwrap()
    });
    assert_eq!(first.code, 0, "the call in progress went on: {}", first.errors);
    assert_eq!(uas.wait().code, 0);
    d.wait_for_log("dialplan reloaded");
}

#[test]
fn call_records_survive_kill_9() {
    let mut d = Daemon::start("");
    for to in ["1002", "1003", "1999"] {
        caller(&d, "1001", to, 0, "uac_fail.xml");
    }
    d.kill9();
    d.restart();
    let r = records(&d);
    let callees: Vec<_> = r.iter().map(|x| x["callee"].as_str().unwrap().to_string()).collect();
    assert_eq!(callees, vec!["1002", "1003", "1999"]);
    let only_1003 = d.ctl(&["--json", "cdr", "--user", "1003"]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&only_1003.stdout).unwrap();
    assert_eq!(list.len(), 1);
}
