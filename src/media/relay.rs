//! The RTP/RTCP relay. Every leg of a call gets one endpoint: a port pair
//! from the configured range (RTP, RTCP = RTP + 1) facing that leg's party.
//! Endpoints are joined by links: what arrives on an endpoint goes out of
//! the endpoint it is linked to, to that endpoint's party, relayed by the
//! I/O thread of `relay_io`. A bridge of two talking legs is two links,
//! one each way; a parked leg has none (or hears a prompt); moving a leg
//! re-points links, and the parties see no change of address.
//!
//! Symmetric RTP: the first packet from a party fixes where we send to it
//! (phones behind NAT), and later packets from other sources are dropped
//! until signalling re-opens the latch. The per-packet path reads every
//! waiting datagram with one recvmmsg into a per-thread buffer
//! (`recv_batch`), takes no lock and never waits on signalling.

use super::control::{DirectionStats, EndpointId, MediaControl};
use super::player::{Player, SoundCache};
use super::relay_io::{RelayIo, Watched};
use crate::recv_batch;
use arc_swap::ArcSwapOption;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where to send to one party, and whether it was learned from traffic.
#[derive(Default)]
struct Remote {
    rtp: ArcSwapOption<SocketAddr>,
    rtcp: ArcSwapOption<SocketAddr>,
    rtp_latched: AtomicBool,
    rtcp_latched: AtomicBool,
}

/// Packet counters of what a party sent into the relay.
#[derive(Default)]
struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
    seq_gaps: AtomicU64,
    last_seq: AtomicU64,
    forwarded: AtomicU64,
    /// Packets dropped before latching: not from the party's host.
    refused: AtomicU64,
}

/// The state of one endpoint the I/O thread reads and writes.
pub(super) struct EndpointShared {
    remote: Remote,
    /// Where the party's signalling comes from: with `strict`, only
    /// packets from this IP (or the one its SDP gave) can latch.
    party_ip: IpAddr,
    strict: bool,
    counters: Counters,
    started: Instant,
    /// Milliseconds after `started` of the last RTP packet from the party.
    last_rtp_ms: AtomicU64,
    /// Where packets from this party go; none while parked.
    link: ArcSwapOption<Link>,
    /// While its bridge is mixed: where its audio is decoded to.
    mix: ArcSwapOption<super::mixer::MixSlot>,
    /// Where the digits the party sends (RFC 4733) are reported.
    dtmf: ArcSwapOption<DtmfTap>,
}

/// Called with an endpoint and a digit its party sent (`0`-`9`, `*`, `#`,
/// `A`-`D`), once per key press.
pub type DtmfHeard = Arc<dyn Fn(EndpointId, char) + Send + Sync>;

/// Reports one endpoint's telephone-events (RFC 4733 §2.3): a key press
/// is reported at the first packet of its event (every packet of one
/// event, the three end packets included, carries the event's RTP
/// timestamp).
pub(super) struct DtmfTap {
    id: EndpointId,
    heard: DtmfHeard,
    /// RTP timestamp of the last event reported (u64::MAX: none yet).
    last: AtomicU64,
}

impl DtmfTap {
    fn inspect(&self, packet: &[u8]) {
        // Dynamic payload types only; an event is 4 bytes.
        if packet.len() != 16 || packet[0] >> 6 != 2 || packet[0] & 0x1F != 0 || (packet[1] & 0x7F) < 96 {
            return;
        }
        let event = packet[12];
        if event > 15 {
            return;
        }
        let ts = u64::from(u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]));
        if self.last.swap(ts, Ordering::Relaxed) == ts {
            return;
        }
        let digit = match event {
            0..=9 => char::from(b'0' + event),
            10 => '*',
            11 => '#',
            e => char::from(b'A' + e - 12),
        };
        (self.heard)(self.id, digit);
    }
}

/// The far end of a link: the endpoint whose sockets and party receive.
pub(super) struct Link {
    rtp: Arc<UdpSocket>,
    rtcp: Arc<UdpSocket>,
    to: Arc<EndpointShared>,
}

