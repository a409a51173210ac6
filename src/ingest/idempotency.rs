//! Idempotency-Key (SPEC §4): a request repeated with the same key and stream within 24 hours
//! is not ingested again; its first answer is returned.
//!
//! The key and the first answer travel inside the batch's WAL record, so they are durable
//! exactly when the events are. A WAL consumer (`run_log`) copies them to
//! `{data_dir}/idempotency.log` before the WAL may delete the record, and start-up rebuilds
//! the table from that log plus the WAL records after the log's position.
//!
//! Bounded: at most `KEYS_MAX` keys are remembered; past it the oldest are forgotten early.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::durable;
use crate::pipeline::decode_header;
use crate::wal::{Lsn, Wal, WalReader};

/// How long a key is remembered.
pub const KEY_TTL_MICROS: i64 = 24 * 3_600 * 1_000_000;
/// Most keys remembered at once (about 300 bytes each).
pub const KEYS_MAX: usize = 200_000;
const LOG_FILE: &str = "idempotency.log";
const POSITION_FILE: &str = "idempotency.position";
/// The WAL consumer name of the idempotency log.
pub const CONSUMER: &str = "idempotency";
const SYNC_INTERVAL: Duration = Duration::from_millis(500);

enum Entry {
    InFlight,
    Done { body: Bytes, received_at_micros: i64 },
}

#[derive(Default)]
struct Table {
    entries: HashMap<(String, String), Entry>,
    /// Keys in the order they were completed, for expiry and the size bound.
    order: VecDeque<(i64, (String, String))>,
}

#[derive(Default)]
pub struct IdempotencyTable {
    table: Mutex<Table>,
}

pub enum Begin {
    /// First time: go ahead, then `complete` the reservation.
    Fresh(Reservation),
    /// Seen before: here is the first answer.
    Replay(Bytes),
    /// The same key is being processed right now.
    InFlight,
}

/// A key being processed; dropped without `complete`, it frees the key again.
pub struct Reservation {
    table: Arc<IdempotencyTable>,
    key: Option<(String, String)>,
}

impl IdempotencyTable {
    pub fn begin(self: &Arc<Self>, stream: &str, key: &str) -> Begin {
        let mut table = self.table.lock().expect("idempotency lock is never poisoned");
        let id = (stream.to_owned(), key.to_owned());
        match table.entries.get(&id) {
            Some(Entry::Done { body, received_at_micros })
                if now_micros() - received_at_micros < KEY_TTL_MICROS =>
            {
                Begin::Replay(body.clone())
            }
            Some(Entry::InFlight) => Begin::InFlight,
            _ => {
                table.entries.insert(id.clone(), Entry::InFlight);
                Begin::Fresh(Reservation { table: self.clone(), key: Some(id) })
            }
        }
    }

