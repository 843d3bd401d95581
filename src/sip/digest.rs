//! HTTP digest authentication for SIP (RFC 3261 §22.4, RFC 7616, RFC 8760):
//! MD5, MD5-sess, SHA-256 and SHA-256-sess with qop=auth, stateless
//! nonces with an expiry (`stale=true`), and nonce-count replay checks.

use md5::Md5;
use sha2::{Digest, Sha256};
use siphasher::sip128::{Hasher128, SipHasher24};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Algorithm> {
        [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
        ]
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    /// Hex digest of `parts` joined by ':' (RFC 7616 §3.4.1-3.4.3), fed to
    /// the hasher piece by piece rather than formatted into a string.
    fn hash(self, parts: &[&str]) -> String {
        fn run<D: Digest>(parts: &[&str]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p.as_bytes());
            }
            hex_lower(&d.finalize())
        }
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => run::<Md5>(parts),
            Algorithm::Sha256 | Algorithm::Sha256Sess => run::<Sha256>(parts),
        }
    }

    fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }
}

/// The parameters of an `Authorization: Digest …` header, borrowed from
/// the header (owned only where a quoted value had escapes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials<'a> {
    pub username: Cow<'a, str>,
    pub realm: Cow<'a, str>,
    pub nonce: Cow<'a, str>,
    pub uri: Cow<'a, str>,
    pub response: Cow<'a, str>,
    pub algorithm: Option<Cow<'a, str>>,
    pub cnonce: Option<Cow<'a, str>>,
    pub qop: Option<Cow<'a, str>>,
    pub nc: Option<Cow<'a, str>>,
    pub opaque: Option<Cow<'a, str>>,
}

impl<'a> Credentials<'a> {
    /// Parses `Digest k=v, k="v", …` (RFC 7616 §3.4). Returns None if the
    /// scheme is not Digest or a required parameter is missing.
    pub fn parse(value: &'a str) -> Option<Credentials<'a>> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(char::is_whitespace)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return None;
        }
        let mut c = Credentials::default();
        let (mut has_user, mut has_nonce, mut has_resp) = (false, false, false);
        auth_params(rest, |k, v| {
            let is = |name: &str| k.eq_ignore_ascii_case(name);
            if is("username") {
                (c.username, has_user) = (v, true);
            } else if is("realm") {
                c.realm = v;
            } else if is("nonce") {
                (c.nonce, has_nonce) = (v, true);
            } else if is("uri") {
                c.uri = v;
            } else if is("response") {
                (c.response, has_resp) = (v, true);
            } else if is("algorithm") {
                c.algorithm = Some(v);
            } else if is("cnonce") {
                c.cnonce = Some(v);
            } else if is("qop") {
                c.qop = Some(v);
            } else if is("nc") {
                c.nc = Some(v);
            } else if is("opaque") {
                c.opaque = Some(v);
            }
        });
        (has_user && has_nonce && has_resp).then_some(c)
    }

    /// The algorithm named by the client; absent means MD5 (RFC 7616 §3.3).
    pub fn algorithm(&self) -> Option<Algorithm> {
        match &self.algorithm {
            None => Some(Algorithm::Md5),
            Some(a) => Algorithm::parse(a),
        }
    }

    /// The response value expected for `password` and `method`.
    pub fn expected_response(&self, password: &str, method: &str) -> Option<String> {
        let alg = self.algorithm()?;
        Some(compute_response(
            alg,
            &self.username,
            &self.realm,
            password,
            method,
            self,
        ))
    }
}

/// RFC 7616 §3.4.1–3.4.3: response = H(HA1:nonce:nc:cnonce:qop:HA2), or
/// H(HA1:nonce:HA2) for the RFC 2069 form without qop.
pub fn compute_response(
    alg: Algorithm,
    user: &str,
    realm: &str,
    password: &str,
    method: &str,
    c: &Credentials,
) -> String {
    let mut ha1 = alg.hash(&[user, realm, password]);
    let cnonce = c.cnonce.as_deref().unwrap_or("");
    if alg.is_sess() {
        ha1 = alg.hash(&[&ha1, &c.nonce, cnonce]);
    }
    let ha2 = alg.hash(&[method, &c.uri]);
    match c.qop.as_deref() {
        Some(qop) => alg.hash(&[&ha1, &c.nonce, c.nc.as_deref().unwrap_or(""), cnonce, qop, &ha2]),
        None => alg.hash(&[&ha1, &c.nonce, &ha2]),
    }
}

