//! The transaction layer (RFC 3261 §17), sans-IO: messages and timer
//! expiries go in with the current `Instant`; messages to send, events for
//! the transaction user and the next deadline come out (poll style, as in
//! quinn-proto).

mod client_invite;
mod client_non_invite;
mod completed;
mod server_invite;
mod server_non_invite;
#[cfg(test)]
mod tests;

use super::addr::{CSeq, Via};
use super::message::SipMessage;
use super::method::Method;
use super::response::response_to;
use super::via_rewrite::destination_of;
use super::HeaderName;
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
// foldhash here and in the other maps looked up per message (calls, legs,
// relay endpoints, bindings): randomly seeded like std's SipHash, which
// cost ~5 % of a call's instructions (callgrind).
use foldhash::{HashMap, HashMapExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// RFC 3261 §17.1.1.1 timer values; T1/T2 are configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Udp,
    Tcp,
    Tls,
}

impl TransportKind {
    pub fn is_reliable(self) -> bool {
        matches!(self, TransportKind::Tcp | TransportKind::Tls)
    }
    pub fn via_name(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
            TransportKind::Tls => "TLS",
        }
    }
    /// The transport a Via names (`UDP`, `TCP`, `TLS`; anything else is
    /// taken as UDP).
    pub fn from_via_name(name: &str) -> TransportKind {
        if name.eq_ignore_ascii_case("TCP") {
            TransportKind::Tcp
        } else if name.eq_ignore_ascii_case("TLS") {
            TransportKind::Tls
        } else {
            TransportKind::Udp
        }
    }
}

/// The far end of a message: transport plus address (for TCP, the
/// connection's peer address identifies the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: TransportKind,
    pub addr: SocketAddr,
}

/// A message to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: Peer,
    pub data: Bytes,
}

/// Transaction identity (§17.1.3, §17.2.3). ACK maps to INVITE so it
/// matches the INVITE server transaction it acknowledges.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxKey {
    pub branch: String,
    pub method: Method,
    pub sent_by: String,
    pub server: bool,
}

/// Timers of §17 (A–K) plus L and M of RFC 6026.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    A,
    B,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
    K,
    L,
    M,
}

/// What the transaction layer tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent {
    /// A new request created a server transaction; answer via `respond`.
    Request {
        /// Shared with the transaction table (a clone would copy two strings).
        key: Arc<TxKey>,
        /// Shared with the transaction, which keeps it until answered.
        request: Arc<SipMessage>,
        from: Peer,
    },
    /// An ACK that matched no transaction (the ACK for a 2xx, §17.2.3).
    StrayAck {
        request: SipMessage,
        from: Peer,
    },
    /// A response for a client transaction.
    Response {
        key: TxKey,
        response: SipMessage,
    },
    /// A response that matched no client transaction (e.g. a retransmitted
    /// 2xx after the INVITE transaction ended), for the dialog layer.
    StrayResponse {
        response: SipMessage,
        from: Peer,
    },
    /// Timer B/F (no response) or H (no ACK) fired.
    Timeout {
        key: TxKey,
    },
    Terminated {
        key: TxKey,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("no such transaction")]
    NoTransaction,
    #[error("message lacks a usable Via, CSeq or Call-ID")]
    Unroutable,
}

/// What a transaction state machine asks of the layer.
#[derive(Debug)]
pub(crate) enum Action {
    Send(Bytes),
    Timer(TimerKind, Duration),
    /// Pass a received response to the TU.
    DeliverResponse(SipMessage),
    Timeout,
    Terminate,
}

/// The four machines of §17; names follow the RFC.
#[allow(clippy::enum_variant_names)]
pub(crate) enum Machine {
    ServerInvite(server_invite::ServerInvite),
    ServerNonInvite(server_non_invite::ServerNonInvite),
    /// Boxed: it holds the INVITE, and an unboxed variant would size every
    /// entry of the table for it (a completed REGISTER needs ~80 bytes).
    ClientInvite(Box<client_invite::ClientInvite>),
    ClientNonInvite(client_non_invite::ClientNonInvite),
}

