//! The domain events the API streams: numbered, handed to the API's
//! subscribers as they happen (on this task: no hop through another), and
//! the last ones kept (a bounded number, for a bounded time) for a client
//! that reconnects with `?since=N`.

use crate::events::{DomainEvent, Sequenced};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Events kept for reconnecting clients: at most this many...
const KEEP: usize = 10_000;
/// ...and none older than this.
const KEEP_FOR: Duration = Duration::from_secs(600);

pub struct EventLog {
    next: u64,
    kept: VecDeque<(Instant, Arc<Sequenced>)>,
    fanout: crate::api::Fanout,
}

impl EventLog {
    pub fn new(fanout: crate::api::Fanout) -> EventLog {
        EventLog {
            next: 1,
            kept: VecDeque::new(),
            fanout,
        }
    }

    pub fn push(&mut self, event: DomainEvent, now: Instant, unix_ms: u64) {
        let e = Arc::new(Sequenced {
            seq: self.next,
            at_ms: unix_ms,
            event,
        });
        self.next += 1;
        self.fanout.deliver(&e);
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
        let fanout = crate::api::Fanout::default();
        let owner = crate::api::viewer::Viewer {
            ext: "1".into(),
            domain: "a".into(),
            role: crate::config::Role::Owner,
            members: Default::default(),
        };
        let (_sub, mut rx) = fanout.subscribe(owner);
        let mut log = EventLog::new(fanout);
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
