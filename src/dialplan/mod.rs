//! Lua dialplans (mlua, Lua 5.4): a script decides the route of each new
//! call. The script runs as a guest: sandboxed (no os, io, package, debug,
//! load of files or bytecode), with an instruction and a memory limit, and
//! an error fails only its call, reported as `file:line: message`.
//!
//! The script talks to the call through [`Action`]s sent on a channel, so
//! the same engine drives a real call (the core answers) and a simulated
//! one (`switchboard dialplan test`).

mod api;
mod library;
mod sandbox;
pub mod simulate;
#[cfg(test)]
mod tests;

pub use library::{load as library_load, DialplanLibrary};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// Facts about the call a script can read.
#[derive(Debug, Clone, Serialize)]
pub struct CallInfo {
    pub id: String,
    /// Caller's extension (From user).
    pub from: String,
    /// Dialled number (Request-URI user).
    pub to: String,
    /// Caller's display name.
    pub display: String,
    /// Account domain.
    pub domain: String,
    /// The trunk a call from outside came in through.
    pub trunk: Option<String>,
}

/// How a `dial` ended, as the script sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DialOutcome {
    /// "answered", "busy", "no-answer", "failed" or "cancelled".
    pub result: String,
    /// SIP status that ended the attempt (200 when answered).
    pub code: u16,
}

impl DialOutcome {
    pub fn new(result: &str, code: u16) -> DialOutcome {
        DialOutcome {
            result: result.into(),
            code,
        }
    }

    /// The dial result for a final SIP status from the callee side.
    pub fn from_status(code: u16) -> DialOutcome {
        let result = match code {
            200..=299 => "answered",
            486 | 600 => "busy",
            408 | 480 => "no-answer",
            487 => "cancelled",
            _ => "failed",
        };
        DialOutcome::new(result, code)
    }
}

/// What a script asks of its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ring every registered device of each target; returns when the
    /// attempt fails or, if answered, when the bridged call ends.
    Dial {
        targets: Vec<String>,
        timeout_s: Option<u64>,
        external: bool,
        /// The trunk to go out through (else the account's list).
        trunk: Option<String>,
    },
    Answer,
    Playback(String),
    Hangup(u16),
    SetCallerId {
        number: String,
        name: Option<String>,
    },
    /// Wait in queue `number`; returns like `Dial`, with the results
    /// "answered" (200), "timeout" (408), "no_agents" (480), "full" (486).
    Queue {
        number: String,
        max_wait_s: Option<u64>,
    },
    /// Ring group `number` by its strategy; returns like `Dial`.
    Group(String),
    /// Read (and with `set`, first change) the state of agent `ext`:
    /// "ready", "not_ready" (with a reason) or "end_acw".
    AgentState {
        ext: String,
        set: Option<(String, Option<String>)>,
    },
}

/// The call's reply to an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done,
    Dialed(DialOutcome),
    /// A word: an agent's state.
    Result(String),
    /// The call is over (caller hung up, or hangup() was called): the
    /// script stops quietly.
    CallEnded,
    /// The action failed; the message becomes a Lua error.
    Failed(String),
}

pub type ActionSender = mpsc::Sender<(Action, oneshot::Sender<Reply>)>;

/// Per-call limits for the guest.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub instructions: u64,
    pub memory_bytes: usize,
}

/// One version of a dialplan: its source, the name errors use, and the
/// Lua state that runs it.
#[derive(Debug)]
pub struct Dialplan {
    /// Path shown in errors (`dialplans/default.lua:12: …`).
    pub name: String,
    pub source: String,
    engine: sandbox::LazyEngine,
}

impl Dialplan {
    pub fn new(name: impl Into<String>, source: impl Into<String>) -> Dialplan {
        Dialplan {
            name: name.into(),
            source: source.into(),
            engine: sandbox::LazyEngine::default(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DialplanError {
    /// A Lua error, already formatted as `file:line: message`.
    #[error("{0}")]
    Script(String),
    #[error("{0}")]
    Limit(String),
}

/// Runs a dialplan for one call until the script returns or the call ends.
pub use api::run;

/// Compiles a dialplan without running it (for `check` and reload).
pub use api::compile;
