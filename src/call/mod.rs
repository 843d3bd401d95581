//! The B2BUA (RFC 3261 §6 "back-to-back user agent"): each call has a
//! caller leg (A, we are its UAS) and callee legs (B forks, we are their
//! UAC), each with its own Call-ID, tags and CSeq, and an RTP relay
//! session between them.
//!
//! [`CallManager`] is driven by the core task: requests, responses,
//! transaction events, dialplan actions and timers go in with `now`; what
//! to send and store comes out as [`CallEffect`]s. It holds no socket of
//! its own except the relay's, which it allocates and frees.

mod actions;
mod callee;
mod ending;
pub use callee::DialRequest;
pub mod dialog;
mod in_dialog;
#[cfg(test)]
mod tests;

use crate::cdr::{unanswered_disposition, unix_ms, CallRecord};
use crate::config::{Account, CallSettings, User};
use crate::dialplan::{CallInfo, Reply};
use crate::media::sdp::{self, MediaInfo};
use crate::media::{MediaSession, MediaStats, RelayPool};
use crate::sip::addr::NameAddr;
use crate::sip::response::{random_token, response_to};
use crate::sip::transaction::{Peer, TimerConfig, TxKey};
use crate::sip::uri::SipUri;
use crate::sip::via_rewrite::response_destination;
use crate::sip::{HeaderName, Method, SipError, SipMessage};
use dialog::Dialog;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub type CallRef = u64;

/// What the call manager asks the core to do. Effects live only until the
/// core drains them, so their size does not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum CallEffect {
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
    /// Store the record durably, then answer (the caller's final response
    /// or the 200 to a BYE), so an acknowledged end is never lost.
    RespondAfterWrite {
        key: TxKey,
        resp: SipMessage,
        record: CallRecord,
    },
    /// Answer the server transaction `key` with `status`, built from its
    /// request by the core (relayed re-INVITE/UPDATE results).
    RespondTo {
        key: TxKey,
        status: u16,
        reason: String,
        contact: Option<String>,
        body: bytes::Bytes,
    },
    /// Send outside any transaction (ACK for a 2xx, 2xx retransmissions).
    Stateless {
        msg: SipMessage,
        to: Peer,
    },
    StartDialplan {
        call: CallRef,
        account: String,
        info: CallInfo,
    },
    WriteRecord(CallRecord),
}

/// Fixed settings the manager needs.
#[derive(Debug, Clone)]
pub struct CallConfig {
    pub calls: CallSettings,
    pub timers: TimerConfig,
    pub user_agent: String,
    pub listen: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AState {
    Early,
    Answered { acked: bool },
}

struct ALeg {
    key: TxKey,
    invite: SipMessage,
    offer: MediaInfo,
    /// Dialog for requests we send to the caller.
    dialog: Dialog,
    /// Where responses to the caller go.
    reply_peer: Peer,
    state: AState,
    /// Our 2xx, retransmitted until the ACK comes (§13.3.1.4).
    answer: Option<SipMessage>,
    retransmit: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ForkState {
    Trying,
    Ringing,
    Answered,
    Failed(u16),
    Cancelled,
}

struct Fork {
    dialog: Dialog,
    invite: SipMessage,
    state: ForkState,
}

struct Call {
    a: ALeg,
    forks: Vec<Fork>,
    winner: Option<usize>,
    media: Option<MediaSession>,
    dial_reply: Option<oneshot::Sender<Reply>>,
    /// Increments with each dial, so a stale ring timer is ignored.
    dial_seq: u64,
    account: String,
    caller: String,
    caller_number: String,
    caller_name: Option<String>,
    caller_may_call_out: bool,
    callee: String,
    external: bool,
    start_ms: u64,
    answer_ms: Option<u64>,
    /// Best failure of the last dial: becomes the caller's final status.
    last_failure: Option<(u16, Option<String>)>,
}

#[derive(Debug, Clone)]
enum ClientPurpose {
    Fork {
        call: CallRef,
        fork: usize,
    },
    /// A re-INVITE or UPDATE we relayed; answer `origin` when it completes.
    Relay {
        call: CallRef,
        origin: TxKey,
        to_caller: bool,
    },
    /// BYE or CANCEL: nothing to do with the answer.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CallTimer {
    Ring(u64),
    Retransmit2xx,
    AckTimeout,
}

/// A live call as shown by `ctl calls`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct CallView {
    pub call_id: String,
    pub caller: String,
    pub callee: String,
    pub state: String,
    pub duration_s: u64,
    pub media: MediaStats,
}

/// Why and how a call ends.
struct Ending {
    side: &'static str,
    /// Final status for an unanswered caller (with reason phrase).
    code: u16,
    reason: Option<String>,
    /// A request that ended the call and must be answered 200 once the
    /// record is stored (a BYE).
    answer_after_write: Option<(TxKey, SipMessage)>,
}

pub struct CallManager {
    config: CallConfig,
    pool: RelayPool,
    calls: HashMap<CallRef, Call>,
    by_call_id: HashMap<String, (CallRef, Option<usize>)>,
    client_tx: HashMap<TxKey, ClientPurpose>,
    timers: BinaryHeap<Reverse<(Instant, CallRef, CallTimer)>>,
    next_ref: CallRef,
    out: VecDeque<CallEffect>,
}

impl CallManager {
    pub fn new(config: CallConfig, pool: RelayPool) -> CallManager {
        CallManager {
            config,
            pool,
            calls: HashMap::new(),
            by_call_id: HashMap::new(),
            client_tx: HashMap::new(),
            timers: BinaryHeap::new(),
            next_ref: 0,
            out: VecDeque::new(),
        }
    }

