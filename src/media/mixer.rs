//! Mixing, for bridges that are not two talkers (a supervisor listening,
//! whispering or barging in): each member's RTP is decoded (G.711 µ-law or
//! A-law) into its slot as it arrives (the relay's I/O thread); every
//! 20 ms the player's thread sums, for each member, the latest frame of
//! every member it hears (never its own), clips, encodes in the member's
//! codec and sends it from the member's relay socket. A member that sent
//! nothing since the last tick adds silence. Two-talker bridges never come
//! here: they keep the forwarding fast path.

use super::g711::{alaw_to_linear, linear_to_alaw, linear_to_ulaw, ulaw_to_linear};
use super::relay::EndpointShared;
use super::EndpointId;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};

pub(super) const FRAME: usize = 160;

/// The latest 20 ms a member sent, decoded.
#[derive(Default)]
pub struct MixSlot {
    frame: Mutex<Option<[i16; FRAME]>>,
}

impl MixSlot {
    /// Takes one RTP packet's payload (the I/O thread); other payload
    /// types than G.711 (telephone-event, comfort noise) are ignored.
    pub(super) fn put(&self, packet: &[u8]) {
        let Some((pt, payload)) = rtp_payload(packet) else {
            return;
        };
        let decode: fn(u8) -> i16 = match pt {
            0 => ulaw_to_linear,
            8 => alaw_to_linear,
            _ => return,
        };
        let mut frame = [0i16; FRAME];
        for (out, code) in frame.iter_mut().zip(payload) {
            *out = decode(*code);
        }
        *self.frame.lock().expect("mix slot") = Some(frame);
    }

    /// The frame sent since the last tick, or silence.
    fn take(&self) -> [i16; FRAME] {
        self.frame.lock().expect("mix slot").take().unwrap_or([0; FRAME])
    }
}

/// Payload type and payload of an RTP packet (RFC 3550 §5.1: CSRCs and a
/// header extension skipped).
fn rtp_payload(packet: &[u8]) -> Option<(u8, &[u8])> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let mut offset = 12 + 4 * usize::from(packet[0] & 0x0F);
    if packet[0] & 0x10 != 0 {
        let words = u16::from_be_bytes([*packet.get(offset + 2)?, *packet.get(offset + 3)?]);
        offset += 4 + 4 * usize::from(words);
    }
    Some((packet[1] & 0x7F, packet.get(offset..)?))
}

/// One member of a mix.
pub struct MixMember {
    pub id: EndpointId,
    pub(super) slot: Arc<MixSlot>,
    /// Indices (in the mix) of the members it hears.
    pub hears: Vec<usize>,
    pub(super) socket: Arc<UdpSocket>,
    pub(super) to: Arc<EndpointShared>,
    /// PCMU (0) or PCMA (8).
    pub payload_type: u8,
    ssrc: u32,
    seq: u16,
    ts: u32,
}

impl MixMember {
    pub(super) fn new(
        id: EndpointId,
        slot: Arc<MixSlot>,
        hears: Vec<usize>,
        socket: Arc<UdpSocket>,
        to: Arc<EndpointShared>,
        payload_type: u8,
    ) -> MixMember {
        MixMember {
            id,
            slot,
            hears,
            socket,
            to,
            payload_type,
            ssrc: rand::random(),
            seq: rand::random(),
            ts: rand::random(),
        }
    }
}

/// The members of one bridge being mixed.
pub struct Mix {
    pub members: Vec<MixMember>,
}

impl Mix {
    /// One 20 ms step: every member hears the sum of those it hears.
    pub(super) fn tick(&mut self, packet: &mut [u8; 12 + FRAME]) {
        let frames: Vec<[i16; FRAME]> = self.members.iter().map(|m| m.slot.take()).collect();
        for m in &mut self.members {
            if m.hears.is_empty() {
                continue;
            }
            let Some(dest) = m.to.rtp_destination() else { continue };
            packet[0] = 0x80;
            packet[1] = m.payload_type;
            packet[2..4].copy_from_slice(&m.seq.to_be_bytes());
            packet[4..8].copy_from_slice(&m.ts.to_be_bytes());
            packet[8..12].copy_from_slice(&m.ssrc.to_be_bytes());
            for i in 0..FRAME {
                let sum: i32 = m.hears.iter().map(|&h| i32::from(frames[h][i])).sum();
                let s = sum.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
                packet[12 + i] = if m.payload_type == 8 {
                    linear_to_alaw(s)
                } else {
                    linear_to_ulaw(s)
                };
            }
            let _ = m.socket.send_to(&packet[..], dest);
            m.seq = m.seq.wrapping_add(1);
            m.ts = m.ts.wrapping_add(FRAME as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_found_past_csrcs_and_extensions_and_only_g711_is_mixed() {
        let mut p = vec![0x80, 8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        p.extend([linear_to_alaw(1000); FRAME]);
        assert_eq!(rtp_payload(&p).map(|(pt, b)| (pt, b.len())), Some((8, FRAME)));
        // One CSRC and a one-word extension.
        let mut q = vec![
            0x91, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9, 9, 9, 9, 0xBE, 0xDE, 0, 1, 7, 7, 7, 7,
        ];
        q.extend([linear_to_ulaw(-500); FRAME]);
        let (pt, payload) = rtp_payload(&q).unwrap();
        assert_eq!((pt, payload.len(), payload[0]), (0, FRAME, linear_to_ulaw(-500)));
        let slot = MixSlot::default();
        slot.put(&p);
        let f = slot.take();
        assert!((f[0] - 1000).abs() < 64, "{}", f[0]);
        assert_eq!(slot.take(), [0; FRAME], "nothing new: silence");
        let mut dtmf = p.clone();
        dtmf[1] = 101;
        slot.put(&dtmf);
        assert_eq!(slot.take(), [0; FRAME], "telephone-event is not audio");
    }
}
