//! The call side of queues: a caller entering a queue is answered and
//! parked hearing the queue's music; offers are outbound legs to agents
//! (the queue in `X-Queue`, its name before the caller's in the display
//! name); the first agent to answer is bridged with the caller (the link
//! replaces the music, no re-INVITE, no new ringback) and the other
//! offers are cancelled. How each agent's offer ended goes back to the
//! ACD as [`Output::OfferEnded`](super::Output::OfferEnded).

use super::bridge::Source;
use super::leg::{LegId, LegState};
use super::originate::Contact;
use super::{CallEngine, CallRef, Output, Owed, Timer};
use crate::cdr::QueueRecord;
use crate::clock::Now;
use crate::dialplan::{DialOutcome, Reply};
use crate::events::OfferOutcome;
use std::time::Duration;

/// A conversation waiting in (or answered from) a queue.
#[derive(Debug)]
pub(super) struct QueueWait {
    pub number: String,
    pub name: String,
    pub since_ms: u64,
    /// Offer legs ringing, with the agent each rings.
    pub offers: Vec<(LegId, String)>,
    pub record: QueueRecord,
}

impl CallEngine {
    /// The caller enters queue `number`: answered (if not yet) and parked
    /// hearing `music` until an agent answers or it leaves. The dialplan's
    /// `queue()` returns when the answered call ends or the caller leaves.
    /// False (and the dialplan told why) if the call cannot wait.
    pub fn enter_queue(&mut self, id: CallRef, number: &str, name: &str, music: &str, now: Now) -> bool {
        let Some(c) = self.calls.get(&id) else {
            self.reply(id, Reply::CallEnded);
            return false;
        };
        if c.connected.is_some() || c.owed.is_some() {
            self.reply(id, Reply::Failed("queue: the call is already connected or busy".into()));
            return false;
        }
        let origin = match self.answer_with_relay(id, now) {
            Ok(origin) => origin,
            Err(r) => {
                self.reply(id, r);
                return false;
            }
        };
        let Some(c) = self.calls.get_mut(&id) else { return false };
        c.owed = Some(Owed::Queue);
        c.callee = number.to_string();
        c.queue = Some(QueueWait {
            number: number.to_string(),
            name: name.to_string(),
            since_ms: now.unix_ms,
            offers: Vec::new(),
            record: QueueRecord {
                queue: number.to_string(),
                wait_s: 0,
                agent: None,
                outcome: "abandoned".into(),
                acw_s: None,
            },
        });
        if let Err(e) = self.park(origin, Source::Music(music.to_string())) {
            tracing::warn!(queue = number, error = %e, "music on hold not played");
        }
        true
    }

    /// A queue that would not take the caller: recorded as refused; with
    /// `reply` (result, SIP status for an unanswered caller), `queue()`
    /// returns it now.
    pub fn queue_refused(&mut self, id: CallRef, number: &str, reply: Option<(&str, u16)>) {
        let Some(c) = self.calls.get_mut(&id) else {
            return self.reply(id, Reply::CallEnded);
        };
        c.queue_records.push(QueueRecord {
            queue: number.to_string(),
            wait_s: 0,
            agent: None,
            outcome: "refused".into(),
            acw_s: None,
        });
        if let Some((result, code)) = reply {
            c.last_failure = Some((code, None));
            self.reply(id, Reply::Dialed(DialOutcome::new(result, code)));
        }
    }

    /// Rings the agents' `contacts` for the waiting caller of `id`.
    pub fn offer(&mut self, id: CallRef, contacts: Vec<Contact>, timeout: Duration, now: Now) {
        let Some(c) = self.calls.get(&id) else { return };
        let domain = c.account.clone();
        for contact in contacts {
            let agent = contact.target.clone();
            match self.originate(id, &contact, &domain, now) {
                Ok(leg) => {
                    if let Some(q) = self.calls.get_mut(&id).and_then(|c| c.queue.as_mut()) {
                        q.offers.push((leg, agent));
                    }
                    self.timer(now.mono + timeout, Timer::Offer(leg));
                }
                Err(e) => {
                    tracing::warn!(agent = %agent, error = %e, "queue offer not originated");
                    self.out.push_back(Output::OfferEnded {
                        call: id,
                        account: domain.clone(),
                        agent,
                        outcome: OfferOutcome::Failed,
                    });
                }
            }
        }
    }

    /// An offer leg stopped ringing with `outcome`: the agent's offer is
    /// over once none of its devices rings any more.
    pub(super) fn end_offer(&mut self, leg: LegId, outcome: OfferOutcome) {
        let Some(call) = self.legs.get(&leg).map(|l| l.conversation) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else { return };
        let Some(q) = c.queue.as_mut() else { return };
        let Some(i) = q.offers.iter().position(|(l, _)| *l == leg) else {
            return;
        };
        let (_, agent) = q.offers.remove(i);
        let answered = matches!(outcome, OfferOutcome::Answered { .. });
        if !answered && q.offers.iter().any(|(_, a)| *a == agent) {
            return;
        }
        let account = c.account.clone();
        self.out.push_back(Output::OfferEnded {
            call,
            account,
            agent,
            outcome,
        });
    }

