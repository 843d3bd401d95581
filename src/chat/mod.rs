//! Internal chat over SIP MESSAGE (RFC 3428), sans-IO: who may write
//! where, storing, pushing to every registered device, the offline queue
//! (delivered at least once, in order, one at a time, when a device
//! registers), read marks and per-user mute. The queue holds message ids
//! only: the driver reads each body from the store when its turn comes.

pub mod queries;
pub mod stored;
#[cfg(test)]
mod tests;

use crate::config::{Account, Group, Role, User};
use crate::events::DomainEvent;
use crate::registrar::Registrar;
use crate::sip::dialog::Dialog;
use crate::sip::response::random_token;
use crate::sip::transaction::{Peer, TransportKind};
use crate::sip::{SipError, SipMessage};
use crate::store::StoreOp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatMessage {
    pub id: u64,
    pub ts_ms: u64,
    pub account: String,
    /// Sender extension.
    pub from: String,
    /// Recipient extension, or the group number for group messages.
    pub to: String,
    pub group: bool,
    pub content_type: String,
    pub body: String,
}

impl ChatMessage {
    /// Store-wide conversation id: `p:<a>:<b>` (sorted) or `g:<group>`.
    pub fn conversation(&self) -> String {
        if self.group {
            format!("{}/g:{}", self.account, self.to)
        } else {
            private_conversation(&self.account, &self.from, &self.to)
        }
    }

    /// The conversation as `user` names it: the other party, or the group.
    pub fn peer_for(&self, user: &str) -> String {
        if self.group || self.from == user {
            self.to.clone()
        } else {
            self.from.clone()
        }
    }
}

pub fn private_conversation(account: &str, a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("{account}/p:{x}:{y}")
}

/// RFC 3428 §9 / issue rule: agents write only in their groups,
/// supervisors only in groups that report to them, owners and admins
/// everywhere.
pub fn may_use_group(group: &Group, user: &User) -> bool {
    match user.role {
        Role::Owner | Role::Admin => true,
        Role::Supervisor => group.supervisors.contains(&user.extension),
        Role::Agent => group.members.contains(&user.extension),
    }
}

