//! How legs and conversations end: one leg at a time (its record, media
//! and bridge), a hang-up that leaves a two-party bridge with one talker
//! hangs that talker up too, a conversation's record is written when its
//! last leg ends; plus the timers (ring timeout, 2xx retransmission,
//! missing ACK), the media and duration sweep, and the live-call view.

use super::leg::{Direction, LegId, LegState};
use super::{CallEngine, CallRef, CallView, ClientPurpose, MediaStats, Output, Owed, Timer};
use crate::cdr::{unanswered_disposition, CallRecord, LegRecord, LiveLeg, LiveMark};
use crate::clock::Now;
use crate::dialplan::{DialOutcome, Reply};
use crate::events::{DomainEvent, LegPhase};
use crate::sip::{Method, SipMessage};
use std::cmp::Reverse;

/// Why and how a conversation ends.
pub(super) struct Ending {
    pub side: &'static str,
    /// Final status for an unanswered caller (with reason phrase).
    pub code: u16,
    pub reason: Option<String>,
}

impl Ending {
    pub fn by(side: &'static str, code: u16) -> Ending {
        Ending {
            side,
            code,
            reason: None,
        }
    }

    pub fn system(code: u16, reason: &str) -> Ending {
        Ending {
            side: "system",
            code,
            reason: Some(reason.to_string()),
        }
    }
}

impl CallEngine {
    /// A leg is over: its record is kept in the conversation, its media
    /// closed, it leaves its bridge and the conversation's live legs. What
    /// to send its party is the caller's business.
    pub(super) fn finish_leg(&mut self, id: LegId, code: u16, now: Now) {
        let Some(leg) = self.legs.get(&id) else { return };
        if leg.state == LegState::Cancelling {
            return;
        }
        let stats = self.media.stats(id.endpoint());
        self.ended_media.0 += stats.packets;
        self.ended_media.1 += stats.seq_gaps;
        let record = LegRecord {
            leg: id.0,
            call_id: leg.dialog.call_id.clone(),
            party: leg.party.clone(),
            direction: direction_name(leg.direction).into(),
            start_ms: leg.start_ms,
            answer_ms: leg.answer_ms,
            end_ms: now.unix_ms,
            sip_code: if leg.answer_ms.is_some() { 200 } else { code },
            rtp_packets: stats.packets,
            rtp_seq_gaps: stats.seq_gaps,
        };
        let (call_id, unanswered) = (leg.conversation, leg.answer_ms.is_none());
        if self.is_offer(id) {
            self.offer_failed(id, code);
        }
        if unanswered {
            self.consult_target_gone(id, now);
        }
        self.announce(id, LegPhase::Terminated);
        let _ = self.leave(id);
        self.media.close(id.endpoint(), now.mono);
        if let Some(call) = self.calls.get_mut(&call_id) {
            call.legs.retain(|l| *l != id);
            call.ringing.retain(|l| *l != id);
            call.ended_legs.push(record);
        }
    }

    /// Ends one live leg from our side: a final response to a pending
    /// inbound INVITE (sent once the record is stored), CANCEL for a
    /// pending outbound one, BYE for an answered one.
    pub(super) fn end_leg(&mut self, id: LegId, ending: &Ending, now: Now) {
        let Some(leg) = self.legs.get(&id) else { return };
        let call_id = leg.conversation;
        match (leg.direction, leg.state) {
            (_, LegState::Cancelling) => return,
            (Direction::Outbound, s) if s.is_pending() => return self.cancel_leg(id, now),
            (Direction::Inbound, s) if s.is_pending() => {
                let resp = self.response_on_leg(leg, ending.code, ending.reason.as_deref());
                let key = leg.uas.as_ref().map(|u| u.key.clone());
                if let (Some(key), Some(call)) = (key, self.calls.get_mut(&call_id)) {
                    call.after_write.push((key, resp));
                }
            }
            _ => {
                let leg = self.legs.get_mut(&id).expect("exists");
                let bye = leg.dialog.request(Method::Bye, None);
                let peer = leg.dialog.peer;
                self.send_request(bye, peer, ClientPurpose::Other);
            }
        }
        self.finish_leg(id, ending.code, now);
        self.forget_leg(id);
    }

