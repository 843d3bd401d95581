//! SIP URI view (RFC 3261 §19.1): borrowed parts of a `sip:`/`sips:` URI,
//! with IPv6 references, escaped user parts (§19.1.2) and parameters.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri<'a> {
    pub scheme: &'a str,
    /// User part, still escaped; see [`SipUri::user_unescaped`].
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    /// Host without brackets for IPv6.
    pub host: &'a str,
    pub port: Option<u16>,
    /// `;name[=value]` parameters, raw.
    pub params: &'a str,
    /// `?headers`, raw.
    pub headers: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("not a sip or sips URI")]
    Scheme,
    #[error("empty or malformed host")]
    Host,
    #[error("invalid port")]
    Port,
    #[error("invalid escape in user part")]
    Escape,
}

impl<'a> SipUri<'a> {
    pub fn parse(s: &'a str) -> Result<SipUri<'a>, UriError> {
        let s = s.trim();
        let colon = s.find(':').ok_or(UriError::Scheme)?;
        let scheme = &s[..colon];
        if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
            return Err(UriError::Scheme);
        }
        let rest = &s[colon + 1..];
        // userinfo ends at the last '@' before any ';' or '?' of the hostport
        // part; '@' may not appear unescaped in params.
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            Some(ui) => match ui.find(':') {
                Some(c) => (Some(&ui[..c]), Some(&ui[c + 1..])),
                None => (Some(ui), None),
            },
            None => (None, None),
        };
        if let Some(u) = user {
            if u.is_empty() {
                return Err(UriError::Host);
            }
            unescape(u)?;
        }
        let (hostport, params, headers) = split_params(hostpart);
        let (host, port) = split_hostport(hostport)?;
        Ok(SipUri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// The user part with %XX escapes decoded (§19.1.2).
    pub fn user_unescaped(&self) -> Option<Cow<'a, str>> {
        self.user.map(|u| unescape(u).unwrap_or(Cow::Borrowed(u)))
    }

    /// Value of a URI parameter (`;name=value`), or `Some("")` when present
    /// without value. Names compare case-insensitively (§19.1.4).
    pub fn param(&self, name: &str) -> Option<&'a str> {
        find_param(self.params, name)
    }

    /// The address-of-record form `sip:user@host` (no port or params).
    pub fn aor(&self) -> String {
        match self.user_unescaped() {
            Some(u) => format!("sip:{}@{}", u, self.host.to_ascii_lowercase()),
            None => format!("sip:{}", self.host.to_ascii_lowercase()),
        }
    }
}

/// Looks up `name` in a `;a=b;c` parameter string.
pub fn find_param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    // A plain byte loop: this runs several times for every request (Via
    // branch, received, rport; URI and header params) over a few short
    // params, where `split` and `memchr` cost more in setting up than in
    // scanning (~1 k instructions a lookup). SIP text is ASCII here.
    let bytes = params.as_bytes();
    let mut start = 0;
    while start <= bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b';')
            .map_or(bytes.len(), |i| start + i);
        let p = &params[start..end];
        let (k, v) = match p.bytes().position(|b| b == b'=') {
            Some(eq) => (p[..eq].trim_ascii(), p[eq + 1..].trim_ascii()),
            None => (p.trim_ascii(), ""),
        };
        if !k.is_empty() && k.eq_ignore_ascii_case(name) {
            return Some(v);
        }
        start = end + 1;
    }
    None
}

fn split_params(s: &str) -> (&str, &str, &str) {
    // Params start at the first ';' after the host (IPv6 brackets contain ':' but no ';').
    let q = s.find('?').unwrap_or(s.len());
    let (before_q, headers) = (&s[..q], if q < s.len() { &s[q + 1..] } else { "" });
    match before_q.find(';') {
        Some(semi) => (&before_q[..semi], &before_q[semi..], headers),
        None => (before_q, "", headers),
    }
}

