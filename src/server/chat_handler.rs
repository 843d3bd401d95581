//! MESSAGE (RFC 3428) out of dialog: authenticated (407), checked by the
//! chat service, stored durably, answered 202 Accepted, then pushed to
//! the recipients' registered devices (or queued until they register).

use super::handler::Engines;
use super::handler::{
    addressed_account, authenticate, outcome, Challenger, Outcome, RequestContext, RequestHandler, Stop,
};
use crate::chat::ChatMessage;
use crate::config::Account;
use crate::sip::response::{random_token, response_to};
use crate::sip::{Method, SipError, SipMessage};
use crate::store::StoreHandle;
use std::borrow::Cow;

pub struct ChatHandler;

impl RequestHandler for ChatHandler {
    fn handle(&mut self, req: &SipMessage, cx: &mut RequestContext<'_>) -> Option<Outcome> {
        if req.method() != Some(&Method::Message) {
            return None;
        }
        let in_dialog = req.has_to_tag();
        if in_dialog {
            return Some(Outcome::Respond(SipError::new(481).into_response(req, random_token)));
        }
        Some(outcome(req, message(req, cx)))
    }
}

fn message(req: &SipMessage, cx: &mut RequestContext<'_>) -> Result<Outcome, Stop> {
    let (ruri, account) = addressed_account(req, cx.config)?;
    let to = ruri
        .user_unescaped()
        .map(|u| u.into_owned())
        .ok_or_else(|| SipError::new(404))?;
    let user = authenticate(req, cx, account, Challenger::Proxy)?;
    let accepted = cx
        .engines
        .chat
        .accept(req, account, user, &to, cx.config.chat, cx.now)?;
    store_and_push(cx.engines, cx.store, account, &accepted, &cx.config.sip.user_agent)
        .map_err(|_| SipError::with_reason(500, "Storage Failure"))?;
    Ok(Outcome::Respond(response_to(req, 202, None, &random_token())))
}

/// A message the chat engine accepted (from a MESSAGE or the API): stored
/// before anything is pushed or kept in memory, then taken in and pushed
/// to its recipients whose turn it is.
pub fn store_and_push(
    engines: &mut Engines,
    store: &StoreHandle,
    account: &Account,
    accepted: &crate::chat::Accepted,
    user_agent: &str,
) -> Result<(), crate::store::StoreError> {
    store.write(&accepted.ops)?;
    let m = &accepted.message;
    tracing::info!(id = m.id, from = %m.from, to = %m.to, group = m.group, "chat message stored");
    engines.chat.commit(accepted);
    for aor in &accepted.recipients {
        push_next(engines, store, account, aor, Some(m), user_agent);
    }
    Ok(())
}

/// Pushes the next message waiting for `aor` if its turn has come, its
/// body read from the store (or `fresh`, the message just stored).
pub fn push_next(
    engines: &mut Engines,
    store: &StoreHandle,
    account: &Account,
    aor: &str,
    fresh: Option<&ChatMessage>,
    user_agent: &str,
) {
    let Engines { chat, registrar, .. } = engines;
    while let Some(id) = chat.next_for(aor, registrar) {
        let loaded = match fresh.filter(|m| m.id == id) {
            Some(m) => Ok(Some(Cow::Borrowed(m))),
            None => crate::chat::stored::load(store.backend().as_ref(), id).map(|m| m.map(Cow::Owned)),
        };
        match loaded {
            Ok(Some(m)) => return chat.push(aor, &m, account, registrar, user_agent),
            Ok(None) => {
                tracing::warn!(id, to = aor, "queued chat message missing from the store; dropped");
                let _ = store.write(&[chat.forget(aor, id)]);
            }
            // Logged by the store; tried again at the next registration.
            Err(_) => return,
        }
    }
}
