//! Header names: canonical forms, compact forms (RFC 3261 §7.3.3) and
//! case-insensitive matching.

use bytes::Bytes;
use std::sync::LazyLock;

/// A header name. Well-known headers are an enum so lookups do not compare
/// strings; everything else keeps its original spelling, and compares
/// equal to any spelling of the same name (RFC 3261 §7.3.1: header names
/// are case-insensitive).
#[derive(Debug, Clone, Eq)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    ContentLength,
    ContentType,
    ContentEncoding,
    Expires,
    MinExpires,
    Authorization,
    WwwAuthenticate,
    ProxyAuthorization,
    ProxyAuthenticate,
    Allow,
    Accept,
    Supported,
    Require,
    Route,
    RecordRoute,
    UserAgent,
    Server,
    Date,
    Event,
    AllowEvents,
    Subject,
    ReferTo,
    ReferredBy,
    SessionExpires,
    Other(Bytes),
}

impl PartialEq for HeaderName {
    fn eq(&self, other: &HeaderName) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl HeaderName {
    /// Parses a header name, accepting any case and the compact forms of
    /// RFC 3261 §7.3.3 (and RFC 3265/3515/4028 compact forms).
    pub fn parse(raw: &[u8]) -> HeaderName {
        if raw.len() == 1 {
            return match raw[0].to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'l' => HeaderName::ContentLength,
                b'c' => HeaderName::ContentType,
                b'e' => HeaderName::ContentEncoding,
                b'k' => HeaderName::Supported,
                b's' => HeaderName::Subject,
                b'o' => HeaderName::Event,
                b'u' => HeaderName::AllowEvents,
                b'r' => HeaderName::ReferTo,
                b'b' => HeaderName::ReferredBy,
                b'x' => HeaderName::SessionExpires,
                _ => HeaderName::Other(Bytes::copy_from_slice(raw)),
            };
        }
        // Only the known names of the same length are compared (a scan of
        // all of them was ~190 instructions a header, ~10 headers a request).
        known_of_length(raw.len())
            .iter()
            .find(|name| raw.eq_ignore_ascii_case(name.as_str().as_bytes()))
            .cloned()
            .unwrap_or_else(|| HeaderName::Other(Bytes::copy_from_slice(raw)))
    }

    /// The canonical spelling used when serializing.
    pub fn as_str(&self) -> &str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::Contact => "Contact",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::ContentEncoding => "Content-Encoding",
            HeaderName::Expires => "Expires",
            HeaderName::MinExpires => "Min-Expires",
            HeaderName::Authorization => "Authorization",
            HeaderName::WwwAuthenticate => "WWW-Authenticate",
            HeaderName::ProxyAuthorization => "Proxy-Authorization",
            HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
            HeaderName::Allow => "Allow",
            HeaderName::Accept => "Accept",
            HeaderName::Supported => "Supported",
            HeaderName::Require => "Require",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Server => "Server",
            HeaderName::Date => "Date",
            HeaderName::Event => "Event",
            HeaderName::AllowEvents => "Allow-Events",
            HeaderName::Subject => "Subject",
            HeaderName::ReferTo => "Refer-To",
            HeaderName::ReferredBy => "Referred-By",
            HeaderName::SessionExpires => "Session-Expires",
            HeaderName::Other(b) => std::str::from_utf8(b).unwrap_or("X-Invalid"),
        }
    }

    /// Whether this header may carry several comma-separated values
    /// (RFC 3261 §7.3.1). Authorization-style headers and dates may contain
    /// commas that do not separate values.
    pub fn is_list(&self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Contact
                | HeaderName::Allow
                | HeaderName::Accept
                | HeaderName::Supported
                | HeaderName::Require
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::AllowEvents
        )
    }

    /// Whether `self` matches a name given as text, e.g. "X-Foo".
    pub fn matches(&self, other: &str) -> bool {
        self.as_str().eq_ignore_ascii_case(other)
    }
}

/// Every header name with a canonical spelling (all but `Other`).
const KNOWN: [HeaderName; 31] = [
    HeaderName::Via,
    HeaderName::From,
    HeaderName::To,
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::Contact,
    HeaderName::MaxForwards,
    HeaderName::ContentLength,
    HeaderName::ContentType,
    HeaderName::ContentEncoding,
    HeaderName::Expires,
    HeaderName::MinExpires,
    HeaderName::Authorization,
    HeaderName::WwwAuthenticate,
    HeaderName::ProxyAuthorization,
    HeaderName::ProxyAuthenticate,
    HeaderName::Allow,
    HeaderName::Accept,
    HeaderName::Supported,
    HeaderName::Require,
    HeaderName::Route,
    HeaderName::RecordRoute,
    HeaderName::UserAgent,
    HeaderName::Server,
    HeaderName::Date,
    HeaderName::Event,
    HeaderName::AllowEvents,
    HeaderName::Subject,
    HeaderName::ReferTo,
    HeaderName::ReferredBy,
    HeaderName::SessionExpires,
];

