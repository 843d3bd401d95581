//! Group commit: one thread owns the write side of the store, takes every
//! op queued since its last commit, commits them at once and then
//! acknowledges each submitter. When writes pause it asks the backend to
//! make them durable ([`StoreBackend::sync`]).

use super::journal::FOLD_INTERVAL;
use super::{StoreBackend, StoreError, StoreOp};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use tokio::sync::oneshot;

struct WriteRequest {
    ops: Vec<StoreOp>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Submits writes to the store's writer thread. Cheap to clone.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<WriteRequest>,
    backend: Arc<dyn StoreBackend>,
}

const MAX_BATCH: usize = 4096;

impl StoreHandle {
    pub fn start(backend: Arc<dyn StoreBackend>) -> StoreHandle {
        let (tx, rx) = mpsc::channel::<WriteRequest>();
        let b = backend.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(&*b, rx))
            .expect("spawn store writer");
        StoreHandle { tx, backend }
    }

    /// Queues ops; the receiver resolves once they are committed.
    pub fn write(&self, ops: Vec<StoreOp>) -> oneshot::Receiver<Result<(), String>> {
        let (done, rx) = oneshot::channel();
        if let Err(e) = self.tx.send(WriteRequest { ops, done: Some(done) }) {
            if let Some(d) = e.0.done {
                let _ = d.send(Err(StoreError::Closed.to_string()));
            }
        }
        rx
    }

    /// Queues ops without waiting (purges of expired data).
    pub fn write_detached(&self, ops: Vec<StoreOp>) {
        let _ = self.tx.send(WriteRequest { ops, done: None });
    }

    pub fn backend(&self) -> &Arc<dyn StoreBackend> {
        &self.backend
    }
}

fn write_loop(b: &dyn StoreBackend, rx: mpsc::Receiver<WriteRequest>) {
    let sync = || {
        if let Err(e) = b.sync() {
            tracing::error!(error = %e, "store sync failed");
        }
    };
    // Whether commits since the last sync wait to be made durable.
    let mut unsynced = false;
    loop {
        let first = if unsynced {
            match rx.recv_timeout(FOLD_INTERVAL) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    sync();
                    unsynced = false;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(r) => r,
                Err(_) => break,
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut ops = Vec::new();
        let mut waiting = Vec::with_capacity(batch.len());
        for r in batch {
            ops.extend(r.ops);
            waiting.extend(r.done);
        }
        let result = b.commit(&ops).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, ops = ops.len(), "store commit failed");
        }
        unsynced = true;
        for done in waiting {
            let _ = done.send(result.clone());
        }
    }
    sync();
}
