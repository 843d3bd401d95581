//! The HTTP API (`/api/v1`, JSON, HTTP/1.1 with axum) and its event stream
//! (server-sent events), for CRMs and wallboards. Requests carry a user's
//! token (`Authorization: Bearer`, made with `ctl token create`); what a
//! token sees follows its user's role ([`viewer`]). Handlers ask the core
//! through the same commands as `switchboard ctl`: the core stays the one
//! owner of the state, with no lock on the signalling path. Errors are
//! RFC 9457 problem details.

mod calls;
mod chat;
mod contacts;
mod fanout;

pub use fanout::Fanout;
mod history;
mod openapi;
mod phonebook;
mod problem;
pub mod viewer;

use crate::config::Config;
use crate::control::{AgentChoice, Command};
use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use problem::Problem;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use viewer::Viewer;

/// Largest request body taken (413 beyond).
const MAX_BODY: usize = 16 * 1024;
/// Failed authentications from one address within the window before it
/// gets 429 for the rest of it.
const MAX_AUTH_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub commands: mpsc::Sender<Command>,
    pub config: Arc<ArcSwap<Config>>,
    pub tokens: crate::auth::tokens::Tokens,
    fanout: Fanout,
    failures: Arc<Mutex<HashMap<IpAddr, (u32, Instant)>>>,
}

impl ApiState {
    pub fn new(
        commands: mpsc::Sender<Command>,
        config: Arc<ArcSwap<Config>>,
        tokens: crate::auth::tokens::Tokens,
        fanout: Fanout,
    ) -> ApiState {
        ApiState {
            commands,
            config,
            tokens,
            fanout,
            failures: Arc::default(),
        }
    }

    /// The viewer a request's token names: 401 without a valid token, 429
    /// after too many failures from its address.
    fn viewer(&self, headers: &HeaderMap, from: IpAddr) -> Result<Viewer, Problem> {
        let now = Instant::now();
        {
            let failures = self.failures.lock().expect("failures lock");
            if let Some((n, since)) = failures.get(&from) {
                if *n >= MAX_AUTH_FAILURES && now.duration_since(*since) < FAILURE_WINDOW {
                    return Err(Problem::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many failed authentications; try again later",
                    ));
                }
            }
        }
        let secret = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let user = secret.and_then(|s| {
            let tokens = self.tokens.read().expect("tokens lock");
            tokens.get(&crate::auth::tokens::hash(s)).map(|t| t.user.clone())
        });
        let viewer = user.and_then(|u| Viewer::of(&u, &self.config.load()));
        match viewer {
            Some(v) => Ok(v),
            None => {
                let mut failures = self.failures.lock().expect("failures lock");
                let entry = failures.entry(from).or_insert((0, now));
                if now.duration_since(entry.1) >= FAILURE_WINDOW {
                    *entry = (0, now);
                }
                entry.0 += 1;
                tracing::info!(source = %from, "API authentication failed");
                Err(Problem::unauthorized(if secret.is_some() {
                    "unknown or revoked token"
                } else {
                    "an Authorization: Bearer token is required"
                }))
            }
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Problem> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| Problem::unavailable())?;
        rx.await.map_err(|_| Problem::unavailable())
    }
}

/// Every route: method, path (axum's syntax), handler. The router is
/// built from it, and a test holds the OpenAPI document to it.
fn routes() -> Vec<(&'static str, &'static str, axum::routing::MethodRouter<ApiState>)> {
    use axum::routing::{delete, patch, post};
    vec![
        ("GET", "/api/v1/me", get(me)),
        ("GET", "/api/v1/openapi.json", get(openapi_json)),
        ("GET", "/api/v1/directory", get(directory)),
        ("GET", "/api/v1/agents", get(agents)),
        ("PUT", "/api/v1/agents/:ext/state", put(set_agent_state)),
        ("GET", "/api/v1/queues", get(queues)),
        ("GET", "/api/v1/calls", get(calls::list)),
        ("POST", "/api/v1/calls", post(calls::click_to_call)),
        ("DELETE", "/api/v1/calls/:conversation", delete(calls::end)),
        ("POST", "/api/v1/calls/:conversation/transfer", post(calls::transfer)),
        ("PUT", "/api/v1/calls/:conversation/hold", put(calls::hold)),
        ("GET", "/api/v1/history", get(history::list)),
        ("PATCH", "/api/v1/history/:id", patch(history::annotate)),
        ("GET", "/api/v1/events", get(events)),
        ("GET", "/api/v1/chat", get(chat::conversations)),
        ("PUT", "/api/v1/chat/mute", put(chat::mute)),
        ("GET", "/api/v1/chat/:peer", get(chat::history)),
        ("POST", "/api/v1/chat/:peer", post(chat::send)),
        ("POST", "/api/v1/chat/:peer/read", post(chat::read)),
        ("GET", "/api/v1/contacts", get(contacts::search)),
        ("POST", "/api/v1/contacts", post(contacts::create)),
        ("GET", "/api/v1/contacts/lookup", get(contacts::lookup)),
        ("GET", "/api/v1/contacts/:id", get(contacts::read)),
        ("PATCH", "/api/v1/contacts/:id", patch(contacts::update)),
        ("DELETE", "/api/v1/contacts/:id", delete(contacts::delete)),
        ("GET", "/metrics", get(metrics)),
        ("GET", "/phonebook.xml", get(phonebook::phonebook)),
    ]
}

