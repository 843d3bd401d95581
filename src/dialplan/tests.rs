//! The dialplan API under simulation: decisions, branching on results,
//! sandbox and limits, error locations.

use super::simulate::simulate;
use super::{CallInfo, Dialplan, DialplanError, Limits};
use std::sync::Arc;

fn info(to: &str) -> CallInfo {
    CallInfo {
        id: "t".into(),
        from: "1001".into(),
        to: to.into(),
        display: "Olivia".into(),
        domain: "pbx.test".into(),
    }
}

const LIMITS: Limits = Limits {
    instructions: 1_000_000,
    memory_bytes: 4 << 20,
};

fn run(source: &str, to: &str, result: &str) -> (Vec<String>, Result<(), DialplanError>) {
    let plan = Arc::new(Dialplan {
        name: "test.lua".into(),
        source: source.into(),
    });
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(simulate(plan, info(to), result, LIMITS))
}

fn shipped() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dialplans/default.lua")).unwrap()
}

#[test]
fn shipped_dialplan_routes_internal_external_and_unknown() {
    assert_eq!(
        run(&shipped(), "1002", "busy").0,
        vec!["dial 1002 (timeout 30s) -> busy (486)"]
    );
    assert_eq!(
        run(&shipped(), "0611223344", "failed").0,
        vec!["dial 0611223344 [external] -> failed (503)"]
    );
    assert_eq!(run(&shipped(), "sales", "answered").0, vec!["hangup 404"]);
}

#[test]
fn scripts_branch_on_dial_results_and_use_call_fields() {
    let src = r#"
        call.vars.tries = 0
        local r = dial({call.to, "1003"}, {timeout = 5})
        call.vars.tries = call.vars.tries + 1
        if r.result == "busy" and r.code == 486 then
            set_caller_id("5551234", call.display)
            dial("1004")
        end
        if call.vars.tries == 1 then answer() playback("sorry.wav") hangup(486) end
        dial("never")
    "#;
    let (lines, result) = run(src, "1002", "busy");
    assert_eq!(result, Ok(()));
    assert_eq!(
        lines,
        vec![
            "dial 1002,1003 (timeout 5s) -> busy (486)",
            "set_caller_id 5551234 \"Olivia\"",
            "dial 1004 -> busy (486)",
            "answer",
            "playback sorry.wav",
            "hangup 486",
        ],
        "nothing runs after hangup"
    );
}

#[test]
fn sandbox_has_no_os_io_or_loading() {
    for (src, needle) in [
        ("os.execute('true')", "os"),
        ("io.open('/etc/passwd')", "io"),
        ("require('x')", "require"),
        ("load('return 1')()", "load"),
        ("dofile('/etc/passwd')", "dofile"),
        ("debug.getinfo(1)", "debug"),
        ("string.dump(print)", "dump"),
        ("coroutine.wrap(function() end)()", "coroutine"),
    ] {
        let (_, r) = run(src, "1002", "answered");
        let Err(DialplanError::Script(msg)) = r else {
            panic!("{src}: {r:?}")
        };
        assert!(msg.starts_with("test.lua:1:"), "{src}: {msg}");
        assert!(msg.contains(needle), "{src}: {msg}");
    }
}

#[test]
fn errors_name_file_and_line() {
    let (_, r) = run("local x = 1\n\nerror('no route for ' .. call.to)\n", "1002", "answered");
    assert_eq!(r, Err(DialplanError::Script("test.lua:3: no route for 1002".into())));
    let (_, r) = run("dial()\n", "1002", "answered");
    let Err(DialplanError::Script(msg)) = r else { panic!() };
    assert!(msg.starts_with("test.lua:1:") && msg.contains("dial"), "{msg}");
    let (_, r) = run("hangup(200)\n", "1002", "answered");
    assert!(format!("{r:?}").contains("not a SIP error status"));
    assert!(super::compile("x.lua", "if then")
        .unwrap_err()
        .to_string()
        .starts_with("x.lua:1:"));
}

#[test]
fn instruction_and_memory_limits() {
    let (_, r) = run("while true do end", "1002", "answered");
    assert!(
        matches!(r, Err(DialplanError::Limit(ref m)) if m.contains("instruction limit")),
        "{r:?}"
    );
    let (_, r) = run(
        "local t = {} for i = 1, 1e7 do t[i] = string.rep('x', 64) .. i end",
        "1002",
        "answered",
    );
    assert!(
        matches!(r, Err(DialplanError::Limit(_)) | Err(DialplanError::Script(_))),
        "{r:?}"
    );
    assert!(
        format!("{r:?}").contains("memory") || format!("{r:?}").contains("instruction"),
        "{r:?}"
    );
}
