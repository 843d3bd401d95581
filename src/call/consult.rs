//! Attended transfer by DTMF, for phones without a transfer key: the
//! agent dials `*2<number>#` during a call; the customer hears the hold
//! music while a consult leg rings `number` and, answered, talks with the
//! agent. The agent completes the transfer by hanging up or by `*2` again
//! (customer and target are joined), or cancels it with `*0` (back to the
//! customer). A consult that fails brings the agent back to the customer.

use super::ending::Ending;
use super::leg::{LegId, LegState};
use super::originate::Contact;
use super::{CallEngine, CallRef, Output};
use crate::clock::Now;
use crate::media::sdp;
use std::time::Duration;

/// An attended transfer being prepared in a conversation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Consult {
    /// The leg of the agent who asked.
    pub agent: LegId,
    /// The party on hold, to be transferred.
    pub customer: LegId,
    /// The leg to the target, once originated.
    pub target: Option<LegId>,
}

impl CallEngine {
    /// `*2<number>#` from the party of `x`: the customer waits with music
    /// and the driver is asked for `number`'s contacts
    /// ([`Output::Consult`]).
    pub(super) fn start_consult(&mut self, x: LegId, number: String) {
        let Some(y) = self.partner(x).filter(|y| self.legs[y].state.is_answered()) else {
            return;
        };
        let call = self.legs[&x].conversation;
        if self.calls.get(&call).is_none_or(|c| c.consult.is_some()) {
            return;
        }
        let _ = self.leave(x);
        let music = self.config.calls.hold_music.display().to_string();
        let _ = self.park(y, super::bridge::Source::Music(music));
        let c = self.calls.get_mut(&call).expect("exists");
        c.consult = Some(Consult {
            agent: x,
            customer: y,
            target: None,
        });
        tracing::info!(call = %self.legs[&x].dialog.call_id, number = %number, "consult for an attended transfer");
        let account = c.account.clone();
        self.out.push_back(Output::Consult { call, account, number });
    }

    /// Rings the consult's target (`contacts`, from the driver); none (or a
    /// target that may not be consulted) ends the consult.
    pub fn consult(&mut self, call: CallRef, contacts: Vec<Contact>, timeout: Duration, now: Now) {
        let Some(consult) = self.calls.get(&call).and_then(|c| c.consult) else {
            return;
        };
        let Some(first) = contacts.into_iter().next() else {
            return self.end_consult(call, now);
        };
        let domain = self.calls[&call].account.clone();
        let c = self.calls.get_mut(&call).expect("exists");
        c.offer_from = Some(consult.agent);
        let leg = self.originate(call, &first, &domain, now);
        if let Some(c) = self.calls.get_mut(&call) {
            c.offer_from = None;
        }
        match leg {
            Ok(leg) => {
                if let Some(k) = self.calls.get_mut(&call).and_then(|c| c.consult.as_mut()) {
                    k.target = Some(leg);
                }
                self.timer(now.mono + timeout, super::Timer::Offer(leg));
            }
            Err(e) => {
                tracing::warn!(error = %e, "consult leg not originated");
                self.end_consult(call, now);
            }
        }
    }

    /// Whether `leg` is the target leg of `call`'s consult.
    pub(super) fn is_consult_target(&self, call: CallRef, leg: LegId) -> bool {
        self.calls
            .get(&call)
            .and_then(|c| c.consult)
            .is_some_and(|k| k.target == Some(leg))
    }

    /// The consult leg `c` of `call` answered: the agent talks with it.
    pub(super) fn consult_answered(&mut self, call: CallRef, c: LegId, now: Now) {
        let Some(consult) = self
            .calls
            .get(&call)
            .and_then(|k| k.consult)
            .filter(|k| k.target == Some(c))
        else {
            return;
        };
        self.calls.get_mut(&call).expect("exists").ringing.retain(|l| *l != c);
        self.set_state(c, LegState::Answered { acked: true });
        if let Some(l) = self.legs.get_mut(&c) {
            l.answer_ms = Some(now.unix_ms);
        }
        let _ = self.bridge_legs(consult.agent, c);
        tracing::info!(call, target = %self.legs[&c].party, "consult answered");
    }

