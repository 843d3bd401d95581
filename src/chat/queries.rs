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

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
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
