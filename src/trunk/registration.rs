//! Registering with providers (RFC 3261 §10.2 as a client), sans-IO: a
//! REGISTER per trunk, answered challenges (401/407, once per attempt),
//! refreshed before the granted expiry, retried with backoff on failure
//! (the provider's Retry-After, else doubling from 30 s to 30 min). A
//! registered trunk is pinged with OPTIONS every `keepalive_s`: no answer
//! marks it failing, and the first answer after that registers again at
//! once (the provider restarted, or the path to it came back).

use crate::config::Trunk;
use crate::sip::addr::NameAddr;
use crate::sip::dialog::{host_port, new_branch};
use crate::sip::digest::{ClientCredentials, Unanswered};
use crate::sip::message::{Header, StartLine};
use crate::sip::response::random_token;
use crate::sip::transaction::{Peer, TransportKind};
use crate::sip::{HeaderName, Method, SipMessage};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const LAST_BACKOFF: Duration = Duration::from_secs(1800);

/// Where a trunk's registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegStatus {
    /// `register = false`.
    Disabled,
    /// A REGISTER is on its way (first one, or after a failure).
    Registering,
    Registered {
        expires_s: u32,
    },
    /// The last attempt failed with `code`; the next is scheduled.
    Failing {
        code: u16,
        reason: String,
    },
}

impl RegStatus {
    pub fn name(&self) -> &'static str {
        match self {
            RegStatus::Disabled => "disabled",
            RegStatus::Registering => "registering",
            RegStatus::Registered { .. } => "registered",
            RegStatus::Failing { .. } => "failing",
        }
    }
}

/// A request to a provider (REGISTER or OPTIONS), to send as a client
/// transaction.
#[derive(Debug)]
pub struct Outgoing {
    pub trunk: String,
    pub req: SipMessage,
    pub to: Peer,
}

/// A trunk's status changed (for logs and the event stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub trunk: String,
    pub status: RegStatus,
}

/// What the registrations ask of their driver.
#[derive(Debug)]
pub enum TrunkOutput {
    /// Send this REGISTER as a client transaction.
    Register(Outgoing),
    /// Send this OPTIONS (a keep-alive) and report whether it was answered
    /// with [`Registrations::on_ping_result`].
    Ping(Outgoing),
    /// A trunk's status changed.
    Status(StatusChange),
}

struct Registration {
    trunk: Trunk,
    status: RegStatus,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// Digest nonce count of the current challenge.
    nc: u32,
    /// This attempt already answered a challenge: another one means the
    /// credentials are wrong.
    answered: bool,
    /// When to send the next REGISTER; None while one is on its way.
    next_at: Option<Instant>,
    /// When to send the next OPTIONS; None while one is on its way or
    /// while not registered.
    ping_at: Option<Instant>,
    /// The last OPTIONS got no answer.
    unreachable: bool,
    /// Our address as the provider saw it (Via received and rport of its
    /// last answer): a change means our NAT mapping moved.
    seen_as: Option<String>,
    failures: u32,
    /// Contact we register (our address toward the provider).
    contact: String,
    via_addr: SocketAddr,
}

impl Registration {
    fn keepalive(&self) -> Option<Duration> {
        (self.trunk.keepalive_s > 0).then(|| Duration::from_secs(self.trunk.keepalive_s.into()))
    }
}

/// Every trunk's registration.
pub struct Registrations {
    regs: Vec<Registration>,
    out: VecDeque<TrunkOutput>,
    user_agent: String,
}

