//! The TOML file as written by an admin: serde structs with strict keys
//! (`deny_unknown_fields`) and a documented default for every key. Values
//! whose errors are found after parsing are `Spanned` so they can be
//! reported at file:line:col.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub sip: SipSection,
    #[serde(default)]
    pub registrar: RegistrarSection,
    #[serde(default)]
    pub security: SecuritySection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub calls: CallsSection,
    #[serde(default)]
    pub media: MediaSection,
    #[serde(default)]
    pub dialplan: DialplanSection,
    #[serde(default)]
    pub chat: ChatSection,
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// The HTTP API: on when this section is present.
    #[serde(default)]
    pub api: Option<ApiSection>,
    #[serde(default)]
    pub trunks: Vec<TrunkSection>,
    #[serde(default)]
    pub dns: DnsSection,
    #[serde(default)]
    pub accounts: Vec<AccountSection>,
}

/// Where trunk host names are looked up.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// Name servers, `IP:PORT`. Default: those of /etc/resolv.conf.
    #[serde(default)]
    pub servers: Vec<Spanned<String>>,
}

/// A SIP provider: where calls to external numbers go out and DIDs come in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkSection {
    /// Unique name, used by `accounts.trunks` and `dial(n, {trunk = …})`.
    pub name: Spanned<String>,
    /// The provider, `host[:port]`: an IP, or a name with a port (resolved
    /// with A/AAAA when the config is loaded), or a name alone (looked up
    /// with DNS SRV, then A/AAAA, by the running daemon and again as the
    /// records' TTL runs out).
    pub address: Spanned<String>,
    /// `udp`, `tcp` or `tls`. Default `udp`.
    #[serde(default = "default_trunk_transport")]
    pub transport: Spanned<String>,
    /// For `tls`: a PEM file of the CA certificates the provider's
    /// certificate is checked against. Default: the Mozilla roots.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
    /// Digest credentials the provider gave; empty for trunks by IP.
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// Digest user name when it differs from `username`.
    #[serde(default)]
    pub auth_username: Option<String>,
    /// Answer only challenges of this realm. Default: any.
    #[serde(default)]
    pub realm: Option<String>,
    /// Send every request through this proxy (`ip:port` or `host:port`),
    /// with a Route header naming it (RFC 3261 §8.1.2). Default none.
    #[serde(default)]
    pub outbound_proxy: Option<Spanned<String>>,
    /// Register with the provider. Default false.
    #[serde(default)]
    pub register: bool,
    /// Registration lifetime asked for, seconds. Default 600.
    #[serde(default = "default_trunk_expires")]
    pub expires_s: u32,
    /// While registered, an OPTIONS to the provider this often, seconds
    /// (0: never). Default 30.
    #[serde(default = "default_trunk_keepalive")]
    pub keepalive_s: u32,
    /// User part of From (and of the registration). Default `username`.
    #[serde(default)]
    pub from_user: Option<String>,
    /// Host part of From and To. Default the address's host.
    #[serde(default)]
    pub from_domain: Option<String>,
    /// Networks whose INVITEs are taken as this provider's, without digest
    /// (besides those from `address` itself, IP and port). Default none.
    #[serde(default)]
    pub inbound_ips: Vec<Spanned<String>>,
    /// Calls at once through the trunk (0: no limit). Default 0.
    #[serde(default)]
    pub max_channels: u32,
    /// How called numbers are written: "as_dialled", "e164" or "national".
    /// Default "as_dialled".
    #[serde(default)]
    pub number_format: Option<Spanned<String>>,
    /// Country code for "e164"/"national" (e.g. "34").
    #[serde(default)]
    pub country_code: Option<String>,
    /// National trunk prefix. Default "0".
    #[serde(default)]
    pub national_prefix: Option<String>,
    /// International call prefix. Default "00".
    #[serde(default)]
    pub international_prefix: Option<String>,
    /// Where the caller ID goes: "from", "pai" (P-Asserted-Identity, From
    /// keeps `from_user`) or "both". Default "from".
    #[serde(default = "default_caller_id_in")]
    pub caller_id_in: Spanned<String>,
}