/// Splits `host[:port]`, accepting `[v6]:port` references (§19.1.1).
pub fn split_hostport(s: &str) -> Result<(&str, Option<u16>), UriError> {
    let s = s.trim();
    if let Some(v6) = s.strip_prefix('[') {
        let close = v6.find(']').ok_or(UriError::Host)?;
        let host = &v6[..close];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(UriError::Host);
        }
        let after = &v6[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| UriError::Port)?),
            None if after.is_empty() => None,
            None => return Err(UriError::Host),
        };
        return Ok((host, port));
    }
    let (host, port) = match s.rfind(':') {
        Some(c) => (&s[..c], Some(s[c + 1..].parse().map_err(|_| UriError::Port)?)),
        None => (s, None),
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    {
        return Err(UriError::Host);
    }
    Ok((host, port))
}

/// Decodes %XX escapes (§19.1.2).
pub fn unescape(s: &str) -> Result<Cow<'_, str>, UriError> {
    if !s.contains('%') {
        return Ok(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(UriError::Escape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| UriError::Escape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UriError::Escape)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map(Cow::Owned).map_err(|_| UriError::Escape)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `find_param` as first written, with `split`: the meaning the byte
    /// loop keeps.
    fn find_param_by_split<'a>(params: &'a str, name: &str) -> Option<&'a str> {
        params.split(';').find_map(|p| {
            let (k, v) = p
                .split_once('=')
                .map_or((p.trim_ascii(), ""), |(k, v)| (k.trim_ascii(), v.trim_ascii()));
            (!k.is_empty() && k.eq_ignore_ascii_case(name)).then_some(v)
        })
    }

    #[test]
    fn params_are_found_by_name_case_insensitively() {
        let via = ";branch=z9hG4bK1 ; Received = 192.0.2.7;rport;lr;;x=";
        assert_eq!(find_param(via, "branch"), Some("z9hG4bK1"));
        assert_eq!(find_param(via, "received"), Some("192.0.2.7"));
        assert_eq!(find_param(via, "rport"), Some(""));
        assert_eq!(find_param(via, "x"), Some(""));
        assert_eq!(find_param(via, "maddr"), None);
        assert_eq!(find_param("", "a"), None);
    }

    proptest::proptest! {
        #[test]
        fn the_byte_loop_finds_what_split_finds(params in "[;= aAbB]{0,12}", name in "[aAbB]{1,2}") {
            proptest::prop_assert_eq!(find_param(&params, &name), find_param_by_split(&params, &name));
        }
    }

    #[test]
    fn plain_uri() {
        let u = SipUri::parse("sip:1001@example.com:5070;transport=tcp?subject=x").unwrap();
        assert_eq!(u.user, Some("1001"));
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param("TRANSPORT"), Some("tcp"));
        assert_eq!(u.headers, "subject=x");
        assert_eq!(u.aor(), "sip:1001@example.com");
    }

    #[test]
    fn ipv6_and_escapes() {
        let u = SipUri::parse("sip:%61lice@[2001:db8::10]:5060;gr=urn:uuid:f81d4fae").unwrap();
        assert_eq!(u.host, "2001:db8::10");
        assert_eq!(u.port, Some(5060));
        assert_eq!(u.user_unescaped().unwrap(), "alice");
        assert_eq!(u.param("gr"), Some("urn:uuid:f81d4fae"));
        assert!(SipUri::parse("sip:[2001:db8::10").is_err());
        assert!(SipUri::parse("sip:a%zz@h").is_err());
        assert!(SipUri::parse("http://x").is_err());
        assert!(SipUri::parse("sip:host:99999").is_err());
    }

    #[test]
    fn password_and_no_user() {
        let u = SipUri::parse("sips:bob:secret@host").unwrap();
        assert_eq!(u.password, Some("secret"));
        let u = SipUri::parse("sip:127.0.0.1").unwrap();
        assert_eq!(u.user, None);
        assert_eq!(u.aor(), "sip:127.0.0.1");
    }
}
