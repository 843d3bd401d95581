//! Requests inside a leg's dialog, matched by the full dialog id (Call-ID,
//! our tag and the party's tag; anything else gets 481): BYE ends the leg;
//! a re-INVITE that puts the call on hold or takes it off is answered here
//! (the other party is not told, and hears music meanwhile); other
//! re-INVITEs and UPDATEs are relayed to the leg it is bridged with, their
//! SDP rewritten; INFO, OPTIONS and NOTIFY are answered locally.

use super::leg::{Direction, LegId};
use super::{CallEngine, ClientPurpose, Output};
use crate::clock::Now;
use crate::media::sdp;
use crate::sip::response::{random_token, response_to};
use crate::sip::transaction::TxKey;
use crate::sip::{HeaderName, Method, SipError, SipMessage};

impl CallEngine {
    /// A request with a To tag. Returns the error to answer with when it
    /// matches no leg.
    pub fn on_in_dialog(&mut self, key: TxKey, req: SipMessage, now: Now) -> Result<(), SipError> {
        let id = self.locate(&req).ok_or_else(|| SipError::new(481))?;
        let leg = &self.legs[&id];
        if leg.direction == Direction::Outbound && !leg.state.is_answered() {
            return Err(SipError::new(481));
        }
        let method = req.method().cloned().unwrap_or(Method::Info);
        match method {
            Method::Bye => {
                let ok = response_to(&req, 200, None, &random_token());
                self.hung_up_by_party(id, (key, ok), now);
                Ok(())
            }
            Method::Invite if self.is_hold_change(id, &req) => self.hold_here(id, key, req, now),
            Method::Invite | Method::Update => self.relay(id, key, req, method),
            Method::Refer => self.on_refer(id, key, req, now),
            Method::Info | Method::Options | Method::Notify => {
                let ok = response_to(&req, 200, None, &random_token());
                self.out.push_back(Output::Respond { key, resp: ok });
                Ok(())
            }
            _ => Err(SipError::new(405).header(HeaderName::Allow, crate::sip::method::ALLOWED_IN_CALL)),
        }
    }

