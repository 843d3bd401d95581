//! The registrar (RFC 3261 §10.3), sans-IO: applies an authenticated
//! REGISTER to the location service and says what to persist and answer.

mod binding;
pub mod stored;
#[cfg(test)]
mod tests;

pub use binding::Binding;

use crate::config::RegistrarSettings;
use crate::events::DomainEvent;
use crate::sip::addr::{CSeq, NameAddr};
use crate::sip::text::{push_decimal, push_socket_addr};
use crate::sip::transaction::Peer;
use crate::sip::uri::SipUri;
use crate::sip::{HeaderName, SipError, SipMessage};
use crate::store::StoreOp;
use foldhash::HashMap;
use std::sync::Arc;

/// In-memory location service: address-of-record → bindings. A list is
/// shared with the store op and the answer that a REGISTER produces, not
/// copied for each (six strings a binding).
#[derive(Default)]
pub struct Registrar {
    bindings: HashMap<String, Arc<[Binding]>>,
    /// Changes not yet taken by the driver.
    events: std::collections::VecDeque<DomainEvent>,
}

/// What a successful REGISTER produced.
#[derive(Debug)]
pub struct RegisterOutcome {
    pub aor: String,
    /// Current bindings, for the 200's Contact list.
    pub current: Arc<[Binding]>,
    /// The change to persist before answering (None for a pure query).
    pub store: Option<StoreOp>,
}

/// Identity of a contact for matching (§10.3 step 7, §19.1.4 comparison
/// simplified: scheme, user, host case-insensitively, port, transport).
fn contact_key(uri: &str) -> String {
    match SipUri::parse(uri) {
        Ok(u) => {
            // Pieces pushed into one buffer, lower-cased where the comparison
            // is case-insensitive (§19.1.4), rather than `format!` over three
            // lower-cased copies.
            let user = u.user_unescaped().unwrap_or_default();
            let transport = u.param("transport").unwrap_or("");
            let mut key = String::with_capacity(uri.len() + 8);
            push_lowercase(&mut key, u.scheme);
            key.push(':');
            key.push_str(&user);
            key.push('@');
            push_lowercase(&mut key, u.host);
            key.push(':');
            push_decimal(&mut key, u32::from(u.port.unwrap_or(0)));
            key.push(':');
            push_lowercase(&mut key, transport);
            key
        }
        Err(_) => uri.to_string(),
    }
}

fn push_lowercase(out: &mut String, s: &str) {
    let start = out.len();
    out.push_str(s);
    out[start..].make_ascii_lowercase();
}

impl Registrar {
    pub fn new() -> Registrar {
        Registrar::default()
    }

    /// Loads bindings from the store at start-up, dropping expired ones.
    pub fn restore(&mut self, rows: Vec<(String, Vec<Binding>)>, now_unix: u64) -> Vec<StoreOp> {
        let mut purge = Vec::new();
        for (aor, mut list) in rows {
            list.retain(|b| b.expires_at > now_unix);
            if list.is_empty() {
                purge.push(stored::delete(&aor));
            } else {
                self.bindings.insert(aor, list.into());
            }
        }
        purge
    }

    pub fn lookup(&self, aor: &str) -> &[Binding] {
        self.bindings.get(aor).map_or(&[], |list| list)
    }

    pub fn all(&self) -> impl Iterator<Item = (&String, &Arc<[Binding]>)> {
        self.bindings.iter()
    }

    pub fn binding_count(&self) -> usize {
        self.bindings.values().map(|list| list.len()).sum()
    }

