//! The Lua side: sandbox set-up, limits, and the functions a dialplan
//! calls (`dial`, `answer`, `playback`, `hangup`, `set_caller_id`, `log`).

use super::{Action, ActionSender, CallInfo, Dialplan, DialplanError, Limits, Reply};
use mlua::{HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Marks the error that unwinds a script whose call has ended.
const CALL_ENDED: &str = "\u{1}call ended";
const HOOK_EVERY: u32 = 1000;

fn sandbox(limits: Limits) -> mlua::Result<Lua> {
    // Base, table, string, math, utf8 only: no io, os, package, debug, and no
    // coroutine (a coroutine created by the script would escape the
    // instruction hook, which lives on the script's own thread).
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8,
        LuaOptions::default(),
    )?;
    let g = lua.globals();
    for name in ["dofile", "loadfile", "load", "require", "collectgarbage", "coroutine"] {
        g.raw_set(name, Value::Nil)?;
    }
    // string.dump would expose bytecode; the string metatable must stay shared-safe.
    let string: Table = g.get("string")?;
    string.raw_set("dump", Value::Nil)?;
    lua.set_memory_limit(limits.memory_bytes)?;
    Ok(lua)
}

/// Counts instructions on the script's thread and stops it past the limit.
/// (A hook on the main state does not reach the coroutine an async
/// script runs in, so it is set on that thread.)
fn limit_instructions(thread: &mlua::Thread, max: u64) {
    let used = Arc::new(AtomicU64::new(0));
    thread.set_hook(
        HookTriggers::new().every_nth_instruction(HOOK_EVERY),
        move |_lua, _debug| {
            let n = used.fetch_add(u64::from(HOOK_EVERY), Ordering::Relaxed) + u64::from(HOOK_EVERY);
            if n > max {
                return Err(mlua::Error::RuntimeError(format!("instruction limit ({max}) exceeded")));
            }
            Ok(VmState::Continue)
        },
    );
}

pub fn compile(name: &str, source: &str) -> Result<(), DialplanError> {
    let lua = Lua::new_with(StdLib::NONE, LuaOptions::default()).map_err(|e| DialplanError::Script(e.to_string()))?;
    lua.load(source)
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
    let name = plan.name.clone();
    let fail = |e: mlua::Error| DialplanError::Script(describe(&e, &name));
    let lua = sandbox(limits).map_err(fail)?;
    install(&lua, &info, actions).map_err(fail)?;
    let chunk = lua.load(plan.source.as_str()).set_name(format!("@{}", plan.name));
    let thread = chunk.into_function().and_then(|f| lua.create_thread(f)).map_err(fail)?;
    limit_instructions(&thread, limits.instructions);
    // mlua's async machinery loads the coroutine library; take it away again.
    lua.globals().raw_set("coroutine", Value::Nil).map_err(fail)?;
    match thread.into_async::<()>(()).await {
        Ok(()) => Ok(()),
        Err(e) if e.to_string().contains(CALL_ENDED) => Ok(()),
        Err(e) => {
            let text = describe(&e, &name);
            if text.contains("limit") && (text.contains("instruction") || text.contains("memory")) {
                Err(DialplanError::Limit(text))
            } else {
                Err(DialplanError::Script(text))
            }
        }
    }
}