    /// Ends every leg of a conversation (the dialplan's hangup, a CANCEL,
    /// timeouts) and writes its record.
    pub(super) fn end_conversation(&mut self, id: CallRef, ending: Ending, now: Now) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        call.hangup_side = ending.side;
        call.final_code = ending.code;
        let (legs, ringing) = (call.legs.clone(), std::mem::take(&mut call.ringing));
        // Legs of other conversations with ours (joined by a transfer,
        // monitoring) end with it.
        let joined = self.companions_elsewhere(id, &legs);
        for leg in ringing.into_iter().chain(legs) {
            self.end_leg(leg, &ending, now);
        }
        self.settle(id, now);
        for leg in joined {
            let Some(other) = self.legs.get(&leg).map(|l| l.conversation) else {
                continue;
            };
            self.end_leg(leg, &ending, now);
            self.settle(other, now);
        }
    }

    /// The party of `id` hung up (BYE, answered with `ok`): the leg ends,
    /// and so does a two-party call it was in: its other talker is hung
    /// up. Legs elsewhere in the conversation are not touched.
    pub(super) fn hung_up_by_party(&mut self, id: LegId, ok: (crate::sip::transaction::TxKey, SipMessage), now: Now) {
        // An agent hanging up an answered consult completes the transfer
        // (it has left the bridge: nobody else is hung up).
        if self.legs.contains_key(&id) {
            self.consult_hangup(id, now);
        }
        let Some(leg) = self.legs.get(&id) else { return };
        let call_id = leg.conversation;
        // A BYE in an early dialog (§15): the INVITE still gets its 487.
        let unanswered = match (&leg.uas, leg.state.is_pending()) {
            (Some(uas), true) => Some((uas.key.clone(), self.response_on_leg(leg, 487, None))),
            _ => None,
        };
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        let is_origin = call.origin == id;
        let side = if is_origin { "caller" } else { "callee" };
        call.after_write.push(ok);
        call.after_write.extend(unanswered);
        if call.connected == Some(id) || is_origin {
            call.hangup_side = side;
            call.final_code = 487;
        }
        // Its only fellow talker, if it was one of two, and then the
        // call's monitors.
        let partner = self.partner(id);
        let monitors: Vec<LegId> = self.monitors_of(id).into_iter().filter(|m| *m != id).collect();
        self.finish_leg(id, 487, now);
        self.forget_leg(id);
        let ending = Ending::by(side, 487);
        if let Some(p) = partner {
            for leg in std::iter::once(p).chain(monitors) {
                let other = self.legs.get(&leg).map(|l| l.conversation);
                self.end_leg(leg, &ending, now);
                // Joined by a transfer or monitoring: another conversation.
                if let Some(other) = other.filter(|o| *o != call_id) {
                    self.settle(other, now);
                }
            }
        }
        if is_origin {
            let ringing = std::mem::take(&mut self.calls.get_mut(&call_id).expect("exists").ringing);
            for leg in ringing {
                self.cancel_leg(leg, now);
            }
        }
        self.settle(call_id, now);
    }

    /// A conversation with no live legs left writes its record, then sends
    /// the answers that wait for it; one with legs left sends them now.
    pub(super) fn settle(&mut self, id: CallRef, now: Now) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        if !call.legs.is_empty() {
            for (key, resp) in std::mem::take(&mut call.after_write) {
                self.out.push_back(Output::Respond { key, resp });
            }
            return;
        }
        let mut call = self.calls.remove(&id).expect("exists");
        // Monitors waiting to follow a transfer that never connected go.
        for (leg, _) in std::mem::take(&mut call.follow_monitors) {
            if let Some(other) = self
                .legs
                .get(&leg)
                .filter(|l| l.bridge.is_none())
                .map(|l| l.conversation)
            {
                self.end_leg(leg, &Ending::system(200, "Monitored call ended"), now);
                self.settle(other, now);
            }
        }
        if let Some(q) = call.queue.take() {
            let mut r = q.record;
            if r.agent.is_none() {
                // Still waiting when the caller hung up.
                r.wait_s = now.unix_ms.saturating_sub(q.since_ms) / 1000;
            }
            call.queue_records.push(r);
        }
        let record = record_of(id, &call, call.ended_legs.clone(), now.unix_ms);
        let disposition = record.disposition.clone();
        let sip_code = record.sip_code;
        tracing::info!(call = %record.call_id, caller = %record.caller, callee = %record.callee, %disposition, side = call.hangup_side, code = sip_code, "call ended");
        if let Some(owed) = call.owed {
            let reply = match (owed, call.connected) {
                (Owed::Dial, Some(_)) => Reply::Dialed(DialOutcome::new("answered", 200)),
                (Owed::Queue, Some(_)) => Reply::Dialed(DialOutcome::new("answered", 200)),
                _ => Reply::CallEnded,
            };
            self.reply(id, reply);
        }
        self.out.push_back(Output::WriteRecord {
            record,
            then: call.after_write,
        });
        self.out.push_back(Output::Event(DomainEvent::ConversationEnded {
            account: call.account,
            conversation: id,
        }));
    }

    /// Marks conversation `id` as in progress in the store (its record so
    /// far), so that a crash leaves an "interrupted" record behind.
    pub(super) fn mark_live(&mut self, id: CallRef) {
        let Some(call) = self.calls.get(&id) else { return };
        let ended = call.ended_legs.iter().map(|l| LiveLeg {
            leg: l.leg,
            call_id: &l.call_id,
            party: &l.party,
            direction: &l.direction,
            start_ms: l.start_ms,
            answer_ms: l.answer_ms,
            end_ms: l.end_ms,
            sip_code: l.sip_code,
        });
        let live = call.legs.iter().filter_map(|l| self.legs.get(l)).map(|l| LiveLeg {
            leg: l.id.0,
            call_id: &l.dialog.call_id,
            party: &l.party,
            direction: direction_name(l.direction),
            start_ms: l.start_ms,
            answer_ms: l.answer_ms,
            end_ms: 0,
            sip_code: 0,
        });
        let legs: Vec<LiveLeg> = ended.chain(live).collect();
        let mark = LiveMark {
            call_id: legs.iter().find(|l| l.leg == call.origin.0).map_or("", |l| l.call_id),
            conversation: id,
            account: &call.account,
            caller: &call.caller,
            callee: &call.callee,
            direction: if call.external { "outbound" } else { "internal" },
            start_ms: call.start_ms,
            answer_ms: call.answer_ms,
            legs,
        };
        let op = crate::cdr::live_op(&mark);
        self.out.push_back(Output::Persist(vec![op]));
    }

    pub fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(Reverse((at, t))) = self.timers.peek().copied() {
            if at > now.mono {
                break;
            }
            self.timers.pop();
            match t {
                Timer::Ring { call, seq } => {
                    let current = self
                        .calls
                        .get(&call)
                        .is_some_and(|c| c.dial_seq == seq && c.connected.is_none());
                    if current {
                        self.dial_failed_by_timeout(call, now);
                    }
                }
                Timer::Offer(leg) => self.offer_timed_out(leg, now),
                Timer::Retransmit2xx(id, cseq) => {
                    let t2 = self.config.timers.t2;
                    let unacked = self.legs.get_mut(&id).and_then(|l| l.unacked.as_mut());
                    let Some(u) = unacked.filter(|u| u.cseq == cseq) else {
                        continue;
                    };
                    let msg = u.resp.clone();
                    u.interval = (u.interval * 2).min(t2);
                    let (next, to) = (now.mono + u.interval, u.to);
                    self.out.push_back(Output::Stateless { msg, to });
                    self.timer(next, Timer::Retransmit2xx(id, cseq));
                }
                Timer::AckTimeout(id, cseq) => {
                    let Some(leg) = self.legs.get(&id) else { continue };
                    if leg.unacked.as_ref().is_some_and(|u| u.cseq == cseq) {
                        tracing::warn!(call = %leg.dialog.call_id, "no ACK for our 2xx; hanging up");
                        let call = leg.conversation;
                        self.end_conversation(call, Ending::system(408, "No ACK"), now);
                    }
                }
            }
        }
    }

    /// Hangs up answered calls whose relay saw no RTP for the media
    /// timeout, and calls past the maximum duration (checked here, once a
    /// second, rather than with a timer per call that would outlive it).
    pub fn check_media(&mut self, now: Now) {
        self.media.housekeeping(now.mono);
        let max_ms = self.config.calls.max_duration.as_millis() as u64;
        let too_long: Vec<CallRef> = self
            .calls
            .iter()
            .filter(|(_, c)| c.answer_ms.is_some_and(|a| now.unix_ms.saturating_sub(a) >= max_ms))
            .map(|(id, _)| *id)
            .collect();
        for id in too_long {
            tracing::info!(call = id, "maximum call duration reached");
            self.end_conversation(id, Ending::system(408, "Maximum duration"), now);
        }
        let limit = self.config.calls.media_timeout;
        let idle: Vec<CallRef> = self
            .calls
            .iter()
            .filter(|(_, c)| self.legs.get(&c.origin).is_some_and(|l| l.state.is_answered()))
            .filter(|(_, c)| {
                let answered = || {
                    c.legs
                        .iter()
                        .filter_map(|l| self.legs.get(l))
                        .filter(|l| l.state.is_answered())
                };
                // On hold, a party may rightly send nothing.
                !answered().any(|l| l.on_hold())
                    && answered().all(|l| self.media.idle_for(l.id.endpoint(), now.mono) > limit)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            tracing::info!(call = id, "media timeout: no RTP; hanging up");
            self.end_conversation(id, Ending::system(408, "Media timeout"), now);
        }
    }

    /// RTP packets the relay received from parties since the start, and
    /// the sequence gaps seen in them (ended legs and live ones).
    pub fn media_totals(&self) -> (u64, u64) {
        self.legs.keys().fold(self.ended_media, |(p, g), id| {
            let s = self.media.stats(id.endpoint());
            (p + s.packets, g + s.seq_gaps)
        })
    }

    pub fn views(&self, now: Now) -> Vec<CallView> {
        let mut v: Vec<CallView> = self
            .calls
            .iter()
            .filter_map(|(id, c)| {
                let origin = self.legs.get(&c.origin)?;
                Some(CallView {
                    conversation: *id,
                    account: c.account.clone(),
                    call_id: origin.dialog.call_id.clone(),
                    caller: c.caller.clone(),
                    callee: c.callee.clone(),
                    state: match (origin.state.is_pending(), c.connected) {
                        (true, _) if c.ringing.is_empty() => "routing",
                        (true, _) => "ringing",
                        (_, Some(_)) => "connected",
                        _ => "answered",
                    }
                    .into(),
                    duration_s: c.answer_ms.map_or(0, |a| now.unix_ms.saturating_sub(a) / 1000),
                    media: MediaStats {
                        from_caller: self.media.stats(c.origin.endpoint()),
                        from_callee: c.connected.map(|l| self.media.stats(l.endpoint())).unwrap_or_default(),
                    },
                })
            })
            .collect();
        v.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        v
    }
}