    /// What a REGISTER for `aor` (already authenticated and authorized)
    /// changes, without changing anything yet: the caller stores
    /// `outcome.store` first, then [`Registrar::apply`]s it, so memory never
    /// holds a binding the store failed to keep.
    pub fn register(
        &mut self,
        req: &SipMessage,
        aor: &str,
        source: Peer,
        settings: &RegistrarSettings,
        now_unix: u64,
    ) -> Result<RegisterOutcome, SipError> {
        let call_id = req
            .call_id()
            .ok_or_else(|| SipError::with_reason(400, "Missing Call-ID"))?;
        let cseq = req
            .header(&HeaderName::CSeq)
            .and_then(CSeq::parse)
            .ok_or_else(|| SipError::with_reason(400, "Bad CSeq"))?
            .seq;
        let header_expires = match req.header(&HeaderName::Expires) {
            Some(v) => Some(
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| SipError::with_reason(400, "Bad Expires"))?,
            ),
            None => None,
        };
        let contacts: Vec<&str> = req.header_values(&HeaderName::Contact).collect();
        let existing = self.bindings.get(aor).cloned().unwrap_or_else(|| Arc::new([]));
        if contacts.is_empty() {
            // A query: list current bindings (§10.3 step 6 with no Contact).
            return Ok(RegisterOutcome {
                aor: aor.to_string(),
                current: existing,
                store: None,
            });
        }
        if contacts.contains(&"*") {
            // §10.3 step 6: "*" only alone and with Expires: 0.
            if contacts.len() != 1 || header_expires != Some(0) {
                return Err(SipError::with_reason(
                    400,
                    "Wildcard Contact needs Expires: 0 and no other Contact",
                ));
            }
            if existing.iter().any(|b| b.call_id == call_id && b.cseq >= cseq) {
                return Err(SipError::with_reason(500, "Out-of-order CSeq"));
            }
            return Ok(RegisterOutcome {
                aor: aor.to_string(),
                current: Arc::new([]),
                store: Some(stored::delete(aor)),
            });
        }
        let mut updated = existing.to_vec();
        let user_agent = req.header(&HeaderName::UserAgent).map(str::to_string);
        for c in contacts {
            let addr = NameAddr::parse(c).map_err(|_| SipError::with_reason(400, "Bad Contact"))?;
            addr.uri().map_err(|_| SipError::with_reason(400, "Bad Contact URI"))?;
            let expires = match addr.param("expires") {
                Some(v) => v
                    .parse::<u32>()
                    .map_err(|_| SipError::with_reason(400, "Bad Contact expires"))?,
                None => header_expires.unwrap_or(settings.default_expires),
            };
            // §10.3 step 6: too short but non-zero → 423 with Min-Expires.
            if expires != 0 && expires < settings.min_expires {
                return Err(SipError::new(423).header(HeaderName::MinExpires, settings.min_expires.to_string()));
            }
            let expires = expires.min(settings.max_expires);
            let key = contact_key(addr.uri_text);
            let pos = updated.iter().position(|b| contact_key(&b.contact) == key);
            if let Some(p) = pos {
                // §10.3 step 7: same Call-ID needs a higher CSeq.
                let b = &updated[p];
                if b.call_id == call_id && b.cseq >= cseq {
                    return Err(SipError::with_reason(500, "Out-of-order CSeq"));
                }
            }
            if expires == 0 {
                if let Some(p) = pos {
                    updated.remove(p);
                }
                continue;
            }
            let binding = Binding {
                contact: addr.uri_text.to_string(),
                expires_at: now_unix + u64::from(expires),
                call_id: call_id.to_string(),
                cseq,
                q: addr.param("q").map(str::to_string),
                source: {
                    let mut s = String::with_capacity(24);
                    push_socket_addr(&mut s, source.addr);
                    s
                },
                transport: source.transport.via_name().to_string(),
                user_agent: user_agent.clone(),
                registered_at: pos.map_or(now_unix, |p| updated[p].registered_at),
            };
            match pos {
                Some(p) => updated[p] = binding,
                None => updated.push(binding),
            }
        }
        if updated.len() > settings.max_contacts {
            return Err(SipError::with_reason(403, "Too many registered contacts"));
        }
        let current: Arc<[Binding]> = updated.into();
        let store = if current.is_empty() {
            stored::delete(aor)
        } else {
            stored::put(aor, &current)
        };
        Ok(RegisterOutcome {
            aor: aor.to_string(),
            current,
            store: Some(store),
        })
    }

    /// Makes a stored REGISTER outcome live (and announces it).
    pub fn apply(&mut self, outcome: &RegisterOutcome) {
        if outcome.store.is_none() {
            return;
        }
        if outcome.current.is_empty() {
            self.bindings.remove(&outcome.aor);
        } else {
            self.bindings.insert(outcome.aor.clone(), outcome.current.clone());
        }
        self.changed(&outcome.aor, outcome.current.len());
    }

    /// The next registration change (domain event) to announce.
    pub fn poll_output(&mut self) -> Option<DomainEvent> {
        self.events.pop_front()
    }

    fn changed(&mut self, aor: &str, contacts: usize) {
        self.events.push_back(DomainEvent::Registration {
            aor: aor.to_string(),
            contacts,
        });
    }

    /// Removes lapsed bindings; returns the store ops that mirror it.
    pub fn purge_expired(&mut self, now_unix: u64) -> Vec<StoreOp> {
        let mut ops = Vec::new();
        let events = &mut self.events;
        self.bindings.retain(|aor, list| {
            if list.iter().all(|b| b.expires_at > now_unix) {
                return true;
            }
            let kept: Arc<[Binding]> = list.iter().filter(|b| b.expires_at > now_unix).cloned().collect();
            events.push_back(DomainEvent::Registration {
                aor: aor.clone(),
                contacts: kept.len(),
            });
            if kept.is_empty() {
                ops.push(stored::delete(aor));
                false
            } else {
                *list = kept;
                ops.push(stored::put(aor, list));
                true
            }
        });
        ops
    }
}

/// Contact header values for a 200 OK listing `current` (§10.3 step 8).
pub fn contact_headers(current: &[Binding], now_unix: u64) -> Vec<String> {
    current
        .iter()
        .map(|b| {
            let mut h = String::with_capacity(b.contact.len() + 20);
            h.push('<');
            h.push_str(&b.contact);
            h.push_str(">;expires=");
            push_decimal(&mut h, b.remaining(now_unix).try_into().unwrap_or(u32::MAX));
            h
        })
        .collect()
}
