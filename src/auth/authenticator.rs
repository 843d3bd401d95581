//! Digest authentication of a request against an account's users
//! (RFC 3261 §22, RFC 7616, RFC 8760). Unknown users and wrong passwords
//! take the same path and get the same verdict, so responses never reveal
//! which extensions exist.

use super::failure_guard::{FailureGuard, GuardPolicy, GuardVerdict};
use crate::config::{Account, SecuritySettings, User};
use crate::sip::digest::{self, Algorithm, Credentials, NonceKeeper, NonceStatus};
use crate::sip::uri::SipUri;
use crate::sip::{HeaderName, SipMessage};
use std::net::IpAddr;
use std::time::Instant;

#[derive(Debug, PartialEq, Eq)]
pub enum AuthVerdict<'a> {
    Authenticated(&'a User),
    /// Send 401/407 with fresh challenges (`stale` per RFC 7616 §3.3).
    Challenge {
        stale: bool,
    },
    /// Wrong credentials (or unknown user): 403.
    Rejected,
    /// Too many recent failures: 503 with Retry-After.
    Throttled,
    /// Source is banned: drop without answering.
    Banned,
}

pub struct Authenticator {
    nonces: NonceKeeper,
    guard: FailureGuard,
    algorithms: Vec<Algorithm>,
    allow_legacy_digest: bool,
    /// Password used to hash for unknown users, so their attempts cost the
    /// same work as real ones.
    decoy_password: String,
}

impl Authenticator {
    pub fn new(settings: &SecuritySettings, policy: GuardPolicy) -> Authenticator {
        Authenticator {
            nonces: NonceKeeper::new(settings.nonce_lifetime_s),
            guard: FailureGuard::new(policy),
            algorithms: settings.digest_algorithms.clone(),
            allow_legacy_digest: settings.allow_legacy_digest,
            decoy_password: crate::sip::digest::hex_lower(&rand::random::<[u8; 16]>()),
        }
    }