impl Registrations {
    /// Registrations for `trunks`; those with `register` go out at once.
    /// `local` is our address for each trunk (Via and Contact).
    pub fn new(trunks: &[Trunk], local: impl Fn(Peer) -> SocketAddr, user_agent: &str, now: Instant) -> Self {
        let regs = trunks
            .iter()
            .map(|t| {
                let via_addr = local(peer_of(t));
                Registration {
                    contact: format!(
                        "<sip:{}@{}{}>;+sip.instance=\"<urn:uuid:{}>\"",
                        t.from_user,
                        host_port(via_addr),
                        match t.transport {
                            TransportKind::Udp => "",
                            TransportKind::Tcp => ";transport=tcp",
                            TransportKind::Tls => ";transport=tls",
                        },
                        instance_of(t)
                    ),
                    trunk: t.clone(),
                    status: if t.register {
                        RegStatus::Registering
                    } else {
                        RegStatus::Disabled
                    },
                    // Stable per trunk and run: one registration, refreshed.
                    call_id: format!("{}@switchboard", random_token()),
                    from_tag: random_token(),
                    cseq: 0,
                    nc: 0,
                    answered: false,
                    // A provider still being looked up (DNS SRV) waits for its address.
                    next_at: (t.register && !t.address.ip().is_unspecified()).then_some(now),
                    ping_at: None,
                    unreachable: false,
                    seen_as: None,
                    failures: 0,
                    via_addr,
                }
            })
            .collect();
        Registrations {
            regs,
            out: VecDeque::new(),
            user_agent: user_agent.to_string(),
        }
    }

