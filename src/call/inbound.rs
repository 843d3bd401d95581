//! Inbound legs: a new authenticated INVITE becomes a conversation with
//! its first leg (and asks for its dialplan); that leg is answered with
//! our own 2xx (retransmitted until the ACK, §13.3.1.4), and a CANCEL of
//! its INVITE (§9.2) ends the conversation.

use super::leg::{Direction, Leg, LegId, LegState, Uas, Unacked};
use super::{CallEngine, CallRef, Conversation, Output, Timer};
use crate::clock::Now;
use crate::config::{Account, User};
use crate::dialplan::CallInfo;
use crate::media::sdp;
use crate::sip::addr::NameAddr;
use crate::sip::dialog::{self, tag_in, Dialog};
use crate::sip::response::{random_token, response_to};
use crate::sip::transaction::{Peer, TxKey};
use crate::sip::uri::SipUri;
use crate::sip::{HeaderName, SipError, SipMessage};

/// Who places a new call: a user of the account, or a party coming in
/// through a trunk.
#[derive(Debug, Clone)]
pub struct Caller<'a> {
    /// The extension, or the external number.
    pub id: &'a str,
    pub name: &'a str,
    pub may_call_out: bool,
    /// The trunk a call from outside came in through.
    pub trunk: Option<&'a str>,
    /// The number to route (a DID's target, or the dialled number without
    /// its caller-ID prefixes) instead of the Request-URI's.
    pub to: Option<&'a str>,
    /// What its external calls present.
    pub presentation: super::caller_id::Presentation,
}

impl<'a> Caller<'a> {
    pub fn user(user: &'a User, account: &Account) -> Caller<'a> {
        Caller {
            id: &user.extension,
            name: &user.display_name,
            may_call_out: account.outbound_calls && user.outbound,
            trunk: None,
            to: None,
            presentation: Default::default(),
        }
    }
}

impl CallEngine {
    /// A new, authenticated INVITE from `caller`: creates the conversation
    /// and its inbound leg with a relay endpoint, and asks for the
    /// dialplan to run.
    pub fn start_call(
        &mut self,
        key: TxKey,
        invite: SipMessage,
        from: Peer,
        account: &Account,
        caller: Caller<'_>,
        now: Now,
    ) -> Result<CallRef, SipError> {
        let offer = sdp::media_info(&invite.body)
            .map_err(|e| SipError::with_reason(488, format!("Not Acceptable Here ({e})")))?;
        let replacing = self.replaced_by(&invite, caller.id)?;
        let leg_id = LegId(self.next_id());
        let local_media = self
            .media
            .open(leg_id.endpoint(), from.addr.ip(), now.mono)
            .map_err(|e| SipError::with_reason(503, format!("Service Unavailable ({e})")))?;
        self.media.set_remote(leg_id.endpoint(), offer.rtp);
        let id = self.next_id();
        let call_id = invite.call_id().unwrap_or_default().to_string();
        let to_user = match caller.to {
            Some(to) => to.to_string(),
            None => invite
                .request_uri()
                .and_then(|u| SipUri::parse(u).ok())
                .and_then(|u| u.user_unescaped().map(|u| u.into_owned()))
                .unwrap_or_default(),
        };
        let from_addr = NameAddr::parse(invite.header(&HeaderName::From).unwrap_or("")).ok();
        let display = from_addr
            .as_ref()
            .and_then(|f| f.display)
            .unwrap_or("")
            .trim_matches('"')
            .to_string();
        let reply_peer = super::from_peer(&invite, from);
        let via_addr = self.via_addr(reply_peer);
        let our_tag = random_token();
        let dialog = Dialog {
            call_id: call_id.clone(),
            local: format!("{};tag={our_tag}", invite.header(&HeaderName::To).unwrap_or("")),
            remote: invite.header(&HeaderName::From).unwrap_or("").to_string(),
            remote_target: dialog::contact_uri(&invite)
                .unwrap_or_else(|| format!("sip:{}", dialog::host_port(reply_peer.addr))),
            peer: reply_peer,
            local_cseq: 0,
            via_addr,
            route_set: dialog::route_set_of_request(&invite),
        };
        let info = CallInfo {
            id: call_id.clone(),
            from: caller.id.to_string(),
            to: to_user.clone(),
            display: if display.is_empty() {
                caller.name.to_string()
            } else {
                display
            },
            domain: account.domain.clone(),
            trunk: caller.trunk.map(str::to_string),
        };
        self.by_local_tag.insert(our_tag.clone(), leg_id);
        self.by_call_id.insert(call_id, leg_id);
        self.legs.insert(
            leg_id,
            Leg {
                local_tag: our_tag,
                id: leg_id,
                conversation: id,
                party: caller.id.to_string(),
                direction: Direction::Inbound,
                dialog,
                state: LegState::Trying,
                invite,
                uas: Some(Uas { key, reply_peer }),
                unacked: None,
                remote_media: Some(offer),
                local_sdp: None,
                holding: false,
                remote_sdp: None,
                dtmf: String::new(),
                local_media,
                bridge: None,
                start_ms: now.unix_ms,
                answer_ms: None,
                trunk: None,
            },
        );
        let mut conversation = Conversation::new(account.domain.clone(), leg_id, caller.id, now);
        conversation.caller_name = Some(caller.name.to_string());
        conversation.caller_may_call_out = caller.may_call_out;
        conversation.from_trunk = caller.trunk.is_some();
        conversation.presentation = caller.presentation;
        conversation.callee = to_user;
        self.calls.insert(id, conversation);
        self.announce(leg_id, crate::events::LegPhase::Trying);
        self.mark_live(id);
        if let Some((z, w)) = replacing {
            self.replace(id, leg_id, z, w, now);
            return Ok(id);
        }
        self.out.push_back(Output::StartDialplan {
            call: id,
            account: account.domain.clone(),
            info,
        });
        Ok(id)
    }

