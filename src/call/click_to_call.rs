//! Click-to-call (the API's `POST /calls`): the PBX rings the user's own
//! phones first with an offer of its own; the device that answers becomes
//! the caller of a call to the target, routed by the dialplan as if the
//! user had dialled it (the target is offered the codec the user's phone
//! chose: the relay does not transcode). Until then the conversation has
//! only the user's ringing legs; if none answers, it ends unanswered.

use super::ending::Ending;
use super::leg::{LegId, LegState};
use super::originate::Contact;
use super::{CallEngine, CallRef, Conversation, Output, Timer};
use crate::clock::Now;
use crate::dialplan::CallInfo;
use crate::media::sdp;
use crate::sip::dialog::CalleeInvite;
use crate::sip::SipMessage;

/// Who clicks, and whom they call.
pub struct ClickToCall<'a> {
    pub account: &'a str,
    /// The user's extension and display name.
    pub user: &'a str,
    pub name: &'a str,
    pub may_call_out: bool,
    /// The user's registered devices.
    pub devices: Vec<Contact>,
    /// The number to call once the user answers.
    pub target: &'a str,
}

impl CallEngine {
    /// Rings the user's devices; the call id, or why not (no device, no
    /// relay port).
    pub fn click_to_call(&mut self, c: ClickToCall<'_>, now: Now) -> Result<CallRef, String> {
        if c.devices.is_empty() {
            return Err(format!("{} has no registered device", c.user));
        }
        let id = self.next_id();
        // The first device's leg stands as the origin until one answers.
        let mut conversation = Conversation::new(c.account.to_string(), LegId(0), c.user, now);
        conversation.caller_name = Some(c.name.to_string());
        conversation.caller_may_call_out = c.may_call_out;
        conversation.callee = c.target.to_string();
        conversation.click = Some(c.target.to_string());
        conversation.legs.clear();
        self.calls.insert(id, conversation);
        let mut placed = Vec::new();
        for device in &c.devices {
            match self.ring_device(id, device, &c, now) {
                Ok(leg) => placed.push(leg),
                Err(e) => tracing::warn!(user = c.user, error = %e, "click-to-call leg not placed"),
            }
        }
        let Some(first) = placed.first().copied() else {
            self.calls.remove(&id);
            return Err("no relay port free".into());
        };
        let call = self.calls.get_mut(&id).expect("inserted");
        call.origin = first;
        call.dial_seq += 1;
        let seq = call.dial_seq;
        self.timer(now.mono + self.config.calls.ring_timeout, Timer::Ring { call: id, seq });
        self.mark_live(id);
        Ok(id)
    }

    /// An INVITE to one of the user's devices, showing the target as the
    /// caller (so the phone says whom it is about to call).
    fn ring_device(&mut self, id: CallRef, device: &Contact, c: &ClickToCall<'_>, now: Now) -> Result<LegId, String> {
        let leg_id = LegId(self.next_id());
        let local_media = self.media.open(leg_id.endpoint(), device.peer.addr.ip(), now.mono)?;
        let name = format!("Call to {}", c.target);
        let (invite, dlg) = CalleeInvite {
            target_uri: &device.uri,
            peer: device.peer,
            via_addr: self.via_addr(device.peer),
            from_number: c.target,
            from_name: Some(&name),
            to_user: c.user,
            from_domain: c.account,
            to_domain: c.account,
            max_forwards: 70,
            sdp: bytes::Bytes::from(sdp::offer(local_media)),
            user_agent: &self.config.user_agent,
        }
        .build();
        Ok(self.place_leg(id, leg_id, device, invite, dlg, local_media, now))
    }

    /// Whether conversation `id` still rings the user's own devices.
    pub(super) fn click_pending(&self, id: CallRef) -> bool {
        self.calls.get(&id).is_some_and(|c| c.click.is_some())
    }

    /// One of the user's devices answered (already ACKed): it is the
    /// caller now; the others stop ringing and the dialplan routes the
    /// target.
    pub(super) fn click_answered(&mut self, call_id: CallRef, id: LegId, resp: &SipMessage, now: Now) {
        let info = sdp::media_info(&resp.body).ok();
        self.media.set_remote(id.endpoint(), info.as_ref().and_then(|i| i.rtp));
        let leg = self.legs.get_mut(&id).expect("caller checked");
        leg.remote_media = info;
        leg.remote_sdp = Some(resp.body.clone());
        leg.answer_ms = Some(now.unix_ms);
        let call_ref = leg.dialog.call_id.clone();
        let call = self.calls.get_mut(&call_id).expect("caller checked");
        let target = call.click.take().unwrap_or_default();
        call.origin = id;
        call.answer_ms = Some(now.unix_ms);
        call.ringing.retain(|l| *l != id);
        let others = std::mem::take(&mut call.ringing);
        let (account, user, name) = (
            call.account.clone(),
            call.caller.clone(),
            call.caller_name.clone().unwrap_or_default(),
        );
        self.set_state(id, LegState::Answered { acked: true });
        for other in others {
            self.cancel_leg(other, now);
        }
        self.mark_live(call_id);
        tracing::info!(call = %call_ref, %user, %target, "click-to-call answered; calling the target");
        self.out.push_back(Output::StartDialplan {
            call: call_id,
            account: account.clone(),
            info: CallInfo {
                id: call_ref,
                from: user,
                to: target,
                display: name,
                domain: account,
                trunk: None,
            },
        });
    }

    /// A device failed, or they all rang out: when none is left ringing,
    /// the call ends unanswered with the best failure.
    pub(super) fn click_leg_failed(&mut self, call_id: CallRef, now: Now) {
        let Some(call) = self.calls.get(&call_id) else { return };
        if call.ringing.is_empty() {
            let code = call.last_failure.as_ref().map_or(480, |f| f.0);
            self.end_conversation(call_id, Ending::system(code, "Not answered"), now);
        }
    }
}
