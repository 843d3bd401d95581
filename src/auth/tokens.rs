//! API tokens: random secrets shown once at creation, kept as their
//! SHA-256 only (in the store, and in memory for the API to check), each
//! for one user, with a label, revocable.

use crate::store::{Key, StoreOp, Table, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A token as kept (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Short public id, for `ctl token revoke`.
    pub id: String,
    /// `ext@domain`.
    pub user: String,
    pub label: String,
    pub created_ms: u64,
    /// SHA-256 of the secret, hex.
    pub hash: String,
}

/// The tokens in force, by hash: the core writes, the API reads.
pub type Tokens = Arc<RwLock<HashMap<String, TokenInfo>>>;

pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new token for `user`: the secret (to show once) and what is kept.
pub fn new_token(user: &str, label: &str, now_ms: u64) -> (String, TokenInfo) {
    let secret = format!("sbt_{}", hex::encode(rand::random::<[u8; 24]>()));
    let hash = hash(&secret);
    let info = TokenInfo {
        id: hash[..12].to_string(),
        user: user.to_string(),
        label: label.to_string(),
        created_ms: now_ms,
        hash,
    };
    (secret, info)
}

pub fn stored(info: &TokenInfo) -> StoreOp {
    StoreOp::put_json(Table::Token, Key::text(info.id.clone()), info).expect("tokens serialize")
}

pub fn revoked(id: &str) -> StoreOp {
    StoreOp::delete(Table::Token, Key::text(id))
}

/// The tokens from the store's rows, by hash.
pub fn from_rows(rows: Vec<(Key, Value)>) -> HashMap<String, TokenInfo> {
    rows.into_iter()
        .filter_map(|(_, v)| v.json::<TokenInfo>())
        .map(|t| (t.hash.clone(), t))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hash_is_kept_and_it_finds_the_token() {
        let (secret, info) = new_token("1004@pbx.test", "crm", 5);
        assert!(secret.starts_with("sbt_") && secret.len() > 40);
        assert_eq!(info.hash, hash(&secret));
        let op = stored(&info);
        let kept = from_rows(vec![(op.key.clone(), op.value.clone().unwrap())]);
        assert_eq!(kept.get(&hash(&secret)).map(|t| t.user.as_str()), Some("1004@pbx.test"));
        let json = String::from_utf8(match op.value.unwrap() {
            Value::Bytes(b) => b,
            Value::Number(_) => unreachable!(),
        })
        .unwrap();
        assert!(!json.contains(&secret), "the secret is not stored");
    }
}
