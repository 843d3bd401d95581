//! The event stream's fan-out: the core hands each domain event, rendered
//! once as a server-sent event, to the subscribers that may see it, found
//! through an index by user: a call of two users wakes the clients of
//! those users, their supervisors and the account's admins, not every
//! client (200 agents' CRMs connected must not cost every call 200
//! wake-ups). A subscriber too slow to keep up is dropped: its stream
//! ends, and it reconnects with `?since=N`.

use super::viewer::Viewer;
use crate::events::{DomainEvent, Sequenced};
use axum::body::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Events waiting for one subscriber before it counts as too slow.
const QUEUE: usize = 1024;

/// An event as one server-sent-event frame, and the event itself.
pub struct Rendered {
    pub seq: u64,
    pub frame: Bytes,
}

pub fn frame(e: &Sequenced) -> Bytes {
    Bytes::from(format!(
        "id: {}\ndata: {}\n\n",
        e.seq,
        serde_json::to_string(e).unwrap_or_default()
    ))
}

type Key = (String, String);

#[derive(Default)]
struct Subscribers {
    next: u64,
    all: HashMap<u64, (Viewer, mpsc::Sender<Arc<Rendered>>)>,
    /// Users (domain, extension) → subscribers that see them.
    seeing: HashMap<Key, Vec<u64>>,
    /// Admins and owners, who see all of their account (and trunks).
    admins: Vec<u64>,
}

impl Subscribers {
    fn keys(v: &Viewer) -> Vec<Key> {
        std::iter::once(&v.ext)
            .chain(&v.members)
            .map(|e| (v.domain.clone(), e.clone()))
            .collect()
    }

    /// Subscribers that might see `event` (each is then checked).
    fn candidates(&self, event: &DomainEvent) -> Vec<u64> {
        let user = |domain: &str, ext: &str| self.seeing.get(&(domain.to_string(), ext.to_string()));
        let mut out: Vec<u64> = self.admins.clone();
        match event {
            DomainEvent::Registration { aor, .. } | DomainEvent::AgentState { aor, .. } => {
                if let Some((e, d)) = aor.split_once('@') {
                    out.extend(user(d, e).into_iter().flatten());
                }
            }
            DomainEvent::LegState { account, party, .. } => out.extend(user(account, party).into_iter().flatten()),
            DomainEvent::ChatMessage {
                account,
                from,
                recipients,
                ..
            } => {
                for ext in std::iter::once(from).chain(recipients) {
                    out.extend(user(account, ext).into_iter().flatten());
                }
            }
            DomainEvent::ConversationEnded { .. } | DomainEvent::TrunkStatus { .. } => {}
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn remove(&mut self, id: u64) {
        let Some((v, _)) = self.all.remove(&id) else { return };
        self.admins.retain(|a| *a != id);
        for k in Self::keys(&v) {
            if let Some(list) = self.seeing.get_mut(&k) {
                list.retain(|s| *s != id);
                if list.is_empty() {
                    self.seeing.remove(&k);
                }
            }
        }
    }
}

/// The subscribers, shared by the fan-out task and the handlers.
#[derive(Clone, Default)]
pub struct Fanout(Arc<Mutex<Subscribers>>);

/// A subscriber's place: dropping it (the client went away) leaves.
pub struct Subscription {
    id: u64,
    fanout: Fanout,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.fanout.0.lock().expect("fanout lock").remove(self.id);
    }
}

impl Fanout {
    /// A new subscriber for `viewer`: its place, and its events.
    pub fn subscribe(&self, viewer: Viewer) -> (Subscription, mpsc::Receiver<Arc<Rendered>>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut s = self.0.lock().expect("fanout lock");
        s.next += 1;
        let id = s.next;
        if viewer.is_admin() {
            s.admins.push(id);
        }
        for k in Subscribers::keys(&viewer) {
            s.seeing.entry(k).or_default().push(id);
        }
        s.all.insert(id, (viewer, tx));
        let fanout = self.clone();
        (Subscription { id, fanout }, rx)
    }

    /// Hands `e` to the subscribers that may see it.
    pub fn deliver(&self, e: &Arc<Sequenced>) {
        let mut s = self.0.lock().expect("fanout lock");
        let mut rendered: Option<Arc<Rendered>> = None;
        let mut slow = Vec::new();
        for id in s.candidates(&e.event) {
            let Some((viewer, tx)) = s.all.get(&id) else { continue };
            if !viewer.sees_event(&e.event) {
                continue;
            }
            let r = rendered.get_or_insert_with(|| {
                Arc::new(Rendered {
                    seq: e.seq,
                    frame: frame(e),
                })
            });
            if tx.try_send(r.clone()).is_err() {
                slow.push(id);
            }
        }
        for id in slow {
            tracing::info!(subscriber = id, "event stream client too slow (or gone); dropped");
            s.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;
    use crate::events::LegPhase;

    fn viewer(ext: &str, role: Role, members: &[&str]) -> Viewer {
        Viewer {
            ext: ext.into(),
            domain: "a.test".into(),
            role,
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn leg(seq: u64, party: &str) -> Arc<Sequenced> {
        Arc::new(Sequenced {
            seq,
            at_ms: 0,
            event: DomainEvent::LegState {
                account: "a.test".into(),
                party: party.into(),
                leg: seq,
                conversation: 1,
                phase: LegPhase::Trying,
                caller: None,
            },
        })
    }

    #[test]
    fn an_event_goes_to_its_user_their_supervisors_and_admins_only() {
        let f = Fanout::default();
        let (_a, mut agent) = f.subscribe(viewer("3", Role::Agent, &[]));
        let (_o, mut other) = f.subscribe(viewer("4", Role::Agent, &[]));
        let (_s, mut sup) = f.subscribe(viewer("2", Role::Supervisor, &["3"]));
        let (_w, mut owner) = f.subscribe(viewer("1", Role::Owner, &[]));
        f.deliver(&leg(7, "3"));
        for (name, rx) in [("agent", &mut agent), ("supervisor", &mut sup), ("owner", &mut owner)] {
            let got = rx.try_recv().unwrap_or_else(|_| panic!("{name} got nothing"));
            assert_eq!(got.seq, 7);
            assert!(got.frame.starts_with(b"id: 7\ndata: {\"seq\":7"), "{:?}", got.frame);
        }
        assert!(other.try_recv().is_err(), "another agent's client is not woken");
        // A client that went away leaves the index.
        drop(_a);
        assert!(!f
            .0
            .lock()
            .unwrap()
            .seeing
            .get(&("a.test".into(), "3".into()))
            .unwrap()
            .is_empty());
        assert_eq!(f.0.lock().unwrap().all.len(), 3);
    }

    #[test]
    fn a_subscriber_that_does_not_keep_up_is_dropped_and_its_stream_ends() {
        let f = Fanout::default();
        let (_sub, mut rx) = f.subscribe(viewer("3", Role::Agent, &[]));
        for seq in 1..=(QUEUE as u64 + 1) {
            f.deliver(&leg(seq, "3"));
        }
        assert!(f.0.lock().unwrap().all.is_empty(), "dropped when its queue was full");
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, QUEUE, "what was queued is still read, then the stream ends");
        assert!(matches!(rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
    }
}
