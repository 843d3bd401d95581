//! The RTP/RTCP relay. Each call gets two port pairs from the configured
//! range: side A faces the caller, side B the callee. A task per side
//! forwards what arrives on its RTP and RTCP ports to the other side's party. Symmetric RTP: the
//! first packet from a party fixes where we send to it (phones behind NAT),
//! and later packets from other sources are dropped until signalling
//! re-opens the latch. The per-packet path reuses one buffer, takes no
//! lock and never waits on signalling.

use arc_swap::ArcSwapOption;
use serde::Serialize;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

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

struct Shared {
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
    tasks: Vec<JoinHandle<()>>,
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
        // socket index: side*2 + (0 rtp | 1 rtcp). One task per side serves
        // its RTP and RTCP sockets with one buffer: half the tasks and
        // buffers of a task per socket (~4 KiB less per call).
        for side in [Side::A, Side::B] {
            let i = idx(side);
            let other = 1 - i;
            let recv = [self.sockets[i * 2].clone(), self.sockets[i * 2 + 1].clone()];
            let send = [self.sockets[other * 2].clone(), self.sockets[other * 2 + 1].clone()];
            let shared = self.shared.clone();
            self.tasks.push(tokio::spawn(forward(recv, send, shared, i)));
        }
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Relays what arrives on one side's RTP and RTCP sockets to the other
/// side's party.
async fn forward(recv: [Arc<UdpSocket>; 2], send: [Arc<UdpSocket>; 2], shared: Arc<Shared>, from: usize) {
    let mut buf = [0u8; 2048];
    loop {
        let rtcp = tokio::select! {
            biased;
            r = recv[0].readable() => { if r.is_err() { continue; } false }
            r = recv[1].readable() => { if r.is_err() { continue; } true }
        };
        // One read per readiness: a WouldBlock clears it (as recv_from does).
        let Ok((n, src)) = recv[usize::from(rtcp)].try_recv_from(&mut buf) else {
            continue;
        };
        relay_packet(&buf[..n], src, &send[usize::from(rtcp)], &shared, from, rtcp);
    }
}

fn relay_packet(packet: &[u8], src: SocketAddr, send: &UdpSocket, shared: &Shared, from: usize, rtcp: bool) {
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
        if send.try_send_to(packet, *d).is_ok() && !rtcp {
            shared.counters[from].forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Hands out port pairs from a range and binds the sockets.
pub struct RelayPool {
    ip: IpAddr,
    min: u16,
    max: u16,
    next: u16,
    in_use: HashSet<u16>,
}

impl RelayPool {
    pub fn new(ip: IpAddr, min: u16, max: u16) -> RelayPool {
        let min = min + (min % 2);
        RelayPool {
            ip,
            min,
            max,
            next: min,
            in_use: HashSet::new(),
        }
    }

    /// Ports currently held by sessions (RTP ports; each also holds +1).
    pub fn ports_in_use(&self) -> usize {
        self.in_use.len() * 2
    }

    fn bind_pair(&mut self) -> std::io::Result<(u16, Arc<UdpSocket>, Arc<UdpSocket>)> {
        let slots = usize::from((self.max - self.min) / 2).max(1);
        for _ in 0..slots {
            let port = self.next;
            self.next = if self.next + 3 > self.max {
                self.min
            } else {
                self.next + 2
            };
            if self.in_use.contains(&port) {
                continue;
            }
            let rtp = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port));
            let rtcp = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port + 1));
            if let (Ok(rtp), Ok(rtcp)) = (rtp, rtcp) {
                rtp.set_nonblocking(true)?;
                rtcp.set_nonblocking(true)?;
                self.in_use.insert(port);
                return Ok((
                    port,
                    Arc::new(UdpSocket::from_std(rtp)?),
                    Arc::new(UdpSocket::from_std(rtcp)?),
                ));
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "RTP port range exhausted",
        ))
    }

    /// Binds both sides of a new session and starts forwarding.
    pub fn allocate(&mut self) -> std::io::Result<MediaSession> {
        let (pa, a_rtp, a_rtcp) = self.bind_pair()?;
        let (pb, b_rtp, b_rtcp) = match self.bind_pair() {
            Ok(x) => x,
            Err(e) => {
                self.in_use.remove(&pa);
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
                started: Instant::now(),
                last_rtp_ms: AtomicU64::new(0),
            }),
            tasks: Vec::new(),
        };
        s.start();
        Ok(s)
    }

    /// Returns a session's ports; its tasks stop and sockets close.
    pub fn release(&mut self, session: MediaSession) {
        for p in session.ports {
            self.in_use.remove(&p);
        }
        drop(session);
    }
}
