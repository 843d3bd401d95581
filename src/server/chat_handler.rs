//! MESSAGE (RFC 3428) out of dialog: authenticated (407), checked by the
//! chat service, stored durably, answered 202 Accepted, then pushed to
//! the recipients' registered devices (or queued until they register).

use super::handler::{
    addressed_account, authenticate, outcome, Challenger, Outcome, RequestContext, RequestHandler, Stop,
};
use crate::sip::response::{random_token, response_to};
use crate::sip::{Method, SipError, SipMessage};

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
    // Stored before anything is pushed or kept in memory.
    cx.persist(&accepted.ops)?;
    tracing::info!(id = accepted.message.id, from = %user.extension, to = %to, group = accepted.message.group, "chat message stored");
    let super::handler::Engines { chat, registrar, .. } = &mut *cx.engines;
    chat.commit(&accepted);
    for aor in &accepted.recipients {
        chat.deliver(aor, account, registrar, &cx.config.sip.user_agent);
    }
    Ok(Outcome::Respond(response_to(req, 202, None, &random_token())))
}
