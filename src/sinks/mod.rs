//! Sinks: where accepted events end up. Each runs on its own thread, reads the WAL in order
//! from its own checkpoint, and reports its health for `/readyz`.

pub mod parquet;
pub mod postgres;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
