//! Authentication of requests: digest challenges and verification
//! ([`Authenticator`]) and the per-source failure guard that throttles and
//! bans brute-force attempts ([`FailureGuard`]). Both are sans-IO.

mod authenticator;
mod failure_guard;
pub mod tokens;

pub use authenticator::{AuthVerdict, Authenticator};
pub use failure_guard::{FailureGuard, GuardPolicy, GuardVerdict};
