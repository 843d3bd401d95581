//! UDP, TCP and TLS transports (RFC 3261 §18, §26.2): tokio tasks that
//! read, frame and parse messages, stamp Via `received`/`rport` on requests, and hand them
//! to the core over a channel; and a handle to send messages out.
//!
//! Unparseable input never reaches the core: a request with enough headers
//! to be answered gets a stateless 400 naming the fault; the rest is dropped.

use super::message::{frame_len, ParseError, SipMessage};
use super::transaction::{Peer, Transmit, TransportKind};
use super::via_rewrite::stamp_received;
use super::HeaderName;
use crate::recv_batch::{self, Batch};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::rustls::ServerConfig;

/// The TLS settings new connections are accepted with; the daemon swaps
/// in a new set when the certificate is reloaded.
pub type TlsConfigHandle = Arc<arc_swap::ArcSwap<ServerConfig>>;

/// Where TLS listens and with what.
pub struct TlsListen {
    pub addrs: Vec<SocketAddr>,
    pub config: TlsConfigHandle,
}

/// Open stream connections (TCP and TLS) by peer, each with its writer.
type ConnectionTable = Arc<Mutex<HashMap<Peer, mpsc::Sender<Bytes>>>>;

/// A parsed message from the network.
#[derive(Debug)]
pub struct Inbound {
    pub msg: SipMessage,
    pub from: Peer,
}

