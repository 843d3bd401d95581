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
        trunk: None,
    }
}

const LIMITS: Limits = Limits {
    instructions: 1_000_000,
    memory_bytes: 4 << 20,
};

fn run(source: &str, to: &str, result: &str) -> (Vec<String>, Result<(), DialplanError>) {
    run_on(&Arc::new(Dialplan::new("test.lua", source)), to, result)
}

/// Runs a call on a given dialplan version, so calls share its state pool.
fn run_on(plan: &Arc<Dialplan>, to: &str, result: &str) -> (Vec<String>, Result<(), DialplanError>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(simulate(plan.clone(), info(to), result, LIMITS))
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
fn instruction_limit_stops_a_spinning_script() {
    let (_, r) = run("while true do end", "1002", "answered");
    assert!(
        matches!(r, Err(DialplanError::Limit(ref m)) if m.contains("instruction limit")),
        "{r:?}"
    );
}

#[test]
fn memory_limit_stops_a_script_that_allocates_past_it() {
    // Three instructions, 64 MiB: only the memory limit can stop this.
    let (_, r) = run("local s = string.rep('x', 64 * 1024 * 1024)", "1002", "answered");
    assert!(
        matches!(r, Err(DialplanError::Limit(ref m)) if m.contains("memory") && !m.contains("instruction")),
        "{r:?}"
    );
}

#[test]
fn the_limit_cannot_be_caught_with_pcall_even_inside_a_c_callback() {
    for src in [
        "while true do pcall(function() while true do end end) end",
        "while true do xpcall(function() while true do end end, function() end) end",
        "string.gsub('x', 'x', function() while true do pcall(function() while true do end end) end end)",
    ] {
        let (_, r) = run(src, "1002", "answered");
        assert!(
            matches!(r, Err(DialplanError::Limit(ref m)) if m.contains("instruction limit")),
            "{src}: {r:?}"
        );
    }
}

#[test]
fn finalizers_are_refused_and_pathological_patterns_bounded() {
    let (_, r) = run(
        "setmetatable({}, { __gc = function() while true do end end })",
        "1002",
        "answered",
    );
    assert!(
        matches!(r, Err(DialplanError::Script(ref m)) if m.contains("__gc")),
        "{r:?}"
    );
    let (_, r) = run("string.find(string.rep('a', 5000), '.-.-.-.-.-b')", "1002", "answered");
    assert!(
        matches!(r, Err(DialplanError::Script(ref m)) if m.contains("test.lua:1") && m.contains("pattern too complex")),
        "{r:?}"
    );
    // Ordinary routing patterns and plain finds still work.
    let (log, r) = run(
        "if call.to:match('^%d%d%d%d?$') and string.find(string.rep('a', 5000), '.-.-b', 1, true) == nil then dial(call.to) end",
        "1002",
        "answered",
    );
    assert_eq!(r, Ok(()));
    assert_eq!(log, ["dial 1002 -> answered (200)"]);
}

type Running = tokio::task::JoinHandle<Result<(), DialplanError>>;

/// Starts a call to `to` on `plan` and waits until its script is in
/// `dial`; returns the running script and the sender of dial's reply.
async fn in_dial(plan: &Arc<Dialplan>, to: &str) -> (Running, tokio::sync::oneshot::Sender<super::Reply>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let running = tokio::spawn(super::run(plan.clone(), info(to), tx, LIMITS));
    let (_, reply) = rx.recv().await.unwrap();
    (running, reply)
}

#[test]
fn a_spinning_script_is_stopped_while_an_older_call_waits_in_dial() {
    // Call "a" (the older coroutine) waits in dial; call "b" starts on the
    // same state; then "a" resumes and spins: it must still be limited.
    let src = "dial(call.to) if call.to == 'a' then while true do end end";
    let plan = Arc::new(Dialplan::new("test.lua", src));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ((a, reply_a), (b, reply_b)) = (in_dial(&plan, "a").await, in_dial(&plan, "b").await);
        let answered = || super::Reply::Dialed(super::DialOutcome::new("answered", 200));
        reply_a.send(answered()).unwrap();
        let a = tokio::time::timeout(std::time::Duration::from_secs(20), a)
            .await
            .expect("the spinning call is stopped, not left running")
            .unwrap();
        assert!(matches!(a, Err(DialplanError::Limit(_))), "{a:?}");
        reply_b.send(answered()).unwrap();
        assert_eq!(b.await.unwrap(), Ok(()));
    });
}

