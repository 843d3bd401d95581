//! The control protocol's types: the commands other tasks (the control
//! socket, dialplan workers, the reload and watchdog tasks) send to the
//! core, and the views they get back. Below both `server`, which answers
//! them, and `ctl`, which carries them.

use crate::call::{CallRef, CallView};
use crate::cdr::CallRecord;
use crate::config::Config;
use crate::dialplan::{Action, DialplanError, Reply};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::oneshot;

/// One registration as shown to admins (`ctl registrations`, API).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RegistrationView {
    pub aor: String,
    pub contact: String,
    pub expires_in: u64,
    pub source: String,
    pub transport: String,
    pub user_agent: Option<String>,
}

/// One trunk as shown to admins (`ctl trunks`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TrunkView {
    pub name: String,
    pub address: String,
    /// "disabled", "registering", "registered" or "failing".
    pub status: String,
    /// The last failure's status code and reason, while failing.
    pub last_code: Option<u16>,
    pub last_reason: Option<String>,
    /// Expiry the provider granted, while registered.
    pub expires_s: Option<u32>,
    /// Failed attempts in a row.
    pub failures: u32,
}

/// One entry of an account's directory (the seed's contact list): a user,
/// a group or a remote extension.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct DirectoryEntry {
    pub number: String,
    pub name: String,
    /// "user", "group" or "remote".
    pub kind: String,
    /// A user's role, a group's members, a remote extension's target.
    pub detail: String,
    /// Users: a device is registered.
    pub registered: Option<bool>,
}

/// An agent and its state (`ctl agents`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AgentView {
    pub aor: String,
    pub state: String,
    /// The reason given with not_ready.
    pub reason: Option<String>,
}

/// Counters for `ctl status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct StatusView {
    pub bindings: usize,
    pub transactions: usize,
    pub calls: usize,
    pub relay_ports_in_use: usize,
    /// Resident memory of the daemon, KiB (from /proc/self/statm).
    pub rss_kib: u64,
    /// Heap bytes in live allocations (glibc `mallinfo2`), KiB: unlike
    /// RSS, not inflated by memory the allocator keeps after a burst.
    pub heap_in_use_kib: u64,
    /// Dialplan scripts still running.
    pub dialplans_running: usize,
    /// Internal table sizes: call legs, the call engine's client
    /// transactions, its timers, bridges, and digest nonces tracked.
    pub tables: Vec<usize>,
    pub banned: Vec<String>,
    /// Counters since the start: RTP packets received by the relay and
    /// their sequence gaps, failed authentications, store commits and
    /// the nanoseconds they took, dialplan runs that failed.
    #[serde(default)]
    pub relay_packets: u64,
    #[serde(default)]
    pub relay_seq_gaps: u64,
    #[serde(default)]
    pub auth_failures: u64,
    #[serde(default)]
    pub store_commits: u64,
    #[serde(default)]
    pub store_commit_nanos: u64,
    #[serde(default)]
    pub dialplan_errors: u64,
}

/// What an agent (or `ctl agent`) may choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentChoice {
    Ready,
    NotReady(String),
    EndAcw,
}

/// A request about contact cards (the API's `/contacts`), each within one
/// account.
#[derive(Debug, Clone)]
pub enum ContactRequest {
    Search {
        text: String,
        tag: Option<String>,
        after: u64,
        limit: usize,
    },
    Get(u64),
    Lookup(String),
    Create {
        by: String,
        fields: crate::contacts::ContactFields,
    },
    Update {
        id: u64,
        fields: crate::contacts::ContactFields,
    },
    Delete {
        id: u64,
        by: String,
        admin: bool,
    },
}

/// The cards a [`ContactRequest`] found or changed (none for a delete or a
/// lookup that found nothing).
pub type ContactReply = Result<Vec<Arc<crate::contacts::Contact>>, crate::contacts::ContactError>;

/// A page of history and the cursor of the next.
pub type HistoryPage = (Vec<crate::cdr::history::Entry>, Option<String>);

/// What a desk phone asking for the phonebook gets.
#[derive(Debug)]
pub enum PhonebookReply {
    Entries(Vec<DirectoryEntry>),
    /// `WWW-Authenticate` values to answer 401 with.
    Challenge(Vec<String>),
    Rejected,
    /// Too many failures from its address (or it is banned).
    Throttled,
    NoAccount,
}

/// Whether the asking user may see a call record.
pub type RecordCheck = Box<dyn Fn(&CallRecord) -> bool + Send + Sync>;

