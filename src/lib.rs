//! floodway: a telemetry ingestion engine.
//!
//! The path of one request:
//! 1. `http::server` accepts the connection; `http::routes::ingest` checks the headers and
//!    reads the body within `server.max_body_bytes` (`http::body`).
//! 2. `ingest` answers a repeated Idempotency-Key from `ingest::idempotency`, else
//!    decompresses the body within `server.max_decompressed_bytes` (`ingest::decompress`).
//! 3. `schema::decode` reads every event straight from the bytes, checks it against the
//!    stream's schema (`schema::types`) and appends it to Arrow columns (`schema::columns`).
//! 4. `pipeline` encodes the batch as a WAL payload; `budget` reserves memory for it (429).
//! 5. `wal` appends it with group commit and fsync; then the request is answered 200.
//! 6. WAL consumers, each from its own checkpoint: `sinks::parquet` writes Hive-partitioned
//!    Parquet files and dead letters exactly once (`sinks::parquet::state`), and
//!    `ingest::journal` keeps the counters and Idempotency-Keys past the WAL's life.
//!
//! `app` starts all of this in order (recovery before ready) and stops it in reverse;
//! `config` reads the settings; `schema::registry` keeps the streams in the data dir;
//! `bench` is the load generator, a plain HTTP client.

pub mod app;
pub mod auth;
pub mod bench;
pub mod budget;
pub mod cli;
pub mod config;
pub mod durable;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod pipeline;
pub mod schema;
pub mod sinks;
pub mod tls;
pub mod wal;