fn default_caller_id_in() -> Spanned<String> {
    Spanned::new(0..0, "from".into())
}

fn default_trunk_transport() -> Spanned<String> {
    Spanned::new(0..0, "udp".into())
}
fn default_trunk_expires() -> u32 {
    600
}
fn default_trunk_keepalive() -> u32 {
    30
}

/// A remote extension (the seed's "extensión remota"): a number of the
/// account that rings a SIP URI, or an external number through a trunk.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteExtensionSection {
    pub number: Spanned<String>,
    #[serde(default)]
    pub name: String,
    /// `sip:user@host[:port]` (UDP), or an external number.
    pub target: Spanned<String>,
}

/// An inbound number of the account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DidSection {
    /// The called number as the provider sends it (Request-URI user).
    pub number: Spanned<String>,
    /// An extension of the account, or "dialplan" (the account's dialplan
    /// runs with the DID as the called number).
    pub to: Spanned<String>,
}

/// The HTTP API and event stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// `IP:PORT` to listen on. Default "127.0.0.1:8080".
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    /// PEM files: with both, the API is served over HTTPS only.
    #[serde(default)]
    pub certificate: Option<Spanned<String>>,
    #[serde(default)]
    pub private_key: Option<Spanned<String>>,
}

/// SIP over TLS (RFC 3261 §26.2): on when this section is present.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// TLS listens on this port of every `server.listen` IP. Default 5061.
    #[serde(default = "default_tls_port")]
    pub port: u16,
    /// PEM file: the server certificate, then its chain. Re-read on SIGHUP.
    pub certificate: Spanned<String>,
    /// PEM file: the certificate's private key (PKCS#8, PKCS#1 or SEC1). Re-read on SIGHUP.
    pub private_key: Spanned<String>,
}