#[test]
fn any_dial_timeout_is_clamped() {
    for (given, expected) in [("1e19", 3600), ("-5", 1), ("0.5", 1), ("20", 20)] {
        let src = format!("dial('1002', {{ timeout = {given} }})");
        let (log, r) = run(&src, "1002", "answered");
        assert_eq!(r, Ok(()), "{given}");
        assert!(log[0].contains(&format!("timeout {expected}s")), "{given}: {log:?}");
    }
}

#[test]
fn pooled_state_keeps_nothing_from_one_call_to_the_next() {
    // Call "1" pollutes what it can; call "2" reports what it sees. Both run
    // on the same pooled Lua state (one call at a time).
    let src = r#"
        if call.to == "1" then
            leaked = "global"
            call.vars.leaked = "var"
            assert(not pcall(function() string.upper = nil end), "string is writable")
            assert(not pcall(function() math.floor = nil end), "math is writable")
            assert(not pcall(function() log.info = nil end), "log is writable")
            assert(getmetatable("") == false, "string metatable reachable")
            assert(getmetatable(_ENV) == false, "environment metatable reachable")
            dial("1002")
        else
            set_caller_id(tostring(leaked), tostring(call.vars.leaked))
            set_caller_id(("x"):upper(), tostring(math.floor(2.5)))
        end
    "#;
    let plan = Arc::new(Dialplan::new("test.lua", src));
    let (lines, r) = run_on(&plan, "1", "busy");
    assert_eq!((lines, r), (vec!["dial 1002 -> busy (486)".to_string()], Ok(())));
    let (lines, r) = run_on(&plan, "2", "busy");
    assert_eq!(r, Ok(()));
    assert_eq!(lines, vec!["set_caller_id nil \"nil\"", "set_caller_id X \"2\""]);
}

#[test]
fn pooled_state_is_reusable_after_hangup_errors_and_limits() {
    let src = r#"
        if call.to == "hang" then hangup(486) dial("never") end
        if call.to == "fail" then error("boom") end
        if call.to == "spin" then while true do end end
        dial(call.to)
    "#;
    let plan = Arc::new(Dialplan::new("test.lua", src));
    for _ in 0..3 {
        assert_eq!(run_on(&plan, "hang", "busy"), (vec!["hangup 486".to_string()], Ok(())));
        assert_eq!(
            run_on(&plan, "fail", "busy").1,
            Err(DialplanError::Script("test.lua:3: boom".into()))
        );
        let spun = run_on(&plan, "spin", "busy").1;
        assert!(matches!(spun, Err(DialplanError::Limit(_))), "{spun:?}");
        // A fresh instruction budget each call: this one is not cut short.
        assert_eq!(
            run_on(&plan, "1002", "answered"),
            (vec!["dial 1002 -> answered (200)".to_string()], Ok(()))
        );
    }
}

#[test]
fn concurrent_calls_share_the_state_but_not_globals() {
    // Call "a" sets a global, then waits in dial while call "b" runs on the
    // same Lua state; each must see only its own global.
    let src = r#"
        who = call.to
        local r = dial("x")
        if who ~= call.to then error("saw " .. tostring(who)) end
    "#;
    let plan = Arc::new(Dialplan::new("test.lua", src));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ((a, reply_a), (b, reply_b)) = (in_dial(&plan, "a").await, in_dial(&plan, "b").await);
        let answered = || super::Reply::Dialed(super::DialOutcome::new("answered", 200));
        reply_a.send(answered()).unwrap();
        reply_b.send(answered()).unwrap();
        assert_eq!(a.await.unwrap(), Ok(()));
        assert_eq!(b.await.unwrap(), Ok(()));
    });
}
