//! The admin control channel: a Unix socket (mode 0600, under the data
//! directory by default) speaking one JSON object per line. The daemon
//! side forwards queries to the core; `switchboard ctl` is the client.
//!
//! Request: `{"command":"registrations"}` or `{"command":"status"}`.
//! Reply: `{"ok":true,"data":…}` or `{"ok":false,"error":"…"}`.

use crate::control::{AgentChoice, Command, RegistrationView, StatusView};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Environment variable that allows `fault …` commands (tests only).
pub const FAULT_INJECTION: &str = "SWITCHBOARD_FAULT_INJECTION";

#[derive(Debug, Serialize, Deserialize)]
pub struct CtlRequest {
    pub command: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CtlReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Binds the control socket and serves it in the background.
pub fn serve(path: &Path, commands: mpsc::Sender<Command>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a killed daemon would make bind fail.
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_client(stream, commands.clone()));
        }
    });
    Ok(())
}

async fn serve_client(stream: UnixStream, commands: mpsc::Sender<Command>) {
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = match serde_json::from_str::<CtlRequest>(&line) {
            Ok(req) => answer(&req.command, &commands).await,
            Err(e) => CtlReply {
                ok: false,
                data: None,
                error: Some(format!("bad request: {e}")),
            },
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_default();
        out.push(b'\n');
        if wr.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn answer(command: &str, commands: &mpsc::Sender<Command>) -> CtlReply {
    let data = match command {
        "registrations" => ask(commands, Command::Registrations).await,
        "status" => ask(commands, Command::Status).await,
        "calls" => ask(commands, Command::Calls).await,
        "bans" => ask(commands, Command::Bans).await,
        "trunks" => ask(commands, Command::Trunks).await,
        "agents" => ask(commands, Command::Agents).await,
        "queues" => ask(commands, Command::Queues).await,
        "tokens" => ask(commands, Command::Tokens).await,
        create if create.starts_with("token create ") => {
            // "token create USER [LABEL...]"
            let mut words = create.split_whitespace().skip(2);
            let user = words.next().unwrap_or("").to_string();
            let label = words.collect::<Vec<_>>().join(" ");
            match ask_fallible(commands, |reply| Command::TokenCreate { user, label, reply }).await {
                Ok(v) => Ok(serde_json::json!({ "token": v[0], "info": v[1] })),
                Err(e) => Err(e),
            }
        }
        revoke if revoke.starts_with("token revoke ") => {
            let id = revoke["token revoke ".len()..].trim().to_string();
            ask(commands, |reply| Command::TokenRevoke { id, reply }).await
        }
        agent if agent.starts_with("agent ") => {
            // "agent USER ready" | "agent USER not_ready [REASON...]"
            let mut words = agent.split_whitespace().skip(1);
            let (user, choice) = (words.next().unwrap_or("").to_string(), words.next().unwrap_or(""));
            let rest: Vec<&str> = words.collect();
            let choice = match choice {
                "ready" => Ok(AgentChoice::Ready),
                "not_ready" => Ok(AgentChoice::NotReady(if rest.is_empty() {
                    "not ready".to_string()
                } else {
                    rest.join(" ")
                })),
                "end_acw" => Ok(AgentChoice::EndAcw),
                other => Err(format!("agent {user}: {other:?} is not ready, not_ready or end_acw")),
            };
            match choice {
                Ok(choice) => ask_fallible(commands, |reply| Command::SetAgent { user, choice, reply }).await,
                Err(e) => Err(e),
            }
        }
        call if call.starts_with("call ") => {
            // "call USER NUMBER": click-to-call.
            let mut words = call.split_whitespace().skip(1);
            let (user, target) = (
                words.next().unwrap_or("").to_string(),
                words.next().unwrap_or("").to_string(),
            );
            match round_trip(commands, |reply| Command::ClickToCall { user, target, reply }).await {
                Ok(Ok(conversation)) => Ok(serde_json::json!({ "conversation": conversation })),
                Ok(Err((_, why))) => Err(why),
                Err(e) => Err(e),
            }
        }
        dir if dir == "directory" || dir.starts_with("directory ") => {
            let domain = dir.split_whitespace().nth(1).map(str::to_string);
            ask_fallible(commands, |reply| Command::Directory { domain, reply }).await
        }
        unban if unban.starts_with("unban ") => match unban[6..].trim().parse() {
            Ok(ip) => ask(commands, |reply| Command::Unban { ip, reply }).await,
            Err(_) => Err(format!("not an IP address: {}", &unban[6..])),
        },
        // Fault injection for the test that shows a panic ends the process;
        // refused unless the daemon was started with the variable set.
        "fault panic-core" if std::env::var_os(FAULT_INJECTION).is_some() => {
            let _ = commands.send(Command::InjectPanic).await;
            Ok(serde_json::Value::Null)
        }
        fault if fault.starts_with("fault store-fail ") && std::env::var_os(FAULT_INJECTION).is_some() => {
            crate::store::fault::set_failing(fault.ends_with(" on"));
            Ok(serde_json::Value::Null)
        }
        chat if chat.starts_with("chat ") => {
            let args: Vec<&str> = chat.split_whitespace().skip(1).collect();
            let query = match crate::chat::queries::ChatQuery::parse(&args) {
                Ok(q) => q,
                Err(usage) => {
                    return CtlReply {
                        ok: false,
                        data: None,
                        error: Some(usage),
                    }
                }
            };
            ask_fallible(commands, |reply| Command::Chat { query, reply }).await
        }
        cdr if cdr.starts_with("cdr") => {
            // "cdr LIMIT [USER]"
            let mut parts = cdr.split_whitespace().skip(1);
            let limit = parts.next().and_then(|l| l.parse().ok()).unwrap_or(50);
            let user = parts.next().map(str::to_string);
            match ask(commands, |reply| Command::CallRecords { user, limit, reply }).await {
                Ok(v) => match serde_json::from_value::<Result<serde_json::Value, String>>(v) {
                    Ok(Ok(list)) => Ok(list),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e),
            }
        }
        other => Err(format!("unknown command {other:?}; known: registrations, status")),
    };
    match data {
        Ok(d) => CtlReply {
            ok: true,
            data: Some(d),
            error: None,
        },
        Err(e) => CtlReply {
            ok: false,
            data: None,
            error: Some(e),
        },
    }
}

/// Sends `make`'s command to the core and waits for its answer.
async fn round_trip<T>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, String> {
    let (tx, rx) = oneshot::channel();
    commands
        .send(make(tx))
        .await
        .map_err(|_| "daemon is stopping".to_string())?;
    rx.await.map_err(|_| "daemon is stopping".to_string())
}

async fn ask<T: Serialize>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<serde_json::Value, String> {
    let v = round_trip(commands, make).await?;
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// Like [`ask`], for commands whose answer may be a refusal.
async fn ask_fallible<T: Serialize>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Command,
) -> Result<serde_json::Value, String> {
    let v = round_trip(commands, make).await??;
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// Client side: sends one command and returns the reply's data.
pub async fn request(path: &Path, command: &str) -> Result<serde_json::Value, String> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| format!("cannot reach the daemon at {}: {e}", path.display()))?;
    let (rd, mut wr) = stream.into_split();
    let mut line = serde_json::to_vec(&CtlRequest {
        command: command.to_string(),
    })
    .map_err(|e| e.to_string())?;
    line.push(b'\n');
    wr.write_all(&line).await.map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(rd).lines();
    let reply = lines
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("daemon closed the connection")?;
    let reply: CtlReply = serde_json::from_str(&reply).map_err(|e| e.to_string())?;
    match reply {
        CtlReply { ok: true, data, .. } => Ok(data.unwrap_or(serde_json::Value::Null)),
        CtlReply { error, .. } => Err(error.unwrap_or_else(|| "unknown error".into())),
    }
}

/// Human-readable table of registrations.
pub fn format_registrations(list: &[RegistrationView]) -> String {
    if list.is_empty() {
        return "no registrations\n".into();
    }
    let mut out = format!(
        "{:<28} {:<44} {:>8} {:<5} {:<22} {}\n",
        "AOR", "CONTACT", "EXPIRES", "PROTO", "SOURCE", "USER-AGENT"
    );
    for r in list {
        out.push_str(&format!(
            "{:<28} {:<44} {:>8} {:<5} {:<22} {}\n",
            r.aor,
            r.contact,
            r.expires_in,
            r.transport,
            r.source,
            r.user_agent.as_deref().unwrap_or("-")
        ));
    }
    out
}

pub fn format_trunks(list: &[crate::control::TrunkView]) -> String {
    if list.is_empty() {
        return "no trunks\n".into();
    }
    let mut out = format!(
        "{:<16} {:<24} {:<12} {:>8} {}\n",
        "TRUNK", "ADDRESS", "STATUS", "FAILURES", "DETAIL"
    );
    for t in list {
        let detail = match (t.expires_s, t.last_code) {
            (Some(e), _) => format!("expires {e}s"),
            (_, Some(c)) => format!("{c} {}", t.last_reason.as_deref().unwrap_or("")),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{:<16} {:<24} {:<12} {:>8} {}\n",
            t.name, t.address, t.status, t.failures, detail
        ));
    }
    out
}

