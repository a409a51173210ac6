//! The HTTP front: the listener and its limits (`server`), the routes, and the mapping of
//! errors to status codes (`error`). It talks to `ingest` and the stream registry only.

pub mod access;
pub mod body;
pub mod error;
pub mod request_id;
pub mod routes;
pub mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::auth::KeyStore;
use crate::budget::MemoryBudget;
use crate::ingest::Ingestor;
use crate::metrics::HttpMetrics;
use crate::schema::registry::Registry;
use crate::sinks::SinkProgress;
use crate::wal::Wal;

/// Whether the node takes traffic: ready after start-up, draining after a stop signal.
#[derive(Debug, Default)]
pub struct Status {
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Status {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

pub struct AppState {
    pub keys: Arc<KeyStore>,
    pub rate_limiter: access::RateLimiter,
    pub registry: Arc<Registry>,
    /// For `/readyz` and `/metrics` only: whether appends can succeed, bytes held.
    pub wal: Arc<Wal>,
    pub budget: Arc<MemoryBudget>,
    pub metrics: Arc<HttpMetrics>,
    pub ingestor: Ingestor,
    pub status: Arc<Status>,
    pub sinks: Vec<(&'static str, Arc<SinkProgress>)>,
    pub max_body_bytes: u64,
    pub max_decompressed_bytes: u64,
    pub request_timeout: Duration,
}
