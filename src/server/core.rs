//! The core task: owns the transaction layer, the handler chain and the
//! shared services; fed by the transports, its own timers and commands
//! (control socket, store acknowledgements, reload). No lock is held on
//! the signalling path: everything here is owned by this one task.

use super::handler::{Outcome, RequestContext, RequestHandler, Services};
use crate::call::{CallEffect, CallRef, CallView};
use crate::cdr::CallRecord;
use crate::config::Config;
use crate::dialplan::{Action, DialplanError, DialplanLibrary, Reply};
use crate::sip::response::{random_token, response_to};
use crate::sip::transaction::{Peer, TransactionLayer, TxEvent, TxKey};
use crate::sip::transport::{Inbound, TransportHandle};
use crate::sip::validate::validate_request;
use crate::sip::{HeaderName, SipMessage};
use crate::store::{StoreHandle, StoreOp};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// One registration as shown to admins (`ctl registrations`, API).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RegistrationView {
    pub aor: String,
    pub contact: String,
    pub expires_in: u64,
    pub source: String,
    pub transport: String,
    pub user_agent: Option<String>,
}

/// Counters for `ctl status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct StatusView {
    pub bindings: usize,
    pub transactions: usize,
    pub calls: usize,
    pub relay_ports_in_use: usize,
    /// Resident memory of the daemon, KiB (from /proc/self/statm).
    pub rss_kib: u64,
    /// Dialplan scripts still running.
    pub dialplans_running: usize,
    /// Internal table sizes: call-ids, client transactions, call timers, nonces.
    pub tables: Vec<usize>,
    pub banned: Vec<String>,
}

/// Requests to the core from other tasks.
pub enum Command {
    /// A deferred response is ready (after a store write).
    Respond {
        key: TxKey,
        response: Box<SipMessage>,
    },
    Registrations(oneshot::Sender<Vec<RegistrationView>>),
    Status(oneshot::Sender<StatusView>),
    Reload(Arc<Config>),
    /// Liveness probe for the systemd watchdog.
    Ping(oneshot::Sender<()>),
    /// A dialplan asks something of its call.
    Dialplan {
        call: CallRef,
        action: Action,
        reply: oneshot::Sender<Reply>,
    },
    /// A dialplan script returned or failed.
    DialplanDone {
        call: CallRef,
        result: Result<(), DialplanError>,
    },
    Calls(oneshot::Sender<Vec<CallView>>),
    /// `chat history|unread|read|mute …` from the control socket.
    Chat {
        args: Vec<String>,
        reply: oneshot::Sender<Result<serde_json::Value, String>>,
    },
    CallRecords {
        user: Option<String>,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<CallRecord>, String>>,
    },
}

pub struct Core {
    config: Arc<Config>,
    txl: TransactionLayer,
    services: Services,
    handlers: Vec<Box<dyn RequestHandler>>,
    transports: TransportHandle,
    store: StoreHandle,
    commands: mpsc::Sender<Command>,
    dialplans: DialplanLibrary,
    dialplans_running: Arc<std::sync::atomic::AtomicUsize>,
    /// Chat pushes in flight: client transaction → (recipient, message id).
    chat_tx: std::collections::HashMap<TxKey, (String, u64)>,
}

impl Core {
    pub fn new(
        config: Arc<Config>,
        services: Services,
        handlers: Vec<Box<dyn RequestHandler>>,
        transports: TransportHandle,
        store: StoreHandle,
        commands: mpsc::Sender<Command>,
    ) -> Core {
        Core {
            txl: TransactionLayer::new(config.sip.timers),
            config,
            services,
            handlers,
            transports,
            store,
            commands,
            dialplans: DialplanLibrary::new(),
            dialplans_running: Arc::default(),
            chat_tx: Default::default(),
        }
    }

    pub async fn run(mut self, mut inbound: mpsc::Receiver<Inbound>, mut commands: mpsc::Receiver<Command>) {
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        loop {
            let deadline = match (self.txl.poll_timeout(), self.services.calls.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                msg = inbound.recv() => {
                    let Some(first) = msg else { break };
                    self.on_inbound(first);
                    // Drain what is already queued before flushing.
                    for _ in 0..256 {
                        match inbound.try_recv() {
                            Ok(m) => self.on_inbound(m),
                            Err(_) => break,
                        }
                    }
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.on_command(cmd);
                }
                _ = sleep_until(deadline) => {
                    let now = Instant::now();
                    self.txl.handle_timeout(now);
                    self.services.calls.handle_timeout(now);
                }
                _ = housekeeping.tick() => self.housekeeping(),
            }
            self.flush();
        }
    }

