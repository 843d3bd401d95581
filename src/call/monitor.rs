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

    /// A supervisor monitoring a call presses 1 (listen), 2 (whisper) or 3
    /// (barge): its role changes at once. True if the digit was taken.
    pub(super) fn switch_monitor_mode(&mut self, leg: LegId, digit: char) -> bool {
        let mode = match digit {
            '1' => MonitorMode::Listen,
            '2' => MonitorMode::Whisper,
            '3' => MonitorMode::Barge,
            _ => return false,
        };
        let Some(l) = self.legs.get(&leg) else { return false };
        let Some(agent) = self
            .calls
            .get(&l.conversation)
            .and_then(|c| c.monitor.as_ref())
            .map(|m| m.agent.clone())
        else {
            return false;
        };
        let Some(bridge) = l.bridge else { return false };
        let agent_leg = self.bridges[&bridge]
            .members
            .iter()
            .find(|(m, r)| *r == Role::Talk && *m != leg && self.legs.get(m).is_some_and(|x| x.party == agent))
            .map(|(m, _)| *m);
        let Some(agent_leg) = agent_leg else { return false };
        let role = match mode {
            MonitorMode::Listen => Role::Listen,
            MonitorMode::Whisper => Role::Whisper(agent_leg),
            MonitorMode::Barge => Role::Talk,
        };
        let b = self.bridges.get_mut(&bridge).expect("the leg's bridge");
        if let Some(member) = b.members.iter_mut().find(|(m, _)| *m == leg) {
            member.1 = role;
        }
        self.relink(bridge);
        let conversation = self.legs[&leg].conversation;
        if let Some(m) = self.calls.get_mut(&conversation).and_then(|c| c.monitor.as_mut()) {
            m.mode = mode.name().to_string();
        }
        tracing::info!(agent = %agent, mode = mode.name(), "monitoring mode switched");
        true
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
