//! How calls end and time out: the end of a call (both legs, relay,
//! record, dialplan wake-up), call timers (ring timeout, 2xx retransmission,
//! missing ACK), the media and duration sweep, and the live-call view.

use super::*;

impl CallManager {
    /// Ends a call: answers or hangs up the caller, cancels or hangs up the
    /// callee, frees the relay, writes the record, wakes the dialplan.
    pub(super) fn end_call(&mut self, id: CallRef, ending: Ending) {
        let Some(mut call) = self.calls.remove(&id) else { return };
        // Callee side: cancel pending forks, hang up the connected one.
        for (i, f) in call.forks.iter_mut().enumerate() {
            match f.state {
                ForkState::Trying | ForkState::Ringing => {
                    f.state = ForkState::Cancelled;
                    let cancel = dialog::cancel_for(&f.invite);
                    self.send_request(cancel, f.dialog.peer, ClientPurpose::Other);
                }
                ForkState::Answered if Some(i) == call.winner && ending.side != "callee" => {
                    let bye = f.dialog.request(Method::Bye, None);
                    self.send_request(bye, f.dialog.peer, ClientPurpose::Other);
                }
                _ => {}
            }
            self.by_call_id.remove(&f.dialog.call_id);
        }
        self.by_call_id.remove(&call.a.dialog.call_id);
        let answered = call.answer_ms.is_some();
        let end_ms = unix_ms();
        let (disposition, sip_code) = if answered {
            ("answered", 200)
        } else {
            (unanswered_disposition(ending.code), ending.code)
        };
        let stats = call.media.as_ref().map(MediaSession::stats).unwrap_or_default();
        let record = CallRecord {
            call_id: call.a.dialog.call_id.clone(),
            account: call.account.clone(),
            caller: call.caller.clone(),
            callee: call.callee.clone(),
            direction: if call.external { "outbound" } else { "internal" }.into(),
            start_ms: call.start_ms,
            answer_ms: call.answer_ms,
            end_ms,
            duration_s: call.answer_ms.map_or(0, |a| end_ms.saturating_sub(a) / 1000),
            disposition: disposition.into(),
            hangup_side: ending.side.into(),
            sip_code,
            rtp_from_caller: stats.from_caller.packets,
            rtp_from_callee: stats.from_callee.packets,
            rtp_seq_gaps: stats.from_caller.seq_gaps + stats.from_callee.seq_gaps,
        };
        tracing::info!(call = %record.call_id, caller = %record.caller, callee = %record.callee, disposition, side = ending.side, code = sip_code, "call ended");
        if let Some(m) = call.media.take() {
            self.pool.release(m);
        }
        if call.a.state == AState::Early {
            let tag = tag_of(&call.a.dialog.local);
            let resp = response_to(&call.a.invite, ending.code, ending.reason.as_deref(), &tag);
            if let Some((key, resp)) = ending.answer_after_write {
                self.out.push_back(CallEffect::Respond { key, resp });
            }
            self.out.push_back(CallEffect::RespondAfterWrite {
                key: call.a.key.clone(),
                resp,
                record,
            });
        } else {
            if ending.side != "caller" {
                let bye = call.a.dialog.request(Method::Bye, None);
                self.send_request(bye, call.a.dialog.peer, ClientPurpose::Other);
            }
            self.out.push_back(match ending.answer_after_write {
                Some((key, resp)) => CallEffect::RespondAfterWrite { key, resp, record },
                None => CallEffect::WriteRecord(record),
            });
        }
        if let Some(reply) = call.dial_reply.take() {
            let r = match call.winner {
                Some(_) => Reply::Dialed(crate::dialplan::DialOutcome::new("answered", 200)),
                None => Reply::CallEnded,
            };
            let _ = reply.send(r);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, id, t))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(call) = self.calls.get_mut(&id) else { continue };
            match t {
                CallTimer::Ring(seq) if seq == call.dial_seq && call.winner.is_none() => {
                    self.dial_failed_by_timeout(id);
                }
                CallTimer::Retransmit2xx => {
                    if let (AState::Answered { acked: false }, Some(resp)) = (call.a.state, &call.a.answer) {
                        let msg = resp.clone();
                        let to = call.a.reply_peer;
                        call.a.retransmit = (call.a.retransmit * 2).min(self.config.timers.t2);
                        let next = now + call.a.retransmit;
                        self.out.push_back(CallEffect::Stateless { msg, to });
                        self.timer(next, id, CallTimer::Retransmit2xx);
                    }
                }
                CallTimer::AckTimeout if call.a.state == (AState::Answered { acked: false }) => {
                    tracing::warn!(call = %call.a.dialog.call_id, "no ACK for our 2xx; hanging up");
                    self.end_call(id, system_ending(408, "No ACK"));
                }
                _ => {}
            }
        }
    }

    /// Hangs up answered calls whose relay saw no RTP for the media
    /// timeout, and calls past the maximum duration (checked here, once a
    /// second, rather than with a timer per call that would outlive it).
    /// Also closes relay ports left unused since the load went down.
    pub fn check_media(&mut self, now: Instant) {
        self.pool.close_spare(now);
        let max_ms = self.config.calls.max_duration.as_millis() as u64;
        let now_ms = unix_ms();
        let too_long: Vec<CallRef> = self
            .calls
            .iter()
            .filter(|(_, c)| c.answer_ms.is_some_and(|a| now_ms.saturating_sub(a) >= max_ms))
            .map(|(id, _)| *id)
            .collect();
        for id in too_long {
            tracing::info!(call = id, "maximum call duration reached");
            self.end_call(id, system_ending(408, "Maximum duration"));
        }
        let limit = self.config.calls.media_timeout;
        let idle: Vec<CallRef> = self
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.a.state, AState::Answered { .. }))
            .filter(|(_, c)| c.media.as_ref().is_some_and(|m| m.idle_for(now) > limit))
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            tracing::info!(call = id, "media timeout: no RTP; hanging up");
            self.end_call(id, system_ending(408, "Media timeout"));
        }
    }

    pub fn views(&self) -> Vec<CallView> {
        let now = unix_ms();
        let mut v: Vec<CallView> = self
            .calls
            .values()
            .map(|c| CallView {
                call_id: c.a.dialog.call_id.clone(),
                caller: c.caller.clone(),
                callee: c.callee.clone(),
                state: match (c.a.state, c.winner) {
                    (AState::Early, _) if c.forks.is_empty() => "routing",
                    (AState::Early, _) => "ringing",
                    (_, Some(_)) => "connected",
                    _ => "answered",
                }
                .into(),
                duration_s: c.answer_ms.map_or(0, |a| now.saturating_sub(a) / 1000),
                media: c.media.as_ref().map(MediaSession::stats).unwrap_or_default(),
            })
            .collect();
        v.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        v
    }
}