/// The router of `/api/v1`, `/metrics` and `/phonebook.xml`.
pub fn router(state: ApiState) -> Router {
    let mut r = Router::new();
    for (_, path, handler) in routes() {
        r = r.route(path, handler);
    }
    r.fallback(|| async { Problem::not_found("no such resource") })
        .with_state(state)
}

/// `GET /api/v1/openapi.json`: this API's OpenAPI 3.1 document (no token).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "the OpenAPI document", body = Object)))]
async fn openapi_json() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi::json(),
    )
        .into_response()
}

/// Serves the API on `listen` until the process ends: over HTTPS when
/// `tls` is given (HTTP/2 or HTTP/1.1, chosen by ALPN), else plain
/// HTTP/1.1 and HTTP/2 with prior knowledge.
pub async fn serve(
    listen: SocketAddr,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    state: ApiState,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(listen = %listen, https = tls.is_some(), "HTTP API listening");
    let app = router(state);
    match tls {
        None => {
            tokio::spawn(async move {
                let app = app.into_make_service_with_connect_info::<SocketAddr>();
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "HTTP API stopped");
                }
            });
        }
        Some(config) => {
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            tokio::spawn(serve_https(listener, acceptor, app));
        }
    }
    Ok(())
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_https(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, app: Router) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, most likely: let some close.
                tracing::warn!(error = %e, "HTTP API accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "API TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "API TLS handshake timed out"),
            };
            let service = hyper_util::service::TowerToHyperService::new(app.layer(axum::Extension(ConnectInfo(peer))));
            let served = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "API connection ended");
            }
        });
    }
}

type Peer = ConnectInfo<SocketAddr>;

#[utoipa::path(get, path = "/api/v1/me", tag = "directory",
    responses((status = 200, body = crate::api::openapi::Me), (status = 401, response = crate::api::openapi::ProblemReply)))]
async fn me(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
) -> Result<Json<openapi::Me>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let role = serde_json::to_value(v.role)
        .ok()
        .and_then(|r| r.as_str().map(str::to_string))
        .unwrap_or_default();
    Ok(Json(openapi::Me {
        extension: v.ext,
        domain: v.domain,
        role,
    }))
}

#[utoipa::path(get, path = "/api/v1/directory", tag = "directory",
    responses((status = 200, body = Vec<crate::control::DirectoryEntry>), (status = 401, response = crate::api::openapi::ProblemReply)))]
async fn directory(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let domain = Some(v.domain.clone());
    let entries = s
        .ask(|reply| Command::Directory { domain, reply })
        .await?
        .map_err(|e| Problem::not_found(&e))?;
    Ok(Json(json!(entries)))
}

/// Agent views of the viewer's account that it may see.
async fn visible_agents(s: &ApiState, v: &Viewer) -> Result<Vec<crate::control::AgentView>, Problem> {
    let all = s.ask(Command::Agents).await?;
    Ok(all
        .into_iter()
        .filter(|a| a.aor.split_once('@').is_some_and(|(e, d)| v.sees_user(d, e)))
        .collect())
}

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents",
    responses((status = 200, body = Vec<crate::control::AgentView>), (status = 401, response = crate::api::openapi::ProblemReply)))]
async fn agents(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    Ok(Json(json!(visible_agents(&s, &v).await?)))
}

/// A request body as `T`: 413 when too large; malformed JSON and unknown
/// fields 400; a value of the wrong type or out of range, 422.
fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Problem> {
    if body.len() > MAX_BODY {
        return Err(Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large"));
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data if !e.to_string().contains("unknown field") => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        _ => Problem::new(StatusCode::BAD_REQUEST, format!("malformed request: {e}")),
    })
}

