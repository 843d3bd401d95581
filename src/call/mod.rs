//! The call engine: a B2BUA (RFC 3261 §6 "back-to-back user agent") built
//! from legs and bridges.
//!
//! - A [`Leg`](leg::Leg) is one dialog with one party, inbound (we are its
//!   UAS) or outbound (we are its UAC), with its own Call-ID, tags, CSeq
//!   and media endpoint. It can stand alone (parked), be bridged, be moved.
//! - A [`Bridge`](bridge::Bridge) is a set of legs whose media is joined,
//!   each with a [`Role`](bridge::Role).
//! - A conversation ([`CallRef`]) ties the legs of one customer interaction
//!   together: the leg whose INVITE started it, the legs its dialplan
//!   originated, and its call record.
//!
//! The engine is sans-IO: requests, responses, transaction events,
//! dialplan actions and timers go in with the time ([`Now`](crate::clock::Now)); what to
//! send, store, reply to the dialplan and announce comes out of
//! [`CallEngine::poll_output`]. Media goes through [`MediaControl`], which
//! the relay implements with sockets and the tests with a recording fake.

mod actions;
pub mod bridge;
pub mod caller_id;
#[cfg(test)]
mod click_tests;
mod click_to_call;
mod consult;
mod ending;
mod hunt;
mod in_dialog;
mod inbound;
pub mod leg;
#[cfg(test)]
mod model_tests;
mod monitor;
mod originate;
mod queue_legs;
#[cfg(test)]
mod queue_tests;
#[cfg(test)]
mod tests;
mod transfer;
mod trunk_legs;
#[cfg(test)]
mod trunk_tests;

pub use click_to_call::ClickToCall;
pub use inbound::Caller;
pub use monitor::MonitorMode;
pub use originate::{user_contacts, Contact, DialRequest};
pub use transfer::DtmfCodes;

use crate::cdr::CallRecord;
use crate::config::CallSettings;
use crate::dialplan::{CallInfo, Reply};
use crate::events::{DomainEvent, LegPhase};
use crate::media::{DirectionStats, MediaControl};
use crate::sip::transaction::{Peer, TimerConfig, TxKey};
use crate::sip::SipMessage;
use bridge::{Bridge, BridgeId};
use foldhash::{HashMap, HashMapExt};
use leg::{Leg, LegId};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// A conversation's id (the dialplan's handle on its call).
pub type CallRef = u64;

/// What the engine asks its driver to do. Outputs live only until the
/// driver drains them, so their size does not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Output {
    /// Start a client transaction.
    Request {
        req: SipMessage,
        to: Peer,
    },
    /// Answer a server transaction.
    Respond {
        key: TxKey,
        resp: SipMessage,
    },
    /// Send outside any transaction (ACK for a 2xx, 2xx retransmissions).
    Stateless {
        msg: SipMessage,
        to: Peer,
    },
    /// Store the record durably, then send the answers (the caller's final
    /// response, the 200 to a BYE), so an acknowledged end is never lost.
    WriteRecord {
        record: CallRecord,
        then: Vec<(TxKey, SipMessage)>,
    },
    /// Store these (marks of conversations in progress); nothing waits.
    Persist(Vec<crate::store::StoreOp>),
    StartDialplan {
        call: CallRef,
        account: String,
        info: CallInfo,
    },
    /// The answer to the dialplan's pending action on `call`.
    DialplanReply {
        call: CallRef,
        reply: Reply,
    },
    Event(DomainEvent),
    /// An agent asked to consult `number` (attended transfer by DTMF): the
    /// driver answers with [`CallEngine::consult`].
    Consult {
        call: CallRef,
        account: String,
        number: String,
    },
    /// A queue offer to `agent` (an extension of `account`) is over.
    OfferEnded {
        call: CallRef,
        account: String,
        agent: String,
        outcome: crate::events::OfferOutcome,
    },
}

/// Fixed settings the engine needs.
#[derive(Debug, Clone)]
pub struct CallConfig {
    pub calls: CallSettings,
    pub timers: TimerConfig,
    pub user_agent: String,
    pub listen: crate::sip::dialog::LocalAddrs,
    /// Users (`ext@domain`) who stay on the calls they transfer blind, as
    /// listeners.
    pub monitor_after_transfer: foldhash::HashSet<String>,
}

