//! INVITE and in-dialog requests: a new INVITE is authenticated (407
//! challenge, RFC 3261 §22.3), checked for hops and loops, and handed to
//! the call manager; BYE, re-INVITE, UPDATE, INFO and CANCEL go to the
//! call they belong to, or get 481.

use super::handler::{
    addressed_account, authenticate, outcome, Challenger, Outcome, RequestContext, RequestHandler, Stop,
};
use crate::sip::response::{random_token, response_to};
use crate::sip::{HeaderName, Method, SipError, SipMessage};

pub struct CallHandler;

impl RequestHandler for CallHandler {
    fn handle(&mut self, req: &SipMessage, cx: &mut RequestContext<'_>) -> Option<Outcome> {
        let method = req.method()?;
        let result = match method {
            Method::Invite if !req.has_to_tag() => new_call(req, cx),
            Method::Cancel => {
                let invite = cx.cancelled_invite.clone()?;
                cx.engines.calls.on_cancel(&invite, cx.now);
                Ok(Outcome::Respond(response_to(req, 200, None, &random_token())))
            }
            Method::Invite | Method::Bye | Method::Update | Method::Info | Method::Notify => in_dialog(req, cx),
            _ => return None,
        };
        Some(outcome(req, result))
    }
}

/// A request inside a call's dialog. From another address than the
/// leg's party, it must carry that party's credentials (407 challenge).
fn in_dialog(req: &SipMessage, cx: &mut RequestContext<'_>) -> Result<Outcome, Stop> {
    if let Some((party, domain)) = cx.engines.calls.party_elsewhere(req, cx.from) {
        let account = cx.config.account(&domain).ok_or_else(|| SipError::new(481))?;
        let user = authenticate(req, cx, account, Challenger::Proxy)?;
        if user.extension != party {
            return Err(SipError::with_reason(403, "Not a party of this call").into());
        }
    }
    cx.engines.calls.on_in_dialog(cx.key.clone(), req.clone(), cx.now)?;
    Ok(Outcome::Deferred)
}

fn new_call(req: &SipMessage, cx: &mut RequestContext<'_>) -> Result<Outcome, Stop> {
    // Max-Forwards and loops (§16.3, §8.2.2.2): a B2BUA that dials itself
    // sees one of its own callee Call-IDs come back.
    if req.header(&HeaderName::MaxForwards).is_some_and(|m| m.trim() == "0") {
        return Err(SipError::new(483).into());
    }
    if req.call_id().is_some_and(|c| cx.engines.calls.knows_call_id(c)) {
        return Err(SipError::new(482).into());
    }
    let (_ruri, account) = addressed_account(req, cx.config)?;
    let user = authenticate(req, cx, account, Challenger::Proxy)?;
    cx.engines
        .calls
        .start_call(cx.key.clone(), req.clone(), cx.from, account, user, cx.now)?;
    Ok(Outcome::Deferred)
}
