//! The RTP/RTCP relay. Each call gets two port pairs from the configured
//! range: side A faces the caller, side B the callee. What arrives on a
//! side's RTP and RTCP ports goes to the other side's party, relayed by the
//! I/O thread of `relay_io`. Symmetric RTP: the first packet from a party
//! fixes where we send to it (phones behind NAT), and later packets from
//! other sources are dropped until signalling re-opens the latch. The
//! per-packet path reads every waiting datagram with one recvmmsg into a
//! per-thread buffer (`recv_batch`), takes no lock and never waits on
//! signalling.

use super::relay_io::{Leg, RelayIo};
use crate::recv_batch;
use arc_swap::ArcSwapOption;
use serde::Serialize;
use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which party a relay side faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// Where to send to one party, and whether it was learned from traffic.
#[derive(Default)]
struct Remote {
    rtp: ArcSwapOption<SocketAddr>,
    rtcp: ArcSwapOption<SocketAddr>,
    rtp_latched: AtomicBool,
    rtcp_latched: AtomicBool,
}

/// Packet counters for one direction (from a party into the relay).
#[derive(Default)]
struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
    seq_gaps: AtomicU64,
    last_seq: AtomicU64,
    forwarded: AtomicU64,
}

pub(super) struct Shared {
    remotes: [Remote; 2],
    counters: [Counters; 2],
    started: Instant,
    /// Milliseconds after `started` of the last RTP packet from either party.
    last_rtp_ms: AtomicU64,
}

/// Counters of a session as shown by `ctl calls`.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq, Default)]
pub struct DirectionStats {
    pub packets: u64,
    pub bytes: u64,
    pub seq_gaps: u64,
    pub forwarded: u64,
}

#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq, Default)]
pub struct MediaStats {
    /// Received from the caller (side A).
    pub from_caller: DirectionStats,
    /// Received from the callee (side B).
    pub from_callee: DirectionStats,
}

pub struct MediaSession {
    pub ip: IpAddr,
    /// RTP ports of side A and side B (RTCP is +1).
    pub ports: [u16; 2],
    sockets: [Arc<UdpSocket>; 4],
    shared: Arc<Shared>,
    io: Arc<RelayIo>,
    /// The sockets' legs in the I/O thread, in `sockets` order.
    legs: [u64; 4],
}

