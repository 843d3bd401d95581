//! Legs to providers: which trunk an external dial goes out through (the
//! list in order, skipping trunks at `max_channels`), the provider's
//! digest challenge answered once per leg (RFC 3261 §22.2: the same
//! INVITE again with the next CSeq and credentials), and fail-over to the
//! next trunk when a provider fails (5xx, 408, no answer).

use super::leg::{LegId, LegState};
use super::originate::Contact;
use super::{CallEngine, CallRef, ClientPurpose};
use crate::clock::Now;
use crate::dialplan::{DialOutcome, Reply};
use crate::sip::dialog::{new_branch, via};
use crate::sip::{HeaderName, Method};

impl CallEngine {
    /// The next trunk of conversation `id`'s external dial that has a free
    /// channel, as a contact for `number`.
    pub(super) fn next_trunk(&mut self, id: CallRef, number: &str) -> Option<Contact> {
        loop {
            let trunk = self.calls.get_mut(&id)?.trunks_left.pop_front()?;
            let busy = trunk.max_channels > 0 && self.channels_in_use(&trunk.name) >= trunk.max_channels as usize;
            if busy {
                tracing::info!(trunk = %trunk.name, "trunk at max_channels; trying the next");
                continue;
            }
            // As the provider wants it written (E.164, national, as dialled).
            let number = trunk.number_format.apply(number);
            return Some(Contact {
                uri: format!("sip:{number}@{}", trunk.uri_host()),
                target: number,
                peer: crate::trunk::registration::peer_of(&trunk),
                trunk: Some(trunk),
            });
        }
    }

    /// Legs through trunk `name` that are not over.
    fn channels_in_use(&self, name: &str) -> usize {
        self.legs
            .values()
            .filter(|l| l.trunk.as_ref().is_some_and(|t| t.name == name) && l.state != LegState::Cancelling)
            .count()
    }

    /// After a provider failed conversation `id`'s leg: rings the next
    /// trunk, if there is one (true), within the same dial.
    pub(super) fn fail_over(&mut self, id: CallRef, now: Now) -> bool {
        let Some(number) = self.calls.get(&id).map(|c| c.trunk_number.clone()) else {
            return false;
        };
        while let Some(contact) = self.next_trunk(id, &number) {
            let domain = self.calls[&id].account.clone();
            let name = contact.trunk.as_ref().map(|t| t.name.clone()).unwrap_or_default();
            match self.originate(id, &contact, &domain, now) {
                Ok(_) => {
                    tracing::info!(trunk = %name, number = %number, "failing over to the next trunk");
                    return true;
                }
                Err(e) => tracing::warn!(trunk = %name, error = %e, "leg not originated"),
            }
        }
        false
    }

    /// A 401/407 to a trunk leg's INVITE: sends it again with the trunk's
    /// credentials (true), unless it already did for this leg.
    pub(super) fn answer_trunk_challenge(&mut self, id: LegId, resp: &crate::sip::SipMessage) -> bool {
        let Some(leg) = self.legs.get_mut(&id) else {
            return false;
        };
        let Some(trunk) = leg.trunk.as_mut().filter(|t| !t.answered) else {
            return false;
        };
        let uri = leg.invite.request_uri().unwrap_or("").to_string();
        let credentials = crate::sip::digest::ClientCredentials {
            username: &trunk.auth_username,
            password: &trunk.password,
            realm: trunk.realm.as_deref(),
        };
        let Ok((name, answer)) = credentials.answer(resp, "INVITE", &uri, 1) else {
            return false;
        };
        trunk.answered = true;
        // The same request, a new transaction: fresh branch, next CSeq.
        leg.dialog.local_cseq += 1;
        let mut invite = leg.invite.clone();
        invite.remove_headers(&HeaderName::Via);
        invite.remove_headers(&HeaderName::CSeq);
        let branch = new_branch();
        let mut headers = vec![
            crate::sip::message::Header {
                name: HeaderName::Via,
                value: via(leg.dialog.peer, leg.dialog.via_addr, &branch).into(),
            },
            crate::sip::message::Header {
                name: HeaderName::CSeq,
                value: format!("{} {}", leg.dialog.local_cseq, Method::Invite).into(),
            },
            crate::sip::message::Header {
                name,
                value: answer.into(),
            },
        ];
        headers.append(&mut invite.headers);
        invite.headers = headers;
        leg.invite = invite.clone();
        let peer = leg.dialog.peer;
        tracing::debug!(trunk = %trunk.name, "answering the provider's challenge");
        self.send_request(invite, peer, ClientPurpose::Originate { leg: id });
        true
    }

    /// No trunk could take an external dial.
    pub(super) fn no_trunk(&mut self, id: CallRef) {
        if let Some(call) = self.calls.get_mut(&id) {
            call.last_failure = Some((503, Some("No trunk available for external numbers".into())));
        }
        self.reply(id, Reply::Dialed(DialOutcome::new("failed", 503)));
    }
}
