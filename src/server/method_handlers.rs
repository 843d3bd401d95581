//! OPTIONS (RFC 3261 §11) and the fallback for methods not (yet)
//! implemented: 481 for an unmatched CANCEL (§9.2), 405 for known methods,
//! 501 for unknown ones, both with Allow (§8.2.1).

use super::handler::{Outcome, RequestContext, RequestHandler};
use crate::sip::method::ALLOWED as ALLOWED_METHODS;
use crate::sip::response::{random_token, response_to};
use crate::sip::{HeaderName, Method, SipError, SipMessage};

pub struct OptionsHandler;

impl RequestHandler for OptionsHandler {
    fn handle(&mut self, req: &SipMessage, _cx: &mut RequestContext<'_>) -> Option<Outcome> {
        if req.method() != Some(&Method::Options) {
            return None;
        }
        let mut r = response_to(req, 200, None, &random_token());
        r.push_header(HeaderName::Allow, ALLOWED_METHODS);
        r.push_header(HeaderName::Accept, "application/sdp");
        r.push_header(HeaderName::Other("Accept-Language".into()), "en");
        r.push_header(HeaderName::Supported, "");
        Some(Outcome::Respond(r))
    }
}

pub struct FallbackHandler;

impl RequestHandler for FallbackHandler {
    fn handle(&mut self, req: &SipMessage, cx: &mut RequestContext<'_>) -> Option<Outcome> {
        let e = match req.method()? {
            Method::Ack => return Some(Outcome::Drop),
            Method::Cancel if cx.cancelled_invite.is_none() => SipError::new(481),
            Method::Extension(_) => SipError::new(501).header(HeaderName::Allow, ALLOWED_METHODS),
            _ => SipError::new(405).header(HeaderName::Allow, ALLOWED_METHODS),
        };
        Some(Outcome::Respond(e.into_response(req, random_token)))
    }
}