/// The known names whose canonical spelling is `len` bytes long, grouped
/// once from [`KNOWN`].
fn known_of_length(len: usize) -> &'static [HeaderName] {
    static BY_LENGTH: LazyLock<Vec<Vec<HeaderName>>> = LazyLock::new(|| {
        let mut by_length = Vec::new();
        for name in KNOWN {
            let len = name.as_str().len();
            if by_length.len() <= len {
                by_length.resize(len + 1, Vec::new());
            }
            by_length[len].push(name);
        }
        by_length
    });
    BY_LENGTH.get(len).map_or(&[], Vec::as_slice)
}

/// Splits a list header value at commas that are outside quotes and angle
/// brackets (RFC 3261 §7.3.1), trimming whitespace around each element.
/// Lazy and allocation-free: it runs on every Via and Contact lookup.
pub fn split_list(value: &str) -> ListItems<'_> {
    ListItems { rest: Some(value) }
}

/// The elements of a list header value; see [`split_list`].
pub struct ListItems<'a> {
    rest: Option<&'a str>,
}

impl<'a> ListItems<'a> {
    /// The next element, empty ones included.
    fn next_raw(&mut self) -> Option<&'a str> {
        let value = self.rest?;
        let (mut in_quotes, mut in_angle, mut escaped) = (false, false, false);
        for (i, &b) in value.as_bytes().iter().enumerate() {
            if escaped {
                escaped = false;
                continue;
            }
            match b {
                b'\\' if in_quotes => escaped = true,
                b'"' => in_quotes = !in_quotes,
                b'<' if !in_quotes => in_angle = true,
                b'>' if !in_quotes => in_angle = false,
                b',' if !in_quotes && !in_angle => {
                    self.rest = Some(&value[i + 1..]);
                    return Some(value[..i].trim());
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(value.trim())
    }
}

impl<'a> Iterator for ListItems<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            let item = self.next_raw()?;
            if !item.is_empty() {
                return Some(item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn other_names_match_in_any_case() {
        let parsed = HeaderName::parse(b"p-asserted-IDENTITY");
        assert_eq!(parsed, HeaderName::Other("P-Asserted-Identity".into()));
        assert_ne!(parsed, HeaderName::Other("Privacy".into()));
        assert_ne!(HeaderName::parse(b"Via"), HeaderName::From);
    }

    use super::*;

    #[test]
    fn compact_and_case_insensitive_names() {
        assert_eq!(HeaderName::parse(b"i"), HeaderName::CallId);
        assert_eq!(HeaderName::parse(b"V"), HeaderName::Via);
        assert_eq!(HeaderName::parse(b"cAlL-iD"), HeaderName::CallId);
        assert_eq!(HeaderName::parse(b"l"), HeaderName::ContentLength);
        assert_eq!(HeaderName::parse(b"X-Foo").as_str(), "X-Foo");
    }

    /// Every known name, in any case, parses to itself.
    #[test]
    fn every_known_name_parses_back() {
        for name in KNOWN {
            let text = name.as_str();
            assert!(
                !matches!(HeaderName::parse(text.as_bytes()), HeaderName::Other(_)),
                "{text}"
            );
            assert_eq!(HeaderName::parse(text.as_bytes()), name);
            assert_eq!(HeaderName::parse(text.to_ascii_lowercase().as_bytes()), name);
            assert_eq!(HeaderName::parse(text.to_ascii_uppercase().as_bytes()), name);
        }
        assert_eq!(
            HeaderName::parse(b"Contacts"),
            HeaderName::Other(Bytes::from_static(b"Contacts"))
        );
    }

    #[test]
    fn list_split_respects_quotes_and_brackets() {
        let v = r#""Doe, John" <sip:a@b;x=1,2>;q=0.5, <sip:c@d>"#;
        let parts: Vec<_> = split_list(v).collect();
        assert_eq!(parts, vec![r#""Doe, John" <sip:a@b;x=1,2>;q=0.5"#, "<sip:c@d>"]);
        assert_eq!(split_list(" a , ,b").collect::<Vec<_>>(), vec!["a", "b"]);
    }
}