    pub fn reconfigure(&mut self, settings: &SecuritySettings, policy: GuardPolicy) {
        self.nonces.set_lifetime(settings.nonce_lifetime_s);
        self.algorithms = settings.digest_algorithms.clone();
        self.allow_legacy_digest = settings.allow_legacy_digest;
        self.guard.set_policy(policy);
    }

    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.guard.is_banned(ip, now)
    }

    pub fn nonces_tracked(&self) -> usize {
        self.nonces.tracked()
    }

    pub fn guard(&self) -> &FailureGuard {
        &self.guard
    }

    /// Verifies the credentials in `header` (Authorization or
    /// Proxy-Authorization) for `account`'s realm.
    pub fn verify<'a>(
        &mut self,
        req: &SipMessage,
        header: &HeaderName,
        account: &'a Account,
        source: IpAddr,
        now: Instant,
        now_unix: u64,
    ) -> AuthVerdict<'a> {
        let creds = req
            .header_values(header)
            .filter_map(Credentials::parse)
            .find(|c| c.realm.eq_ignore_ascii_case(&account.domain));
        let Some(creds) = creds else {
            return AuthVerdict::Challenge { stale: false };
        };
        let uri_ok = uri_names_request(&creds.uri, req.request_uri().unwrap_or(""));
        let method = req.method().map(|m| m.as_str()).unwrap_or("");
        self.check(&creds, method, uri_ok, account, source, now, now_unix)
    }

    /// Verifies HTTP digest credentials (RFC 7616), the `Authorization`
    /// value of a request with `method` for `target` (its path and query,
    /// which the digest `uri` must repeat), against `account`'s users, with
    /// the same nonces, failure guard and bans as SIP.
    #[allow(clippy::too_many_arguments)]
    pub fn verify_http<'a>(
        &mut self,
        authorization: Option<&str>,
        method: &str,
        target: &str,
        account: &'a Account,
        source: IpAddr,
        now: Instant,
        now_unix: u64,
    ) -> AuthVerdict<'a> {
        let creds = authorization
            .and_then(Credentials::parse)
            .filter(|c| c.realm.eq_ignore_ascii_case(&account.domain));
        let Some(creds) = creds else {
            return AuthVerdict::Challenge { stale: false };
        };
        let uri_ok = creds.uri == target;
        self.check(&creds, method, uri_ok, account, source, now, now_unix)
    }

    /// The checks both protocols share, once the credentials are found.
    #[allow(clippy::too_many_arguments)]
    fn check<'a>(
        &mut self,
        creds: &Credentials<'_>,
        method: &str,
        uri_ok: bool,
        account: &'a Account,
        source: IpAddr,
        now: Instant,
        now_unix: u64,
    ) -> AuthVerdict<'a> {
        match self.guard.check(source, &creds.username, now) {
            GuardVerdict::Allow => {}
            GuardVerdict::Throttle => return AuthVerdict::Throttled,
            GuardVerdict::Banned => return AuthVerdict::Banned,
        }
        let Some(alg) = creds.algorithm().filter(|a| self.algorithms.contains(a)) else {
            return AuthVerdict::Challenge { stale: false };
        };
        if creds.qop.as_deref().is_some_and(|q| !q.eq_ignore_ascii_case("auth")) {
            return AuthVerdict::Challenge { stale: false };
        }
        // Without qop there is no nonce count: a captured answer could be
        // replayed for the nonce's lifetime (RFC 7616 §5.11).
        if creds.qop.is_none() && !self.allow_legacy_digest {
            return AuthVerdict::Rejected;
        }
        if !uri_ok {
            return AuthVerdict::Rejected;
        }
        match self.nonces.check(&creds.nonce, creds.nc.as_deref(), now_unix, source) {
            NonceStatus::Valid => {}
            NonceStatus::Stale => return AuthVerdict::Challenge { stale: true },
            // Forged nonce or replayed nonce-count: ask again (RFC 7616 §5.11).
            NonceStatus::Invalid => return AuthVerdict::Challenge { stale: false },
        }
        let user = account.user(&creds.username);
        let password = user.map_or(self.decoy_password.as_str(), |u| u.password.as_str());
        let expected = digest::compute_response(alg, &creds.username, &creds.realm, password, method, creds);
        match user {
            Some(u) if digest::constant_time_eq(&expected, &creds.response) => AuthVerdict::Authenticated(u),
            _ => {
                if self.guard.record_failure(source, &creds.username, now) {
                    AuthVerdict::Banned
                } else {
                    AuthVerdict::Rejected
                }
            }
        }
    }

    /// Challenge header values, one per offered algorithm, most preferred
    /// first. `salt` tells requests apart: a retransmitted request (same
    /// salt, same second) gets the same nonces, since challenges are sent
    /// statelessly (RFC 3261 §8.2.7).
    pub fn challenges(&self, realm: &str, stale: bool, now_unix: u64, salt: u64, client: IpAddr) -> Vec<String> {
        self.algorithms
            .iter()
            .zip(0u64..)
            .map(|(&alg, i)| {
                let nonce = self.nonces.issue(now_unix, salt.wrapping_add(i), client);
                digest::challenge(realm, &nonce, alg, stale)
            })
            .collect()
    }

    /// Lifts a ban (`ctl unban`); false if `ip` had none.
    pub fn unban(&mut self, ip: IpAddr) -> bool {
        self.guard.unban(ip)
    }

    pub fn purge(&mut self, now: Instant, now_unix: u64) {
        self.nonces.purge(now_unix);
        self.guard.purge(now);
    }
}

