//! The embedded store on redb (ACID, crash-safe; DESIGN.md says why not sled).

use super::rows::{Key, StoreOp, Table, Value};
use super::{Scan, StoreBackend, StoreError};
use redb::{Database, Durability, ReadableTable, TableDefinition};

use std::path::Path;

// The redb tables behind each `Table`, with the key and value shapes the
// module that owns its rows writes (see `registrar`, `cdr` and `chat`).
const LOCATION: TableDefinition<&str, &[u8]> = TableDefinition::new("location");
const CDR: TableDefinition<&str, &[u8]> = TableDefinition::new("cdr");
const CHAT: TableDefinition<u64, &[u8]> = TableDefinition::new("chat");
const PENDING: TableDefinition<&str, u64> = TableDefinition::new("chat_pending");
const READ: TableDefinition<&str, u64> = TableDefinition::new("chat_read");
const MUTED: TableDefinition<&str, u8> = TableDefinition::new("chat_muted");
const LIVE: TableDefinition<u64, &[u8]> = TableDefinition::new("live_calls");
const AGENT: TableDefinition<&str, &[u8]> = TableDefinition::new("agent_states");
const TOKEN: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");
const CONTACT: TableDefinition<&str, &[u8]> = TableDefinition::new("contacts");
const CDR_NOTE: TableDefinition<&str, &[u8]> = TableDefinition::new("cdr_notes");

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
        txn.open_table(LIVE).map_err(backend)?;
        txn.open_table(AGENT).map_err(backend)?;
        txn.open_table(TOKEN).map_err(backend)?;
        txn.open_table(CONTACT).map_err(backend)?;
        txn.open_table(CDR_NOTE).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(RedbStore { db })
    }

    /// Applies row changes (values already encoded) in one transaction. A
    /// commit that is not `durable` is visible to readers at once but
    /// reaches the disk only with the next durable one (redb
    /// `Durability::None`).
    pub fn apply_rows(&self, rows: &[StoreOp], durable: bool) -> Result<(), StoreError> {
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
            let mut live = txn.open_table(LIVE).map_err(backend)?;
            let mut agent = txn.open_table(AGENT).map_err(backend)?;
            let mut token = txn.open_table(TOKEN).map_err(backend)?;
            let mut contact = txn.open_table(CONTACT).map_err(backend)?;
            let mut cdr_note = txn.open_table(CDR_NOTE).map_err(backend)?;
            for row in rows {
                let bad = || StoreError::Backend(format!("row of the wrong shape for {:?}", row.table));
                match (row.table, &row.key, &row.value) {
                    (
                        Table::Location | Table::Cdr | Table::Agent | Table::Token | Table::Contact | Table::CdrNote,
                        Key::Text(k),
                        value,
                    ) => {
                        let table = match row.table {
                            Table::Location => &mut location,
                            Table::Cdr => &mut cdr,
                            Table::Agent => &mut agent,
                            Table::Contact => &mut contact,
                            Table::CdrNote => &mut cdr_note,
                            _ => &mut token,
                        };
                        match value {
                            Some(Value::Bytes(v)) => table.insert(k.as_str(), v.as_slice()).map(drop),
                            None => table.remove(k.as_str()).map(drop),
                            Some(Value::Number(_)) => return Err(bad()),
                        }
                    }
                    (Table::Chat, Key::Id(id), Some(Value::Bytes(v))) => chat.insert(*id, v.as_slice()).map(drop),
                    (Table::Live, Key::Id(id), Some(Value::Bytes(v))) => live.insert(*id, v.as_slice()).map(drop),
                    (Table::Live, Key::Id(id), None) => live.remove(*id).map(drop),
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

/// Visits a text-keyed table.
fn scan_text<V: redb::Value + 'static>(
    table: &impl ReadableTable<&'static str, V>,
    scan: &Scan,
    value: impl Fn(V::SelfType<'_>) -> Value,
    visit: &mut dyn FnMut(&Key, &Value) -> bool,
) -> Result<(), StoreError> {
    let text = |k: &Key| match k {
        Key::Text(t) => Ok(t.clone()),
        Key::Id(_) => Err(StoreError::Backend("a number key for a text-keyed table".into())),
    };
    let range = match scan {
        Scan::Forward | Scan::Backward => table.range::<&str>(..),
        Scan::From(k) => table.range(text(k)?.as_str()..),
        Scan::Below(k) => table.range(..text(k)?.as_str()),
    }
    .map_err(backend)?;
    let mut each = |row: Result<(redb::AccessGuard<'_, &str>, redb::AccessGuard<'_, V>), redb::StorageError>| {
        let (k, v) = row.map_err(backend)?;
        Ok::<bool, StoreError>(visit(&Key::Text(k.value().to_string()), &value(v.value())))
    };
    if matches!(scan, Scan::Backward | Scan::Below(_)) {
        for row in range.rev() {
            if !each(row)? {
                break;
            }
        }
    } else {
        for row in range {
            if !each(row)? {
                break;
            }
        }
    }
    Ok(())
}

impl StoreBackend for RedbStore {
    fn commit(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.apply_rows(ops, true)
    }

    fn scan(&self, table: Table, scan: Scan, visit: &mut dyn FnMut(&Key, &Value) -> bool) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let bytes = |v: &[u8]| Value::Bytes(v.to_vec());
        let number = |n: u64| Value::Number(n);
        match table {
            Table::Location => scan_text(&txn.open_table(LOCATION).map_err(backend)?, &scan, bytes, visit),
            Table::Cdr => scan_text(&txn.open_table(CDR).map_err(backend)?, &scan, bytes, visit),
            Table::Agent => scan_text(&txn.open_table(AGENT).map_err(backend)?, &scan, bytes, visit),
            Table::Token => scan_text(&txn.open_table(TOKEN).map_err(backend)?, &scan, bytes, visit),
            Table::Contact => scan_text(&txn.open_table(CONTACT).map_err(backend)?, &scan, bytes, visit),
            Table::CdrNote => scan_text(&txn.open_table(CDR_NOTE).map_err(backend)?, &scan, bytes, visit),
            Table::Pending => scan_text(&txn.open_table(PENDING).map_err(backend)?, &scan, number, visit),
            Table::Read => scan_text(&txn.open_table(READ).map_err(backend)?, &scan, number, visit),
            Table::Muted => scan_text(
                &txn.open_table(MUTED).map_err(backend)?,
                &scan,
                |n: u8| Value::Number(u64::from(n)),
                visit,
            ),
            Table::Chat | Table::Live => {
                let chat = txn
                    .open_table(if table == Table::Chat { CHAT } else { LIVE })
                    .map_err(backend)?;
                let id = |k: &Key| match k {
                    Key::Id(n) => Ok(*n),
                    Key::Text(_) => Err(StoreError::Backend("a text key for the chat table".into())),
                };
                let range = match &scan {
                    Scan::Forward | Scan::Backward => chat.range::<u64>(..),
                    Scan::From(k) => chat.range(id(k)?..),
                    Scan::Below(k) => chat.range(..id(k)?),
                }
                .map_err(backend)?;
                let rows: Box<dyn Iterator<Item = _>> = if matches!(scan, Scan::Backward | Scan::Below(_)) {
                    Box::new(range.rev())
                } else {
                    Box::new(range)
                };
                for row in rows {
                    let (k, v) = row.map_err(backend)?;
                    if !visit(&Key::Id(k.value()), &Value::Bytes(v.value().to_vec())) {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    fn get(&self, table: Table, key: &Key) -> Result<Option<Value>, StoreError> {
        let mut found = None;
        self.scan(table, Scan::From(key.clone()), &mut |k, v| {
            if k == key {
                found = Some(v.clone());
            }
            false
        })?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(aor: &str) -> StoreOp {
        StoreOp::put_json(Table::Location, Key::text(aor), &[aor]).unwrap()
    }

    fn keys(s: &RedbStore, table: Table, scan: Scan) -> Vec<Key> {
        let mut out = Vec::new();
        s.scan(table, scan, &mut |k, _| {
            out.push(k.clone());
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn rows_survive_reopen_and_scan_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RedbStore::open(dir.path(), 1 << 20).unwrap();
            s.commit(&[put("1001@a"), put("1002@a"), put("1003@a")]).unwrap();
            s.commit(&[StoreOp::delete(Table::Location, Key::text("1002@a"))])
                .unwrap();
            s.commit(&[
                StoreOp::put_json(Table::Chat, Key::Id(1), "one").unwrap(),
                StoreOp::put_json(Table::Chat, Key::Id(2), "two").unwrap(),
            ])
            .unwrap();
        }
        let s = RedbStore::open(dir.path(), 1 << 20).unwrap();
        let t = |k: &str| Key::text(k);
        assert_eq!(keys(&s, Table::Location, Scan::Forward), [t("1001@a"), t("1003@a")]);
        assert_eq!(keys(&s, Table::Location, Scan::Backward), [t("1003@a"), t("1001@a")]);
        assert_eq!(keys(&s, Table::Location, Scan::From(t("1002"))), [t("1003@a")]);
        assert_eq!(keys(&s, Table::Location, Scan::Below(t("1003@a"))), [t("1001@a")]);
        assert_eq!(keys(&s, Table::Chat, Scan::Below(Key::Id(2))), [Key::Id(1)]);
        let v = s.get(Table::Chat, &Key::Id(2)).unwrap().unwrap();
        assert_eq!(v.json::<String>().as_deref(), Some("two"));
        assert_eq!(s.get(Table::Location, &t("1002@a")).unwrap(), None);
    }
}
