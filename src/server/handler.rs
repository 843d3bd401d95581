//! The ordered chain of request handlers (DESIGN.md principle 8): each
//! looks at a new request and takes it or passes it on, so a feature is a
//! new handler, not a new branch in a giant match.

use crate::auth::Authenticator;
use crate::call::CallManager;
use crate::config::Config;
use crate::registrar::Registrar;
use crate::sip::transaction::{Peer, TxKey};
use crate::sip::SipMessage;
use crate::store::StoreOp;
use std::time::Instant;

/// State shared by handlers, owned by the core task.
pub struct Services {
    pub auth: Authenticator,
    pub registrar: Registrar,
    pub calls: CallManager,
}

/// Everything a handler may look at or change for one request.
pub struct RequestContext<'a> {
    pub config: &'a Config,
    pub services: &'a mut Services,
    pub from: Peer,
    pub now: Instant,
    pub now_unix: u64,
    /// The server transaction of this request.
    pub key: &'a TxKey,
    /// For a CANCEL: the INVITE server transaction it matched.
    pub cancelled_invite: Option<TxKey>,
}

/// What a handler decided.
#[derive(Debug)]
pub enum Outcome {
    Respond(SipMessage),
    /// Make `ops` durable, then send `response` (data is never
    /// acknowledged before it would survive a crash).
    PersistThenRespond {
        ops: Vec<StoreOp>,
        response: SipMessage,
    },
    /// Say nothing (banned source, ACK).
    Drop,
    /// The handler answers later itself (the call manager's effects).
    Deferred,
}

pub trait RequestHandler: Send {
    /// Returns None to pass the request to the next handler.
    fn handle(&mut self, req: &SipMessage, cx: &mut RequestContext<'_>) -> Option<Outcome>;
}

/// Methods the daemon implements today, for Allow headers.
pub const ALLOWED_METHODS: &str = "REGISTER, OPTIONS, INVITE, ACK, CANCEL, BYE, UPDATE, INFO";
