//! The call centre's automatic call distribution, sans-IO: agent states
//! ([`agents`]) and queues ([`queues`]), which offer waiting callers to
//! ready agents.

pub mod agents;
pub mod queues;

pub use agents::{AgentState, Agents};
pub use queues::{AcdOutput, OfferOutcome, QueueView, Queues, Refusal};
