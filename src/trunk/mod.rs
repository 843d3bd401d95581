//! Trunks to SIP providers, sans-IO: registering with them
//! ([`registration`]).

pub mod registration;
#[cfg(test)]
mod tests;

pub use registration::{Outgoing, RegStatus, Registrations, StatusChange, TrunkOutput};
