//! Sounds played to parties: prompts (once) and music on hold (looped),
//! as RTP (RFC 3550) every 20 ms from one thread for every party, out of
//! the party's own relay socket (so symmetric-RTP phones accept it). The
//! same thread, on the same tick, runs the mixes of bridges that are not
//! two talkers (`mixer`).
//!
//! A sound is read and encoded once per file and payload type (G.711
//! µ-law or A-law, 160 bytes a frame), so a packet costs a header and a
//! `send_to`: a thousand callers waiting on hold are a thousand sends per
//! tick, no decoding. Where to send is read per packet from the endpoint,
//! so a party that latches later (behind NAT) still hears the music.

use super::g711::{linear_to_alaw, linear_to_ulaw};
use super::relay::EndpointShared;
use super::EndpointId;
use foldhash::{HashMap, HashMapExt};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

const FRAME: usize = 160;
const TICK: Duration = Duration::from_millis(20);

/// A sound encoded for one payload type.
pub struct Encoded {
    bytes: Vec<u8>,
    payload_type: u8,
}

impl Encoded {
    /// Encodes 8 kHz samples as PCMU (0) or PCMA (8).
    pub fn new(samples: &[i16], payload_type: u8) -> Encoded {
        let bytes = samples
            .iter()
            .map(|s| {
                if payload_type == 8 {
                    linear_to_alaw(*s)
                } else {
                    linear_to_ulaw(*s)
                }
            })
            .collect();
        Encoded { bytes, payload_type }
    }

    fn frames(&self) -> usize {
        self.bytes.len().div_ceil(FRAME)
    }

    fn frame(&self, i: usize) -> &[u8] {
        &self.bytes[i * FRAME..((i + 1) * FRAME).min(self.bytes.len())]
    }
}

/// Encoded sounds by file, payload type and modification time (a file
/// replaced on disk is read again).
#[derive(Default)]
pub struct SoundCache {
    sounds: HashMap<(PathBuf, u8), (Option<SystemTime>, Arc<Encoded>)>,
}

impl SoundCache {
    pub fn get(&mut self, file: &Path, payload_type: u8) -> Result<Arc<Encoded>, String> {
        let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
        let key = (file.to_path_buf(), payload_type);
        if let Some((at, sound)) = self.sounds.get(&key) {
            if *at == modified {
                return Ok(sound.clone());
            }
        }
        let samples = super::playback::load_wav(file).map_err(|e| e.to_string())?;
        let sound = Arc::new(Encoded::new(&samples, payload_type));
        self.sounds.insert(key, (modified, sound.clone()));
        Ok(sound)
    }
}

/// One party hearing a sound.
struct Stream {
    sound: Arc<Encoded>,
    looped: bool,
    next_frame: usize,
    socket: Arc<UdpSocket>,
    to: Arc<EndpointShared>,
    ssrc: u32,
    seq: u16,
    ts: u32,
    first: bool,
}

impl Stream {
    /// Sends the next frame; false once a prompt is over.
    fn send(&mut self, packet: &mut [u8; 12 + FRAME]) -> bool {
        if self.next_frame >= self.sound.frames() {
            if !self.looped || self.sound.frames() == 0 {
                return false;
            }
            self.next_frame = 0;
        }
        let frame = self.sound.frame(self.next_frame);
        packet[0] = 0x80;
        // Marker on the first packet of a talkspurt (RFC 3551 §4.1).
        packet[1] = self.sound.payload_type | if self.first { 0x80 } else { 0 };
        packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
        packet[4..8].copy_from_slice(&self.ts.to_be_bytes());
        packet[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        packet[12..12 + frame.len()].copy_from_slice(frame);
        if let Some(dest) = self.to.rtp_destination() {
            // Non-blocking: a packet the send buffer cannot take is dropped.
            let _ = self.socket.send_to(&packet[..12 + frame.len()], dest);
        }
        self.first = false;
        self.next_frame += 1;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(frame.len() as u32);
        true
    }
}

/// Called with an endpoint whose prompt has been sent.
pub type PlaybackDone = Arc<dyn Fn(EndpointId) + Send + Sync>;

struct Streams {
    by_endpoint: HashMap<EndpointId, Stream>,
    /// Mixed bridges, by bridge.
    mixes: HashMap<u64, super::mixer::Mix>,
}

/// The playing thread and its streams.
pub struct Player {
    shared: Arc<(Mutex<Streams>, Condvar)>,
    started: bool,
    done: PlaybackDone,
}

impl Player {
    pub fn new(done: PlaybackDone) -> Player {
        Player {
            shared: Arc::new((
                Mutex::new(Streams {
                    by_endpoint: HashMap::new(),
                    mixes: HashMap::new(),
                }),
                Condvar::new(),
            )),
            started: false,
            done,
        }
    }

