//! Sinks: where accepted events end up. Each runs on its own thread, reads the WAL in order
//! from its own checkpoint, and reports its health for `/readyz`.

pub mod parquet;

use std::sync::atomic::{AtomicBool, Ordering};

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
