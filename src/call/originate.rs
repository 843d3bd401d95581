//! Outbound legs: a dial originates one leg per registered contact of the
//! targets (each with its own relay endpoint), relays their provisional
//! responses to the caller (early media through the relay), bridges the
//! first that answers with the caller's leg and cancels the others, and
//! maps failures back.

use super::leg::{Direction, Leg, LegId, LegState};
use super::{CallEngine, CallRef, ClientPurpose, Output, Owed, Timer};
use crate::clock::Now;
use crate::config::{Account, RemoteTarget};
use crate::dialplan::{DialOutcome, Reply};
use crate::media::sdp;
use crate::registrar::Registrar;
use crate::sip::dialog::{self, CalleeInvite};
use crate::sip::transaction::{Peer, TransportKind, TxKey};
use crate::sip::{HeaderName, Method, SipMessage};
use std::time::Duration;

/// A dial request from the dialplan.
pub struct DialRequest<'a> {
    pub targets: Vec<String>,
    pub timeout: Option<Duration>,
    pub external: bool,
    /// For an external dial: the trunks to try, in order.
    pub trunks: Vec<crate::config::Trunk>,
    /// The dialplan named the trunk (what lets a call that came in
    /// through a trunk go out through one).
    pub trunk_named: bool,
    pub account: &'a Account,
    pub registrar: &'a Registrar,
}

/// Ranks failures so the caller hears the most telling one (busy beats
/// declined beats unavailable).
fn failure_rank(code: u16) -> u8 {
    match code {
        486 | 600 => 5,
        603 => 4,
        404 => 1,
        480 | 408 => 2,
        _ => 3,
    }
}

fn pick(best: Option<u16>, code: u16) -> u16 {
    match best {
        Some(b) if failure_rank(b) >= failure_rank(code) => b,
        _ => code,
    }
}

/// One contact to ring.
#[derive(Debug, Clone)]
pub struct Contact {
    pub target: String,
    pub uri: String,
    pub peer: Peer,
    /// Set for a provider: From and To name its domain, and its
    /// challenge is answered with its credentials.
    pub trunk: Option<crate::config::Trunk>,
}

/// The registered devices of user `ext` of `account`, as contacts to ring.
pub fn user_contacts(registrar: &Registrar, account: &Account, ext: &str) -> Vec<Contact> {
    registrar
        .lookup(&format!("{ext}@{}", account.domain))
        .iter()
        .filter_map(|b| {
            Some(Contact {
                target: ext.to_string(),
                uri: b.contact.clone(),
                peer: Peer {
                    transport: TransportKind::from_via_name(&b.transport),
                    addr: b.source.parse().ok()?,
                },
                trunk: None,
            })
        })
        .collect()
}

impl CallEngine {
    /// Whether conversation `id` may dial now: its caller still waits for
    /// an answer, or waits parked (after a queue or a transfer), and no
    /// other action is pending. Otherwise the dialplan is told why.
    pub(super) fn may_dial(&mut self, id: CallRef) -> bool {
        let parked = self.origin_parked(id);
        let Some(call) = self.calls.get(&id) else {
            self.reply(id, Reply::CallEnded);
            return false;
        };
        let origin_pending = self.legs.get(&call.origin).is_some_and(|l| l.state.is_pending());
        if !(origin_pending || parked) || call.owed.is_some() {
            self.reply(
                id,
                Reply::Failed("dial: the call is already answered or dialling".into()),
            );
            return false;
        }
        true
    }

