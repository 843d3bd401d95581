//! Storage: a narrow interface ([`StoreBackend`]) with typed operations,
//! the embedded redb implementation, and a group-commit writer that turns
//! many concurrent writes into one durable transaction.
//!
//! A caller answers its client only after its write is durable, so
//! acknowledged data survives `kill -9`.

mod redb_store;
mod writer;

pub use redb_store::RedbStore;
pub use writer::StoreHandle;

use crate::cdr::CallRecord;
use crate::registrar::Binding;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Backend(String),
    #[error("store writer has stopped")]
    Closed,
}

/// One change to persistent state.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// Replace all bindings of an address-of-record.
    PutBindings {
        aor: String,
        bindings: Vec<Binding>,
    },
    DeleteBindings {
        aor: String,
    },
    /// A finished call's record.
    PutCallRecord(CallRecord),
}

/// What a storage engine must provide. redb is the embedded default; a
/// shared store for multi-node setups implements the same trait.
pub trait StoreBackend: Send + Sync + 'static {
    /// Applies all ops atomically and durably.
    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError>;
    /// Every stored registration, by address-of-record.
    fn load_bindings(&self) -> Result<Vec<(String, Vec<Binding>)>, StoreError>;
    /// The newest `limit` call records involving `user` (all if None), oldest first.
    fn call_records(&self, user: Option<&str>, limit: usize) -> Result<Vec<CallRecord>, StoreError>;
}
