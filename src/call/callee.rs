//! Callee legs: forking a dial to every registered contact of the
//! targets, relaying provisional responses (early media through the relay),
//! first 2xx wins and the other forks are cancelled, failures mapped back.

use super::dialog::{self, CalleeInvite};
use super::{AState, CallManager, CallRef, ClientPurpose, Fork, ForkState};
use crate::config::Account;
use crate::dialplan::{DialOutcome, Reply};
use crate::media::{sdp, Side};
use crate::registrar::Registrar;
use crate::sip::response::response_to;
use crate::sip::transaction::{Peer, TransportKind, TxKey};
use crate::sip::{HeaderName, Method, SipMessage};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A dial request from the dialplan.
pub struct DialRequest<'a> {
    pub targets: Vec<String>,
    pub timeout: Option<Duration>,
    pub external: bool,
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

impl CallManager {
    pub fn dial(&mut self, id: CallRef, req: DialRequest<'_>, reply: oneshot::Sender<Reply>, now: Instant) {
        let ring_default = self.config.calls.ring_timeout;
        let user_agent = self.config.user_agent.clone();
        let Some(call) = self.calls.get_mut(&id) else {
            let _ = reply.send(Reply::CallEnded);
            return;
        };
        if call.a.state != AState::Early || call.dial_reply.is_some() {
            let _ = reply.send(Reply::Failed("dial: the call is already answered or dialling".into()));
            return;
        }
        call.callee = req.targets.join(",");
        if req.external {
            call.external = true;
            if !call.caller_may_call_out {
                tracing::info!(caller = %call.caller, callee = %call.callee, "outbound call refused: no permission");
                let _ = reply.send(Reply::CallEnded);
                let reason = format!("Outbound calls not permitted for {}", call.caller);
                self.end_call(
                    id,
                    super::Ending {
                        side: "system",
                        code: 403,
                        reason: Some(reason),
                        answer_after_write: None,
                    },
                );
                return;
            }
            call.last_failure = Some((503, Some("No trunk for external numbers".into())));
            let _ = reply.send(Reply::Dialed(DialOutcome::new("failed", 503)));
            return;
        }
        let Some(media) = call.media.as_ref() else {
            let _ = reply.send(Reply::CallEnded);
            return;
        };
        let offer = match sdp::rewrite(&call.a.invite.body, media.local(Side::B)) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                let _ = reply.send(Reply::Failed(format!("dial: caller SDP unusable: {e}")));
                return;
            }
        };
        let max_forwards = call
            .a
            .invite
            .header(&HeaderName::MaxForwards)
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(70)
            .saturating_sub(1);
        let mut best: Option<u16> = None;
        let mut invites = Vec::new();
        for target in &req.targets {
            if req.account.user(target).is_none() {
                best = Some(pick(best, 404));
                continue;
            }
            let bindings = req.registrar.lookup(&format!("{target}@{}", req.account.domain));
            if bindings.is_empty() {
                best = Some(pick(best, 480));
                continue;
            }
            for b in bindings {
                let Ok(addr) = b.source.parse() else { continue };
                let transport = if b.transport == "TCP" {
                    TransportKind::Tcp
                } else {
                    TransportKind::Udp
                };
                let peer = Peer { transport, addr };
                let via_addr = dialog::local_addr_for(&self.config.listen, peer);
                let ci = CalleeInvite {
                    target_uri: &b.contact,
                    peer,
                    via_addr,
                    from_number: &call.caller_number,
                    from_name: call.caller_name.as_deref(),
                    to_user: target,
                    domain: &req.account.domain,
                    max_forwards,
                    sdp: offer.clone(),
                    user_agent: &user_agent,
                };
                invites.push(ci.build());
            }
        }
        if invites.is_empty() {
            let code = best.unwrap_or(480);
            call.last_failure = Some((code, None));
            let _ = reply.send(Reply::Dialed(DialOutcome::from_status(code)));
            return;
        }
        call.dial_seq += 1;
        call.dial_reply = Some(reply);
        call.last_failure = best.map(|c| (c, None));
        let seq = call.dial_seq;
        let base = call.forks.len();
        for (i, (invite, dlg)) in invites.into_iter().enumerate() {
            let peer = dlg.peer;
            self.by_call_id.insert(dlg.call_id.clone(), (id, Some(base + i)));
            let call = self.calls.get_mut(&id).expect("exists");
            call.forks.push(Fork {
                dialog: dlg,
                invite: invite.clone(),
                state: ForkState::Trying,
            });
            self.send_request(
                invite,
                peer,
                ClientPurpose::Fork {
                    call: id,
                    fork: base + i,
                },
            );
        }
        let timeout = req.timeout.unwrap_or(ring_default);
        self.timer(now + timeout, id, super::CallTimer::Ring(seq));
    }

    /// A response to one of our client transactions.
    pub fn on_response(&mut self, key: &TxKey, resp: SipMessage, now: Instant) {
        tracing::debug!(branch = %key.branch, status = resp.status().unwrap_or(0), known = self.client_tx.contains_key(key), "call response");
        match self.client_tx.get(key).cloned() {
            Some(ClientPurpose::Fork { call, fork }) => self.on_fork_response(call, fork, resp, now),
            Some(ClientPurpose::Relay {
                call,
                origin,
                to_caller,
            }) => self.on_relay_response(call, origin, to_caller, resp),
            Some(ClientPurpose::Other) | None => {}
        }
    }

    /// Timer B/F fired for one of our client transactions.
    pub fn on_tx_timeout(&mut self, key: &TxKey, now: Instant) {
        if let Some(ClientPurpose::Fork { call, fork }) = self.client_tx.get(key).cloned() {
            let msg = SipMessage {
                start: crate::sip::StartLine::Response {
                    status: 408,
                    reason: bytestring::ByteString::from_static("Request Timeout"),
                },
                headers: Vec::new(),
                body: bytes::Bytes::new(),
            };
            self.on_fork_response(call, fork, msg, now);
        }
    }

    fn on_fork_response(&mut self, id: CallRef, idx: usize, resp: SipMessage, now: Instant) {
        let status = resp.status().unwrap_or(500);
        let Some(call) = self.calls.get_mut(&id) else { return };
        let Some(fork) = call.forks.get_mut(idx) else { return };
        match status {
            100 => {}
            101..=199 => {
                if matches!(fork.state, ForkState::Trying | ForkState::Ringing) {
                    fork.state = ForkState::Ringing;
                }
                if call.a.state != AState::Early || call.winner.is_some() {
                    return;
                }
                let tag = super::tag_of(&call.a.dialog.local);
                let mut r = response_to(&call.a.invite, if status == 183 { 183 } else { 180 }, None, &tag);
                r.push_header(
                    HeaderName::Contact,
                    dialog::contact(call.a.reply_peer, call.a.dialog.via_addr),
                );
                // Early media: the callee's SDP, pointed at our relay (§13.3.1.1).
                if let (Ok(info), Some(media)) = (sdp::media_info(&resp.body), call.media.as_ref()) {
                    media.set_remote(Side::B, info.rtp);
                    if let Ok(body) = sdp::rewrite(&resp.body, media.local(Side::A)) {
                        r.push_header(HeaderName::ContentType, "application/sdp");
                        r.body = body.into();
                    }
                }
                self.out.push_back(super::CallEffect::Respond {
                    key: call.a.key.clone(),
                    resp: r,
                });
            }
            200..=299 => {
                let cseq = cseq_num(&resp);
                if let Some(to) = resp.header(&HeaderName::To) {
                    fork.dialog.remote = to.to_string();
                }
                if let Some(target) = dialog::contact_uri(&resp) {
                    fork.dialog.remote_target = target;
                }
                let ack = fork.dialog.ack(cseq);
                let peer = fork.dialog.peer;
                self.out.push_back(super::CallEffect::Stateless { msg: ack, to: peer });
                let call = self.calls.get_mut(&id).expect("exists");
                let fork = &mut call.forks[idx];
                if call.winner.is_some() || call.a.state != AState::Early {
                    // Late answer on another fork: ACK (done) and hang it up.
                    fork.state = ForkState::Cancelled;
                    let bye = fork.dialog.request(Method::Bye, None);
                    self.send_request(bye, peer, ClientPurpose::Other);
                    return;
                }
                fork.state = ForkState::Answered;
                call.winner = Some(idx);
                call.callee = fork_user(&fork.dialog.remote).unwrap_or_else(|| call.callee.clone());
                let Some(media) = call.media.as_ref() else { return };
                let info = sdp::media_info(&resp.body).ok();
                media.set_remote(Side::B, info.and_then(|i| i.rtp));
                let answer = sdp::rewrite(&resp.body, media.local(Side::A)).unwrap_or_default();
                // Cancel the other forks (§16.7 step 10 behaviour for a forking B2BUA).
                let mut cancels = Vec::new();
                for (j, f) in call.forks.iter_mut().enumerate() {
                    if j != idx && matches!(f.state, ForkState::Trying | ForkState::Ringing) {
                        f.state = ForkState::Cancelled;
                        cancels.push((dialog::cancel_for(&f.invite), f.dialog.peer));
                    }
                }
                for (c, p) in cancels {
                    self.send_request(c, p, ClientPurpose::Other);
                }
                tracing::info!(call = %self.calls[&id].a.dialog.call_id, callee = %self.calls[&id].callee, "call answered");
                self.answer_caller(id, answer, now);
            }
            _ => {
                if matches!(fork.state, ForkState::Cancelled | ForkState::Answered) {
                    return;
                }
                fork.state = ForkState::Failed(status);
                let reason = (!resp.reason().is_empty()).then(|| resp.reason().to_string());
                let code = pick(call.last_failure.as_ref().map(|f| f.0), status);
                if code == status {
                    call.last_failure = Some((status, reason));
                }
                self.maybe_finish_dial(id);
            }
        }
    }

    /// When every fork has failed, the dial returns its best failure.
    fn maybe_finish_dial(&mut self, id: CallRef) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        let pending = call
            .forks
            .iter()
            .any(|f| matches!(f.state, ForkState::Trying | ForkState::Ringing | ForkState::Answered));
        if pending || call.winner.is_some() {
            return;
        }
        let code = call.last_failure.as_ref().map_or(480, |f| f.0);
        if let Some(reply) = call.dial_reply.take() {
            let _ = reply.send(Reply::Dialed(DialOutcome::from_status(code)));
        }
    }

    /// The ring timeout fired: cancel what still rings, report no-answer.
    pub(super) fn dial_failed_by_timeout(&mut self, id: CallRef) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        let mut cancels = Vec::new();
        for f in call.forks.iter_mut() {
            if matches!(f.state, ForkState::Trying | ForkState::Ringing) {
                f.state = ForkState::Cancelled;
                cancels.push((dialog::cancel_for(&f.invite), f.dialog.peer));
            }
        }
        call.last_failure = Some((480, Some("No Answer".into())));
        if let Some(reply) = call.dial_reply.take() {
            let _ = reply.send(Reply::Dialed(DialOutcome::new("no-answer", 480)));
        }
        for (c, p) in cancels {
            self.send_request(c, p, ClientPurpose::Other);
        }
    }

    /// A 2xx retransmitted after its transaction ended: ACK it again.
    pub fn on_stray_response(&mut self, resp: &SipMessage) {
        if !resp.status().is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
        let Some(&(id, Some(idx))) = resp.call_id().and_then(|c| self.by_call_id.get(c)) else {
            return;
        };
        let Some(fork) = self.calls.get(&id).and_then(|c| c.forks.get(idx)) else {
            return;
        };
        let ack = fork.dialog.ack(cseq_num(resp));
        self.out.push_back(super::CallEffect::Stateless {
            msg: ack,
            to: fork.dialog.peer,
        });
    }
}

fn pick(best: Option<u16>, code: u16) -> u16 {
    match best {
        Some(b) if failure_rank(b) >= failure_rank(code) => b,
        _ => code,
    }
}

fn cseq_num(m: &SipMessage) -> u32 {
    m.header(&HeaderName::CSeq)
        .and_then(crate::sip::addr::CSeq::parse)
        .map_or(1, |c| c.seq)
}

fn fork_user(to: &str) -> Option<String> {
    let a = crate::sip::addr::NameAddr::parse(to).ok()?;
    let u = a.uri().ok()?;
    u.user_unescaped().map(|u| u.into_owned())
}
