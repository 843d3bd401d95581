//! SIP: our own zero-copy message layer (DESIGN.md says why not rsip),
//! typed header views, digest authentication, the sans-IO transaction
//! layer and the UDP/TCP transports.

pub mod addr;
pub mod dialog;
pub mod digest;
pub mod error;
pub mod header;
pub mod message;
pub mod method;
pub mod response;
pub mod text;
pub mod tls;
pub mod transaction;
pub mod transport;
pub mod uri;
pub mod validate;
pub mod via_rewrite;

#[cfg(test)]
mod message_tests;

pub use error::SipError;
pub use header::HeaderName;
pub use message::{SipMessage, StartLine};
pub use method::Method;