struct Entry {
    machine: Machine,
    peer: Peer,
    serial: u64,
    /// The request that created a server transaction (for CANCEL matching
    /// and relayed answers), shared with the TU's event rather than copied.
    request: Option<Arc<SipMessage>>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct TimerEntry {
    at: Instant,
    serial: u64,
    kind: TimerKind,
    key: TxKeyOrd,
}

/// TxKey wrapper with a total order for the heap (ordering is irrelevant
/// beyond (at, serial), which are unique). The key is shared with the
/// table's, so a timer costs no copy of the key's strings.
#[derive(PartialEq, Eq)]
struct TxKeyOrd(Arc<TxKey>);
impl PartialOrd for TxKeyOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TxKeyOrd {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

pub struct TransactionLayer {
    timers: TimerConfig,
    /// Boxed: the table is sized for the peak of a burst, and a slot holding
    /// a pointer instead of a ~450-byte entry keeps that peak small.
    txs: HashMap<Arc<TxKey>, Box<Entry>>,
    /// Answered non-INVITE server transactions over UDP, until Timer J.
    completed: completed::CompletedNonInvite,
    heap: BinaryHeap<Reverse<TimerEntry>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxEvent>,
    next_serial: u64,
}

impl TransactionLayer {
    pub fn new(timers: TimerConfig) -> TransactionLayer {
        TransactionLayer {
            timers,
            txs: HashMap::new(),
            completed: completed::CompletedNonInvite::new(timers.t1 * 64),
            heap: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_serial: 0,
        }
    }

    pub fn set_timers(&mut self, timers: TimerConfig) {
        self.timers = timers;
        self.completed.set_lifetime(timers.t1 * 64);
    }

