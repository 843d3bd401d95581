//! Configuration: TOML (see `schema`) validated once into an immutable
//! [`Config`]; every error names file:line:col and the reason.

mod network;
mod numbers;
mod queues;
pub mod schema;
#[cfg(test)]
mod tests;
mod trunks;

use crate::sip::digest::Algorithm;
use crate::sip::transaction::TimerConfig;
pub use network::IpNetwork;
pub use numbers::NumberFormat;
pub use queues::{Destination, FeatureCodes, GroupRing, Queue, QueueMember, QueueStrategy, RingStrategy, DEFAULT_MOH};
pub use schema::Role;
use schema::{AccountSection, RawConfig};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use trunks::{CallerIdIn, Did, DidTarget, RemoteExtension, RemoteTarget, Trunk};

/// One configuration error at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// All errors found in one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub extension: String,
    pub display_name: String,
    pub password: String,
    pub role: Role,
    pub outbound: bool,
    pub caller_ids: Vec<String>,
    pub monitor_after_transfer: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub domain: String,
    pub dialplan: PathBuf,
    pub outbound_calls: bool,
    pub name: String,
    pub aliases: Vec<String>,
    pub is_default: bool,
    pub chat: bool,
    /// Its users' requests are accepted only over TLS.
    pub require_tls: bool,
    /// Trunk names for external calls, in the order they are tried.
    pub trunks: Vec<String>,
    pub dids: Vec<Did>,
    pub remote_extensions: Vec<RemoteExtension>,
    pub caller_ids: CallerIdSettings,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub queues: Vec<Queue>,
    pub feature_codes: FeatureCodes,
    by_extension: HashMap<String, usize>,
}

/// The account's caller-ID rules (the seed's general settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdSettings {
    /// Presented on external calls unless a group's or a chosen one applies.
    pub default: Option<String>,
    /// Users may choose one of their `caller_ids`.
    pub choice: bool,
    /// `*31<n><number>` picks the n-th caller ID.
    pub choice_prefix: String,
    /// `*67<number>` calls anonymously.
    pub anonymous_prefix: String,
}

/// A group of agents with the supervisors it reports to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub number: String,
    pub name: String,
    pub members: Vec<String>,
    pub supervisors: Vec<String>,
    /// Caller ID for external calls of its members.
    pub caller_id: Option<String>,
    /// How a call to the group rings.
    pub ring: GroupRing,
}

impl Account {
    pub fn user(&self, extension: &str) -> Option<&User> {
        self.by_extension.get(extension).map(|&i| &self.users[i])
    }

