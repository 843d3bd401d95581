//! Reading WAV sounds (prompts, music on hold): 8 kHz mono 16-bit PCM,
//! which `player` encodes to PCMU or PCMA and sends 20 ms per packet.

use std::path::Path;

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
