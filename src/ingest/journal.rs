//! The request journal: a WAL consumer that keeps what answers promised beyond the life of
//! their WAL records: the Idempotency-Keys with their first answers, and the stream counters
//! (`accepted`, `rejected`, `dead_lettered`).
//!
//! Files in the data dir: `idempotency.log` (one JSON line per key, appended, compacted at
//! start-up) and `journal.json` (the WAL position covered and the counters up to it, replaced
//! durably). Order: append the keys → fsync the log → save `journal.json` → let the WAL
//! delete what it covers. Start-up restores both, then reads the WAL records after the
//! position, so nothing a 200 promised is lost to a crash.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::idempotency::{IdempotencyTable, KEY_TTL_MICROS, now_micros};
use crate::durable;
use crate::pipeline::{Header, decode_header};
use crate::schema::registry::Registry;
use crate::wal::{Lsn, Wal, WalReader};

/// The journal's name as a WAL consumer.
pub const CONSUMER: &str = "journal";
const LOG_FILE: &str = "idempotency.log";
const SNAPSHOT_FILE: &str = "journal.json";
const SYNC_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Serialize, Deserialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub accepted: u64,
    pub rejected: u64,
    pub dead_lettered: u64,
}

impl Counters {
    fn add(&mut self, header: &Header) {
        self.accepted += header.counts.accepted;
        if header.counts.dead_lettered {
            self.dead_lettered += header.counts.invalid;
        } else {
            self.rejected += header.counts.invalid;
        }
    }
}

/// Everything up to `lsn`, counted.
#[derive(Serialize, Deserialize, Default, Debug, Clone)]
pub struct Snapshot {
    pub lsn: Lsn,
    pub counters: BTreeMap<String, Counters>,
}

#[derive(Serialize, Deserialize)]
struct LogLine {
    stream: String,
    key: String,
    received_at_micros: i64,
    answer: String,
}

/// Restores the idempotency table and the stream counters from the journal and the WAL;
/// returns the snapshot the journal consumer continues from.
pub fn restore(
    data_dir: &Path,
    wal: &Wal,
    table: &IdempotencyTable,
    registry: &Registry,
) -> std::io::Result<Snapshot> {
    let snapshot: Snapshot = match std::fs::read(data_dir.join(SNAPSHOT_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::other(format!("{SNAPSHOT_FILE} is damaged: {e}")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
        Err(e) => return Err(e),
    };
    restore_log(&data_dir.join(LOG_FILE), table)?;
    let mut live = snapshot.counters.clone();
    let mut reader = wal.read_from(snapshot.lsn + 1);
    while let Some((_, payload)) = reader.read(Duration::ZERO).map_err(std::io::Error::other)? {
        let Ok(header) = decode_header(&payload) else { continue };
        live.entry(header.stream.clone()).or_default().add(&header);
        if let Some(answer) = header.answer {
            table.remember(&header.stream, &answer.key, Bytes::from(answer.body), header.received_at_micros);
        }
    }
    for stream in registry.list() {
        let counters = live.get(stream.name.as_ref()).copied().unwrap_or_default();
        stream.stats.accepted.store(counters.accepted, Ordering::Relaxed);
        stream.stats.rejected.store(counters.rejected, Ordering::Relaxed);
        stream.stats.dead_lettered.store(counters.dead_lettered, Ordering::Relaxed);
    }
    tracing::info!(idempotency_keys = table.len(), journal_lsn = snapshot.lsn, "request journal restored");
    Ok(snapshot)
}

/// Loads the unexpired keys of the log and rewrites it with only those.
fn restore_log(path: &Path, table: &IdempotencyTable) -> std::io::Result<()> {
    let mut kept = String::new();
    match File::open(path) {
        Ok(file) => {
            for line in BufReader::new(file).lines() {
                let line = line?;
                // A line cut by a crash is skipped: its record is still in the WAL.
                let Ok(entry) = serde_json::from_str::<LogLine>(&line) else { continue };
                if now_micros() - entry.received_at_micros < KEY_TTL_MICROS {
                    let answer = Bytes::from(entry.answer.into_bytes());
                    table.remember(&entry.stream, &entry.key, answer, entry.received_at_micros);
                    kept.push_str(&line);
                    kept.push('\n');
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    durable::write_file(path, kept.as_bytes())
}

/// The journal consumer. Runs until `stop` is set and it has read what is durable.
pub fn run(
    data_dir: PathBuf,
    wal: Arc<Wal>,
    mut reader: WalReader,
    mut snapshot: Snapshot,
    stop: Arc<AtomicBool>,
) {
    let log_path = data_dir.join(LOG_FILE);
    let mut log = match OpenOptions::new().create(true).append(true).open(&log_path) {
        Ok(file) => file,
        Err(error) => {
            tracing::error!(%error, path = %log_path.display(), "open the idempotency log");
            return;
        }
    };
    let mut done = reader.next_lsn() - 1;
    let mut last_sync = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let idle = match reader.read(if stopping { Duration::ZERO } else { SYNC_INTERVAL }) {
            Ok(Some((lsn, payload))) => {
                if let Ok(header) = decode_header(&payload) {
                    if let Err(error) = append_key(&mut log, &header) {
                        tracing::error!(%error, "append to the idempotency log");
                        std::thread::sleep(SYNC_INTERVAL);
                        reader = wal.read_from(done + 1);
                        continue;
                    }
                    snapshot.counters.entry(header.stream.clone()).or_default().add(&header);
                }
                done = lsn;
                false
            }
            Ok(None) => true,
            Err(error) => {
                tracing::error!(%error, "read the WAL for the request journal");
                std::thread::sleep(SYNC_INTERVAL);
                true
            }
        };
        if done > snapshot.lsn && (idle || last_sync.elapsed() >= SYNC_INTERVAL) {
            let previous = snapshot.lsn;
            snapshot.lsn = done;
            match save(&data_dir, &log, &snapshot) {
                Ok(()) => {
                    wal.checkpoint(CONSUMER, done);
                    last_sync = Instant::now();
                }
                Err(error) => {
                    snapshot.lsn = previous;
                    tracing::error!(%error, "save the request journal");
                }
            }
        }
        if stopping && idle {
            return;
        }
    }
}

fn save(data_dir: &Path, log: &File, snapshot: &Snapshot) -> std::io::Result<()> {
    log.sync_data()?;
    let bytes = serde_json::to_vec(snapshot).expect("a journal snapshot serialises");
    durable::write_file(&data_dir.join(SNAPSHOT_FILE), &bytes)
}

/// Appends the Idempotency-Key of a request to the log, if it carried one.
fn append_key(log: &mut File, header: &Header) -> std::io::Result<()> {
    let Some(answer) = &header.answer else { return Ok(()) };
    let line = LogLine {
        stream: header.stream.clone(),
        key: answer.key.clone(),
        received_at_micros: header.received_at_micros,
        answer: String::from_utf8_lossy(&answer.body).into_owned(),
    };
    let mut text = serde_json::to_string(&line).expect("a log line serialises");
    text.push('\n');
    log.write_all(text.as_bytes())
}
