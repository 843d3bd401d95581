//! Per-source-IP accounting of failed authentications: after
//! `throttle_after` failures within the window, attempts closer than the
//! throttle interval are refused with 503 + Retry-After; after
//! `max_failures` the source is banned (its packets dropped) for `ban`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardPolicy {
    pub throttle_after: u32,
    pub throttle_interval: Duration,
    pub max_failures: u32,
    pub window: Duration,
    pub ban: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardVerdict {
    Allow,
    /// Too soon after the last failure: answer 503 with Retry-After.
    Throttle,
    /// Drop silently.
    Banned,
}

#[derive(Default)]
struct SourceRecord {
    failures: VecDeque<Instant>,
    banned_until: Option<Instant>,
}

pub struct FailureGuard {
    policy: GuardPolicy,
    sources: HashMap<IpAddr, SourceRecord>,
}

impl FailureGuard {
    pub fn new(policy: GuardPolicy) -> FailureGuard {
        FailureGuard {
            policy,
            sources: HashMap::new(),
        }
    }

    pub fn set_policy(&mut self, policy: GuardPolicy) {
        self.policy = policy;
    }

    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&ip)
            .and_then(|r| r.banned_until)
            .is_some_and(|until| now < until)
    }

    /// Whether an authentication attempt from `ip` may be evaluated.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> GuardVerdict {
        if self.is_banned(ip, now) {
            return GuardVerdict::Banned;
        }
        let Some(r) = self.sources.get_mut(&ip) else {
            return GuardVerdict::Allow;
        };
        prune(&mut r.failures, now, self.policy.window);
        let recent = r.failures.len() as u32;
        let last = r.failures.back().copied();
        if recent >= self.policy.throttle_after
            && last.is_some_and(|t| now.duration_since(t) < self.policy.throttle_interval)
        {
            // A throttled attempt is itself a failure: hammering leads to a ban.
            return match self.record_failure(ip, now) {
                true => GuardVerdict::Banned,
                false => GuardVerdict::Throttle,
            };
        }
        GuardVerdict::Allow
    }

    /// Records a failed authentication; returns true if the source is now banned.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) -> bool {
        let policy = self.policy;
        let r = self.sources.entry(ip).or_default();
        prune(&mut r.failures, now, policy.window);
        r.failures.push_back(now);
        if r.failures.len() as u32 >= policy.max_failures {
            r.banned_until = Some(now + policy.ban);
            r.failures.clear();
            tracing::warn!(source = %ip, failures = policy.max_failures, ban_s = policy.ban.as_secs(), "banning source after repeated failed authentications");
            return true;
        }
        false
    }

    /// Forgets sources with no recent failures and no ban.
    pub fn purge(&mut self, now: Instant) {
        let window = self.policy.window;
        self.sources.retain(|_, r| {
            prune(&mut r.failures, now, window);
            !r.failures.is_empty() || r.banned_until.is_some_and(|u| now < u)
        });
    }

    /// Currently banned sources with the time left.
    pub fn banned(&self, now: Instant) -> Vec<(IpAddr, Duration)> {
        self.sources
            .iter()
            .filter_map(|(ip, r)| r.banned_until.filter(|u| now < *u).map(|u| (*ip, u - now)))
            .collect()
    }
}

fn prune(failures: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while failures.front().is_some_and(|t| now.duration_since(*t) > window) {
        failures.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> GuardPolicy {
        GuardPolicy {
            throttle_after: 2,
            throttle_interval: Duration::from_secs(1),
            max_failures: 4,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(600),
        }
    }

    #[test]
    fn throttles_then_bans_then_forgives() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let mut g = FailureGuard::new(policy());
        let t0 = Instant::now();
        assert_eq!(g.check(ip, t0), GuardVerdict::Allow);
        assert!(!g.record_failure(ip, t0));
        assert!(!g.record_failure(ip, t0));
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(g.check(ip, t1), GuardVerdict::Throttle, "3rd failure");
        assert_eq!(g.check(ip, t1), GuardVerdict::Banned, "4th failure bans");
        assert_eq!(g.check(other, t1), GuardVerdict::Allow, "other sources unaffected");
        assert!(g.is_banned(ip, t1 + Duration::from_secs(599)));
        assert_eq!(g.banned(t1).len(), 1);
        assert!(!g.is_banned(ip, t1 + Duration::from_secs(601)));
        g.purge(t1 + Duration::from_secs(601));
        assert_eq!(g.check(ip, t1 + Duration::from_secs(601)), GuardVerdict::Allow);
    }

    #[test]
    fn slow_failures_are_not_throttled_and_age_out() {
        let ip: IpAddr = "::1".parse().unwrap();
        let mut g = FailureGuard::new(policy());
        let t0 = Instant::now();
        for i in 0..3 {
            let t = t0 + Duration::from_secs(i * 30);
            assert_eq!(g.check(ip, t), GuardVerdict::Allow);
            assert!(!g.record_failure(ip, t));
        }
        // 61 s later the window holds only the last two failures.
        let t = t0 + Duration::from_secs(121);
        assert_eq!(g.check(ip, t), GuardVerdict::Allow);
        assert!(!g.record_failure(ip, t));
    }
}