    pub fn reconfigure(&mut self, config: CallConfig) {
        self.config = config;
    }

    pub fn poll_effect(&mut self) -> Option<CallEffect> {
        self.out.pop_front()
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Sizes of the internal tables, for leak checks (`ctl status`).
    pub fn table_sizes(&self) -> (usize, usize, usize) {
        (self.by_call_id.len(), self.client_tx.len(), self.timers.len())
    }

    /// What `ext` of `account` is doing on calls, as RFC 4235 names it:
    /// "confirmed" when talking, "early" when ringing or dialling.
    pub fn activity(&self, account: &str, ext: &str) -> Option<&'static str> {
        let mut best = None;
        for c in self.calls.values().filter(|c| c.account == account) {
            if c.caller != ext && c.callee != ext {
                continue;
            }
            if c.winner.is_some() || matches!(c.a.state, AState::Answered { .. }) {
                return Some("confirmed");
            }
            best = Some("early");
        }
        best
    }

    /// The account domain of a live call.
    pub fn account_of(&self, id: CallRef) -> Option<String> {
        self.calls.get(&id).map(|c| c.account.clone())
    }

    pub fn relay_ports_in_use(&self) -> usize {
        self.pool.ports_in_use()
    }

    /// Whether a Call-ID belongs to one of our legs (in-dialog request or
    /// a loop back to ourselves).
    pub fn knows_call_id(&self, call_id: &str) -> bool {
        self.by_call_id.contains_key(call_id)
    }

    fn via_addr(&self, peer: Peer) -> SocketAddr {
        dialog::local_addr_for(&self.config.listen, peer)
    }

    fn timer(&mut self, at: Instant, call: CallRef, t: CallTimer) {
        self.timers.push(Reverse((at, call, t)));
    }

