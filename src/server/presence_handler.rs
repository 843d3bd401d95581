//! SUBSCRIBE (RFC 6665) for the presence and dialog packages of an
//! account's users: authenticated (407), 489 for other packages, 404 for
//! unknown users; refreshes and removals inside the subscription dialog.

use super::handler::{
    addressed_account, authenticate, outcome, Challenger, Outcome, RequestContext, RequestHandler, Stop,
};
use crate::presence::Package;
use crate::sip::{HeaderName, Method, SipError, SipMessage};

pub struct PresenceHandler;

impl RequestHandler for PresenceHandler {
    fn handle(&mut self, req: &SipMessage, cx: &mut RequestContext<'_>) -> Option<Outcome> {
        if req.method() != Some(&Method::Subscribe) {
            return None;
        }
        Some(outcome(req, subscribe(req, cx)))
    }
}

fn subscribe(req: &SipMessage, cx: &mut RequestContext<'_>) -> Result<Outcome, Stop> {
    let package = req
        .header(&HeaderName::Event)
        .and_then(Package::parse)
        .ok_or_else(|| SipError::new(489).header(HeaderName::AllowEvents, "presence, dialog"))?;
    let (ruri, account) = addressed_account(req, cx.config)?;
    let in_dialog = req.has_to_tag();
    let target = ruri.user_unescaped().map(|u| u.into_owned()).unwrap_or_default();
    let aor = format!("{target}@{}", account.domain);
    if in_dialog {
        let state = cx.engines.user_state(&aor);
        let resp = cx.engines.presence.refresh(req, cx.from, state, cx.now.mono)?;
        return Ok(Outcome::Respond(resp));
    }
    // Authenticate first so that unknown users cannot be probed.
    authenticate(req, cx, account, Challenger::Proxy)?;
    if account.user(&target).is_none() {
        return Err(SipError::new(404).into());
    }
    let state = cx.engines.user_state(&aor);
    let resp = cx
        .engines
        .presence
        .subscribe(req, cx.from, package, &aor, state, cx.now.mono)?;
    tracing::info!(watched = %aor, package = ?package, "subscription created");
    Ok(Outcome::Respond(resp))
}
