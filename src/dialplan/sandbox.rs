//! The Lua state of one dialplan version. Building a sandboxed state and
//! compiling the script costs ~150 µs and ~33 KB, far more than running a
//! typical dialplan, so each version has one state, built on first use,
//! and every call runs in its own coroutine of it (a few hundred bytes,
//! pooled). Each call gets a fresh global table (`_ENV`) whose misses fall
//! through to a read-only base of library functions, so nothing a script
//! assigns is seen by another call.

use super::{api, ActionSender, CallInfo, DialplanError, Limits};
use mlua::{Function, Lua, LuaOptions, MultiValue, StdLib, Table, Thread};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Idle coroutines kept per dialplan version; more are made under load and
/// dropped when they come back to a full pool.
const IDLE_COROUTINES_MAX: usize = 1024;

/// Lua run once per state with full access, before any script: builds the
/// base environment scripts see. Only base, table, string, math and utf8:
/// no io, os, package, debug, load, require, string.dump, and no coroutine
/// (a coroutine made by the script would escape the instruction hook, which
/// lives on the script's own thread; the API keeps `coroutine.yield` to
/// itself), and no `rawset`. Library tables are read-only proxies and the
/// string metatable is locked, so a script cannot change what another call
/// sees.
const BASE_ENV: &str = r#"
local out_of_budget = ...
local string_safe = {}
for k, v in pairs(string) do if k ~= "dump" then string_safe[k] = v end end
-- Lua patterns backtrack in C, where no instruction is counted: refuse a
-- pattern whose worst case, (subject length + 1) ^ (quantifiers + 1), is
-- beyond 1e8 steps (gmatch and gsub try every start: one more power).
local function quantifiers(p)
  local n, i = 0, 1
  while i <= #p do
    local c = p:sub(i, i)
    if c == "%" then i = i + 2
    else
      if c == "*" or c == "+" or c == "-" or c == "?" then n = n + 1 end
      i = i + 1
    end
  end
  return n