    /// Remembers a first answer (from a request just answered, or found at start-up).
    pub fn remember(&self, stream: &str, key: &str, body: Bytes, received_at_micros: i64) {
        if now_micros() - received_at_micros >= KEY_TTL_MICROS {
            return;
        }
        let mut table = self.table.lock().expect("idempotency lock is never poisoned");
        let id = (stream.to_owned(), key.to_owned());
        table.entries.insert(id.clone(), Entry::Done { body, received_at_micros });
        table.order.push_back((received_at_micros, id));
        let oldest_allowed = now_micros() - KEY_TTL_MICROS;
        while table.order.len() > KEYS_MAX || table.order.front().is_some_and(|(t, _)| *t < oldest_allowed) {
            let Some((time, id)) = table.order.pop_front() else { break };
            // Only forget the entry if it is still the one this slot was recorded for.
            if matches!(table.entries.get(&id), Some(Entry::Done { received_at_micros, .. }) if *received_at_micros == time)
            {
                table.entries.remove(&id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.table.lock().expect("idempotency lock is never poisoned").order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Reservation {
    pub fn complete(mut self, body: Bytes, received_at_micros: i64, _lsn: Lsn) {
        if let Some((stream, key)) = self.key.take() {
            self.table.remember(&stream, &key, body, received_at_micros);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(id) = self.key.take() {
            let mut table = self.table.table.lock().expect("idempotency lock is never poisoned");
            if matches!(table.entries.get(&id), Some(Entry::InFlight)) {
                table.entries.remove(&id);
            }
        }
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[derive(Serialize, Deserialize)]
struct LogLine {
    stream: String,
    key: String,
    received_at_micros: i64,
    answer: String,
}

/// Loads the table from the log and the WAL, compacts the log, and returns the WAL position
/// the log covers.
pub fn restore(data_dir: &Path, wal: &Wal, table: &IdempotencyTable) -> std::io::Result<Lsn> {
    let log_path = data_dir.join(LOG_FILE);
    let position = read_position(data_dir)?;
    let mut kept = Vec::new();
    match File::open(&log_path) {
        Ok(file) => {
            for line in BufReader::new(file).lines() {
                let line = line?;
                // A line cut by a crash is ignored: its record is still in the WAL.
                let Ok(entry) = serde_json::from_str::<LogLine>(&line) else { continue };
                if now_micros() - entry.received_at_micros < KEY_TTL_MICROS {
                    table.remember(
                        &entry.stream,
                        &entry.key,
                        Bytes::from(entry.answer.clone()),
                        entry.received_at_micros,
                    );
                    kept.push(line);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut compacted = kept.join("\n");
    if !compacted.is_empty() {
        compacted.push('\n');
    }
    durable::write_file(&log_path, compacted.as_bytes())?;
    let mut reader = wal.read_from(position + 1);
    let mut restored = 0usize;
    while let Some((_, payload)) = reader.read(Duration::ZERO).map_err(std::io::Error::other)? {
        if let Ok(header) = decode_header(&payload)
            && let Some(answer) = header.answer
        {
            table.remember(&header.stream, &answer.key, Bytes::from(answer.body), header.received_at_micros);
            restored += 1;
        }
    }
    tracing::info!(keys = table.len(), from_wal = restored, "idempotency keys restored");
    Ok(position)
}

fn read_position(data_dir: &Path) -> std::io::Result<Lsn> {
    match std::fs::read_to_string(data_dir.join(POSITION_FILE)) {
        Ok(text) => {
            text.trim().parse().map_err(|_| std::io::Error::other(format!("{POSITION_FILE} is damaged")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// The WAL consumer that copies keys to the log: append, fsync, save the position, then let
/// the WAL delete what it covers. Runs until `stop` is set and it has read what is durable.
pub fn run_log(data_dir: PathBuf, wal: Arc<Wal>, mut reader: WalReader, stop: Arc<AtomicBool>) {
    let log_path = data_dir.join(LOG_FILE);
    let mut log = match OpenOptions::new().create(true).append(true).open(&log_path) {
        Ok(file) => file,
        Err(error) => {
            tracing::error!(%error, path = %log_path.display(), "open the idempotency log");
            return;
        }
    };
    let mut done = reader.next_lsn() - 1;
    let mut saved = done;
    let mut last_sync = std::time::Instant::now();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let idle = match reader.read(if stopping { Duration::ZERO } else { SYNC_INTERVAL }) {
            Ok(Some((lsn, payload))) => {
                if let Err(error) = append_key(&mut log, &payload) {
                    tracing::error!(%error, "append to the idempotency log");
                    std::thread::sleep(SYNC_INTERVAL);
                    reader = wal.read_from(done + 1);
                    continue;
                }
                done = lsn;
                false
            }
            Ok(None) => true,
            Err(error) => {
                tracing::error!(%error, "read the WAL for the idempotency log");
                std::thread::sleep(SYNC_INTERVAL);
                true
            }
        };
        if done > saved && (idle || last_sync.elapsed() >= SYNC_INTERVAL) {
            let synced = log.sync_data().and_then(|()| {
                durable::write_file(&data_dir.join(POSITION_FILE), done.to_string().as_bytes())
            });
            match synced {
                Ok(()) => {
                    wal.checkpoint(CONSUMER, done);
                    saved = done;
                    last_sync = std::time::Instant::now();
                }
                Err(error) => tracing::error!(%error, "save the idempotency log"),
            }
        }
        if stopping && idle {
            return;
        }
    }
}

/// Appends the key of a WAL payload to the log, if it carries one.
fn append_key(log: &mut File, payload: &[u8]) -> std::io::Result<()> {
    let Ok(header) = decode_header(payload) else { return Ok(()) };
    let Some(answer) = header.answer else { return Ok(()) };
    let line = LogLine {
        stream: header.stream,
        key: answer.key,
        received_at_micros: header.received_at_micros,
        answer: String::from_utf8_lossy(&answer.body).into_owned(),
    };
    let mut text = serde_json::to_string(&line).expect("a log line serialises");
    text.push('\n');
    log.write_all(text.as_bytes())
}
