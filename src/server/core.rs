//! The core task: owns the transaction layer, the handler chain and the
//! shared services; fed by the transports, its own timers and commands
//! (control socket, store acknowledgements, reload). No lock is held on
//! the signalling path: everything here is owned by this one task.

use super::handler::{Outcome, RequestContext, RequestHandler, Services};
use crate::config::Config;
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
}

pub struct Core {
    config: Arc<Config>,
    txl: TransactionLayer,
    services: Services,
    handlers: Vec<Box<dyn RequestHandler>>,
    transports: TransportHandle,
    store: StoreHandle,
    commands: mpsc::Sender<Command>,
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
        }
    }

    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        loop {
            let deadline = self.txl.poll_timeout();
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
                _ = sleep_until(deadline) => self.txl.handle_timeout(Instant::now()),
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
        match ev {
            TxEvent::Request { key, request, from } => self.dispatch(key, request, from),
            TxEvent::Timeout { key } => {
                tracing::debug!(branch = %key.branch, method = %key.method, "transaction timed out")
            }
            TxEvent::StrayAck { .. }
            | TxEvent::StrayResponse { .. }
            | TxEvent::Terminated { .. }
            | TxEvent::Response { .. } => {}
        }
    }

    fn dispatch(&mut self, key: TxKey, req: SipMessage, from: Peer) {
        let now = Instant::now();
        if let Err(e) = validate_request(&req) {
            tracing::debug!(from = %from.addr, error = %e, "invalid request");
            self.respond(&key, e.to_response(&req, &random_token()), now);
            return;
        }
        let cancel_matched = req.method() == Some(&crate::sip::Method::Cancel)
            && self.txl.invite_for_cancel(&req).is_some();
        let mut cx = RequestContext {
            config: &self.config,
            services: &mut self.services,
            from,
            now,
            now_unix: crate::unix_now(),
            cancel_matched,
        };
        let outcome = self
            .handlers
            .iter_mut()
            .find_map(|h| h.handle(&req, &mut cx));
        match outcome {
            Some(Outcome::Respond(resp)) => self.respond(&key, resp, now),
            Some(Outcome::PersistThenRespond { ops, response }) => {
                self.persist_then_respond(key, ops, response, &req)
            }
            Some(Outcome::Drop) => {}
            None => self.respond(&key, response_to(&req, 500, None, &random_token()), now),
        }
    }

    fn respond(&mut self, key: &TxKey, mut resp: SipMessage, now: Instant) {
        resp.push_header(HeaderName::Server, self.config.sip.user_agent.clone());
        if let Err(e) = self.txl.respond(key, resp, now) {
            tracing::debug!(error = %e, "response for a finished transaction dropped");
        }
    }

    fn persist_then_respond(
        &mut self,
        key: TxKey,
        ops: Vec<StoreOp>,
        response: SipMessage,
        req: &SipMessage,
    ) {
        let done = self.store.write(ops);
        let commands = self.commands.clone();
        let failure = response_to(req, 500, Some("Storage Failure"), &random_token());
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
                self.config = config;
                tracing::info!("configuration reloaded; registrations kept");
            }
            Command::Ping(reply) => {
                let _ = reply.send(());
            }
        }
    }

    fn housekeeping(&mut self) {
        let now_unix = crate::unix_now();
        let ops = self.services.registrar.purge_expired(now_unix);
        if !ops.is_empty() {
            tracing::debug!(count = ops.len(), "purging expired registrations");
            self.store.write_detached(ops);
        }
        self.services.auth.purge(Instant::now(), now_unix);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