    /// A response on an inbound leg's INVITE, with our tag and Contact.
    pub(super) fn response_on_leg(&self, leg: &Leg, status: u16, reason: Option<&str>) -> SipMessage {
        let mut r = response_to(&leg.invite, status, reason, &leg.local_tag);
        if (101..300).contains(&status) {
            // The proxies that record-routed stay on the path (§12.1.1).
            for rr in &leg.dialog.route_set {
                r.push_header(HeaderName::RecordRoute, rr.clone());
            }
            r.push_header(
                HeaderName::Contact,
                dialog::contact(leg.dialog.peer, leg.dialog.via_addr),
            );
        }
        r
    }

    /// Sends a provisional response (180/183, with early media SDP) on an
    /// inbound leg still ringing.
    pub(super) fn ring_inbound(&mut self, id: LegId, status: u16, sdp_body: Option<Vec<u8>>) {
        let Some(leg) = self.legs.get(&id) else { return };
        let (Some(uas), true) = (&leg.uas, leg.state.is_pending()) else {
            return;
        };
        let mut r = self.response_on_leg(leg, status, None);
        if let Some(body) = sdp_body {
            r.push_header(HeaderName::ContentType, "application/sdp");
            r.body = body.into();
        }
        let key = uas.key.clone();
        self.out.push_back(Output::Respond { key, resp: r });
        self.set_state(id, LegState::Early);
    }

