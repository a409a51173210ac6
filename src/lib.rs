//! floodway: a telemetry ingestion engine.
//!
//! The path of one request:
//! 1. `http::server` accepts the connection; `http::routes::ingest` checks the headers and
//!    reads the body within `server.max_body_bytes` (`http::body`).
//! 2. `ingest` decompresses it within `server.max_decompressed_bytes` (`ingest::decompress`).
//! 3. `schema::decode` reads every event straight from the bytes, checks it against the
//!    stream's schema (`schema::types`) and appends it to Arrow columns (`schema::columns`).
//! 4. `budget` reserves memory for the batch (429 when full).
//! 5. `pipeline` hands the batch to every sink's bounded queue.
//! 6. `sinks::parquet` splits it by hour and writes Hive-partitioned Parquet files, committed
//!    atomically; invalid events under `dead_letter` go to NDJSON files beside them.
//!
//! `app` starts all of this in order and stops it in reverse; `config` reads the settings;
//! `schema::registry` keeps the streams in the data dir.

pub mod app;
pub mod bench;
pub mod budget;
pub mod cli;
pub mod config;
pub mod durable;
pub mod http;
pub mod ingest;
pub mod pipeline;
pub mod schema;
pub mod sinks;
pub mod wal;
