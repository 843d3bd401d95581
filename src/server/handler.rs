//! The ordered chain of request handlers (DESIGN.md principle 8): each
//! looks at a new request and takes it or passes it on, so a feature is a
//! new handler, not a new branch in a giant match.

use crate::auth::{AuthVerdict, Authenticator};
use crate::call::CallEngine;
use crate::config::{Account, Config, User};
use crate::registrar::Registrar;
use crate::sip::response::{fingerprint_tag, request_fingerprint, stateless_tag};
use crate::sip::transaction::{Peer, TxKey};
use crate::sip::uri::SipUri;
use crate::sip::SipMessage;
use crate::sip::{HeaderName, SipError};
use crate::store::StoreOp;
use std::time::Instant;

/// The sans-IO engines the handlers drive, owned by the core task.
pub struct Engines {
    pub auth: Authenticator,
    pub registrar: Registrar,
    pub calls: CallEngine,
    pub chat: crate::chat::ChatService,
    pub presence: crate::presence::PresenceService,
    pub trunks: crate::trunk::Registrations,
    pub agents: crate::acd::Agents,
    pub queues: crate::acd::Queues,
}

impl Engines {
    /// Registration and call state of `ext@domain`, for presence.
    pub fn user_state(&self, aor: &str) -> crate::presence::UserState {
        let (ext, domain) = aor.split_once('@').unwrap_or((aor, ""));
        crate::presence::UserState {
            registered: !self.registrar.lookup(aor).is_empty(),
            call: self.calls.activity(domain, ext),
            agent: match self.agents.state(aor) {
                crate::acd::AgentState::Acw => Some("acw"),
                crate::acd::AgentState::NotReady { .. } => Some("not_ready"),
                _ => None,
            },
        }
    }

    /// Sends NOTIFYs to the watchers of `aor` if its state changed.
    pub fn presence_changed(&mut self, aor: &str, now: Instant) {
        if !self.presence.watches(aor) {
            return;
        }
        let state = self.user_state(aor);
        self.presence.update(aor, state, now);
    }
}

/// Everything a handler may look at or change for one request.
pub struct RequestContext<'a> {
    pub config: &'a Config,
    pub engines: &'a mut Engines,
    pub from: Peer,
    pub now: crate::clock::Now,
    /// The server transaction of this request.
    pub key: &'a TxKey,
    /// For a CANCEL: the INVITE server transaction it matched.
    pub cancelled_invite: Option<TxKey>,
    pub store: &'a crate::store::StoreHandle,
}

impl RequestContext<'_> {
    /// Stores `ops` (durably, before anything is answered or changed in
    /// memory); a failure is the client's 500 (the store logs it).
    pub fn persist(&self, ops: &[StoreOp]) -> Result<(), SipError> {
        self.store
            .write(ops)
            .map_err(|_| SipError::with_reason(500, "Storage Failure"))
    }
}

/// What a handler decided.
#[derive(Debug)]
pub enum Outcome {
    /// Send this. (Data a handler keeps is stored before, with
    /// [`RequestContext::persist`]: never acknowledged before it would
    /// survive a crash of the daemon.)
    Respond(SipMessage),
    /// Say nothing (banned source, ACK).
    Drop,
    /// The handler answers later itself (the call manager's effects).
    Deferred,
}

pub trait RequestHandler: Send {
    /// Returns None to pass the request to the next handler.
    fn handle(&mut self, req: &SipMessage, cx: &mut RequestContext<'_>) -> Option<Outcome>;
}

/// The Request-URI and the account it addresses: 416 for a URI that is not
/// SIP, 404 for a domain no account serves.
pub fn addressed_account<'r, 'c>(
    req: &'r SipMessage,
    config: &'c Config,
) -> Result<(SipUri<'r>, &'c Account), SipError> {
    let ruri = SipUri::parse(req.request_uri().unwrap_or("")).map_err(|_| SipError::new(416))?;
    let account = config
        .account_for_host(ruri.host)
        .ok_or_else(|| SipError::with_reason(404, "Unknown domain"))?;
    Ok((ruri, account))
}

/// A handler's result as an outcome: errors become their SIP response, a
/// banned source gets nothing.
pub fn outcome(req: &SipMessage, result: Result<Outcome, Stop>) -> Outcome {
    match result {
        Ok(o) => o,
        // Challenges among these go out statelessly: same request, same tag.
        Err(Stop::Reply(e)) => Outcome::Respond(e.into_response(req, || stateless_tag(req))),
        Err(Stop::Silence) => Outcome::Drop,
    }
}

/// Who challenges: the registrar answers 401 with WWW-Authenticate
/// (RFC 3261 §22.2); for calls we act as a proxy would and answer 407
/// with Proxy-Authenticate (§22.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenger {
    Registrar,
    Proxy,
}

/// Why a handler stopped short of its work.
#[derive(Debug)]
pub enum Stop {
    /// Answer with this error (a challenge, 403, 503, any SIP error).
    Reply(SipError),
    /// Say nothing: the source is banned.
    Silence,
}

impl From<SipError> for Stop {
    fn from(e: SipError) -> Stop {
        Stop::Reply(e)
    }
}

/// The one authentication step: the user `req` proves to be among
/// `account`'s users, or why not (handlers pass a `Stop` on with `?`).
pub fn authenticate<'a>(
    req: &SipMessage,
    cx: &mut RequestContext<'_>,
    account: &'a Account,
    who: Challenger,
) -> Result<&'a User, Stop> {
    if account.require_tls && cx.from.transport != crate::sip::transaction::TransportKind::Tls {
        return Err(Stop::Reply(SipError::with_reason(403, "TLS Required")));
    }
    let (credentials, challenge, status) = match who {
        Challenger::Registrar => (HeaderName::Authorization, HeaderName::WwwAuthenticate, 401),
        Challenger::Proxy => (HeaderName::ProxyAuthorization, HeaderName::ProxyAuthenticate, 407),
    };
    let verdict = cx.engines.auth.verify(
        req,
        &credentials,
        account,
        cx.from.addr.ip(),
        cx.now.mono,
        cx.now.unix_s(),
    );
    match verdict {
        AuthVerdict::Authenticated(u) => Ok(u),
        AuthVerdict::Challenge { stale } => {
            // One fingerprint salts the nonce and tags the (stateless) answer.
            let fingerprint = request_fingerprint(req);
            let mut e = SipError::new(status).tagged(fingerprint_tag(fingerprint));
            for ch in
                cx.engines
                    .auth
                    .challenges(&account.domain, stale, cx.now.unix_s(), fingerprint, cx.from.addr.ip())
            {
                e = e.header(challenge.clone(), ch);
            }
            Err(Stop::Reply(e))
        }
        AuthVerdict::Rejected => Err(Stop::Reply(SipError::new(403))),
        AuthVerdict::Throttled => Err(Stop::Reply(
            SipError::with_reason(503, "Too many failed attempts").header(HeaderName::Other("Retry-After".into()), "1"),
        )),
        AuthVerdict::Banned => Err(Stop::Silence),
    }
}
