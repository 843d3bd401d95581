//! Group commit: one thread owns the write side of the store, takes every
//! op queued since its last commit, commits them in one transaction and
//! then acknowledges each submitter. Many REGISTERs per second cost one
//! fsync per batch instead of one each.

use super::{StoreBackend, StoreError, StoreOp};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

struct WriteRequest {
    ops: Vec<StoreOp>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Submits writes to the store's writer thread. Cheap to clone.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::UnboundedSender<WriteRequest>,
    backend: Arc<dyn StoreBackend>,
}

const MAX_BATCH: usize = 4096;

impl StoreHandle {
    pub fn start(backend: Arc<dyn StoreBackend>) -> StoreHandle {
        let (tx, mut rx) = mpsc::unbounded_channel::<WriteRequest>();
        let b = backend.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                    let ops: Vec<StoreOp> = batch.iter().flat_map(|r| r.ops.iter().cloned()).collect();
                    let result = b.commit(&ops).map_err(|e| e.to_string());
                    if let Err(e) = &result {
                        tracing::error!(error = %e, ops = ops.len(), "store commit failed");
                    }
                    for r in batch {
                        if let Some(done) = r.done {
                            let _ = done.send(result.clone());
                        }
                    }
                }
            })
            .expect("spawn store writer");
        StoreHandle { tx, backend }
    }

    /// Queues ops; the receiver resolves once they are durable.
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
