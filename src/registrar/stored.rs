//! How registrations are kept in the store: one row per address-of-record
//! in the location table, its bindings as a JSON list.

use super::Binding;
use crate::store::{all_rows, Key, StoreBackend, StoreError, StoreOp, Table};

/// Replaces every binding of `aor`.
pub fn put(aor: &str, bindings: &[Binding]) -> StoreOp {
    // Plain structs with string keys: serialization cannot fail.
    StoreOp::put_json(Table::Location, Key::text(aor), bindings).expect("bindings serialize")
}

pub fn delete(aor: &str) -> StoreOp {
    StoreOp::delete(Table::Location, Key::text(aor))
}

/// Every stored registration, by address-of-record (unreadable rows are
/// skipped with a warning).
pub fn load(backend: &dyn StoreBackend) -> Result<Vec<(String, Vec<Binding>)>, StoreError> {
    let mut out = Vec::new();
    for (key, value) in all_rows(backend, Table::Location)? {
        let Key::Text(aor) = key else { continue };
        match value.json::<Vec<Binding>>() {
            Some(b) => out.push((aor, b)),
            None => tracing::warn!(aor = %aor, "skipping unreadable stored binding"),
        }
    }
    Ok(out)
}
