//! Queues, sans-IO: who waits in which queue, which ready agents each
//! waiting caller is offered to (by the queue's strategy and tiers), what
//! happens when an offer ends, when a caller has waited too long, and the
//! figures `ctl queues` shows. The call engine rings and bridges; this
//! module only decides.

use super::agents::{AgentState, Agents};
use crate::clock::Now;
use crate::config::{Account, Destination, Queue, QueueStrategy};
pub use crate::events::OfferOutcome;
use crate::events::{DomainEvent, LegPhase};

/// A conversation's id (the call engine's `CallRef`).
pub type CallRef = u64;
use foldhash::{HashMap, HashSet};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

/// A caller waiting in a queue.
#[derive(Debug)]
struct Waiter {
    call: CallRef,
    since: Instant,
    /// Agents (`ext@domain`) its current offer rings.
    offered: Vec<String>,
    /// No new offer before this (the queue's retry pause).
    next_try: Instant,
}

/// Today's figures of a queue (they restart at midnight UTC).
#[derive(Debug, Default, Clone, Serialize)]
pub struct QueueStats {
    pub answered: u64,
    pub abandoned: u64,
    pub timed_out: u64,
    /// Answered within the queue's service-level time.
    pub answered_in_level: u64,
    #[serde(skip)]
    day: u64,
}

struct QueueState {
    config: Queue,
    domain: String,
    waiting: VecDeque<Waiter>,
    /// Round robin: the member index to start from next time.
    next_member: usize,
    stats: QueueStats,
}

impl QueueState {
    fn stats_today(&mut self, now: Now) -> &mut QueueStats {
        let day = now.unix_s() / 86_400;
        if self.stats.day != day {
            self.stats = QueueStats {
                day,
                ..QueueStats::default()
            };
        }
        &mut self.stats
    }
}

/// An agent's queue figures (across queues), which strategies rank by.
#[derive(Debug, Default)]
struct AgentStats {
    /// When their last queue call ended (None: none yet).
    last_end: Option<Instant>,
    calls: u64,
    talk: Duration,
    /// Offers rung out in a row.
    no_answer_streak: u32,
}