/// Whether the digest `uri` names the resource of the Request-URI (RFC
/// 7616 §3.4.6): same host and port, and the same user when it gives one.
/// (SIPp hashes `sip:host:port` without the user for every request.)
fn uri_names_request(digest_uri: &str, request_uri: &str) -> bool {
    let (Ok(d), Ok(r)) = (SipUri::parse(digest_uri), SipUri::parse(request_uri)) else {
        return digest_uri == request_uri;
    };
    d.host.eq_ignore_ascii_case(r.host)
        && d.port.unwrap_or(5060) == r.port.unwrap_or(5060)
        && d.user.is_none_or(|u| Some(u) == r.user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use bytes::Bytes;
    use std::path::Path;
    use std::time::Duration;

    fn account() -> Account {
        let cfg = Config::parse(
            Path::new("t"),
            "[[accounts]]\ndomain = \"pbx.test\"\n[[accounts.users]]\nextension = \"1001\"\npassword = \"secret\"\n",
        )
        .unwrap();
        cfg.accounts[0].clone()
    }

    fn policy() -> GuardPolicy {
        GuardPolicy {
            throttle_after: 3,
            throttle_interval: Duration::from_secs(1),
            max_failures: 5,
            ban_after_usernames: 5,
            ban_after_failures: 100,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(60),
            trusted: Vec::new(),
        }
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn settings(digest_algorithms: Vec<Algorithm>) -> SecuritySettings {
        SecuritySettings {
            nonce_lifetime_s: 300,
            max_auth_failures: 10,
            ban_after_usernames: 5,
            ban_after_failures: 100,
            trusted_networks: Vec::new(),
            failure_window: Duration::from_secs(60),
            ban: Duration::from_secs(600),
            digest_algorithms,
            allow_legacy_digest: false,
        }
    }

    fn register_with(user: &str, password: &str, nonce: &str, alg: Algorithm, nc: &str) -> SipMessage {
        answered(user, password, nonce, alg, Some(nc), "sip:pbx.test")
    }

    /// A REGISTER to sip:pbx.test answering `nonce`: with qop=auth and
    /// nonce count `nc`, or RFC 2069-style without qop; hashing `uri`.
    fn answered(user: &str, password: &str, nonce: &str, alg: Algorithm, nc: Option<&str>, uri: &str) -> SipMessage {
        let mut c = Credentials {
            username: user.into(),
            realm: "pbx.test".into(),
            nonce: nonce.into(),
            uri: uri.into(),
            algorithm: Some(alg.as_str().into()),
            cnonce: nc.map(|_| "abc".into()),
            qop: nc.map(|_| "auth".into()),
            nc: nc.map(Into::into),
            ..Default::default()
        };
        c.response = digest::compute_response(alg, user, "pbx.test", password, "REGISTER", &c).into();
        let qop = nc.map_or(String::new(), |nc| format!(r#", cnonce="abc", qop=auth, nc={nc}"#));
        let auth = format!(
            r#"Digest username="{}", realm="pbx.test", nonce="{}", uri="{uri}", response="{}", algorithm={}{qop}"#,
            user,
            nonce,
            c.response,
            alg.as_str(),
        );
        let raw = format!(
            "REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:{user}@pbx.test>;tag=1\r\nTo: <sip:{user}@pbx.test>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nAuthorization: {auth}\r\n\r\n"
        );
        SipMessage::parse_datagram(Bytes::from(raw)).unwrap()
    }

    fn nonce_of(challenge: &str) -> String {
        challenge
            .split("nonce=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    }

    #[test]
    fn md5_and_sha256_credentials_verify() {
        let acct = account();
        let mut a = Authenticator::new(&settings(vec![Algorithm::Sha256, Algorithm::Md5]), policy());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let now = Instant::now();
        let ch = a.challenges("pbx.test", false, 1000, 1, LOCAL);
        assert!(ch[0].contains("algorithm=SHA-256") && ch[1].contains("algorithm=MD5"));
        for (alg, c) in [(Algorithm::Sha256, &ch[0]), (Algorithm::Md5, &ch[1])] {
            let req = register_with("1001", "secret", &nonce_of(c), alg, "00000001");
            let v = a.verify(&req, &HeaderName::Authorization, &acct, ip, now, 1001);
            assert!(
                matches!(v, AuthVerdict::Authenticated(u) if u.extension == "1001"),
                "{alg:?}: {v:?}"
            );
            // The same nonce count again is a replay.
            let v = a.verify(&req, &HeaderName::Authorization, &acct, ip, now, 1001);
            assert_eq!(v, AuthVerdict::Challenge { stale: false });
        }
    }

    #[test]
    fn unknown_user_and_wrong_password_look_the_same() {
        let acct = account();
        let mut a = Authenticator::new(&settings(vec![Algorithm::Md5]), policy());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let now = Instant::now();
        let n1 = nonce_of(&a.challenges("pbx.test", false, 1000, 1, LOCAL)[0]);
        let n2 = nonce_of(&a.challenges("pbx.test", false, 1000, 2, LOCAL)[0]);
        let wrong = a.verify(
            &register_with("1001", "bad", &n1, Algorithm::Md5, "1"),
            &HeaderName::Authorization,
            &acct,
            ip,
            now,
            1000,
        );
        let unknown = a.verify(
            &register_with("9999", "x", &n2, Algorithm::Md5, "1"),
            &HeaderName::Authorization,
            &acct,
            ip,
            now,
            1000,
        );
        assert_eq!(wrong, AuthVerdict::Rejected);
        assert_eq!(unknown, AuthVerdict::Rejected);
    }

    #[test]
    fn expired_nonce_is_stale_and_missing_credentials_challenge() {
        let acct = account();
        let mut a = Authenticator::new(&settings(vec![Algorithm::Md5]), policy());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let n = nonce_of(&a.challenges("pbx.test", false, 1000, 1, LOCAL)[0]);
        let req = register_with("1001", "secret", &n, Algorithm::Md5, "1");
        assert_eq!(
            a.verify(&req, &HeaderName::Authorization, &acct, ip, Instant::now(), 1400),
            AuthVerdict::Challenge { stale: true }
        );
        let mut bare = req.clone();
        bare.remove_headers(&HeaderName::Authorization);
        assert_eq!(
            a.verify(&bare, &HeaderName::Authorization, &acct, ip, Instant::now(), 1000),
            AuthVerdict::Challenge { stale: false }
        );
    }

    #[test]
    fn answers_without_qop_are_refused_unless_legacy_digest_is_allowed() {
        let acct = account();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for allow in [false, true] {
            let mut s = settings(vec![Algorithm::Md5]);
            s.allow_legacy_digest = allow;
            let mut a = Authenticator::new(&s, policy());
            let n = nonce_of(&a.challenges("pbx.test", false, 1000, 1, LOCAL)[0]);
            let req = answered("1001", "secret", &n, Algorithm::Md5, None, "sip:pbx.test");
            let v = a.verify(&req, &HeaderName::Authorization, &acct, ip, Instant::now(), 1000);
            if allow {
                assert!(matches!(v, AuthVerdict::Authenticated(_)), "{v:?}");
            } else {
                assert_eq!(v, AuthVerdict::Rejected);
            }
        }
    }

    #[test]
    fn the_digest_uri_must_name_the_request_uri() {
        let acct = account();
        let mut a = Authenticator::new(&settings(vec![Algorithm::Md5]), policy());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for (uri, ok) in [
            ("sip:pbx.test", true),
            ("sip:pbx.test:5060", true),
            ("sip:other.test", false),
            ("sip:pbx.test:5070", false),
            ("sip:1002@pbx.test", false),
        ] {
            let n = nonce_of(&a.challenges("pbx.test", false, 1000, uri.len() as u64, LOCAL)[0]);
            let req = answered("1001", "secret", &n, Algorithm::Md5, Some("00000001"), uri);
            let v = a.verify(&req, &HeaderName::Authorization, &acct, ip, Instant::now(), 1000);
            assert_eq!(matches!(v, AuthVerdict::Authenticated(_)), ok, "{uri}: {v:?}");
        }
        assert!(
            uri_names_request("sip:127.0.0.1:5070", "sip:1002@127.0.0.1:5070"),
            "SIPp's form"
        );
        assert!(uri_names_request("sip:1002@127.0.0.1:5070", "sip:1002@127.0.0.1:5070"));
        assert!(!uri_names_request("sip:1003@127.0.0.1:5070", "sip:1002@127.0.0.1:5070"));
    }

    #[test]
    fn a_nonce_answered_from_another_address_is_challenged_again_and_counts_no_failure() {
        let acct = account();
        let mut a = Authenticator::new(&settings(vec![Algorithm::Md5]), policy());
        let spoofed: IpAddr = "192.0.2.50".parse().unwrap();
        let now = Instant::now();
        // Wrong passwords for many users, sent "from" spoofed with nonces
        // the attacker got at its own address: no failure is counted.
        for user in ["1001", "1002", "1003", "1004", "1005", "1006"] {
            let n = nonce_of(&a.challenges("pbx.test", false, 1000, user.len() as u64, LOCAL)[0]);
            let req = answered(user, "guess", &n, Algorithm::Md5, Some("00000001"), "sip:pbx.test");
            let v = a.verify(&req, &HeaderName::Authorization, &acct, spoofed, now, 1000);
            assert_eq!(v, AuthVerdict::Challenge { stale: false });
        }
        assert!(!a.is_banned(spoofed, now));
        assert!(a.guard().banned(now).is_empty());
    }
}