pub fn format_calls(list: &[crate::call::CallView]) -> String {
    if list.is_empty() {
        return "no calls\n".into();
    }
    let mut out = format!(
        "{:<40} {:<8} {:<10} {:<10} {:>6} {:>10} {:>10}\n",
        "CALL-ID", "CALLER", "CALLEE", "STATE", "SECS", "RTP-IN-A", "RTP-IN-B"
    );
    for c in list {
        out.push_str(&format!(
            "{:<40} {:<8} {:<10} {:<10} {:>6} {:>10} {:>10}\n",
            c.call_id,
            c.caller,
            c.callee,
            c.state,
            c.duration_s,
            c.media.from_caller.packets,
            c.media.from_callee.packets
        ));
    }
    out
}

pub fn format_cdr(list: &[crate::cdr::CallRecord]) -> String {
    if list.is_empty() {
        return "no call records\n".into();
    }
    let mut out = format!(
        "{:<24} {:<8} {:<10} {:<10} {:>6} {:<7} {:>4}\n",
        "END (unix ms)", "CALLER", "CALLEE", "RESULT", "SECS", "HANGUP", "SIP"
    );
    for r in list {
        out.push_str(&format!(
            "{:<24} {:<8} {:<10} {:<10} {:>6} {:<7} {:>4}\n",
            r.end_ms, r.caller, r.callee, r.disposition, r.duration_s, r.hangup_side, r.sip_code
        ));
    }
    out
}

pub fn format_status(s: &StatusView) -> String {
    format!(
        "bindings: {}\ntransactions: {}\ncalls: {}\nrelay ports in use: {}\nmemory: {} KiB (heap in use {} KiB)\ndialplans running: {}\ntables: {:?}\nbanned: {}\n",
        s.bindings,
        s.transactions,
        s.calls,
        s.relay_ports_in_use,
        s.rss_kib,
        s.heap_in_use_kib,
        s.dialplans_running,
        s.tables,
        if s.banned.is_empty() {
            "none".to_string()
        } else {
            s.banned.join(", ")
        }
    )
}
