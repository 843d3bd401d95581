//! SIP request methods (RFC 3261 §7.1 and extensions); method names are
//! case-sensitive (§7.1), unknown ones are kept as extension methods.

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Extension(Bytes),
}

impl Method {
    pub fn parse(raw: &[u8]) -> Method {
        match raw {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"REGISTER" => Method::Register,
            b"OPTIONS" => Method::Options,
            b"INFO" => Method::Info,
            b"UPDATE" => Method::Update,
            b"PRACK" => Method::Prack,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            other => Method::Extension(Bytes::copy_from_slice(other)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(b) => std::str::from_utf8(b).unwrap_or("EXTENSION"),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Methods the daemon serves, for Allow headers of responses outside a
/// dialog (OPTIONS, 405, 501). The one list: handlers for each are in
/// `server`'s chain.
pub const ALLOWED: &str = "REGISTER, OPTIONS, INVITE, ACK, CANCEL, BYE, UPDATE, INFO, MESSAGE, SUBSCRIBE";

/// The subset served inside a call's dialog (Allow of our INVITEs and 2xx,
/// RFC 3261 §20.5).
pub const ALLOWED_IN_CALL: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER";
