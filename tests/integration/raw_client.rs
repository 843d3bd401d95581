//! A minimal hand-driven SIP client over UDP, TCP or TLS, for the cases a
//! scripted peer cannot express: garbage, half messages, exact sequences
//! of failures, IPv6 sockets.

use bytes::Bytes;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;
use switchboard::sip::digest::{compute_response, Algorithm, Credentials};
use switchboard::sip::{HeaderName, SipMessage};
use tokio_rustls::rustls;

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

pub enum Conn {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream, Vec<u8>),
    Tls(Box<TlsStream>, Vec<u8>),
}

pub struct RawClient {
    pub conn: Conn,
    pub local: SocketAddr,
    seq: u32,
    /// The domain of From and To. Default `pbx.test`.
    pub domain: String,
}

/// The next whole message on a stream.
fn read_framed(s: &mut impl Read, pending: &mut Vec<u8>) -> Option<SipMessage> {
    loop {
        if let Ok((skip, Some(len))) = switchboard::sip::message::frame_len(pending, 65536) {
            let frame: Vec<u8> = pending.drain(..skip + len).skip(skip).collect();
            return Some(SipMessage::parse_framed(Bytes::from(frame)).unwrap());
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

impl RawClient {
    pub fn udp(server: SocketAddr) -> RawClient {
        let bind = if server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" };
        RawClient::udp_from(server, bind)
    }

    /// A UDP client bound to `bind` (another loopback address, say).
    pub fn udp_from(server: SocketAddr, bind: &str) -> RawClient {
        let s = UdpSocket::bind(bind).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let local = s.local_addr().unwrap();
        RawClient {
            conn: Conn::Udp(s, server),
            local,
            seq: 0,
            domain: "pbx.test".into(),
        }
    }

    pub fn tcp(server: SocketAddr) -> RawClient {
        let s = TcpStream::connect(server).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let local = s.local_addr().unwrap();
        RawClient {
            conn: Conn::Tcp(s, Vec::new()),
            local,
            seq: 0,
            domain: "pbx.test".into(),
        }
    }

    /// A TLS client that trusts only `ca` (DER) and finishes its handshake.
    pub fn tls(server: SocketAddr, ca: &[u8]) -> RawClient {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.to_vec().into()).unwrap();
        #[allow(deprecated)] // ring: as the daemon
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::IpAddress(server.ip().into());
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(server).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let local = tcp.local_addr().unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).expect("TLS handshake");
        }
        RawClient {
            conn: Conn::Tls(Box::new(stream), Vec::new()),
            local,
            seq: 0,
            domain: "pbx.test".into(),
        }
    }

    /// The certificate the TLS server showed (DER).
    pub fn server_certificate(&self) -> Vec<u8> {
        match &self.conn {
            Conn::Tls(s, _) => s.conn.peer_certificates().unwrap()[0].to_vec(),
            _ => panic!("not a TLS client"),
        }
    }

    pub fn set_timeout(&self, t: Duration) {
        match &self.conn {
            Conn::Udp(s, _) => s.set_read_timeout(Some(t)).unwrap(),
            Conn::Tcp(s, _) => s.set_read_timeout(Some(t)).unwrap(),
            Conn::Tls(s, _) => s.sock.set_read_timeout(Some(t)).unwrap(),
        }
    }

    pub fn send_raw(&mut self, data: &[u8]) {
        match &mut self.conn {
            Conn::Udp(s, to) => {
                s.send_to(data, *to).unwrap();
            }
            Conn::Tcp(s, _) => s.write_all(data).unwrap(),
            Conn::Tls(s, _) => {
                s.write_all(data).unwrap();
                s.flush().unwrap();
            }
        }
    }

    /// Next message from the server, or None on timeout / closed connection.
    pub fn recv(&mut self) -> Option<SipMessage> {
        match &mut self.conn {
            Conn::Udp(s, _) => {
                let mut buf = vec![0u8; 65536];
                let (n, _) = s.recv_from(&mut buf).ok()?;
                Some(SipMessage::parse_datagram(Bytes::copy_from_slice(&buf[..n])).unwrap())
            }
            Conn::Tcp(s, pending) => read_framed(s, pending),
            Conn::Tls(s, pending) => read_framed(s.as_mut(), pending),
        }
    }

    fn transport(&self) -> &'static str {
        match self.conn {
            Conn::Udp(..) => "UDP",
            Conn::Tcp(..) => "TCP",
            Conn::Tls(..) => "TLS",
        }
    }

    fn host(&self) -> String {
        match self.local {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    }

    /// Builds a request from us with fresh branch and CSeq.
    pub fn request(&mut self, method: &str, ruri: &str, user: &str, extra: &str, call_id: &str) -> String {
        self.seq += 1;
        let (host, port, t, seq, domain) = (self.host(), self.local.port(), self.transport(), self.seq, &self.domain);
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{t} {host}:{port};branch=z9hG4bK{call_id}{seq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{domain}>;tag=t{seq}\r\nTo: <sip:{user}@{domain}>\r\n\
             Call-ID: {call_id}\r\nCSeq: {seq} {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    }

    /// A request as text without touching the client's sequence (for
    /// floods from another thread): CSeq and branch from `n`.
    pub fn request_text(&self, method: &str, ruri: &str, user: &str, extra: &str, n: u32) -> String {
        let (host, port, t) = (self.host(), self.local.port(), self.transport());
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{t} {host}:{port};branch=z9hG4bKflood{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@pbx.test>;tag=f{n}\r\nTo: <sip:{user}@pbx.test>\r\n\
             Call-ID: flood-{n}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    }

    /// Sends on a UDP client without needing it mutably (floods).
    pub fn send_to_server(&self, data: &[u8]) {
        if let Conn::Udp(s, to) = &self.conn {
            let _ = s.send_to(data, *to);
        }
    }

    pub fn send_request(&mut self, method: &str, ruri: &str, user: &str, extra: &str) -> Option<SipMessage> {
        let call_id = format!("raw-{}-{}", self.local.port(), self.seq + 1);
        let r = self.request(method, ruri, user, extra, &call_id);
        self.send_raw(r.as_bytes());
        self.recv_final()
    }

    /// Skips provisional responses.
    pub fn recv_final(&mut self) -> Option<SipMessage> {
        loop {
            let m = self.recv()?;
            if m.status().is_some_and(|s| s >= 200) {
                return Some(m);
            }
        }
    }

    /// Our Contact header line.
    pub fn contact(&self, user: &str) -> String {
        let t = if matches!(self.conn, Conn::Tls(..)) {
            ";transport=tls"
        } else {
            ""
        };
        format!("Contact: <sip:{user}@{}:{}{t}>\r\n", self.host(), self.local.port())
    }

    /// REGISTER with challenge-response; returns the final response to the
    /// authenticated request (or to the first one if it was not a 401).
    pub fn register(&mut self, ruri: &str, user: &str, password: &str, expires: u32) -> Option<SipMessage> {
        let extra = format!("{}Expires: {expires}\r\n", self.contact(user));
        self.authenticated("REGISTER", ruri, user, password, &extra)
    }

    /// A request answered with a digest challenge (401 or 407) and sent
    /// again with credentials; returns the final response to the second
    /// (or to the first if it was not a challenge).
    pub fn authenticated(
        &mut self,
        method: &str,
        ruri: &str,
        user: &str,
        password: &str,
        extra: &str,
    ) -> Option<SipMessage> {
        let call_id = format!("{}-{}-{user}", method.to_lowercase(), self.local.port());
        self.challenged(method, ruri, user, password, |c, auth| {
            c.request(method, ruri, user, &format!("{extra}{auth}"), &call_id)
        })
    }

    /// Sends `build(self, "")`; if that is challenged, sends
    /// `build(self, credentials header line)` and returns its final response.
    pub fn challenged(
        &mut self,
        method: &str,
        ruri: &str,
        user: &str,
        password: &str,
        build: impl Fn(&mut RawClient, &str) -> String,
    ) -> Option<SipMessage> {
        let first = build(self, "");
        self.send_raw(first.as_bytes());
        let challenge = self.recv_final()?;
        let (asked, answer) = match challenge.status() {
            Some(401) => (HeaderName::WwwAuthenticate, "Authorization"),
            Some(407) => (HeaderName::ProxyAuthenticate, "Proxy-Authorization"),
            _ => return Some(challenge),
        };
        let www = challenge.header(&asked).unwrap().to_string();
        let field = |name: &str| {
            www.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap()
                .to_string()
        };
        let mut c = Credentials {
            username: user.into(),
            realm: field("realm").into(),
            nonce: field("nonce").into(),
            uri: ruri.into(),
            cnonce: Some("0a4f113b".into()),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            ..Default::default()
        };
        // Answer the first (most preferred) challenge, as RFC 8760 §2.4 asks.
        let alg_name = www
            .split("algorithm=")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or("MD5")
            .trim()
            .to_string();
        let alg = Algorithm::parse(&alg_name).unwrap();
        c.response = compute_response(alg, user, &c.realm, password, method, &c).into();
        let auth = format!(
            "{answer}: Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{ruri}\", response=\"{}\", algorithm={alg_name}, cnonce=\"0a4f113b\", qop=auth, nc=00000001\r\n",
            c.realm, c.nonce, c.response
        );
        if method == "INVITE" {
            // A non-2xx final response to an INVITE is ACKed (§17.1.1.3).
            let h = |n: HeaderName| challenge.header(&n).unwrap_or("").to_string();
            let cseq = h(HeaderName::CSeq).split_whitespace().next().unwrap_or("1").to_string();
            let via = first.lines().find(|l| l.starts_with("Via:")).unwrap_or("");
            let ack = format!(
                "ACK {ruri} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
                h(HeaderName::From),
                h(HeaderName::To),
                h(HeaderName::CallId)
            );
            self.send_raw(ack.as_bytes());
        }
        let second = build(self, &auth);
        self.send_raw(second.as_bytes());
        // Skip what still answers the first request (a retransmission).
        let cseq = |m: &str| m.lines().find(|l| l.starts_with("CSeq:")).map(str::to_string);
        let wanted = cseq(&second);
        loop {
            let r = self.recv_final()?;
            let got = r.header(&HeaderName::CSeq).map(|v| format!("CSeq: {v}"));
            if got == wanted {
                return Some(r);
            }
        }
    }
}
