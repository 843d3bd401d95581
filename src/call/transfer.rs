//! Transfers by REFER (RFC 3515) from a party of a two-party call.
//!
//! - Blind: the transferee's leg (the referrer's partner) is kept and moved
//!   into a conversation of its own, which runs the dialplan for the
//!   Refer-To number like a new call from the transferee (so users, groups,
//!   queues, remote extensions and external numbers are all reached the
//!   same way); it hears ringback meanwhile and is bridged to whoever
//!   answers. The referrer gets 202, NOTIFYs `message/sipfrag` 100 and 200
//!   (RFC 3515 §2.4.5: the PBX has taken the call) and is hung up. A failed
//!   blind transfer does not come back to the referrer: the transferee
//!   hears a short announcement and the call ends.
//! - Attended: a Refer-To with `Replaces` (RFC 3891) naming the referrer's
//!   other dialog with us: the two partners are bridged together and both
//!   of the referrer's legs end. Matched on the Replaces dialog (Call-ID and
//!   tags), never on the Refer-To host. A consult call to a queue is
//!   refused: queues take blind transfers only.
//!
//! `Referred-By` (RFC 3892) is passed on to the transfer target.

use super::bridge::{Role, Source};
use super::ending::Ending;
use super::leg::LegId;
use super::{CallEngine, CallRef, ClientPurpose, Conversation, Output};
use crate::cdr::{LegRecord, TransferRecord};
use crate::clock::Now;
use crate::dialplan::CallInfo;
use crate::sip::addr::NameAddr;
use crate::sip::dialog::tag_in;
use crate::sip::response::response_to;
use crate::sip::transaction::TxKey;
use crate::sip::uri::SipUri;
use crate::sip::{HeaderName, Method, SipError, SipMessage};

/// What the transferee hears while the target rings.
const RINGBACK: &str = "sounds/ringback.wav";
/// What the transferee hears when a blind transfer fails.
pub(super) const TRANSFER_FAILED: &str = "sounds/transfer_failed.wav";

/// The in-call DTMF codes of an account.
#[derive(Debug, Clone, Copy)]
pub struct DtmfCodes<'a> {
    /// `<blind><number>#`: blind transfer.
    pub blind: &'a str,
    /// `<attended><number>#`: consult, then `<attended>` again completes.
    pub attended: &'a str,
}