/// Calls `each` with the `k=v, k="quoted, value"` pairs in order; a quoted
/// value is unescaped (RFC 3261 §25.1 quoted-pair) into a new string only
/// if it has escapes. A callback, not a list: no allocation per header.
fn auth_params<'s>(s: &'s str, mut each: impl FnMut(&'s str, Cow<'s, str>)) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[ks..i].trim();
        if i >= b.len() || b[i] == b',' {
            continue;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let val = if i < b.len() && b[i] == b'"' {
            i += 1;
            let vs = i;
            let mut escaped = false;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    escaped = true;
                    i += 1;
                }
                i += 1;
            }
            let raw = &s[vs..i.min(b.len())];
            i += 1;
            if escaped {
                let mut v = String::with_capacity(raw.len());
                let mut chars = raw.chars();
                while let Some(c) = chars.next() {
                    v.push(if c == '\\' { chars.next().unwrap_or(c) } else { c });
                }
                Cow::Owned(v)
            } else {
                Cow::Borrowed(raw)
            }
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            Cow::Borrowed(s[vs..i].trim())
        };
        if !key.is_empty() {
            each(key, val);
        }
    }
}

/// Lower-case hex of `bytes`. `hex::encode` builds its string a char at
/// a time (about 30 instructions a byte); its slice encoder writes bytes
/// from a table, and digests are hashed several times a registration.
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex::encode_to_slice(bytes, &mut out).expect("output is twice the input");
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Constant-time comparison of two ASCII hex strings.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| {
        acc | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase())
    }) == 0
}

/// What a nonce check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    Valid,
    /// Ours but expired: challenge again with `stale=true` (RFC 7616 §3.3).
    Stale,
    /// Not issued by us, or a nonce count already used.
    Invalid,
}

/// Issues self-validating nonces (timestamp + random + keyed hash) and
/// tracks the highest nonce count used with each, to reject replays.
pub struct NonceKeeper {
    /// Random key of the nonce MAC, SipHash-2-4 with a 128-bit tag: a PRF
    /// made for short inputs (Aumasson & Bernstein, 2012), a tenth of the
    /// instructions of a keyed SHA-256 over the 32-byte nonce head, which
    /// was 5 % of a registration's work (two MACs: issue and check).
    key: [u8; 16],
    lifetime_secs: u64,
    /// Highest nonce-count seen, by nonce head (issue time in the high 64
    /// bits, salt in the low): 20 bytes a nonce, not a 56-byte string.
    counts: HashMap<u128, u32>,
}

impl NonceKeeper {
    pub fn new(lifetime_secs: u64) -> NonceKeeper {
        NonceKeeper {
            key: rand::random(),
            lifetime_secs,
            counts: HashMap::new(),
        }
    }

    pub fn set_lifetime(&mut self, secs: u64) {
        self.lifetime_secs = secs;
    }

