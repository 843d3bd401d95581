//! What the call engine asks of the media side, by endpoint: open one for a
//! leg, say where its party receives, link endpoints (the bridge's media),
//! play a prompt, close. The relay implements it with sockets; the call
//! engine's tests with a recording fake, so the engine stays sans-IO.

use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// One leg's media endpoint (the call engine's leg id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct EndpointId(pub u64);

/// Packet counters of one endpoint: what its party sent into the relay.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq, Default, utoipa::ToSchema)]
pub struct DirectionStats {
    pub packets: u64,
    pub bytes: u64,
    pub seq_gaps: u64,
    pub forwarded: u64,
    /// Packets dropped before latching: not from the party's host.
    #[serde(default)]
    pub refused: u64,
}

/// Commands to the media side. Calls are synchronous: the engine needs an
/// endpoint's address for the SDP it is building in the same step.
pub trait MediaControl: Send {
    /// Opens an endpoint facing a party whose signalling comes from
    /// `party_ip`; returns the address the party should send RTP to.
    fn open(&mut self, id: EndpointId, party_ip: IpAddr, now: Instant) -> Result<SocketAddr, String>;
    /// Where the party receives, from its SDP; re-opens the latch.
    fn set_remote(&mut self, id: EndpointId, rtp: Option<SocketAddr>);
    /// From now on, packets from `from`'s party go to `to`'s party (one
    /// way; replaces `from`'s previous link).
    fn link(&mut self, from: EndpointId, to: EndpointId);
    /// Packets from `from`'s party are no longer forwarded.
    fn unlink(&mut self, from: EndpointId);
    /// Plays an 8 kHz mono WAV to the party as PCMU (0) or PCMA (8),
    /// instead of what it heard; once (the driver hears when it has been
    /// sent) or `looped` until stopped, linked or closed.
    fn play(&mut self, id: EndpointId, file: &str, payload_type: u8, looped: bool) -> Result<(), String>;
    /// Stops the sound the party hears, if any.
    fn stop_sound(&mut self, id: EndpointId);
    /// Mixes bridge `group`: each member (endpoint, the members it hears,
    /// its payload type PCMU 0 / PCMA 8) hears the sum of those it hears,
    /// every 20 ms, instead of links. Replaces the group's previous mix.
    fn mix(&mut self, group: u64, members: &[(EndpointId, Vec<EndpointId>, u8)]);
    /// Ends bridge `group`'s mix, if any.
    fn unmix(&mut self, group: u64);
    /// Endpoints hearing a sound now.
    fn sounds_playing(&self) -> usize;
    /// Closes the endpoint; its ports return to the pool.
    fn close(&mut self, id: EndpointId, now: Instant);
    fn stats(&self, id: EndpointId) -> DirectionStats;
    /// Time since the party last sent RTP (or since the endpoint opened).
    fn idle_for(&self, id: EndpointId, now: Instant) -> Duration;
    /// RTP and RTCP ports held by open endpoints.
    fn ports_in_use(&self) -> usize;
    /// Periodic upkeep (closing ports unused since the load went down).
    fn housekeeping(&mut self, now: Instant);
}
