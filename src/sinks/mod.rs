//! Sinks: where accepted events end up. Each runs on its own thread, reads the WAL in order
//! from its own checkpoint, and reports its health for `/readyz`.

pub mod parquet;
pub mod postgres;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const RETRY_PAUSE_MIN: Duration = Duration::from_millis(100);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(5);

/// "ok" or "degraded", as `/readyz` shows it.
#[derive(Debug, Default)]
pub struct SinkHealth {
    degraded: AtomicBool,
}

impl SinkHealth {
    pub fn set_degraded(&self, degraded: bool) {
        self.degraded.store(degraded, Ordering::Relaxed);
    }

    pub fn status(&self) -> &'static str {
        if self.degraded.load(Ordering::Relaxed) { "degraded" } else { "ok" }
    }
}

/// What the rest of the process sees of a sink.
#[derive(Default)]
pub struct SinkProgress {
    /// How far the sink has come in the WAL (for the Parquet sink: the last record written
    /// to an open or committed file; for PostgreSQL: its checkpoint).
    pub applied: AtomicU64,
    pub health: SinkHealth,
}

/// Capped exponential backoff with jitter, for retrying an unreachable destination: each pause
/// is a random time between half and all of the current step, and the step doubles from
/// 100 ms up to 5 s.
#[derive(Default)]
pub struct Backoff {
    step: Option<Duration>,
}

impl Backoff {
    pub fn next_pause(&mut self) -> Duration {
        let step = self.step.map_or(RETRY_PAUSE_MIN, |s| (s * 2).min(RETRY_PAUSE_MAX));
        self.step = Some(step);
        let random = getrandom::u32().unwrap_or(u32::MAX / 2);
        step / 2 + step.mul_f64(f64::from(random) / f64::from(u32::MAX) / 2.0)
    }

    /// Starts again from the shortest pause (after a success).
    pub fn reset(&mut self) {
        self.step = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut backoff = Backoff::default();
        let first = backoff.next_pause();
        assert!(first >= RETRY_PAUSE_MIN / 2 && first <= RETRY_PAUSE_MIN);
        for _ in 0..20 {
            let pause = backoff.next_pause();
            assert!(pause <= RETRY_PAUSE_MAX);
        }
        assert!(backoff.next_pause() >= RETRY_PAUSE_MAX / 2);
        backoff.reset();
        assert!(backoff.next_pause() <= RETRY_PAUSE_MIN);
    }
}