    /// A nonce issued at `now_unix`; `salt` (a keyed fingerprint of the
    /// request) makes it one request's: the same request in the same second
    /// gets the same nonce. Only the MAC makes a nonce unforgeable.
    /// The nonce is bound to `client`'s address: answered from another
    /// address it is invalid (a spoofed source cannot use it to fail in
    /// someone else's name).
    pub fn issue(&self, now_unix: u64, salt: u64, client: IpAddr) -> String {
        // Both numbers as 16 zero-padded hex digits, as `{:016x}` would
        // write them, without the formatting machinery.
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&now_unix.to_be_bytes());
        id[8..].copy_from_slice(&salt.to_be_bytes());
        let mut nonce = hex_lower(&id);
        let mac = self.mac(&nonce, client);
        nonce.push_str(&mac);
        nonce
    }

    /// 96 bits of the tag over the nonce head and the client's address, as
    /// 24 hex digits.
    fn mac(&self, head: &str, client: IpAddr) -> String {
        let mut h = SipHasher24::new_with_key(&self.key);
        std::hash::Hasher::write(&mut h, head.as_bytes());
        match client {
            IpAddr::V4(a) => std::hash::Hasher::write(&mut h, &a.octets()),
            IpAddr::V6(a) => std::hash::Hasher::write(&mut h, &a.octets()),
        }
        hex_lower(&h.finish128().as_bytes()[..12])
    }

    /// Checks a nonce and, when the client used qop, its nonce count.
    /// A valid nonce-count must be strictly greater than any seen before.
    pub fn check(&mut self, nonce: &str, nc: Option<&str>, now_unix: u64, client: IpAddr) -> NonceStatus {
        if nonce.len() != 56 || !nonce.is_ascii() {
            return NonceStatus::Invalid;
        }
        let (head, mac) = nonce.split_at(32);
        if !constant_time_eq(mac, &self.mac(head, client)) {
            return NonceStatus::Invalid;
        }
        let Ok(id) = u128::from_str_radix(head, 16) else {
            return NonceStatus::Invalid;
        };
        let issued = (id >> 64) as u64;
        if now_unix.saturating_sub(issued) > self.lifetime_secs || issued > now_unix + 5 {
            return NonceStatus::Stale;
        }
        if let Some(nc) = nc {
            let Ok(n) = u32::from_str_radix(nc, 16) else {
                return NonceStatus::Invalid;
            };
            let seen = self.counts.entry(id).or_insert(0);
            if n <= *seen {
                return NonceStatus::Invalid;
            }
            *seen = n;
        }
        NonceStatus::Valid
    }

    /// Forgets counts of expired nonces.
    pub fn purge(&mut self, now_unix: u64) {
        let life = self.lifetime_secs;
        self.counts
            .retain(|id, _| now_unix.saturating_sub((id >> 64) as u64) <= life);
        if self.counts.capacity() > 4 * self.counts.len() + 1024 {
            self.counts.shrink_to(2 * self.counts.len() + 256);
        }
    }

    pub fn tracked(&self) -> usize {
        self.counts.len()
    }
}

