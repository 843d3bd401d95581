//! What a dialplan asks of its conversation (besides `dial`): answer with
//! our own SDP, play a prompt through the relay, hang up, set the caller
//! ID; and what happens when the script ends. Every action gets exactly
//! one [`Output::DialplanReply`](super::Output::DialplanReply).

use super::ending::Ending;
use super::leg::LegId;
use super::{CallEngine, CallRef, Owed};
use crate::clock::Now;
use crate::dialplan::{DialplanError, Reply};
use crate::media::{sdp, EndpointId};

impl CallEngine {
    /// `answer()`: 200 with an SDP answer from the relay (PCMU or PCMA).
    pub fn answer(&mut self, id: CallRef, now: Now) {
        let r = self.answer_with_relay(id, now).err().unwrap_or(Reply::Done);
        self.reply(id, r);
    }

    pub(super) fn answer_with_relay(&mut self, id: CallRef, now: Now) -> Result<LegId, Reply> {
        let call = self.calls.get(&id).ok_or(Reply::CallEnded)?;
        let leg = self.legs.get(&call.origin).ok_or(Reply::CallEnded)?;
        if !leg.state.is_pending() {
            return Ok(leg.id);
        }
        let offer = leg.remote_media.as_ref().ok_or(Reply::CallEnded)?;
        let body = sdp::answer(offer, &leg.invite.body, leg.local_media)
            .ok_or_else(|| Reply::Failed("answer: the caller offers neither PCMU nor PCMA".into()))?;
        let leg = leg.id;
        self.answer_inbound(leg, body, now);
        Ok(leg)
    }

    /// `playback(file)`: answers if needed, then streams the prompt to the
    /// caller; the reply comes when the prompt has been sent.
    pub fn playback(&mut self, id: CallRef, file: &str, now: Now) {
        let leg = match self.answer_with_relay(id, now) {
            Ok(leg) => leg,
            Err(r) => return self.reply(id, r),
        };
        if let Err(e) = self.park(leg, super::bridge::Source::Prompt(file.to_string())) {
            return self.reply(id, Reply::Failed(format!("playback: {e}")));
        }
        if let Some(c) = self.calls.get_mut(&id) {
            c.owed = Some(Owed::Playback);
        }
    }

    /// Answers the call, plays `file`, then hangs up (no dialplan runs):
    /// the confirmation of a feature code.
    pub fn announce_and_end(&mut self, id: CallRef, file: &str, now: Now) {
        let played = self
            .answer_with_relay(id, now)
            .ok()
            .and_then(|leg| self.park(leg, super::bridge::Source::Prompt(file.to_string())).ok());
        match (played, self.calls.get_mut(&id)) {
            (Some(()), Some(c)) => c.owed = Some(Owed::Announcement),
            _ => self.end_conversation(id, Ending::system(500, "Announcement Failed"), now),
        }
    }

    /// The media side finished playing to `endpoint`.
    pub fn playback_done(&mut self, endpoint: EndpointId, now: Now) {
        let Some(call) = self.legs.get(&LegId(endpoint.0)).map(|l| l.conversation) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else { return };
        match c.owed {
            Some(Owed::Playback) => {
                c.owed = None;
                self.reply(call, Reply::Done);
            }
            Some(Owed::Announcement) => {
                c.owed = None;
                self.end_conversation(call, Ending::system(200, "Announcement Played"), now);
            }
            _ => {}
        }
    }

    /// `hangup(code)`: rejects an unanswered call with `code`, or ends an
    /// answered one with BYE.
    pub fn hangup(&mut self, id: CallRef, code: u16, now: Now) {
        self.reply(id, Reply::CallEnded);
        self.end_conversation(id, Ending::system(code, crate::sip::response::reason_phrase(code)), now);
    }

    /// Ends a whole conversation from outside (the API): its legs are
    /// hung up or cancelled, its record written.
    pub fn end_call(&mut self, id: CallRef, now: Now) -> bool {
        if !self.calls.contains_key(&id) {
            return false;
        }
        self.end_conversation(id, Ending::system(480, "Ended by the PBX"), now);
        true
    }

    pub fn set_caller_id(&mut self, id: CallRef, number: String, name: Option<String>) {
        let r = match self.calls.get_mut(&id) {
            // The caller's own number, or one the caller-ID rules allow;
            // anything else is logged and not used.
            Some(call) if number == call.caller || call.presentation.allowed.contains(&number) => {
                if number != call.caller {
                    call.presentation.number = Some(number.clone());
                }
                call.caller_number = number;
                call.caller_name = name;
                Reply::Done
            }
            Some(call) => {
                tracing::warn!(caller = %call.caller, caller_id = %number, "set_caller_id: caller ID not allowed for this caller; ignored");
                Reply::Done
            }
            None => Reply::CallEnded,
        };
        self.reply(id, r);
    }

    /// The script returned (or failed). An unanswered caller gets the last
    /// dial's failure (or 480), or 500 for a script error; a call the PBX
    /// answered itself is hung up; a bridged call goes on.
    pub fn script_done(&mut self, id: CallRef, result: Result<(), DialplanError>, now: Now) {
        let Some(call) = self.calls.get(&id) else { return };
        let Some(origin) = self.legs.get(&call.origin) else {
            return;
        };
        let call_id = &origin.dialog.call_id;
        let ending = match (&result, origin.state.is_pending(), call.connected) {
            (_, false, Some(_)) => return,
            (Err(e), true, _) => {
                tracing::error!(call = %call_id, "dialplan error: {e}");
                Ending::system(500, "Dialplan Error")
            }
            (Ok(()), true, _) => {
                let (code, reason) = call.last_failure.clone().unwrap_or((480, None));
                Ending {
                    side: "system",
                    code,
                    reason,
                }
            }
            (_, false, None) => {
                if let Err(e) = &result {
                    tracing::error!(call = %call_id, "dialplan error: {e}");
                }
                if call.transfer.is_some() && call.owed.is_none() {
                    return self.transfer_failed(id, now);
                }
                Ending::system(200, "Dialplan finished")
            }
        };
        if let Some(c) = self.calls.get_mut(&id) {
            // Nothing waits for a reply any more.
            c.owed = None;
        }
        self.end_conversation(id, ending, now);
    }
}
