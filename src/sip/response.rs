//! Building responses to requests (RFC 3261 §8.2.6): copies Via, From,
//! To, Call-ID and CSeq, adds a To tag where the request had none.

use super::header::HeaderName;
use super::message::{Header, SipMessage, StartLine};
use bytes::Bytes;
use bytestring::ByteString;
use rand::Rng;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

/// Default reason phrases (RFC 3261 §21 and extensions).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        603 => "Decline",
        _ => "Unknown",
    }
}

/// A 64-bit fingerprint of a request's transaction identity (top Via,
/// Call-ID, CSeq, From), keyed with a random key of this process: the same
/// for a retransmission of the request, unpredictable to peers.
pub fn request_fingerprint(req: &SipMessage) -> u64 {
    keyed_hash((
        req.top_via(),
        req.header(&HeaderName::CallId),
        req.header(&HeaderName::CSeq),
        req.header(&HeaderName::From),
    ))
}

/// A hash of `value` keyed with a random key of this process (SipHash):
/// stable within the process, unpredictable to peers.
pub fn keyed_hash(value: impl std::hash::Hash) -> u64 {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    KEY.get_or_init(RandomState::new).hash_one(value)
}

/// The To tag of an answer that may be sent statelessly: the same tag for
/// the same request (RFC 3261 §8.2.7), so that the answer to a
/// retransmission is the same answer.
pub fn stateless_tag(req: &SipMessage) -> String {
    fingerprint_tag(request_fingerprint(req))
}

/// [`stateless_tag`] of a fingerprint already computed.
pub fn fingerprint_tag(fingerprint: u64) -> String {
    format!("{fingerprint:016x}")
}

/// A random token suitable for tags and branches.
pub fn random_token() -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

/// Creates a response to `req`. `to_tag` is added to To when the request's
/// To has no tag and the status is not 100 (§8.2.6.2).
pub fn response_to(req: &SipMessage, status: u16, reason: Option<&str>, to_tag: &str) -> SipMessage {
    let mut headers = Vec::with_capacity(8);
    for h in &req.headers {
        match h.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => headers.push(h.clone()),
            HeaderName::To => {
                if super::addr::has_tag(&h.value) || status == 100 {
                    headers.push(h.clone());
                } else {
                    let mut v = String::with_capacity(h.value.len() + 5 + to_tag.len());
                    v.push_str(&h.value);
                    v.push_str(";tag=");
                    v.push_str(to_tag);
                    headers.push(Header {
                        name: HeaderName::To,
                        value: ByteString::from(v),
                    });
                }
            }
            _ => {}
        }
    }
    SipMessage {
        start: StartLine::Response {
            status,
            reason: match reason {
                Some(r) => ByteString::from(r),
                None => ByteString::from_static(reason_phrase(status)),
            },
        },
        headers,
        body: Bytes::new(),
    }
}