    pub fn poll_output(&mut self) -> Option<TrunkOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.regs.iter().flat_map(|r| [r.next_at, r.ping_at]).flatten().min()
    }

    /// Sends the REGISTERs and keep-alives that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.regs.len() {
            if self.regs[i].next_at.is_some_and(|at| at <= now) {
                self.regs[i].next_at = None;
                self.send(i, None);
            }
            if self.regs[i].ping_at.is_some_and(|at| at <= now) {
                self.regs[i].ping_at = None;
                self.ping(i);
            }
        }
    }

    /// Name, status and the number of failures in a row, per trunk.
    pub fn statuses(&self) -> Vec<(String, RegStatus, u32)> {
        self.regs
            .iter()
            .map(|r| (r.trunk.name.clone(), r.status.clone(), r.failures))
            .collect()
    }

    /// The provider answered trunk `name`'s REGISTER.
    pub fn on_response(&mut self, name: &str, resp: &SipMessage, now: Instant) {
        let Some(i) = self.regs.iter().position(|r| r.trunk.name == name) else {
            return;
        };
        let status = resp.status().unwrap_or(500);
        let r = &mut self.regs[i];
        match status {
            100..=199 => {}
            200..=299 => {
                let granted = granted_expiry(resp, &r.contact).unwrap_or(r.trunk.expires_s).max(1);
                r.failures = 0;
                r.answered = false;
                // Refresh before it lapses: at 80 % of what was granted.
                r.next_at = Some(now + Duration::from_millis(u64::from(granted) * 800));
                r.unreachable = false;
                r.ping_at = r.keepalive().map(|k| now + k);
                r.seen_as = seen_as(resp);
                self.set_status(i, RegStatus::Registered { expires_s: granted });
            }
            401 | 407 if !r.answered => {
                r.nc += 1;
                let uri = format!("sip:{}", r.trunk.host);
                match credentials_of(&r.trunk).answer(resp, "REGISTER", &uri, r.nc) {
                    Ok(header) => {
                        r.answered = true;
                        self.send(i, Some(header));
                    }
                    Err(Unanswered::OtherRealm) => {
                        self.fail(i, status, "challenge for another realm".into(), None, now)
                    }
                    Err(Unanswered::Unusable) => self.fail(i, status, "challenge we cannot answer".into(), None, now),
                }
            }
            423 => {
                // Interval Too Brief (§10.3 step 7): ask again with its minimum.
                let min = resp
                    .header(&HeaderName::MinExpires)
                    .and_then(|v| v.trim().parse::<u32>().ok());
                match min {
                    Some(m) if m > r.trunk.expires_s => {
                        r.trunk.expires_s = m;
                        r.answered = false;
                        self.send(i, None);
                    }
                    _ => self.fail(i, 423, "Interval Too Brief".into(), None, now),
                }
            }
            _ => {
                let retry_after = resp
                    .header(&HeaderName::Other("Retry-After".into()))
                    .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let reason = resp.reason().to_string();
                self.fail(i, status, reason, retry_after, now);
            }
        }
    }

    /// Trunk `name`'s provider was found at `address` (a new DNS answer):
    /// requests go there from now on, and a registering trunk registers
    /// there at once.
    pub fn set_address(&mut self, name: &str, address: SocketAddr, now: Instant) {
        let Some(r) = self.regs.iter_mut().find(|r| r.trunk.name == name) else {
            return;
        };
        if r.trunk.address == address {
            return;
        }
        r.trunk.address = address;
        if r.trunk.register {
            r.ping_at = None;
            r.unreachable = false;
            r.next_at = Some(now);
        }
    }

    /// Trunk `name`'s OPTIONS was answered with `answer` (any response: the
    /// provider is there) or not (None). An answer that sees us at another
    /// address than the last one (our NAT mapping changed) registers again
    /// at once, so calls to us reach the new address.
    pub fn on_ping_result(&mut self, name: &str, answer: Option<&SipMessage>, now: Instant) {
        let answered = answer.is_some();
        let Some(i) = self.regs.iter().position(|r| r.trunk.name == name) else {
            return;
        };
        let r = &mut self.regs[i];
        let Some(keepalive) = r.keepalive() else { return };
        let seen = answer.and_then(seen_as);
        if let (Some(new), Some(old)) = (&seen, &r.seen_as) {
            if new != old && !r.unreachable {
                tracing::warn!(trunk = %r.trunk.name, was = %old, now = %new, "the provider sees us at another address; registering");
                r.seen_as = seen;
                r.ping_at = None;
                if r.next_at.is_some() {
                    r.next_at = Some(now);
                }
                return;
            }
        }
        if answered && r.unreachable {
            // Back: its registration may be gone (a restart), so renew it now.
            tracing::info!(trunk = %r.trunk.name, "provider answers again; registering");
            r.unreachable = false;
            r.ping_at = None;
            if r.next_at.is_some() {
                r.next_at = Some(now);
            }
            return;
        }
        r.ping_at = Some(now + keepalive);
        if !answered && !r.unreachable {
            r.unreachable = true;
            tracing::warn!(trunk = %r.trunk.name, "provider does not answer OPTIONS");
            self.set_status(
                i,
                RegStatus::Failing {
                    code: 408,
                    reason: "No answer to OPTIONS".into(),
                },
            );
        }
    }

    /// Trunk `name`'s REGISTER got no answer (or could not be sent).
    pub fn on_timeout(&mut self, name: &str, now: Instant) {
        if let Some(i) = self.regs.iter().position(|r| r.trunk.name == name) {
            self.fail(i, 408, "No answer from the provider".into(), None, now);
        }
    }

    fn fail(&mut self, i: usize, code: u16, reason: String, retry_after: Option<Duration>, now: Instant) {
        let r = &mut self.regs[i];
        r.failures += 1;
        r.answered = false;
        let doubling = FIRST_BACKOFF.saturating_mul(1 << (r.failures - 1).min(10));
        let wait = retry_after.unwrap_or(doubling).min(LAST_BACKOFF);
        r.next_at = Some(now + wait);
        tracing::warn!(trunk = %r.trunk.name, code, reason = %reason, retry_in_s = wait.as_secs(), "trunk registration failed");
        self.set_status(i, RegStatus::Failing { code, reason });
    }

    fn set_status(&mut self, i: usize, status: RegStatus) {
        let r = &mut self.regs[i];
        if r.status != status {
            if let RegStatus::Registered { expires_s } = status {
                tracing::info!(trunk = %r.trunk.name, expires_s, "trunk registered");
            }
            r.status = status.clone();
            self.out.push_back(TrunkOutput::Status(StatusChange {
                trunk: r.trunk.name.clone(),
                status,
            }));
        }
    }

    /// Queues an OPTIONS to trunk `i`'s provider (out of dialog, §11).
    fn ping(&mut self, i: usize) {
        let r = &self.regs[i];
        let t = &r.trunk;
        let headers = vec![
            header(
                HeaderName::Via,
                crate::sip::dialog::via(peer_of(t), r.via_addr, &new_branch()),
            ),
            header(HeaderName::MaxForwards, "70".into()),
            header(
                HeaderName::From,
                format!("<sip:{}@{}>;tag={}", t.from_user, t.from_domain, random_token()),
            ),
            header(HeaderName::To, format!("<sip:{}>", t.host)),
            header(HeaderName::CallId, format!("{}@switchboard", random_token())),
            header(HeaderName::CSeq, "1 OPTIONS".into()),
            header(HeaderName::UserAgent, self.user_agent.clone()),
            header(HeaderName::ContentLength, "0".into()),
        ];
        let req = SipMessage {
            start: StartLine::Request {
                method: Method::Options,
                uri: format!("sip:{}", t.host).into(),
            },
            headers,
            body: bytes::Bytes::new(),
        };
        self.out.push_back(TrunkOutput::Ping(Outgoing {
            trunk: t.name.clone(),
            req,
            to: peer_of(t),
        }));
    }

    /// Builds and queues trunk `i`'s REGISTER, with `credentials` when
    /// answering a challenge.
    fn send(&mut self, i: usize, credentials: Option<(HeaderName, String)>) {
        let r = &mut self.regs[i];
        r.cseq += 1;
        let t = &r.trunk;
        let aor = format!("<sip:{}@{}>", t.from_user, t.from_domain);
        let mut headers = vec![
            header(
                HeaderName::Via,
                crate::sip::dialog::via(peer_of(t), r.via_addr, &new_branch()),
            ),
            header(HeaderName::MaxForwards, "70".into()),
            header(HeaderName::From, format!("{aor};tag={}", r.from_tag)),
            header(HeaderName::To, aor),
            header(HeaderName::CallId, r.call_id.clone()),
            header(HeaderName::CSeq, format!("{} REGISTER", r.cseq)),
            header(HeaderName::Contact, r.contact.clone()),
            header(HeaderName::Expires, t.expires_s.to_string()),
            header(HeaderName::UserAgent, self.user_agent.clone()),
        ];
        if let Some((name, value)) = credentials {
            headers.push(header(name, value));
        }
        headers.extend(t.proxy_route().map(|r| header(HeaderName::Route, r)));
        headers.push(header(HeaderName::ContentLength, "0".into()));
        let req = SipMessage {
            start: StartLine::Request {
                method: Method::Register,
                uri: format!("sip:{}", t.host).into(),
            },
            headers,
            body: bytes::Bytes::new(),
        };
        self.out.push_back(TrunkOutput::Register(Outgoing {
            trunk: t.name.clone(),
            req,
            to: peer_of(t),
        }));
    }
}

