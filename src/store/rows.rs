//! Store ops as row changes whose values are already encoded as redb
//! keeps them, and their compact binary form in journal frames.
//!
//! The journal used to hold the ops as JSON: the fold thread parsed every
//! binding back into structs only to serialize it again for redb, which
//! was half the fold's work (a tenth of a registration's CPU, bench/). A
//! row is encoded once, when committed, and folded as bytes.
//!
//! Binary form, after a version byte [`ROWS_V1`]: per row, the table (one
//! byte), the key (tag 0 + u32 LE length + UTF-8, or tag 1 + u64 LE), the
//! value (tag 0 none = delete, 1 + u32 LE length + bytes, 2 + u64 LE).

use super::{StoreError, StoreOp};

/// First byte of a binary frame; a JSON frame (older journals) starts with `[`.
pub const ROWS_V1: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Location,
    Cdr,
    Chat,
    Pending,
    Read,
    Muted,
}

const TABLES: [Table; 6] = [
    Table::Location,
    Table::Cdr,
    Table::Chat,
    Table::Pending,
    Table::Read,
    Table::Muted,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Text(String),
    Id(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bytes(Vec<u8>),
    Number(u64),
}

/// One row set (`value` Some) or deleted (None).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub table: Table,
    pub key: Key,
    pub value: Option<Value>,
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> Result<Option<Value>, StoreError> {
    serde_json::to_vec(v)
        .map(|b| Some(Value::Bytes(b)))
        .map_err(|e| StoreError::Backend(e.to_string()))
}

/// Key of the offline queue: "aor\nid", the id zero-padded to sort.
pub fn pending_key(aor: &str, id: u64) -> String {
    format!("{aor}\n{id:020}")
}

impl Row {
    /// The row change `op` makes.
    pub fn of(op: &StoreOp) -> Result<Row, StoreError> {
        let text = |s: &str| Key::Text(s.to_string());
        let (table, key, value) = match op {
            StoreOp::PutBindings { aor, bindings } => (Table::Location, text(aor), json(bindings)?),
            StoreOp::DeleteBindings { aor } => (Table::Location, text(aor), None),
            StoreOp::PutCallRecord(r) => (Table::Cdr, Key::Text(r.key()), json(r)?),
            StoreOp::PutChatMessage(m) => (Table::Chat, Key::Id(m.id), json(m)?),
            StoreOp::PutPending { aor, id } => (
                Table::Pending,
                Key::Text(pending_key(aor, *id)),
                Some(Value::Number(*id)),
            ),
            StoreOp::DeletePending { aor, id } => (Table::Pending, Key::Text(pending_key(aor, *id)), None),
            StoreOp::PutReadMark { aor, conversation, id } => (
                Table::Read,
                Key::Text(format!("{aor}\n{conversation}")),
                Some(Value::Number(*id)),
            ),
            StoreOp::PutMuted { aor, muted } => (Table::Muted, text(aor), muted.then_some(Value::Number(1))),
        };
        Ok(Row { table, key, value })
    }
}

/// Appends the binary form of `rows` (version byte first) to `out`.
pub fn encode(rows: &[Row], out: &mut Vec<u8>) {
    out.push(ROWS_V1);
    for row in rows {
        let table = TABLES
            .iter()
            .position(|t| *t == row.table)
            .expect("every table is listed");
        out.push(table as u8);
        match &row.key {
            Key::Text(s) => {
                out.push(0);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Key::Id(n) => {
                out.push(1);
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        match &row.value {
            None => out.push(0),
            Some(Value::Bytes(b)) => {
                out.push(1);
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
            Some(Value::Number(n)) => {
                out.push(2);
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
    }
}

/// Reads rows back from [`encode`]'s form; None if it is not that form
/// or is cut short.
pub fn decode(bytes: &[u8]) -> Option<Vec<Row>> {
    let (&version, mut rest) = bytes.split_first()?;
    if version != ROWS_V1 {
        return None;
    }
    let mut rows = Vec::new();
    while !rest.is_empty() {
        let table = *TABLES.get(usize::from(take(&mut rest, 1)?[0]))?;
        let key = match take(&mut rest, 1)?[0] {
            0 => Key::Text(String::from_utf8(take_sized(&mut rest)?.to_vec()).ok()?),
            1 => Key::Id(u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?)),
            _ => return None,
        };
        let value = match take(&mut rest, 1)?[0] {
            0 => None,
            1 => Some(Value::Bytes(take_sized(&mut rest)?.to_vec())),
            2 => Some(Value::Number(u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?))),
            _ => return None,
        };
        rows.push(Row { table, key, value });
    }
    Some(rows)
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn take_sized<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(take(rest, 4)?.try_into().ok()?) as usize;
    take(rest, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_survives_the_binary_form() {
        let ops = [
            StoreOp::PutBindings {
                aor: "1001@a".into(),
                bindings: vec![crate::store::sample_binding("sip:1@h")].into(),
            },
            StoreOp::DeleteBindings { aor: "1002@a".into() },
            StoreOp::PutPending {
                aor: "1001@a".into(),
                id: 7,
            },
            StoreOp::DeletePending {
                aor: "1001@a".into(),
                id: 7,
            },
            StoreOp::PutReadMark {
                aor: "1001@a".into(),
                conversation: "1002@a".into(),
                id: 9,
            },
            StoreOp::PutMuted {
                aor: "1003@a".into(),
                muted: true,
            },
            StoreOp::PutMuted {
                aor: "1003@a".into(),
                muted: false,
            },
        ];
        let rows: Vec<Row> = ops.iter().map(|o| Row::of(o).unwrap()).collect();
        let mut bytes = Vec::new();
        encode(&rows, &mut bytes);
        assert_eq!(decode(&bytes).unwrap(), rows);
        // Cut anywhere inside, it is refused rather than misread.
        for cut in 1..bytes.len() {
            if let Some(partial) = decode(&bytes[..cut]) {
                assert!(partial.len() < rows.len() && rows.starts_with(&partial), "cut at {cut}");
            }
        }
        assert_eq!(decode(b"[{\"DeleteBindings\":{\"aor\":\"x\"}}]"), None);
    }
}
