//! Requests inside an established call: ACK for our 2xx, BYE from either
//! side, re-INVITE and UPDATE relayed across with their SDP rewritten
//! (hold and unhold work because direction attributes pass unchanged),
//! INFO answered locally, CANCEL of the caller's INVITE, and 481 for
//! requests that match no call.

use super::{AState, CallEffect, CallManager, CallRef, ClientPurpose, Ending, ForkState};
use crate::media::{sdp, Side};
use crate::sip::response::{random_token, response_to};
use crate::sip::transaction::TxKey;
use crate::sip::{HeaderName, Method, SipError, SipMessage};

impl CallManager {
    fn locate(&self, req: &SipMessage) -> Option<(CallRef, Option<usize>)> {
        req.call_id().and_then(|c| self.by_call_id.get(c)).copied()
    }

    /// An ACK outside any transaction: the caller's ACK for our 2xx.
    pub fn on_ack(&mut self, req: &SipMessage) {
        let Some((id, None)) = self.locate(req) else { return };
        if let Some(call) = self.calls.get_mut(&id) {
            if call.a.state == (AState::Answered { acked: false }) {
                call.a.state = AState::Answered { acked: true };
            }
        }
    }

    /// CANCEL of the caller's pending INVITE (§9.2): 487 to the INVITE,
    /// cancel every fork.
    pub fn on_cancel(&mut self, invite_key: &TxKey) {
        let id = self
            .calls
            .iter()
            .find(|(_, c)| &c.a.key == invite_key && c.a.state == AState::Early)
            .map(|(id, _)| *id);
        if let Some(id) = id {
            self.end_call(
                id,
                Ending {
                    side: "caller",
                    code: 487,
                    reason: None,
                    answer_after_write: None,
                },
            );
        }
    }

    /// A request with a To tag (or an ACK/BYE/… for one of our Call-IDs).
    /// Returns the error to answer with when it matches no call.
    pub fn on_in_dialog(&mut self, key: TxKey, req: SipMessage) -> Result<(), SipError> {
        let (id, fork) = self.locate(&req).ok_or_else(|| SipError::new(481))?;
        let from_caller = fork.is_none();
        let call = self.calls.get_mut(&id).ok_or_else(|| SipError::new(481))?;
        if let Some(i) = fork {
            if call.winner != Some(i) {
                return Err(SipError::new(481));
            }
        }
        let method = req.method().cloned().unwrap_or(Method::Info);
        match method {
            Method::Bye => {
                let tag = random_token();
                let ok = response_to(&req, 200, None, &tag);
                let side = if from_caller { "caller" } else { "callee" };
                if !from_caller {
                    if let Some(w) = call.winner {
                        call.forks[w].state = ForkState::Cancelled;
                    }
                }
                self.end_call(
                    id,
                    Ending {
                        side,
                        code: 487,
                        reason: None,
                        answer_after_write: Some((key, ok)),
                    },
                );
                Ok(())
            }
            Method::Invite | Method::Update => self.relay(id, key, req, from_caller, method),
            Method::Info | Method::Options | Method::Notify => {
                let ok = response_to(&req, 200, None, &random_token());
                self.out.push_back(CallEffect::Respond { key, resp: ok });
                Ok(())
            }
            _ => Err(SipError::new(405).header(HeaderName::Allow, "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO")),
        }
    }

    /// Relays a re-INVITE/UPDATE to the other leg, our relay in its SDP.
    fn relay(
        &mut self,
        id: CallRef,
        key: TxKey,
        req: SipMessage,
        from_caller: bool,
        method: Method,
    ) -> Result<(), SipError> {
        let call = self.calls.get_mut(&id).ok_or_else(|| SipError::new(481))?;
        let Some(w) = call.winner else {
            // Nothing to relay to (early dialog, or the PBX answered itself).
            return Err(SipError::with_reason(491, "Request Pending"));
        };
        let media = call.media.as_ref().ok_or_else(|| SipError::new(481))?;
        let (from_side, to_side) = if from_caller {
            (Side::A, Side::B)
        } else {
            (Side::B, Side::A)
        };
        let body = if req.body.is_empty() {
            None
        } else {
            let info = sdp::media_info(&req.body)
                .map_err(|e| SipError::with_reason(488, format!("Not Acceptable Here ({e})")))?;
            if info.rtp.is_some() {
                media.set_remote(from_side, info.rtp);
            }
            let b =
                sdp::rewrite(&req.body, media.local(to_side)).map_err(|e| SipError::with_reason(488, e.to_string()))?;
            Some(("application/sdp", bytes::Bytes::from(b)))
        };
        let dialog = if from_caller {
            &mut call.forks[w].dialog
        } else {
            &mut call.a.dialog
        };
        let out = dialog.request(method, body);
        let peer = dialog.peer;
        self.send_request(
            out,
            peer,
            ClientPurpose::Relay {
                call: id,
                origin: key,
                to_caller: !from_caller,
            },
        );
        Ok(())
    }

    /// The other leg answered a relayed re-INVITE/UPDATE: ACK a 2xx to a
    /// re-INVITE ourselves, then answer the originator.
    pub(super) fn on_relay_response(&mut self, id: CallRef, origin: TxKey, to_caller: bool, resp: SipMessage) {
        let status = resp.status().unwrap_or(500);
        if status < 200 {
            return;
        }
        let Some(call) = self.calls.get_mut(&id) else { return };
        let Some(w) = call.winner else { return };
        let is_invite = resp
            .header(&HeaderName::CSeq)
            .and_then(crate::sip::addr::CSeq::parse)
            .is_some_and(|c| c.method == Method::Invite);
        let (answered_side, origin_side) = if to_caller {
            (Side::A, Side::B)
        } else {
            (Side::B, Side::A)
        };
        if (200..300).contains(&status) && is_invite {
            let dialog = if to_caller {
                &call.a.dialog
            } else {
                &call.forks[w].dialog
            };
            let seq = resp
                .header(&HeaderName::CSeq)
                .and_then(crate::sip::addr::CSeq::parse)
                .map_or(1, |c| c.seq);
            let ack = dialog.ack(seq);
            let peer = dialog.peer;
            self.out.push_back(CallEffect::Stateless { msg: ack, to: peer });
        }
        let Some(call) = self.calls.get_mut(&id) else { return };
        let origin_req_contact = if to_caller {
            &call.forks[w].dialog
        } else {
            &call.a.dialog
        };
        let contact = super::dialog::contact(origin_req_contact.peer, origin_req_contact.via_addr);
        // The response goes back on the originating transaction; its To tag
        // is already in the request, so response_to keeps it.
        let mut r = SipMessage {
            start: resp.start.clone(),
            headers: Vec::new(),
            body: bytes::Bytes::new(),
        };
        if let (true, Some(media)) = (!resp.body.is_empty(), call.media.as_ref()) {
            if let Ok(info) = sdp::media_info(&resp.body) {
                if info.rtp.is_some() {
                    media.set_remote(answered_side, info.rtp);
                }
            }
            if let Ok(b) = sdp::rewrite(&resp.body, media.local(origin_side)) {
                r.body = b.into();
            }
        }
        self.out.push_back(CallEffect::RespondTo {
            key: origin,
            status,
            reason: resp.reason().to_string(),
            contact: (200..300).contains(&status).then_some(contact),
            body: r.body,
        });
    }
}