/// Requests to the core from other tasks.
pub enum Command {
    Registrations(oneshot::Sender<Vec<RegistrationView>>),
    Status(oneshot::Sender<StatusView>),
    Reload(Arc<Config>),
    /// Liveness probe for the systemd watchdog.
    Ping(oneshot::Sender<()>),
    /// A dialplan asks something of its call.
    Dialplan {
        call: CallRef,
        action: Action,
        reply: oneshot::Sender<Reply>,
    },
    /// Banned sources with the seconds left (`ctl bans`).
    Bans(oneshot::Sender<Vec<String>>),
    Trunks(oneshot::Sender<Vec<TrunkView>>),
    Agents(oneshot::Sender<Vec<AgentView>>),
    /// Queues and their figures (`ctl queues`).
    Queues(oneshot::Sender<Vec<crate::acd::QueueView>>),
    /// An agent's own choice: ready, not ready with a reason, or the end
    /// of after-call work.
    SetAgent {
        user: String,
        choice: AgentChoice,
        reply: oneshot::Sender<Result<AgentView, String>>,
    },
    /// The directory of the account `domain` (None: the default account).
    Directory {
        domain: Option<String>,
        reply: oneshot::Sender<Result<Vec<DirectoryEntry>, String>>,
    },
    /// DNS found trunk `trunk`'s provider at `address`.
    TrunkAddress {
        trunk: String,
        address: std::net::SocketAddr,
    },
    /// Lifts the ban of an address (`ctl unban IP`): false if it had none.
    Unban {
        ip: std::net::IpAddr,
        reply: oneshot::Sender<bool>,
    },
    /// Panic in the core task (fault injection, see `ctl`).
    InjectPanic,
    /// The media side finished playing a prompt to an endpoint.
    PlaybackDone(crate::media::EndpointId),
    /// The party of an endpoint sent a digit (RFC 4733).
    Dtmf {
        endpoint: crate::media::EndpointId,
        digit: char,
    },
    /// A dialplan script returned or failed.
    DialplanDone {
        call: CallRef,
        result: Result<(), DialplanError>,
    },
    Calls(oneshot::Sender<Vec<CallView>>),
    /// `chat history|unread|read|mute …` from the control socket.
    Chat {
        query: crate::chat::queries::ChatQuery,
        reply: oneshot::Sender<Result<serde_json::Value, String>>,
    },
    /// The domain events after `since` the daemon still keeps (oldest
    /// first), or the oldest it keeps when some after `since` are gone.
    EventsSince {
        since: u64,
        reply: oneshot::Sender<Result<Vec<std::sync::Arc<crate::events::Sequenced>>, u64>>,
    },
    /// A new API token for `user` (`ext` or `ext@domain`): the secret and
    /// what is kept.
    TokenCreate {
        user: String,
        label: String,
        reply: oneshot::Sender<Result<(String, crate::auth::tokens::TokenInfo), String>>,
    },
    Tokens(oneshot::Sender<Vec<crate::auth::tokens::TokenInfo>>),
    /// Revokes the token with this id: false if there is none.
    TokenRevoke {
        id: String,
        reply: oneshot::Sender<bool>,
    },
    Contacts {
        account: String,
        request: ContactRequest,
        reply: oneshot::Sender<ContactReply>,
    },
    /// A page of call history (see [`crate::cdr::history::page`]).
    History {
        filter: crate::cdr::history::Filter,
        visible: RecordCheck,
        before: Option<String>,
        limit: usize,
        reply: oneshot::Sender<Result<HistoryPage, String>>,
    },
    /// Tags and notes a user adds to a call record they may see.
    Annotate {
        id: String,
        visible: RecordCheck,
        tags: Option<Vec<String>>,
        notes: Option<String>,
        by: String,
        reply: oneshot::Sender<Result<crate::cdr::history::Entry, crate::cdr::history::AnnotateError>>,
    },
    /// Click-to-call: ring `user`'s (`ext@domain`) phones, then call
    /// `target` from the one that answers. The conversation's number, or
    /// the status and why not.
    ClickToCall {
        user: String,
        target: String,
        reply: oneshot::Sender<Result<u64, (u16, String)>>,
    },
    /// Ends conversation `conversation` (false: no such call).
    EndCall {
        conversation: u64,
        reply: oneshot::Sender<bool>,
    },
    /// Sends the partner of `party` on `conversation` to `target`, blind.
    TransferCall {
        conversation: u64,
        party: String,
        target: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// The directory for a desk phone's remote phonebook, if its HTTP
    /// digest `authorization` for `target` (path and query) holds.
    Phonebook {
        domain: Option<String>,
        authorization: Option<String>,
        target: String,
        source: std::net::IpAddr,
        reply: oneshot::Sender<PhonebookReply>,
    },
    /// Joins the partners of `party` on `conversation` and on `consult`
    /// (an attended transfer); `party` leaves both.
    TransferAttended {
        conversation: u64,
        consult: u64,
        party: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Holds (`on`) or resumes the partner of `party` on `conversation`.
    HoldCall {
        conversation: u64,
        party: String,
        on: bool,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Whether `user` (`ext@domain`) muted chat notifications.
    ChatMuted {
        user: String,
        reply: oneshot::Sender<bool>,
    },
    /// A chat message from `user` (`ext@domain`) to user or group `to`,
    /// sent through the API: stored and pushed like a MESSAGE. An error is
    /// the status a MESSAGE would have got, and why.
    ChatSend {
        user: String,
        to: String,
        text: String,
        reply: oneshot::Sender<Result<crate::chat::ChatMessage, (u16, String)>>,
    },
    CallRecords {
        user: Option<String>,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<CallRecord>, String>>,
    },
}