    pub fn len(&self) -> usize {
        self.txs.len() + self.completed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Server transaction key of a request (§17.2.3).
    pub fn server_key(req: &SipMessage) -> Option<TxKey> {
        Self::server_key_of(req, &Via::parse(req.top_via()?).ok()?)
    }

    /// [`Self::server_key`], given the request's top Via parsed.
    fn server_key_of(req: &SipMessage, via: &Via) -> Option<TxKey> {
        let method = match req.method()? {
            Method::Ack => Method::Invite,
            m => m.clone(),
        };
        let branch = match via.branch() {
            Some(b) if b.starts_with("z9hG4bK") => b.to_string(),
            // RFC 2543 peers: fall back to dialog identifiers.
            _ => {
                let cseq = CSeq::parse(req.header(&HeaderName::CSeq)?)?;
                format!(
                    "2543:{}:{}:{}",
                    req.call_id()?,
                    cseq.seq,
                    req.header(&HeaderName::From)?
                )
            }
        };
        Some(TxKey {
            branch,
            method,
            sent_by: {
                let mut s = via.sent_by();
                s.make_ascii_lowercase();
                s
            },
            server: true,
        })
    }

    fn client_key(resp: &SipMessage) -> Option<TxKey> {
        let via = Via::parse(resp.top_via()?).ok()?;
        let cseq = CSeq::parse(resp.header(&HeaderName::CSeq)?)?;
        let method = match cseq.method {
            Method::Ack => Method::Invite,
            m => m,
        };
        Some(TxKey {
            branch: via.branch()?.to_string(),
            method,
            sent_by: String::new(),
            server: false,
        })
    }

    /// A request arrived from the transport.
    pub fn handle_request(&mut self, req: SipMessage, from: Peer, now: Instant) -> Result<(), TxError> {
        // The top Via, parsed once for the key and the reply address.
        let via = req
            .top_via()
            .and_then(|v| Via::parse(v).ok())
            .ok_or(TxError::Unroutable)?;
        let key = Self::server_key_of(&req, &via).ok_or(TxError::Unroutable)?;
        let reply_to = reply_peer(&via, from);
        let is_ack = req.method() == Some(&Method::Ack);
        if let Some(entry) = self.txs.get_mut(&key) {
            let actions = match &mut entry.machine {
                Machine::ServerInvite(m) if is_ack => m.on_ack(),
                Machine::ServerInvite(m) => m.on_retransmit(),
                Machine::ServerNonInvite(m) => m.on_retransmit(),
                _ => Vec::new(),
            };
            self.apply(&key, actions, now);
            return Ok(());
        }
        if is_ack {
            self.events.push_back(TxEvent::StrayAck { request: req, from });
            return Ok(());
        }
        if let Some((to, data)) = self.completed.lookup(&key) {
            self.transmits.push_back(Transmit { to, data });
            return Ok(());
        }
        let reliable = from.transport.is_reliable();
        let (machine, actions) = if req.method() == Some(&Method::Invite) {
            let trying = response_to(&req, 100, None, "").to_bytes();
            let (m, a) = server_invite::ServerInvite::new(self.timers, reliable, trying);
            (Machine::ServerInvite(m), a)
        } else {
            (
                Machine::ServerNonInvite(server_non_invite::ServerNonInvite::new(self.timers, reliable)),
                Vec::new(),
            )
        };
        let req = Arc::new(req);
        let key = Arc::new(key);
        self.insert(key.clone(), machine, reply_to, Some(req.clone()));
        self.events.push_back(TxEvent::Request {
            key: key.clone(),
            request: req,
            from,
        });
        self.apply(&key, actions, now);
        Ok(())
    }

    /// A response arrived from the transport.
    pub fn handle_response(&mut self, resp: SipMessage, from: Peer, now: Instant) {
        let Some(key) = Self::client_key(&resp) else {
            return;
        };
        let Some(entry) = self.txs.get_mut(&key) else {
            self.events.push_back(TxEvent::StrayResponse { response: resp, from });
            return;
        };
        let actions = match &mut entry.machine {
            Machine::ClientInvite(m) => m.on_response(resp),
            Machine::ClientNonInvite(m) => m.on_response(resp),
            _ => Vec::new(),
        };
        self.apply(&key, actions, now);
    }

    /// The TU answers a server transaction.
    pub fn respond(&mut self, key: &TxKey, resp: SipMessage, now: Instant) -> Result<(), TxError> {
        let entry = self.txs.get_mut(key).ok_or(TxError::NoTransaction)?;
        let status = resp.status().unwrap_or(500);
        if status >= 200 {
            // Answered: the request is no longer needed, and a completed
            // transaction lives on for 32 s (Timer J) to absorb
            // retransmissions; keep only what resending the answer needs.
            entry.request = None;
        }
        let data = resp.to_bytes();
        if status >= 200 && matches!(entry.machine, Machine::ServerNonInvite(_)) && !entry.peer.transport.is_reliable()
        {
            // Completed (§17.2.2): only the answer is kept, until Timer J.
            let peer = entry.peer;
            self.txs.remove(key);
            self.completed.insert(key, peer, &data, now);
            self.transmits.push_back(Transmit { to: peer, data });
            return Ok(());
        }
        let actions = match &mut entry.machine {
            Machine::ServerInvite(m) => m.send_response(status, data),
            Machine::ServerNonInvite(m) => m.send_response(status, data),
            _ => return Err(TxError::NoTransaction),
        };
        self.apply(key, actions, now);
        Ok(())
    }

    /// Answers a non-INVITE server transaction and forgets it at once, as a
    /// stateless UAS does (RFC 3261 §8.2.7, whose main use is challenging
    /// unauthenticated requests): a retransmission is answered anew. Spares
    /// a burst of registrations half its completed transactions, kept 32 s
    /// each. An INVITE transaction is answered statefully (its ACK).
    pub fn respond_statelessly(&mut self, key: &TxKey, resp: SipMessage, now: Instant) -> Result<(), TxError> {
        match self.txs.get(key).map(|e| &e.machine) {
            Some(Machine::ServerNonInvite(_)) => {}
            Some(_) => return self.respond(key, resp, now),
            None => return Err(TxError::NoTransaction),
        }
        if let Some(entry) = self.txs.remove(key) {
            self.transmits.push_back(Transmit {
                to: entry.peer,
                data: resp.to_bytes(),
            });
        }
        Ok(())
    }

    /// The request that created a server transaction, until it is answered.
    pub fn server_request(&self, key: &TxKey) -> Option<&SipMessage> {
        self.txs.get(key).and_then(|e| e.request.as_deref())
    }

    /// The INVITE server transaction a CANCEL refers to (§9.2).
    pub fn invite_for_cancel(&self, cancel: &SipMessage) -> Option<TxKey> {
        let mut key = Self::server_key(cancel)?;
        key.method = Method::Invite;
        self.txs.contains_key(&key).then_some(key)
    }

    /// Starts a client transaction sending `req` to `to`.
    pub fn send_request(&mut self, req: SipMessage, to: Peer, now: Instant) -> Result<TxKey, TxError> {
        let via = Via::parse(req.top_via().ok_or(TxError::Unroutable)?).map_err(|_| TxError::Unroutable)?;
        let method = req.method().cloned().ok_or(TxError::Unroutable)?;
        let key = TxKey {
            branch: via.branch().ok_or(TxError::Unroutable)?.to_string(),
            method: method.clone(),
            sent_by: String::new(),
            server: false,
        };
        let reliable = to.transport.is_reliable();
        let (machine, actions) = if method == Method::Invite {
            let (m, a) = client_invite::ClientInvite::new(self.timers, reliable, req);
            (Machine::ClientInvite(Box::new(m)), a)
        } else {
            let (m, a) = client_non_invite::ClientNonInvite::new(self.timers, reliable, req.to_bytes());
            (Machine::ClientNonInvite(m), a)
        };
        self.insert(Arc::new(key.clone()), machine, to, None);
        self.apply(&key, actions, now);
        Ok(key)
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse(top)) = self.heap.peek() {
            if top.at > now {
                break;
            }
            let Reverse(t) = self.heap.pop().expect("peeked");
            let key = t.key.0;
            let Some(entry) = self.txs.get_mut(&*key) else {
                continue;
            };
            if entry.serial != t.serial {
                continue;
            }
            let actions = match &mut entry.machine {
                Machine::ServerInvite(m) => m.on_timer(t.kind),
                Machine::ServerNonInvite(m) => m.on_timer(t.kind),
                Machine::ClientInvite(m) => m.on_timer(t.kind),
                Machine::ClientNonInvite(m) => m.on_timer(t.kind),
            };
            self.apply(&key, actions, now);
        }
        self.completed.expire(now);
        self.release_spare_capacity();
    }