    /// The leg `id` talks with in its bridge, if exactly one.
    pub(super) fn partner(&self, id: LegId) -> Option<LegId> {
        let b = self.bridges.get(&self.legs.get(&id)?.bridge?)?;
        let others: Vec<LegId> = b.talkers().filter(|l| *l != id).collect();
        match others[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Whether a re-INVITE from leg `id` puts its talking call on hold
    /// (sendonly, inactive, or no address) or takes it off hold.
    fn is_hold_change(&self, id: LegId, req: &SipMessage) -> bool {
        let Ok(info) = sdp::media_info(&req.body) else {
            return false;
        };
        let talking = self.partner(id).is_some_and(|p| self.legs[&p].state.is_answered());
        talking && (is_hold(&info) || self.legs[&id].holding)
    }

    /// Hold and resume, answered here (RFC 3264 §8.4, RFC 6337 §5): the
    /// holder gets our SDP in kind (recvonly to its sendonly); the other
    /// party gets no re-INVITE: its media is unlinked and it hears the
    /// hold music until the holder resumes, when the bridge's links return.
    fn hold_here(&mut self, id: LegId, key: TxKey, req: SipMessage, now: Now) -> Result<(), SipError> {
        let info =
            sdp::media_info(&req.body).map_err(|e| SipError::with_reason(488, format!("Not Acceptable Here ({e})")))?;
        let partner = self
            .partner(id)
            .ok_or_else(|| SipError::with_reason(491, "Request Pending"))?;
        let leg = &self.legs[&id];
        let previous = leg.local_sdp.as_deref().and_then(sdp::origin);
        let answer = sdp::answer_in_kind(&req.body, leg.local_media, previous)
            .map_err(|e| SipError::with_reason(488, e.to_string()))?;
        let hold = is_hold(&info);
        if info.rtp.is_some() {
            self.media.set_remote(id.endpoint(), info.rtp);
        }
        let leg = self.legs.get_mut(&id).expect("located");
        leg.remote_media = Some(info);
        leg.holding = hold;
        leg.local_sdp = Some(answer.clone().into());
        let mut ok = response_to(&req, 200, None, "");
        ok.push_header(
            HeaderName::Contact,
            crate::sip::dialog::contact(leg.dialog.peer, leg.dialog.via_addr),
        );
        ok.push_header(HeaderName::ContentType, "application/sdp");
        ok.body = answer.into();
        self.send_2xx_in_dialog(id, key, &req, ok, now);
        self.set_hold(id, partner, hold);
        Ok(())
    }

    /// `id` holds (`on`) or resumes its call with `partner`: on hold their
    /// media is unlinked and the partner hears the hold music; on resume
    /// the bridge's links return (linking stops the music).
    fn set_hold(&mut self, id: LegId, partner: LegId, on: bool) {
        if on {
            self.media.unlink(id.endpoint());
            self.media.unlink(partner.endpoint());
            let music = self.config.calls.hold_music.display().to_string();
            let pt = self.legs[&partner].prompt_payload_type();
            if let Err(e) = self.media.play(partner.endpoint(), &music, pt, true) {
                tracing::warn!(error = %e, "hold music not played");
            }
            tracing::info!(call = %self.legs[&id].dialog.call_id, "call put on hold");
        } else if let Some(bridge) = self.legs[&id].bridge {
            self.relink(bridge);
            tracing::info!(call = %self.legs[&id].dialog.call_id, "call taken off hold");
        }
    }

    /// Hold asked through the API: the partner of `party` on conversation
    /// `id` hears the hold music and `party` nothing (`on`), or the two
    /// talk again. The party's phone is sent nothing (no re-INVITE); a
    /// re-INVITE from it that resumes, resumes.
    pub fn hold_partner_of(&mut self, id: super::CallRef, party: &str, on: bool) -> Result<(), String> {
        let (x, y) = self.party_and_partner(id, party)?;
        let leg = self.legs.get_mut(&x).expect("found");
        if leg.holding == on {
            return Err(format!("the call is {}on hold", if on { "already " } else { "not " }));
        }
        leg.holding = on;
        self.set_hold(x, y, on);
        Ok(())
    }

    /// The answered leg of `party` on conversation `id` and its answered
    /// partner: a call the API may act on.
    pub(super) fn party_and_partner(&self, id: super::CallRef, party: &str) -> Result<(LegId, LegId), String> {
        let x = self
            .calls
            .get(&id)
            .ok_or("no such call")?
            .legs
            .iter()
            .copied()
            .find(|l| {
                self.legs
                    .get(l)
                    .is_some_and(|l| l.party == party && l.state.is_answered())
            })
            .ok_or_else(|| format!("{party} is not talking on this call"))?;
        let y = self
            .partner(x)
            .filter(|y| self.legs[y].state.is_answered())
            .ok_or("nobody to act on: the call is not connected")?;
        Ok((x, y))
    }

    /// Answers a re-INVITE of leg `id` with a 2xx, retransmitted until its
    /// ACK (§13.3.1.4).
    fn send_2xx_in_dialog(&mut self, id: LegId, key: TxKey, request: &SipMessage, resp: SipMessage, now: Now) {
        let t1 = self.config.timers.t1;
        let cseq = super::cseq_num(request);
        if let Some(l) = self.legs.get_mut(&id) {
            l.unacked = Some(super::leg::Unacked {
                resp: resp.clone(),
                to: super::from_peer(request, l.dialog.peer),
                interval: t1,
                cseq,
            });
        }
        self.timer(now.mono + t1, super::Timer::Retransmit2xx(id, cseq));
        self.timer(now.mono + t1 * 64, super::Timer::AckTimeout(id, cseq));
        self.out.push_back(Output::Respond { key, resp });
    }

    /// Relays a re-INVITE/UPDATE to the leg `from` is bridged with, our
    /// relay in its SDP.
    fn relay(&mut self, from: LegId, key: TxKey, req: SipMessage, method: Method) -> Result<(), SipError> {
        let to = self
            .partner(from)
            .filter(|to| self.legs[to].state.is_answered())
            // Nothing to relay to (early dialog, or the PBX answered itself).
            .ok_or_else(|| SipError::with_reason(491, "Request Pending"))?;
        let body = if req.body.is_empty() {
            None
        } else {
            let info = sdp::media_info(&req.body)
                .map_err(|e| SipError::with_reason(488, format!("Not Acceptable Here ({e})")))?;
            if info.rtp.is_some() {
                self.media.set_remote(from.endpoint(), info.rtp);
            }
            let b = sdp::rewrite(&req.body, self.legs[&to].local_media)
                .map_err(|e| SipError::with_reason(488, e.to_string()))?;
            self.legs.get_mut(&from).expect("exists").remote_media = Some(info);
            self.legs.get_mut(&to).expect("exists").local_sdp = Some(b.clone().into());
            Some(("application/sdp", bytes::Bytes::from(b)))
        };
        let dialog = &mut self.legs.get_mut(&to).expect("exists").dialog;
        let out = dialog.request(method, body);
        let peer = dialog.peer;
        self.send_request(
            out,
            peer,
            ClientPurpose::Relay(Box::new(super::Relayed {
                from,
                to,
                origin: key,
                request: req,
            })),
        );
        Ok(())
    }

    /// Leg `to` answered a re-INVITE/UPDATE relayed from leg `from`: ACK a
    /// 2xx to a re-INVITE ourselves, then answer the originator (a 2xx to
    /// its re-INVITE retransmitted until its ACK, §13.3.1.4).
    pub(super) fn on_relay_response(
        &mut self,
        from: LegId,
        to: LegId,
        origin: TxKey,
        request: &SipMessage,
        resp: SipMessage,
        now: Now,
    ) {
        let status = resp.status().unwrap_or(500);
        if status < 200 {
            return;
        }
        let (Some(to_leg), Some(from_leg)) = (self.legs.get(&to), self.legs.get(&from)) else {
            return;
        };
        let is_invite = resp
            .header(&HeaderName::CSeq)
            .and_then(crate::sip::addr::CSeq::parse)
            .is_some_and(|c| c.method == Method::Invite);
        if (200..300).contains(&status) && is_invite {
            let ack = to_leg.dialog.ack(super::cseq_num(&resp));
            self.out.push_back(Output::Stateless {
                msg: ack,
                to: to_leg.dialog.peer,
            });
        }
        let contact = crate::sip::dialog::contact(from_leg.dialog.peer, from_leg.dialog.via_addr);
        let from_media = from_leg.local_media;
        // The response goes back on the originating transaction; its To tag
        // is already in the request.
        let mut answer = response_to(request, status, Some(resp.reason()), "");
        if (200..300).contains(&status) {
            answer.push_header(HeaderName::Contact, contact);
        }
        if !resp.body.is_empty() {
            if let Ok(info) = sdp::media_info(&resp.body) {
                if info.rtp.is_some() {
                    self.media.set_remote(to.endpoint(), info.rtp);
                }
                if let Some(l) = self.legs.get_mut(&to) {
                    l.remote_media = Some(info);
                }
            }
            if let Ok(b) = sdp::rewrite(&resp.body, from_media) {
                answer.push_header(HeaderName::ContentType, "application/sdp");
                answer.body = b.into();
                if let Some(l) = self.legs.get_mut(&from) {
                    l.local_sdp = Some(answer.body.clone());
                }
            }
        }
        if (200..300).contains(&status) && is_invite {
            return self.send_2xx_in_dialog(from, origin, request, answer, now);
        }
        self.out.push_back(Output::Respond {
            key: origin,
            resp: answer,
        });
    }
}

/// An SDP that puts the call on hold: the party will not send (sendonly
/// or inactive, RFC 3264 §8.4) or gives no address (RFC 2543's 0.0.0.0).
fn is_hold(info: &sdp::MediaInfo) -> bool {
    info.rtp.is_none() || matches!(info.direction, sdp::Direction::SendOnly | sdp::Direction::Inactive)
}
