//! Typed views of structured header values: name-addr (From, To, Contact;
//! RFC 3261 §20.10), Via (§20.42) and CSeq (§20.16).

use super::method::Method;
use super::uri::{find_param, split_hostport, SipUri, UriError};

/// `[display] <uri>;params` or `uri;params` (where params belong to the
/// header, not the URI, §20.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    pub display: Option<&'a str>,
    pub uri_text: &'a str,
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    pub fn parse(v: &'a str) -> Result<NameAddr<'a>, UriError> {
        let v = v.trim();
        if let Some(lt) = find_unquoted(v, b'<') {
            let gt = v[lt..].find('>').ok_or(UriError::Host)? + lt;
            let display = v[..lt].trim();
            let display = display
                .strip_prefix('"')
                .and_then(|d| d.strip_suffix('"'))
                .unwrap_or(display);
            Ok(NameAddr {
                display: (!display.is_empty()).then_some(display),
                uri_text: v[lt + 1..gt].trim(),
                params: &v[gt + 1..],
            })
        } else {
            match v.find(';') {
                Some(semi) => Ok(NameAddr {
                    display: None,
                    uri_text: v[..semi].trim(),
                    params: &v[semi..],
                }),
                None => Ok(NameAddr {
                    display: None,
                    uri_text: v,
                    params: "",
                }),
            }
        }
    }

    pub fn uri(&self) -> Result<SipUri<'a>, UriError> {
        SipUri::parse(self.uri_text)
    }

    pub fn param(&self, name: &str) -> Option<&'a str> {
        find_param(self.params, name)
    }

    pub fn tag(&self) -> Option<&'a str> {
        self.param("tag")
    }
}

fn find_unquoted(s: &str, needle: u8) -> Option<usize> {
    let mut in_q = false;
    let mut esc = false;
    for (i, b) in s.bytes().enumerate() {
        if esc {
            esc = false;
            continue;
        }
        match b {
            b'\\' if in_q => esc = true,
            b'"' => in_q = !in_q,
            _ if b == needle && !in_q => return Some(i),
            _ => {}
        }
    }
    None
}

/// One Via value: `SIP/2.0/UDP host:port;branch=..;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    pub transport: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
    pub params: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Via")]
pub struct ViaError;

impl<'a> Via<'a> {
    pub fn parse(v: &'a str) -> Result<Via<'a>, ViaError> {
        let v = v.trim_ascii();
        // The usual `SIP/2.0/UDP host` first, without the general scan below.
        if let Some(via) = Self::parse_compact(v) {
            return Ok(via);
        }
        // sent-protocol may contain LWS around '/' (RFC 4475 §3.1.1.1).
        let mut slash_count = 0;
        let mut i = 0;
        let b = v.as_bytes();
        let mut proto_end = None;
        while i < b.len() {
            if b[i] == b'/' {
                slash_count += 1;
            } else if slash_count == 2 && !b[i].is_ascii_whitespace() {
                // inside transport token: find its end
                let start = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                proto_end = Some((start, i));
                break;
            }
            i += 1;
        }
        let (ts, te) = proto_end.ok_or(ViaError)?;
        let proto = &v[..ts];
        let mut parts = proto.split('/').map(str::trim);
        if !parts.next().is_some_and(|p| p.eq_ignore_ascii_case("SIP")) || parts.next() != Some("2.0") {
            return Err(ViaError);
        }
        let transport = &v[ts..te];
        let rest = v[te..].trim_start();
        let semi = rest.find(';').unwrap_or(rest.len());
        let (host, port) = split_hostport(rest[..semi].trim()).map_err(|_| ViaError)?;
        Ok(Via {
            transport,
            host,
            port,
            params: &rest[semi..],
        })
    }

    /// `SIP/2.0/<transport> <sent-by>[;params]` written without LWS inside
    /// the sent-protocol, as nearly every peer writes it. None otherwise,
    /// for the general parse to decide.
    fn parse_compact(v: &'a str) -> Option<Via<'a>> {
        let head = v.get(..8)?;
        if !head.eq_ignore_ascii_case("SIP/2.0/") {
            return None;
        }
        let rest = &v[8..];
        let sp = rest.bytes().position(|b| b == b' ' || b == b'\t')?;
        let transport = &rest[..sp];
        if transport.is_empty() || transport.contains('/') {
            return None;
        }
        let rest = rest[sp..].trim_ascii_start();
        let semi = memchr::memchr(b';', rest.as_bytes()).unwrap_or(rest.len());
        let (host, port) = split_hostport(&rest[..semi]).ok()?;
        Some(Via {
            transport,
            host,
            port,
            params: &rest[semi..],
        })
    }

    pub fn param(&self, name: &str) -> Option<&'a str> {
        find_param(self.params, name)
    }

    pub fn branch(&self) -> Option<&'a str> {
        self.param("branch")
    }