fn idx(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

impl MediaSession {
    /// The relay address a party on `side` should send RTP to.
    pub fn local(&self, side: Side) -> SocketAddr {
        SocketAddr::new(self.ip, self.ports[idx(side)])
    }

    /// Sets where a party receives, from its SDP; re-opens the latch so
    /// the next packet from the party fixes the address again.
    pub fn set_remote(&self, side: Side, rtp: Option<SocketAddr>) {
        let r = &self.shared.remotes[idx(side)];
        r.rtp.store(rtp.map(Arc::new));
        r.rtcp
            .store(rtp.map(|a| Arc::new(SocketAddr::new(a.ip(), a.port().wrapping_add(1)))));
        r.rtp_latched.store(false, Ordering::Release);
        r.rtcp_latched.store(false, Ordering::Release);
    }

    pub fn stats(&self) -> MediaStats {
        let d = |c: &Counters| DirectionStats {
            packets: c.packets.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            seq_gaps: c.seq_gaps.load(Ordering::Relaxed),
            forwarded: c.forwarded.load(Ordering::Relaxed),
        };
        MediaStats {
            from_caller: d(&self.shared.counters[0]),
            from_callee: d(&self.shared.counters[1]),
        }
    }

    /// Time since the last RTP packet from either party (or since start).
    pub fn idle_for(&self, now: Instant) -> std::time::Duration {
        let last =
            self.shared.started + std::time::Duration::from_millis(self.shared.last_rtp_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }

    /// Socket and current destination for sending our own RTP (prompts) to
    /// the party on `side`.
    pub fn sender(&self, side: Side) -> (Arc<UdpSocket>, Option<SocketAddr>) {
        let i = idx(side);
        (
            self.sockets[i * 2].clone(),
            self.shared.remotes[i].rtp.load_full().map(|a| *a),
        )
    }

    fn start(&mut self) {
        // socket index: side*2 + (0 rtp | 1 rtcp); each goes to the same
        // kind of socket on the other side.
        let legs: [Leg; 4] = std::array::from_fn(|i| {
            let (side, rtcp) = (i / 2, i % 2 == 1);
            let out = (1 - side) * 2 + usize::from(rtcp);
            Leg {
                recv: self.sockets[i].clone(),
                send: self.sockets[out].clone(),
                shared: self.shared.clone(),
                from: side,
                rtcp,
            }
        });
        self.legs = self.io.add(legs);
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        self.io.remove(&self.legs);
    }
}

/// Relays one packet that came from the party on side `from`.
pub(super) fn relay_packet(packet: &[u8], src: SocketAddr, send: &UdpSocket, shared: &Shared, from: usize, rtcp: bool) {
    let to = 1 - from;
    let me = &shared.remotes[from];
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
        addr.store(Some(Arc::new(src)));
        latched.store(true, Ordering::Release);
    }
    if !rtcp {
        let c = &shared.counters[from];
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
        let ms = shared.started.elapsed().as_millis() as u64;
        shared.last_rtp_ms.store(ms, Ordering::Relaxed);
    }
    let dest = if rtcp {
        shared.remotes[to].rtcp.load()
    } else {
        shared.remotes[to].rtp.load()
    };
    if let Some(d) = dest.as_deref() {
        if send.send_to(packet, *d).is_ok() && !rtcp {
            shared.counters[from].forwarded.fetch_add(1, Ordering::Relaxed);
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
    next: u16,
    /// Ports held by sessions or waiting in `spare`.
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
            next: min,
            bound: HashSet::new(),
            spare: VecDeque::new(),
            io: None,
        }
    }

    /// Ports currently held by sessions (RTP ports; each also holds +1).
    pub fn ports_in_use(&self) -> usize {
        (self.bound.len() - self.spare.len()) * 2
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
        let slots = usize::from((self.max - self.min) / 2).max(1);
        for _ in 0..slots {
            let port = self.next;
            self.next = if self.next + 3 > self.max {
                self.min
            } else {
                self.next + 2
            };
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

    /// Binds both sides of a new session and starts forwarding.
    pub fn allocate(&mut self) -> std::io::Result<MediaSession> {
        self.allocate_at(Instant::now())
    }

    fn allocate_at(&mut self, now: Instant) -> std::io::Result<MediaSession> {
        let io = match &self.io {
            Some(io) => io.clone(),
            None => self.io.insert(Arc::new(RelayIo::start()?)).clone(),
        };
        let (pa, a_rtp, a_rtcp) = self.bind_pair(now)?;
        let (pb, b_rtp, b_rtcp) = match self.bind_pair(now) {
            Ok(x) => x,
            Err(e) => {
                // Unused: free for the next call at once.
                let released = now.checked_sub(SPARE_QUARANTINE).unwrap_or(now);
                self.spare.push_front((released, (pa, a_rtp, a_rtcp)));
                return Err(e);
            }
        };
        let mut s = MediaSession {
            ip: self.ip,
            ports: [pa, pb],
            sockets: [a_rtp, a_rtcp, b_rtp, b_rtcp],
            shared: Arc::new(Shared {
                remotes: Default::default(),
                counters: Default::default(),
                started: now,
                last_rtp_ms: AtomicU64::new(0),
            }),
            io,
            legs: [0; 4],
        };
        s.start();
        Ok(s)
    }

    /// Takes a session's ports back: relaying stops and its sockets wait
    /// in quarantine for the next calls.
    pub fn release(&mut self, session: MediaSession) {
        let now = Instant::now();
        let [a_rtp, a_rtcp, b_rtp, b_rtcp] = session.sockets.clone();
        let [pa, pb] = session.ports;
        drop(session);
        self.spare.push_back((now, (pa, a_rtp, a_rtcp)));
        self.spare.push_back((now, (pb, b_rtp, b_rtcp)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn released_ports_wait_in_quarantine_and_come_back_drained() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut pool = RelayPool::new(ip, 41000, 41099);
        let first = pool.allocate().unwrap();
        let ports = first.ports;
        pool.release(first);
        assert_eq!(pool.ports_in_use(), 0);
        // The old caller keeps sending after its BYE.
        let old_party = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rtp = |seq: u8| [0x80, 0, 0, seq, 0, 0, 0, 0, 0, 0, 0, 1];
        old_party.send_to(&rtp(1), (ip, ports[0])).unwrap();

        let now = Instant::now();
        let other = pool.allocate_at(now).unwrap();
        assert!(
            !ports.contains(&other.ports[0]) && !ports.contains(&other.ports[1]),
            "quarantined"
        );
        let reused = pool.allocate_at(now + SPARE_QUARANTINE).unwrap();
        assert_eq!(reused.ports, ports);
        assert_eq!(pool.ports_in_use(), 8);

        // The new caller's packet is relayed: the old one was drained, so
        // it neither latched side A nor counted.
        let callee = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        reused.set_remote(Side::B, Some(callee.local_addr().unwrap()));
        let new_party = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        new_party.send_to(&rtp(7), reused.local(Side::A)).unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), callee.recv(&mut buf))
            .await
            .expect("relayed")
            .unwrap();
        assert_eq!(buf[..n], rtp(7));
        assert_eq!(reused.stats().from_caller.packets, 1);
    }

    #[test]
    fn a_session_relays_until_released_and_not_after() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut pool = RelayPool::new(ip, 41200, 41299);
        let session = pool.allocate().unwrap();
        let caller = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let callee = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        callee.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        session.set_remote(Side::B, Some(callee.local_addr().unwrap()));
        let rtp = [0x80, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1];
        caller.send_to(&rtp, session.local(Side::A)).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = callee.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&rtp[..], session.local(Side::B)));

        let (to, shared) = (session.local(Side::A), session.shared.clone());
        pool.release(session);
        pool.io.as_ref().unwrap().flush();
        // A packet to the released port, then one through a live session:
        // epoll reports readiness in order, so once the second is relayed
        // the first would have been, were its port still watched.
        let live = pool.allocate().unwrap();
        live.set_remote(Side::B, Some(callee.local_addr().unwrap()));
        caller.send_to(&rtp, to).unwrap();
        caller.send_to(&rtp, live.local(Side::A)).unwrap();
        let (_, from) = callee.recv_from(&mut buf).unwrap();
        assert_eq!(from, live.local(Side::B), "only the live session relays");
        assert_eq!(shared.counters[0].packets.load(Ordering::Relaxed), 1);
        // The released port left it in its socket.
        let (_, (_, released_rtp, _)) = pool.spare.front().unwrap();
        let n = released_rtp.recv(&mut buf).expect("a datagram waits");
        assert_eq!(&buf[..n], &rtp[..]);
    }
}
