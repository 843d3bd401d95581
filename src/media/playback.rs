//! Playing a WAV prompt as RTP (RFC 3550) to one party: 8 kHz mono 16-bit
//! PCM files, encoded to PCMU or PCMA, 20 ms per packet.

use super::g711::{linear_to_alaw, linear_to_ulaw};
use std::net::SocketAddr;
use std::net::UdpSocket;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PlaybackError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("no destination for media yet")]
    NoDestination,
}

/// Reads a prompt into 16-bit samples; it must be 8 kHz mono PCM.
pub fn load_wav(path: &Path) -> Result<Vec<i16>, PlaybackError> {
    let err = |reason: String| PlaybackError::File {
        path: path.display().to_string(),
        reason,
    };
    let reader = hound::WavReader::open(path).map_err(|e| err(e.to_string()))?;
    let spec = reader.spec();
    if spec.sample_rate != 8000 || spec.channels != 1 || spec.bits_per_sample != 16 {
        return Err(err(format!(
            "need 8000 Hz mono 16-bit PCM, got {} Hz {} channel(s) {} bit (convert with: sox in.wav -r 8000 -c 1 -b 16 out.wav)",
            spec.sample_rate, spec.channels, spec.bits_per_sample
        )));
    }
    reader
        .into_samples::<i16>()
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))
}

/// Sends `samples` as RTP with payload type 0 (PCMU) or 8 (PCMA), paced
/// at 20 ms. Returns when the prompt has been sent.
pub async fn play(samples: &[i16], payload_type: u8, socket: Arc<UdpSocket>, to: SocketAddr) {
    let ssrc: u32 = rand::random();
    let mut seq: u16 = rand::random();
    let mut ts: u32 = rand::random();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut packet = [0u8; 12 + 160];
    for (i, frame) in samples.chunks(160).enumerate() {
        tick.tick().await;
        packet[0] = 0x80;
        packet[1] = payload_type | if i == 0 { 0x80 } else { 0 }; // marker on the first packet
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        packet[4..8].copy_from_slice(&ts.to_be_bytes());
        packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
        for (j, s) in frame.iter().enumerate() {
            packet[12 + j] = if payload_type == 8 {
                linear_to_alaw(*s)
            } else {
                linear_to_ulaw(*s)
            };
        }
        let len = 12 + frame.len();
        // Non-blocking: a packet the send buffer cannot take is dropped.
        let _ = socket.send_to(&packet[..len], to);
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(frame.len() as u32);
    }
}