    /// A burst (say 20,000 registrations in a few seconds) grows the table
    /// and the timer heap, and they never shrink by themselves: every
    /// binding would carry that peak for ever. Give memory back once they
    /// are mostly empty.
    fn release_spare_capacity(&mut self) {
        const SLACK: usize = 1024;
        if self.txs.capacity() > 4 * self.txs.len() + SLACK {
            self.txs.shrink_to(2 * self.txs.len() + SLACK / 4);
        }
        self.completed.shrink(SLACK);
        if self.heap.capacity() > 4 * self.heap.len() + SLACK {
            self.heap.shrink_to(2 * self.heap.len() + SLACK / 4);
        }
        if self.transmits.capacity() > SLACK || self.events.capacity() > SLACK {
            self.transmits.shrink_to(SLACK / 4);
            self.events.shrink_to(SLACK / 4);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.heap.peek().map(|Reverse(t)| t.at);
        match (timer, self.completed.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }

    fn insert(&mut self, key: Arc<TxKey>, machine: Machine, peer: Peer, request: Option<Arc<SipMessage>>) {
        self.next_serial += 1;
        self.txs.insert(
            key,
            Box::new(Entry {
                machine,
                peer,
                serial: self.next_serial,
                request,
            }),
        );
    }

    fn apply(&mut self, key: &TxKey, actions: Vec<Action>, now: Instant) {
        if actions.is_empty() {
            return; // spares a table lookup, as for every new non-INVITE request
        }
        let Some((shared_key, entry)) = self.txs.get_key_value(key) else {
            return;
        };
        let (peer, serial, shared_key) = (entry.peer, entry.serial, shared_key.clone());
        for action in actions {
            match action {
                Action::Send(data) => self.transmits.push_back(Transmit { to: peer, data }),
                Action::Timer(kind, after) => self.heap.push(Reverse(TimerEntry {
                    at: now + after,
                    serial,
                    kind,
                    key: TxKeyOrd(shared_key.clone()),
                })),
                Action::DeliverResponse(response) => self.events.push_back(TxEvent::Response {
                    key: key.clone(),
                    response,
                }),
                Action::Timeout => self.events.push_back(TxEvent::Timeout { key: key.clone() }),
                Action::Terminate => {
                    self.txs.remove(key);
                    self.events.push_back(TxEvent::Terminated { key: key.clone() });
                }
            }
        }
    }
}

/// Where responses for a server transaction go (§18.2.2): over the same
/// connection for TCP, by Via `received`/`rport` for UDP.
fn reply_peer(top_via: &Via, from: Peer) -> Peer {
    if from.transport.is_reliable() {
        return from;
    }
    Peer {
        transport: from.transport,
        addr: destination_of(top_via).unwrap_or(from.addr),
    }
}
