//! Media: the RTP/RTCP relay (endpoints and their links), SDP rewriting
//! and prompt playback.

pub mod control;
pub mod g711;
mod mixer;
pub mod playback;
mod player;
pub mod relay;
mod relay_io;
pub mod sdp;

pub use control::{DirectionStats, EndpointId, MediaControl};
pub use relay::{Relay, RelayPool};
