//! The dialplan API: the functions a script calls (`dial`, `answer`,
//! `playback`, `hangup`, `set_caller_id`, `log`), the instruction limit,
//! and error locations.
//!
//! The call-control functions are small Lua wrappers (see
//! `sandbox::BASE_ENV`) that yield their request out of the script's
//! coroutine; [`drive`] turns each request into an [`Action`] for the call,
//! waits for the reply and resumes the script with it. No async machinery
//! inside Lua: a request costs one resume.

use super::sandbox::Engine;
use super::{Action, ActionSender, CallInfo, Dialplan, DialplanError, Limits, Reply};
use mlua::{HookTriggers, IntoLuaMulti, Lua, LuaOptions, MultiValue, StdLib, Thread, ThreadStatus, Value, VmState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

const HOOK_EVERY: u32 = 1000;

/// Instructions a call's script may still run: used and allowed, reset at
/// the start of each call on a pooled state.
#[derive(Default)]
pub(super) struct InstructionBudget {
    used: AtomicU64,
    max: AtomicU64,
    /// Hook firings since the budget ran out.
    strikes: AtomicU64,
}

impl InstructionBudget {
    pub(super) fn start(&self, max: u64) {
        self.used.store(0, Ordering::Relaxed);
        self.max.store(max, Ordering::Relaxed);
        self.strikes.store(0, Ordering::Relaxed);
    }

    pub(super) fn exceeded(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.max.load(Ordering::Relaxed)
    }

    fn error(&self) -> mlua::Error {
        let max = self.max.load(Ordering::Relaxed);
        mlua::Error::RuntimeError(format!("instruction limit ({max}) exceeded"))
    }
}

/// Counts instructions on the script's thread and stops it past the budget.
/// mlua keeps one hook per Lua state, for one thread, so the engine sets it
/// on the coroutine it is about to resume, every time (resumes of one state
/// never overlap). Past the budget the hook yields the coroutine out, which
/// no `pcall` can catch; where a yield is impossible (inside a C function
/// such as a `gsub` callback) it raises an error instead, every other time,
/// and the sandbox's `pcall` passes that error on (see `sandbox::BASE_ENV`).
pub(super) fn limit_instructions(thread: &Thread, budget: Arc<InstructionBudget>) {
    thread.set_hook(
        HookTriggers::new().every_nth_instruction(HOOK_EVERY),
        move |_lua, _debug| {
            budget.used.fetch_add(u64::from(HOOK_EVERY), Ordering::Relaxed);
            if !budget.exceeded() {
                return Ok(VmState::Continue);
            }
            if budget.strikes.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
                Ok(VmState::Yield)
            } else {
                Err(budget.error())
            }
        },
    );
}

pub fn compile(name: &str, source: &str) -> Result<(), DialplanError> {
    let lua = Lua::new_with(StdLib::NONE, LuaOptions::default()).map_err(|e| DialplanError::Script(e.to_string()))?;
    lua.load(super::sandbox::with_env_parameter(source))
        .set_name(format!("@{name}"))
        .into_function()
        .map(|_| ())
        .map_err(|e| DialplanError::Script(describe(&e, name)))
}

pub async fn run(
    plan: Arc<Dialplan>,
    info: CallInfo,
    actions: ActionSender,
    limits: Limits,
) -> Result<(), DialplanError> {
    let name = plan.name.as_str();
    let engine = plan.engine.get(name, &plan.source)?;
    let result = engine.run(&info, actions, limits).await;
    result.map_err(|e| {
        let text = describe(&e, name);
        if text.contains("limit") && (text.contains("instruction") || text.contains("memory")) {
            DialplanError::Limit(text)
        } else {
            DialplanError::Script(text)
        }
    })
}