/// The number of `<code><digits>` at the end of `typed`.
fn code_number(typed: &str, code: &str) -> Option<String> {
    if code.is_empty() {
        return None;
    }
    typed
        .rfind(code)
        .map(|at| typed[at + code.len()..].to_string())
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// The dialog a `Replaces` names: Call-ID and the two tags.
#[derive(Debug, PartialEq, Eq)]
struct Replaces {
    call_id: String,
    to_tag: String,
    from_tag: String,
}

/// `Replaces` from the `?headers` of a Refer-To URI (escaped, RFC 3891 §6).
fn replaces_in(uri_headers: &str) -> Option<Replaces> {
    let raw = uri_headers
        .split('&')
        .find_map(|h| h.split_once('=').filter(|(n, _)| n.eq_ignore_ascii_case("replaces")))?
        .1;
    parse_replaces(&crate::sip::uri::unescape(raw).ok()?)
}

/// A Replaces value: `call-id;to-tag=…;from-tag=…` (RFC 3891 §6.1).
fn parse_replaces(value: &str) -> Option<Replaces> {
    let mut parts = value.split(';');
    let call_id = parts.next()?.trim().to_string();
    let (mut to_tag, mut from_tag) = (None, None);
    for p in parts {
        match p.split_once('=') {
            Some((n, v)) if n.trim().eq_ignore_ascii_case("to-tag") => to_tag = Some(v.trim().to_string()),
            Some((n, v)) if n.trim().eq_ignore_ascii_case("from-tag") => from_tag = Some(v.trim().to_string()),
            _ => {}
        }
    }
    Some(Replaces {
        call_id,
        to_tag: to_tag?,
        from_tag: from_tag?,
    })
}

impl CallEngine {
    /// A REFER on leg `x` (its party is the referrer, matched by dialog).
    pub(super) fn on_refer(&mut self, x: LegId, key: TxKey, req: SipMessage, now: Now) -> Result<(), SipError> {
        let refer_to = req
            .header(&HeaderName::ReferTo)
            .ok_or_else(|| SipError::with_reason(400, "Missing Refer-To"))?;
        let addr = NameAddr::parse(refer_to).map_err(|_| SipError::with_reason(400, "Bad Refer-To"))?;
        let uri = SipUri::parse(addr.uri_text).map_err(|_| SipError::with_reason(400, "Bad Refer-To"))?;
        let y = self
            .partner(x)
            .filter(|y| self.legs[y].state.is_answered())
            .ok_or_else(|| SipError::with_reason(403, "No call to transfer"))?;
        if let Some(replaces) = replaces_in(uri.headers) {
            return self.attended(x, y, &replaces, key, &req, now);
        }
        let target = uri
            .user_unescaped()
            .map(|u| u.into_owned())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| SipError::with_reason(400, "Refer-To names no number"))?;
        self.blind(x, y, target, key, &req, now);
        Ok(())
    }

    /// 202, then the referrer's NOTIFYs (100, then 200 with the
    /// subscription terminated), then its leg ends.
    fn accept_and_release(&mut self, x: LegId, key: TxKey, req: &SipMessage, now: Now) {
        self.out.push_back(Output::Respond {
            key,
            resp: response_to(req, 202, None, ""),
        });
        self.notify_refer(x, "SIP/2.0 100 Trying", "active;expires=60");
        self.notify_refer(x, "SIP/2.0 200 OK", "terminated;reason=noresource");
        let Some(call) = self.legs.get(&x).map(|l| l.conversation) else {
            return;
        };
        self.end_leg(x, &Ending::system(200, "Transferred"), now);
        self.settle(call, now);
    }

    /// A NOTIFY of the implicit refer subscription (RFC 3515 §2.4.4).
    fn notify_refer(&mut self, x: LegId, status_line: &str, state: &str) {
        let Some(leg) = self.legs.get_mut(&x) else { return };
        let body = bytes::Bytes::from(format!("{status_line}\r\n"));
        let mut notify = leg
            .dialog
            .request(Method::Notify, Some(("message/sipfrag;version=2.0", body)));
        notify.push_header(HeaderName::Event, "refer");
        notify.push_header(HeaderName::Other("Subscription-State".into()), state.to_string());
        let peer = leg.dialog.peer;
        self.send_request(notify, peer, ClientPurpose::Other);
    }

    fn blind(&mut self, x: LegId, y: LegId, target: String, key: TxKey, req: &SipMessage, now: Now) {
        let referred_by = req.header(&HeaderName::ReferredBy).map(str::to_string);
        let id = self.blind_transfer(x, y, target, referred_by, now);
        if self.stays_to_listen(x, id) {
            self.out.push_back(Output::Respond {
                key,
                resp: response_to(req, 202, None, ""),
            });
            self.notify_refer(x, "SIP/2.0 100 Trying", "active;expires=60");
            self.notify_refer(x, "SIP/2.0 200 OK", "terminated;reason=noresource");
            return;
        }
        self.accept_and_release(x, key, req, now);
    }

    /// A user with `monitor_after_transfer` stays on the call they
    /// transferred (conversation `id` now) as a listener: parked until
    /// someone takes it, then in its bridge. True if `x` stays.
    fn stays_to_listen(&mut self, x: LegId, id: CallRef) -> bool {
        let Some(l) = self.legs.get(&x) else { return false };
        let Some(account) = self.calls.get(&l.conversation).map(|c| c.account.clone()) else {
            return false;
        };
        if !self
            .config
            .monitor_after_transfer
            .contains(&format!("{}@{account}", l.party))
        {
            return false;
        }
        let _ = self.leave(x);
        if let Some(c) = self.calls.get_mut(&id) {
            c.follow_monitors.push((x, Role::Listen));
        }
        tracing::info!(agent = %self.legs[&x].party, "the transferring agent stays on the call to listen");
        true
    }

    /// `x`'s party sends its partner `y` to `target` (REFER or the `##`
    /// code): `y` moves to a conversation of its own that runs the
    /// dialplan for `target`, hearing ringback meanwhile. Ending `x` is
    /// the caller's business.
    fn blind_transfer(&mut self, x: LegId, y: LegId, target: String, referred_by: Option<String>, now: Now) -> CallRef {
        let old = self.legs[&x].conversation;
        let referrer = self.legs[&x].party.clone();
        let referred_by = referred_by.unwrap_or_else(|| format!("<sip:{referrer}@{}>", self.calls[&old].account));
        tracing::info!(call = %self.legs[&y].dialog.call_id, by = %referrer, to = %target, "blind transfer");
        let id = self.move_to_new_conversation(
            y,
            &target,
            TransferRecord {
                by: referrer,
                kind: "blind".into(),
                from_conversation: old,
                outcome: "abandoned".into(),
            },
            Some(referred_by),
            now,
        );
        if let Some(c) = self.calls.get_mut(&old) {
            c.transferred_to = Some(target.clone());
        }
        if let Err(e) = self.park(y, Source::Music(RINGBACK.into())) {
            tracing::warn!(error = %e, "ringback not played");
        }
        let leg = &self.legs[&y];
        let info = CallInfo {
            id: leg.dialog.call_id.clone(),
            from: leg.party.clone(),
            to: target,
            display: self.calls[&id].caller_name.clone().unwrap_or_default(),
            domain: self.calls[&id].account.clone(),
            trunk: None,
        };
        let account = self.calls[&id].account.clone();
        self.mark_live(id);
        self.out.push_back(Output::StartDialplan {
            call: id,
            account,
            info,
        });
        id
    }

    /// Takes leg `y` out of its conversation (which keeps a record of it up
    /// to now) into a new one of its own, answered and parked.
    fn move_to_new_conversation(
        &mut self,
        y: LegId,
        callee: &str,
        transfer: TransferRecord,
        referred_by: Option<String>,
        now: Now,
    ) -> CallRef {
        // The call's monitors follow it to whoever takes it.
        let monitors: Vec<(LegId, Role)> = self
            .legs
            .get(&y)
            .and_then(|l| l.bridge)
            .and_then(|b| self.bridges.get(&b))
            .map(|b| b.members.iter().filter(|(_, r)| *r != Role::Talk).copied().collect())
            .unwrap_or_default();
        let _ = self.leave(y);
        let old = self.legs[&y].conversation;
        let id = self.next_id();
        let leg = &self.legs[&y];
        let stats = self.media.stats(y.endpoint());
        let record = LegRecord {
            leg: y.0,
            call_id: leg.dialog.call_id.clone(),
            party: leg.party.clone(),
            direction: super::ending::direction_name(leg.direction).into(),
            start_ms: leg.start_ms,
            answer_ms: leg.answer_ms,
            end_ms: now.unix_ms,
            sip_code: 200,
            rtp_packets: stats.packets,
            rtp_seq_gaps: stats.seq_gaps,
        };
        let party = leg.party.clone();
        let o = self.calls.get_mut(&old).expect("the leg's conversation");
        o.legs.retain(|l| *l != y);
        o.ended_legs.push(record);
        let mut c = Conversation::new(o.account.clone(), y, &party, now);
        c.caller_may_call_out = o.caller_may_call_out;
        c.presentation = o.presentation.clone();
        c.caller_name = if o.origin == y { o.caller_name.clone() } else { None };
        c.callee = callee.to_string();
        c.answer_ms = Some(now.unix_ms);
        c.transfer = Some(transfer);
        c.referred_by = referred_by;
        c.follow_monitors = monitors;
        self.calls.insert(id, c);
        self.legs.get_mut(&y).expect("exists").conversation = id;
        id
    }

    fn attended(
        &mut self,
        x: LegId,
        y: LegId,
        r: &Replaces,
        key: TxKey,
        req: &SipMessage,
        now: Now,
    ) -> Result<(), SipError> {
        // The referrer's other leg: the Replaces dialog, tags either way round.
        let z = self
            .leg_of_dialog(r)
            .filter(|z| *z != x && self.legs[z].party == self.legs[&x].party)
            .ok_or_else(|| SipError::with_reason(481, "Replaced dialog not found"))?;
        self.join_attended(x, y, z, now)
            .map_err(|why| SipError::with_reason(403, why))?;
        self.accept_and_release(x, key, req, now);
        Ok(())
    }

    /// An attended transfer: `x`'s partner `y` is joined with the partner
    /// of `z`, `x`'s party's other (consult) leg, and `z` ends; ending `x`
    /// is the caller's business. Refused (both calls stay) when either
    /// call is one the party made to a queue, or the consult is not
    /// connected.
    fn join_attended(&mut self, x: LegId, y: LegId, z: LegId, now: Now) -> Result<(), &'static str> {
        // Queues take blind transfers only (the seed's rule): a call the
        // referrer made to a queue cannot be joined.
        let to_queue = |leg: LegId| {
            self.calls
                .get(&self.legs[&leg].conversation)
                .is_some_and(|c| c.queue.is_some() && self.legs[&leg].direction == super::leg::Direction::Inbound)
        };
        if to_queue(x) || to_queue(z) {
            return Err("Queues accept blind transfers only");
        }
        let w = self
            .partner(z)
            .filter(|w| self.legs[w].state.is_answered())
            .ok_or("The other call is not connected")?;
        let referrer = self.legs[&x].party.clone();
        tracing::info!(by = %referrer, transferee = %self.legs[&y].party, target = %self.legs[&w].party, "attended transfer");
        let _ = self.leave(y);
        let _ = self.leave(w);
        let _ = self.bridge_legs(y, w);
        for (leg, other) in [(y, w), (w, y)] {
            let conv = self.legs[&leg].conversation;
            let other_party = self.legs[&other].party.clone();
            if let Some(c) = self.calls.get_mut(&conv) {
                c.transferred_to = Some(other_party);
            }
        }
        // The second call's leg ends quietly.
        let second = self.legs[&z].conversation;
        self.end_leg(z, &Ending::system(200, "Transferred"), now);
        self.settle(second, now);
        Ok(())
    }

    /// An attended transfer asked through the API: `party`, talking on
    /// conversations `id` and `consult`, joins its partners there and
    /// leaves both calls.
    pub fn transfer_attended_of(&mut self, id: CallRef, consult: CallRef, party: &str, now: Now) -> Result<(), String> {
        let (x, y) = self.party_and_partner(id, party)?;
        let (z, _) = self.party_and_partner(consult, party)?;
        if x == z {
            return Err("the consult call is the call itself".into());
        }
        self.join_attended(x, y, z, now)?;
        let first = self.legs[&x].conversation;
        self.end_leg(x, &Ending::system(200, "Transferred"), now);
        self.settle(first, now);
        Ok(())
    }

    /// A digit the relay heard from the party of `endpoint` (RFC 4733).
    /// `<blind_code><number>#` (e.g. `##2001#`) transfers the party's
    /// partner there, blind, and hangs the party up.
    pub fn on_dtmf(&mut self, endpoint: crate::media::EndpointId, digit: char, codes: DtmfCodes<'_>, now: Now) {
        let blind_code = codes.blind;
        let x = LegId(endpoint.0);
        if self.switch_monitor_mode(x, digit) {
            return;
        }
        let Some(leg) = self.legs.get_mut(&x) else { return };
        leg.dtmf.push(digit);
        if leg.dtmf.len() > 32 {
            leg.dtmf.remove(0);
        }
        if self.consult_keys(x, codes.attended, now) {
            return;
        }
        let leg = self.legs.get_mut(&x).expect("exists");
        if digit != '#' {
            return;
        }
        let typed = leg.dtmf[..leg.dtmf.len() - 1].to_string();
        if let Some(number) = code_number(&typed, codes.attended) {
            leg.dtmf.clear();
            return self.start_consult(x, number);
        }
        if blind_code.is_empty() {
            return;
        }
        let Some(number) = code_number(&typed, blind_code) else {
            return;
        };
        leg.dtmf.clear();
        let Some(y) = self.partner(x).filter(|y| self.legs[y].state.is_answered()) else {
            return;
        };
        self.transfer_and_release(x, y, number, now);
    }

    /// `x`'s partner `y` goes to `target`, blind; `x` is hung up (or stays
    /// to listen).
    fn transfer_and_release(&mut self, x: LegId, y: LegId, target: String, now: Now) {
        let id = self.blind_transfer(x, y, target, None, now);
        if self.stays_to_listen(x, id) {
            return;
        }
        let old = self.legs[&x].conversation;
        self.end_leg(x, &Ending::system(200, "Transferred"), now);
        self.settle(old, now);
    }

    /// A blind transfer asked through the API: the partner of `party`
    /// (talking on conversation `id`) goes to `target`, by the same rules
    /// as a REFER; `party` is released.
    pub fn transfer_partner_of(&mut self, id: CallRef, party: &str, target: String, now: Now) -> Result<(), String> {
        let (x, y) = self.party_and_partner(id, party)?;
        self.transfer_and_release(x, y, target, now);
        Ok(())
    }

    /// Our leg in the dialog `r` names (its tags either way round).
    fn leg_of_dialog(&self, r: &Replaces) -> Option<LegId> {
        self.legs
            .values()
            .find(|l| {
                l.dialog.call_id == r.call_id
                    && ((l.local_tag == r.to_tag && tag_in(&l.dialog.remote) == Some(r.from_tag.as_str()))
                        || (l.local_tag == r.from_tag && tag_in(&l.dialog.remote) == Some(r.to_tag.as_str())))
            })
            .map(|l| l.id)
    }

    /// A new INVITE with a `Replaces` header (RFC 3891) naming one of our
    /// dialogs: the leg it replaces and that leg's partner, if `caller` may
    /// take that call over (it is the replaced leg's party, or talks with
    /// it now, as a transferee completing a transfer does). None without
    /// the header.
    pub(super) fn replaced_by(&self, invite: &SipMessage, caller: &str) -> Result<Option<(LegId, LegId)>, SipError> {
        let Some(value) = invite.header(&HeaderName::Other("Replaces".into())) else {
            return Ok(None);
        };
        let r = parse_replaces(value).ok_or_else(|| SipError::with_reason(400, "Bad Replaces"))?;
        let z = self
            .leg_of_dialog(&r)
            .ok_or_else(|| SipError::with_reason(481, "Replaced dialog not found"))?;
        let w = self
            .partner(z)
            .filter(|w| self.legs[w].state.is_answered())
            .ok_or_else(|| SipError::with_reason(481, "Replaced dialog not connected"))?;
        let party = &self.legs[&z].party;
        let talks_with_party = self
            .legs
            .values()
            .filter(|l| l.party == caller)
            .any(|l| self.partner(l.id).is_some_and(|p| self.legs[&p].party == *party));
        if party != caller && !talks_with_party {
            return Err(SipError::with_reason(403, "Not a party of the replaced call"));
        }
        Ok(Some((z, w)))
    }

    /// Completes an INVITE with Replaces: the new leg `new` of conversation
    /// `id` is answered (in the codec `w` uses) and joined to `w`; the
    /// replaced leg `z` is hung up.
    pub(super) fn replace(&mut self, id: CallRef, new: LegId, z: LegId, w: LegId, now: Now) {
        let preferred = self.legs[&w]
            .local_sdp
            .as_deref()
            .and_then(|b| crate::media::sdp::media_info(b).ok())
            .and_then(|i| i.payload_types.into_iter().find(|p| *p == 0 || *p == 8));
        let leg = &self.legs[&new];
        let body = leg.remote_media.as_ref().and_then(|offer| {
            crate::media::sdp::answer_preferring(offer, &leg.invite.body, leg.local_media, preferred)
        });
        let Some(body) = body else {
            return self.end_conversation(id, Ending::system(488, "Not Acceptable Here"), now);
        };
        tracing::info!(replaced = %self.legs[&z].dialog.call_id, by = %self.legs[&new].party, "INVITE with Replaces");
        let joined = self.legs[&w].party.clone();
        if let Some(c) = self.calls.get_mut(&id) {
            c.callee = joined.clone();
            c.connected = Some(w);
            c.transferred_to = Some(joined);
        }
        self.answer_inbound(new, body, now);
        let _ = self.leave(w);
        let _ = self.bridge_legs(new, w);
        let replaced = self.legs[&z].conversation;
        self.end_leg(z, &Ending::system(200, "Replaced"), now);
        self.settle(replaced, now);
    }

    /// The script of a transferred call ended without connecting it: the
    /// transferee hears why, then the call ends.
    pub(super) fn transfer_failed(&mut self, id: CallRef, now: Now) {
        tracing::info!(call = id, "blind transfer failed: the transferee is told and hung up");
        self.transfer_outcome(id, "failed");
        self.announce_and_end(id, TRANSFER_FAILED, now);
    }

    /// Sets how conversation `id`'s transfer ended, if it is one; when
    /// someone took the call, the monitors that followed it join its
    /// bridge (a whisper now reaches whoever took it).
    pub(super) fn transfer_outcome(&mut self, id: CallRef, outcome: &str) {
        let Some(c) = self.calls.get_mut(&id) else { return };
        let Some(t) = c.transfer.as_mut() else { return };
        t.outcome = outcome.to_string();
        if outcome != "connected" {
            return;
        }
        let monitors = std::mem::take(&mut c.follow_monitors);
        let (origin, taker) = (c.origin, c.connected);
        let Some(bridge) = self.bridge_of(origin) else { return };
        for (leg, role) in monitors {
            let role = match (role, taker) {
                (Role::Whisper(_), Some(t)) => Role::Whisper(t),
                (r, _) => r,
            };
            if self.legs.contains_key(&leg) {
                let _ = self.join(leg, bridge, role);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_is_read_from_escaped_uri_headers() {
        assert_eq!(
            replaces_in("Replaces=abc%40host%3Bto-tag%3D12%3Bfrom-tag%3D34"),
            Some(Replaces {
                call_id: "abc@host".into(),
                to_tag: "12".into(),
                from_tag: "34".into()
            })
        );
        assert_eq!(replaces_in("Subject=hi"), None);
        assert_eq!(replaces_in("replaces=x%3Bto-tag%3D1"), None, "both tags are needed");
    }
}
