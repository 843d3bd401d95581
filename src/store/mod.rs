//! Storage: a narrow interface ([`StoreBackend`]) with typed operations,
//! the embedded redb implementation, and the journal in front of it that
//! makes a commit one `write(2)` (see [`journal`]).
//!
//! A caller answers its client only after its write is in the journal
//! (see [`journal`]), so acknowledged data survives `kill -9`, and a power
//! cut loses at most the last [`journal::FOLD_INTERVAL`].

mod journal;
mod redb_store;
mod rows;

pub use journal::JournaledStore;
pub use redb_store::RedbStore;

use crate::cdr::CallRecord;
use crate::chat::ChatMessage;
use crate::registrar::Binding;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Backend(String),
}

/// One change to persistent state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum StoreOp {
    /// Replace all bindings of an address-of-record.
    PutBindings {
        aor: String,
        /// Shared with the registrar's in-memory list.
        bindings: std::sync::Arc<[Binding]>,
    },
    DeleteBindings {
        aor: String,
    },
    /// A finished call's record.
    PutCallRecord(CallRecord),
    PutChatMessage(ChatMessage),
    /// A message waiting for one recipient's device.
    PutPending {
        aor: String,
        id: u64,
    },
    DeletePending {
        aor: String,
        id: u64,
    },
    /// The last message `aor` has read in `conversation`.
    PutReadMark {
        aor: String,
        conversation: String,
        id: u64,
    },
    PutMuted {
        aor: String,
        muted: bool,
    },
}

/// Chat state needed at start-up.
#[derive(Debug, Default)]
pub struct ChatState {
    pub last_id: u64,
    pub pending: Vec<(String, ChatMessage)>,
    pub muted: Vec<String>,
}

/// What a storage engine must provide. redb is the embedded default; a
/// shared store for multi-node setups implements the same trait.
pub trait StoreBackend: Send + Sync + 'static {
    /// Applies all ops atomically; once it returns they survive the
    /// daemon's death (`kill -9`).
    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError>;
    /// Every stored registration, by address-of-record.
    fn load_bindings(&self) -> Result<Vec<(String, Vec<Binding>)>, StoreError>;
    /// The newest `limit` call records involving `user` (all if None), oldest first.
    fn call_records(&self, user: Option<&str>, limit: usize) -> Result<Vec<CallRecord>, StoreError>;
    fn chat_state(&self) -> Result<ChatState, StoreError>;
    /// Messages visible to `viewer` (extension@domain) in `conversation`
    /// (store-wide id), newest `limit` before `before` (exclusive), oldest first.
    fn chat_history(
        &self,
        conversation: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError>;
    /// All messages of an account, oldest first (for unread counts).
    fn chat_messages(&self, account: &str) -> Result<Vec<ChatMessage>, StoreError>;
    /// Read marks of `aor`: conversation → last read id.
    fn read_marks(&self, aor: &str) -> Result<Vec<(String, u64)>, StoreError>;
}

/// A binding for the store's tests.
#[cfg(test)]
fn sample_binding(contact: &str) -> Binding {
    Binding {
        contact: contact.into(),
        expires_at: 2_000_000_000,
        call_id: "c".into(),
        cseq: 1,
        q: None,
        source: "127.0.0.1:5070".into(),
        transport: "UDP".into(),
        user_agent: Some("test".into()),
        registered_at: 1_900_000_000,
    }
}

/// The core's handle on the store. Commits run inline: with the journal a
/// commit is one `write(2)`, cheaper than handing it to another thread.
#[derive(Clone)]
pub struct StoreHandle {
    backend: std::sync::Arc<dyn StoreBackend>,
}

impl StoreHandle {
    pub fn new(backend: std::sync::Arc<dyn StoreBackend>) -> StoreHandle {
        StoreHandle { backend }
    }

    /// Commits `ops`; once it returns Ok they survive `kill -9`. A failure
    /// is logged here.
    pub fn write(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let r = self.backend.commit(ops);
        if let Err(e) = &r {
            tracing::error!(error = %e, ops = ops.len(), "store commit failed");
        }
        r
    }

    pub fn backend(&self) -> &std::sync::Arc<dyn StoreBackend> {
        &self.backend
    }
}