    /// `dial(targets)`: originates a leg to every registered contact of
    /// every target; the reply comes when all fail, or when the answered
    /// call ends.
    pub fn dial(&mut self, id: CallRef, req: DialRequest<'_>, now: Now) {
        if !self.may_dial(id) {
            return;
        }
        let call = self.calls.get_mut(&id).expect("checked");
        call.callee = req.targets.join(",");
        if req.external {
            call.external = true;
            let allowed = call.caller_may_call_out || (call.from_trunk && req.trunk_named);
            if !allowed {
                tracing::info!(caller = %call.caller, callee = %call.callee, "outbound call refused: no permission");
                let reason = format!("Outbound calls not permitted for {}", call.caller);
                self.reply(id, Reply::CallEnded);
                return self.end_conversation(id, super::ending::Ending::system(403, &reason), now);
            }
            call.trunks_left = req.trunks.into();
            let number = req.targets.first().cloned().unwrap_or_default();
            call.trunk_number = number.clone();
            let Some(contact) = self.next_trunk(id, &number) else {
                return self.no_trunk(id);
            };
            return self.ring(id, vec![contact], None, &req.account.domain, req.timeout, now);
        }
        let mut best: Option<u16> = None;
        let mut contacts = Vec::new();
        for target in &req.targets {
            if let Some(remote) = req.account.remote_extension(target) {
                match &remote.target {
                    RemoteTarget::Uri { uri, address } => contacts.push(Contact {
                        target: target.clone(),
                        uri: uri.clone(),
                        peer: Peer {
                            transport: TransportKind::Udp,
                            addr: *address,
                        },
                        trunk: None,
                    }),
                    // Out through the account's trunks, whoever calls: the
                    // admin chose the number.
                    RemoteTarget::Number(number) => {
                        let call = self.calls.get_mut(&id).expect("exists");
                        call.trunks_left = req.trunks.clone().into();
                        call.trunk_number = number.clone();
                        match self.next_trunk(id, number) {
                            Some(c) => contacts.push(c),
                            None => best = Some(pick(best, 503)),
                        }
                    }
                }
                continue;
            }
            if req.account.user(target).is_none() {
                best = Some(pick(best, 404));
                continue;
            }
            let found = user_contacts(req.registrar, req.account, target);
            if found.is_empty() {
                best = Some(pick(best, 480));
                continue;
            }
            contacts.extend(found);
        }
        if contacts.is_empty() {
            let code = best.unwrap_or(480);
            self.calls.get_mut(&id).expect("exists").last_failure = Some((code, None));
            return self.reply(id, Reply::Dialed(DialOutcome::from_status(code)));
        }
        self.ring(id, contacts, best, &req.account.domain, req.timeout, now);
    }

    /// Originates a leg to each of `contacts` and waits for the first
    /// answer (or all failures, or the ring timeout).
    pub(super) fn ring(
        &mut self,
        id: CallRef,
        contacts: Vec<Contact>,
        best: Option<u16>,
        domain: &str,
        timeout: Option<Duration>,
        now: Now,
    ) {
        let call = self.calls.get_mut(&id).expect("exists");
        call.last_failure = best.map(|c| (c, None));
        call.dial_seq += 1;
        let seq = call.dial_seq;
        let mut originated = 0;
        for c in contacts {
            match self.originate(id, &c, domain, now) {
                Ok(_) => originated += 1,
                Err(e) => tracing::warn!(target = %c.target, error = %e, "leg not originated"),
            }
        }
        if originated == 0 {
            let call = self.calls.get_mut(&id).expect("exists");
            call.last_failure = Some((503, Some("No relay ports".into())));
            return self.reply(id, Reply::Dialed(DialOutcome::new("failed", 503)));
        }
        self.calls.get_mut(&id).expect("exists").owed = Some(Owed::Dial);
        let timeout = timeout.unwrap_or(self.config.calls.ring_timeout);
        self.timer(now.mono + timeout, Timer::Ring { call: id, seq });
    }