    /// Digits while a consult is on: `*2` completes it (once the target
    /// answered), `*0` cancels it. True if taken.
    pub(super) fn consult_keys(&mut self, x: LegId, complete: &str, now: Now) -> bool {
        let call = self.legs[&x].conversation;
        let Some(k) = self.calls.get(&call).and_then(|c| c.consult).filter(|k| k.agent == x) else {
            return false;
        };
        let typed = &self.legs[&x].dtmf;
        if typed.ends_with("*0") {
            self.legs.get_mut(&x).expect("exists").dtmf.clear();
            self.end_consult(call, now);
            return true;
        }
        let answered = k
            .target
            .is_some_and(|t| self.legs.get(&t).is_some_and(|l| l.state.is_answered()));
        if !complete.is_empty() && typed.ends_with(complete) && answered {
            self.legs.get_mut(&x).expect("exists").dtmf.clear();
            self.complete_consult(call, now);
            self.end_leg(x, &Ending::system(200, "Transferred"), now);
            self.settle(call, now);
            return true;
        }
        false
    }

    /// The agent hung up during an answered consult: the transfer is done.
    /// True if so (the agent's leg is then the caller's to finish).
    pub(super) fn consult_hangup(&mut self, x: LegId, now: Now) -> bool {
        let call = self.legs[&x].conversation;
        let Some(k) = self.calls.get(&call).and_then(|c| c.consult).filter(|k| k.agent == x) else {
            return false;
        };
        let answered = k
            .target
            .is_some_and(|t| self.legs.get(&t).is_some_and(|l| l.state.is_answered()));
        if answered {
            self.complete_consult(call, now);
            return true;
        }
        // Hung up while the target still rings: the consult goes too.
        self.end_consult(call, now);
        false
    }

    /// Joins the customer and the target; the agent's leg is left alone.
    fn complete_consult(&mut self, call: CallRef, _now: Now) {
        let Some(k) = self.calls.get_mut(&call).and_then(|c| c.consult.take()) else {
            return;
        };
        let Some(target) = k.target else { return };
        let _ = self.leave(k.agent);
        let _ = self.bridge_legs(k.customer, target);
        let party = self.legs[&target].party.clone();
        tracing::info!(call = call, target = %party, "attended transfer completed");
        let c = self.calls.get_mut(&call).expect("exists");
        c.connected = Some(target);
        c.transferred_to = Some(party);
    }

    /// Ends a consult without a transfer: the target's leg (if any) goes,
    /// the agent is back with the customer.
    pub(super) fn end_consult(&mut self, call: CallRef, now: Now) {
        let Some(k) = self.calls.get_mut(&call).and_then(|c| c.consult.take()) else {
            return;
        };
        if let Some(t) = k.target {
            self.end_leg(t, &Ending::system(487, "Consult cancelled"), now);
        }
        if self.legs.contains_key(&k.agent) && self.legs.contains_key(&k.customer) {
            let _ = self.bridge_legs(k.agent, k.customer);
        }
        tracing::info!(call = call, "consult ended; back to the customer");
    }

    /// The consult target's leg ended unanswered (busy, no answer).
    pub(super) fn consult_target_gone(&mut self, leg: LegId, now: Now) {
        let Some(call) = self.legs.get(&leg).map(|l| l.conversation) else {
            return;
        };
        let is_target = self
            .calls
            .get(&call)
            .and_then(|c| c.consult)
            .is_some_and(|k| k.target == Some(leg));
        if is_target {
            if let Some(k) = self.calls.get_mut(&call).and_then(|c| c.consult.as_mut()) {
                k.target = None;
            }
            self.end_consult(call, now);
        }
    }

    /// The SDP a leg agreed on: ours for a party that called us, theirs for
    /// one we called.
    pub(super) fn negotiated_sdp(&self, leg: LegId) -> Option<bytes::Bytes> {
        let l = self.legs.get(&leg)?;
        match l.direction {
            super::leg::Direction::Inbound => l.local_sdp.clone(),
            super::leg::Direction::Outbound => l.remote_sdp.clone(),
        }
        .filter(|b| sdp::media_info(b).is_ok())
    }
}
