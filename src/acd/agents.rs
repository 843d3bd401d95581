//! Agent states (the seed's softphone states), followed from domain
//! events, sans-IO: `offline` (no registered device), `ready`, `ringing`
//! (a call to the agent rings), `in_call` (talking on any call), `acw`
//! (after-call work, once a queue call ends) and `not_ready` with a
//! reason. The agent chooses between ready and not_ready (kept in the
//! store: it survives a restart); the rest follows from registrations,
//! legs and queue calls. Every change is a domain event.

pub use crate::events::AgentState;
use crate::events::{DomainEvent, LegPhase};
use crate::store::{Key, StoreOp, Table};
use foldhash::{HashMap, HashMapExt, HashSet};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Agent {
    registered: bool,
    /// The agent's own choice: None is ready.
    not_ready: Option<String>,
    /// Legs facing the agent, ringing and answered.
    ringing: HashSet<u64>,
    talking: HashSet<u64>,
    /// Queue calls' legs: when one ends, after-call work starts, with
    /// the queue's limit (if switched on).
    acw_after: HashMap<u64, Option<Duration>>,
    /// In after-call work, until this time (None: until the agent ends it).
    acw: Option<Option<Instant>>,
}

impl Agent {
    fn state(&self) -> AgentState {
        if !self.registered {
            AgentState::Offline
        } else if !self.talking.is_empty() {
            AgentState::InCall
        } else if !self.ringing.is_empty() {
            AgentState::Ringing
        } else if self.acw.is_some() {
            AgentState::Acw
        } else if let Some(reason) = &self.not_ready {
            AgentState::NotReady { reason: reason.clone() }
        } else {
            AgentState::Ready
        }
    }
}

/// Every agent's state, by `ext@domain`.
#[derive(Default)]
pub struct Agents {
    agents: HashMap<String, Agent>,
    /// After-call-work limits: (when, agent).
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    out: VecDeque<DomainEvent>,
}

/// The stored form of an agent's choice (`ctl agent`, feature codes, Lua).
#[derive(serde::Serialize, serde::Deserialize)]
struct Choice {
    not_ready: Option<String>,
}

/// The row keeping `aor`'s choice: ready (no row) or not ready with a reason.
pub fn stored_choice(aor: &str, not_ready: &Option<String>) -> StoreOp {
    match not_ready {
        None => StoreOp::delete(Table::Agent, Key::text(aor)),
        Some(reason) => StoreOp::put_json(
            Table::Agent,
            Key::text(aor),
            &Choice {
                not_ready: Some(reason.clone()),
            },
        )
        .expect("a reason serializes"),
    }
}

/// The choices kept in the store, from its rows: (aor, not-ready reason).
pub fn choices_from_rows(rows: Vec<(Key, crate::store::Value)>) -> Vec<(String, String)> {
    rows.into_iter()
        .filter_map(|(k, v)| {
            let Key::Text(aor) = k else { return None };
            let reason = v.json::<Choice>()?.not_ready?;
            Some((aor, reason))
        })
        .collect()
}

impl Agents {
    pub fn new() -> Agents {
        Agents {
            agents: HashMap::new(),
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
        }
    }

    /// The next agent-state change to announce.
    pub fn poll_output(&mut self) -> Option<DomainEvent> {
        self.out.pop_front()
    }

    pub fn state(&self, aor: &str) -> AgentState {
        self.agents.get(aor).map_or(AgentState::Offline, Agent::state)
    }

    /// Follows a registration or leg change (other events change nothing).
    pub fn on_event(&mut self, event: &DomainEvent, now: Instant) {
        match event {
            DomainEvent::Registration { aor, contacts } => {
                self.change(aor, |a| a.registered = *contacts > 0);
            }
            DomainEvent::LegState {
                account,
                party,
                leg,
                phase,
                ..
            } => {
                let aor = format!("{party}@{account}");
                // Legs of people who are not agents (callers from outside)
                // are not tracked.
                if !self.agents.contains_key(&aor) {
                    return;
                }
                let mut limit_at = None;
                self.change(&aor, |a| match phase {
                    LegPhase::Trying | LegPhase::Early => {
                        a.ringing.insert(*leg);
                    }
                    LegPhase::Confirmed => {
                        a.ringing.remove(leg);
                        a.talking.insert(*leg);
                    }
                    LegPhase::Terminated => {
                        a.ringing.remove(leg);
                        a.talking.remove(leg);
                        // A limit of zero is no after-call work at all.
                        if let Some(limit) = a.acw_after.remove(leg).filter(|l| *l != Some(Duration::ZERO)) {
                            let until = limit.map(|l| now + l);
                            a.acw = Some(until);
                            limit_at = until;
                        }
                    }
                });
                if let Some(at) = limit_at {
                    self.timers.push(Reverse((at, aor)));
                }
            }
            _ => {}
        }
    }

    /// The agent answered a queue call on `leg`: when it ends, after-call
    /// work starts (ending by itself after `limit`, if given).
    pub fn acw_after(&mut self, aor: &str, leg: u64, limit: Option<Duration>) {
        if let Some(a) = self.agents.get_mut(aor) {
            a.acw_after.insert(leg, limit);
        }
    }