    fn on_inbound(&mut self, inb: Inbound) {
        let now = Instant::now();
        if inb.msg.is_request() {
            if self.services.auth.is_banned(inb.from.addr.ip(), now) {
                return;
            }
            if let Err(e) = self.txl.handle_request(inb.msg, inb.from, now) {
                tracing::debug!(from = %inb.from.addr, error = %e, "request dropped");
            }
        } else {
            tracing::debug!(from = %inb.from.addr, status = inb.msg.status().unwrap_or(0), call_id = inb.msg.call_id().unwrap_or(""), "response received");
            self.txl.handle_response(inb.msg, inb.from, now);
        }
    }

    fn flush(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(ev) = self.txl.poll_event() {
                progressed = true;
                self.on_event(ev);
            }
            while let Some(effect) = self.services.calls.poll_effect() {
                progressed = true;
                self.on_call_effect(effect);
            }
            while let Some((req, to)) = self.services.presence.poll_notify() {
                progressed = true;
                if let Err(e) = self.txl.send_request(req, to, Instant::now()) {
                    tracing::warn!(error = %e, "NOTIFY not sent");
                }
            }
            while let Some(d) = self.services.chat.poll_delivery() {
                progressed = true;
                match self.txl.send_request(d.req, d.to, Instant::now()) {
                    Ok(key) => {
                        self.chat_tx.insert(key, (d.user_aor, d.id));
                    }
                    Err(e) => tracing::warn!(error = %e, "chat push not sent"),
                }
            }
            while let Some(t) = self.txl.poll_transmit() {
                progressed = true;
                self.transports.send(&t);
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_event(&mut self, ev: TxEvent) {
        let now = Instant::now();
        match ev {
            TxEvent::Request { key, request, from } => self.dispatch(key, request, from),
            TxEvent::Timeout { key } => {
                tracing::debug!(branch = %key.branch, method = %key.method, "transaction timed out");
                if let Some((aor, id)) = self.chat_tx.get(&key).cloned() {
                    self.on_chat_result(&aor, id, 408);
                } else if !key.server {
                    self.services.calls.on_tx_timeout(&key, now);
                }
            }
            TxEvent::Response { key, response } => {
                if let Some((aor, id)) = self.chat_tx.get(&key).cloned() {
                    self.on_chat_result(&aor, id, response.status().unwrap_or(500));
                } else {
                    self.services.calls.on_response(&key, response, now)
                }
            }
            TxEvent::StrayAck { request, .. } => self.services.calls.on_ack(&request),
            TxEvent::StrayResponse { response, .. } => {
                tracing::debug!(
                    status = response.status().unwrap_or(0),
                    "response matches no transaction"
                );
                self.services.calls.on_stray_response(&response)
            }
            TxEvent::Terminated { key } => {
                if !key.server && self.chat_tx.remove(&key).is_none() {
                    self.services.calls.on_tx_terminated(&key);
                }
            }
        }
    }

    /// `chat history USER PEER [LIMIT [BEFORE_ID]]`, `chat unread USER`,
    /// `chat read USER PEER`, `chat mute USER on|off`. USER is an extension
    /// of the default account or `ext@domain`.
    fn on_chat_command(&mut self, args: Vec<String>, reply: oneshot::Sender<Result<serde_json::Value, String>>) {
        let usage = "usage: chat history USER PEER [LIMIT [BEFORE]] | chat unread USER | chat read USER PEER | chat mute USER on|off";
        let (Some(verb), Some(who)) = (args.first(), args.get(1)) else {
            let _ = reply.send(Err(usage.into()));
            return;
        };
        let (ext, account) = match who.split_once('@') {
            Some((e, d)) => (e.to_string(), self.config.accounts.iter().find(|a| a.domain == d)),
            None => (who.clone(), self.config.accounts.iter().find(|a| a.is_default)),
        };
        let Some(account) = account.cloned() else {
            let _ = reply.send(Err("no such account".into()));
            return;
        };
        let Some(user) = account.user(&ext).cloned() else {
            let _ = reply.send(Err(format!("no user {ext} in {}", account.domain)));
            return;
        };
        let aor = format!("{ext}@{}", account.domain);
        let backend = self.store.backend().clone();
        match (verb.as_str(), args.get(2)) {
            ("mute", Some(onoff)) => {
                let muted = onoff == "on";
                self.services.chat.set_muted(&aor, muted);
                self.store.write_detached(vec![StoreOp::PutMuted { aor, muted }]);
                let _ = reply.send(Ok(serde_json::json!({ "muted": muted })));
            }
            ("history", Some(peer)) | ("read", Some(peer)) => {
                let Some(conv) = crate::chat::queries::conversation_for(&account, &user, peer) else {
                    let _ = reply.send(Err(format!("{ext} may not read the conversation with {peer}")));
                    return;
                };
                let limit = args.get(3).and_then(|l| l.parse().ok()).unwrap_or(50);
                let before = args.get(4).and_then(|b| b.parse().ok());
                let store = self.store.clone();
                let mark = verb == "read";
                tokio::task::spawn_blocking(move || {
                    let r = backend
                        .chat_history(&conv, if mark { None } else { before }, if mark { 1 } else { limit })
                        .map_err(|e| e.to_string());
                    let r = match (r, mark) {
                        (Ok(list), true) => {
                            let id = list.last().map_or(0, |m| m.id);
                            let done = store.write(vec![StoreOp::PutReadMark {
                                aor,
                                conversation: conv,
                                id,
                            }]);
                            match done.blocking_recv() {
                                Ok(Ok(())) => Ok(serde_json::json!({ "read_up_to": id })),
                                _ => Err("could not store the read mark".to_string()),
                            }
                        }
                        (Ok(list), false) => serde_json::to_value(list).map_err(|e| e.to_string()),
                        (Err(e), _) => Err(e),
                    };
                    let _ = reply.send(r);
                });
            }
            ("unread", None) => {
                tokio::task::spawn_blocking(move || {
                    let r = backend.chat_messages(&account.domain).and_then(|msgs| {
                        let marks = backend.read_marks(&aor)?;
                        Ok(crate::chat::queries::unread(&account, &user, &msgs, &marks))
                    });
                    let _ = reply.send(
                        r.map_err(|e| e.to_string())
                            .and_then(|u| serde_json::to_value(u).map_err(|e| e.to_string())),
                    );
                });
            }
            _ => {
                let _ = reply.send(Err(usage.into()));
            }
        }
    }

    fn on_chat_result(&mut self, aor: &str, id: u64, status: u16) {
        if status < 200 {
            return;
        }
        if let Some(op) = self.services.chat.on_delivery_result(aor, id, status) {
            tracing::info!(id, to = aor, "chat message delivered");
            self.store.write_detached(vec![op]);
        }
    }

    fn dispatch(&mut self, key: TxKey, req: SipMessage, from: Peer) {
        let now = Instant::now();
        if let Err(e) = validate_request(&req) {
            tracing::debug!(from = %from.addr, error = %e, "invalid request");
            self.respond(&key, e.to_response(&req, &random_token()), now);
            return;
        }
        let cancelled_invite = if req.method() == Some(&crate::sip::Method::Cancel) {
            self.txl.invite_for_cancel(&req)
        } else {
            None
        };
        let mut cx = RequestContext {
            config: &self.config,
            services: &mut self.services,
            from,
            now,
            now_unix: crate::unix_now(),
            key: &key,
            cancelled_invite,
        };
        let outcome = self.handlers.iter_mut().find_map(|h| h.handle(&req, &mut cx));
        match outcome {
            Some(Outcome::Respond(resp)) => self.respond(&key, resp, now),
            Some(Outcome::PersistThenRespond { ops, response }) => self.persist_then_respond(key, ops, response, &req),
            Some(Outcome::Drop) | Some(Outcome::Deferred) => {}
            None => self.respond(&key, response_to(&req, 500, None, &random_token()), now),
        }
    }

    fn respond(&mut self, key: &TxKey, mut resp: SipMessage, now: Instant) {
        resp.push_header(HeaderName::Server, self.config.sip.user_agent.clone());
        if let Err(e) = self.txl.respond(key, resp, now) {
            tracing::debug!(error = %e, "response for a finished transaction dropped");
        }
    }

    fn persist_then_respond(&mut self, key: TxKey, ops: Vec<StoreOp>, response: SipMessage, req: &SipMessage) {
        let failure = response_to(req, 500, Some("Storage Failure"), &random_token());
        self.persist_then(key, ops, response, failure);
    }

    fn persist_then(&mut self, key: TxKey, ops: Vec<StoreOp>, response: SipMessage, failure: SipMessage) {
        let done = self.store.write(ops);
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let response = match done.await {
                Ok(Ok(())) => response,
                _ => failure,
            };
            let _ = commands
                .send(Command::Respond {
                    key,
                    response: Box::new(response),
                })
                .await;
        });
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Respond { key, response } => self.respond(&key, *response, Instant::now()),
            Command::Registrations(reply) => {
                let now = crate::unix_now();
                let mut list: Vec<RegistrationView> = self
                    .services
                    .registrar
                    .all()
                    .flat_map(|(aor, bs)| {
                        bs.iter().map(move |b| RegistrationView {
                            aor: aor.clone(),
                            contact: b.contact.clone(),
                            expires_in: b.remaining(now),
                            source: b.source.clone(),
                            transport: b.transport.clone(),
                            user_agent: b.user_agent.clone(),
                        })
                    })
                    .collect();
                list.sort_by(|a, b| (&a.aor, &a.contact).cmp(&(&b.aor, &b.contact)));
                let _ = reply.send(list);
            }
            Command::Status(reply) => {
                let now = Instant::now();
                let _ = reply.send(StatusView {
                    bindings: self.services.registrar.binding_count(),
                    transactions: self.txl.len(),
                    calls: self.services.calls.len(),
                    relay_ports_in_use: self.services.calls.relay_ports_in_use(),
                    rss_kib: rss_kib(),
                    dialplans_running: self.dialplans_running.load(std::sync::atomic::Ordering::Relaxed),
                    tables: {
                        let (a, b, c) = self.services.calls.table_sizes();
                        vec![a, b, c, self.services.auth.nonces_tracked()]
                    },
                    banned: self
                        .services
                        .auth
                        .guard()
                        .banned(now)
                        .into_iter()
                        .map(|(ip, left)| format!("{ip} ({}s left)", left.as_secs()))
                        .collect(),
                });
            }
            Command::Reload(config) => {
                self.txl.set_timers(config.sip.timers);
                self.services.auth.reconfigure(
                    config.security.nonce_lifetime_s,
                    config.security.digest_algorithms.clone(),
                    super::guard_policy(&config),
                );
                self.services.calls.reconfigure(super::call_config(&config));
                self.dialplans.invalidate();
                self.config = config;
                tracing::info!("configuration reloaded; registrations and calls kept");
            }
            Command::Ping(reply) => {
                let _ = reply.send(());
            }
            Command::Dialplan { call, action, reply } => self.on_dialplan_action(call, action, reply),
            Command::DialplanDone { call, result } => self.services.calls.script_done(call, result),
            Command::Calls(reply) => {
                let _ = reply.send(self.services.calls.views());
            }
            Command::Chat { args, reply } => self.on_chat_command(args, reply),
            Command::CallRecords { user, limit, reply } => {
                // Reads do not wait for the writer; redb serves them from a snapshot.
                let backend = self.store.backend().clone();
                tokio::task::spawn_blocking(move || {
                    let r = backend.call_records(user.as_deref(), limit).map_err(|e| e.to_string());
                    let _ = reply.send(r);
                });
            }
        }
    }

    fn on_dialplan_action(&mut self, call: CallRef, action: Action, reply: oneshot::Sender<Reply>) {
        let now = Instant::now();
        let calls = &mut self.services.calls;
        match action {
            Action::Dial {
                targets,
                timeout_s,
                external,
            } => {
                let Some(domain) = calls.account_of(call) else {
                    let _ = reply.send(Reply::CallEnded);
                    return;
                };
                let Some(account) = self.config.accounts.iter().find(|a| a.domain == domain) else {
                    let _ = reply.send(Reply::CallEnded);
                    return;
                };
                let req = crate::call::DialRequest {
                    targets,
                    timeout: timeout_s.map(Duration::from_secs),
                    external,
                    account,
                    registrar: &self.services.registrar,
                };
                calls.dial(call, req, reply, now);
            }
            Action::Answer => calls.answer(call, reply, now),
            Action::Playback(file) => calls.playback(call, &file, reply, now),
            Action::Hangup(code) => {
                calls.hangup(call, code);
                let _ = reply.send(Reply::CallEnded);
            }
            Action::SetCallerId { number, name } => {
                let _ = reply.send(calls.set_caller_id(call, number, name));
            }
        }
    }

    fn on_call_effect(&mut self, effect: CallEffect) {
        let now = Instant::now();
        match effect {
            CallEffect::Request { req, to } => {
                if let Err(e) = self.txl.send_request(req, to, now) {
                    tracing::warn!(error = %e, "could not send request");
                }
            }
            CallEffect::Respond { key, resp } => self.respond(&key, resp, now),
            CallEffect::RespondTo {
                key,
                status,
                reason,
                contact,
                body,
            } => {
                let Some(req) = self.txl.server_request(&key) else {
                    return;
                };
                let mut resp = response_to(req, status, Some(&reason), &random_token());
                if let Some(c) = contact {
                    resp.push_header(HeaderName::Contact, c);
                }
                if !body.is_empty() {
                    resp.push_header(HeaderName::ContentType, "application/sdp");
                    resp.body = body;
                }
                self.respond(&key, resp, now);
            }
            CallEffect::RespondAfterWrite { key, resp, record } => {
                let failure = resp.clone();
                self.persist_then(key, vec![StoreOp::PutCallRecord(record)], resp, failure);
            }
            CallEffect::Stateless { msg, to } => {
                self.transports.send(&crate::sip::transaction::Transmit {
                    to,
                    data: msg.to_bytes(),
                });
            }
            CallEffect::WriteRecord(record) => self.store.write_detached(vec![StoreOp::PutCallRecord(record)]),
            CallEffect::StartDialplan { call, account, info } => self.start_dialplan(call, &account, info),
        }
    }

    fn start_dialplan(&mut self, call: CallRef, account: &str, info: crate::dialplan::CallInfo) {
        let Some(path) = self
            .config
            .accounts
            .iter()
            .find(|a| a.domain == account)
            .map(|a| a.dialplan.clone())
        else {
            return;
        };
        let plan = match self.dialplans.get(&path) {
            Ok(p) => p,
            Err(e) => {
                self.services.calls.script_done(call, Err(e));
                return;
            }
        };
        let limits = crate::dialplan::Limits {
            instructions: self.config.dialplan_limits.instructions,
            memory_bytes: self.config.dialplan_limits.memory_bytes,
        };
        let commands = self.commands.clone();
        let running = self.dialplans_running.clone();
        running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            let (tx, mut rx) = mpsc::channel::<(Action, oneshot::Sender<Reply>)>(4);
            let forward = {
                let commands = commands.clone();
                tokio::spawn(async move {
                    while let Some((action, reply)) = rx.recv().await {
                        if commands.send(Command::Dialplan { call, action, reply }).await.is_err() {
                            return;
                        }
                    }
                })
            };
            let result = crate::dialplan::run(plan, info, tx, limits).await;
            let _ = forward.await;
            running.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let _ = commands.send(Command::DialplanDone { call, result }).await;
        });
    }

    fn housekeeping(&mut self) {
        let now_unix = crate::unix_now();
        let ops = self.services.registrar.purge_expired(now_unix);
        if !ops.is_empty() {
            tracing::debug!(count = ops.len(), "purging expired registrations");
            self.store.write_detached(ops);
        }
        self.services.auth.purge(Instant::now(), now_unix);
        self.services.calls.check_media(Instant::now());
        // Presence follows registrations that lapse and calls that start or end.
        let now = Instant::now();
        self.services.presence.expire(now);
        for aor in self.services.presence.watched() {
            self.services.presence_changed(&aor, now);
        }
    }
}

/// Resident set size of this process in KiB (Linux).
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
