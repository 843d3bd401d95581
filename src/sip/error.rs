//! A request-handling error that carries the SIP response it becomes, so
//! no handler invents responses ad hoc.

use super::response::response_to;
use super::{HeaderName, SipMessage};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipError {
    pub status: u16,
    /// Reason phrase; None means the standard one.
    pub reason: Option<String>,
    pub headers: Vec<(HeaderName, String)>,
    /// The To tag to answer with, when the error's maker already derived
    /// one (a challenge's, from the request's fingerprint).
    pub to_tag: Option<String>,
}

impl SipError {
    pub fn new(status: u16) -> SipError {
        SipError {
            status,
            reason: None,
            headers: Vec::new(),
            to_tag: None,
        }
    }

    pub fn with_reason(status: u16, reason: impl Into<String>) -> SipError {
        SipError {
            status,
            reason: Some(reason.into()),
            headers: Vec::new(),
            to_tag: None,
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> SipError {
        self.headers.push((name, value.into()));
        self
    }

    pub fn tagged(mut self, to_tag: String) -> SipError {
        self.to_tag = Some(to_tag);
        self
    }

    /// The response: To tagged with the error's own tag if it has one,
    /// else `to_tag` (made only then).
    pub fn into_response(self, req: &SipMessage, to_tag: impl FnOnce() -> String) -> SipMessage {
        let tag = self.to_tag.unwrap_or_else(to_tag);
        let mut r = response_to(req, self.status, self.reason.as_deref(), &tag);
        for (n, v) in self.headers {
            r.push_header(n, v);
        }
        r
    }
}

impl std::fmt::Display for SipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.status,
            self.reason
                .as_deref()
                .unwrap_or(super::response::reason_phrase(self.status))
        )
    }
}

impl std::error::Error for SipError {}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn request() -> SipMessage {
        let raw = "REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:a@h>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n";
        SipMessage::parse_datagram(Bytes::from(raw)).unwrap()
    }

    #[test]
    fn the_errors_own_tag_wins_and_the_fallback_is_made_only_without_one() {
        let req = request();
        let tagged = SipError::new(401)
            .tagged("own".into())
            .header(HeaderName::WwwAuthenticate, "Digest x")
            .into_response(&req, || unreachable!("not needed"));
        assert_eq!(tagged.header(&HeaderName::To), Some("<sip:a@h>;tag=own"));
        assert_eq!(tagged.header(&HeaderName::WwwAuthenticate), Some("Digest x"));
        let plain = SipError::new(403).into_response(&req, || "made".into());
        assert_eq!(plain.header(&HeaderName::To), Some("<sip:a@h>;tag=made"));
    }
}
