//! The embedded store on redb (ACID, crash-safe; DESIGN.md says why not sled).

use super::{StoreBackend, StoreError, StoreOp};
use crate::cdr::CallRecord;
use crate::registrar::Binding;
use redb::{Database, ReadableTable, TableDefinition};

use std::path::Path;

/// Registrations: key = address-of-record, value = JSON list of bindings.
const LOCATION: TableDefinition<&str, &[u8]> = TableDefinition::new("location");
/// Call records: key = end time + call id (see `CallRecord::key`), value = JSON.
const CDR: TableDefinition<&str, &[u8]> = TableDefinition::new("cdr");

pub struct RedbStore {
    db: Database,
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) `<dir>/switchboard.redb` with a page cache of
    /// `cache_bytes` (redb's own default, 1 GiB, would let the resident
    /// memory of a long-running daemon grow with every record written).
    pub fn open(dir: &Path, cache_bytes: usize) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
        let path = dir.join("switchboard.redb");
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(LOCATION).map_err(backend)?;
        txn.open_table(CDR).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(RedbStore { db })
    }
}

impl StoreBackend for RedbStore {
    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        {
            let mut location = txn.open_table(LOCATION).map_err(backend)?;
            let mut cdr = txn.open_table(CDR).map_err(backend)?;
            for op in ops {
                match op {
                    StoreOp::PutBindings { aor, bindings } => {
                        let v = serde_json::to_vec(bindings).map_err(backend)?;
                        location.insert(aor.as_str(), v.as_slice()).map_err(backend)?;
                    }
                    StoreOp::DeleteBindings { aor } => {
                        location.remove(aor.as_str()).map_err(backend)?;
                    }
                    StoreOp::PutCallRecord(r) => {
                        let v = serde_json::to_vec(r).map_err(backend)?;
                        cdr.insert(r.key().as_str(), v.as_slice()).map_err(backend)?;
                    }
                }
            }
        }
        txn.commit().map_err(backend)
    }

    fn load_bindings(&self) -> Result<Vec<(String, Vec<Binding>)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(LOCATION).map_err(backend)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            match serde_json::from_slice::<Vec<Binding>>(v.value()) {
                Ok(b) => out.push((k.value().to_string(), b)),
                Err(e) => {
                    tracing::warn!(aor = k.value(), error = %e, "skipping unreadable stored binding")
                }
            }
        }
        Ok(out)
    }

    fn call_records(&self, user: Option<&str>, limit: usize) -> Result<Vec<CallRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(CDR).map_err(backend)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(backend)?.rev() {
            let (_, v) = row.map_err(backend)?;
            let Ok(r) = serde_json::from_slice::<CallRecord>(v.value()) else {
                continue;
            };
            if user.is_none_or(|u| r.involves(u)) {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        out.reverse();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(contact: &str) -> Binding {
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

    #[test]
    fn bindings_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RedbStore::open(dir.path(), 1 << 20).unwrap();
            s.commit(&[
                StoreOp::PutBindings {
                    aor: "1001@a".into(),
                    bindings: vec![binding("sip:1001@h:1")],
                },
                StoreOp::PutBindings {
                    aor: "1002@a".into(),
                    bindings: vec![binding("sip:1002@h:2")],
                },
            ])
            .unwrap();
            s.commit(&[StoreOp::DeleteBindings { aor: "1002@a".into() }]).unwrap();
        }
        let s = RedbStore::open(dir.path(), 1 << 20).unwrap();
        let all = s.load_bindings().unwrap();
        assert_eq!(all, vec![("1001@a".to_string(), vec![binding("sip:1001@h:1")])]);
    }
}