fn default_tls_port() -> u16 {
    5061
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallsSection {
    /// Seconds a dial rings before giving up (no-answer, 480). Default 30.
    pub ring_timeout_s: u64,
    /// Longest call; both legs are hung up after it. Default 14400 (4 h).
    pub max_duration_s: u64,
    /// An answered call with no RTP from either side this long is hung up. Default 60.
    pub media_timeout_s: u64,
    /// What a party put on hold hears: 8 kHz mono 16-bit WAV, looped.
    /// Default "sounds/moh.wav".
    pub hold_music: Option<Spanned<String>>,
}

impl Default for CallsSection {
    fn default() -> Self {
        CallsSection {
            ring_timeout_s: 30,
            max_duration_s: 14400,
            media_timeout_s: 60,
            hold_music: None,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// Address the relay binds and announces in SDP. Default: the first listen address's IP.
    pub rtp_ip: Option<Spanned<String>>,
    /// First RTP port of the relay range. Default 20000.
    pub rtp_port_min: Option<Spanned<u16>>,
    /// Last port of the relay range. Default 29999.
    pub rtp_port_max: Option<u16>,
    /// Latch only to RTP from the party's signalling (or SDP) host. Default true.
    pub strict_source: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChatSection {
    /// Largest message body accepted, bytes (413 above). Default 4096.
    pub max_message_bytes: usize,
    /// Messages one user may send per minute (503 + Retry-After above). Default 60.
    pub messages_per_minute: u32,
    /// Messages that may wait for one user's devices; above it a private
    /// message gets 486 and a group message skips that user. Default 1000.
    pub max_waiting_per_user: usize,
}

impl Default for ChatSection {
    fn default() -> Self {
        ChatSection {
            max_message_bytes: 4096,
            messages_per_minute: 60,
            max_waiting_per_user: 1000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DialplanSection {
    /// Lua VM instructions one call's script may execute. Default 1000000.
    pub instruction_limit: u64,
    /// Memory one call's Lua state may use, KiB. Default 4096.
    pub memory_limit_kb: usize,
    /// Threads dialplans run on (never the signalling threads). Default 1.
    pub threads: usize,
}

impl Default for DialplanSection {
    fn default() -> Self {
        DialplanSection {
            instruction_limit: 1_000_000,
            memory_limit_kb: 4096,
            threads: 1,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Addresses to listen on, `IP:PORT` (`[v6]:PORT` for IPv6). Default `["127.0.0.1:5060"]`.
    #[serde(default = "default_listen")]
    pub listen: Vec<Spanned<String>>,
    /// Transports on every listen address: `udp`, `tcp`. Default both.
    #[serde(default = "default_transports")]
    pub transports: Vec<Spanned<String>>,
    /// Directory of the embedded store. Default `./data` (relative to the working directory).
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// Unix socket for `switchboard ctl`. Default `<data_dir>/control.sock`.
    #[serde(default)]
    pub control_socket: Option<String>,
    /// Page cache of the embedded store, KiB. Default 8192.
    #[serde(default = "default_store_cache_kb")]
    pub store_cache_kb: usize,
}

fn default_store_cache_kb() -> usize {
    8192
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            transports: default_transports(),
            data_dir: default_data_dir(),
            control_socket: None,
            store_cache_kb: default_store_cache_kb(),
        }
    }
}

fn default_listen() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "127.0.0.1:5060".to_string())]
}
fn default_transports() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "udp".into()), Spanned::new(0..0, "tcp".into())]
}
fn default_data_dir() -> String {
    "./data".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipSection {
    /// RFC 3261 T1 (RTT estimate), ms. Default 500.
    pub t1_ms: Spanned<u64>,
    /// RFC 3261 T2 (max retransmit interval), ms. Default 4000.
    pub t2_ms: Spanned<u64>,
    /// RFC 3261 T4 (max message lifetime), ms. Default 5000.
    pub t4_ms: u64,
    /// Largest accepted message, bytes. Default 65535.
    pub max_message_size: Spanned<usize>,
    /// Seconds a TCP connection may hold half a message (or, new, send
    /// nothing at all). Default 30.
    pub tcp_partial_timeout_s: u64,
    /// Seconds a TCP connection may stay silent between messages. Default 3900
    /// (longer than the longest registration, plus slack).
    pub tcp_idle_timeout_s: u64,
    /// Most TCP connections at once. Default 4096.
    pub tcp_max_connections: usize,
    /// Most TCP connections from one IP address. Default 1024 (a site of
    /// phones behind one NAT address).
    pub tcp_max_connections_per_ip: usize,
    /// Value of the Server/User-Agent header. Default "switchboard".
    pub user_agent: String,
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection {
            t1_ms: Spanned::new(0..0, 500),
            t2_ms: Spanned::new(0..0, 4000),
            t4_ms: 5000,
            max_message_size: Spanned::new(0..0, 65535),
            tcp_partial_timeout_s: 30,
            tcp_idle_timeout_s: 3900,
            tcp_max_connections: 4096,
            tcp_max_connections_per_ip: 1024,
            user_agent: "switchboard".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarSection {
    /// Shortest registration accepted; shorter gets 423. Default 60.
    pub min_expires: Spanned<u32>,
    /// Longest registration granted; longer is shortened. Default 3600.
    pub max_expires: Spanned<u32>,
    /// Used when the REGISTER names no expiry. Default 3600.
    pub default_expires: u32,
    /// Most contacts one user may register. Default 10.
    pub max_contacts: usize,
}

impl Default for RegistrarSection {
    fn default() -> Self {
        RegistrarSection {
            min_expires: Spanned::new(0..0, 60),
            max_expires: Spanned::new(0..0, 3600),
            default_expires: 3600,
            max_contacts: 10,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// Seconds a digest nonce stays valid before `stale=true`. Default 300.
    pub nonce_lifetime_s: u64,
    /// Failed authentications of one user from one IP within
    /// `failure_window_s` that lock that user out from that IP for `ban_s`
    /// (throttling starts at half). Default 10.
    pub max_auth_failures: u32,
    /// Distinct usernames failing from one IP within the window that ban
    /// the IP (a scanner guessing extensions). Default 5.
    pub ban_after_usernames: u32,
    /// Failures from one IP within the window, whatever the users, that ban it. Default 100.
    pub ban_after_failures: u32,
    /// Networks never throttled, locked out or banned (CIDR). Default none.
    pub trusted_networks: Vec<Spanned<String>>,
    /// Window for counting failures, seconds. Default 60.
    pub failure_window_s: u64,
    /// Ban length, seconds. Default 600.
    pub ban_s: u64,
    /// Digest algorithms offered, most preferred first (RFC 8760). Default ["MD5"]:
    /// baresip 1.0 and SIPp 3.6 fail outright when a SHA-256 challenge is present.
    pub digest_algorithms: Vec<Spanned<String>>,
    /// Accept digest answers without qop (RFC 2069: replayable). Default false.
    pub allow_legacy_digest: bool,
}

impl Default for SecuritySection {
    fn default() -> Self {
        SecuritySection {
            nonce_lifetime_s: 300,
            max_auth_failures: 10,
            ban_after_usernames: 5,
            ban_after_failures: 100,
            trusted_networks: Vec::new(),
            failure_window_s: 60,
            ban_s: 600,
            digest_algorithms: vec![Spanned::new(0..0, "MD5".into())],
            allow_legacy_digest: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// tracing filter, e.g. "info" or "switchboard=debug". `RUST_LOG` wins. Default "info".
    pub level: String,
    /// "text" or "json". Default "text".
    pub format: Spanned<String>,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".into(),
            format: Spanned::new(0..0, "text".into()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSection {
    /// SIP domain of the account; also the digest realm.
    pub domain: Spanned<String>,
    /// Human name. Default: the domain.
    #[serde(default)]
    pub name: Option<String>,
    /// Other host names that reach this account.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Requests to an IP address (not a domain) go to the default account.
    /// Default: true for the first account only.
    #[serde(default)]
    pub default: Option<bool>,
    /// Lua dialplan run for every call from this account. Default "dialplans/default.lua".
    #[serde(default = "default_dialplan")]
    pub dialplan: String,
    /// Account-level switch for calls to external numbers. Default true.
    #[serde(default = "default_true")]
    pub outbound_calls: bool,
    /// Internal chat (SIP MESSAGE) for this account. Default false ("on request").
    #[serde(default)]
    pub chat: bool,
    /// Its users' requests are accepted only over TLS (403 otherwise). Default false.
    #[serde(default)]
    pub require_tls: bool,
    /// Trunks (by name) external calls go out through, tried in order.
    #[serde(default)]
    pub trunks: Vec<Spanned<String>>,
    /// Inbound numbers from the trunks.
    #[serde(default)]
    pub dids: Vec<DidSection>,
    /// Numbers of the account that ring somewhere else.
    #[serde(default)]
    pub remote_extensions: Vec<RemoteExtensionSection>,
    /// The number external calls present. Default none (the trunk's user).
    #[serde(default)]
    pub caller_id: Option<String>,
    /// Users may pick one of their `caller_ids`. Default false.
    #[serde(default)]
    pub caller_id_choice: bool,
    /// Dial prefix that picks the n-th of the user's caller IDs (`*31<n><number>`). Default "*31".
    #[serde(default = "default_caller_id_prefix")]
    pub caller_id_prefix: String,
    /// Dial prefix for an anonymous call. Default "*67".
    #[serde(default = "default_anonymous_prefix")]
    pub anonymous_prefix: String,
    #[serde(default)]
    pub users: Vec<UserSection>,
    #[serde(default)]
    pub groups: Vec<GroupSection>,
    #[serde(default)]
    pub queues: Vec<QueueSection>,
    #[serde(default)]
    pub feature_codes: FeatureCodesSection,
}

/// Codes dialled from any phone to change the caller's agent state: the
/// phone hears a short confirmation and the call ends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureCodesSection {
    /// Default "*50".
    #[serde(default = "default_code_ready")]
    pub ready: String,
    /// Default "*51" (reason "break"; `*51<digits>` gives the digits as reason).
    #[serde(default = "default_code_not_ready")]
    pub not_ready: String,
    /// Ends after-call work. Default "*52".
    #[serde(default = "default_code_end_acw")]
    pub end_acw: String,
    /// `*81<ext>`: listen to an agent's call. Default "*81".
    #[serde(default = "default_code_listen")]
    pub listen: String,
    /// `*82<ext>`: speak to the agent only. Default "*82".
    #[serde(default = "default_code_whisper")]
    pub whisper: String,
    /// `*83<ext>`: join the call, heard by both. Default "*83".
    #[serde(default = "default_code_barge")]
    pub barge: String,
    /// Dialled during a call (RFC 4733 DTMF): `##<number>#` transfers the
    /// other party there, blind. Default "##"; "" switches it off.
    #[serde(default = "default_code_blind_transfer")]
    pub blind_transfer: String,
    /// Dialled during a call: `*2<number>#` consults `number` while the
    /// other party waits with music; `*2` again (or hanging up) completes
    /// the transfer, `*0` cancels it. Default "*2"; "" switches it off.
    #[serde(default = "default_code_attended_transfer")]
    pub attended_transfer: String,
}

impl Default for FeatureCodesSection {
    fn default() -> Self {
        FeatureCodesSection {
            ready: default_code_ready(),
            not_ready: default_code_not_ready(),
            end_acw: default_code_end_acw(),
            listen: default_code_listen(),
            whisper: default_code_whisper(),
            barge: default_code_barge(),
            blind_transfer: default_code_blind_transfer(),
            attended_transfer: default_code_attended_transfer(),
        }
    }
}

fn default_code_ready() -> String {
    "*50".into()
}
fn default_code_not_ready() -> String {
    "*51".into()
}
fn default_code_end_acw() -> String {
    "*52".into()
}
fn default_code_listen() -> String {
    "*81".into()
}
fn default_code_whisper() -> String {
    "*82".into()
}
fn default_code_barge() -> String {
    "*83".into()
}
fn default_code_blind_transfer() -> String {
    "##".into()
}
fn default_code_attended_transfer() -> String {
    "*2".into()
}

/// A call queue: callers wait hearing music and are offered to its
/// members, who must be ready agents.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    pub number: Spanned<String>,
    #[serde(default)]
    pub name: String,
    /// Extensions, each `"1004"` or `{ extension = "1004", tier = 2 }`
    /// (lower tiers are offered first; default tier 1).
    #[serde(default)]
    pub members: Vec<Spanned<MemberSection>>,
    /// ring_all | longest_idle | round_robin | fewest_calls |
    /// least_talk_time | random | linear. Default longest_idle.
    #[serde(default)]
    pub strategy: Option<Spanned<String>>,
    /// How long one offer rings. Default 15.
    #[serde(default = "default_agent_timeout")]
    pub agent_timeout_s: u64,
    /// Pause before the next offer to a caller. Default 2.
    #[serde(default = "default_retry")]
    pub retry_s: u64,
    /// Longest wait before the overflow (or the `timeout` result). Default none.
    #[serde(default)]
    pub max_wait_s: Option<u64>,
    /// Where a caller goes on max_wait, full queue or no agents: a number
    /// of the account (user, group, queue, remote extension) or a SIP
    /// status code (an integer) to hang up with.
    #[serde(default)]
    pub overflow: Option<Spanned<DestinationSection>>,
    /// Most callers waiting; more are refused (486) or overflow. Default none.
    #[serde(default)]
    pub max_callers: Option<usize>,
    /// "wait" (default) or "refuse" (480, or the overflow) when no member
    /// is logged in (registered and not not_ready).
    #[serde(default)]
    pub when_no_agents: Option<Spanned<String>>,
    /// Music on hold: 8 kHz mono 16-bit WAV. Default "sounds/moh.wav".
    #[serde(default)]
    pub moh: Option<Spanned<String>>,
    /// After a queue call the agent is in after-call work; with the limit
    /// on, the PBX makes them ready after `acw_limit_s`. Default off.
    #[serde(default)]
    pub acw_limit_enabled: bool,
    /// Default 30.
    #[serde(default = "default_acw_limit")]
    pub acw_limit_s: u64,
    /// Offers rung out in a row that make an agent not_ready ("no answer");
    /// 0 = never. Default 3.
    #[serde(default = "default_max_no_answer")]
    pub max_no_answer: u32,
    /// Service level: answered within this many seconds. Default 20.
    #[serde(default = "default_service_level")]
    pub service_level_s: u64,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MemberSection {
    Extension(String),
    Tiered(TieredMember),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TieredMember {
    pub extension: String,
    #[serde(default = "default_tier")]
    pub tier: u32,
}

/// A destination written as a number of the account or a status code.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum DestinationSection {
    Code(i64),
    Number(String),
}

fn default_tier() -> u32 {
    1
}
fn default_agent_timeout() -> u64 {
    15
}
fn default_retry() -> u64 {
    2
}
fn default_acw_limit() -> u64 {
    30
}
fn default_max_no_answer() -> u32 {
    3
}
fn default_service_level() -> u64 {
    20
}
fn default_member_timeout() -> u64 {
    15
}
fn default_group_ring_timeout() -> u64 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSection {
    /// Group number: its chat address is sip:<number>@<domain>.
    pub number: Spanned<String>,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Extensions of the agents in the group.
    #[serde(default)]
    pub members: Vec<Spanned<String>>,
    /// Extensions of the supervisors the group reports to.
    #[serde(default)]
    pub supervisors: Vec<Spanned<String>>,
    /// The number external calls of its members present (over the account's).
    #[serde(default)]
    pub caller_id: Option<String>,
    /// How a call to the group rings its ready members: "simultaneous"
    /// (default), "sequential" (member order) or "random" (one at a time,
    /// in random order).
    #[serde(default)]
    pub strategy: Option<Spanned<String>>,
    /// Sequential and random: how long each member rings. Default 15.
    #[serde(default = "default_member_timeout")]
    pub member_timeout_s: u64,
    /// How long the group rings in all. Default 60.
    #[serde(default = "default_group_ring_timeout")]
    pub ring_timeout_s: u64,
    /// Where the call goes when nobody answers: a number of the account or
    /// a status code. Default: the caller hears the failure.
    #[serde(default)]
    pub no_answer: Option<Spanned<DestinationSection>>,
}

fn default_caller_id_prefix() -> String {
    "*31".into()
}
fn default_anonymous_prefix() -> String {
    "*67".into()
}

fn default_dialplan() -> String {
    "dialplans/default.lua".into()
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSection {
    /// Extension number, also the SIP user name.
    pub extension: Spanned<String>,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// SIP digest password (required).
    #[serde(default)]
    pub password: Option<Spanned<String>>,
    /// owner | admin | supervisor | agent. Default agent.
    #[serde(default)]
    pub role: Role,
    /// May call external numbers. Default false.
    #[serde(default)]
    pub outbound: bool,
    /// Caller IDs this user may choose from (where the account allows it).
    #[serde(default)]
    pub caller_ids: Vec<String>,
    /// After transferring a call blind, stay on it as a listener (hearing
    /// the transferee and whoever takes it) until hanging up. Default false.
    #[serde(default)]
    pub monitor_after_transfer: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Supervisor,
    #[default]
    Agent,
}