/// A UUID-shaped instance id (RFC 5626 §4.1) that stays the same across
/// restarts: derived from the trunk's name, user and provider.
fn instance_of(t: &Trunk) -> String {
    use std::hash::Hash;
    let mut h = siphasher::sip128::SipHasher::new();
    (&t.name, &t.from_user, &t.host).hash(&mut h);
    let x = siphasher::sip128::Hasher128::finish128(&h).as_u128();
    let s = format!("{x:032x}");
    format!("{}-{}-{}-{}-{}", &s[..8], &s[8..12], &s[12..16], &s[16..20], &s[20..])
}

/// Where a trunk's requests go.
pub fn peer_of(t: &Trunk) -> Peer {
    Peer {
        transport: t.transport,
        addr: t.address,
    }
}

fn header(name: HeaderName, value: String) -> Header {
    Header {
        name,
        value: value.into(),
    }
}

/// The credentials a trunk answers its provider's challenges with.
pub fn credentials_of(t: &Trunk) -> ClientCredentials<'_> {
    ClientCredentials {
        username: &t.auth_username,
        password: &t.password,
        realm: t.realm.as_deref(),
    }
}

/// Our address as the far end saw it: the top Via's `received` and
/// `rport` (RFC 3581) of its response.
fn seen_as(resp: &SipMessage) -> Option<String> {
    let via = crate::sip::addr::Via::parse(resp.header(&HeaderName::Via)?).ok()?;
    let received = via.param("received")?;
    Some(format!("{received}:{}", via.param("rport").unwrap_or("")))
}

/// The expiry the registrar granted our contact (its `expires` parameter
/// in the 2xx, else the Expires header; §10.2.4).
fn granted_expiry(resp: &SipMessage, ours: &str) -> Option<u32> {
    let ours = NameAddr::parse(ours).ok()?.uri_text;
    let from_contact = resp.header_values(&HeaderName::Contact).find_map(|c| {
        let a = NameAddr::parse(c).ok()?;
        (a.uri_text == ours).then(|| a.param("expires")?.parse().ok())?
    });
    from_contact.or_else(|| resp.header(&HeaderName::Expires)?.trim().parse().ok())
}