/// What the dialplan waits for on a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    /// `dial`: returns when it fails or, if answered, when the call ends.
    Dial,
    /// `playback`: returns when the prompt has been sent.
    Playback,
    /// `queue`: returns when the caller leaves the queue, or when the call
    /// an agent answered ends.
    Queue,
    /// Not the dialplan: a short announcement, then the call ends (feature
    /// codes).
    Announcement,
}

/// One customer interaction and the dialplan run that routes it.
struct Conversation {
    account: String,
    /// The leg whose INVITE started the conversation.
    origin: LegId,
    /// Live legs, oldest first.
    legs: Vec<LegId>,
    /// Legs of the current `dial`, still ringing.
    ringing: Vec<LegId>,
    /// The leg that answered a `dial`.
    connected: Option<LegId>,
    /// Increments with each dial, so a stale ring timer is ignored.
    dial_seq: u64,
    owed: Option<Owed>,
    caller: String,
    caller_number: String,
    caller_name: Option<String>,
    caller_may_call_out: bool,
    /// Came in through a trunk: it goes out through one only where the
    /// dialplan names the trunk (no toll fraud by loops).
    from_trunk: bool,
    /// The caller ID its external calls present.
    presentation: caller_id::Presentation,
    callee: String,
    external: bool,
    /// For an external dial: the trunks not tried yet, in order, and the
    /// number they are asked for.
    trunks_left: std::collections::VecDeque<crate::config::Trunk>,
    trunk_number: String,
    start_ms: u64,
    answer_ms: Option<u64>,
    /// Best failure of the last dial: becomes the caller's final status.
    last_failure: Option<(u16, Option<String>)>,
    /// Records of the legs that have ended.
    ended_legs: Vec<crate::cdr::LegRecord>,
    /// Answers to send once the record is stored.
    after_write: Vec<(TxKey, SipMessage)>,
    /// The queue the caller waits in (or was answered from).
    queue: Option<queue_legs::QueueWait>,
    /// Queues the caller has left, for the record.
    queue_records: Vec<crate::cdr::QueueRecord>,
    /// A ring group ringing its members in turn: the members not rung
    /// yet, how long each rings, and when the group gives up.
    hunt: VecDeque<Vec<Contact>>,
    hunt_step: std::time::Duration,
    hunt_until: Option<Instant>,
    /// Started by a blind transfer: by whom, for the record.
    transfer: Option<crate::cdr::TransferRecord>,
    /// Passed on to the transfer's target (RFC 3892).
    referred_by: Option<String>,
    /// Where a transfer sent this conversation's call.
    transferred_to: Option<String>,
    /// A supervisor's call monitoring an agent.
    monitor: Option<crate::cdr::MonitorRecord>,
    /// Monitors of a transferred call, joining whoever takes it.
    follow_monitors: Vec<(LegId, bridge::Role)>,
    /// An attended transfer being prepared by DTMF.
    consult: Option<consult::Consult>,
    /// Outbound legs offer this leg's SDP instead of the origin's.
    offer_from: Option<LegId>,
    /// Click-to-call: the number to call once the user's phone answers.
    click: Option<String>,
    /// Who ended it, and the caller's final status when unanswered.
    hangup_side: &'static str,
    final_code: u16,
}

impl Conversation {
    /// A conversation of `account` started by leg `origin` of `caller`.
    fn new(account: String, origin: LegId, caller: &str, now: crate::clock::Now) -> Conversation {
        Conversation {
            account,
            origin,
            legs: vec![origin],
            ringing: Vec::new(),
            connected: None,
            dial_seq: 0,
            owed: None,
            caller: caller.to_string(),
            caller_number: caller.to_string(),
            caller_name: None,
            caller_may_call_out: false,
            from_trunk: false,
            presentation: Default::default(),
            callee: String::new(),
            external: false,
            start_ms: now.unix_ms,
            answer_ms: None,
            last_failure: None,
            ended_legs: Vec::new(),
            trunks_left: Default::default(),
            trunk_number: String::new(),
            after_write: Vec::new(),
            queue: None,
            queue_records: Vec::new(),
            hunt: Default::default(),
            hunt_step: std::time::Duration::ZERO,
            hunt_until: None,
            transfer: None,
            referred_by: None,
            transferred_to: None,
            monitor: None,
            follow_monitors: Vec::new(),
            consult: None,
            offer_from: None,
            click: None,
            hangup_side: "system",
            final_code: 480,
        }
    }
}

