//! The time an engine is given: monotonic for its timers, wall clock for
//! what it records. Engines never read a clock; drivers call [`Now::read`].

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Now {
    /// Reads both clocks (drivers and tests only).
    pub fn read() -> Now {
        Now {
            mono: Instant::now(),
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// A `Now` for engine tests: the given instant, a fixed wall clock.
    #[cfg(test)]
    pub fn at(mono: Instant) -> Now {
        Now {
            mono,
            unix_ms: 1_800_000_000_000,
        }
    }

    pub fn unix_s(&self) -> u64 {
        self.unix_ms / 1000
    }
}
