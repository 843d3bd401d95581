//! `switchboard dialplan test`: runs a dialplan against a simulated call,
//! with no network, printing each decision the script makes. Every `dial`
//! gets the result asked for on the command line.

use super::{run, Action, CallInfo, DialOutcome, Dialplan, DialplanError, Limits, Reply};
use std::sync::Arc;
use tokio::sync::mpsc;

/// One line per decision, e.g. `dial 1002 (timeout 20s) -> busy (486)`.
pub async fn simulate(
    plan: Arc<Dialplan>,
    info: CallInfo,
    dial_result: &str,
    limits: Limits,
) -> (Vec<String>, Result<(), DialplanError>) {
    let outcome = match dial_result {
        "answered" => DialOutcome::new("answered", 200),
        "busy" => DialOutcome::new("busy", 486),
        "no-answer" => DialOutcome::new("no-answer", 480),
        "cancelled" => DialOutcome::new("cancelled", 487),
        _ => DialOutcome::new("failed", 503),
    };
    let (tx, mut rx) = mpsc::channel(16);
    let script = run(plan, info, tx, limits);
    let decisions = async {
        let mut lines = Vec::new();
        while let Some((action, reply)) = rx.recv().await {
            let (line, answer) = match action {
                Action::Dial {
                    targets,
                    timeout_s,
                    external,
                    trunk,
                } => (
                    format!(
                        "dial {}{}{}{} -> {} ({})",
                        targets.join(","),
                        timeout_s.map(|t| format!(" (timeout {t}s)")).unwrap_or_default(),
                        if external { " [external]" } else { "" },
                        trunk.map(|t| format!(" [trunk {t}]")).unwrap_or_default(),
                        outcome.result,
                        outcome.code
                    ),
                    Reply::Dialed(outcome.clone()),
                ),
                Action::Answer => ("answer".into(), Reply::Done),
                Action::Playback(f) => (format!("playback {f}"), Reply::Done),
                Action::Hangup(code) => (format!("hangup {code}"), Reply::CallEnded),
                Action::SetCallerId { number, name } => (
                    format!(
                        "set_caller_id {number}{}",
                        name.map(|n| format!(" \"{n}\"")).unwrap_or_default()
                    ),
                    Reply::Done,
                ),
                Action::Queue { number, .. } => (
                    format!("queue {number} -> {} ({})", outcome.result, outcome.code),
                    Reply::Dialed(outcome.clone()),
                ),
                Action::Group(number) => (
                    format!("group {number} -> {} ({})", outcome.result, outcome.code),
                    Reply::Dialed(outcome.clone()),
                ),
                Action::AgentState { ext, set } => (
                    format!(
                        "agent_state {ext}{}",
                        set.map(|(s, _)| format!(" {s}")).unwrap_or_default()
                    ),
                    Reply::Result("ready".into()),
                ),
            };
            lines.push(line);
            let _ = reply.send(answer);
        }
        lines
    };
    let (result, lines) = tokio::join!(script, decisions);
    (lines, result)
}