/// `file:line: message`, taken from the error or, for errors raised in
/// Rust callbacks, from the first traceback frame in the script.
fn describe(e: &mlua::Error, name: &str) -> String {
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

async fn ask(actions: &ActionSender, action: Action) -> mlua::Result<Reply> {
    let (tx, rx) = oneshot::channel();
    actions
        .send((action, tx))
        .await
        .map_err(|_| mlua::Error::RuntimeError(CALL_ENDED.into()))?;
    match rx.await {
        Ok(Reply::CallEnded) | Err(_) => Err(mlua::Error::RuntimeError(CALL_ENDED.into())),
        Ok(Reply::Failed(msg)) => Err(mlua::Error::RuntimeError(msg)),
        Ok(r) => Ok(r),
    }
}

fn install(lua: &Lua, info: &CallInfo, actions: ActionSender) -> mlua::Result<()> {
    let g = lua.globals();
    let call = lua.create_table()?;
    call.set("id", info.id.as_str())?;
    call.set("from", info.from.as_str())?;
    call.set("to", info.to.as_str())?;
    call.set("display", info.display.as_str())?;
    call.set("domain", info.domain.as_str())?;
    call.set("vars", lua.create_table()?)?;
    g.set("call", call)?;

    let a = actions.clone();
    g.set(
        "dial",
        lua.create_async_function(move |lua, (target, opts): (Value, Option<Table>)| {
            let a = a.clone();
            async move {
                let targets = match target {
                    Value::String(s) => vec![s.to_str()?.to_string()],
                    Value::Integer(n) => vec![n.to_string()],
                    Value::Table(t) => t.sequence_values::<String>().collect::<mlua::Result<Vec<_>>>()?,
                    _ => {
                        return Err(mlua::Error::RuntimeError(
                            "dial: target must be a number, a string or a list".into(),
                        ))
                    }
                };
                if targets.is_empty() {
                    return Err(mlua::Error::RuntimeError("dial: no target".into()));
                }
                let timeout_s = opts
                    .as_ref()
                    .map(|o| o.get::<Option<u64>>("timeout"))
                    .transpose()?
                    .flatten();
                let external = opts
                    .as_ref()
                    .map(|o| o.get::<Option<bool>>("external"))
                    .transpose()?
                    .flatten()
                    .unwrap_or(false);
                let reply = ask(
                    &a,
                    Action::Dial {
                        targets,
                        timeout_s,
                        external,
                    },
                )
                .await?;
                let t = lua.create_table()?;
                if let Reply::Dialed(o) = reply {
                    t.set("result", o.result)?;
                    t.set("code", o.code)?;
                }
                Ok(t)
            }
        })?,
    )?;
    let a = actions.clone();
    g.set(
        "answer",
        lua.create_async_function(move |_, ()| {
            let a = a.clone();
            async move { ask(&a, Action::Answer).await.map(|_| ()) }
        })?,
    )?;
    let a = actions.clone();
    g.set(
        "playback",
        lua.create_async_function(move |_, file: String| {
            let a = a.clone();
            async move { ask(&a, Action::Playback(file)).await.map(|_| ()) }
        })?,
    )?;
    let a = actions.clone();
    g.set(
        "hangup",
        lua.create_async_function(move |_, code: Option<u16>| {
            let a = a.clone();
            async move {
                let code = code.unwrap_or(480);
                if !(400..=699).contains(&code) {
                    return Err(mlua::Error::RuntimeError(format!(
                        "hangup: {code} is not a SIP error status (400-699)"
                    )));
                }
                ask(&a, Action::Hangup(code)).await.map(|_| ())
            }
        })?,
    )?;
    let a = actions;
    g.set(
        "set_caller_id",
        lua.create_async_function(move |_, (number, name): (String, Option<String>)| {
            let a = a.clone();
            async move { ask(&a, Action::SetCallerId { number, name }).await.map(|_| ()) }
        })?,
    )?;

    let log = lua.create_table()?;
    for level in ["info", "warn", "error"] {
        let id = info.id.clone();
        log.set(
            level,
            lua.create_function(move |_, msg: String| {
                match level {
                    "info" => tracing::info!(call = %id, "dialplan: {msg}"),
                    "warn" => tracing::warn!(call = %id, "dialplan: {msg}"),
                    _ => tracing::error!(call = %id, "dialplan: {msg}"),
                }
                Ok(())
            })?,
        )?;
    }
    let print = log.get::<mlua::Function>("info")?;
    g.set("log", log)?;
    g.set("print", print)?;
    Ok(())
}
