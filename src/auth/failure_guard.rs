//! Accounting of failed authentications, built for call centres whose
//! phones share one public address behind NAT:
//! - failures count per (source IP, username): after `throttle_after` in
//!   the window, that user's attempts from that IP closer than the throttle
//!   interval get 503 + Retry-After; after `max_failures` that user is
//!   locked out from that IP for `ban`. Other users behind the same address
//!   are never refused for it;
//! - a source IP is banned (its out-of-dialog requests dropped) only when
//!   it fails for `ban_after_usernames` distinct usernames (a scanner
//!   guessing extensions) or `ban_after_failures` times in all;
//! - sources in `trusted` networks are never throttled, locked or banned.
//!
//! Nonces are bound to the client's address (see `digest::NonceKeeper`), so
//! a spoofed source cannot produce failures in another IP's name.

use crate::config::IpNetwork;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardPolicy {
    /// Per (IP, username).
    pub throttle_after: u32,
    pub throttle_interval: Duration,
    /// Per (IP, username): the user is locked out from that IP.
    pub max_failures: u32,
    /// Per IP: distinct usernames failing, or failures in all, that ban it.
    pub ban_after_usernames: u32,
    pub ban_after_failures: u32,
    pub window: Duration,
    pub ban: Duration,
    pub trusted: Vec<IpNetwork>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardVerdict {
    Allow,
    /// Too soon after the last failure, or locked out: 503 + Retry-After.
    Throttle,
    /// Drop silently.
    Banned,
}

/// Failures of one username from one IP.
#[derive(Default)]
struct UserRecord {
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

/// Failures from one IP, with the username each was for.
#[derive(Default)]
struct SourceRecord {
    failures: VecDeque<(Instant, String)>,
    banned_until: Option<Instant>,
}

pub struct FailureGuard {
    policy: GuardPolicy,
    sources: HashMap<IpAddr, SourceRecord>,
    users: HashMap<(IpAddr, String), UserRecord>,
    /// Failures recorded since the start (trusted sources left out).
    failures_total: u64,
}

impl FailureGuard {
    pub fn new(policy: GuardPolicy) -> FailureGuard {
        FailureGuard {
            policy,
            sources: HashMap::new(),
            users: HashMap::new(),
            failures_total: 0,
        }
    }

    pub fn set_policy(&mut self, policy: GuardPolicy) {
        self.policy = policy;
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.policy.trusted.iter().any(|n| n.contains(ip))
    }

    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&ip)
            .and_then(|r| r.banned_until)
            .is_some_and(|until| now < until)
    }

    /// Whether an authentication attempt by `user` from `ip` may be evaluated.
    pub fn check(&mut self, ip: IpAddr, user: &str, now: Instant) -> GuardVerdict {
        if self.trusted(ip) {
            return GuardVerdict::Allow;
        }
        if self.is_banned(ip, now) {
            return GuardVerdict::Banned;
        }
        let Some(r) = self.users.get_mut(&(ip, user.to_string())) else {
            return GuardVerdict::Allow;
        };
        if r.locked_until.is_some_and(|u| now < u) {
            return GuardVerdict::Throttle;
        }
        prune(&mut r.failures, now, self.policy.window, |t| *t);
        let recent = r.failures.len() as u32;
        let last = r.failures.back().copied();
        if recent >= self.policy.throttle_after
            && last.is_some_and(|t| now.duration_since(t) < self.policy.throttle_interval)
        {
            // A throttled attempt is itself a failure: hammering leads to a lock-out.
            return match self.record_failure(ip, user, now) {
                true => GuardVerdict::Banned,
                false => GuardVerdict::Throttle,
            };
        }
        GuardVerdict::Allow
    }

    /// Records a failed authentication of `user` from `ip`; returns true
    /// if the source IP is now banned.
    /// Failed authentications recorded since the start.
    pub fn failures_total(&self) -> u64 {
        self.failures_total
    }

    pub fn record_failure(&mut self, ip: IpAddr, user: &str, now: Instant) -> bool {
        if self.trusted(ip) {
            return false;
        }
        self.failures_total += 1;
        let policy = self.policy.clone();
        let u = self.users.entry((ip, user.to_string())).or_default();
        prune(&mut u.failures, now, policy.window, |t| *t);
        u.failures.push_back(now);
        if u.failures.len() as u32 >= policy.max_failures {
            u.locked_until = Some(now + policy.ban);
            u.failures.clear();
            tracing::warn!(source = %ip, user, ban_s = policy.ban.as_secs(), "user locked out from this source after repeated failed authentications");
        }
        let s = self.sources.entry(ip).or_default();
        prune(&mut s.failures, now, policy.window, |f| f.0);
        s.failures.push_back((now, user.to_string()));
        // Distinct usernames among this source's recent failures (at most
        // `ban_after_failures` of them: the ban clears the list).
        let usernames: HashSet<&str> = s.failures.iter().map(|(_, name)| name.as_str()).collect();
        let usernames = usernames.len();
        let scanner = usernames as u32 >= policy.ban_after_usernames;
        if scanner || s.failures.len() as u32 >= policy.ban_after_failures {
            s.banned_until = Some(now + policy.ban);
            s.failures.clear();
            tracing::warn!(source = %ip, usernames, ban_s = policy.ban.as_secs(), "banning source after failed authentications");
            return true;
        }
        false
    }

    /// Lifts the ban of `ip` and its users' lock-outs; false if it had none.
    pub fn unban(&mut self, ip: IpAddr) -> bool {
        let banned = self.sources.remove(&ip).is_some_and(|r| r.banned_until.is_some());
        let before = self.users.len();
        self.users.retain(|(i, _), _| *i != ip);
        banned || self.users.len() != before
    }

    /// Forgets sources and users with no recent failures and no ban.
    pub fn purge(&mut self, now: Instant) {
        let window = self.policy.window;
        self.sources.retain(|_, r| {
            prune(&mut r.failures, now, window, |f| f.0);
            !r.failures.is_empty() || r.banned_until.is_some_and(|u| now < u)
        });
        self.users.retain(|_, r| {
            prune(&mut r.failures, now, window, |t| *t);
            !r.failures.is_empty() || r.locked_until.is_some_and(|u| now < u)
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

/// Drops failures older than the window (oldest first); `at` is when one happened.
fn prune<T>(failures: &mut VecDeque<T>, now: Instant, window: Duration, at: impl Fn(&T) -> Instant) {
    while failures.front().is_some_and(|f| now.duration_since(at(f)) > window) {
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
            ban_after_usernames: 3,
            ban_after_failures: 20,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(600),
            trusted: vec!["10.1.0.0/16".parse().unwrap()],
        }
    }

    #[test]
    fn one_users_failures_lock_that_user_out_not_the_others_behind_the_same_address() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut g = FailureGuard::new(policy());
        let t0 = Instant::now();
        assert_eq!(g.check(ip, "1001", t0), GuardVerdict::Allow);
        assert!(!g.record_failure(ip, "1001", t0));
        assert!(!g.record_failure(ip, "1001", t0));
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(g.check(ip, "1001", t1), GuardVerdict::Throttle, "3rd failure");
        assert_eq!(
            g.check(ip, "1002", t1),
            GuardVerdict::Allow,
            "another user, same NAT address"
        );
        assert_eq!(
            g.check(ip, "1001", t1),
            GuardVerdict::Throttle,
            "4th failure locks 1001 out"
        );
        let t2 = t1 + Duration::from_secs(5);
        assert_eq!(g.check(ip, "1001", t2), GuardVerdict::Throttle, "locked out");
        assert_eq!(g.check(ip, "1002", t2), GuardVerdict::Allow);
        assert!(!g.is_banned(ip, t2), "one user's failures never ban the address");
        g.purge(t2 + Duration::from_secs(601));
        assert_eq!(g.check(ip, "1001", t2 + Duration::from_secs(601)), GuardVerdict::Allow);
    }

    #[test]
    fn failing_for_many_usernames_bans_the_source_and_ctl_can_lift_it() {
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        let mut g = FailureGuard::new(policy());
        let t0 = Instant::now();
        assert!(!g.record_failure(ip, "100", t0));
        assert!(!g.record_failure(ip, "101", t0));
        assert!(g.record_failure(ip, "102", t0), "the scanner pattern");
        assert_eq!(g.check(ip, "1001", t0), GuardVerdict::Banned);
        assert_eq!(
            g.check(other, "1001", t0),
            GuardVerdict::Allow,
            "other sources unaffected"
        );
        assert_eq!(g.banned(t0).len(), 1);
        assert!(g.unban(ip));
        assert_eq!(g.check(ip, "1001", t0), GuardVerdict::Allow);
        assert!(!g.unban(ip), "nothing left to lift");
    }

    #[test]
    fn trusted_networks_are_never_refused() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let mut g = FailureGuard::new(policy());
        let t0 = Instant::now();
        for user in ["100", "101", "102", "103", "1001", "1001", "1001", "1001"] {
            assert!(!g.record_failure(ip, user, t0));
        }
        assert_eq!(g.check(ip, "1001", t0), GuardVerdict::Allow);
    }

    #[test]
    fn slow_failures_are_not_throttled_and_age_out() {
        let ip: IpAddr = "::1".parse().unwrap();
        let mut g = FailureGuard::new(policy());
        let t0 = Instant::now();
        for i in 0..3 {
            let t = t0 + Duration::from_secs(i * 30);
            assert_eq!(g.check(ip, "1001", t), GuardVerdict::Allow);
            assert!(!g.record_failure(ip, "1001", t));
        }
        // 61 s later the window holds only the last two failures.
        let t = t0 + Duration::from_secs(121);
        assert_eq!(g.check(ip, "1001", t), GuardVerdict::Allow);
        assert!(!g.record_failure(ip, "1001", t));
    }
}