/// Runs the script's coroutine to its end, serving each request it yields.
/// Returns quietly when the call ends under the script (caller hung up,
/// or `hangup()`): the suspended coroutine is dropped.
pub(super) async fn drive(
    engine: &Engine,
    thread: &Thread,
    budget: &Arc<InstructionBudget>,
    start: impl FnOnce(&Lua) -> mlua::Result<MultiValue>,
    actions: &ActionSender,
    call_id: &str,
) -> mlua::Result<()> {
    let mut request = engine.resume(thread, budget, start)?;
    loop {
        if budget.exceeded() {
            // Yielded out by the hook (or its error caught and passed on).
            return Err(budget.error());
        }
        if thread.status() != ThreadStatus::Resumable {
            return Ok(());
        }
        let reply = match parse_request(request) {
            Ok(Request::Call(action)) => ask(actions, action).await,
            Ok(Request::Log { level, message }) => {
                match level.as_str() {
                    "warn" => tracing::warn!(call = %call_id, "dialplan: {message}"),
                    "error" => tracing::error!(call = %call_id, "dialplan: {message}"),
                    _ => tracing::info!(call = %call_id, "dialplan: {message}"),
                }
                Reply::Done
            }
            Err(message) => Reply::Failed(message),
        };
        if reply == Reply::CallEnded {
            return Ok(());
        }
        request = engine.resume(thread, budget, |lua| match reply {
            Reply::Dialed(o) => (true, o.result, o.code).into_lua_multi(lua),
            Reply::Result(result) => (true, result).into_lua_multi(lua),
            Reply::Failed(message) => (false, message).into_lua_multi(lua),
            _ => (true,).into_lua_multi(lua),
        })?;
    }
}

/// What a script yielded.
enum Request {
    Call(Action),
    Log { level: String, message: String },
}

/// The request a script yielded, or the error to raise in the script:
/// `("dial", target, opts)`, `("answer")`, `("playback", file)`,
/// `("hangup", code)`, `("set_caller_id", number, name)`,
/// `("log", level, message)`.
fn parse_request(request: MultiValue) -> Result<Request, String> {
    let mut values = request.into_iter();
    let name = match values.next() {
        Some(Value::String(s)) => s.to_string_lossy(),
        _ => return Err("dialplan: bad request".to_string()),
    };
    let mut arg = || values.next().unwrap_or(Value::Nil);
    let text = |v: Value, what: &str| match v {
        Value::String(s) => Ok(s.to_string_lossy()),
        Value::Integer(n) => Ok(n.to_string()),
        _ => Err(format!("{name}: {what} must be a string")),
    };
    match name.as_str() {
        "dial" => {
            let targets = match arg() {
                Value::String(s) => vec![s.to_string_lossy()],
                Value::Integer(n) => vec![n.to_string()],
                Value::Table(t) => t
                    .sequence_values::<String>()
                    .collect::<mlua::Result<Vec<_>>>()
                    .map_err(|_| "dial: targets must be numbers or strings".to_string())?,
                _ => return Err("dial: target must be a number, a string or a list".to_string()),
            };
            if targets.is_empty() {
                return Err("dial: no target".to_string());
            }
            let (timeout_s, external, trunk) = match arg() {
                Value::Table(o) => {
                    let trunk = o
                        .raw_get::<Option<String>>("trunk")
                        .map_err(|_| "dial: trunk must be a trunk's name".to_string())?;
                    (
                        dial_timeout(o.raw_get::<Value>("timeout").unwrap_or(Value::Nil))?,
                        // Naming a trunk makes the dial external.
                        o.raw_get::<Option<bool>>("external")
                            .map_err(|_| "dial: external must be true or false".to_string())?
                            .unwrap_or(trunk.is_some()),
                        trunk,
                    )
                }
                Value::Nil => (None, false, None),
                _ => return Err("dial: options must be a table".to_string()),
            };
            Ok(Request::Call(Action::Dial {
                targets,
                timeout_s,
                external,
                trunk,
            }))
        }
        "answer" => Ok(Request::Call(Action::Answer)),
        "playback" => Ok(Request::Call(Action::Playback(text(arg(), "file")?))),
        "hangup" => {
            let code = match arg() {
                Value::Nil => 480,
                Value::Integer(n) => n,
                Value::Number(n) if n.fract() == 0.0 => n as i64,
                _ => return Err("hangup: code must be a number".to_string()),
            };
            match u16::try_from(code) {
                Ok(code) if (400..=699).contains(&code) => Ok(Request::Call(Action::Hangup(code))),
                _ => Err(format!("hangup: {code} is not a SIP error status (400-699)")),
            }
        }
        "set_caller_id" => {
            let number = text(arg(), "number")?;
            let name = match arg() {
                Value::Nil => None,
                v => Some(text(v, "name")?),
            };
            Ok(Request::Call(Action::SetCallerId { number, name }))
        }
        "queue" => {
            let number = text(arg(), "number")?;
            let max_wait_s = match arg() {
                Value::Table(o) => match o.raw_get::<Value>("max_wait").unwrap_or(Value::Nil) {
                    Value::Nil => None,
                    Value::Integer(n) if n > 0 => Some(n as u64),
                    _ => return Err("queue: max_wait must be a positive number of seconds".to_string()),
                },
                Value::Nil => None,
                _ => return Err("queue: options must be a table".to_string()),
            };
            Ok(Request::Call(Action::Queue { number, max_wait_s }))
        }
        "group" => Ok(Request::Call(Action::Group(text(arg(), "number")?))),
        "agent_state" => {
            let ext = text(arg(), "extension")?;
            let set = match arg() {
                Value::Nil => None,
                v => {
                    let state = text(v, "state")?;
                    if !matches!(state.as_str(), "ready" | "not_ready" | "end_acw") {
                        return Err(format!(
                            "agent_state: {state:?} is not a state an agent can be put in (ready, not_ready, end_acw)"
                        ));
                    }
                    let reason = match arg() {
                        Value::Nil => None,
                        v => Some(text(v, "reason")?),
                    };
                    Some((state, reason))
                }
            };
            Ok(Request::Call(Action::AgentState { ext, set }))
        }
        "log" => Ok(Request::Log {
            level: text(arg(), "level")?,
            message: text(arg(), "message")?,
        }),
        other => Err(format!("dialplan: unknown request {other}")),
    }
}

