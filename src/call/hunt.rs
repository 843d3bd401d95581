//! Ring groups that ring their members in turn (sequential, random): a
//! dial made of steps, each ringing one member's devices for the member
//! timeout, the next step when it fails or rings out, until someone
//! answers, the steps run out, or the group's ring timeout passes.

use super::originate::Contact;
use super::{CallEngine, CallRef};
use crate::clock::Now;
use crate::dialplan::{DialOutcome, Reply};
use std::collections::VecDeque;
use std::time::Duration;

impl CallEngine {
    /// `steps` rung one after the other; `simultaneous` groups are one step.
    pub fn dial_steps(
        &mut self,
        id: CallRef,
        callee: &str,
        steps: Vec<Vec<Contact>>,
        step: Duration,
        total: Duration,
        now: Now,
    ) {
        if !self.may_dial(id) {
            return;
        }
        let call = self.calls.get_mut(&id).expect("checked");
        call.callee = callee.to_string();
        let mut steps: VecDeque<Vec<Contact>> = steps.into_iter().filter(|s| !s.is_empty()).collect();
        let Some(first) = steps.pop_front() else {
            // Nobody of the group is ready.
            call.last_failure = Some((480, Some("No Member Available".into())));
            return self.reply(id, Reply::Dialed(DialOutcome::new("no-answer", 480)));
        };
        call.hunt = steps;
        call.hunt_step = step;
        call.hunt_until = Some(now.mono + total);
        let domain = call.account.clone();
        let first_timeout = if call.hunt.is_empty() { total } else { step.min(total) };
        self.ring(id, first, None, &domain, Some(first_timeout), now);
    }

    /// The current step failed or rang out: rings the next one, if any is
    /// left and time remains (true).
    pub(super) fn next_hunt_step(&mut self, id: CallRef, now: Now) -> bool {
        let Some(call) = self.calls.get_mut(&id) else {
            return false;
        };
        let Some(until) = call.hunt_until else { return false };
        if now.mono >= until {
            call.hunt.clear();
            return false;
        }
        let Some(step) = call.hunt.pop_front() else {
            return false;
        };
        let timeout = call.hunt_step.min(until - now.mono);
        let domain = call.account.clone();
        // The dial is owed already: ring() owes it again.
        call.owed = None;
        // (If no leg could be originated, ring() has answered the dial.)
        self.ring(id, step, None, &domain, Some(timeout), now);
        true
    }
}
