//! The core task: owns the transaction layer, the handler chain and the
//! shared engines; fed by the transports, its own timers and commands
//! (control socket, dialplans, reload). No lock is held on
//! the signalling path: everything here is owned by this one task.

mod commands;
mod event_log;
mod routing;

use super::handler::{Engines, Outcome, RequestContext, RequestHandler};
use crate::call::{CallRef, Output as CallOutput};
use crate::clock::Now;
use crate::config::Config;
pub use crate::control::{Command, RegistrationView, StatusView};
use crate::dialplan::{DialplanLibrary, Reply};
use crate::events::DomainEvent;
use crate::sip::response::{random_token, response_to};
use crate::sip::transaction::{Peer, TransactionLayer, TxEvent, TxKey};
use crate::sip::transport::{Inbound, TransportHandle};
use crate::sip::validate::validate_request;
use crate::sip::{HeaderName, SipMessage};
use crate::store::StoreHandle;
use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

pub struct Core {
    config: Arc<Config>,
    txl: TransactionLayer,
    engines: Engines,
    handlers: Vec<Box<dyn RequestHandler>>,
    transports: TransportHandle,
    store: StoreHandle,
    commands: mpsc::Sender<Command>,
    dialplans: DialplanLibrary,
    dialplans_running: Arc<std::sync::atomic::AtomicUsize>,
    /// Dialplan runs that ended in an error since the start.
    dialplan_errors: u64,
    /// Chat pushes in flight: client transaction → (recipient, message id).
    chat_tx: HashMap<TxKey, (String, u64)>,
    /// NOTIFYs in flight: client transaction → subscription.
    notify_tx: HashMap<TxKey, crate::presence::SubscriptionId>,
    /// REGISTERs and keep-alive OPTIONS to providers on their way:
    /// transaction → (trunk name, is a keep-alive).
    trunk_tx: HashMap<TxKey, (String, bool)>,
    /// Dialplans waiting for the answer to an action, by conversation.
    dialplan_replies: HashMap<CallRef, oneshot::Sender<Reply>>,
    /// Where dialplans run: threads of their own, never the signalling
    /// task's, so a script that spins until its limit stalls no signalling.
    dialplan_runtime: tokio::runtime::Handle,
    heap_trim: HeapTrim,
    /// Ring groups' no-answer destinations, by the conversation ringing them.
    fallbacks: HashMap<CallRef, crate::config::Destination>,
    /// Records of queue calls whose agent is in after-call work, by agent:
    /// stored again with its length when it ends.
    acw_records: HashMap<String, (crate::cdr::CallRecord, Instant)>,
    /// What the HTTP API shares with the core.
    api: ApiLink,
    /// Only while the API is on: nothing else reads it.
    event_log: Option<event_log::EventLog>,
}

/// The core's side of the HTTP API: the configuration it reads (replaced
/// on reload), the tokens it checks (the core adds and revokes them), and
/// the domain events it streams.
pub struct ApiLink {
    pub config: Arc<arc_swap::ArcSwap<Config>>,
    pub tokens: crate::auth::tokens::Tokens,
    pub fanout: crate::api::Fanout,
}

/// The handles the core reaches the rest of the daemon through.
pub struct CoreIo {
    pub transports: TransportHandle,
    pub store: StoreHandle,
    /// Its own command queue (dialplans send their actions there).
    pub commands: mpsc::Sender<Command>,
    /// Where dialplans run.
    pub dialplan_runtime: tokio::runtime::Handle,
    pub api: ApiLink,
}

impl Core {
    pub fn new(config: Arc<Config>, engines: Engines, handlers: Vec<Box<dyn RequestHandler>>, io: CoreIo) -> Core {
        let CoreIo {
            transports,
            store,
            commands,
            dialplan_runtime,
            api,
        } = io;
        Core {
            event_log: config
                .api
                .as_ref()
                .map(|_| event_log::EventLog::new(api.fanout.clone())),
            api,
            txl: TransactionLayer::new(config.sip.timers),
            config,
            engines,
            handlers,
            transports,
            store,
            commands,
            dialplans: DialplanLibrary::new(),
            dialplans_running: Arc::default(),
            dialplan_errors: 0,
            chat_tx: Default::default(),
            notify_tx: HashMap::new(),
            trunk_tx: HashMap::new(),
            dialplan_replies: HashMap::new(),
            dialplan_runtime,
            heap_trim: HeapTrim::default(),
            fallbacks: HashMap::new(),
            acw_records: HashMap::new(),
        }
    }