    pub fn group(&self, number: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.number == number)
    }

    pub fn queue(&self, number: &str) -> Option<&Queue> {
        self.queues.iter().find(|q| q.number == number)
    }

    pub fn remote_extension(&self, number: &str) -> Option<&RemoteExtension> {
        self.remote_extensions.iter().find(|r| r.number == number)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatSettings {
    pub max_message_bytes: usize,
    pub messages_per_minute: u32,
    pub max_waiting_per_user: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipSettings {
    pub timers: TimerConfig,
    pub max_message_size: usize,
    pub tcp_partial_timeout: Duration,
    pub tcp_idle_timeout: Duration,
    pub tcp_max_connections: usize,
    pub tcp_max_connections_per_ip: usize,
    pub user_agent: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarSettings {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecuritySettings {
    pub nonce_lifetime_s: u64,
    pub max_auth_failures: u32,
    pub ban_after_usernames: u32,
    pub ban_after_failures: u32,
    pub trusted_networks: Vec<IpNetwork>,
    pub failure_window: Duration,
    pub ban: Duration,
    pub digest_algorithms: Vec<Algorithm>,
    /// Accept RFC 2069 answers (no qop, so no nonce count: replayable).
    pub allow_legacy_digest: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSettings {
    pub ring_timeout: Duration,
    pub max_duration: Duration,
    pub media_timeout: Duration,
    /// Music a party put on hold hears.
    pub hold_music: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSettings {
    pub rtp_ip: std::net::IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    /// Latch only to RTP from the party's host (see README "Security").
    pub strict_source: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialplanLimits {
    pub instructions: u64,
    pub memory_bytes: usize,
    /// Threads of the dialplan runtime.
    pub threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated, immutable configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub source: PathBuf,
    pub listen: Vec<SocketAddr>,
    pub udp: bool,
    pub tcp: bool,
    pub data_dir: PathBuf,
    pub control_socket: PathBuf,
    pub store_cache_bytes: usize,
    pub sip: SipSettings,
    pub registrar: RegistrarSettings,
    pub security: SecuritySettings,
    pub log_level: String,
    pub log_format: LogFormat,
    pub calls: CallSettings,
    pub media: MediaSettings,
    pub dialplan_limits: DialplanLimits,
    pub chat: ChatSettings,
    pub tls: Option<TlsSettings>,
    /// Where the HTTP API listens, when switched on.
    pub api: Option<ApiSettings>,
    pub trunks: Vec<Trunk>,
    /// Name servers for trunk lookups (empty: the system's).
    pub dns_servers: Vec<SocketAddr>,
    pub accounts: Vec<Account>,
}

/// The HTTP API (`[api]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    /// HTTPS with this certificate and key (read at start).
    pub tls: Option<ApiTls>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTls {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// SIP over TLS: where and with which certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub port: u16,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

impl Config {
    /// Our addresses for Via and Contact: the listen addresses, and with
    /// TLS on, each listen IP at the TLS port.
    pub fn local_addrs(&self) -> crate::sip::dialog::LocalAddrs {
        crate::sip::dialog::LocalAddrs {
            plain: self.listen.clone(),
            tls: self.tls_listen(),
        }
    }

    /// Where TLS listens (nothing when it is off).
    pub fn tls_listen(&self) -> Vec<SocketAddr> {
        let Some(tls) = &self.tls else { return Vec::new() };
        let mut out: Vec<SocketAddr> = Vec::new();
        for a in &self.listen {
            let t = SocketAddr::new(a.ip(), tls.port);
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                col: 0,
                message: format!("cannot read: {e}"),
            }])
        })?;
        Config::parse(path, &text)
    }

    /// Validates config text; `path` is used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let mut v = Validator {
            file: path,
            text,
            errors: Vec::new(),
        };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                v.error(span, e.message().to_string());
                return Err(ConfigErrors(v.errors));
            }
        };
        let cfg = v.validate(raw);
        if v.errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(v.errors))
        }
    }

    /// The account whose domain is exactly `domain` (as engines record it).
    pub fn account(&self, domain: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.domain == domain)
    }

    /// The account a request host belongs to: by domain or alias, else
    /// the default account when the host is an IP address.
    pub fn account_for_host(&self, host: &str) -> Option<&Account> {
        let host = host.trim_matches(|c| c == '[' || c == ']');
        self.accounts
            .iter()
            .find(|a| a.domain.eq_ignore_ascii_case(host) || a.aliases.iter().any(|x| x.eq_ignore_ascii_case(host)))
            .or_else(|| {
                host.parse::<std::net::IpAddr>()
                    .ok()
                    .and_then(|_| self.accounts.iter().find(|a| a.is_default))
            })
    }

    pub fn with_overrides(mut self, listen: &[SocketAddr], data_dir: Option<&Path>) -> Config {
        if !listen.is_empty() {
            self.listen = listen.to_vec();
        }
        if let Some(d) = data_dir {
            if self.control_socket.starts_with(&self.data_dir) {
                self.control_socket = d.join("control.sock");
            }
            self.data_dir = d.to_path_buf();
        }
        self
    }
}