/// Query parameters as `T`, 400 when they do not fit.
fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, Problem> {
    q.map(|Query(v)| v)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, e.body_text()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StateChange {
    state: String,
    #[serde(default)]
    reason: Option<String>,
}

#[utoipa::path(put, path = "/api/v1/agents/{ext}/state", tag = "agents",
    params(("ext" = String, Path, description = "the agent's extension")),
    request_body = StateChange,
    responses((status = 200, body = crate::control::AgentView), (status = 400, response = crate::api::openapi::ProblemReply), (status = 401, response = crate::api::openapi::ProblemReply), (status = 403, response = crate::api::openapi::ProblemReply), (status = 404, response = crate::api::openapi::ProblemReply), (status = 422, response = crate::api::openapi::ProblemReply)))]
/// `PUT /api/v1/agents/{ext}/state` `{"state": "ready" | "not_ready" |
/// "end_acw", "reason": …}`: the same rules as feature codes; the agent
/// themself, their supervisors, owners and admins.
async fn set_agent_state(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    Path(ext): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    let change: StateChange = json_body(&body)?;
    let config = s.config.load();
    if config.account(&v.domain).and_then(|a| a.user(&ext)).is_none() {
        return Err(Problem::not_found(&format!("no user {ext}")));
    }
    if !v.sees_user(&v.domain, &ext) {
        return Err(Problem::forbidden("not your agent"));
    }
    let choice = match change.state.as_str() {
        "ready" => AgentChoice::Ready,
        "not_ready" => AgentChoice::NotReady(change.reason.unwrap_or_else(|| "not ready".into())),
        "end_acw" => AgentChoice::EndAcw,
        other => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("state {other:?}: expected ready, not_ready or end_acw"),
            ))
        }
    };
    let user = format!("{ext}@{}", v.domain);
    let view = s
        .ask(|reply| Command::SetAgent { user, choice, reply })
        .await?
        .map_err(|e| Problem::not_found(&e))?;
    Ok(Json(json!(view)))
}

#[utoipa::path(get, path = "/api/v1/queues", tag = "agents",
    responses((status = 200, body = Vec<crate::acd::QueueView>), (status = 401, response = crate::api::openapi::ProblemReply), (status = 403, response = crate::api::openapi::ProblemReply)))]
async fn queues(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
) -> Result<Json<Value>, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    if !(v.is_admin() || v.role == crate::config::Role::Supervisor) {
        return Err(Problem::forbidden("queues are for supervisors, admins and owners"));
    }
    let all = s.ask(Command::Queues).await?;
    Ok(Json(json!(all
        .into_iter()
        .filter(|q| q.domain == v.domain)
        .collect::<Vec<_>>())))
}

#[derive(Deserialize)]
struct Since {
    #[serde(default)]
    since: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(("since" = Option<u64>, Query, description = "the last event's number the client has")),
    responses((status = 200, description = "server-sent events, each `data:` a JSON Sequenced", content_type = "text/event-stream", body = crate::events::Sequenced), (status = 401, response = crate::api::openapi::ProblemReply)))]
/// `GET /api/v1/events[?since=N]`: server-sent events, each `{seq, …}`,
/// filtered by what the token may see. With `since`, the events after N
/// that the daemon still keeps come first, or a `resync` event when some
/// are gone. A client that falls too far behind is disconnected (it
/// reconnects with `since`). A comment line every 15 s keeps proxies from
/// closing a quiet stream.
async fn events(
    State(s): State<ApiState>,
    ConnectInfo(from): Peer,
    headers: HeaderMap,
    Query(q): Query<Since>,
) -> Result<Response, Problem> {
    let v = s.viewer(&headers, from.ip())?;
    // Subscribe first, so nothing falls between the backlog and the stream.
    let (subscription, rx) = s.fanout.subscribe(v.clone());
    let mut head = Vec::new();
    let mut last = q.since.unwrap_or(0);
    if let Some(since) = q.since {
        match s.ask(|reply| Command::EventsSince { since, reply }).await? {
            Ok(list) => {
                for e in list.iter().filter(|e| v.sees_event(&e.event)) {
                    head.extend_from_slice(&fanout::frame(e));
                }
                last = list.last().map_or(last, |e| e.seq);
            }
            Err(_) => head.extend_from_slice(RESYNC),
        }
    }
    let first = (!head.is_empty()).then(|| Ok::<_, std::convert::Infallible>(Bytes::from(head)));
    let live = futures_util::stream::unfold((rx, subscription, last), |(mut rx, sub, last)| async move {
        let first = match tokio::time::timeout(KEEP_ALIVE, rx.recv()).await {
            Err(_) => return Some((Ok(Bytes::from_static(b":\n\n")), (rx, sub, last))),
            Ok(None) => return None,
            Ok(Some(e)) => e,
        };
        // What follows within a moment (a call's next leg state, often)
        // goes in the same write: a write and a wake-up per client cost
        // more than the event itself.
        tokio::time::sleep(GATHER).await;
        let mut out = Vec::new();
        let mut seq = last;
        for e in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            if e.seq > seq {
                out.extend_from_slice(&e.frame);
                seq = e.seq;
            }
        }
        Some((Ok(Bytes::from(out)), (rx, sub, seq)))
    });
    use futures_util::StreamExt;
    let body = axum::body::Body::from_stream(futures_util::stream::iter(first).chain(live));
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "text/event-stream"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

