//! Completed non-INVITE server transactions over UDP (RFC 3261 §17.2.2,
//! "Completed" state): the final response went out, and until Timer J
//! (64·T1, 32 s by default) every retransmission of the request gets that
//! response again. Nothing else of the transaction is needed, so its key
//! and response are copied into a chunk shared by the transactions that
//! completed in the same second, and the chunk is dropped whole once Timer J
//! has passed for all of them.
//!
//! Why not leave them in the transaction table: a burst of registrations
//! leaves one completed transaction per new binding for 32 s, a handful of
//! small heap blocks each, interleaved with the bindings made at the same
//! moment. When they go, every heap page they shared with a binding stays
//! resident: ~1.3 KB of memory per binding for ~0.5 KB of live data
//! (`bench/run`, memory scenario). A chunk is one large block whose pages
//! go back whole.

use super::{Peer, TxKey};
use bytes::Bytes;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::time::{Duration, Instant};

/// A chunk takes the transactions completing within this window, so each
/// is kept at least Timer J and at most Timer J plus the window.
const WINDOW: Duration = Duration::from_secs(1);
/// Room for keys and responses in one chunk (~150 answers to REGISTER).
const CHUNK_BYTES: usize = 64 * 1024;
const CHUNK_RECORDS: usize = 256;

struct Record {
    hash: u64,
    peer: Peer,
    start: u32,
    key_len: u32,
    response_len: u32,
}

struct Chunk {
    opened: Instant,
    data: Vec<u8>,
    records: Vec<Record>,
}

impl Chunk {
    fn new(opened: Instant, need: usize) -> Chunk {
        Chunk {
            opened,
            data: Vec::with_capacity(CHUNK_BYTES.max(need)),
            records: Vec::with_capacity(CHUNK_RECORDS),
        }
    }

    fn fits(&self, need: usize) -> bool {
        self.records.len() < CHUNK_RECORDS && self.data.len() + need <= self.data.capacity()
    }
}

#[derive(Clone, Copy)]
struct Slot {
    /// Sequence number of the chunk (see `CompletedNonInvite::first`).
    chunk: u64,
    record: u32,
}

/// The index is keyed by a keyed (SipHash) hash of the transaction key, so
/// it needs no second hashing.
#[derive(Default)]
struct PassHasher(u64);

impl Hasher for PassHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

pub(crate) struct CompletedNonInvite {
    /// Timer J.
    lifetime: Duration,
    hasher: RandomState,
    index: HashMap<u64, Slot, BuildHasherDefault<PassHasher>>,
    chunks: VecDeque<Chunk>,
    /// Sequence number of `chunks[0]`.
    first: u64,
}

impl CompletedNonInvite {
    pub fn new(lifetime: Duration) -> CompletedNonInvite {
        CompletedNonInvite {
            lifetime,
            hasher: RandomState::new(),
            index: HashMap::default(),
            chunks: VecDeque::new(),
            first: 0,
        }
    }

    pub fn set_lifetime(&mut self, lifetime: Duration) {
        self.lifetime = lifetime;
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Keeps `response`, the final answer of the transaction `key` sent to
    /// `peer`. Two keys of the same 64-bit keyed hash are not told apart:
    /// the newer wins, and a retransmission of the older would be taken for
    /// a new request.
    pub fn insert(&mut self, key: &TxKey, peer: Peer, response: &[u8], now: Instant) {
        let need = encoded_key_len(key) + response.len();
        let open_new = match self.chunks.back() {
            Some(c) => now >= c.opened + WINDOW || !c.fits(need),
            None => true,
        };
        if open_new {
            self.chunks.push_back(Chunk::new(now, need));
        }
        let seq = self.first + self.chunks.len() as u64 - 1;
        let chunk = self.chunks.back_mut().expect("pushed above");
        let start = chunk.data.len();
        encode_key(key, &mut chunk.data);
        let key_len = chunk.data.len() - start;
        chunk.data.extend_from_slice(response);
        let hash = self.hasher.hash_one(key);
        chunk.records.push(Record {
            hash,
            peer,
            start: start as u32,
            key_len: key_len as u32,
            response_len: response.len() as u32,
        });
        let record = (chunk.records.len() - 1) as u32;
        self.index.insert(hash, Slot { chunk: seq, record });
    }

    /// The response to resend for a retransmission of `key`'s request.
    pub fn lookup(&self, key: &TxKey) -> Option<(Peer, Bytes)> {
        let slot = self.index.get(&self.hasher.hash_one(key))?;
        let chunk = &self.chunks[(slot.chunk - self.first) as usize];
        let r = &chunk.records[slot.record as usize];
        let key_end = (r.start + r.key_len) as usize;
        let mut wanted = Vec::with_capacity(r.key_len as usize);
        encode_key(key, &mut wanted);
        if chunk.data[r.start as usize..key_end] != wanted[..] {
            return None;
        }
        let response = &chunk.data[key_end..key_end + r.response_len as usize];
        Some((r.peer, Bytes::copy_from_slice(response)))
    }

    /// When the oldest chunk is due to go.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.chunks.front().map(|c| c.opened + WINDOW + self.lifetime)
    }