struct Validator<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            col,
            message: message.into(),
        });
    }

    fn validate(&mut self, raw: RawConfig) -> Config {
        let mut listen = Vec::new();
        for l in &raw.server.listen {
            match l.get_ref().parse::<SocketAddr>() {
                Ok(a) => listen.push(a),
                Err(_) => self.error(
                    l.span(),
                    format!(
                        "invalid listen address {:?}: expected IP:PORT, e.g. 127.0.0.1:5060 or [::1]:5060",
                        l.get_ref()
                    ),
                ),
            }
        }
        if raw.server.listen.is_empty() {
            self.error(0..0, "server.listen is empty: give at least one address");
        }
        let (mut udp, mut tcp) = (false, false);
        for t in &raw.server.transports {
            match t.get_ref().to_ascii_lowercase().as_str() {
                "udp" => udp = true,
                "tcp" => tcp = true,
                other => self.error(
                    t.span(),
                    format!("unknown transport {other:?}: expected \"udp\" or \"tcp\""),
                ),
            }
        }
        let sip = &raw.sip;
        if *sip.t1_ms.get_ref() == 0 {
            self.error(sip.t1_ms.span(), "t1_ms must be greater than 0");
        }
        if sip.t2_ms.get_ref() < sip.t1_ms.get_ref() {
            self.error(sip.t2_ms.span(), "t2_ms must be at least t1_ms");
        }
        if !(1024..=1 << 20).contains(sip.max_message_size.get_ref()) {
            self.error(
                sip.max_message_size.span(),
                "max_message_size must be between 1024 and 1048576",
            );
        }
        let reg = &raw.registrar;
        if reg.max_expires.get_ref() < reg.min_expires.get_ref() {
            self.error(reg.max_expires.span(), "max_expires must be at least min_expires");
        }
        let mut algorithms = Vec::new();
        for a in &raw.security.digest_algorithms {
            match Algorithm::parse(a.get_ref()) {
                Some(alg) => algorithms.push(alg),
                None => self.error(
                    a.span(),
                    format!(
                        "unknown digest algorithm {:?}: expected MD5, MD5-sess, SHA-256 or SHA-256-sess",
                        a.get_ref()
                    ),
                ),
            }
        }
        let mut trusted = Vec::new();
        for n in &raw.security.trusted_networks {
            match n.get_ref().parse::<IpNetwork>() {
                Ok(net) => trusted.push(net),
                Err(e) => self.error(n.span(), format!("trusted_networks: {e}")),
            }
        }
        if raw.security.digest_algorithms.is_empty() {
            self.error(0..0, "security.digest_algorithms is empty");
        }
        let log_format = match raw.log.format.get_ref().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                self.error(
                    raw.log.format.span(),
                    format!("unknown log format {other:?}: expected \"text\" or \"json\""),
                );
                LogFormat::Text
            }
        };
        let trunks = self.trunks(raw.trunks);
        let mut dns_servers = Vec::new();
        for d in &raw.dns.servers {
            match d.get_ref().parse::<SocketAddr>() {
                Ok(a) => dns_servers.push(a),
                Err(_) => self.error(d.span(), format!("dns server {:?}: expected IP:PORT", d.get_ref())),
            }
        }
        let accounts = self.accounts(raw.accounts, &trunks);
        let media = self.media(&raw.media, &listen);
        let tls = raw.tls.map(|t| self.tls(t));
        let data_dir = PathBuf::from(&raw.server.data_dir);
        let control_socket = raw
            .server
            .control_socket
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("control.sock"));
        Config {
            source: self.file.to_path_buf(),
            listen,
            udp,
            tcp,
            data_dir,
            control_socket,
            store_cache_bytes: raw.server.store_cache_kb.max(256) * 1024,
            sip: SipSettings {
                timers: TimerConfig {
                    t1: Duration::from_millis(*sip.t1_ms.get_ref()),
                    t2: Duration::from_millis(*sip.t2_ms.get_ref()),
                    t4: Duration::from_millis(sip.t4_ms),
                },
                max_message_size: *sip.max_message_size.get_ref(),
                tcp_partial_timeout: Duration::from_secs(sip.tcp_partial_timeout_s),
                tcp_idle_timeout: Duration::from_secs(sip.tcp_idle_timeout_s.max(1)),
                tcp_max_connections: sip.tcp_max_connections.max(1),
                tcp_max_connections_per_ip: sip.tcp_max_connections_per_ip.max(1),
                user_agent: sip.user_agent.clone(),
            },
            registrar: RegistrarSettings {
                min_expires: *reg.min_expires.get_ref(),
                max_expires: *reg.max_expires.get_ref(),
                default_expires: reg.default_expires,
                max_contacts: reg.max_contacts,
            },
            security: SecuritySettings {
                nonce_lifetime_s: raw.security.nonce_lifetime_s,
                max_auth_failures: raw.security.max_auth_failures,
                ban_after_usernames: raw.security.ban_after_usernames.max(1),
                ban_after_failures: raw.security.ban_after_failures.max(1),
                trusted_networks: trusted,
                failure_window: Duration::from_secs(raw.security.failure_window_s),
                ban: Duration::from_secs(raw.security.ban_s),
                digest_algorithms: algorithms,
                allow_legacy_digest: raw.security.allow_legacy_digest,
            },
            log_level: raw.log.level,
            log_format,
            calls: CallSettings {
                ring_timeout: Duration::from_secs(raw.calls.ring_timeout_s),
                max_duration: Duration::from_secs(raw.calls.max_duration_s),
                media_timeout: Duration::from_secs(raw.calls.media_timeout_s),
                hold_music: self.hold_music(raw.calls.hold_music.as_ref()),
            },
            media,
            tls,
            api: raw.api.as_ref().map(|a| self.api(a)),
            trunks,
            dns_servers,
            chat: ChatSettings {
                max_message_bytes: raw.chat.max_message_bytes,
                messages_per_minute: raw.chat.messages_per_minute,
                max_waiting_per_user: raw.chat.max_waiting_per_user.max(1),
            },
            dialplan_limits: DialplanLimits {
                instructions: raw.dialplan.instruction_limit,
                memory_bytes: raw.dialplan.memory_limit_kb * 1024,
                threads: raw.dialplan.threads.clamp(1, 64),
            },
            accounts,
        }
    }

    /// The API section; a certificate and key are read and checked now.
    fn api(&mut self, a: &schema::ApiSection) -> ApiSettings {
        let listen = match &a.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(l) => l.get_ref().parse().unwrap_or_else(|_| {
                self.error(
                    l.span(),
                    format!("invalid api.listen {:?}: expected IP:PORT", l.get_ref()),
                );
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }),
        };
        let tls = match (&a.certificate, &a.private_key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                let (certificate, private_key) = (PathBuf::from(c.get_ref()), PathBuf::from(k.get_ref()));
                if let Err(e) = crate::sip::tls::server_config(&certificate, &private_key) {
                    let span = match e.file {
                        crate::sip::tls::PemFile::Certificate => c.span(),
                        crate::sip::tls::PemFile::PrivateKey => k.span(),
                    };
                    self.error(span, e.to_string());
                }
                Some(ApiTls {
                    certificate,
                    private_key,
                })
            }
            (Some(one), None) | (None, Some(one)) => {
                self.error(
                    one.span(),
                    "api: certificate and private_key go together (HTTPS needs both)".to_string(),
                );
                None
            }
        };
        ApiSettings { listen, tls }
    }

    /// The TLS section, with its certificate and key read and checked now
    /// so that a bad file is reported at its line.
    fn tls(&mut self, raw: schema::TlsSection) -> TlsSettings {
        let settings = TlsSettings {
            port: raw.port,
            certificate: PathBuf::from(raw.certificate.get_ref()),
            private_key: PathBuf::from(raw.private_key.get_ref()),
        };
        if let Err(e) = crate::sip::tls::server_config(&settings.certificate, &settings.private_key) {
            let span = match e.file {
                crate::sip::tls::PemFile::Certificate => raw.certificate.span(),
                crate::sip::tls::PemFile::PrivateKey => raw.private_key.span(),
            };
            self.error(span, e.to_string());
        }
        settings
    }

    fn media(&mut self, raw: &schema::MediaSection, listen: &[SocketAddr]) -> MediaSettings {
        let default_ip = listen
            .first()
            .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |a| a.ip());
        let rtp_ip = match &raw.rtp_ip {
            Some(s) => match s.get_ref().parse::<std::net::IpAddr>() {
                Ok(ip) if !ip.is_unspecified() => ip,
                _ => {
                    self.error(
                        s.span(),
                        format!(
                            "invalid rtp_ip {:?}: give the IP address phones send media to",
                            s.get_ref()
                        ),
                    );
                    default_ip
                }
            },
            None => default_ip,
        };
        let port_min = raw.rtp_port_min.as_ref().map_or(20000, |p| *p.get_ref());
        let port_max = raw.rtp_port_max.unwrap_or(29999);
        if port_max < port_min.saturating_add(7) || port_min < 1024 {
            let span = raw.rtp_port_min.as_ref().map_or(0..0, |p| p.span());
            self.error(
                span,
                "the RTP port range needs rtp_port_min >= 1024 and at least 8 ports",
            );
        }
        MediaSettings {
            rtp_ip,
            port_min,
            port_max,
            strict_source: raw.strict_source.unwrap_or(true),
        }
    }

    fn accounts(&mut self, raw: Vec<AccountSection>, trunks: &[Trunk]) -> Vec<Account> {
        let mut out: Vec<Account> = Vec::new();
        let explicit_default = raw.iter().any(|a| a.default == Some(true));
        for (i, a) in raw.into_iter().enumerate() {
            let domain = a.domain.get_ref().trim().to_ascii_lowercase();
            if domain.is_empty() || domain.contains(|c: char| c.is_whitespace() || c == '@' || c == ':') {
                self.error(a.domain.span(), format!("invalid domain {:?}", a.domain.get_ref()));
            }
            if out.iter().any(|o| o.domain == domain) {
                self.error(a.domain.span(), format!("duplicate account domain {domain:?}"));
            }
            let mut users = Vec::new();
            let mut by_extension = HashMap::new();
            for u in a.users {
                let ext = u.extension.get_ref().trim().to_string();
                if ext.is_empty() || !ext.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+*#".contains(c)) {
                    self.error(
                        u.extension.span(),
                        format!("invalid extension {ext:?}: use digits, letters or - _ . + * #"),
                    );
                }
                if by_extension.contains_key(&ext) {
                    self.error(
                        u.extension.span(),
                        format!("duplicate extension {ext:?} in account {domain:?}"),
                    );
                    continue;
                }
                let password = match u.password {
                    Some(p) if !p.get_ref().is_empty() => p.into_inner(),
                    Some(p) => {
                        self.error(p.span(), format!("empty password for extension {ext:?}"));
                        String::new()
                    }
                    None => {
                        self.error(u.extension.span(), format!("missing password for extension {ext:?}"));
                        String::new()
                    }
                };
                by_extension.insert(ext.clone(), users.len());
                users.push(User {
                    display_name: if u.name.is_empty() { ext.clone() } else { u.name },
                    extension: ext,
                    password,
                    role: u.role,
                    outbound: u.outbound,
                    caller_ids: u.caller_ids,
                    monitor_after_transfer: u.monitor_after_transfer,
                });
            }
            let mut groups: Vec<Group> = Vec::new();
            let destinations = queues::destination_numbers(
                a.groups
                    .iter()
                    .filter_map(|g| g.no_answer.as_ref())
                    .chain(a.queues.iter().filter_map(|q| q.overflow.as_ref())),
            );
            for g in a.groups {
                let number = g.number.get_ref().trim().to_string();
                if by_extension.contains_key(&number) || groups.iter().any(|x| x.number == number) {
                    self.error(
                        g.number.span(),
                        format!("group number {number:?} is already used in account {domain:?}"),
                    );
                }
                for m in g.members.iter().chain(&g.supervisors) {
                    if !by_extension.contains_key(m.get_ref()) {
                        self.error(
                            m.span(),
                            format!("group {number:?} names unknown extension {:?}", m.get_ref()),
                        );
                    }
                }
                let ring = self.group_ring(&g);
                groups.push(Group {
                    ring,
                    name: if g.name.is_empty() { number.clone() } else { g.name },
                    number,
                    members: g.members.into_iter().map(|m| m.into_inner()).collect(),
                    supervisors: g.supervisors.into_iter().map(|m| m.into_inner()).collect(),
                    caller_id: g.caller_id,
                });
            }
            let mut account = Account {
                chat: a.chat,
                require_tls: a.require_tls,
                trunks: Vec::new(),
                dids: Vec::new(),
                remote_extensions: Vec::new(),
                caller_ids: CallerIdSettings {
                    default: a.caller_id,
                    choice: a.caller_id_choice,
                    choice_prefix: a.caller_id_prefix,
                    anonymous_prefix: a.anonymous_prefix,
                },
                groups,
                queues: Vec::new(),
                feature_codes: self.feature_codes(a.feature_codes),
                dialplan: PathBuf::from(&a.dialplan),
                outbound_calls: a.outbound_calls,
                name: a.name.unwrap_or_else(|| domain.clone()),
                is_default: a.default.unwrap_or(!explicit_default && i == 0),
                domain,
                aliases: a.aliases.into_iter().map(|x| x.to_ascii_lowercase()).collect(),
                users,
                by_extension,
            };
            account.queues = self.queues(a.queues, &account);
            (account.trunks, account.dids) = self.account_trunks(a.trunks, a.dids, trunks, &account);
            account.remote_extensions = self.remote_extensions(a.remote_extensions, &account);
            self.check_destinations(&account, &destinations);
            out.push(account);
        }
        out
    }
}

/// The account `domain` names, or the default account when none is named.
pub fn account_or_default<'a>(accounts: &'a [Account], domain: Option<&str>) -> Option<&'a Account> {
    match domain {
        Some(d) => accounts.iter().find(|a| a.domain == d),
        None => accounts.iter().find(|a| a.is_default),
    }
}

/// The user `who` names, as admins write it: `ext` (of the default
/// account) or `ext@domain`.
pub fn user_named<'a>(accounts: &'a [Account], who: &str) -> Result<(&'a Account, &'a User), String> {
    let (ext, domain) = match who.split_once('@') {
        Some((e, d)) => (e, Some(d)),
        None => (who, None),
    };
    let account = account_or_default(accounts, domain).ok_or("no such account")?;
    let user = account
        .user(ext)
        .ok_or_else(|| format!("no user {ext} in {}", account.domain))?;
    Ok((account, user))
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}
