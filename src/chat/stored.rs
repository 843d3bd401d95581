//! How the chat is kept in the store: messages by id (JSON), the offline
//! queue (`aor\nid` → id, the id zero-padded so a user's queue sorts in
//! order), read marks (`aor\nconversation` → last read id) and muted users.

use super::ChatMessage;
use crate::store::{Key, Scan, StoreBackend, StoreError, StoreOp, Table};

/// Chat state needed at start-up.
#[derive(Debug, Default)]
pub struct ChatState {
    pub last_id: u64,
    /// (recipient aor, message id), each user's oldest first.
    pub pending: Vec<(String, u64)>,
    pub muted: Vec<String>,
}

fn pending_key(aor: &str, id: u64) -> Key {
    Key::Text(format!("{aor}\n{id:020}"))
}

pub fn message(m: &ChatMessage) -> StoreOp {
    // Plain strings and numbers: serialization cannot fail.
    StoreOp::put_json(Table::Chat, Key::Id(m.id), m).expect("chat messages serialize")
}

/// Message `id` waits for a device of `aor`.
pub fn pending(aor: &str, id: u64) -> StoreOp {
    StoreOp::put_number(Table::Pending, pending_key(aor, id), id)
}

/// Message `id` reached a device of `aor`.
pub fn delivered(aor: &str, id: u64) -> StoreOp {
    StoreOp::delete(Table::Pending, pending_key(aor, id))
}

pub fn read_mark(aor: &str, conversation: &str, id: u64) -> StoreOp {
    StoreOp::put_number(Table::Read, Key::Text(format!("{aor}\n{conversation}")), id)
}

pub fn muted(aor: &str, muted: bool) -> StoreOp {
    let key = Key::text(aor);
    if muted {
        StoreOp::put_number(Table::Muted, key, 1)
    } else {
        StoreOp::delete(Table::Muted, key)
    }
}

fn text(k: &Key) -> &str {
    match k {
        Key::Text(t) => t,
        Key::Id(_) => "",
    }
}

/// Message `id`, if the store has it.
pub fn load(backend: &dyn StoreBackend, id: u64) -> Result<Option<ChatMessage>, StoreError> {
    Ok(backend.get(Table::Chat, &Key::Id(id))?.and_then(|v| v.json()))
}

pub fn state(backend: &dyn StoreBackend) -> Result<ChatState, StoreError> {
    let mut state = ChatState::default();
    backend.scan(Table::Chat, Scan::Backward, &mut |k, _| {
        if let Key::Id(id) = k {
            state.last_id = *id;
        }
        false
    })?;
    backend.scan(Table::Pending, Scan::Forward, &mut |k, v| {
        let aor = text(k).split('\n').next().unwrap_or("").to_string();
        state.pending.extend(v.number().map(|id| (aor, id)));
        true
    })?;
    backend.scan(Table::Muted, Scan::Forward, &mut |k, _| {
        state.muted.push(text(k).to_string());
        true
    })?;
    Ok(state)
}

/// Messages of `conversation` (store-wide id), newest `limit` before
/// `before` (exclusive), oldest first.
pub fn history(
    backend: &dyn StoreBackend,
    conversation: &str,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<ChatMessage>, StoreError> {
    let mut out = Vec::new();
    let scan = before.map_or(Scan::Backward, |b| Scan::Below(Key::Id(b)));
    backend.scan(Table::Chat, scan, &mut |_, v| {
        if let Some(m) = v.json::<ChatMessage>() {
            if m.conversation() == conversation {
                out.push(m);
            }
        }
        out.len() < limit
    })?;
    out.reverse();
    Ok(out)
}

/// All messages of an account, oldest first (for unread counts).
pub fn messages(backend: &dyn StoreBackend, account: &str) -> Result<Vec<ChatMessage>, StoreError> {
    let mut out = Vec::new();
    backend.scan(Table::Chat, Scan::Forward, &mut |_, v| {
        if let Some(m) = v.json::<ChatMessage>() {
            if m.account == account {
                out.push(m);
            }
        }
        true
    })?;
    Ok(out)
}

/// Read marks of `aor`: conversation → last read id.
pub fn read_marks(backend: &dyn StoreBackend, aor: &str) -> Result<Vec<(String, u64)>, StoreError> {
    let prefix = format!("{aor}\n");
    let mut out = Vec::new();
    backend.scan(Table::Read, Scan::From(Key::text(prefix.as_str())), &mut |k, v| {
        let Some(conv) = text(k).strip_prefix(&prefix) else {
            return false;
        };
        out.extend(v.number().map(|id| (conv.to_string(), id)));
        true
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbStore;

    fn msg(id: u64, to: &str) -> ChatMessage {
        ChatMessage {
            id,
            ts_ms: id,
            account: "a".into(),
            from: "1001".into(),
            to: to.into(),
            group: false,
            content_type: "text/plain".into(),
            body: format!("m{id}"),
        }
    }

    #[test]
    fn the_chat_reads_back_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(dir.path(), 1 << 20).unwrap();
        let ops: Vec<StoreOp> = (1..=4)
            .map(|i| message(&msg(i, if i % 2 == 0 { "1002" } else { "1003" })))
            .chain([
                pending("1002@a", 2),
                pending("1002@a", 4),
                delivered("1002@a", 2),
                read_mark("1002@a", "a/p:1001:1002", 2),
                read_mark("1003@a", "x", 9),
                muted("1003@a", true),
                muted("1004@a", true),
                muted("1004@a", false),
            ])
            .collect();
        s.commit(&ops).unwrap();
        let st = state(&s).unwrap();
        assert_eq!(st.last_id, 4);
        assert_eq!(st.pending, vec![("1002@a".to_string(), 4)]);
        assert_eq!(load(&s, 4).unwrap(), Some(msg(4, "1002")));
        assert_eq!(load(&s, 99).unwrap(), None);
        assert_eq!(st.muted, ["1003@a"]);
        let conv = msg(2, "1002").conversation();
        let ids = |v: Vec<ChatMessage>| v.iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(history(&s, &conv, None, 10).unwrap()), [2, 4]);
        assert_eq!(ids(history(&s, &conv, Some(4), 10).unwrap()), [2]);
        assert_eq!(ids(history(&s, &conv, None, 1).unwrap()), [4]);
        assert_eq!(ids(messages(&s, "a").unwrap()), [1, 2, 3, 4]);
        assert_eq!(read_marks(&s, "1002@a").unwrap(), [("a/p:1001:1002".to_string(), 2)]);
    }
}
