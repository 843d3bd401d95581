//! Monitoring: a supervisor's call joins an agent's bridge as a listener
//! (hears both, heard by nobody), a whisperer (hears both, heard by the
//! agent only) or a talker (barge: heard by both). The bridge is then
//! mixed (see `bridge`). When the monitored call ends, its monitors are
//! hung up; when a monitor hangs up, the call goes on.

use super::bridge::Role;
use super::leg::{LegId, LegState};
use super::{CallEngine, CallRef};
use crate::clock::Now;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorMode {
    Listen,
    Whisper,
    Barge,
}

impl MonitorMode {
    pub fn name(self) -> &'static str {
        match self {
            MonitorMode::Listen => "listen",
            MonitorMode::Whisper => "whisper",
            MonitorMode::Barge => "barge",
        }
    }
}

impl CallEngine {
    /// The leg of user `ext` of `account` that is talking in a bridge now.
    pub fn talking_leg(&self, account: &str, ext: &str) -> Option<LegId> {
        self.legs
            .values()
            .filter(|l| l.party == ext && matches!(l.state, LegState::Answered { .. }))
            .filter(|l| self.calls.get(&l.conversation).is_some_and(|c| c.account == account))
            .find(|l| {
                l.bridge
                    .and_then(|b| self.bridges.get(&b))
                    .is_some_and(|b| b.members.iter().any(|(m, r)| *m == l.id && *r == Role::Talk))
            })
            .map(|l| l.id)
    }

    /// Answers the caller of `sup` and joins it to the bridge of
    /// `agent_leg` in `mode`.
    pub fn monitor(&mut self, sup: CallRef, agent_leg: LegId, mode: MonitorMode, now: Now) -> Result<(), String> {
        let bridge = self.bridge_of(agent_leg).ok_or("the agent is not on a call")?;
        let leg = self
            .answer_with_relay(sup, now)
            .map_err(|_| "the supervisor's call cannot be answered")?;
        let role = match mode {
            MonitorMode::Listen => Role::Listen,
            MonitorMode::Whisper => Role::Whisper(agent_leg),
            MonitorMode::Barge => Role::Talk,
        };
        self.join(leg, bridge, role).map_err(|e| e.to_string())?;
        let agent = self.legs[&agent_leg].party.clone();
        if let Some(c) = self.calls.get_mut(&sup) {
            c.callee = agent.clone();
            c.monitor = Some(crate::cdr::MonitorRecord {
                agent,
                mode: mode.name().to_string(),
            });
        }
        Ok(())
    }

    /// Legs of other conversations that go with conversation `id`'s legs:
    /// the partner a transfer joined them to, and their monitors.
    pub(super) fn companions_elsewhere(&self, id: CallRef, legs: &[LegId]) -> Vec<LegId> {
        let mut out: Vec<LegId> = legs
            .iter()
            .flat_map(|l| self.partner(*l).into_iter().chain(self.monitors_of(*l)))
            .filter(|p| self.legs.get(p).is_some_and(|pl| pl.conversation != id))
            .collect();
        out.dedup();
        out
    }
}
