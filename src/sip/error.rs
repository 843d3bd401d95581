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
}

impl SipError {
    pub fn new(status: u16) -> SipError {
        SipError {
            status,
            reason: None,
            headers: Vec::new(),
        }
    }

    pub fn with_reason(status: u16, reason: impl Into<String>) -> SipError {
        SipError {
            status,
            reason: Some(reason.into()),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> SipError {
        self.headers.push((name, value.into()));
        self
    }

    pub fn to_response(&self, req: &SipMessage, to_tag: &str) -> SipMessage {
        let mut r = response_to(req, self.status, self.reason.as_deref(), to_tag);
        for (n, v) in &self.headers {
            r.push_header(n.clone(), v.clone());
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