#[derive(Debug, Clone)]
enum ClientPurpose {
    /// The INVITE of an outbound leg.
    Originate { leg: LegId },
    /// A re-INVITE or UPDATE relayed between legs (boxed: most client
    /// transactions are INVITEs of new legs).
    Relay(Box<Relayed>),
    /// BYE or CANCEL: nothing to do with the answer.
    Other,
}

/// A re-INVITE or UPDATE relayed from leg `from` to leg `to`; answer
/// `origin` (whose request is `request`) when it completes.
#[derive(Debug, Clone)]
struct Relayed {
    from: LegId,
    to: LegId,
    origin: TxKey,
    request: SipMessage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Ring {
        call: CallRef,
        seq: u64,
    },
    /// Resend our 2xx to the INVITE with this CSeq, if still unacknowledged.
    Retransmit2xx(LegId, u32),
    /// No ACK for the 2xx answering the INVITE with this CSeq.
    AckTimeout(LegId, u32),
    /// A queue offer rang for the agent timeout.
    Offer(LegId),
}

/// A live conversation as shown by `ctl calls`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CallView {
    /// The conversation's number (its call record carries it too).
    #[serde(default)]
    pub conversation: u64,
    pub call_id: String,
    /// The account (domain) of the call.
    #[serde(default)]
    pub account: String,
    pub caller: String,
    pub callee: String,
    pub state: String,
    pub duration_s: u64,
    pub media: MediaStats,
}

/// Relay counters of a two-party call.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq, Default, utoipa::ToSchema)]
pub struct MediaStats {
    /// Received from the caller's leg.
    pub from_caller: DirectionStats,
    /// Received from the connected callee's leg.
    pub from_callee: DirectionStats,
}

pub struct CallEngine {
    config: CallConfig,
    media: Box<dyn MediaControl>,
    legs: HashMap<LegId, Leg>,
    bridges: HashMap<BridgeId, Bridge>,
    calls: HashMap<CallRef, Conversation>,
    /// Our tag → leg (our tags are random, one per leg); the Call-ID and
    /// their tag are then checked against the leg.
    by_local_tag: HashMap<String, LegId>,
    /// Call-ID → leg, for loops back to ourselves and stray 2xx.
    by_call_id: HashMap<String, LegId>,
    client_tx: HashMap<TxKey, ClientPurpose>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    next_id: u64,
    out: VecDeque<Output>,
    /// The CRM's contact cards: a phone offered a call sees the caller's.
    contacts: crate::contacts::ContactBook,
    /// RTP packets and sequence gaps of legs that have ended.
    ended_media: (u64, u64),
}

impl CallEngine {
    pub fn new(config: CallConfig, media: Box<dyn MediaControl>) -> CallEngine {
        CallEngine {
            config,
            media,
            legs: HashMap::new(),
            bridges: HashMap::new(),
            calls: HashMap::new(),
            by_local_tag: HashMap::new(),
            by_call_id: HashMap::new(),
            client_tx: HashMap::new(),
            timers: BinaryHeap::new(),
            next_id: 1,
            out: VecDeque::new(),
            contacts: Default::default(),
            ended_media: (0, 0),
        }
    }

    pub fn contacts(&self) -> &crate::contacts::ContactBook {
        &self.contacts
    }

    pub fn contacts_mut(&mut self) -> &mut crate::contacts::ContactBook {
        &mut self.contacts
    }