/// Tells a client to read the state afresh: events it asked for are gone.
const RESYNC: &[u8] = b"event: resync\ndata: {}\n\n";
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long an event waits for others to share its write.
const GATHER: Duration = Duration::from_millis(10);

#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
/// `GET /metrics`: Prometheus text format (no token: keep the API on a
/// loopback or internal address).
async fn metrics(State(s): State<ApiState>) -> Result<Response, Problem> {
    use std::fmt::Write;
    let status = s.ask(Command::Status).await?;
    let queues = s.ask(Command::Queues).await?;
    let agents = s.ask(Command::Agents).await?;
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: usize| {
        let _ = writeln!(
            out,
            "# HELP switchboard_{name} {help}\n# TYPE switchboard_{name} gauge\nswitchboard_{name} {value}"
        );
    };
    gauge("registrations", "Registered contacts.", status.bindings);
    gauge("calls", "Live conversations.", status.calls);
    gauge("legs", "Live call legs.", status.tables.first().copied().unwrap_or(0));
    gauge("transactions", "SIP transactions in progress.", status.transactions);
    gauge(
        "relay_ports_in_use",
        "RTP and RTCP ports held by calls.",
        status.relay_ports_in_use,
    );
    gauge(
        "dialplans_running",
        "Dialplan scripts running.",
        status.dialplans_running,
    );
    gauge(
        "banned_sources",
        "Source addresses banned for failed logins.",
        status.banned.len(),
    );
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP switchboard_{name} {help}\n# TYPE switchboard_{name} counter\nswitchboard_{name} {value}"
        );
    };
    counter(
        "relay_packets_total",
        "RTP packets the relay received from parties.",
        status.relay_packets,
    );
    counter(
        "relay_seq_gaps_total",
        "Sequence gaps in the RTP the relay received (a loss indicator).",
        status.relay_seq_gaps,
    );
    counter(
        "auth_failures_total",
        "Failed authentications (SIP digest and the phonebook's HTTP digest).",
        status.auth_failures,
    );
    counter(
        "dialplan_errors_total",
        "Dialplan runs that ended in an error.",
        status.dialplan_errors,
    );
    let _ = writeln!(
        out,
        "# HELP switchboard_store_commit_seconds Time of store commits.\n# TYPE switchboard_store_commit_seconds summary\n\
         switchboard_store_commit_seconds_sum {:.6}\nswitchboard_store_commit_seconds_count {}",
        status.store_commit_nanos as f64 / 1e9,
        status.store_commits
    );
    let _ = writeln!(
        out,
        "# HELP switchboard_agents Agents by state.\n# TYPE switchboard_agents gauge"
    );
    let mut by_state: std::collections::BTreeMap<String, usize> = Default::default();
    for a in agents {
        *by_state.entry(a.state).or_default() += 1;
    }
    for (state, n) in by_state {
        let _ = writeln!(out, "switchboard_agents{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP switchboard_queue_waiting Callers waiting per queue.\n# TYPE switchboard_queue_waiting gauge"
    );
    for q in &queues {
        let _ = writeln!(
            out,
            "switchboard_queue_waiting{{account=\"{}\",queue=\"{}\"}} {}",
            q.domain, q.number, q.waiting
        );
    }
    let _ = writeln!(out, "# HELP switchboard_queue_calls_today Queue calls today by outcome.\n# TYPE switchboard_queue_calls_today gauge");
    for q in &queues {
        for (outcome, n) in [
            ("answered", q.answered),
            ("abandoned", q.abandoned),
            ("timed_out", q.timed_out),
        ] {
            let _ = writeln!(
                out,
                "switchboard_queue_calls_today{{account=\"{}\",queue=\"{}\",outcome=\"{outcome}\"}} {n}",
                q.domain, q.number
            );
        }
    }
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}
