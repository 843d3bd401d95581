//! Agent states (the seed's softphone states), followed from domain
//! events, sans-IO: `offline` (no registered device), `ready`, `ringing`
//! (a call to the agent rings), `in_call` (talking on any call), and
//! `not_ready` with a reason. The agent chooses between ready and
//! not_ready; the rest follows from registrations and legs. Every change
//! is a domain event.

pub use crate::events::AgentState;
use crate::events::{DomainEvent, LegPhase};
use foldhash::{HashMap, HashMapExt, HashSet};
use std::collections::VecDeque;

#[derive(Debug, Default)]
struct Agent {
    registered: bool,
    /// The agent's own choice: None is ready.
    not_ready: Option<String>,
    /// Legs facing the agent, ringing and answered.
    ringing: HashSet<u64>,
    talking: HashSet<u64>,
}

impl Agent {
    fn state(&self) -> AgentState {
        if !self.registered {
            AgentState::Offline
        } else if !self.talking.is_empty() {
            AgentState::InCall
        } else if !self.ringing.is_empty() {
            AgentState::Ringing
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
    out: VecDeque<DomainEvent>,
}

impl Agents {
    pub fn new() -> Agents {
        Agents {
            agents: HashMap::new(),
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
    pub fn on_event(&mut self, event: &DomainEvent) {
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
                    }
                });
            }
            _ => {}
        }
    }

    /// The agent's own choice: ready (None) or not ready with a reason.
    pub fn set_not_ready(&mut self, aor: &str, reason: Option<String>) {
        self.change(aor, |a| a.not_ready = reason);
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
        let aor = "1004@pbx.test";
        assert_eq!(a.state(aor), AgentState::Offline);
        a.on_event(&registered(1));
        assert_eq!(a.state(aor), AgentState::Ready);
        a.set_not_ready(aor, Some("lunch".into()));
        assert_eq!(a.state(aor), AgentState::NotReady { reason: "lunch".into() });
        a.set_not_ready(aor, None);
        // A call rings, is answered; a second one rings meanwhile; both end.
        a.on_event(&leg("1004", 7, LegPhase::Early));
        assert_eq!(a.state(aor), AgentState::Ringing);
        a.on_event(&leg("1004", 7, LegPhase::Confirmed));
        a.on_event(&leg("1004", 9, LegPhase::Early));
        assert_eq!(a.state(aor), AgentState::InCall, "talking wins over ringing");
        a.on_event(&leg("1004", 9, LegPhase::Terminated));
        a.on_event(&leg("1004", 7, LegPhase::Terminated));
        assert_eq!(a.state(aor), AgentState::Ready);
        a.on_event(&registered(0));
        assert_eq!(a.state(aor), AgentState::Offline);
        // A leg of someone never registered is not an agent.
        a.on_event(&leg("+34600111222", 11, LegPhase::Confirmed));
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
}