/// Our answer, as a client, to a `WWW-Authenticate`/`Proxy-Authenticate`
/// value (RFC 7616 §3.4 with `qop=auth` when offered, RFC 2069 form
/// otherwise): the `Authorization`/`Proxy-Authorization` value, or None
/// for a challenge that is not Digest or names an algorithm we lack.
pub fn answer_challenge(
    challenge: &str,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Option<String> {
    let (scheme, rest) = challenge.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let (mut realm, mut nonce, mut opaque, mut alg, mut qop_auth) = (None, None, None, Some(Algorithm::Md5), false);
    auth_params(rest, |k, v| {
        let is = |name: &str| k.eq_ignore_ascii_case(name);
        if is("realm") {
            realm = Some(v);
        } else if is("nonce") {
            nonce = Some(v);
        } else if is("opaque") {
            opaque = Some(v);
        } else if is("algorithm") {
            alg = Algorithm::parse(&v);
        } else if is("qop") {
            qop_auth = v.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth"));
        }
    });
    let (alg, realm, nonce) = (alg?, realm?, nonce?);
    let nc = format!("{nc:08x}");
    let c = Credentials {
        username: username.into(),
        realm: realm.clone(),
        nonce: nonce.clone(),
        uri: uri.into(),
        cnonce: qop_auth.then(|| cnonce.into()),
        nc: qop_auth.then(|| nc.as_str().into()),
        qop: qop_auth.then(|| "auth".into()),
        ..Credentials::default()
    };
    let response = compute_response(alg, username, &realm, password, method, &c);
    let mut v = format!(
        r#"Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}", algorithm={}"#,
        alg.as_str()
    );
    if qop_auth {
        v.push_str(&format!(r#", qop=auth, nc={nc}, cnonce="{cnonce}""#));
    }
    if let Some(o) = opaque {
        v.push_str(&format!(r#", opaque="{o}""#));
    }
    Some(v)
}

/// What a client (a trunk) answers challenges with.
#[derive(Debug, Clone, Copy)]
pub struct ClientCredentials<'a> {
    pub username: &'a str,
    pub password: &'a str,
    /// Only challenges of this realm are answered.
    pub realm: Option<&'a str>,
}

/// Why a challenge goes unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    OtherRealm,
    /// Not Digest, an algorithm we lack, or no challenge at all.
    Unusable,
}

impl ClientCredentials<'_> {
    /// The header answering a 401 (`Authorization`) or 407
    /// (`Proxy-Authorization`) `resp` for `method` on `uri` (RFC 3261
    /// §22.2, §22.3), with nonce count `nc`.
    pub fn answer(
        &self,
        resp: &crate::sip::SipMessage,
        method: &str,
        uri: &str,
        nc: u32,
    ) -> Result<(crate::sip::HeaderName, String), Unanswered> {
        use crate::sip::HeaderName;
        let (asked, credentials) = if resp.status() == Some(401) {
            (HeaderName::WwwAuthenticate, HeaderName::Authorization)
        } else {
            (HeaderName::ProxyAuthenticate, HeaderName::ProxyAuthorization)
        };
        let challenge = resp.header(&asked).ok_or(Unanswered::Unusable)?;
        if self
            .realm
            .is_some_and(|r| challenge_realm(challenge).as_deref() != Some(r))
        {
            return Err(Unanswered::OtherRealm);
        }
        let cnonce = crate::sip::response::random_token();
        answer_challenge(challenge, self.username, self.password, method, uri, &cnonce, nc)
            .map(|v| (credentials, v))
            .ok_or(Unanswered::Unusable)
    }
}

/// The realm a `WWW-Authenticate`/`Proxy-Authenticate` value names.
pub fn challenge_realm(challenge: &str) -> Option<String> {
    let (_, rest) = challenge.trim().split_once(char::is_whitespace)?;
    let mut realm = None;
    auth_params(rest, |k, v| {
        if k.eq_ignore_ascii_case("realm") {
            realm = Some(v.into_owned());
        }
    });
    realm
}

/// A `WWW-Authenticate`/`Proxy-Authenticate` value.
pub fn challenge(realm: &str, nonce: &str, alg: Algorithm, stale: bool) -> String {
    let mut v = format!(
        r#"Digest realm="{realm}", nonce="{nonce}", algorithm={}, qop="auth""#,
        alg.as_str()
    );
    if stale {
        v.push_str(", stale=true");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_answer_to_a_challenge_is_what_a_server_checks() {
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let ch = challenge("prov.test", "n0nce", alg, false) + r#", opaque="op""#;
            let v = answer_challenge(&ch, "trunk1", "secret", "REGISTER", "sip:prov.test", "c1", 1).unwrap();
            let c = Credentials::parse(&v).unwrap();
            assert_eq!(c.algorithm(), Some(alg));
            assert_eq!(
                (c.nc.as_deref(), c.qop.as_deref(), c.opaque.as_deref()),
                (Some("00000001"), Some("auth"), Some("op"))
            );
            assert_eq!(c.expected_response("secret", "REGISTER").as_deref(), Some(&*c.response));
            assert_ne!(c.expected_response("wrong", "REGISTER").as_deref(), Some(&*c.response));
        }
        // Without qop: the RFC 2069 form; unknown schemes and algorithms: none.
        let v = answer_challenge(r#"Digest realm="r", nonce="n""#, "u", "p", "INVITE", "sip:x", "c", 1).unwrap();
        assert!(
            !v.contains("qop")
                && Credentials::parse(&v)
                    .unwrap()
                    .expected_response("p", "INVITE")
                    .is_some()
        );
        assert!(answer_challenge(r#"Basic realm="r""#, "u", "p", "INVITE", "sip:x", "c", 1).is_none());
        assert!(answer_challenge(
            r#"Digest realm="r", nonce="n", algorithm=SHA-512"#,
            "u",
            "p",
            "INVITE",
            "sip:x",
            "c",
            1
        )
        .is_none());
    }

    /// RFC 7616 §3.9.1 example: the Authorization header value.
    fn rfc7616_example(alg: &str) -> String {
        format!(
            r#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm={alg}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, response="x", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
        )
    }

    #[test]
    fn rfc7616_md5_vector() {
        let header = rfc7616_example("MD5");
        let c = Credentials::parse(&header).unwrap();
        assert_eq!(
            c.expected_response("Circle of Life", "GET").unwrap(),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
        assert_eq!(
            c.opaque.as_deref(),
            Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
        );
    }

    #[test]
    fn rfc7616_sha256_vector() {
        let header = rfc7616_example("SHA-256");
        let c = Credentials::parse(&header).unwrap();
        assert_eq!(
            c.expected_response("Circle of Life", "GET").unwrap(),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn quoted_values_are_unescaped_and_borrowed_when_plain() {
        let c = Credentials::parse(r#"Digest username="a\"b\\c", realm="r, s", nonce=n, response="x""#).unwrap();
        assert_eq!(c.username, r#"a"b\c"#);
        assert!(matches!(c.username, Cow::Owned(_)));
        assert_eq!(c.realm, "r, s");
        assert!(matches!(c.realm, Cow::Borrowed(_)));
        assert_eq!(c.nonce, "n");
        assert_eq!(c.algorithm(), Some(Algorithm::Md5));
        assert_eq!(Algorithm::parse("sha-256-SESS"), Some(Algorithm::Sha256Sess));
        assert_eq!(Algorithm::parse("SHA-512"), None);
    }

    #[test]
    fn rfc2617_md5_without_qop() {
        // RFC 2069 form: response = MD5(HA1:nonce:HA2).
        let c = Credentials::parse(r#"Digest username="u", realm="r", nonce="n", uri="sip:r", response="x""#).unwrap();
        let ha1 = hex::encode(Md5::digest(b"u:r:p"));
        let ha2 = hex::encode(Md5::digest(b"REGISTER:sip:r"));
        let want = hex::encode(Md5::digest(format!("{ha1}:n:{ha2}").as_bytes()));
        assert_eq!(c.expected_response("p", "REGISTER").unwrap(), want);
    }

    #[test]
    fn parse_rejects_other_schemes_and_missing_fields() {
        assert!(Credentials::parse("Basic dXNlcg==").is_none());
        assert!(Credentials::parse(r#"Digest username="u""#).is_none());
        let c = Credentials::parse(r#"Digest username="a\"b", realm="r, x", nonce=n, response=r, algorithm=ROT13"#)
            .unwrap();
        assert_eq!(c.username, "a\"b");
        assert_eq!(c.realm, "r, x");
        assert_eq!(c.algorithm(), None);
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[test]
    fn nonce_lifecycle_and_replay() {
        let mut k = NonceKeeper::new(300);
        let n = k.issue(1000, 7, HOME);
        assert_eq!(k.check(&n, Some("00000001"), 1010, HOME), NonceStatus::Valid);
        assert_eq!(
            k.check(&n, Some("00000001"), 1011, HOME),
            NonceStatus::Invalid,
            "replayed nc"
        );
        assert_eq!(k.check(&n, Some("00000002"), 1012, HOME), NonceStatus::Valid);
        assert_eq!(k.check(&n, Some("00000003"), 1400, HOME), NonceStatus::Stale);
        let mut forged = n.clone();
        forged.replace_range(0..1, "f");
        assert_eq!(k.check(&forged, None, 1010, HOME), NonceStatus::Invalid);
        assert_eq!(k.check("short", None, 1010, HOME), NonceStatus::Invalid);
        let mut bad_tag = n.clone();
        let last = if n.ends_with('0') { "1" } else { "0" };
        bad_tag.replace_range(55..56, last);
        assert_eq!(k.check(&bad_tag, None, 1010, HOME), NonceStatus::Invalid);
        let other = NonceKeeper::new(300).issue(1000, 7, HOME);
        assert_eq!(n.len(), other.len());
        assert_eq!(
            k.check(&other, None, 1010, HOME),
            NonceStatus::Invalid,
            "another key's nonce"
        );
        let fresh = k.issue(1000, 8, HOME);
        let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(
            k.check(&fresh, None, 1010, elsewhere),
            NonceStatus::Invalid,
            "another client's nonce"
        );
        k.purge(2000);
        assert_eq!(k.tracked(), 0);
    }
}