/// One leg's port pair, watched by the I/O thread while open.
struct Endpoint {
    port: u16,
    rtp: Arc<UdpSocket>,
    rtcp: Arc<UdpSocket>,
    shared: Arc<EndpointShared>,
    io: Arc<RelayIo>,
    /// The sockets' entries in the I/O thread (RTP, RTCP).
    watched: [u64; 2],
}

impl EndpointShared {
    /// Where RTP to the party goes now (latched or from its SDP).
    pub(super) fn rtp_destination(&self) -> Option<SocketAddr> {
        self.remote.rtp.load().as_deref().copied()
    }
}

impl Endpoint {
    fn link_to_me(&self) -> Arc<Link> {
        Arc::new(Link {
            rtp: self.rtp.clone(),
            rtcp: self.rtcp.clone(),
            to: self.shared.clone(),
        })
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.io.remove(&self.watched);
        // Links form cycles (A → B → A) between bridged endpoints.
        self.shared.link.store(None);
    }
}

/// Relays one packet that came from the party of `from`.
pub(super) fn relay_packet(packet: &[u8], src: SocketAddr, from: &EndpointShared, rtcp: bool) {
    let me = &from.remote;
    let (latched, addr) = if rtcp {
        (&me.rtcp_latched, &me.rtcp)
    } else {
        (&me.rtp_latched, &me.rtp)
    };
    if latched.load(Ordering::Acquire) {
        if addr.load().as_deref() != Some(&src) {
            return; // not the party we latched onto
        }
    } else {
        // Strict source (rtpengine's term): whoever sends first does not
        // get the far end's audio unless it is the party's host.
        let from_party = src.ip() == from.party_ip || addr.load().as_deref().is_some_and(|a| a.ip() == src.ip());
        if from.strict && !from_party {
            from.counters.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        addr.store(Some(Arc::new(src)));
        latched.store(true, Ordering::Release);
    }
    if !rtcp {
        let c = &from.counters;
        c.packets.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(packet.len() as u64, Ordering::Relaxed);
        if packet.len() >= 12 {
            // RTP sequence number (RFC 3550 §5.1); count forward gaps.
            let seq = u64::from(u16::from_be_bytes([packet[2], packet[3]]));
            let prev = c.last_seq.swap(seq | 1 << 32, Ordering::Relaxed);
            if prev & (1 << 32) != 0 {
                let expected = ((prev & 0xffff) + 1) & 0xffff;
                if seq != expected && (seq.wrapping_sub(expected) & 0xffff) < 0x8000 {
                    c.seq_gaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let ms = from.started.elapsed().as_millis() as u64;
        from.last_rtp_ms.store(ms, Ordering::Relaxed);
        if let Some(slot) = from.mix.load().as_deref() {
            slot.put(packet);
        }
        if let Some(tap) = from.dtmf.load().as_deref() {
            tap.inspect(packet);
        }
    }
    let link = from.link.load();
    let Some(link) = link.as_deref() else { return };
    let (send, dest) = if rtcp {
        (&link.rtcp, link.to.remote.rtcp.load())
    } else {
        (&link.rtp, link.to.remote.rtp.load())
    };
    if let Some(d) = dest.as_deref() {
        if send.send_to(packet, *d).is_ok() && !rtcp {
            from.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A released port pair waits this long before another call may take it,
/// so a party still sending after its BYE does not reach (and latch) the
/// next call (SIPp, for one, plays its audio file to the end).
const SPARE_QUARANTINE: Duration = Duration::from_secs(2);
/// Most released pairs kept open for reuse; the oldest beyond are closed
/// (2,048 covers 500 calls/s within the quarantine).
const MAX_SPARE: usize = 2048;
/// Released pairs unused this long are closed (the load went down).
const SPARE_IDLE: Duration = Duration::from_secs(30);

type PortPair = (u16, Arc<UdpSocket>, Arc<UdpSocket>);

/// Hands out port pairs from a range and binds the sockets. Released pairs
/// are kept bound for the next calls: binding and closing four sockets a
/// call (socket, bind, epoll_ctl, close) was ~7 % of the daemon's CPU per
/// call in the call-setup bench. (The relay thread still adds and removes
/// them from its epoll set per call.)
pub struct RelayPool {
    ip: IpAddr,
    min: u16,
    max: u16,
    /// Ports held by endpoints or waiting in `spare`.
    bound: HashSet<u16>,
    /// Released pairs, oldest first, with when they were released.
    spare: VecDeque<(Instant, PortPair)>,
    /// Started with the first session.
    io: Option<Arc<RelayIo>>,
}

impl RelayPool {
    pub fn new(ip: IpAddr, min: u16, max: u16) -> RelayPool {
        let min = min + (min % 2);
        RelayPool {
            ip,
            min,
            max,
            bound: HashSet::new(),
            spare: VecDeque::new(),
            io: None,
        }
    }

    /// A released pair out of quarantine (or any, if `any`), emptied of
    /// what arrived since.
    fn reuse_pair(&mut self, now: Instant, any: bool) -> Option<PortPair> {
        let (at, _) = self.spare.front()?;
        if !any && now.saturating_duration_since(*at) < SPARE_QUARANTINE {
            return None;
        }
        // (A prompt still playing to the old party may hold a clone of the
        // RTP socket: it only sends, to that party, until it ends.)
        let (_, (port, rtp, rtcp)) = self.spare.pop_front()?;
        recv_batch::with_batch(|batch| {
            for sock in [&rtp, &rtcp] {
                while batch.recv(sock.as_raw_fd()).is_ok() {}
            }
        });
        Some((port, rtp, rtcp))
    }

    fn bind_pair(&mut self, now: Instant) -> std::io::Result<PortPair> {
        if let Some(pair) = self.reuse_pair(now, false) {
            return Ok(pair);
        }
        // A fresh pair starts at a random place in the range, so that the
        // next call's ports cannot be guessed from the last one's.
        let slots = usize::from((self.max - self.min).saturating_add(1) / 2).max(1);
        let start = rand::random::<usize>() % slots;
        for i in 0..slots {
            let port = self.min + 2 * ((start + i) % slots) as u16;
            if self.bound.contains(&port) {
                continue;
            }
            let rtp = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port));
            let rtcp = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port + 1));
            match (rtp, rtcp) {
                (Ok(rtp), Ok(rtcp)) => {
                    rtp.set_nonblocking(true)?;
                    rtcp.set_nonblocking(true)?;
                    self.bound.insert(port);
                    return Ok((port, Arc::new(rtp), Arc::new(rtcp)));
                }
                // Out of file descriptors: no other port would do better.
                (Err(e), _) | (_, Err(e)) if e.kind() != std::io::ErrorKind::AddrInUse => break,
                _ => {}
            }
        }
        // Every port is bound (or no socket can be opened): take a spare
        // pair even if still in quarantine.
        if let Some(pair) = self.reuse_pair(now, true) {
            return Ok(pair);
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "RTP port range exhausted",
        ))
    }

    fn open_endpoint(&mut self, party_ip: IpAddr, strict: bool, now: Instant) -> std::io::Result<Endpoint> {
        let io = match &self.io {
            Some(io) => io.clone(),
            None => self.io.insert(Arc::new(RelayIo::start()?)).clone(),
        };
        let (port, rtp, rtcp) = self.bind_pair(now)?;
        let shared = Arc::new(EndpointShared {
            remote: Remote::default(),
            party_ip,
            strict,
            counters: Counters::default(),
            started: now,
            last_rtp_ms: AtomicU64::new(0),
            link: ArcSwapOption::empty(),
            mix: ArcSwapOption::empty(),
            dtmf: ArcSwapOption::empty(),
        });
        let watched = io.add([
            Watched {
                recv: rtp.clone(),
                endpoint: shared.clone(),
                rtcp: false,
            },
            Watched {
                recv: rtcp.clone(),
                endpoint: shared.clone(),
                rtcp: true,
            },
        ]);
        Ok(Endpoint {
            port,
            rtp,
            rtcp,
            shared,
            io,
            watched,
        })
    }

    /// Takes an endpoint's ports back: relaying stops and its sockets wait
    /// in quarantine for the next calls.
    fn release(&mut self, endpoint: Endpoint, now: Instant) {
        let pair = (endpoint.port, endpoint.rtp.clone(), endpoint.rtcp.clone());
        drop(endpoint);
        self.spare.push_back((now, pair));
        self.close_spare(now);
    }

    /// Closes spare pairs beyond [`MAX_SPARE`] or unused for [`SPARE_IDLE`].
    pub fn close_spare(&mut self, now: Instant) {
        while let Some((at, (port, _, _))) = self.spare.front() {
            if self.spare.len() <= MAX_SPARE && now.saturating_duration_since(*at) < SPARE_IDLE {
                break;
            }
            self.bound.remove(port);
            self.spare.pop_front();
        }
    }
}

pub use super::player::PlaybackDone;

/// The relay as the call engine drives it: endpoints by leg, in a pool.
pub struct Relay {
    pool: RelayPool,
    /// Latch only to packets from the party's host (`media.strict_source`).
    strict_source: bool,
    endpoints: HashMap<EndpointId, Endpoint>,
    /// Links from → to, and who links to each endpoint, so a close undoes
    /// the links to it without a walk over every endpoint.
    links: HashMap<EndpointId, EndpointId>,
    linked_by: HashMap<EndpointId, Vec<EndpointId>>,
    player: Player,
    sounds: SoundCache,
    dtmf: Option<DtmfHeard>,
}

impl Relay {
    pub fn new(pool: RelayPool, strict_source: bool, playback_done: PlaybackDone) -> Relay {
        Relay {
            pool,
            strict_source,
            endpoints: HashMap::new(),
            links: HashMap::new(),
            linked_by: HashMap::new(),
            player: Player::new(playback_done),
            sounds: SoundCache::default(),
            dtmf: None,
        }
    }

    /// Reports the digits every party sends to `heard`.
    pub fn with_dtmf(mut self, heard: DtmfHeard) -> Relay {
        self.dtmf = Some(heard);
        self
    }
}

impl Relay {
    /// Drops the bookkeeping of `from`'s link.
    fn forget_link(&mut self, from: EndpointId) {
        let Some(to) = self.links.remove(&from) else { return };
        if let Some(list) = self.linked_by.get_mut(&to) {
            list.retain(|f| *f != from);
            if list.is_empty() {
                self.linked_by.remove(&to);
            }
        }
    }
}

impl MediaControl for Relay {
    fn open(&mut self, id: EndpointId, party_ip: IpAddr, now: Instant) -> Result<SocketAddr, String> {
        let ep = self
            .pool
            .open_endpoint(party_ip, self.strict_source, now)
            .map_err(|e| e.to_string())?;
        let addr = SocketAddr::new(self.pool.ip, ep.port);
        if let Some(heard) = &self.dtmf {
            ep.shared.dtmf.store(Some(Arc::new(DtmfTap {
                id,
                heard: heard.clone(),
                last: AtomicU64::new(u64::MAX),
            })));
        }
        if let Some(old) = self.endpoints.insert(id, ep) {
            self.pool.release(old, now);
        }
        Ok(addr)
    }

    fn set_remote(&mut self, id: EndpointId, rtp: Option<SocketAddr>) {
        let Some(ep) = self.endpoints.get(&id) else { return };
        let r = &ep.shared.remote;
        r.rtp.store(rtp.map(Arc::new));
        r.rtcp
            .store(rtp.map(|a| Arc::new(SocketAddr::new(a.ip(), a.port().wrapping_add(1)))));
        r.rtp_latched.store(false, Ordering::Release);
        r.rtcp_latched.store(false, Ordering::Release);
    }

    fn link(&mut self, from: EndpointId, to: EndpointId) {
        let (Some(f), Some(t)) = (self.endpoints.get(&from), self.endpoints.get(&to)) else {
            return;
        };
        f.shared.link.store(Some(t.link_to_me()));
        // A party hears either what it is linked to or a sound.
        self.player.stop(to);
        self.forget_link(from);
        self.links.insert(from, to);
        self.linked_by.entry(to).or_default().push(from);
    }

    fn unlink(&mut self, from: EndpointId) {
        if let Some(f) = self.endpoints.get(&from) {
            f.shared.link.store(None);
        }
        self.forget_link(from);
    }

    fn play(&mut self, id: EndpointId, file: &str, payload_type: u8, looped: bool) -> Result<(), String> {
        let ep = self.endpoints.get(&id).ok_or("no media endpoint")?;
        let sound = self.sounds.get(std::path::Path::new(file), payload_type)?;
        self.player.start(id, sound, looped, ep.rtp.clone(), ep.shared.clone());
        Ok(())
    }

    fn stop_sound(&mut self, id: EndpointId) {
        self.player.stop(id);
    }

    fn mix(&mut self, group: u64, members: &[(EndpointId, Vec<EndpointId>, u8)]) {
        let mut mix = Vec::new();
        for (id, hears, pt) in members {
            let Some(ep) = self.endpoints.get(id) else { continue };
            let slot = Arc::new(super::mixer::MixSlot::default());
            ep.shared.mix.store(Some(slot.clone()));
            self.player.stop(*id);
            let hears = hears
                .iter()
                .filter_map(|h| members.iter().position(|(m, _, _)| m == h))
                .collect();
            mix.push(super::mixer::MixMember::new(
                *id,
                slot,
                hears,
                ep.rtp.clone(),
                ep.shared.clone(),
                *pt,
            ));
        }
        self.player.set_mix(group, Some(super::mixer::Mix { members: mix }));
    }

    fn unmix(&mut self, group: u64) {
        if let Some(mix) = self.player.set_mix(group, None) {
            for m in mix.members {
                if let Some(ep) = self.endpoints.get(&m.id) {
                    ep.shared.mix.store(None);
                }
            }
        }
    }

    fn sounds_playing(&self) -> usize {
        self.player.playing()
    }

    fn close(&mut self, id: EndpointId, now: Instant) {
        self.player.stop(id);
        self.unlink(id);
        // Whoever was linked to this endpoint now sends nowhere.
        for from in self.linked_by.remove(&id).unwrap_or_default() {
            self.links.remove(&from);
            if let Some(f) = self.endpoints.get(&from) {
                f.shared.link.store(None);
            }
        }
        if let Some(ep) = self.endpoints.remove(&id) {
            self.pool.release(ep, now);
        }
    }

    fn stats(&self, id: EndpointId) -> DirectionStats {
        let Some(ep) = self.endpoints.get(&id) else {
            return DirectionStats::default();
        };
        let c = &ep.shared.counters;
        DirectionStats {
            packets: c.packets.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            seq_gaps: c.seq_gaps.load(Ordering::Relaxed),
            forwarded: c.forwarded.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }

    fn idle_for(&self, id: EndpointId, now: Instant) -> Duration {
        let Some(ep) = self.endpoints.get(&id) else {
            return Duration::ZERO;
        };
        let s = &ep.shared;
        let last = s.started + Duration::from_millis(s.last_rtp_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }

    fn ports_in_use(&self) -> usize {
        self.endpoints.len() * 2
    }

    fn housekeeping(&mut self, now: Instant) {
        self.pool.close_spare(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn relay(port_min: u16) -> Relay {
        Relay::new(RelayPool::new(LOCAL, port_min, port_min + 99), true, Arc::new(|_| {}))
    }

    fn rtp(seq: u8) -> [u8; 12] {
        [0x80, 0, 0, seq, 0, 0, 0, 0, 0, 0, 0, 1]
    }

    fn party() -> UdpSocket {
        party_at("127.0.0.1")
    }

    fn party_at(ip: &str) -> UdpSocket {
        let s = UdpSocket::bind((ip, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    #[test]
    fn released_ports_wait_in_quarantine_and_come_back_drained() {
        let mut r = relay(41000);
        let now = Instant::now();
        let (a, b, c) = (EndpointId(1), EndpointId(2), EndpointId(3));
        let first = r.open(a, LOCAL, now).unwrap();
        r.close(a, now);
        assert_eq!(r.ports_in_use(), 0);
        // The old caller keeps sending after its BYE.
        let old_party = party();
        old_party.send_to(&rtp(1), first).unwrap();

        let other = r.open(b, LOCAL, now).unwrap();
        assert_ne!(other, first, "quarantined");
        let reused = r.open(c, LOCAL, now + SPARE_QUARANTINE).unwrap();
        assert_eq!(reused, first);
        assert_eq!(r.ports_in_use(), 4);

        // The new caller's packet is relayed: the old one was drained, so
        // it neither latched the endpoint nor counted.
        let callee = party();
        r.set_remote(b, Some(callee.local_addr().unwrap()));
        r.link(c, b);
        let new_party = party();
        new_party.send_to(&rtp(7), reused).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = callee.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&rtp(7)[..], other));
        assert_eq!(r.stats(c).packets, 1);
    }

    #[test]
    fn links_forward_one_way_and_move_without_new_ports() {
        let mut r = relay(41200);
        let now = Instant::now();
        let (a, b, c) = (EndpointId(1), EndpointId(2), EndpointId(3));
        let (pa, pb, pc) = (party(), party(), party());
        let la = r.open(a, LOCAL, now).unwrap();
        let lb = r.open(b, LOCAL, now).unwrap();
        let lc = r.open(c, LOCAL, now).unwrap();
        for (id, p) in [(a, &pa), (b, &pb), (c, &pc)] {
            r.set_remote(id, Some(p.local_addr().unwrap()));
        }
        let mut buf = [0u8; 64];
        // Bridged a <-> b.
        r.link(a, b);
        r.link(b, a);
        pa.send_to(&rtp(1), la).unwrap();
        assert_eq!(pb.recv_from(&mut buf).unwrap().1, lb);
        pb.send_to(&rtp(2), lb).unwrap();
        assert_eq!(pa.recv_from(&mut buf).unwrap().1, la);
        // a moves to c: b is parked (links to nobody), a's address is unchanged.
        r.unlink(b);
        r.link(a, c);
        r.link(c, a);
        pa.send_to(&rtp(3), la).unwrap();
        let (n, from) = pc.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&rtp(3)[..], lc));
        pc.send_to(&rtp(4), lc).unwrap();
        let (n, from) = pa.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&rtp(4)[..], la));
        pb.send_to(&rtp(5), lb).unwrap();
        // Readiness is reported in order: once a's next packet is relayed,
        // b's has been read.
        pa.send_to(&rtp(6), la).unwrap();
        pc.recv_from(&mut buf).unwrap();
        assert_eq!(r.stats(b).packets, 2, "b's packets still counted");
        // Closing c leaves a linked to nothing.
        r.close(c, now);
        assert!(r.endpoints[&a].shared.link.load().is_none());
        assert!(r.links.is_empty() || r.links.keys().all(|f| *f != a && *f != c));
        r.close(a, now);
        r.close(b, now);
        assert!(r.links.is_empty() && r.linked_by.is_empty(), "no bookkeeping left");
    }

    #[test]
    fn a_closed_endpoint_relays_no_more() {
        let mut r = relay(41400);
        let now = Instant::now();
        let (a, b, c) = (EndpointId(1), EndpointId(2), EndpointId(3));
        let (caller, callee) = (party(), party());
        let la = r.open(a, LOCAL, now).unwrap();
        let lb = r.open(b, LOCAL, now).unwrap();
        r.set_remote(b, Some(callee.local_addr().unwrap()));
        r.link(a, b);
        caller.send_to(&rtp(9), la).unwrap();
        let mut buf = [0u8; 64];
        callee.recv_from(&mut buf).unwrap();
        let shared = r.endpoints[&a].shared.clone();
        r.close(a, now);
        r.pool.io.as_ref().unwrap().flush();
        // A packet to the closed port, then one through a live endpoint:
        // epoll reports readiness in order, so once the second is relayed
        // the first would have been, were its port still watched.
        let lc = r.open(c, LOCAL, now).unwrap();
        r.link(c, b);
        caller.send_to(&rtp(9), la).unwrap();
        caller.send_to(&rtp(9), lc).unwrap();
        let (_, from) = callee.recv_from(&mut buf).unwrap();
        assert_eq!(from, lb, "only the live endpoint relays");
        assert_eq!(shared.counters.packets.load(Ordering::Relaxed), 1);
        let (_, (_, released_rtp, _)) = r.pool.spare.front().unwrap();
        let n = released_rtp.recv(&mut buf).expect("a datagram waits");
        assert_eq!(&buf[..n], &rtp(9)[..]);
    }

    #[test]
    fn only_the_partys_host_can_latch_unless_permissive() {
        for strict in [true, false] {
            let pool = RelayPool::new(LOCAL, 41600, 41699);
            let mut r = Relay::new(pool, strict, Arc::new(|_| {}));
            let now = Instant::now();
            let (a, b) = (EndpointId(1), EndpointId(2));
            let la = r.open(a, LOCAL, now).unwrap();
            r.open(b, LOCAL, now).unwrap();
            let callee = party();
            r.set_remote(b, Some(callee.local_addr().unwrap()));
            r.link(a, b);
            // A stranger sprays the caller's port before the caller sends.
            let stranger = party_at("127.0.0.2");
            stranger.send_to(&rtp(1), la).unwrap();
            let caller = party();
            caller.send_to(&rtp(2), la).unwrap();
            let mut buf = [0u8; 64];
            let (n, _) = callee.recv_from(&mut buf).unwrap();
            if strict {
                assert_eq!(&buf[..n], &rtp(2)[..], "the caller's packet, the stranger's refused");
                assert_eq!((r.stats(a).packets, r.stats(a).refused), (1, 1));
            } else {
                assert_eq!(&buf[..n], &rtp(1)[..], "permissive: the first sender latches");
            }
        }
    }

    #[test]
    fn telephone_events_are_reported_once_per_key_press() {
        let heard = Arc::new(std::sync::Mutex::new(String::new()));
        let tap = DtmfTap {
            id: EndpointId(7),
            heard: {
                let heard = heard.clone();
                Arc::new(move |id, d| {
                    assert_eq!(id, EndpointId(7));
                    heard.lock().unwrap().push(d);
                })
            },
            last: AtomicU64::new(u64::MAX),
        };
        let event = |ts: u8, key: u8, end: bool| {
            let mut p = [0x80, 101, 0, ts, 0, 0, 1, ts, 0, 0, 0, 9, key, 10, 0, 160];
            if end {
                p[13] |= 0x80;
            }
            p
        };
        // Key 1: start, continuation, three ends; then '#' and '*' and 'D'.
        for (ts, key, end) in [
            (1, 1, false),
            (1, 1, false),
            (1, 1, true),
            (1, 1, true),
            (1, 1, true),
            (2, 11, true),
            (3, 10, false),
            (4, 15, false),
        ] {
            tap.inspect(&event(ts, key, end));
        }
        // Audio (PCMA) and events past 15 are not digits.
        let mut audio = [0u8; 172];
        audio[0] = 0x80;
        audio[1] = 8;
        tap.inspect(&audio);
        tap.inspect(&event(5, 16, true));
        assert_eq!(*heard.lock().unwrap(), "1#*D");
    }

    #[test]
    fn fresh_ports_are_not_handed_out_in_sequence() {
        let mut r = Relay::new(RelayPool::new(LOCAL, 42000, 42999), true, Arc::new(|_| {}));
        let now = Instant::now();
        let ports: Vec<u16> = (0..12)
            .map(|i| r.open(EndpointId(i), LOCAL, now).unwrap().port())
            .collect();
        assert!(ports.iter().all(|p| p % 2 == 0 && (42000..42999).contains(p)));
        let sequential = ports.windows(2).filter(|w| w[1] == w[0] + 2).count();
        assert!(sequential < 11, "{ports:?}");
    }
}
