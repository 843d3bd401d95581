//! Storage: a narrow interface ([`StoreBackend`]) over generic tables of
//! rows (a key and encoded bytes, written in atomic commits of
//! [`StoreOp`]s, read by scans), the embedded redb implementation, and the
//! journal in front of it that makes a commit a copy into mapped memory
//! (see [`journal`]). The store names no domain type: each domain module
//! encodes and reads its own rows.
//!
//! A caller answers its client only after its write is in the journal
//! (see [`journal`]), so acknowledged data survives `kill -9`, and a power
//! cut loses at most the last [`journal::FOLD_INTERVAL`].

pub mod fault;
mod journal;
mod legacy;
mod redb_store;
mod rows;

pub use journal::JournaledStore;
pub use redb_store::RedbStore;
pub use rows::{Key, StoreOp, Table, Value};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Backend(String),
}

/// Where a scan starts and which way it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// Every row in key order.
    Forward,
    /// From this key (inclusive) on, in key order.
    From(Key),
    /// Every row, highest key first.
    Backward,
    /// From the highest key below this one (exclusive) down.
    Below(Key),
}

/// What a storage engine must provide: generic tables of rows, written in
/// atomic commits and read by scans. redb is the embedded default; a
/// shared store for multi-node setups implements the same trait. What the
/// rows mean is the business of the module that writes them.
pub trait StoreBackend: Send + Sync + 'static {
    /// Applies all ops atomically; once it returns they survive the
    /// daemon's death (`kill -9`).
    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError>;
    /// Visits rows of `table` as `scan` says until `visit` returns false.
    fn scan(&self, table: Table, scan: Scan, visit: &mut dyn FnMut(&Key, &Value) -> bool) -> Result<(), StoreError>;
    fn get(&self, table: Table, key: &Key) -> Result<Option<Value>, StoreError>;
}

/// Every row of `table`, in key order.
pub fn all_rows(backend: &dyn StoreBackend, table: Table) -> Result<Vec<(Key, Value)>, StoreError> {
    let mut out = Vec::new();
    backend.scan(table, Scan::Forward, &mut |k, v| {
        out.push((k.clone(), v.clone()));
        true
    })?;
    Ok(out)
}

/// The core's handle on the store. Commits run inline: with the journal a
/// commit is one `write(2)`, cheaper than handing it to another thread.
#[derive(Clone)]
pub struct StoreHandle {
    backend: std::sync::Arc<dyn StoreBackend>,
    timing: std::sync::Arc<WriteTiming>,
}

/// Commits made through a [`StoreHandle`] and the time they took.
#[derive(Default)]
pub struct WriteTiming {
    pub commits: std::sync::atomic::AtomicU64,
    pub nanos: std::sync::atomic::AtomicU64,
}

impl StoreHandle {
    pub fn new(backend: std::sync::Arc<dyn StoreBackend>) -> StoreHandle {
        StoreHandle {
            backend,
            timing: Default::default(),
        }
    }

    /// Commits so far, and the nanoseconds they took in all.
    pub fn write_timing(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.timing.commits.load(Relaxed), self.timing.nanos.load(Relaxed))
    }

    /// Commits `ops`; once it returns Ok they survive `kill -9`. A failure
    /// is logged here.
    pub fn write(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let r = if fault::failing() {
            Err(StoreError::Backend("fault injection: writes fail".into()))
        } else {
            self.backend.commit(ops)
        };
        {
            use std::sync::atomic::Ordering::Relaxed;
            self.timing.commits.fetch_add(1, Relaxed);
            self.timing
                .nanos
                .fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
        }
        if let Err(e) = &r {
            tracing::error!(error = %e, ops = ops.len(), "store commit failed");
        }
        r
    }

    pub fn backend(&self) -> &std::sync::Arc<dyn StoreBackend> {
        &self.backend
    }
}