    /// Ends after-call work (`*52`, `ctl`, the limit); false if the agent
    /// was not in it.
    pub fn end_acw(&mut self, aor: &str) -> bool {
        let was = self.agents.get(aor).is_some_and(|a| a.acw.is_some());
        if was {
            self.change(aor, |a| a.acw = None);
        }
        was
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// After-call-work limits that have run out: those agents are ready
    /// (or not_ready, if they chose so) again.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, aor))) = self.timers.peek().cloned() {
            if at > now {
                break;
            }
            self.timers.pop();
            // Only if this is still the deadline of the current ACW.
            if self.agents.get(&aor).is_some_and(|a| a.acw == Some(Some(at))) {
                tracing::info!(aor = %aor, "after-call work limit reached");
                self.change(&aor, |a| a.acw = None);
            }
        }
    }

    /// The agent's own choice: ready (None) or not ready with a reason.
    /// Either ends after-call work.
    pub fn set_not_ready(&mut self, aor: &str, reason: Option<String>) {
        self.change(aor, |a| {
            a.not_ready = reason;
            a.acw = None;
        });
    }

    /// The agent's own choice as it is now.
    pub fn choice(&self, aor: &str) -> Option<String> {
        self.agents.get(aor).and_then(|a| a.not_ready.clone())
    }

    /// Every known agent and its state, by address.
    pub fn list(&self) -> Vec<(String, AgentState)> {
        let mut v: Vec<(String, AgentState)> = self.agents.iter().map(|(k, a)| (k.clone(), a.state())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn change(&mut self, aor: &str, f: impl FnOnce(&mut Agent)) {
        let agent = self.agents.entry(aor.to_string()).or_default();
        let before = agent.state();
        f(agent);
        let after = agent.state();
        if before != after {
            tracing::info!(aor = %aor, state = %after.name(), "agent state");
            self.out.push_back(DomainEvent::AgentState {
                aor: aor.to_string(),
                state: after,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(party: &str, leg: u64, phase: LegPhase) -> DomainEvent {
        DomainEvent::LegState {
            account: "pbx.test".into(),
            party: party.into(),
            leg,
            conversation: 1,
            phase,
            caller: None,
        }
    }

    fn registered(contacts: usize) -> DomainEvent {
        DomainEvent::Registration {
            aor: "1004@pbx.test".into(),
            contacts,
        }
    }

    #[test]
    fn states_follow_registrations_calls_and_the_agents_choice() {
        let mut a = Agents::new();
        let now = Instant::now();
        let aor = "1004@pbx.test";
        assert_eq!(a.state(aor), AgentState::Offline);
        a.on_event(&registered(1), now);
        assert_eq!(a.state(aor), AgentState::Ready);
        a.set_not_ready(aor, Some("lunch".into()));
        assert_eq!(a.state(aor), AgentState::NotReady { reason: "lunch".into() });
        a.set_not_ready(aor, None);
        // A call rings, is answered; a second one rings meanwhile; both end.
        a.on_event(&leg("1004", 7, LegPhase::Early), now);
        assert_eq!(a.state(aor), AgentState::Ringing);
        a.on_event(&leg("1004", 7, LegPhase::Confirmed), now);
        a.on_event(&leg("1004", 9, LegPhase::Early), now);
        assert_eq!(a.state(aor), AgentState::InCall, "talking wins over ringing");
        a.on_event(&leg("1004", 9, LegPhase::Terminated), now);
        a.on_event(&leg("1004", 7, LegPhase::Terminated), now);
        assert_eq!(a.state(aor), AgentState::Ready);
        a.on_event(&registered(0), now);
        assert_eq!(a.state(aor), AgentState::Offline);
        // A leg of someone never registered is not an agent.
        a.on_event(&leg("+34600111222", 11, LegPhase::Confirmed), now);
        assert_eq!(a.list().len(), 1);
        let changes: Vec<String> = std::iter::from_fn(|| a.poll_output())
            .filter_map(|e| match e {
                DomainEvent::AgentState { state, .. } => Some(state.name().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            changes,
            ["ready", "not_ready", "ready", "ringing", "in_call", "ready", "offline"]
        );
    }

    #[test]
    fn a_queue_call_ends_in_after_call_work_which_the_limit_or_the_agent_ends() {
        let mut a = Agents::new();
        let now = Instant::now();
        let aor = "1004@pbx.test";
        a.on_event(&registered(1), now);
        // With a 10 s limit: acw when the queue call's leg ends, ready 10 s later.
        a.acw_after(aor, 7, Some(Duration::from_secs(10)));
        a.on_event(&leg("1004", 7, LegPhase::Confirmed), now);
        a.on_event(&leg("1004", 7, LegPhase::Terminated), now);
        assert_eq!(a.state(aor), AgentState::Acw);
        assert_eq!(a.poll_timeout(), Some(now + Duration::from_secs(10)));
        a.handle_timeout(now + Duration::from_secs(9));
        assert_eq!(a.state(aor), AgentState::Acw);
        a.handle_timeout(now + Duration::from_secs(10));
        assert_eq!(a.state(aor), AgentState::Ready);
        // Without a limit it lasts until the agent ends it; a direct call
        // (no acw_after) leaves no after-call work.
        a.acw_after(aor, 9, None);
        a.on_event(&leg("1004", 9, LegPhase::Confirmed), now);
        a.on_event(&leg("1004", 9, LegPhase::Terminated), now);
        a.handle_timeout(now + Duration::from_secs(3600));
        assert_eq!(a.state(aor), AgentState::Acw);
        assert!(a.end_acw(aor));
        assert_eq!(a.state(aor), AgentState::Ready);
        a.on_event(&leg("1004", 11, LegPhase::Confirmed), now);
        a.on_event(&leg("1004", 11, LegPhase::Terminated), now);
        assert_eq!(a.state(aor), AgentState::Ready);
        // An old limit does not end a newer acw early.
        a.acw_after(aor, 12, Some(Duration::from_secs(5)));
        a.on_event(&leg("1004", 12, LegPhase::Terminated), now);
        a.end_acw(aor);
        a.acw_after(aor, 13, None);
        a.on_event(&leg("1004", 13, LegPhase::Terminated), now);
        a.handle_timeout(now + Duration::from_secs(6));
        assert_eq!(a.state(aor), AgentState::Acw);
    }
}