    pub fn reconfigure(&mut self, config: CallConfig) {
        self.config = config;
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Live conversations.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Sizes of the internal tables, for leak checks (`ctl status`):
    /// legs, client transactions, timers, bridges.
    pub fn table_sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.legs.len(),
            self.client_tx.len(),
            self.timers.len(),
            self.bridges.len(),
        )
    }

    /// What `ext` of `account` is doing on calls, as RFC 4235 names it:
    /// "confirmed" when talking, "early" when ringing or dialling.
    pub fn activity(&self, account: &str, ext: &str) -> Option<&'static str> {
        let mut best = None;
        for leg in self.legs.values() {
            if leg.party != ext || self.calls.get(&leg.conversation).is_none_or(|c| c.account != account) {
                continue;
            }
            match leg.state {
                leg::LegState::Answered { .. } => return Some("confirmed"),
                leg::LegState::Cancelling => {}
                _ => best = Some("early"),
            }
        }
        best
    }

    /// The account domain of the conversation of the leg whose relay
    /// endpoint is `endpoint`.
    pub fn account_of_leg(&self, endpoint: crate::media::EndpointId) -> Option<String> {
        let leg = self.legs.get(&leg::LegId(endpoint.0))?;
        self.account_of(leg.conversation)
    }

    /// The account domain of a live conversation.
    pub fn account_of(&self, id: CallRef) -> Option<String> {
        self.calls.get(&id).map(|c| c.account.clone())
    }

    pub fn relay_ports_in_use(&self) -> usize {
        self.media.ports_in_use()
    }

    /// Whether a Call-ID belongs to one of our legs (a loop back to us).
    pub fn knows_call_id(&self, call_id: &str) -> bool {
        self.by_call_id.contains_key(call_id)
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn via_addr(&self, peer: Peer) -> SocketAddr {
        crate::sip::dialog::local_addr_for(&self.config.listen, peer)
    }

    fn timer(&mut self, at: Instant, t: Timer) {
        self.timers.push(Reverse((at, t)));
    }

    fn reply(&mut self, call: CallRef, reply: Reply) {
        self.out.push_back(Output::DialplanReply { call, reply });
    }

    fn send_request(&mut self, req: SipMessage, to: Peer, purpose: ClientPurpose) {
        if let Some(key) = client_key(&req) {
            self.client_tx.insert(key, purpose);
        }
        self.out.push_back(Output::Request { req, to });
    }

    /// A client transaction ended; forget what it was for. An outbound
    /// leg cancelled while its INVITE was pending goes with it.
    pub fn on_tx_terminated(&mut self, key: &TxKey) {
        if let Some(ClientPurpose::Originate { leg }) = self.client_tx.remove(key) {
            if self
                .legs
                .get(&leg)
                .is_some_and(|l| l.state == leg::LegState::Cancelling)
            {
                self.forget_leg(leg);
            }
        }
    }

    /// Sets a leg's state and announces it.
    fn set_state(&mut self, id: LegId, state: leg::LegState) {
        let Some(l) = self.legs.get_mut(&id) else { return };
        if l.state == state {
            return;
        }
        let phase_before = l.state.phase();
        l.state = state;
        let phase = state.phase();
        if phase != phase_before {
            self.announce(id, phase);
        }
    }

    fn announce(&mut self, id: LegId, phase: crate::events::LegPhase) {
        let Some(l) = self.legs.get(&id) else { return };
        let Some(c) = self.calls.get(&l.conversation) else {
            return;
        };
        let ringing = matches!(phase, LegPhase::Trying | LegPhase::Early);
        // (Not the user's own phones ringing for a click-to-call.)
        let caller = (ringing && l.direction == leg::Direction::Outbound && l.trunk.is_none() && c.click.is_none())
            .then(|| {
                Arc::new(crate::events::Caller {
                    number: c.caller_number.clone(),
                    name: c.caller_name.clone().filter(|n| !n.is_empty()),
                    contact: self.contacts.lookup(&c.account, &c.caller_number),
                })
            });
        self.out.push_back(Output::Event(DomainEvent::LegState {
            account: c.account.clone(),
            party: l.party.clone(),
            leg: id.0,
            conversation: l.conversation,
            phase,
            caller,
        }));
    }

    /// Removes a leg from every table (its media is already closed).
    fn forget_leg(&mut self, id: LegId) {
        let Some(l) = self.legs.remove(&id) else { return };
        self.by_local_tag.remove(&l.local_tag);
        if self.by_call_id.get(&l.dialog.call_id) == Some(&id) {
            self.by_call_id.remove(&l.dialog.call_id);
        }
    }
}

/// Where responses and requests to the caller go: the connection for TCP,
/// Via `received`/`rport` for UDP (RFC 3581 symmetric routing).
fn from_peer(invite: &SipMessage, from: Peer) -> Peer {
    if from.transport.is_reliable() {
        return from;
    }
    let addr = invite
        .top_via()
        .and_then(crate::sip::via_rewrite::response_destination)
        .unwrap_or(from.addr);
    Peer {
        transport: from.transport,
        addr,
    }
}

fn client_key(req: &SipMessage) -> Option<TxKey> {
    let via = crate::sip::addr::Via::parse(req.top_via()?).ok()?;
    Some(TxKey {
        branch: via.branch()?.to_string(),
        method: req.method()?.clone(),
        sent_by: String::new(),
        server: false,
    })
}

fn cseq_num(m: &SipMessage) -> u32 {
    m.header(&crate::sip::HeaderName::CSeq)
        .and_then(crate::sip::addr::CSeq::parse)
        .map_or(1, |c| c.seq)
}