    /// Originates one outbound leg of conversation `id` to `contact`,
    /// offering the caller's SDP pointed at the new leg's endpoint.
    pub(super) fn originate(
        &mut self,
        id: CallRef,
        contact: &Contact,
        domain: &str,
        now: Now,
    ) -> Result<LegId, String> {
        let call = self.calls.get(&id).ok_or("no call")?;
        let origin = self.legs.get(&call.origin).ok_or("no caller leg")?;
        let leg_id = LegId(self.next_id);
        let local_media = self.media.open(leg_id.endpoint(), contact.peer.addr.ip(), now.mono)?;
        self.next_id += 1;
        // A caller already answered and waiting parked (in a queue, or
        // moved by a transfer) is offered on with what it agreed to: the
        // codec it already sends (the relay does not transcode).
        let parked = origin.state.is_answered() && origin.bridge.is_none();
        let agreed = match call.offer_from {
            Some(leg) => self.negotiated_sdp(leg),
            None if parked => self.negotiated_sdp(origin.id),
            None => None,
        };
        let caller_sdp = agreed.as_ref().unwrap_or(&origin.invite.body);
        let offer = match sdp::rewrite(caller_sdp, local_media) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                self.media.close(leg_id.endpoint(), now.mono);
                return Err(format!("caller SDP unusable: {e}"));
            }
        };
        let max_forwards = origin
            .invite
            .header(&HeaderName::MaxForwards)
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(70)
            .saturating_sub(1);
        let via_addr = self.via_addr(contact.peer);
        // Toward a provider, the caller ID as the trunk carries it.
        let shown = contact
            .trunk
            .as_ref()
            .map(|t| super::caller_id::toward_trunk(&call.presentation, t));
        let (from_number, from_name, from_domain, to_domain) = match (&shown, &contact.trunk) {
            (Some(shown), Some(t)) => (
                shown.from_user.as_str(),
                shown.from_name.or(call.caller_name.as_deref()),
                shown.from_domain.as_str(),
                t.from_domain.as_str(),
            ),
            _ => (call.caller_number.as_str(), call.caller_name.as_deref(), domain, domain),
        };
        // A phone (not a provider) is shown the caller's contact card:
        // its name, and its tags in X-Contact-Tags.
        let card = contact
            .trunk
            .is_none()
            .then(|| self.contacts.lookup(&call.account, &call.caller_number))
            .flatten();
        let from_name = card.as_ref().map(|c| c.name.as_str()).or(from_name);
        // A queue offer shows the queue and the caller: "Support: Ana".
        let offered = self.offer_display(id, from_name);
        let from_name = offered.as_ref().map(|(d, _)| d.as_str()).or(from_name);
        let (mut invite, dlg) = CalleeInvite {
            target_uri: &contact.uri,
            peer: contact.peer,
            via_addr,
            from_number,
            from_name,
            to_user: &contact.target,
            from_domain,
            to_domain,
            max_forwards,
            sdp: offer,
            user_agent: &self.config.user_agent,
        }
        .build();
        for (name, value) in shown.into_iter().flat_map(|s| s.headers) {
            invite.push_header(name, value);
        }
        if let Some(tags) = card.as_ref().filter(|c| !c.tags.is_empty()) {
            invite.push_header(HeaderName::Other("X-Contact-Tags".into()), tags.tags.join(","));
        }
        if let Some((_, queue)) = offered {
            invite.push_header(HeaderName::Other("X-Queue".into()), queue);
        }
        if let Some(by) = &call.referred_by {
            invite.push_header(HeaderName::ReferredBy, by.clone());
        }
        if let Some(route) = contact.trunk.as_ref().and_then(|t| t.proxy_route()) {
            invite.push_header(HeaderName::Route, route);
        }
        Ok(self.place_leg(id, leg_id, contact, invite, dlg, local_media, now))
    }

    /// Makes leg `leg_id` of conversation `id`, whose INVITE to `contact`
    /// is `invite` (dialog `dlg`, relay endpoint `local_media`), one of the
    /// conversation's ringing legs, and sends the INVITE.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn place_leg(
        &mut self,
        id: CallRef,
        leg_id: LegId,
        contact: &Contact,
        invite: SipMessage,
        dlg: dialog::Dialog,
        local_media: std::net::SocketAddr,
        now: Now,
    ) -> LegId {
        let leg = Leg {
            id: leg_id,
            local_tag: dialog::tag_of(&dlg.local).unwrap_or_default(),
            conversation: id,
            party: contact.target.clone(),
            direction: Direction::Outbound,
            dialog: dlg,
            state: LegState::Trying,
            invite: invite.clone(),
            uas: None,
            unacked: None,
            remote_media: None,
            local_sdp: Some(invite.body.clone()),
            holding: false,
            remote_sdp: None,
            dtmf: String::new(),
            local_media,
            bridge: None,
            start_ms: now.unix_ms,
            answer_ms: None,
            trunk: contact.trunk.as_ref().map(|t| super::leg::TrunkLeg {
                name: t.name.clone(),
                realm: t.realm.clone(),
                auth_username: t.auth_username.clone(),
                password: t.password.clone(),
                answered: false,
            }),
        };
        self.by_local_tag.insert(leg.local_tag.clone(), leg_id);
        self.by_call_id.insert(leg.dialog.call_id.clone(), leg_id);
        let peer = leg.dialog.peer;
        self.legs.insert(leg_id, leg);
        let call = self.calls.get_mut(&id).expect("exists");
        call.legs.push(leg_id);
        call.ringing.push(leg_id);
        self.announce(leg_id, crate::events::LegPhase::Trying);
        self.send_request(invite, peer, ClientPurpose::Originate { leg: leg_id });
        leg_id
    }

    /// A response to one of our client transactions.
    pub fn on_response(&mut self, key: &TxKey, resp: SipMessage, now: Now) {
        match self.client_tx.get(key).cloned() {
            Some(ClientPurpose::Originate { leg }) => self.on_leg_response(leg, resp, now),
            Some(ClientPurpose::Relay(r)) => self.on_relay_response(r.from, r.to, r.origin, &r.request, resp, now),
            Some(ClientPurpose::Other) | None => {}
        }
    }

    /// Timer B/F fired for one of our client transactions.
    pub fn on_tx_timeout(&mut self, key: &TxKey, now: Now) {
        if let Some(ClientPurpose::Originate { leg }) = self.client_tx.get(key).cloned() {
            let msg = SipMessage {
                start: crate::sip::StartLine::Response {
                    status: 408,
                    reason: bytestring::ByteString::from_static("Request Timeout"),
                },
                headers: Vec::new(),
                body: bytes::Bytes::new(),
            };
            self.on_leg_response(leg, msg, now);
        }
    }

    fn on_leg_response(&mut self, id: LegId, resp: SipMessage, now: Now) {
        let status = resp.status().unwrap_or(500);
        let Some(leg) = self.legs.get(&id) else { return };
        let state = leg.state;
        let call_id = leg.conversation;
        match status {
            100 => {}
            101..=199 => {
                if !state.is_pending() {
                    return;
                }
                self.set_state(id, LegState::Early);
                let Some(call) = self.calls.get(&call_id) else { return };
                // A parked caller keeps hearing its music.
                if call.connected.is_some() || self.origin_parked(call_id) {
                    return;
                }
                let origin = call.origin;
                // Early media: the callee's SDP, pointed at our relay (§13.3.1.1).
                let mut body = None;
                if let Ok(info) = sdp::media_info(&resp.body) {
                    self.media.set_remote(id.endpoint(), info.rtp);
                    let origin_media = self.legs[&origin].local_media;
                    body = sdp::rewrite(&resp.body, origin_media).ok();
                    let _ = self.bridge_legs(origin, id);
                }
                self.ring_inbound(origin, if status == 183 { 183 } else { 180 }, body);
            }
            200..=299 => self.on_leg_answered(id, resp, now),
            _ => {
                if state == LegState::Cancelling {
                    return self.forget_leg(id);
                }
                if !state.is_pending() {
                    return;
                }
                if matches!(status, 401 | 407) && self.answer_trunk_challenge(id, &resp) {
                    return;
                }
                let through_trunk = self.legs.get(&id).is_some_and(|l| l.trunk.is_some());
                let reason = (!resp.reason().is_empty()).then(|| resp.reason().to_string());
                self.drop_ringing_leg(id, status, now);
                let Some(call) = self.calls.get_mut(&call_id) else {
                    return;
                };
                let code = pick(call.last_failure.as_ref().map(|f| f.0), status);
                if code == status {
                    call.last_failure = Some((status, reason));
                }
                if self.click_pending(call_id) {
                    return self.click_leg_failed(call_id, now);
                }
                // The provider failed, not the number: the next trunk tries.
                if through_trunk && (status == 408 || status >= 500) && self.fail_over(call_id, now) {
                    return;
                }
                self.maybe_finish_dial(call_id, now);
            }
        }
    }

    /// A 2xx on an outbound leg: ACK it (§13.2.2.4); the first answer is
    /// bridged with the caller, a late one is hung up.
    fn on_leg_answered(&mut self, id: LegId, resp: SipMessage, now: Now) {
        let leg = self.legs.get_mut(&id).expect("caller checked");
        if let Some(to) = resp.header(&HeaderName::To) {
            leg.dialog.remote = to.to_string();
        }
        if let Some(target) = dialog::contact_uri(&resp) {
            leg.dialog.remote_target = target;
        }
        leg.dialog.route_set = dialog::route_set_of_response(&resp);
        let ack = leg.dialog.ack(super::cseq_num(&resp));
        let peer = leg.dialog.peer;
        self.out.push_back(Output::Stateless { msg: ack, to: peer });
        let (call_id, state) = (leg.conversation, leg.state);
        if state != LegState::Cancelling && self.click_pending(call_id) {
            return self.click_answered(call_id, id, &resp, now);
        }
        if state != LegState::Cancelling && self.is_consult_target(call_id, id) {
            let info = sdp::media_info(&resp.body).ok();
            self.media.set_remote(id.endpoint(), info.as_ref().and_then(|i| i.rtp));
            let leg = self.legs.get_mut(&id).expect("exists");
            leg.remote_media = info;
            leg.remote_sdp = Some(resp.body.clone());
            self.consult_answered(call_id, id, now);
            return;
        }
        let connected = self.calls.get(&call_id).map(|c| c.connected);
        let origin = self.calls.get(&call_id).map(|c| c.origin);
        let origin_pending = origin
            .and_then(|o| self.legs.get(&o))
            .is_some_and(|o| o.state.is_pending());
        let parked = self.origin_parked(call_id);
        if state == LegState::Cancelling || connected != Some(None) || !(origin_pending || parked) {
            // Late answer on another leg: ACKed, now hang it up.
            let leg = self.legs.get_mut(&id).expect("exists");
            let bye = leg.dialog.request(Method::Bye, None);
            self.send_request(bye, peer, ClientPurpose::Other);
            if state == LegState::Cancelling {
                self.forget_leg(id);
            } else {
                self.drop_ringing_leg(id, 200, now);
            }
            return;
        }
        let origin = origin.expect("checked");
        let info = sdp::media_info(&resp.body).ok();
        self.media.set_remote(id.endpoint(), info.as_ref().and_then(|i| i.rtp));
        let leg = self.legs.get_mut(&id).expect("exists");
        leg.remote_media = info;
        leg.remote_sdp = Some(resp.body.clone());
        leg.answer_ms = Some(now.unix_ms);
        let answer = sdp::rewrite(&resp.body, self.legs[&origin].local_media).unwrap_or_default();
        let call = self.calls.get_mut(&call_id).expect("exists");
        call.connected = Some(id);
        call.callee = self.legs[&id].party.clone();
        call.ringing.retain(|l| *l != id);
        self.set_state(id, LegState::Answered { acked: true });
        if self.is_offer(id) {
            return self.offer_answered(id, now);
        }
        // Cancel the other legs (§16.7 step 10 behaviour for a forking B2BUA).
        let c = self.calls.get_mut(&call_id).expect("exists");
        let others = std::mem::take(&mut c.ringing);
        c.hunt.clear();
        for other in others {
            self.cancel_leg(other, now);
        }
        let _ = self.bridge_legs(origin, id);
        self.transfer_outcome(call_id, "connected");
        tracing::info!(call = %self.legs[&origin].dialog.call_id, callee = %self.calls[&call_id].callee, "call answered");
        if !parked {
            self.answer_inbound(origin, answer, now);
        }
    }

    /// Sends CANCEL for a ringing outbound leg (§9.1) and closes its media;
    /// the leg waits in `Cancelling` for its INVITE to finish.
    pub(super) fn cancel_leg(&mut self, id: LegId, now: Now) {
        let Some(leg) = self.legs.get(&id) else { return };
        if !leg.state.is_pending() {
            return;
        }
        let (cancel, peer) = (dialog::cancel_for(&leg.invite), leg.dialog.peer);
        self.send_request(cancel, peer, ClientPurpose::Other);
        self.finish_leg(id, 487, now);
        // Kept (without media) until its INVITE finishes; already announced as ended.
        if let Some(l) = self.legs.get_mut(&id) {
            l.state = LegState::Cancelling;
        }
    }

    /// A ringing outbound leg failed: it ends and leaves the dial.
    fn drop_ringing_leg(&mut self, id: LegId, status: u16, now: Now) {
        let Some(leg) = self.legs.get(&id) else { return };
        let call_id = leg.conversation;
        self.finish_leg(id, status, now);
        if let Some(call) = self.calls.get_mut(&call_id) {
            call.ringing.retain(|l| *l != id);
        }
        self.forget_leg(id);
    }

    /// When every leg of the dial has failed, the dial returns its best failure.
    fn maybe_finish_dial(&mut self, id: CallRef, now: Now) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        if !call.ringing.is_empty() || call.connected.is_some() || call.owed != Some(Owed::Dial) {
            return;
        }
        if self.next_hunt_step(id, now) {
            return;
        }
        let Some(call) = self.calls.get_mut(&id) else { return };
        call.owed = None;
        let code = call.last_failure.as_ref().map_or(480, |f| f.0);
        self.reply(id, Reply::Dialed(DialOutcome::from_status(code)));
    }

    /// The ring timeout fired: cancel what still rings, report no-answer.
    pub(super) fn dial_failed_by_timeout(&mut self, id: CallRef, now: Now) {
        if self.click_pending(id) {
            return self.end_conversation(id, super::ending::Ending::system(480, "No Answer"), now);
        }
        let Some(call) = self.calls.get_mut(&id) else { return };
        if !call.hunt.is_empty() {
            // This member rang out: the next one rings.
            let ringing = std::mem::take(&mut call.ringing);
            for leg in ringing {
                self.cancel_leg(leg, now);
            }
            if self.next_hunt_step(id, now) {
                return;
            }
        }
        let Some(call) = self.calls.get_mut(&id) else { return };
        let ringing = std::mem::take(&mut call.ringing);
        call.last_failure = Some((480, Some("No Answer".into())));
        if call.owed == Some(Owed::Dial) {
            call.owed = None;
            self.reply(id, Reply::Dialed(DialOutcome::new("no-answer", 480)));
        }
        for leg in ringing {
            self.cancel_leg(leg, now);
        }
    }

    /// A 2xx retransmitted after its transaction ended: ACK it again.
    pub fn on_stray_response(&mut self, resp: &SipMessage) {
        if !resp.status().is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
        let Some(id) = resp.call_id().and_then(|c| self.by_call_id.get(c)) else {
            return;
        };
        let Some(leg) = self.legs.get(id).filter(|l| l.direction == Direction::Outbound) else {
            return;
        };
        let ack = leg.dialog.ack(super::cseq_num(resp));
        self.out.push_back(Output::Stateless {
            msg: ack,
            to: leg.dialog.peer,
        });
    }
}
