//! switchboard: a programmable SIP PBX for call centres. This file only
//! wires the modules together; see DESIGN.md for the architecture.

pub mod acd;
pub mod api;
pub mod auth;
pub mod call;
pub mod cdr;
pub mod chat;
pub mod clock;
pub mod config;
pub mod contacts;
pub mod control;
pub mod ctl;
pub mod dialplan;
pub mod events;
pub mod media;
pub mod presence;
pub mod recv_batch;
pub mod registrar;
pub mod server;
pub mod sip;
pub mod store;
pub mod trunk;

#[cfg(test)]
mod layering_tests;

/// Seconds since the Unix epoch (wall clock, for data that outlives the process).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