    /// Drops every chunk whose transactions all reached Timer J by `now`.
    pub fn expire(&mut self, now: Instant) {
        while self.next_expiry().is_some_and(|at| at <= now) {
            let chunk = self.chunks.pop_front().expect("has a front");
            for (i, r) in chunk.records.iter().enumerate() {
                if let MapEntry::Occupied(e) = self.index.entry(r.hash) {
                    if e.get().chunk == self.first && e.get().record == i as u32 {
                        e.remove();
                    }
                }
            }
            self.first += 1;
        }
    }

    /// Gives back the index's room after a burst.
    pub fn shrink(&mut self, slack: usize) {
        if self.index.capacity() > 4 * self.index.len() + slack {
            self.index.shrink_to(2 * self.index.len() + slack / 4);
        }
        if self.chunks.capacity() > 64 && self.chunks.capacity() > 4 * self.chunks.len() {
            self.chunks.shrink_to(2 * self.chunks.len());
        }
    }
}

/// Key bytes: method, sent-by (each length-prefixed), then the branch.
fn encode_key(key: &TxKey, out: &mut Vec<u8>) {
    for part in [key.method.as_str(), key.sent_by.as_str()] {
        out.extend_from_slice(&(part.len() as u16).to_le_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(key.branch.as_bytes());
}

fn encoded_key_len(key: &TxKey) -> usize {
    4 + key.method.as_str().len() + key.sent_by.len() + key.branch.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::method::Method;
    use crate::sip::transaction::TransportKind;

    const J: Duration = Duration::from_secs(32);

    fn key(branch: &str) -> TxKey {
        TxKey {
            branch: branch.to_string(),
            method: Method::Register,
            sent_by: "127.0.0.1:5070".to_string(),
            server: true,
        }
    }

    fn peer() -> Peer {
        Peer {
            transport: TransportKind::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
        }
    }

    #[test]
    fn a_kept_response_is_found_by_its_key_only() {
        let mut c = CompletedNonInvite::new(J);
        let now = Instant::now();
        c.insert(&key("z9hG4bK1"), peer(), b"SIP/2.0 200 OK one", now);
        c.insert(&key("z9hG4bK2"), peer(), b"SIP/2.0 200 OK two", now);
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.lookup(&key("z9hG4bK2")).unwrap(),
            (peer(), Bytes::from_static(b"SIP/2.0 200 OK two"))
        );
        assert_eq!(&c.lookup(&key("z9hG4bK1")).unwrap().1[..], b"SIP/2.0 200 OK one");
        assert!(c.lookup(&key("z9hG4bK3")).is_none());
        let mut options = key("z9hG4bK1");
        options.method = Method::Options;
        assert!(c.lookup(&options).is_none());
    }

    #[test]
    fn responses_stay_for_timer_j_and_go_within_the_window_after() {
        let mut c = CompletedNonInvite::new(J);
        let start = Instant::now();
        // Three seconds of completions, with responses big enough to fill
        // several chunks per second.
        let body = vec![b'x'; 2000];
        for i in 0..300u32 {
            let at = start + Duration::from_millis(u64::from(i) * 10);
            c.insert(&key(&format!("z9hG4bK{i}")), peer(), &body, at);
        }
        assert!(c.chunks.len() > 3, "{} chunks", c.chunks.len());
        for t in [J, J + Duration::from_millis(1500), J + Duration::from_millis(2990)] {
            c.expire(start + t);
            for i in 0..300u32 {
                let completed = Duration::from_millis(u64::from(i) * 10);
                let kept = c.lookup(&key(&format!("z9hG4bK{i}"))).is_some();
                if completed + J > t {
                    assert!(kept, "{i} gone before Timer J at {t:?}");
                }
                if completed + J + WINDOW <= t {
                    assert!(!kept, "{i} kept past Timer J and the window at {t:?}");
                }
            }
        }
        c.expire(start + J + 4 * WINDOW);
        assert_eq!((c.len(), c.chunks.len(), c.next_expiry()), (0, 0, None));
    }

    #[test]
    fn a_response_larger_than_a_chunk_gets_its_own() {
        let mut c = CompletedNonInvite::new(J);
        let now = Instant::now();
        let big = vec![b'y'; CHUNK_BYTES * 2];
        c.insert(&key("z9hG4bKbig"), peer(), &big, now);
        c.insert(&key("z9hG4bKsmall"), peer(), b"small", now);
        assert_eq!(c.lookup(&key("z9hG4bKbig")).unwrap().1.len(), big.len());
        assert_eq!(&c.lookup(&key("z9hG4bKsmall")).unwrap().1[..], b"small");
        assert_eq!(c.chunks.len(), 2);
    }
}
