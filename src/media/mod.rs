//! Media: the RTP/RTCP relay, SDP rewriting and prompt playback.

pub mod g711;
pub mod playback;
pub mod relay;
mod relay_io;
pub mod sdp;

pub use relay::{MediaSession, MediaStats, RelayPool, Side};