end
local function bounded(f, starts, plain_arg)
  return function(s, p, ...)
    local plain = plain_arg and select(plain_arg - 2, ...)
    if type(s) == "string" and type(p) == "string" and not plain then
      if (#s + 1) ^ (quantifiers(p) + 1 + starts) > 1e8 then
        error("pattern too complex for a subject of " .. #s .. " bytes", 2)
      end
    end
    return f(s, p, ...)
  end
end
string_safe.find = bounded(string.find, 0, 4)
string_safe.match = bounded(string.match, 0)
string_safe.gmatch = bounded(string.gmatch, 1)
string_safe.gsub = bounded(string.gsub, 1)
local string_meta = getmetatable("")
string_meta.__index = string_safe
string_meta.__metatable = false
local function readonly(name, t)
  return setmetatable({}, {
    __index = t,
    __newindex = function() error(name .. " is read-only", 2) end,
    __pairs = function()
      local k
      return function() local v; k, v = next(t, k); return k, v end
    end,
    __metatable = false,
  })
end
local base = {
  string = readonly("string", string_safe), table = readonly("table", table),
  math = readonly("math", math), utf8 = readonly("utf8", utf8),
  assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
  select = select, tonumber = tonumber, tostring = tostring,
  type = type, getmetatable = getmetatable, rawequal = rawequal, rawget = rawget,
  rawlen = rawlen, _VERSION = _VERSION,
}
-- A caught error past the instruction limit is raised again: the limit
-- ends the script whatever it wraps itself in.
local function passing_limit(ok, ...)
  if out_of_budget() then error("instruction limit exceeded", 0) end
  return ok, ...
end
base.pcall = function(...) return passing_limit(pcall(...)) end
base.xpcall = function(...) return passing_limit(xpcall(...)) end
-- Finalizers run with hooks off (no instruction limit): none in dialplans.
base.setmetatable = function(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not allowed in dialplans", 2)
  end
  return setmetatable(t, mt)
end
-- Call control: each function yields its request to the Rust driver
-- (api::drive), which resumes with true and the results, or with false and
-- an error message raised at the script's line. `yield` stays private.
local yield = coroutine.yield
local function request(...)
  local ok, a, b = yield(...)
  if not ok then error(a, 3) end
  return a, b
end
base.dial = function(target, opts)
  local result, code = request("dial", target, opts)
  return { result = result, code = code }
end
base.queue = function(number, opts)
  local result, code = request("queue", number, opts)
  return { result = result, code = code }
end
base.group = function(number)
  local result, code = request("group", number)
  return { result = result, code = code }
end
base.agent_state = function(ext, state, reason)
  return (request("agent_state", ext, state, reason))
end
base.answer = function() request("answer") end
base.playback = function(file) request("playback", file) end
base.hangup = function(code) request("hangup", code) end
base.set_caller_id = function(number, name) request("set_caller_id", number, name) end
-- Logging yields too: the driver knows which call is speaking.
local function logger(level)
  return function(...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    request("log", level, table.concat(parts, " "))
  end
end
base.log = readonly("log", { info = logger("info"), warn = logger("warn"), error = logger("error") })
base.print = logger("info")

-- A fresh environment per call, made in Lua: one call from Rust instead
-- of a protected call per field.
local base_meta = { __index = base, __metatable = false }
local function new_env(id, from, to, display, domain, trunk)
  local env = setmetatable({}, base_meta)
  env._G = env
  env.call = { id = id, from = from, to = to, display = display, domain = domain, trunk = trunk, vars = {} }
  return env
end
return new_env
"#;

/// The script is compiled as a function of its environment: `local _ENV`
/// on the first line keeps line numbers in errors unchanged.
const ENV_PARAMETER: &str = "local _ENV = ...; ";

/// A script's source with the environment parameter in front.
pub(super) fn with_env_parameter(source: &str) -> String {
    format!("{ENV_PARAMETER}{source}")
}

/// A coroutine calls run in, with its instruction hook set once.
struct Coroutine {
    thread: Thread,
    budget: Arc<api::InstructionBudget>,
}

/// One dialplan version's Lua state: the script compiled, the API
/// installed, and idle coroutines.
pub(super) struct Engine {
    lua: Lua,
    chunk: Function,
    /// Makes a call's `_ENV` (see `BASE_ENV`).
    new_env: Function,
    idle: Mutex<Vec<Coroutine>>,
    /// Calls inside the script now: the state's memory limit is the
    /// per-call limit times this.
    running: AtomicUsize,
    /// Memory of the state with no call in it.
    base_bytes: usize,
    /// The memory limit scripts run under (see `Running`).
    limit: AtomicUsize,
    /// Held while values are pushed from Rust and the script resumed: the
    /// pushes are made with the memory limit lifted, because mlua wraps
    /// every string push in a protected call (~1 µs) whenever a limit is
    /// set; the script itself always runs under the limit.
    gate: Mutex<()>,
    /// The budget of the coroutine running now, for the sandbox's `pcall`.
    current: Arc<Mutex<Option<Arc<api::InstructionBudget>>>>,
}

impl Engine {
    pub(super) fn build(name: &str, source: &str) -> Result<Engine, DialplanError> {
        let fail = |e: mlua::Error| DialplanError::Script(api::describe(&e, name));
        let lua = Lua::new_with(
            StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE,
            LuaOptions::default(),
        )
        .map_err(fail)?;
        let current: Arc<Mutex<Option<Arc<api::InstructionBudget>>>> = Arc::default();
        let seen = current.clone();
        let out_of_budget = lua
            .create_function(move |_, ()| {
                let budget = seen.lock().unwrap_or_else(|p| p.into_inner());
                Ok(budget.as_ref().is_some_and(|b| b.exceeded()))
            })
            .map_err(fail)?;
        let new_env: Function = lua
            .load(BASE_ENV)
            .set_name("=sandbox")
            .call(out_of_budget)
            .map_err(fail)?;
        let chunk = lua
            .load(with_env_parameter(source))
            .set_name(format!("@{name}"))
            .into_function()
            .map_err(fail)?;
        Ok(Engine {
            base_bytes: lua.used_memory(),
            lua,
            chunk,
            new_env,
            idle: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            limit: AtomicUsize::new(0),
            gate: Mutex::new(()),
            current,
        })
    }

    /// Builds values on the Lua side, unmetered, then resumes `thread` with
    /// them under the memory limit.
    pub(super) fn resume(
        &self,
        thread: &Thread,
        budget: &Arc<api::InstructionBudget>,
        args: impl FnOnce(&Lua) -> mlua::Result<MultiValue>,
    ) -> mlua::Result<MultiValue> {
        let _gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        // The state's one hook, on the thread that runs now (see api::limit_instructions).
        api::limit_instructions(thread, budget.clone());
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(budget.clone());
        self.lua.set_memory_limit(0)?;
        let args = args(&self.lua);
        self.lua.set_memory_limit(self.limit.load(Ordering::Relaxed))?;
        thread.resume(args?)
    }

    fn set_limit(&self, limit: usize) {
        let _gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        self.limit.store(limit, Ordering::Relaxed);
        let _ = self.lua.set_memory_limit(limit);
    }

    fn coroutine(&self) -> mlua::Result<Coroutine> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        let thread = self.lua.create_thread(self.chunk.clone())?;
        let budget = Arc::new(api::InstructionBudget::default());
        Ok(Coroutine { thread, budget })
    }

    /// Runs the script for one call, in a fresh environment and coroutine.
    pub(super) async fn run(&self, info: &CallInfo, actions: ActionSender, limits: Limits) -> mlua::Result<()> {
        let running = Running::enter(self, limits.memory_bytes);
        let co = self.coroutine()?;
        co.thread.reset(self.chunk.clone())?;
        co.budget.start(limits.instructions);
        let start = |_: &Lua| {
            let env: Table = self.new_env.call((
                info.id.as_str(),
                info.from.as_str(),
                info.to.as_str(),
                info.display.as_str(),
                info.domain.as_str(),
                info.trunk.as_deref(),
            ))?;
            Ok(MultiValue::from_vec(vec![mlua::Value::Table(env)]))
        };
        let result = api::drive(self, &co.thread, &co.budget, start, &actions, &info.id).await;
        drop(running);
        // A coroutine whose script failed is dropped, not reused: it holds
        // the error. (One whose call was abandoned half-way is dropped with
        // this future.)
        if result.is_ok() {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < IDLE_COROUTINES_MAX {
                    idle.push(co);
                }
            }
        }
        result
    }
}

/// Counts a call as running in the engine for as long as it lives, and
/// keeps the state's memory limit at the per-call limit times the calls.
struct Running<'a> {
    engine: &'a Engine,
    per_call: usize,
}

impl<'a> Running<'a> {
    fn enter(engine: &'a Engine, per_call: usize) -> Running<'a> {
        let n = engine.running.fetch_add(1, Ordering::Relaxed) + 1;
        engine.set_limit(engine.base_bytes + per_call * n);
        Running { engine, per_call }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let n = self.engine.running.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        self.engine.set_limit(self.engine.base_bytes + self.per_call * n.max(1));
    }
}

/// The engine of one dialplan version, built on its first call.
#[derive(Default)]
pub(super) struct LazyEngine(Mutex<Option<Arc<Engine>>>);

impl std::fmt::Debug for LazyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LazyEngine")
    }
}

impl LazyEngine {
    pub(super) fn get(&self, name: &str, source: &str) -> Result<Arc<Engine>, DialplanError> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = slot.as_ref() {
            return Ok(e.clone());
        }
        let engine = Arc::new(Engine::build(name, source)?);
        *slot = Some(engine.clone());
        Ok(engine)
    }
}
