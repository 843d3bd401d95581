//! The domain events the API streams: numbered, broadcast to the API's
//! subscribers as they happen, and the last ones kept (a bounded number,
//! for a bounded time) for a client that reconnects with `?since=N`.

use crate::events::{DomainEvent, Sequenced};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Events kept for reconnecting clients: at most this many...
const KEEP: usize = 10_000;
/// ...and none older than this.
const KEEP_FOR: Duration = Duration::from_secs(600);

pub struct EventLog {
    next: u64,
    kept: VecDeque<(Instant, Arc<Sequenced>)>,
    tx: broadcast::Sender<Arc<Sequenced>>,
}

impl EventLog {
    pub fn new(tx: broadcast::Sender<Arc<Sequenced>>) -> EventLog {
        EventLog {
            next: 1,
            kept: VecDeque::new(),
            tx,
        }
    }

    pub fn push(&mut self, event: DomainEvent, now: Instant, unix_ms: u64) {
        let e = Arc::new(Sequenced {
            seq: self.next,
            at_ms: unix_ms,
            event,
        });
        self.next += 1;
        // No subscriber is not an error: the event is kept all the same.
        let _ = self.tx.send(e.clone());
        self.kept.push_back((now, e));
        while self.kept.len() > KEEP
            || self
                .kept
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > KEEP_FOR)
        {
            self.kept.pop_front();
        }
    }

    /// The events after `since`, or Err(the oldest kept) when some of them
    /// are no longer kept.
    pub fn since(&self, since: u64) -> Result<Vec<Arc<Sequenced>>, u64> {
        let oldest = self.kept.front().map_or(self.next, |(_, e)| e.seq);
        if since + 1 < oldest {
            return Err(oldest);
        }
        Ok(self
            .kept
            .iter()
            .filter(|(_, e)| e.seq > since)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnecting_client_gets_what_it_missed_or_is_told_to_resync() {
        let (tx, mut rx) = broadcast::channel(16);
        let mut log = EventLog::new(tx);
        let now = Instant::now();
        let ev = |n: usize| DomainEvent::Registration {
            aor: "1@a".into(),
            contacts: n,
        };
        for n in 0..3 {
            log.push(ev(n), now, 0);
        }
        assert_eq!(rx.try_recv().unwrap().seq, 1);
        let after1: Vec<u64> = log.since(1).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(after1, [2, 3]);
        assert!(log.since(3).unwrap().is_empty());
        // Ten minutes later the old ones are gone: resync.
        log.push(ev(9), now + KEEP_FOR + Duration::from_secs(1), 0);
        assert_eq!(log.since(1), Err(4));
        assert_eq!(log.since(3).unwrap().len(), 1);
    }
}
