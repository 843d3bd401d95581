//! The call centre's automatic call distribution, sans-IO. For now: agent
//! states ([`agents`]), which queues and ring groups will offer calls by.

pub mod agents;

pub use agents::{AgentState, Agents};
