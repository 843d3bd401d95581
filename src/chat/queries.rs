//! Read-side of the chat for admins and integrators (`ctl chat …`, and
//! later the HTTP API): history of one conversation as one user sees it,
//! unread counts, read marks. Pure functions over stored messages.

use super::{may_use_group, private_conversation, ChatMessage};
use crate::config::{Account, User};
use serde::Serialize;

/// The store-wide conversation id `user` means by `peer` (an extension or a
/// group number), if `user` may read it. A private conversation is only
/// ever readable by its two parties.
pub fn conversation_for(account: &Account, user: &User, peer: &str) -> Option<String> {
    if let Some(g) = account.group(peer) {
        return may_use_group(g, user).then(|| format!("{}/g:{}", account.domain, g.number));
    }
    account
        .user(peer)
        .map(|_| private_conversation(&account.domain, &user.extension, peer))
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Unread {
    /// Extension or group number.
    pub conversation: String,
    pub unread: u64,
    pub last_id: u64,
}

/// Unread messages per conversation for `user`: messages from others after
/// the user's read mark.
pub fn unread(account: &Account, user: &User, messages: &[ChatMessage], marks: &[(String, u64)]) -> Vec<Unread> {
    let mut out: Vec<Unread> = Vec::new();
    for m in messages {
        let peer = m.peer_for(&user.extension);
        let Some(conv) = conversation_for(account, user, &peer) else {
            continue;
        };
        if conv != m.conversation() {
            continue; // a private conversation between two other users
        }
        let mark = marks.iter().find(|(c, _)| *c == conv).map_or(0, |(_, id)| *id);
        let entry = match out.iter_mut().position(|u| u.conversation == peer) {
            Some(i) => &mut out[i],
            None => {
                out.push(Unread {
                    conversation: peer.clone(),
                    unread: 0,
                    last_id: 0,
                });
                out.last_mut().expect("pushed")
            }
        };
        entry.last_id = entry.last_id.max(m.id);
        if m.from != user.extension && m.id > mark {
            entry.unread += 1;
        }
    }
    out.sort_by(|a, b| a.conversation.cmp(&b.conversation));
    out
}

/// A read-side request from the control socket (`ctl chat …`). USER is an
/// extension of the default account or `ext@domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatQuery {
    /// `chat history USER PEER [LIMIT [BEFORE_ID]]`
    History {
        user: String,
        peer: String,
        limit: usize,
        before: Option<u64>,
    },
    /// `chat unread USER`
    Unread { user: String },
    /// `chat read USER PEER`: marks the conversation read up to its last message.
    Read { user: String, peer: String },
    /// `chat mute USER on|off`
    Mute { user: String, on: bool },
}

pub const USAGE: &str =
    "usage: chat history USER PEER [LIMIT [BEFORE]] | chat unread USER | chat read USER PEER | chat mute USER on|off";

impl ChatQuery {
    /// Parses the words after `chat`.
    pub fn parse(args: &[&str]) -> Result<ChatQuery, String> {
        let user = |i: usize| args.get(i).map(|s| s.to_string()).ok_or(USAGE.to_string());
        Ok(match args.first().copied() {
            Some("history") => ChatQuery::History {
                user: user(1)?,
                peer: user(2)?,
                limit: args.get(3).and_then(|l| l.parse().ok()).unwrap_or(50),
                before: args.get(4).and_then(|b| b.parse().ok()),
            },
            Some("unread") if args.len() == 2 => ChatQuery::Unread { user: user(1)? },
            Some("read") => ChatQuery::Read {
                user: user(1)?,
                peer: user(2)?,
            },
            Some("mute") => ChatQuery::Mute {
                user: user(1)?,
                on: user(2)? == "on",
            },
            _ => return Err(USAGE.into()),
        })
    }

    fn user(&self) -> &str {
        match self {
            ChatQuery::History { user, .. }
            | ChatQuery::Unread { user }
            | ChatQuery::Read { user, .. }
            | ChatQuery::Mute { user, .. } => user,
        }
    }

    /// The account and user the query is about.
    pub fn resolve<'c>(&self, accounts: &'c [Account]) -> Result<(&'c Account, &'c User), String> {
        crate::config::user_named(accounts, self.user())
    }
}

/// Answers a query that reads the store (all but `Mute`, which changes
/// the chat engine): the reply, and for `Read` the read mark to store.
pub fn answer(
    query: &ChatQuery,
    accounts: &[Account],
    backend: &dyn crate::store::StoreBackend,
) -> Result<(serde_json::Value, Option<crate::store::StoreOp>), String> {
    let (account, user) = query.resolve(accounts)?;
    let aor = format!("{}@{}", user.extension, account.domain);
    let conversation = |peer: &str| {
        conversation_for(account, user, peer)
            .ok_or_else(|| format!("{} may not read the conversation with {peer}", user.extension))
    };
    let store_err = |e: crate::store::StoreError| e.to_string();
    match query {
        ChatQuery::History {
            peer, limit, before, ..
        } => {
            let list = super::stored::history(backend, &conversation(peer)?, *before, *limit).map_err(store_err)?;
            Ok((serde_json::to_value(list).map_err(|e| e.to_string())?, None))
        }
        ChatQuery::Read { peer, .. } => {
            let conv = conversation(peer)?;
            let last = super::stored::history(backend, &conv, None, 1).map_err(store_err)?;
            let id = last.last().map_or(0, |m| m.id);
            let mark = super::stored::read_mark(&aor, &conv, id);
            Ok((serde_json::json!({ "read_up_to": id }), Some(mark)))
        }
        ChatQuery::Unread { .. } => {
            let msgs = super::stored::messages(backend, &account.domain).map_err(store_err)?;
            let marks = super::stored::read_marks(backend, &aor).map_err(store_err)?;
            let list = unread(account, user, &msgs, &marks);
            Ok((serde_json::to_value(list).map_err(|e| e.to_string())?, None))
        }
        ChatQuery::Mute { .. } => Err("mute changes the chat engine, not the store alone".into()),
    }
}