/// Limits the transports enforce.
#[derive(Debug, Clone, Copy)]
pub struct TransportLimits {
    pub max_message_size: usize,
    /// A TCP or TLS connection holding an incomplete message this long (or
    /// that has sent nothing since it opened, or not finished its TLS
    /// handshake) is closed.
    pub partial_message_timeout: Duration,
    /// A TCP or TLS connection silent this long between messages is closed.
    pub idle_timeout: Duration,
    /// Connections accepted at once, in all and from one IP address; more
    /// are closed as soon as accepted (file descriptors are shared with
    /// the relay's sockets).
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

/// Open TCP connections, in all and per IP address.
#[derive(Default)]
struct ConnectionCount {
    total: usize,
    per_ip: HashMap<std::net::IpAddr, usize>,
}

/// Holds a connection's place in the count until it ends.
struct CountedConnection {
    count: Arc<Mutex<ConnectionCount>>,
    ip: std::net::IpAddr,
}

impl CountedConnection {
    /// Takes a place for a connection from `ip`, if the limits allow.
    fn admit(count: &Arc<Mutex<ConnectionCount>>, ip: std::net::IpAddr, limits: &TransportLimits) -> Option<Self> {
        let mut c = count.lock().expect("connection count");
        let from_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        if c.total >= limits.max_connections || from_ip >= limits.max_connections_per_ip {
            return None;
        }
        c.total += 1;
        c.per_ip.insert(ip, from_ip + 1);
        Some(CountedConnection {
            count: count.clone(),
            ip,
        })
    }
}

impl Drop for CountedConnection {
    fn drop(&mut self) {
        let mut c = self.count.lock().expect("connection count");
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A peer we may open a TCP or TLS connection to (a trunk's provider),
/// with the name its certificate must carry and the TLS client settings.
#[derive(Clone)]
pub struct Dialable {
    pub server_name: String,
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
}

/// Sends messages on the sockets the daemon listens on, and on the
/// connections peers opened or it opened to providers. Cheap to clone.
#[derive(Clone)]
pub struct TransportHandle {
    /// Each UDP socket with its bound address (asked once: `getsockname`
    /// per send was 1.5 % of a registration's CPU).
    udp: Arc<Vec<(SocketAddr, Arc<UdpSocket>)>>,
    streams: ConnectionTable,
    dialable: Arc<Mutex<HashMap<Peer, Dialable>>>,
    limits: TransportLimits,
    inbound: mpsc::Sender<Inbound>,
}

impl TransportHandle {
    pub fn send(&self, t: &Transmit) {
        match t.to.transport {
            TransportKind::Udp => {
                let sock = self
                    .udp
                    .iter()
                    .find(|(a, _)| a.is_ipv4() == t.to.addr.is_ipv4())
                    .map(|(_, s)| s);
                match sock {
                    Some(s) => {
                        if let Err(e) = s.try_send_to(&t.data, t.to.addr) {
                            tracing::debug!(to = %t.to.addr, error = %e, "udp send failed");
                        }
                    }
                    None => tracing::warn!(to = %t.to.addr, "no UDP socket of that address family"),
                }
            }
            // Over the connection the peer opened (phones keep theirs open
            // while registered, RFC 5626 style); to a provider, over one we
            // open when there is none (§18.1.1).
            TransportKind::Tcp | TransportKind::Tls => {
                let mut table = self.streams.lock().expect("connection table");
                if let Some(tx) = table.get(&t.to) {
                    if tx.try_send(t.data.clone()).is_err() {
                        tracing::debug!(to = %t.to.addr, "connection gone or congested");
                    }
                    return;
                }
                let Some(dial) = self.dialable.lock().expect("dialable").get(&t.to).cloned() else {
                    tracing::debug!(to = %t.to.addr, transport = t.to.transport.via_name(), "no connection to peer");
                    return;
                };
                // Queued until connected; later sends queue behind it.
                let (tx, rx) = mpsc::channel::<Bytes>(256);
                let _ = tx.try_send(t.data.clone());
                table.insert(t.to, tx.clone());
                let (limits, inbound, streams) = (self.limits, self.inbound.clone(), self.streams.clone());
                tokio::spawn(connect(t.to, dial, (tx, rx), limits, inbound, streams));
            }
        }
    }

    pub fn udp_local_addrs(&self) -> Vec<SocketAddr> {
        self.udp.iter().map(|(a, _)| *a).collect()
    }

    /// A peer connections may be opened to has moved to `to`.
    pub fn readdress_dialable(&self, from: Peer, to: Peer) {
        let mut dialable = self.dialable.lock().expect("dialable");
        if let Some(d) = dialable.remove(&from) {
            dialable.insert(to, d);
        }
    }

    /// The peers connections may be opened to (replacing the last list).
    pub fn set_dialable(&self, peers: Vec<(Peer, Dialable)>) {
        *self.dialable.lock().expect("dialable") = peers.into_iter().collect();
    }
}

/// Opens a connection to `peer` (TLS with `dial.tls`), then serves it
/// with the messages already queued on `channel`.
async fn connect(
    peer: Peer,
    dial: Dialable,
    channel: (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>),
    limits: TransportLimits,
    inbound: mpsc::Sender<Inbound>,
    table: ConnectionTable,
) {
    let forget = |why: String| {
        tracing::warn!(peer = %peer.addr, transport = peer.transport.via_name(), error = %why, "cannot connect");
        let mut t = table.lock().expect("connection table");
        if t.get(&peer).is_some_and(|tx| tx.same_channel(&channel.0)) {
            t.remove(&peer);
        }
    };
    let connecting = tokio::net::TcpStream::connect(peer.addr);
    let tcp = match tokio::time::timeout(limits.partial_message_timeout, connecting).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return forget(e.to_string()),
        Err(_) => return forget("timed out".into()),
    };
    let _ = tcp.set_nodelay(true);
    let Some(tls) = dial.tls else {
        return stream_connection(tcp, peer, limits, inbound, table.clone(), Some(channel)).await;
    };
    let name = match rustls_pki_types::ServerName::try_from(dial.server_name.clone()) {
        Ok(n) => n,
        Err(e) => return forget(format!("bad server name {:?}: {e}", dial.server_name)),
    };
    let handshake = tokio_rustls::TlsConnector::from(tls).connect(name, tcp);
    match tokio::time::timeout(limits.partial_message_timeout, handshake).await {
        Ok(Ok(s)) => stream_connection(s, peer, limits, inbound, table.clone(), Some(channel)).await,
        Ok(Err(e)) => forget(format!("TLS: {e}")),
        Err(_) => forget("TLS handshake timed out".into()),
    }
}

/// Binds every listen address for UDP and/or TCP, and the TLS addresses,
/// and spawns their tasks.
pub async fn start(
    listen: &[SocketAddr],
    udp: bool,
    tcp: bool,
    tls: Option<TlsListen>,
    limits: TransportLimits,
    inbound: mpsc::Sender<Inbound>,
) -> std::io::Result<TransportHandle> {
    let mut udp_socks = Vec::new();
    let streams = ConnectionTable::default();
    // One budget of connections for TCP and TLS: they share file descriptors.
    let count = Arc::new(Mutex::new(ConnectionCount::default()));
    let accept = |listener, tls| {
        let task = AcceptLoop {
            listener,
            tls,
            limits,
            inbound: inbound.clone(),
            streams: streams.clone(),
            count: count.clone(),
        };
        tokio::spawn(task.run());
    };
    for addr in listen {
        if udp {
            let sock = bind_udp(*addr)?;
            tracing::info!(addr = %addr, "listening on UDP");
            udp_socks.push((sock.local_addr()?, Arc::new(sock)));
        }
        if tcp {
            let listener = TcpListener::bind(addr).await?;
            tracing::info!(addr = %addr, "listening on TCP");
            accept(listener, None);
        }
    }
    for t in tls.iter() {
        for addr in &t.addrs {
            let listener = TcpListener::bind(addr).await?;
            tracing::info!(addr = %addr, "listening on TLS");
            accept(listener, Some(t.config.clone()));
        }
    }
    for (_, s) in &udp_socks {
        tokio::spawn(udp_loop(s.clone(), limits, inbound.clone()));
    }
    Ok(TransportHandle {
        udp: Arc::new(udp_socks),
        streams,
        dialable: Arc::default(),
        limits,
        inbound,
    })
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Large buffers absorb bursts of REGISTERs without drops.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

async fn udp_loop(sock: Arc<UdpSocket>, limits: TransportLimits, inbound: mpsc::Sender<Inbound>) {
    // No UDP datagram is longer than 64 KiB, whatever the limit says.
    let mut batch = Batch::new((limits.max_message_size + 1).min(1 << 16));
    loop {
        if let Err(e) = sock.readable().await {
            tracing::warn!(error = %e, "udp socket unusable");
            return;
        }
        let read = sock.try_io(Interest::READABLE, || match batch.recv(sock.as_raw_fd())? {
            // A short batch emptied the queue: tokio is told so, and waits
            // for the next datagram instead of a read that finds nothing.
            n if n < recv_batch::BATCH => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        });
        if let Err(e) = read {
            if e.kind() != io::ErrorKind::WouldBlock {
                // ICMP port unreachable surfaces here on some systems; keep serving.
                tracing::debug!(error = %e, "udp recv error");
            }
        }
        for (datagram, src) in batch.datagrams() {
            on_datagram(datagram, src, &sock, limits, &inbound).await;
        }
    }
}

async fn on_datagram(
    datagram: &[u8],
    src: SocketAddr,
    sock: &UdpSocket,
    limits: TransportLimits,
    inbound: &mpsc::Sender<Inbound>,
) {
    if datagram.len() > limits.max_message_size {
        tracing::debug!(from = %src, "datagram over max_message_size dropped");
        return;
    }
    if datagram.iter().all(|b| b.is_ascii_whitespace()) {
        return; // keep-alive (RFC 5626 §4.4.1)
    }
    let data = Bytes::copy_from_slice(datagram);
    let peer = Peer {
        transport: TransportKind::Udp,
        addr: src,
    };
    match SipMessage::parse_datagram(data.clone()) {
        Ok(msg) => deliver(msg, peer, inbound).await,
        Err(err) => {
            tracing::debug!(from = %src, error = %err, "unparseable datagram");
            if let Some(resp) = salvage_bad_request(&data, &err) {
                let _ = sock.send_to(&resp, src).await;
            }
        }
    }
}

async fn deliver(mut msg: SipMessage, from: Peer, inbound: &mpsc::Sender<Inbound>) {
    if msg.is_request() {
        stamp_received(&mut msg, from.addr);
    }
    let _ = inbound.send(Inbound { msg, from }).await;
}

/// Accepts TCP connections, with a TLS handshake first when `tls` is set.
struct AcceptLoop {
    listener: TcpListener,
    tls: Option<TlsConfigHandle>,
    limits: TransportLimits,
    inbound: mpsc::Sender<Inbound>,
    streams: ConnectionTable,
    count: Arc<Mutex<ConnectionCount>>,
}

impl AcceptLoop {
    async fn run(self) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    let Some(place) = CountedConnection::admit(&self.count, addr.ip(), &self.limits) else {
                        tracing::warn!(peer = %addr, "connection refused: too many connections");
                        continue; // dropped: closed
                    };
                    let _ = stream.set_nodelay(true);
                    let (limits, inbound, streams) = (self.limits, self.inbound.clone(), self.streams.clone());
                    let Some(tls) = &self.tls else {
                        let peer = Peer {
                            transport: TransportKind::Tcp,
                            addr,
                        };
                        tokio::spawn(async move {
                            stream_connection(stream, peer, limits, inbound, streams, None).await;
                            drop(place);
                        });
                        continue;
                    };
                    // The settings of the moment: a reload applies to new connections.
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.load_full());
                    tokio::spawn(async move {
                        let handshake = tokio::time::timeout(limits.partial_message_timeout, acceptor.accept(stream));
                        match handshake.await {
                            Ok(Ok(stream)) => {
                                let peer = Peer {
                                    transport: TransportKind::Tls,
                                    addr,
                                };
                                stream_connection(stream, peer, limits, inbound, streams, None).await;
                                drop(place);
                            }
                            // The place is free before the line is logged.
                            Ok(Err(e)) => {
                                drop(place);
                                tracing::debug!(peer = %addr, error = %e, "tls handshake failed");
                            }
                            Err(_) => {
                                drop(place);
                                tracing::debug!(peer = %addr, "tls handshake timed out");
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Reads framed messages from one TCP or TLS connection until it closes,
/// times out or loses framing; writes go through its table entry. A
/// connection we opened comes with its `queued` channel (already in the
/// table) and may stay quiet as long as the idle timeout from the start.
async fn stream_connection<S>(
    stream: S,
    peer: Peer,
    limits: TransportLimits,
    inbound: mpsc::Sender<Inbound>,
    table: ConnectionTable,
    queued: Option<(mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>)>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let addr = peer.addr;
    let ours = queued.is_some();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = match queued {
        Some(c) => c,
        None => {
            let c = mpsc::channel::<Bytes>(256);
            table.lock().expect("connection table").insert(peer, c.0.clone());
            c
        }
    };
    let writer = tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            // TLS buffers records: flush sends them now (a no-op for TCP).
            if wr.write_all(&data).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    });
    let mut buf = BytesMut::with_capacity(8192);
    let mut messages = 0u64;
    'conn: loop {
        // A half message must complete in time, and so must a new
        // connection's first message; between messages, the idle timeout.
        let wait = if buf.is_empty() && (messages > 0 || ours) {
            limits.idle_timeout
        } else {
            limits.partial_message_timeout
        };
        let read = match tokio::time::timeout(wait, rd.read_buf(&mut buf)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::debug!(peer = %addr, messages, "tcp connection timed out; closing");
                break;
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            match frame_len(&buf, limits.max_message_size) {
                Ok((skip, None)) => {
                    let _ = buf.split_to(skip);
                    break;
                }
                Ok((skip, Some(len))) => {
                    messages += 1;
                    let _ = buf.split_to(skip);
                    let frame = buf.split_to(len).freeze();
                    match SipMessage::parse_framed(frame.clone()) {
                        Ok(msg) => deliver(msg, peer, &inbound).await,
                        Err(err) => {
                            tracing::debug!(peer = %addr, error = %err, "bad message on tcp");
                            if let Some(resp) = salvage_bad_request(&frame, &err) {
                                let _ = tx.send(resp).await;
                            }
                        }
                    }
                }
                Err(err) => {
                    // Framing is lost (bad or oversized Content-Length): answer if
                    // possible, then close, since the stream cannot be resynchronised.
                    tracing::debug!(peer = %addr, error = %err, "tcp framing error; closing");
                    if let Some(resp) = salvage_bad_request(&buf, &err) {
                        let _ = tx.send(resp).await;
                    }
                    break 'conn;
                }
            }
        }
    }
    {
        // Only our own entry: a newer connection to the peer may be there.
        let mut t = table.lock().expect("connection table");
        if t.get(&peer).is_some_and(|x| x.same_channel(&tx)) {
            t.remove(&peer);
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Builds a stateless `400` for a request that failed to parse, when its
/// Via, From, To, Call-ID and CSeq lines can still be found (§8.2.6).
pub fn salvage_bad_request(raw: &[u8], err: &ParseError) -> Option<Bytes> {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_start_matches(['\r', '\n']);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let first = lines.next()?;
    if first.starts_with("SIP/") || !first.contains(' ') {
        return None;
    }
    let mut copied: Vec<(HeaderName, String)> = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = HeaderName::parse(name.trim().as_bytes());
        if matches!(
            name,
            HeaderName::Via | HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
        ) {
            copied.push((name, value.trim().to_string()));
        }
    }
    for needed in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        if !copied.iter().any(|(n, _)| *n == needed) {
            return None;
        }
    }
    let mut out = format!("SIP/2.0 400 Bad Request ({err})\r\n");
    for (name, value) in copied {
        out.push_str(name.as_str());
        out.push_str(": ");
        out.push_str(&value);
        out.push_str("\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salvage_answers_requests_with_dialog_headers_only() {
        let raw = b"REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:a@x>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: -1\r\n\r\n";
        let resp = salvage_bad_request(raw, &ParseError::ContentLength).unwrap();
        let m = SipMessage::parse_datagram(resp).unwrap();
        assert_eq!(m.status(), Some(400));
        assert_eq!(m.call_id(), Some("c"));
        assert!(salvage_bad_request(b"\x00\x01garbage", &ParseError::StartLine).is_none());
        assert!(salvage_bad_request(b"SIP/2.0 200 OK\r\n\r\n", &ParseError::StartLine).is_none());
    }
}