/// Who receives a group message: members and supervisors, but not the sender.
pub fn group_recipients(group: &Group, sender: &str) -> Vec<String> {
    let mut out: Vec<String> = group
        .members
        .iter()
        .chain(&group.supervisors)
        .filter(|e| *e != sender)
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A MESSAGE to push to one device.
#[derive(Debug)]
pub struct Delivery {
    pub req: SipMessage,
    pub to: Peer,
    pub user_aor: String,
    pub id: u64,
}

/// What `accept` decided for a new message.
#[derive(Debug)]
pub struct Accepted {
    pub message: ChatMessage,
    /// Store the message and its pending deliveries before the 202.
    pub ops: Vec<StoreOp>,
    /// `ext@domain` of the users it waits for (the muted left out).
    pub recipients: Vec<String>,
}

pub struct ChatService {
    next_id: u64,
    /// (recipient aor, message id) not yet taken by any device.
    pending: BTreeSet<(String, u64)>,
    in_flight: HashSet<(String, u64)>,
    muted: HashSet<String>,
    sent: HashMap<String, VecDeque<Instant>>,
    out: VecDeque<Delivery>,
    events: VecDeque<DomainEvent>,
    local: crate::sip::dialog::LocalAddrs,
}

/// How much of a message's text its event carries (the seed's notifications).
const PREVIEW_CHARS: usize = 80;

impl ChatService {
    pub fn new(local: crate::sip::dialog::LocalAddrs) -> ChatService {
        ChatService {
            next_id: 1,
            pending: BTreeSet::new(),
            in_flight: HashSet::new(),
            muted: HashSet::new(),
            sent: HashMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            local,
        }
    }

    /// State loaded from the store at start-up.
    pub fn restore(&mut self, last_id: u64, pending: Vec<(String, u64)>, muted: Vec<String>) {
        self.next_id = last_id + 1;
        self.pending.extend(pending);
        self.muted = muted.into_iter().collect();
    }

    /// The next MESSAGE to push (the chat engine's one kind of output).
    pub fn poll_output(&mut self) -> Option<Delivery> {
        self.out.pop_front()
    }

    pub fn is_muted(&self, aor: &str) -> bool {
        self.muted.contains(aor)
    }

    pub fn set_muted(&mut self, aor: &str, muted: bool) {
        if muted {
            self.muted.insert(aor.to_string());
        } else {
            self.muted.remove(aor);
        }
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Messages waiting for `aor`'s devices.
    fn waiting_for(&self, aor: &str) -> usize {
        self.pending
            .range((aor.to_string(), 0)..=(aor.to_string(), u64::MAX))
            .count()
    }

    /// Checks and stores a MESSAGE from an authenticated `sender`.
    pub fn accept(
        &mut self,
        req: &SipMessage,
        account: &Account,
        sender: &User,
        to: &str,
        limits: crate::config::ChatSettings,
        now: crate::clock::Now,
    ) -> Result<Accepted, SipError> {
        let ctype = req
            .header(&crate::sip::HeaderName::ContentType)
            .unwrap_or("text/plain")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if ctype != "text/plain" {
            return Err(SipError::new(415).header(crate::sip::HeaderName::Accept, "text/plain"));
        }
        let body =
            String::from_utf8(req.body.to_vec()).map_err(|_| SipError::with_reason(400, "Message is not UTF-8"))?;
        self.accept_text(account, sender, to, body, limits, now)
    }

    /// Checks and stores a plain-text message from `sender`: from a
    /// MESSAGE, or sent through the API.
    pub fn accept_text(
        &mut self,
        account: &Account,
        sender: &User,
        to: &str,
        body: String,
        limits: crate::config::ChatSettings,
        now: crate::clock::Now,
    ) -> Result<Accepted, SipError> {
        let (now, now_ms) = (now.mono, now.unix_ms);
        if !account.chat {
            return Err(SipError::with_reason(403, "Chat is disabled for this account"));
        }
        if body.len() > limits.max_message_bytes {
            return Err(SipError::with_reason(
                413,
                format!("Message larger than {} bytes", limits.max_message_bytes),
            ));
        }
        let (group, recipients) = if let Some(g) = account.group(to) {
            if !may_use_group(g, sender) {
                return Err(SipError::with_reason(
                    403,
                    format!("Not a member of group {}", g.number),
                ));
            }
            (true, group_recipients(g, &sender.extension))
        } else if account.user(to).is_some() {
            (false, vec![to.to_string()])
        } else {
            return Err(SipError::new(404));
        };
        // Rate limit per sender over a sliding minute.
        let sent = self
            .sent
            .entry(format!("{}@{}", sender.extension, account.domain))
            .or_default();
        while sent
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            sent.pop_front();
        }
        if sent.len() as u32 >= limits.messages_per_minute {
            return Err(SipError::with_reason(503, "Sending too fast")
                .header(crate::sip::HeaderName::Other("Retry-After".into()), "10"));
        }
        sent.push_back(now);
        let message = ChatMessage {
            id: self.next_id,
            ts_ms: now_ms,
            account: account.domain.clone(),
            from: sender.extension.clone(),
            to: to.to_string(),
            group,
            content_type: "text/plain".into(),
            body,
        };
        let mut ops = vec![stored::message(&message)];
        let mut waiting_for = Vec::new();
        for r in recipients {
            let aor = format!("{r}@{}", account.domain);
            if self.muted.contains(&aor) {
                continue; // kept in history, not pushed
            }
            if self.waiting_for(&aor) >= limits.max_waiting_per_user {
                // The oldest are kept; the sender of a private message is told.
                if !message.group {
                    return Err(SipError::with_reason(486, format!("Too many messages waiting for {r}")));
                }
                tracing::warn!(to = %aor, id = message.id, "group message not queued: too many waiting");
                continue;
            }
            ops.push(stored::pending(&aor, message.id));
            waiting_for.push(aor);
        }
        Ok(Accepted {
            message,
            ops,
            recipients: waiting_for,
        })
    }

    /// Takes an accepted message in once its ops are stored: it waits for
    /// its recipients' devices. (Before that nothing is pushed, so a
    /// message is never delivered without being kept.)
    pub fn commit(&mut self, accepted: &Accepted) {
        let m = &accepted.message;
        self.next_id = self.next_id.max(m.id + 1);
        for aor in &accepted.recipients {
            self.pending.insert((aor.clone(), m.id));
        }
        self.events.push_back(DomainEvent::ChatMessage {
            account: m.account.clone(),
            id: m.id,
            from: m.from.clone(),
            to: m.to.clone(),
            group: m.group,
            preview: m.body.chars().take(PREVIEW_CHARS).collect(),
            recipients: accepted
                .recipients
                .iter()
                .map(|aor| aor.split('@').next().unwrap_or("").to_string())
                .collect(),
        });
    }

    /// The next domain event (a message was stored).
    pub fn poll_event(&mut self) -> Option<DomainEvent> {
        self.events.pop_front()
    }

    /// The message to push to `aor` now, if any: one in flight per user,
    /// oldest first, so that devices get them in order (parallel
    /// transactions could overtake), and only while a device is registered.
    pub fn next_for(&self, aor: &str, registrar: &Registrar) -> Option<u64> {
        let next = self
            .pending
            .range((aor.to_string(), 0)..=(aor.to_string(), u64::MAX))
            .map(|(_, id)| *id)
            .next()?;
        let busy = self.in_flight.contains(&(aor.to_string(), next));
        (!busy && !registrar.lookup(aor).is_empty()).then_some(next)
    }

    /// A queued message whose body the store no longer has: dropped from
    /// the queue (the returned op removes it there too).
    pub fn forget(&mut self, aor: &str, id: u64) -> StoreOp {
        self.pending.remove(&(aor.to_string(), id));
        stored::delivered(aor, id)
    }

    /// Pushes `m` (the message [`Self::next_for`] named, read from the
    /// store) to every registered device of `aor`.
    pub fn push(&mut self, aor: &str, m: &ChatMessage, account: &Account, registrar: &Registrar, user_agent: &str) {
        let id = m.id;
        let bindings = registrar.lookup(aor);
        let from_name = account.user(&m.from).map_or(m.from.clone(), |u| u.display_name.clone());
        let (from_user, display) = if m.group {
            let gname = account.group(&m.to).map_or(m.to.clone(), |g| g.name.clone());
            (m.to.clone(), format!("{from_name} ({gname})"))
        } else {
            (m.from.clone(), from_name)
        };
        let to_user = aor.split('@').next().unwrap_or("");
        for b in bindings {
            let Ok(addr) = b.source.parse::<SocketAddr>() else {
                continue;
            };
            let transport = TransportKind::from_via_name(&b.transport);
            let peer = Peer { transport, addr };
            let via_addr = crate::sip::dialog::local_addr_for(&self.local, peer);
            // Out of any dialog (RFC 3428 §4): a fresh Call-ID and From tag.
            let mut dialog = Dialog {
                call_id: format!("{}@switchboard", random_token()),
                local: format!(
                    "\"{}\" <sip:{from_user}@{}>;tag={}",
                    display.replace('"', ""),
                    account.domain,
                    random_token()
                ),
                remote: format!("<sip:{to_user}@{}>", account.domain),
                remote_target: b.contact.clone(),
                peer,
                local_cseq: 0,
                via_addr,
                route_set: Vec::new(),
            };
            let body = bytes::Bytes::from(m.body.clone());
            let mut req = dialog.request(crate::sip::Method::Message, Some(("text/plain;charset=UTF-8", body)));
            req.push_header(crate::sip::HeaderName::UserAgent, user_agent.to_string());
            req.push_header(crate::sip::HeaderName::Other("X-Chat-Id".into()), m.id.to_string());
            req.push_header(crate::sip::HeaderName::Other("X-Chat-Sender".into()), m.from.clone());
            self.out.push_back(Delivery {
                req,
                to: peer,
                user_aor: aor.to_string(),
                id,
            });
        }
        self.in_flight.insert((aor.to_string(), id));
    }

    /// A device answered a push: on 2xx the message is delivered (the
    /// returned op removes it from the offline queue); otherwise it stays
    /// queued for the next registration.
    pub fn on_delivery_result(&mut self, aor: &str, id: u64, status: u16) -> Option<StoreOp> {
        let key = (aor.to_string(), id);
        if (200..300).contains(&status) {
            self.in_flight.remove(&key);
            if self.pending.remove(&key) {
                return Some(stored::delivered(aor, id));
            }
            return None;
        }
        if status >= 300 {
            self.in_flight.remove(&key);
        }
        None
    }
}
