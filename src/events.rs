//! Domain events: one typed stream of what happened (a registration
//! changed, a leg changed state, a conversation ended) that engines emit
//! and others follow (presence today; the ACD and the API's event stream
//! later), so that nothing polls for changes.

use serde::Serialize;

/// Where a leg stands, as watchers see it (RFC 4235 §3.7.1 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LegPhase {
    /// INVITE sent or received, no answer yet.
    Trying,
    /// Ringing (a provisional response with a tag).
    Early,
    /// Answered: the party is talking (or hearing a source).
    Confirmed,
    Terminated,
}

/// Where an agent stands (the ACD engine follows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AgentState {
    Offline,
    Ready,
    Ringing,
    InCall,
    /// After-call work: a queue call ended, the agent writes it up.
    Acw,
    NotReady {
        reason: String,
    },
}

impl AgentState {
    pub fn name(&self) -> &'static str {
        match self {
            AgentState::Offline => "offline",
            AgentState::Ready => "ready",
            AgentState::Ringing => "ringing",
            AgentState::InCall => "in_call",
            AgentState::Acw => "acw",
            AgentState::NotReady { .. } => "not_ready",
        }
    }
}

/// How one agent's offer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferOutcome {
    /// Answered on this leg.
    Answered { leg: u64 },
    /// Rang out, or declined.
    NoAnswer,
    /// Busy, unreachable, or cancelled because another agent answered or
    /// the caller left.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DomainEvent {
    /// The bindings of `aor` (`ext@domain`) changed; `contacts` remain.
    Registration { aor: String, contacts: usize },
    /// A leg of `conversation` changed state; `party` is the extension it faces.
    LegState {
        account: String,
        party: String,
        leg: u64,
        conversation: u64,
        phase: LegPhase,
        /// While a leg we placed to a phone rings: who is calling, with
        /// their contact card when their number is on one.
        #[serde(skip_serializing_if = "Option::is_none")]
        caller: Option<std::sync::Arc<Caller>>,
    },
    /// Every leg of a conversation has ended; its record is written.
    ConversationEnded { account: String, conversation: u64 },
    /// A chat message was stored: from `from` to user or group `to`;
    /// `recipients` are the extensions it is pushed to (not the muted).
    ChatMessage {
        account: String,
        id: u64,
        from: String,
        to: String,
        group: bool,
        /// The start of its text.
        preview: String,
        recipients: Vec<String>,
    },
    /// An agent's state changed (`aor` is `ext@domain`).
    AgentState { aor: String, state: AgentState },
    /// A trunk's registration changed: "registering", "registered",
    /// "failing" (with the provider's `code`) or "disabled".
    TrunkStatus {
        trunk: String,
        status: String,
        code: Option<u16>,
    },
}

/// Who is calling a ringing phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Caller {
    pub number: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<std::sync::Arc<crate::contacts::Contact>>,
}

/// A domain event as the API's event stream sends it: numbered, so a
/// client that reconnects can ask for what it missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Sequenced {
    pub seq: u64,
    /// Unix time, milliseconds.
    pub at_ms: u64,
    #[serde(flatten)]
    pub event: DomainEvent,
}

impl DomainEvent {
    /// The user (`ext@domain`) whose state this event may change.
    pub fn user(&self) -> Option<String> {
        match self {
            DomainEvent::Registration { aor, .. } => Some(aor.clone()),
            DomainEvent::LegState { account, party, .. } => Some(format!("{party}@{account}")),
            // Presence documents show the agent's state (note).
            DomainEvent::AgentState { aor, .. } => Some(aor.clone()),
            DomainEvent::ConversationEnded { .. }
            | DomainEvent::TrunkStatus { .. }
            | DomainEvent::ChatMessage { .. } => None,
        }
    }
}
