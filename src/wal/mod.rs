//! Write-ahead log. `ingest` appends each accepted batch and answers 200 only once the record
//! is durable; consumers (the sinks, the idempotency log) read it back, each from its own
//! checkpoint, and a segment is deleted once every consumer is past it.
//!
//! Invariants: records are numbered 1, 2, 3, ... without gaps; `durable_lsn` only grows;
//! a reader never reads past `durable_lsn`, so it never sees a partial record; a segment is
//! deleted only when every checkpoint is at or past its last record, and never while it is
//! the segment being written.
//!
//! Layout: `{data_dir}/wal/{first_lsn:020}.wal`, each a sequence of records (`record`).
//! Group commit: one writer thread takes every append waiting, writes them with one
//! `write`, fsyncs once (`wal.sync = "fsync"`), then answers them all.

pub mod reader;
pub mod record;
mod recovery;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::config::SyncMode;
pub use reader::WalReader;
pub use record::Lsn;

/// A segment is closed and a new one started past this size.
pub const SEGMENT_BYTES_TARGET: u64 = 64 << 20;

#[derive(Clone, Copy, Debug)]
pub struct WalOptions {
    pub sync: SyncMode,
    /// Appends are refused (503) while the segments on disk hold more than this.
    pub max_bytes: u64,
    pub segment_bytes: u64,
}
/// Appends waiting for the writer thread; more wait in the async queue of the channel.
const APPEND_QUEUE_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the WAL holds {held_bytes} bytes for lagging sinks, the limit wal.max_bytes is {max_bytes}")]
    Full { held_bytes: u64, max_bytes: u64 },
    #[error("the disk is full: {0}")]
    StorageFull(String),
    #[error("the WAL is poisoned by an earlier fsync failure; restart to recover from disk")]
    Poisoned,
    #[error("write the WAL: {0}")]
    Io(String),
    #[error("the WAL is closed")]
    Closed,
    #[error("the batch takes {bytes} bytes in the WAL, more than one record may hold ({max_bytes})")]
    TooLarge { bytes: usize, max_bytes: usize },
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the WAL ends at record {wal_end} but consumer \"{consumer}\" has already delivered up to record {checkpoint}: \
     the end of the WAL is gone (wal.sync = \"os\" and a power cut, or files removed by hand). Starting would \
     number new records like delivered ones and skip them. Restore the WAL, or start with a new data dir"
)]
pub struct BehindConsumer {
    pub consumer: String,
    pub checkpoint: Lsn,
    pub wal_end: Lsn,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error(
        "{path} is corrupt at byte {offset} ({problem}) and later segments follow: records after it were acknowledged; move the damaged file away to start without them"
    )]
    Corrupt { path: PathBuf, offset: u64, problem: &'static str },
}

struct AppendRequest {
    payload: Vec<u8>,
    done: oneshot::Sender<Result<Lsn, AppendError>>,
}

enum WriterMessage {
    Append(AppendRequest),
    /// Stop after the appends queued before it.
    Close,
}

#[derive(Debug, Clone)]
struct Segment {
    path: PathBuf,
    bytes: u64,
}

/// State shared by the writer thread, the readers and the appenders.
struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Highest record that is durable (written, and fsynced under `sync = "fsync"`).
    durable: Mutex<Lsn>,
    durable_changed: Condvar,
    /// First LSN → segment, in order; the last one is being written.
    segments: Mutex<BTreeMap<Lsn, Segment>>,
    bytes_held: AtomicU64,
    /// Durable position of each registered consumer, by name.
    checkpoints: Mutex<BTreeMap<String, Lsn>>,
    poisoned: AtomicBool,
    /// The last append failed for lack of space (cleared by the next that succeeds).
    storage_full: AtomicBool,
    /// The last append was refused for `wal.max_bytes` (cleared when segments are deleted).
    budget_full: AtomicBool,
    closed: AtomicBool,
}