    /// A new, authenticated INVITE from `caller`: creates the call, its
    /// relay session, and asks for the dialplan to run.
    pub fn start_call(
        &mut self,
        key: TxKey,
        invite: SipMessage,
        from: Peer,
        account: &Account,
        caller: &User,
    ) -> Result<CallRef, SipError> {
        let offer = sdp::media_info(&invite.body)
            .map_err(|e| SipError::with_reason(488, format!("Not Acceptable Here ({e})")))?;
        let media = self
            .pool
            .allocate()
            .map_err(|e| SipError::with_reason(503, format!("Service Unavailable ({e})")))?;
        media.set_remote(crate::media::Side::A, offer.rtp);
        let id = self.next_ref;
        self.next_ref += 1;
        let call_id = invite.call_id().unwrap_or_default().to_string();
        let to_user = invite
            .request_uri()
            .and_then(|u| SipUri::parse(u).ok())
            .and_then(|u| u.user_unescaped().map(|u| u.into_owned()))
            .unwrap_or_default();
        let from_addr = NameAddr::parse(invite.header(&HeaderName::From).unwrap_or("")).ok();
        let display = from_addr
            .as_ref()
            .and_then(|f| f.display)
            .unwrap_or("")
            .trim_matches('"')
            .to_string();
        let reply_peer = from_peer(&invite, from);
        let via_addr = self.via_addr(reply_peer);
        let our_tag = random_token();
        let dialog = Dialog {
            call_id: call_id.clone(),
            local: format!("{};tag={our_tag}", invite.header(&HeaderName::To).unwrap_or("")),
            remote: invite.header(&HeaderName::From).unwrap_or("").to_string(),
            remote_target: dialog::contact_uri(&invite)
                .unwrap_or_else(|| format!("sip:{}", dialog::host_port(reply_peer.addr))),
            peer: reply_peer,
            local_cseq: 0,
            via_addr,
        };
        let info = CallInfo {
            id: call_id.clone(),
            from: caller.extension.clone(),
            to: to_user.clone(),
            display: if display.is_empty() {
                caller.display_name.clone()
            } else {
                display
            },
            domain: account.domain.clone(),
        };
        self.calls.insert(
            id,
            Call {
                a: ALeg {
                    key,
                    invite,
                    offer,
                    dialog,
                    reply_peer,
                    state: AState::Early,
                    answer: None,
                    retransmit: self.config.timers.t1,
                },
                forks: Vec::new(),
                winner: None,
                media: Some(media),
                dial_reply: None,
                dial_seq: 0,
                account: account.domain.clone(),
                caller: caller.extension.clone(),
                caller_number: caller.extension.clone(),
                caller_name: Some(caller.display_name.clone()),
                caller_may_call_out: account.outbound_calls && caller.outbound,
                callee: to_user,
                external: false,
                start_ms: unix_ms(),
                answer_ms: None,
                last_failure: None,
            },
        );
        self.by_call_id.insert(call_id, (id, None));
        self.out.push_back(CallEffect::StartDialplan {
            call: id,
            account: account.domain.clone(),
            info,
        });
        Ok(id)
    }

    /// Answers the caller with a 2xx carrying `sdp` (§13.3.1.4: we
    /// retransmit it until the ACK).
    fn answer_caller(&mut self, id: CallRef, sdp_body: Vec<u8>, now: Instant) {
        let t1 = self.config.timers.t1;
        let Some(call) = self.calls.get_mut(&id) else { return };
        if call.a.state != AState::Early {
            return;
        }
        let tag = tag_of(&call.a.dialog.local);
        let mut resp = response_to(&call.a.invite, 200, None, &tag);
        resp.push_header(
            HeaderName::Contact,
            dialog::contact(call.a.reply_peer, call.a.dialog.via_addr),
        );
        resp.push_header(HeaderName::ContentType, "application/sdp");
        resp.push_header(HeaderName::Allow, "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO");
        resp.body = sdp_body.into();
        call.a.state = AState::Answered { acked: false };
        call.a.answer = Some(resp.clone());
        call.answer_ms = Some(unix_ms());
        self.out.push_back(CallEffect::Respond {
            key: call.a.key.clone(),
            resp,
        });
        self.timer(now + t1, id, CallTimer::Retransmit2xx);
        self.timer(now + t1 * 64, id, CallTimer::AckTimeout);
    }

    fn send_request(&mut self, req: SipMessage, to: Peer, purpose: ClientPurpose) {
        if let Some(key) = client_key(&req) {
            self.client_tx.insert(key, purpose);
        }
        self.out.push_back(CallEffect::Request { req, to });
    }

    /// A client transaction ended; forget what it was for.
    pub fn on_tx_terminated(&mut self, key: &TxKey) {
        self.client_tx.remove(key);
    }
}

fn system_ending(code: u16, reason: &str) -> Ending {
    Ending {
        side: "system",
        code,
        reason: Some(reason.to_string()),
        answer_after_write: None,
    }
}

/// Where responses and requests to the caller go: the connection for TCP,
/// Via `received`/`rport` for UDP (RFC 3581 symmetric routing).
fn from_peer(invite: &SipMessage, from: Peer) -> Peer {
    if from.transport.is_reliable() {
        return from;
    }
    let addr = invite.top_via().and_then(response_destination).unwrap_or(from.addr);
    Peer {
        transport: from.transport,
        addr,
    }
}

fn tag_of(header_value: &str) -> String {
    NameAddr::parse(header_value)
        .ok()
        .and_then(|a| a.tag().map(str::to_string))
        .unwrap_or_default()
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
