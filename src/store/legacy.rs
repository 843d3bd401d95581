//! Journal frames written before the binary row form held the JSON list of
//! the commit's ops, as an enum of domain operations. They are still read
//! at start-up (a daemon upgraded right after a crash), turned into rows
//! here from the JSON alone: the key formats below are frozen copies of
//! those the domain modules wrote then, and must not follow later changes.

use super::rows::{Key, StoreOp, Table, Value};
use serde_json::Value as Json;

fn text(v: &Json, field: &str) -> Option<String> {
    v.get(field)?.as_str().map(str::to_string)
}

fn number(v: &Json, field: &str) -> Option<u64> {
    v.get(field)?.as_u64()
}

fn bytes(v: &Json) -> Option<Value> {
    serde_json::to_vec(v).ok().map(Value::Bytes)
}

/// The rows of one old JSON frame, or None if it is not one.
pub fn rows_of_json(payload: &[u8]) -> Option<Vec<StoreOp>> {
    let ops: Vec<Json> = serde_json::from_slice(payload).ok()?;
    ops.iter().map(row_of).collect()
}

fn row_of(op: &Json) -> Option<StoreOp> {
    let (name, v) = op.as_object()?.iter().next()?;
    let pending_key = |v: &Json| Some(Key::Text(format!("{}\n{:020}", text(v, "aor")?, number(v, "id")?)));
    let (table, key, value) = match name.as_str() {
        "PutBindings" => (
            Table::Location,
            Key::Text(text(v, "aor")?),
            Some(bytes(v.get("bindings")?)?),
        ),
        "DeleteBindings" => (Table::Location, Key::Text(text(v, "aor")?), None),
        "PutCallRecord" => (
            Table::Cdr,
            Key::Text(format!("{:015}-{}", number(v, "end_ms")?, text(v, "call_id")?)),
            Some(bytes(v)?),
        ),
        "PutChatMessage" => (Table::Chat, Key::Id(number(v, "id")?), Some(bytes(v)?)),
        "PutPending" => (Table::Pending, pending_key(v)?, Some(Value::Number(number(v, "id")?))),
        "DeletePending" => (Table::Pending, pending_key(v)?, None),
        "PutReadMark" => (
            Table::Read,
            Key::Text(format!("{}\n{}", text(v, "aor")?, text(v, "conversation")?)),
            Some(Value::Number(number(v, "id")?)),
        ),
        "PutMuted" => (
            Table::Muted,
            Key::Text(text(v, "aor")?),
            v.get("muted")?.as_bool()?.then_some(Value::Number(1)),
        ),
        _ => return None,
    };
    Some(StoreOp { table, key, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_old_op_becomes_its_row() {
        let json = br#"[
            {"PutBindings":{"aor":"1001@a","bindings":[{"contact":"sip:1@h"}]}},
            {"DeleteBindings":{"aor":"1002@a"}},
            {"PutCallRecord":{"call_id":"c1","end_ms":5}},
            {"PutChatMessage":{"id":3,"body":"hi"}},
            {"PutPending":{"aor":"1001@a","id":3}},
            {"DeletePending":{"aor":"1001@a","id":3}},
            {"PutReadMark":{"aor":"1001@a","conversation":"a/p:1001:1002","id":3}},
            {"PutMuted":{"aor":"1003@a","muted":false}}
        ]"#;
        let rows = rows_of_json(json).unwrap();
        let keys: Vec<(Table, Key, bool)> = rows.into_iter().map(|r| (r.table, r.key, r.value.is_some())).collect();
        assert_eq!(
            keys,
            vec![
                (Table::Location, Key::text("1001@a"), true),
                (Table::Location, Key::text("1002@a"), false),
                (Table::Cdr, Key::text("000000000000005-c1"), true),
                (Table::Chat, Key::Id(3), true),
                (Table::Pending, Key::text("1001@a\n00000000000000000003"), true),
                (Table::Pending, Key::text("1001@a\n00000000000000000003"), false),
                (Table::Read, Key::text("1001@a\na/p:1001:1002"), true),
                (Table::Muted, Key::text("1003@a"), false),
            ]
        );
        assert_eq!(rows_of_json(b"[{\"Unknown\":{}}]"), None);
    }
}