/// Longest ring time a dialplan may ask for (any number is clamped to it).
pub const MAX_DIAL_TIMEOUT_S: u64 = 3600;

/// `dial`'s `timeout`: seconds, clamped to 1..=MAX_DIAL_TIMEOUT_S (a huge
/// number would overflow the ring timer's deadline).
fn dial_timeout(v: Value) -> Result<Option<u64>, String> {
    let secs = match v {
        Value::Nil => return Ok(None),
        Value::Integer(n) => n as f64,
        Value::Number(n) if !n.is_nan() => n,
        _ => return Err("dial: timeout must be a number of seconds".to_string()),
    };
    Ok(Some(secs.clamp(1.0, MAX_DIAL_TIMEOUT_S as f64) as u64))
}

async fn ask(actions: &ActionSender, action: Action) -> Reply {
    let (tx, rx) = oneshot::channel();
    if actions.send((action, tx)).await.is_err() {
        return Reply::CallEnded;
    }
    rx.await.unwrap_or(Reply::CallEnded)
}

/// `file:line: message`, taken from the error or, for errors raised in
/// Rust callbacks, from the first traceback frame in the script.
pub(super) fn describe(e: &mlua::Error, name: &str) -> String {
    let (message, traceback) = match e {
        mlua::Error::CallbackError { traceback, cause } => (cause.to_string(), traceback.clone()),
        mlua::Error::MemoryError(m) => (format!("memory limit exceeded: {m}"), String::new()),
        other => (other.to_string(), String::new()),
    };
    let first = message
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .trim_start_matches("runtime error: ")
        .trim_start_matches("syntax error: ")
        .to_string();
    if first.starts_with(name) {
        return first;
    }
    let prefix = format!("{name}:");
    let location = traceback
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| {
            let rest = &l[prefix.len()..];
            rest.split(':').next().map(|line| format!("{name}:{line}"))
        });
    match location {
        Some(loc) => format!("{loc}: {}", first.trim_start_matches("runtime error: ")),
        None => format!("{name}: {first}"),
    }
}
