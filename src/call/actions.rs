//! What a dialplan asks of its call (besides `dial`): answer with our own
//! SDP, play a prompt through the relay, hang up, set the caller ID; and
//! what happens when the script ends.

use super::{AState, CallManager, CallRef, Ending};
use crate::dialplan::{DialplanError, Reply};
use crate::media::{playback, sdp, Side};
use std::path::Path;
use std::time::Instant;
use tokio::sync::oneshot;

impl CallManager {
    /// `answer()`: 200 with an SDP answer from the relay (PCMU or PCMA).
    pub fn answer(&mut self, id: CallRef, reply: oneshot::Sender<Reply>, now: Instant) {
        match self.answer_with_relay(id, now) {
            Ok(()) => {
                let _ = reply.send(Reply::Done);
            }
            Err(r) => {
                let _ = reply.send(r);
            }
        }
    }

    fn answer_with_relay(&mut self, id: CallRef, now: Instant) -> Result<(), Reply> {
        let call = self.calls.get(&id).ok_or(Reply::CallEnded)?;
        if call.a.state != AState::Early {
            return Ok(());
        }
        let media = call.media.as_ref().ok_or(Reply::CallEnded)?;
        let body = sdp::answer(&call.a.offer, &call.a.invite.body, media.local(Side::A))
            .ok_or_else(|| Reply::Failed("answer: the caller offers neither PCMU nor PCMA".into()))?;
        self.answer_caller(id, body, now);
        Ok(())
    }

    /// `playback(file)`: answers if needed, then streams the prompt to the
    /// caller; the reply comes when the prompt has been sent.
    pub fn playback(&mut self, id: CallRef, file: &str, reply: oneshot::Sender<Reply>, now: Instant) {
        if let Err(r) = self.answer_with_relay(id, now) {
            let _ = reply.send(r);
            return;
        }
        let Some(call) = self.calls.get(&id) else {
            let _ = reply.send(Reply::CallEnded);
            return;
        };
        let samples = match playback::load_wav(Path::new(file)) {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(Reply::Failed(format!("playback: {e}")));
                return;
            }
        };
        let pt = if call.a.offer.payload_types.contains(&0) { 0 } else { 8 };
        let Some((socket, Some(to))) = call.media.as_ref().map(|m| m.sender(Side::A)) else {
            let _ = reply.send(Reply::Failed("playback: the caller gave no media address".into()));
            return;
        };
        tokio::spawn(async move {
            playback::play(&samples, pt, socket, to).await;
            let _ = reply.send(Reply::Done);
        });
    }

    /// `hangup(code)`: rejects an unanswered call with `code`, or ends an
    /// answered one with BYE.
    pub fn hangup(&mut self, id: CallRef, code: u16) {
        self.end_call(
            id,
            super::system_ending(code, crate::sip::response::reason_phrase(code)),
        );
    }

    pub fn set_caller_id(&mut self, id: CallRef, number: String, name: Option<String>) -> Reply {
        match self.calls.get_mut(&id) {
            Some(call) => {
                call.caller_number = number;
                call.caller_name = name;
                Reply::Done
            }
            None => Reply::CallEnded,
        }
    }

    /// The script returned (or failed). An unanswered caller gets the last
    /// dial's failure (or 480), or 500 for a script error; a call the PBX
    /// answered itself is hung up; a bridged call goes on.
    pub fn script_done(&mut self, id: CallRef, result: Result<(), DialplanError>) {
        let Some(call) = self.calls.get(&id) else { return };
        let ending = match (&result, call.a.state, call.winner) {
            (_, AState::Answered { .. }, Some(_)) => return,
            (Err(e), AState::Early, _) => {
                tracing::error!(call = %call.a.dialog.call_id, "dialplan error: {e}");
                Ending {
                    side: "system",
                    code: 500,
                    reason: Some("Dialplan Error".into()),
                    answer_after_write: None,
                }
            }
            (Ok(()), AState::Early, _) => {
                let (code, reason) = call.last_failure.clone().unwrap_or((480, None));
                Ending {
                    side: "system",
                    code,
                    reason,
                    answer_after_write: None,
                }
            }
            (_, AState::Answered { .. }, None) => {
                if let Err(e) = &result {
                    tracing::error!(call = %call.a.dialog.call_id, "dialplan error: {e}");
                }
                super::system_ending(200, "Dialplan finished")
            }
        };
        self.end_call(id, ending);
    }
}
