//! INVITE and in-dialog requests: a new INVITE is authenticated (407
//! challenge, RFC 3261 §22.3), checked for hops and loops, and handed to
//! the call manager; BYE, re-INVITE, UPDATE, INFO and CANCEL go to the
//! call they belong to, or get 481.

use super::handler::{
    addressed_account, authenticate, outcome, Challenger, Outcome, RequestContext, RequestHandler, Stop,
};
use crate::sip::addr::NameAddr;
use crate::sip::response::{random_token, response_to};
use crate::sip::uri::SipUri;
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
            Method::Invite | Method::Bye | Method::Update | Method::Info | Method::Notify | Method::Refer
                if req.has_to_tag() || *method != Method::Refer =>
            {
                in_dialog(req, cx)
            }
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
    if let Some(trunk) = cx.config.trunks.iter().find(|t| t.sends_from(cx.from.addr)) {
        return from_trunk(req, cx, trunk);
    }
    let (ruri, account) = addressed_account(req, cx.config)?;
    let user = authenticate(req, cx, account, Challenger::Proxy)?;
    // The caller ID its external calls present, and the number without
    // the caller-ID prefixes.
    let dialled = ruri.user_unescaped().unwrap_or_default();
    let (presentation, to) = crate::call::caller_id::for_user(account, user, req, &dialled);
    let caller = crate::call::Caller {
        to: Some(&to),
        presentation,
        ..crate::call::Caller::user(user, account)
    };
    cx.engines
        .calls
        .start_call(cx.key.clone(), req.clone(), cx.from, account, caller, cx.now)?;
    Ok(Outcome::Deferred)
}

/// An INVITE from a provider: routed by the number it calls (a DID of an
/// account), without digest; the caller is who its P-Asserted-Identity
/// (or From) names.
fn from_trunk(req: &SipMessage, cx: &mut RequestContext<'_>, trunk: &crate::config::Trunk) -> Result<Outcome, Stop> {
    let user_of = |v: &str| {
        NameAddr::parse(v)
            .ok()
            .and_then(|a| SipUri::parse(a.uri_text).ok())
            .and_then(|u| u.user_unescaped().map(|u| u.into_owned()))
    };
    let ruri_user = SipUri::parse(req.request_uri().unwrap_or(""))
        .ok()
        .and_then(|u| u.user_unescaped().map(|u| u.into_owned()));
    // Sent to our registered contact (the trunk's user): the DID is in To.
    let called = match ruri_user {
        Some(u) if u != trunk.from_user => u,
        _ => req.header(&HeaderName::To).and_then(user_of).unwrap_or_default(),
    };
    let found = cx
        .config
        .accounts
        .iter()
        .find_map(|a| a.dids.iter().find(|d| d.number == called).map(|d| (a, d)));
    let Some((account, did)) = found else {
        tracing::warn!(trunk = %trunk.name, number = %called, "call from a trunk to an unknown DID refused");
        return Err(SipError::with_reason(404, "Unknown DID").into());
    };
    let caller_id = req
        .header(&HeaderName::Other("P-Asserted-Identity".into()))
        .or_else(|| req.header(&HeaderName::From))
        .and_then(user_of)
        .map(|n| trunk.number_format.caller_e164(&n))
        .unwrap_or_else(|| "anonymous".into());
    let display = req
        .header(&HeaderName::From)
        .and_then(|f| {
            NameAddr::parse(f)
                .ok()
                .and_then(|a| a.display.map(|d| d.trim_matches('"').to_string()))
        })
        .unwrap_or_default();
    let to = match &did.to {
        crate::config::DidTarget::Number(n) => n.as_str(),
        crate::config::DidTarget::Dialplan => called.as_str(),
    };
    tracing::info!(trunk = %trunk.name, did = %called, caller = %caller_id, to = %to, "call from a trunk");
    let caller = crate::call::Caller {
        id: &caller_id,
        name: &display,
        may_call_out: false,
        trunk: Some(&trunk.name),
        to: Some(to),
        presentation: Default::default(),
    };
    cx.engines
        .calls
        .start_call(cx.key.clone(), req.clone(), cx.from, account, caller, cx.now)?;
    Ok(Outcome::Deferred)
}
