//! Media: the RTP/RTCP relay, SDP rewriting and prompt playback.

pub mod g711;
pub mod playback;
mod recv_batch;
pub mod relay;
pub mod sdp;

pub use relay::{MediaSession, MediaStats, RelayPool, Side};