    /// `host[:port]` as written, with brackets restored for IPv6.
    pub fn sent_by(&self) -> String {
        // Pushed piece by piece: this runs for every request (transaction
        // key), and `to_string` through `Display` costs several times more.
        let mut s = String::with_capacity(self.host.len() + 8);
        if self.host.contains(':') {
            s.push('[');
            s.push_str(self.host);
            s.push(']');
        } else {
            s.push_str(self.host);
        }
        if let Some(p) = self.port {
            s.push(':');
            super::text::push_decimal(&mut s, u32::from(p));
        }
        s
    }
}

/// `CSeq: 42 INVITE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(v: &str) -> Option<CSeq> {
        let mut it = v.split_whitespace();
        let seq = it.next()?.parse().ok()?;
        let method = Method::parse(it.next()?.as_bytes());
        if it.next().is_some() {
            return None;
        }
        Some(CSeq { seq, method })
    }

    /// The CSeq value of a request that belongs to another's transaction:
    /// that request's number (as written) with `method` — an ACK for a
    /// non-2xx (§17.1.1.3) or a CANCEL (§9.1).
    pub fn same_number(value: &str, method: &Method) -> String {
        let mut v = value.split(' ').next().unwrap_or("1").to_string();
        v.push(' ');
        v.push_str(method.as_str());
        v
    }
}

/// Whether a From/To value carries a tag.
pub fn has_tag(value: &str) -> bool {
    NameAddr::parse(value).is_ok_and(|a| a.tag().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cseq_keeps_its_number_for_another_method() {
        assert_eq!(CSeq::same_number("42 INVITE", &Method::Ack), "42 ACK");
        assert_eq!(CSeq::same_number("7 INVITE", &Method::Cancel), "7 CANCEL");
    }

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse(r#""J Rosenberg \"<>" <sip:j@example.com>;tag=98asjd8"#).unwrap();
        assert_eq!(a.display, Some(r#"J Rosenberg \"<>"#));
        assert_eq!(a.uri_text, "sip:j@example.com");
        assert_eq!(a.tag(), Some("98asjd8"));
        let a = NameAddr::parse("sip:1001@h;tag=x;expires=60").unwrap();
        assert_eq!(a.uri_text, "sip:1001@h");
        assert_eq!(a.param("expires"), Some("60"));
        let a = NameAddr::parse("Bob <sip:b@h;transport=tcp>;q=0.1").unwrap();
        assert_eq!(a.display, Some("Bob"));
        assert_eq!(a.uri().unwrap().param("transport"), Some("tcp"));
        assert_eq!(a.param("transport"), None);
    }

    #[test]
    fn via_forms() {
        let v = Via::parse("SIP / 2.0 / UDP   192.0.2.1:5070 ;branch=z9hG4bK1;rport").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.1");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        assert_eq!(v.param("rport"), Some(""));
        let v = Via::parse("SIP/2.0/TCP [2001:db8::9]:5061;received=2001:db8::9").unwrap();
        assert_eq!(v.host, "2001:db8::9");
        assert_eq!(v.param("received"), Some("2001:db8::9"));
        assert_eq!(v.sent_by(), "[2001:db8::9]:5061");
        assert!(Via::parse("SIP/3.0/UDP h").is_err());
        assert!(Via::parse("garbage").is_err());
    }

    #[test]
    fn cseq() {
        assert_eq!(CSeq::parse(" 4711   REGISTER ").unwrap().seq, 4711);
        assert!(CSeq::parse("x REGISTER").is_none());
        assert!(CSeq::parse("99999999999 REGISTER").is_none());
    }
}