pub(super) fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

/// A conversation's record, with `legs`, as it stands at `end_ms`.
fn record_of(id: CallRef, call: &super::Conversation, legs: Vec<LegRecord>, end_ms: u64) -> CallRecord {
    let origin = legs.iter().find(|l| l.leg == call.origin.0);
    let callee = call.connected.and_then(|c| legs.iter().find(|l| l.leg == c.0));
    let (disposition, sip_code) = if call.answer_ms.is_some() {
        ("answered", 200)
    } else {
        (unanswered_disposition(call.final_code), call.final_code)
    };
    CallRecord {
        call_id: origin.map(|o| o.call_id.clone()).unwrap_or_default(),
        conversation: id,
        account: call.account.clone(),
        caller: call.caller.clone(),
        callee: call.callee.clone(),
        direction: if call.external { "outbound" } else { "internal" }.into(),
        start_ms: call.start_ms,
        answer_ms: call.answer_ms,
        end_ms,
        duration_s: call.answer_ms.map_or(0, |a| end_ms.saturating_sub(a) / 1000),
        disposition: disposition.into(),
        hangup_side: call.hangup_side.into(),
        sip_code,
        rtp_from_caller: origin.map_or(0, |o| o.rtp_packets),
        rtp_from_callee: callee.map_or(0, |c| c.rtp_packets),
        rtp_seq_gaps: origin.map_or(0, |o| o.rtp_seq_gaps) + callee.map_or(0, |c| c.rtp_seq_gaps),
        legs,
        queues: call.queue_records.clone(),
        transfer: call.transfer.clone(),
        transferred_to: call.transferred_to.clone(),
        monitor: call.monitor.clone(),
    }
}