    pub async fn run(mut self, mut inbound: mpsc::Receiver<Inbound>, mut commands: mpsc::Receiver<Command>) {
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        loop {
            let deadline = [
                self.txl.poll_timeout(),
                self.engines.calls.poll_timeout(),
                self.engines.trunks.poll_timeout(),
                self.engines.queues.poll_timeout(),
                self.engines.agents.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
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
                    let now = Now::read();
                    self.txl.handle_timeout(now.mono);
                    self.engines.calls.handle_timeout(now);
                    self.engines.trunks.handle_timeout(now.mono);
                    self.engines.queues.handle_timeout(now);
                    self.engines.agents.handle_timeout(now.mono);
                }
                _ = housekeeping.tick() => self.housekeeping(),
            }
            self.flush();
        }
    }

    fn on_inbound(&mut self, inb: Inbound) {
        let now = Instant::now();
        if inb.msg.is_request() {
            // A ban drops what starts something (REGISTER, INVITE, …), never
            // a request inside a dialog: a banned office keeps its calls.
            if !inb.msg.has_to_tag() && self.engines.auth.is_banned(inb.from.addr.ip(), now) {
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
            while let Some(output) = self.engines.calls.poll_output() {
                progressed = true;
                self.on_call_output(output);
            }
            while let Some(event) = self.engines.registrar.poll_output() {
                progressed = true;
                self.on_domain_event(event);
            }
            while let Some(event) = self.engines.chat.poll_event() {
                progressed = true;
                self.on_domain_event(event);
            }
            while let Some(event) = self.engines.agents.poll_output() {
                progressed = true;
                self.on_domain_event(event);
            }
            if self.engines.queues.has_waiting() {
                self.engines.queues.dispatch(&self.engines.agents, Now::read());
            }
            while let Some(output) = self.engines.queues.poll_output() {
                progressed = true;
                self.on_acd_output(output);
            }
            while let Some((sub, req, to)) = self.engines.presence.poll_output() {
                progressed = true;
                match self.txl.send_request(req, to, Instant::now()) {
                    Ok(key) => {
                        self.notify_tx.insert(key, sub);
                    }
                    Err(e) => tracing::warn!(error = %e, "NOTIFY not sent"),
                }
            }
            while let Some(d) = self.engines.chat.poll_output() {
                progressed = true;
                match self.txl.send_request(d.req, d.to, Instant::now()) {
                    Ok(key) => {
                        self.chat_tx.insert(key, (d.user_aor, d.id));
                    }
                    Err(e) => tracing::warn!(error = %e, "chat push not sent"),
                }
            }
            while let Some(output) = self.engines.trunks.poll_output() {
                progressed = true;
                self.on_trunk_output(output);
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

    fn on_trunk_output(&mut self, output: crate::trunk::TrunkOutput) {
        use crate::trunk::{RegStatus, TrunkOutput};
        match output {
            TrunkOutput::Register(r) => match self.txl.send_request(r.req, r.to, Instant::now()) {
                Ok(key) => {
                    self.trunk_tx.insert(key, (r.trunk, false));
                }
                Err(e) => {
                    tracing::warn!(trunk = %r.trunk, error = %e, "REGISTER to the provider not sent");
                    self.engines.trunks.on_timeout(&r.trunk, Instant::now());
                }
            },
            TrunkOutput::Ping(r) => match self.txl.send_request(r.req, r.to, Instant::now()) {
                Ok(key) => {
                    self.trunk_tx.insert(key, (r.trunk, true));
                }
                Err(_) => self.engines.trunks.on_ping_result(&r.trunk, None, Instant::now()),
            },
            TrunkOutput::Status(change) => {
                let code = match &change.status {
                    RegStatus::Failing { code, .. } => Some(*code),
                    _ => None,
                };
                self.on_domain_event(crate::events::DomainEvent::TrunkStatus {
                    trunk: change.trunk,
                    status: change.status.name().to_string(),
                    code,
                });
            }
        }
    }

    fn on_event(&mut self, ev: TxEvent) {
        let now = Now::read();
        match ev {
            TxEvent::Request { key, request, from } => self.dispatch(key, request, from),
            TxEvent::Timeout { key } => {
                tracing::debug!(branch = %key.branch, method = %key.method, "transaction timed out");
                if let Some((trunk, ping)) = self.trunk_tx.get(&key) {
                    if *ping {
                        self.engines.trunks.on_ping_result(trunk, None, now.mono);
                    } else {
                        self.engines.trunks.on_timeout(trunk, now.mono);
                    }
                } else if let Some((aor, id)) = self.chat_tx.get(&key).cloned() {
                    self.on_chat_result(&aor, id, 408);
                } else if let Some(sub) = self.notify_tx.get(&key) {
                    self.engines.presence.notify_failed(sub, 408);
                } else if !key.server {
                    self.engines.calls.on_tx_timeout(&key, now);
                }
            }
            TxEvent::Response { key, response } => {
                if let Some((trunk, ping)) = self.trunk_tx.get(&key) {
                    if *ping {
                        if response.status().is_some_and(|s| s >= 200) {
                            self.engines.trunks.on_ping_result(trunk, Some(&response), now.mono);
                        }
                    } else {
                        self.engines.trunks.on_response(trunk, &response, now.mono);
                    }
                } else if let Some((aor, id)) = self.chat_tx.get(&key).cloned() {
                    self.on_chat_result(&aor, id, response.status().unwrap_or(500));
                } else if let Some(sub) = self.notify_tx.get(&key) {
                    self.engines
                        .presence
                        .notify_failed(sub, response.status().unwrap_or(500));
                } else {
                    self.engines.calls.on_response(&key, response, now)
                }
            }
            TxEvent::StrayAck { request, from } => self.engines.calls.on_ack(&request, from),
            TxEvent::StrayResponse { response, .. } => {
                tracing::debug!(
                    status = response.status().unwrap_or(0),
                    "response matches no transaction"
                );
                self.engines.calls.on_stray_response(&response)
            }
            TxEvent::Terminated { key } => {
                let ours = self.chat_tx.remove(&key).is_some()
                    || self.notify_tx.remove(&key).is_some()
                    || self.trunk_tx.remove(&key).is_some();
                if !key.server && !ours {
                    self.engines.calls.on_tx_terminated(&key);
                }
            }
        }
    }

    fn on_chat_result(&mut self, aor: &str, id: u64, status: u16) {
        if status < 200 {
            return;
        }
        if let Some(op) = self.engines.chat.on_delivery_result(aor, id, status) {
            tracing::info!(id, to = aor, "chat message delivered");
            let _ = self.store.write(&[op]);
            // The next waiting message goes now (one at a time, in order).
            let domain = aor.split_once('@').map_or("", |(_, d)| d);
            if let Some(account) = self.config.account(domain) {
                let ua = &self.config.sip.user_agent;
                super::chat_handler::push_next(&mut self.engines, &self.store, account, aor, None, ua);
            }
        }
    }

    fn dispatch(&mut self, key: Arc<TxKey>, req: Arc<SipMessage>, from: Peer) {
        let clock = Now::read();
        let now = clock.mono;
        if let Err(e) = validate_request(&req) {
            tracing::debug!(from = %from.addr, error = %e, "invalid request");
            self.respond(&key, e.into_response(&req, random_token), now);
            return;
        }
        let cancelled_invite = if req.method() == Some(&crate::sip::Method::Cancel) {
            self.txl.invite_for_cancel(&req)
        } else {
            None
        };
        let mut cx = RequestContext {
            config: &self.config,
            engines: &mut self.engines,
            from,
            now: clock,
            key: &key,
            cancelled_invite,
            store: &self.store,
        };
        let outcome = self.handlers.iter_mut().find_map(|h| h.handle(&req, &mut cx));
        match outcome {
            Some(Outcome::Respond(resp)) => self.respond(&key, resp, now),
            Some(Outcome::Drop) | Some(Outcome::Deferred) => {}
            None => self.respond(&key, response_to(&req, 500, None, &random_token()), now),
        }
    }

    fn respond(&mut self, key: &TxKey, mut resp: SipMessage, now: Instant) {
        resp.push_header(HeaderName::Server, self.config.sip.user_agent.clone());
        // Challenges are sent statelessly (RFC 3261 §8.2.7).
        let result = if matches!(resp.status(), Some(401 | 407)) {
            self.txl.respond_statelessly(key, resp, now)
        } else {
            self.txl.respond(key, resp, now)
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "response for a finished transaction dropped");
        }
    }

    fn on_call_output(&mut self, output: CallOutput) {
        let now = Instant::now();
        match output {
            CallOutput::Request { req, to } => {
                if let Err(e) = self.txl.send_request(req, to, now) {
                    tracing::warn!(error = %e, "could not send request");
                }
            }
            CallOutput::Respond { key, resp } => self.respond(&key, resp, now),
            CallOutput::WriteRecord { record, then } => {
                // The record is kept before the answers. The call has ended
                // either way; if its record could not be kept, whoever
                // ended it hears so (500) rather than a success.
                let ops = [
                    crate::cdr::record_op(&record),
                    crate::cdr::live_done(record.conversation),
                ];
                let stored = self.store.write(&ops).is_ok();
                self.await_acw(&record, now);
                for (key, resp) in then {
                    let resp = if stored { resp } else { storage_failure(resp) };
                    self.respond(&key, resp, now);
                }
            }
            CallOutput::Persist(ops) => {
                // A mark only: a failed write is logged by the store.
                let _ = self.store.write(&ops);
            }
            CallOutput::Stateless { msg, to } => {
                self.transports.send(&crate::sip::transaction::Transmit {
                    to,
                    data: msg.to_bytes(),
                });
            }
            CallOutput::StartDialplan { call, account, info } => self.start_dialplan(call, &account, info),
            CallOutput::DialplanReply { call, reply } => {
                if !self.take_group_failure(call, &reply) {
                    self.reply_now(call, reply);
                }
            }
            CallOutput::Event(event) => self.on_domain_event(event),
            CallOutput::Consult { call, account, number } => self.on_consult(call, &account, &number),
            CallOutput::OfferEnded {
                call,
                account,
                agent,
                outcome,
            } => self.on_offer_ended(call, &account, &agent, outcome),
        }
    }

    /// Routes a domain event to the engines that follow it: presence
    /// re-reads the state of the user it concerns.
    fn on_domain_event(&mut self, event: DomainEvent) {
        tracing::debug!(?event, "domain event");
        let now = Instant::now();
        if let Some(log) = &mut self.event_log {
            log.push(event.clone(), now, crate::unix_now() * 1000);
        }
        self.engines.agents.on_event(&event, now);
        self.engines.queues.on_event(&event, now);
        if let DomainEvent::AgentState { aor, state } = &event {
            if *state != crate::acd::AgentState::Acw {
                self.acw_over(aor, now);
            }
        }
        if let DomainEvent::ConversationEnded { conversation, .. } = &event {
            self.fallbacks.remove(conversation);
            // Still waiting when its last leg ended: the caller hung up.
            if self.engines.queues.is_waiting(*conversation) {
                self.engines.queues.abandoned(*conversation, Now::read());
            }
        }
        if let Some(aor) = event.user() {
            self.engines.presence_changed(&aor, Instant::now());
        }
    }

    fn housekeeping(&mut self) {
        let now_unix = crate::unix_now();
        let ops = self.engines.registrar.purge_expired(now_unix);
        if !ops.is_empty() {
            tracing::debug!(count = ops.len(), "purging expired registrations");
            let _ = self.store.write(&ops);
        }
        self.engines.auth.purge(Instant::now(), now_unix);
        self.heap_trim.observe(self.txl.len());
        self.engines.calls.check_media(Now::read());
        self.engines.presence.expire(Instant::now());
    }
}

/// `resp` turned into a 500 (same dialog headers, no body): the write it
/// waited for failed (the store has logged why).
fn storage_failure(mut resp: SipMessage) -> SipMessage {
    resp.start = crate::sip::StartLine::Response {
        status: 500,
        reason: bytestring::ByteString::from_static("Storage Failure"),
    };
    resp.headers
        .retain(|h| !matches!(h.name, HeaderName::ContentType | HeaderName::Contact));
    resp.body = bytes::Bytes::new();
    resp
}

/// Gives the allocator's free pages back to the system once a burst of
/// transactions has drained: glibc keeps them otherwise, and the resident
/// memory after 10,000 registrations stayed at ~3 KB per binding for
/// ~0.6 KB of live data.
#[derive(Default)]
struct HeapTrim {
    /// Most transactions seen since the last trim.
    peak: usize,
}

impl HeapTrim {
    const BURST: usize = 1000;

    fn observe(&mut self, transactions: usize) {
        self.peak = self.peak.max(transactions);
        if self.peak >= Self::BURST && transactions <= self.peak / 4 {
            self.peak = transactions;
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only returns free memory to the system.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

/// Heap in live allocations, KiB (glibc; 0 elsewhere).
fn heap_in_use_kib() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let info = unsafe { libc::mallinfo2() };
        (info.uordblks + info.hblkhd) as u64 / 1024
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    0
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
