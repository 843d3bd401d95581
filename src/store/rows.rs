//! Store ops: row changes whose values are already encoded as redb keeps
//! them, and their compact binary form in journal frames.
//!
//! The journal used to hold the ops as JSON: the fold thread parsed every
//! binding back into structs only to serialize it again for redb, which
//! was half the fold's work (a tenth of a registration's CPU, bench/). A
//! row is encoded once, when committed, and folded as bytes.
//!
//! Binary form, after a version byte [`ROWS_V1`]: per row, the table (one
//! byte), the key (tag 0 + u32 LE length + UTF-8, or tag 1 + u64 LE), the
//! value (tag 0 none = delete, 1 + u32 LE length + bytes, 2 + u64 LE).

use super::StoreError;

/// First byte of a binary frame; a JSON frame (older journals) starts with `[`.
pub const ROWS_V1: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Location,
    Cdr,
    Chat,
    Pending,
    Read,
    Muted,
    /// Conversations in progress (so a crash leaves a trace).
    Live,
    /// Agents' own choice of state (`ext@domain` → JSON).
    Agent,
    /// API tokens (id → JSON with the token's SHA-256).
    Token,
    /// Contact cards (zero-padded id → JSON).
    Contact,
    /// Tags and notes users add to call records (record key → JSON).
    CdrNote,
}

// Their index is the table byte of the binary form: append, never reorder.
const TABLES: [Table; 11] = [
    Table::Location,
    Table::Cdr,
    Table::Chat,
    Table::Pending,
    Table::Read,
    Table::Muted,
    Table::Live,
    Table::Agent,
    Table::Token,
    Table::Contact,
    Table::CdrNote,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Text(String),
    Id(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bytes(Vec<u8>),
    Number(u64),
}

/// One change to persistent state: a row set (`value` Some) or deleted
/// (None). Domain modules build their rows (and encode their values)
/// themselves; the store knows tables, keys and bytes, not what they mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOp {
    pub table: Table,
    pub key: Key,
    pub value: Option<Value>,
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> Result<Option<Value>, StoreError> {
    serde_json::to_vec(v)
        .map(|b| Some(Value::Bytes(b)))
        .map_err(|e| StoreError::Backend(e.to_string()))
}

impl StoreOp {
    /// Sets `key` to `value` encoded as JSON.
    pub fn put_json<T: serde::Serialize + ?Sized>(table: Table, key: Key, value: &T) -> Result<StoreOp, StoreError> {
        Ok(StoreOp {
            table,
            key,
            value: json(value)?,
        })
    }

    pub fn put_number(table: Table, key: Key, n: u64) -> StoreOp {
        StoreOp {
            table,
            key,
            value: Some(Value::Number(n)),
        }
    }

    pub fn delete(table: Table, key: Key) -> StoreOp {
        StoreOp {
            table,
            key,
            value: None,
        }
    }
}

impl Key {
    pub fn text(s: impl Into<String>) -> Key {
        Key::Text(s.into())
    }
}

impl Value {
    /// A JSON value read back (None if it is a number or not `T`).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        match self {
            Value::Bytes(b) => serde_json::from_slice(b).ok(),
            Value::Number(_) => None,
        }
    }

    pub fn number(&self) -> Option<u64> {
        match self {
            Value::Number(n) => Some(*n),
            Value::Bytes(_) => None,
        }
    }
}

/// Appends the binary form of `rows` (version byte first) to `out`.
pub fn encode(rows: &[StoreOp], out: &mut Vec<u8>) {
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
pub fn decode(bytes: &[u8]) -> Option<Vec<StoreOp>> {
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
        rows.push(StoreOp { table, key, value });
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
        let rows = [
            StoreOp::put_json(Table::Location, Key::text("1001@a"), &["sip:1@h"]).unwrap(),
            StoreOp::delete(Table::Location, Key::text("1002@a")),
            StoreOp::put_json(Table::Chat, Key::Id(7), &"hello").unwrap(),
            StoreOp::put_number(Table::Pending, Key::text("1001@a\n7"), 7),
            StoreOp::delete(Table::Pending, Key::text("1001@a\n7")),
            StoreOp::put_number(Table::Read, Key::text("1001@a\n1002@a"), 9),
            StoreOp::put_number(Table::Muted, Key::text("1003@a"), 1),
            StoreOp::delete(Table::Muted, Key::text("1003@a")),
        ];
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