    /// An offer rang for the queue's agent timeout.
    pub(super) fn offer_timed_out(&mut self, leg: LegId, now: Now) {
        if self.legs.get(&leg).is_some_and(|l| l.state.is_pending()) {
            self.end_offer(leg, OfferOutcome::NoAnswer);
            self.cancel_leg(leg, now);
        }
    }

    /// An agent answered offer `leg`: the caller is bridged with it, the
    /// other offers are cancelled.
    pub(super) fn offer_answered(&mut self, leg: LegId, now: Now) {
        let Some(call) = self.legs.get(&leg).map(|l| l.conversation) else {
            return;
        };
        self.end_offer(leg, OfferOutcome::Answered { leg: leg.0 });
        let Some(c) = self.calls.get_mut(&call) else { return };
        let others: Vec<LegId> = c
            .queue
            .as_mut()
            .map(|q| q.offers.drain(..).map(|(l, _)| l).collect())
            .unwrap_or_default();
        let origin = c.origin;
        let agent = self.legs[&leg].party.clone();
        if let Some(q) = c.queue.as_mut() {
            q.record.agent = Some(agent.clone());
            q.record.outcome = "answered".into();
            q.record.wait_s = now.unix_ms.saturating_sub(q.since_ms) / 1000;
        }
        for other in others {
            // Cancelled: not the agent's fault.
            if let Some(a) = self.legs.get(&other).map(|l| l.party.clone()) {
                let account = self.calls[&call].account.clone();
                self.out.push_back(Output::OfferEnded {
                    call,
                    account,
                    agent: a,
                    outcome: OfferOutcome::Failed,
                });
            }
            self.cancel_leg(other, now);
        }
        let _ = self.bridge_legs(origin, leg);
        self.transfer_outcome(call, "connected");
        tracing::info!(call = %self.legs[&origin].dialog.call_id, agent = %agent, "queue call answered");
    }

    /// The caller leaves its queue without an agent (`outcome`: "timeout",
    /// "overflow"): offers cancelled, music stopped. With `reply`, the
    /// dialplan's `queue()` returns it now.
    pub fn leave_queue(&mut self, id: CallRef, outcome: &str, reply: Option<&str>, now: Now) {
        let Some(c) = self.calls.get_mut(&id) else { return };
        let Some(mut q) = c.queue.take() else { return };
        q.record.outcome = outcome.to_string();
        q.record.wait_s = now.unix_ms.saturating_sub(q.since_ms) / 1000;
        c.queue_records.push(q.record);
        let origin = c.origin;
        // Without a reply here, where the call goes next answers queue().
        let owed = c.owed == Some(Owed::Queue);
        if owed {
            c.owed = None;
        }
        for (leg, agent) in q.offers {
            let account = self.calls[&id].account.clone();
            self.out.push_back(Output::OfferEnded {
                call: id,
                account,
                agent,
                outcome: OfferOutcome::Failed,
            });
            self.cancel_leg(leg, now);
        }
        let _ = self.park(origin, Source::Silence);
        if let (Some(r), true) = (reply, owed) {
            self.reply(id, Reply::Dialed(DialOutcome::new(r, 408)));
        }
    }

    /// Whether `leg` is an offer of a queue.
    pub(super) fn is_offer(&self, leg: LegId) -> bool {
        let Some(call) = self.legs.get(&leg).map(|l| l.conversation) else {
            return false;
        };
        self.calls
            .get(&call)
            .and_then(|c| c.queue.as_ref())
            .is_some_and(|q| q.offers.iter().any(|(l, _)| *l == leg))
    }

    /// A queue offer's leg ended without an answer (its final status).
    pub(super) fn offer_failed(&mut self, leg: LegId, status: u16) {
        let outcome = match status {
            // Rang out, or the agent declined.
            408 | 480 | 603 => OfferOutcome::NoAnswer,
            _ => OfferOutcome::Failed,
        };
        self.end_offer(leg, outcome);
    }

    /// The display name queue offers show the agent, `Queue: caller`
    /// (`name` if given, else the caller's number), and the queue's number.
    pub(super) fn offer_display(&self, id: CallRef, name: Option<&str>) -> Option<(String, String)> {
        let c = self.calls.get(&id)?;
        let q = c.queue.as_ref()?;
        let who = name.filter(|n| !n.is_empty()).unwrap_or(&c.caller_number);
        Some((format!("{}: {who}", q.name), q.number.clone()))
    }

    /// Whether the origin of `id` was answered by us and waits parked (in
    /// a queue, or after one) rather than connected.
    pub(super) fn origin_parked(&self, id: CallRef) -> bool {
        let Some(c) = self.calls.get(&id) else { return false };
        c.connected.is_none()
            && self
                .legs
                .get(&c.origin)
                .is_some_and(|l| matches!(l.state, LegState::Answered { .. }))
    }
}
