//! The embedded store on redb (ACID, crash-safe; DESIGN.md says why not sled).

use super::rows::{Key, Row, Table, Value};
use super::{ChatState, StoreBackend, StoreError, StoreOp};
use crate::cdr::CallRecord;
use crate::chat::ChatMessage;
use crate::registrar::Binding;
use redb::{Database, Durability, ReadableTable, TableDefinition};

use std::path::Path;

/// Registrations: key = address-of-record, value = JSON list of bindings.
const LOCATION: TableDefinition<&str, &[u8]> = TableDefinition::new("location");
/// Call records: key = end time + call id (see `CallRecord::key`), value = JSON.
const CDR: TableDefinition<&str, &[u8]> = TableDefinition::new("cdr");
/// Chat messages: key = message id, value = JSON.
const CHAT: TableDefinition<u64, &[u8]> = TableDefinition::new("chat");
/// Offline queue: key = "aor\nid" (id zero-padded), value = message id.
const PENDING: TableDefinition<&str, u64> = TableDefinition::new("chat_pending");
/// Read marks: key = "aor\nconversation", value = last read id.
const READ: TableDefinition<&str, u64> = TableDefinition::new("chat_read");
/// Muted users: key = aor.
const MUTED: TableDefinition<&str, u8> = TableDefinition::new("chat_muted");

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
        txn.open_table(CHAT).map_err(backend)?;
        txn.open_table(PENDING).map_err(backend)?;
        txn.open_table(READ).map_err(backend)?;
        txn.open_table(MUTED).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(RedbStore { db })
    }

    /// Applies `ops` in one transaction. A commit that is not `durable` is
    /// visible to readers at once but reaches the disk only with the next
    /// durable one (redb `Durability::None`).
    pub fn apply(&self, ops: &[StoreOp], durable: bool) -> Result<(), StoreError> {
        let rows = ops.iter().map(Row::of).collect::<Result<Vec<_>, _>>()?;
        self.apply_rows(&rows, durable)
    }

    /// Applies row changes (values already encoded) in one transaction.
    pub fn apply_rows(&self, rows: &[Row], durable: bool) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        if !durable {
            txn.set_durability(Durability::None);
        }
        {
            let mut location = txn.open_table(LOCATION).map_err(backend)?;
            let mut cdr = txn.open_table(CDR).map_err(backend)?;
            let mut chat = txn.open_table(CHAT).map_err(backend)?;
            let mut pending = txn.open_table(PENDING).map_err(backend)?;
            let mut read = txn.open_table(READ).map_err(backend)?;
            let mut muted = txn.open_table(MUTED).map_err(backend)?;
            for row in rows {
                let bad = || StoreError::Backend(format!("row of the wrong shape for {:?}", row.table));
                match (row.table, &row.key, &row.value) {
                    (Table::Location | Table::Cdr, Key::Text(k), value) => {
                        let table = if row.table == Table::Location {
                            &mut location
                        } else {
                            &mut cdr
                        };
                        match value {
                            Some(Value::Bytes(v)) => table.insert(k.as_str(), v.as_slice()).map(drop),
                            None => table.remove(k.as_str()).map(drop),
                            Some(Value::Number(_)) => return Err(bad()),
                        }
                    }
                    (Table::Chat, Key::Id(id), Some(Value::Bytes(v))) => chat.insert(*id, v.as_slice()).map(drop),
                    (Table::Pending | Table::Read, Key::Text(k), value) => {
                        let table = if row.table == Table::Pending {
                            &mut pending
                        } else {
                            &mut read
                        };
                        match value {
                            Some(Value::Number(n)) => table.insert(k.as_str(), *n).map(drop),
                            None => table.remove(k.as_str()).map(drop),
                            Some(Value::Bytes(_)) => return Err(bad()),
                        }
                    }
                    (Table::Muted, Key::Text(k), Some(Value::Number(_))) => muted.insert(k.as_str(), 1).map(drop),
                    (Table::Muted, Key::Text(k), None) => muted.remove(k.as_str()).map(drop),
                    _ => return Err(bad()),
                }
                .map_err(backend)?;
            }
        }
        txn.commit().map_err(backend)
    }
}

impl StoreBackend for RedbStore {
    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.apply(ops, true)
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

    fn chat_state(&self) -> Result<ChatState, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let chat = txn.open_table(CHAT).map_err(backend)?;
        let last_id = chat.last().map_err(backend)?.map_or(0, |(k, _)| k.value());
        let mut state = ChatState {
            last_id,
            ..Default::default()
        };
        let pending = txn.open_table(PENDING).map_err(backend)?;
        for row in pending.iter().map_err(backend)? {
            let (k, id) = row.map_err(backend)?;
            let aor = k.value().split('\n').next().unwrap_or("").to_string();
            if let Some(v) = chat.get(id.value()).map_err(backend)? {
                if let Ok(m) = serde_json::from_slice::<ChatMessage>(v.value()) {
                    state.pending.push((aor, m));
                }
            }
        }
        let muted = txn.open_table(MUTED).map_err(backend)?;
        for row in muted.iter().map_err(backend)? {
            state.muted.push(row.map_err(backend)?.0.value().to_string());
        }
        Ok(state)
    }

    fn chat_history(
        &self,
        conversation: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let chat = txn.open_table(CHAT).map_err(backend)?;
        let mut out = Vec::new();
        let upper = before.unwrap_or(u64::MAX);
        for row in chat.range(..upper).map_err(backend)?.rev() {
            let (_, v) = row.map_err(backend)?;
            let Ok(m) = serde_json::from_slice::<ChatMessage>(v.value()) else {
                continue;
            };
            if m.conversation() == conversation {
                out.push(m);
                if out.len() >= limit {
                    break;
                }
            }
        }
        out.reverse();
        Ok(out)
    }

    fn chat_messages(&self, account: &str) -> Result<Vec<ChatMessage>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let chat = txn.open_table(CHAT).map_err(backend)?;
        let mut out = Vec::new();
        for row in chat.iter().map_err(backend)? {
            let (_, v) = row.map_err(backend)?;
            if let Ok(m) = serde_json::from_slice::<ChatMessage>(v.value()) {
                if m.account == account {
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    fn read_marks(&self, aor: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let read = txn.open_table(READ).map_err(backend)?;
        let prefix = format!("{aor}\n");
        let mut out = Vec::new();
        for row in read.range(prefix.as_str()..).map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            let Some(conv) = k.value().strip_prefix(&prefix) else {
                break;
            };
            out.push((conv.to_string(), v.value()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::sample_binding as binding;

    #[test]
    fn bindings_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RedbStore::open(dir.path(), 1 << 20).unwrap();
            s.commit(&[
                StoreOp::PutBindings {
                    aor: "1001@a".into(),
                    bindings: vec![binding("sip:1001@h:1")].into(),
                },
                StoreOp::PutBindings {
                    aor: "1002@a".into(),
                    bindings: vec![binding("sip:1002@h:2")].into(),
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
