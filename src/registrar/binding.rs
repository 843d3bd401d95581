//! A registration binding: one contact of one address-of-record
//! (RFC 3261 §10.3), as kept in memory and in the store.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The Contact URI as the device sent it.
    pub contact: String,
    /// Unix time (seconds) when the binding lapses.
    pub expires_at: u64,
    pub call_id: String,
    pub cseq: u32,
    /// Contact `q` preference, as written.
    pub q: Option<String>,
    /// Where the REGISTER came from (`IP:PORT`); requests to the device go
    /// there, which reaches phones behind NAT (RFC 3581 symmetric routing).
    pub source: String,
    /// "UDP" or "TCP".
    pub transport: String,
    pub user_agent: Option<String>,
    pub registered_at: u64,
}

impl Binding {
    pub fn remaining(&self, now_unix: u64) -> u64 {
        self.expires_at.saturating_sub(now_unix)
    }
}