pub struct Wal {
    shared: Arc<Shared>,
    sender: mpsc::Sender<WriterMessage>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Wal {
    /// Opens (and repairs: see `recovery`) the WAL in `dir` and starts its writer thread.
    pub fn open(dir: &Path, options: WalOptions) -> Result<Arc<Wal>, OpenError> {
        let recovered = recovery::recover(dir)?;
        let bytes_held = recovered.segments.values().map(|s| s.bytes).sum();
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            max_bytes: options.max_bytes,
            segment_bytes: options.segment_bytes,
            durable: Mutex::new(recovered.last_lsn),
            durable_changed: Condvar::new(),
            segments: Mutex::new(recovered.segments),
            bytes_held: AtomicU64::new(bytes_held),
            checkpoints: Mutex::new(BTreeMap::new()),
            poisoned: AtomicBool::new(false),
            storage_full: AtomicBool::new(false),
            budget_full: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        let (sender, receiver) = mpsc::channel(APPEND_QUEUE_MAX);
        let thread_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer::run(thread_shared, receiver, options.sync))
            .map_err(|source| OpenError::Io {
                action: "start the writer of",
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Arc::new(Wal { shared, sender, writer: Mutex::new(Some(writer)) }))
    }

    /// Appends one record; resolves once it is durable. Refused above `wal.max_bytes`.
    pub async fn append(&self, payload: Vec<u8>) -> Result<Lsn, AppendError> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(AppendError::Poisoned);
        }
        if payload.len() > record::PAYLOAD_BYTES_MAX {
            return Err(AppendError::TooLarge { bytes: payload.len(), max_bytes: record::PAYLOAD_BYTES_MAX });
        }
        let held_bytes = self.bytes_held();
        if held_bytes + payload.len() as u64 > self.shared.max_bytes {
            self.shared.budget_full.store(true, Ordering::Release);
            return Err(AppendError::Full { held_bytes, max_bytes: self.shared.max_bytes });
        }
        let (done, answer) = oneshot::channel();
        let request = WriterMessage::Append(AppendRequest { payload, done });
        self.sender.send(request).await.map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)?
    }

    /// Why appends would fail now, if they would (for `/readyz`).
    pub fn unwritable_reason(&self) -> Option<&'static str> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            Some("the WAL is poisoned by an fsync failure; restart to recover")
        } else if self.shared.storage_full.load(Ordering::Acquire) {
            Some("the disk of the WAL is full")
        } else if self.shared.budget_full.load(Ordering::Acquire) {
            Some("the WAL is full (wal.max_bytes): a sink is behind")
        } else {
            None
        }
    }

    pub fn durable_lsn(&self) -> Lsn {
        *self.shared.durable.lock().expect("durable lock is never poisoned")
    }

    /// Bytes of all segments on disk.
    pub fn bytes_held(&self) -> u64 {
        self.shared.bytes_held.load(Ordering::Relaxed)
    }

    /// Oldest record still on disk (`durable_lsn + 1` when there is none).
    pub fn first_lsn(&self) -> Lsn {
        let segments = self.shared.segments.lock().expect("segments lock is never poisoned");
        let durable = self.durable_lsn();
        segments.keys().next().copied().unwrap_or(durable + 1).min(durable + 1)
    }

    /// Registers a consumer whose records up to `checkpoint` are done; returns a reader
    /// positioned after it (or at the oldest record still on disk, for a new consumer).
    pub fn register(&self, name: &str, checkpoint: Lsn) -> Result<WalReader, BehindConsumer> {
        let wal_end = self.durable_lsn();
        if checkpoint > wal_end {
            return Err(BehindConsumer { consumer: name.to_owned(), checkpoint, wal_end });
        }
        let first = self.first_lsn();
        if checkpoint > 0 && checkpoint + 1 < first {
            tracing::error!(
                consumer = name,
                checkpoint,
                first_lsn = first,
                "the WAL no longer holds records this consumer has not delivered: its state is older than the WAL"
            );
        }
        let start = (checkpoint + 1).max(first);
        self.shared
            .checkpoints
            .lock()
            .expect("checkpoint lock is never poisoned")
            .insert(name.to_owned(), start - 1);
        Ok(WalReader::new(self.shared.clone(), start))
    }

    /// A reader from `lsn` that holds no checkpoint: for a look at the log (start-up scans,
    /// tests), not for a consumer that needs the records kept.
    pub fn read_from(&self, lsn: Lsn) -> WalReader {
        WalReader::new(self.shared.clone(), lsn.max(self.first_lsn()))
    }

    /// Records that `name` has made everything up to `lsn` durable on its side, and deletes
    /// the segments every consumer is done with. Call only after the consumer's own state is
    /// durable: a deleted segment cannot be replayed.
    pub fn checkpoint(&self, name: &str, lsn: Lsn) {
        let oldest = {
            let mut checkpoints = self.shared.checkpoints.lock().expect("checkpoint lock is never poisoned");
            let entry = checkpoints.entry(name.to_owned()).or_insert(lsn);
            *entry = (*entry).max(lsn);
            checkpoints.values().copied().min().unwrap_or(lsn)
        };
        self.delete_segments_through(oldest);
    }

    fn delete_segments_through(&self, oldest_checkpoint: Lsn) {
        let mut segments = self.shared.segments.lock().expect("segments lock is never poisoned");
        loop {
            let mut firsts = segments.keys().copied();
            let (Some(first), Some(next_first)) = (firsts.next(), firsts.next()) else { return };
            // The segment starting at `first` ends just before `next_first`.
            if next_first - 1 > oldest_checkpoint {
                return;
            }
            let segment = segments.remove(&first).expect("key listed above");
            match std::fs::remove_file(&segment.path) {
                Ok(()) => {
                    self.shared.bytes_held.fetch_sub(segment.bytes, Ordering::Relaxed);
                    self.shared.budget_full.store(false, Ordering::Release);
                    tracing::debug!(path = %segment.path.display(), "deleted a WAL segment every consumer is past");
                }
                Err(error) => {
                    tracing::warn!(path = %segment.path.display(), %error, "delete WAL segment");
                    segments.insert(first, segment);
                    return;
                }
            }
        }
    }

    /// Stops the writer after the appends already queued; readers can still read what is
    /// durable. Later appends fail with `Closed`.
    pub async fn close(&self) {
        let _ = self.sender.send(WriterMessage::Close).await;
        let handle = self.writer.lock().expect("writer lock is never poisoned").take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.durable_changed.notify_all();
    }
}

impl Shared {
    fn wait_for_durable_past(&self, lsn: Lsn, timeout: Duration) -> Lsn {
        let durable = self.durable.lock().expect("durable lock is never poisoned");
        let (durable, _) = self
            .durable_changed
            .wait_timeout_while(durable, timeout, |durable| {
                *durable < lsn && !self.closed.load(Ordering::Acquire)
            })
            .expect("durable lock is never poisoned");
        *durable
    }
}

pub fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format!("{first_lsn:020}.wal"))
}

#[cfg(test)]
mod tests;
