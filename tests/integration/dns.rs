//! A DNS server for the tests, on a loopback UDP port: answers SRV and A
//! queries from a fixed table (hand-encoded, RFC 1035 §4 and RFC 2782),
//! NXDOMAIN for names it does not know, no records for other types.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub enum Record {
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: &'static str,
    },
    A(Ipv4Addr),
}

/// A running server; it stops when dropped.
pub struct DnsServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// The question's name (lower case, with a final dot), type, and where the
/// question ends.
fn question(q: &[u8]) -> Option<(String, u16, usize)> {
    let mut at = 12;
    let mut name = String::new();
    loop {
        let len = *q.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        name.push_str(&String::from_utf8_lossy(q.get(at..at + len)?).to_ascii_lowercase());
        name.push('.');
        at += len;
    }
    let qtype = u16::from_be_bytes([*q.get(at)?, *q.get(at + 1)?]);
    Some((name, qtype, at + 4))
}

/// Serves `records` (name with a final dot → its records) until dropped.
pub fn serve(records: Vec<(&'static str, Record)>) -> DnsServer {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let port = sock.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stopping.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let q = &buf[..n];
            let Some((name, qtype, end)) = question(q) else {
                continue;
            };
            let known = records.iter().any(|(n, _)| *n == name);
            let answers: Vec<&Record> = records
                .iter()
                .filter(|(n, r)| *n == name && matches!((r, qtype), (Record::Srv { .. }, 33) | (Record::A(_), 1)))
                .map(|(_, r)| r)
                .collect();
            let mut out = Vec::with_capacity(256);
            out.extend_from_slice(&q[..2]); // id
            let rcode = if known { 0 } else { 3 };
            out.extend_from_slice(&[0x84, 0x80 | rcode]); // response, authoritative
            out.extend_from_slice(&[0, 1]);
            out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(&q[12..end]);
            for r in answers {
                out.extend_from_slice(&[0xc0, 12]); // the question's name
                let mut rdata = Vec::new();
                let rtype: u16 = match r {
                    Record::Srv {
                        priority,
                        weight,
                        port,
                        target,
                    } => {
                        rdata.extend_from_slice(&priority.to_be_bytes());
                        rdata.extend_from_slice(&weight.to_be_bytes());
                        rdata.extend_from_slice(&port.to_be_bytes());
                        encode_name(target, &mut rdata);
                        33
                    }
                    Record::A(ip) => {
                        rdata.extend_from_slice(&ip.octets());
                        1
                    }
                };
                out.extend_from_slice(&rtype.to_be_bytes());
                out.extend_from_slice(&[0, 1]); // IN
                out.extend_from_slice(&60u32.to_be_bytes()); // TTL
                out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                out.extend_from_slice(&rdata);
            }
            let _ = sock.send_to(&out, from);
        }
    });
    DnsServer {
        port,
        stop,
        thread: Some(thread),
    }
}