    /// Plays `sound` to the party of endpoint `id` from `socket`, replacing
    /// what it heard; `looped` plays it until stopped.
    pub(super) fn start(
        &mut self,
        id: EndpointId,
        sound: Arc<Encoded>,
        looped: bool,
        socket: Arc<UdpSocket>,
        to: Arc<EndpointShared>,
    ) {
        self.start_thread();
        let stream = Stream {
            sound,
            looped,
            next_frame: 0,
            socket,
            to,
            ssrc: rand::random(),
            seq: rand::random(),
            ts: rand::random(),
            first: true,
        };
        let (lock, wake) = &*self.shared;
        lock.lock().expect("player lock").by_endpoint.insert(id, stream);
        wake.notify_one();
    }

    fn start_thread(&mut self) {
        if !self.started {
            self.started = true;
            let (shared, done) = (self.shared.clone(), self.done.clone());
            std::thread::Builder::new()
                .name("player".into())
                .spawn(move || run(&shared, &done))
                .expect("spawn the player thread");
        }
    }

    /// Sets (or with None, ends) the mix of bridge `group`; returns the
    /// mix it replaces.
    pub(super) fn set_mix(&mut self, group: u64, mix: Option<super::mixer::Mix>) -> Option<super::mixer::Mix> {
        if mix.is_some() {
            self.start_thread();
        } else if !self.started {
            return None;
        }
        let (lock, wake) = &*self.shared;
        let mut streams = lock.lock().expect("player lock");
        let old = match mix {
            Some(m) => streams.mixes.insert(group, m),
            None => streams.mixes.remove(&group),
        };
        wake.notify_one();
        old
    }

    /// Stops what endpoint `id`'s party hears (no completion is reported).
    pub fn stop(&mut self, id: EndpointId) {
        if self.started {
            self.shared.0.lock().expect("player lock").by_endpoint.remove(&id);
        }
    }

    /// Endpoints hearing a sound now.
    pub fn playing(&self) -> usize {
        self.shared.0.lock().expect("player lock").by_endpoint.len()
    }
}

/// The playing thread: every 20 ms one frame to every stream; asleep
/// while nothing plays.
fn run(shared: &(Mutex<Streams>, Condvar), done: &PlaybackDone) {
    let (lock, wake) = shared;
    let mut packet = [0u8; 12 + FRAME];
    let mut next = Instant::now();
    let mut finished = Vec::new();
    loop {
        {
            let mut streams = lock.lock().expect("player lock");
            while streams.by_endpoint.is_empty() && streams.mixes.is_empty() {
                streams = wake.wait(streams).expect("player lock");
                next = Instant::now();
            }
            for mix in streams.mixes.values_mut() {
                mix.tick(&mut packet);
            }
            streams.by_endpoint.retain(|id, s| {
                let more = s.send(&mut packet);
                if !more {
                    finished.push(*id);
                }
                more
            });
        }
        for id in finished.drain(..) {
            done(id);
        }
        next += TICK;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > TICK * 5 {
            // Far behind (the machine stalled): start the pace again
            // rather than bursting the missed frames.
            next = now;
        }
    }
}