/// Why a caller was not let into a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_callers` are waiting.
    Full,
    /// No member is logged in and the queue refuses then.
    NoAgents,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcdOutput {
    /// Ring `agents` (extensions) for the waiting `call`.
    Offer {
        call: CallRef,
        domain: String,
        queue: String,
        agents: Vec<String>,
        timeout: Duration,
    },
    /// The caller waited `max_wait` (or its queue was removed): it leaves
    /// the queue, to the queue's overflow or back to the dialplan with
    /// `timeout`.
    WaitedTooLong {
        call: CallRef,
        domain: String,
        queue: String,
        overflow: Option<Destination>,
    },
    /// The agent let `max_no_answer` offers in a row ring out.
    TooManyMissed { aor: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum AcdTimer {
    MaxWait(CallRef),
    /// A retry pause is over: look for agents again.
    Retry,
}

/// A queue as `ctl queues` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct QueueView {
    pub number: String,
    pub name: String,
    pub domain: String,
    pub strategy: String,
    pub waiting: usize,
    pub longest_wait_s: u64,
    /// Members by state name.
    pub agents: BTreeMap<String, usize>,
    pub answered: u64,
    pub abandoned: u64,
    pub timed_out: u64,
    /// Percentage of answered calls answered within the service level
    /// (100 when none was answered yet).
    pub service_level_pct: u64,
}

#[derive(Default)]
pub struct Queues {
    /// By `number@domain`, in configuration order.
    queues: Vec<(String, QueueState)>,
    /// Waiting call → its queue's key.
    where_waits: HashMap<CallRef, String>,
    agents: HashMap<String, AgentStats>,
    /// Agents an offer rings now (they are offered one call at a time).
    offered: HashSet<String>,
    /// Answered queue calls' agent legs → (agent, answered at).
    talking: HashMap<u64, (String, Instant)>,
    timers: BinaryHeap<Reverse<(Instant, AcdTimer)>>,
    out: VecDeque<AcdOutput>,
}

fn key(number: &str, domain: &str) -> String {
    format!("{number}@{domain}")
}

impl Queues {
    pub fn new(accounts: &[Account]) -> Queues {
        let mut q = Queues::default();
        q.reconfigure(accounts);
        q
    }

    /// Takes the queues of a new configuration. Waiting callers stay; the
    /// callers of a queue that is gone leave it as if they had waited too
    /// long (to its overflow).
    pub fn reconfigure(&mut self, accounts: &[Account]) {
        let mut old: HashMap<String, QueueState> = self.queues.drain(..).collect();
        for account in accounts {
            for config in &account.queues {
                let k = key(&config.number, &account.domain);
                let state = match old.remove(&k) {
                    Some(mut s) => {
                        s.config = config.clone();
                        s
                    }
                    None => QueueState {
                        config: config.clone(),
                        domain: account.domain.clone(),
                        waiting: VecDeque::new(),
                        next_member: 0,
                        stats: QueueStats::default(),
                    },
                };
                self.queues.push((k, state));
            }
        }
        for (k, gone) in old {
            for w in gone.waiting {
                self.where_waits.remove(&w.call);
                for a in w.offered {
                    self.offered.remove(&a);
                }
                self.out.push_back(AcdOutput::WaitedTooLong {
                    call: w.call,
                    domain: gone.domain.clone(),
                    queue: gone.config.number.clone(),
                    overflow: gone.config.overflow.clone(),
                });
            }
            tracing::info!(queue = %k, "queue removed; its callers leave it");
        }
    }

    /// Whether any caller waits in any queue.
    pub fn has_waiting(&self) -> bool {
        !self.where_waits.is_empty()
    }

    pub fn poll_output(&mut self) -> Option<AcdOutput> {
        self.out.pop_front()
    }

    fn queue_mut(&mut self, k: &str) -> Option<&mut QueueState> {
        self.queues.iter_mut().find(|(q, _)| q == k).map(|(_, s)| s)
    }

    /// Puts `call` in queue `number` of `domain`; its position (1 = next).
    pub fn enqueue(
        &mut self,
        domain: &str,
        number: &str,
        call: CallRef,
        max_wait: Option<Duration>,
        agents: &Agents,
        now: Now,
    ) -> Result<usize, Refusal> {
        let k = key(number, domain);
        let Some(q) = self.queue_mut(&k) else {
            return Err(Refusal::NoAgents);
        };
        if q.config.max_callers.is_some_and(|max| q.waiting.len() >= max) {
            return Err(Refusal::Full);
        }
        if q.config.refuse_without_agents {
            let logged_in = q.config.members.iter().any(|m| {
                let s = agents.state(&format!("{}@{domain}", m.extension));
                !matches!(s, AgentState::Offline | AgentState::NotReady { .. })
            });
            if !logged_in {
                return Err(Refusal::NoAgents);
            }
        }
        q.waiting.push_back(Waiter {
            call,
            since: now.mono,
            offered: Vec::new(),
            next_try: now.mono,
        });
        let position = q.waiting.len();
        if let Some(max) = max_wait.or(q.config.max_wait) {
            self.timers.push(Reverse((now.mono + max, AcdTimer::MaxWait(call))));
        }
        self.where_waits.insert(call, k);
        Ok(position)
    }

    /// Whether `call` waits in a queue now.
    pub fn is_waiting(&self, call: CallRef) -> bool {
        self.where_waits.contains_key(&call)
    }

    /// Takes `call` out of its queue; its offers are over.
    fn remove(&mut self, call: CallRef) -> Option<(String, Waiter)> {
        let k = self.where_waits.remove(&call)?;
        let q = self.queue_mut(&k)?;
        let i = q.waiting.iter().position(|w| w.call == call)?;
        let w = q.waiting.remove(i)?;
        for a in &w.offered {
            self.offered.remove(a);
        }
        Some((k, w))
    }

    /// The caller hung up while waiting.
    pub fn abandoned(&mut self, call: CallRef, now: Now) {
        if let Some((k, _)) = self.remove(call) {
            if let Some(q) = self.queue_mut(&k) {
                q.stats_today(now).abandoned += 1;
            }
        }
    }

    /// The caller left the queue for another reason (its time ran out,
    /// the dialplan ended it): counted as timed out.
    pub fn left(&mut self, call: CallRef, now: Now) {
        if let Some((k, _)) = self.remove(call) {
            if let Some(q) = self.queue_mut(&k) {
                q.stats_today(now).timed_out += 1;
            }
        }
    }

    /// An agent's offer for `call` ended. Answered: the caller leaves the
    /// queue and the agent's talk time counts from now. Returns the
    /// answered queue's settings (for after-call work).
    pub fn offer_ended(&mut self, call: CallRef, agent: &str, outcome: OfferOutcome, now: Now) -> Option<&Queue> {
        let stats = self.agents.entry(agent.to_string()).or_default();
        match outcome {
            OfferOutcome::Answered { leg } => {
                stats.no_answer_streak = 0;
                stats.calls += 1;
                self.talking.insert(leg, (agent.to_string(), now.mono));
                let (k, w) = self.remove(call)?;
                let q = self.queue_mut(&k)?;
                let level = q.config.service_level;
                let today = q.stats_today(now);
                today.answered += 1;
                if now.mono.saturating_duration_since(w.since) <= level {
                    today.answered_in_level += 1;
                }
                return Some(&self.queue_mut(&k)?.config);
            }
            OfferOutcome::NoAnswer => {
                stats.no_answer_streak += 1;
                let streak = stats.no_answer_streak;
                let limit = self
                    .where_waits
                    .get(&call)
                    .and_then(|k| self.queues.iter().find(|(q, _)| q == k))
                    .map_or(0, |(_, q)| q.config.max_no_answer);
                if limit > 0 && streak >= limit {
                    self.agents.get_mut(agent).expect("inserted").no_answer_streak = 0;
                    self.out.push_back(AcdOutput::TooManyMissed { aor: agent.to_string() });
                }
            }
            OfferOutcome::Failed => {}
        }
        // Still waiting: the agent is free of this offer, and the caller
        // waits for the next one once all of this one have ended.
        let k = self.where_waits.get(&call)?.clone();
        let q = self.queue_mut(&k)?;
        let retry = q.config.retry;
        let w = q.waiting.iter_mut().find(|w| w.call == call)?;
        if !w.offered.iter().any(|a| a == agent) {
            return None;
        }
        w.offered.retain(|a| a != agent);
        let over = w.offered.is_empty();
        if over {
            w.next_try = now.mono + retry;
        }
        self.offered.remove(agent);
        if over {
            self.timers.push(Reverse((now.mono + retry, AcdTimer::Retry)));
        }
        None
    }

    /// Follows the end of answered queue calls (talk time, idle since).
    pub fn on_event(&mut self, event: &DomainEvent, now: Instant) {
        if let DomainEvent::LegState {
            leg,
            phase: LegPhase::Terminated,
            ..
        } = event
        {
            if let Some((agent, since)) = self.talking.remove(leg) {
                let stats = self.agents.entry(agent).or_default();
                stats.talk += now.saturating_duration_since(since);
                stats.last_end = Some(now);
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(Reverse((at, t))) = self.timers.peek().copied() {
            if at > now.mono {
                break;
            }
            self.timers.pop();
            if let AcdTimer::MaxWait(call) = t {
                if let Some((k, _)) = self.remove(call) {
                    let q = self.queue_mut(&k).expect("removed from it");
                    q.stats_today(now).timed_out += 1;
                    let (domain, queue) = (q.domain.clone(), q.config.number.clone());
                    let overflow = q.config.overflow.clone();
                    self.out.push_back(AcdOutput::WaitedTooLong {
                        call,
                        domain,
                        queue,
                        overflow,
                    });
                }
            }
            // Retry: the next dispatch looks again.
        }
    }

    /// Offers waiting callers to ready agents: in each queue, callers in
    /// order of arrival, agents by the queue's tiers and strategy; an agent
    /// is offered one call at a time.
    pub fn dispatch(&mut self, agents: &Agents, now: Now) {
        if self.where_waits.is_empty() {
            return;
        }
        for (_, q) in self.queues.iter_mut() {
            if q.waiting.is_empty() {
                continue;
            }
            let domain = q.domain.clone();
            // Members free for an offer, with their member index.
            let mut free: Vec<usize> = (0..q.config.members.len())
                .filter(|&i| {
                    let aor = format!("{}@{domain}", q.config.members[i].extension);
                    !self.offered.contains(&aor) && agents.state(&aor) == AgentState::Ready
                })
                .collect();
            for w in q.waiting.iter_mut() {
                if free.is_empty() {
                    break;
                }
                if !w.offered.is_empty() || w.next_try > now.mono {
                    continue;
                }
                let picked = pick(&q.config, &domain, &free, &mut q.next_member, &self.agents);
                free.retain(|i| !picked.contains(i));
                let exts: Vec<String> = picked.iter().map(|&i| q.config.members[i].extension.clone()).collect();
                for e in &exts {
                    let aor = format!("{e}@{domain}");
                    self.offered.insert(aor.clone());
                    w.offered.push(aor);
                }
                self.out.push_back(AcdOutput::Offer {
                    call: w.call,
                    domain: domain.clone(),
                    queue: q.config.number.clone(),
                    agents: exts,
                    timeout: q.config.agent_timeout,
                });
            }
        }
    }

    /// Every queue's figures now.
    pub fn views(&mut self, agents: &Agents, now: Now) -> Vec<QueueView> {
        self.queues
            .iter_mut()
            .map(|(_, q)| {
                let domain = q.domain.clone();
                let mut by_state = BTreeMap::new();
                for m in &q.config.members {
                    let s = agents.state(&format!("{}@{domain}", m.extension));
                    *by_state.entry(s.name().to_string()).or_insert(0) += 1;
                }
                let waiting = q.waiting.len();
                let longest = q
                    .waiting
                    .front()
                    .map_or(0, |w| now.mono.saturating_duration_since(w.since).as_secs());
                let (number, name) = (q.config.number.clone(), q.config.name.clone());
                let strategy = serde_json::to_value(q.config.strategy)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let s = q.stats_today(now).clone();
                QueueView {
                    number,
                    name,
                    domain,
                    strategy,
                    waiting,
                    longest_wait_s: longest,
                    agents: by_state,
                    answered: s.answered,
                    abandoned: s.abandoned,
                    timed_out: s.timed_out,
                    service_level_pct: (s.answered_in_level * 100).checked_div(s.answered).unwrap_or(100),
                }
            })
            .collect()
    }
}

/// The members (indices) a caller is offered to: among the `free` ones,
/// those of the lowest tier, then by strategy.
fn pick(
    config: &Queue,
    domain: &str,
    free: &[usize],
    next_member: &mut usize,
    stats: &HashMap<String, AgentStats>,
) -> Vec<usize> {
    let tier = free.iter().map(|&i| config.members[i].tier).min().unwrap_or(0);
    let candidates: Vec<usize> = free
        .iter()
        .copied()
        .filter(|&i| config.members[i].tier == tier)
        .collect();
    let stat = |i: usize| stats.get(&format!("{}@{domain}", config.members[i].extension));
    let one = match config.strategy {
        QueueStrategy::RingAll => return candidates,
        QueueStrategy::Linear => candidates.first().copied(),
        QueueStrategy::RoundRobin => {
            let n = config.members.len().max(1);
            let start = *next_member % n;
            let chosen = candidates.iter().copied().min_by_key(|&i| (i + n - start) % n);
            if let Some(c) = chosen {
                *next_member = c + 1;
            }
            chosen
        }
        // Never had a queue call ranks first (as idle since forever);
        // ties go to member order.
        QueueStrategy::LongestIdle => candidates
            .iter()
            .copied()
            .min_by_key(|&i| stat(i).and_then(|s| s.last_end)),
        QueueStrategy::FewestCalls => candidates
            .iter()
            .copied()
            .min_by_key(|&i| stat(i).map_or(0, |s| s.calls)),
        QueueStrategy::LeastTalkTime => candidates
            .iter()
            .copied()
            .min_by_key(|&i| stat(i).map_or(Duration::ZERO, |s| s.talk)),
        QueueStrategy::Random => {
            let n = candidates.len();
            (n > 0).then(|| candidates[(rand::random::<u64>() % n as u64) as usize])
        }
    };
    one.into_iter().collect()
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