    /// Answers an inbound leg with a 2xx carrying `sdp` (§13.3.1.4: we
    /// retransmit it until the ACK).
    pub(super) fn answer_inbound(&mut self, id: LegId, sdp_body: Vec<u8>, now: Now) {
        let t1 = self.config.timers.t1;
        let Some(leg) = self.legs.get(&id) else { return };
        if !leg.state.is_pending() || leg.uas.is_none() {
            return;
        }
        let mut resp = self.response_on_leg(leg, 200, None);
        resp.push_header(HeaderName::ContentType, "application/sdp");
        resp.push_header(HeaderName::Allow, crate::sip::method::ALLOWED_IN_CALL);
        resp.body = sdp_body.into();
        let leg = self.legs.get_mut(&id).expect("exists");
        leg.local_sdp = Some(resp.body.clone());
        let uas = leg.uas.as_ref().expect("checked");
        let key = uas.key.clone();
        leg.unacked = Some(Unacked {
            resp: resp.clone(),
            to: uas.reply_peer,
            interval: t1,
            cseq: super::cseq_num(&leg.invite),
        });
        leg.answer_ms = Some(now.unix_ms);
        let conv = leg.conversation;
        if let Some(c) = self.calls.get_mut(&conv) {
            c.answer_ms.get_or_insert(now.unix_ms);
        }
        self.out.push_back(Output::Respond { key, resp });
        self.set_state(id, LegState::Answered { acked: false });
        if let Some(conv) = self.legs.get(&id).map(|l| l.conversation) {
            self.mark_live(conv);
        }
        let cseq = super::cseq_num(&self.legs[&id].invite);
        self.timer(now.mono + t1, Timer::Retransmit2xx(id, cseq));
        self.timer(now.mono + t1 * 64, Timer::AckTimeout(id, cseq));
    }

    /// Finds the leg a request received inside a dialog belongs to: the
    /// full dialog id must match (Call-ID, our tag, the party's tag).
    pub(super) fn locate(&self, req: &SipMessage) -> Option<LegId> {
        let local_tag = tag_in(req.header(&HeaderName::To)?)?;
        let remote_tag = req.header(&HeaderName::From).and_then(tag_in).unwrap_or("");
        let leg = self.legs.get(self.by_local_tag.get(local_tag)?)?;
        leg.matches(req.call_id()?, local_tag, remote_tag).then_some(leg.id)
    }

    /// For a request inside one of our dialogs that comes from another IP
    /// address than the leg's party: that party's extension and account,
    /// whose credentials the request must then carry. (A request that
    /// knows the dialog id but comes from elsewhere could hang up the
    /// call, or point the relay at someone else with a re-INVITE.)
    pub fn party_elsewhere(&self, req: &SipMessage, from: Peer) -> Option<(String, String)> {
        let leg = self.legs.get(&self.locate(req)?)?;
        if leg.dialog.peer.addr.ip() == from.addr.ip() {
            return None;
        }
        let account = self.calls.get(&leg.conversation)?.account.clone();
        Some((leg.party.clone(), account))
    }

    /// An ACK outside any transaction: the party's ACK for our 2xx (one
    /// from another address than the party's is ignored: it cannot be
    /// challenged).
    pub fn on_ack(&mut self, req: &SipMessage, from: Peer) {
        if self.party_elsewhere(req, from).is_some() {
            return;
        }
        let Some(id) = self.locate(req) else { return };
        let Some(leg) = self.legs.get_mut(&id) else { return };
        if leg.unacked.as_ref().is_some_and(|u| u.cseq == super::cseq_num(req)) {
            leg.unacked = None;
        }
        if leg.state == (LegState::Answered { acked: false }) {
            self.set_state(id, LegState::Answered { acked: true });
        }
    }

    /// CANCEL of an inbound leg's pending INVITE (§9.2): 487 to the
    /// INVITE; the conversation ends (its dial is cancelled).
    pub fn on_cancel(&mut self, invite_key: &TxKey, now: Now) {
        let leg = self
            .legs
            .values()
            .find(|l| l.state.is_pending() && l.uas.as_ref().is_some_and(|u| &u.key == invite_key))
            .map(|l| (l.id, l.conversation));
        if let Some((_, call)) = leg {
            self.end_conversation(call, super::ending::Ending::by("caller", 487), now);
        }
    }
}
