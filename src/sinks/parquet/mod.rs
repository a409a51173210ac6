//! The Parquet sink: a WAL consumer on its own thread. It reads records in order from its
//! checkpoint, splits each batch by the hour of its time field, and keeps one open file per
//! stream and hour. A file is committed when it reaches `max_rows`, `max_age` after it was
//! opened, when its stream's schema version changes, and at shutdown; `state` makes every
//! commit all-or-nothing and every replay skip what is already committed, so each event lands
//! in exactly one committed file.
//!
//! The target is a local folder or an S3-compatible bucket (`bucket`): for a bucket, files
//! are staged in the data dir and uploaded at commit.
//!
//! Memory: at most `OPEN_FILES_MAX` files are open, each buffering at most one row group of
//! `writer::ROW_GROUP_BYTES_MAX` encoded bytes: 128 MiB in the worst case.

pub mod bucket;
pub mod dead_letter;
pub mod layout;
pub mod state;
pub mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{RecordBatch, UInt32Array};

use super::{Backoff, SinkProgress};
use crate::config::{ParquetConfig, ParquetTarget};
use crate::durable;
use crate::pipeline::{self, Batch};
use crate::schema::registry::Registry;
use crate::schema::types::StreamSchema;
use crate::wal::{Lsn, Wal, WalReader};
use bucket::{Bucket, BucketError};
use dead_letter::DeadLetterBuffers;
use state::{Committed, PendingRename, SinkState};
use writer::{Finished, OpenFile};

/// The sink's name as a WAL consumer and in `/readyz`.
pub const NAME: &str = "parquet";
/// Below the state folder: where files for a bucket are written before their upload.
const STAGING_DIR: &str = "parquet-staging";
/// Open files at once; past it the oldest is committed early.
const OPEN_FILES_MAX: usize = 16;
/// Longest sleep between checks of file ages.
const TICK_MAX: Duration = Duration::from_millis(500);
/// How often the checkpoint is saved when only time passes.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

struct OpenOutput {
    file: OpenFile,
    stream: String,
    first_lsn: Lsn,
    /// How far this file reaches: rows of record `last.lsn` up to `last.rows`.
    last: Committed,
}

pub struct ParquetSink {
    config: ParquetConfig,
    /// Where files are written: the target folder, or the staging folder of a bucket.
    root: PathBuf,
    /// The bucket committed files are uploaded to, for an s3:// target.
    bucket: Option<Bucket>,
    node_id: String,
    registry: Arc<Registry>,
    wal: Arc<Wal>,
    progress: Arc<SinkProgress>,
    state: SinkState,
    state_path: PathBuf,
    outputs: HashMap<String, OpenOutput>,
    dead_letters: DeadLetterBuffers,
    applied: Lsn,
    checkpoint_saved_at: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Write(#[from] writer::WriteError),
    #[error("{action}: {source}")]
    Io { action: &'static str, source: std::io::Error },
    #[error(transparent)]
    Read(#[from] crate::wal::reader::ReadError),
    #[error(transparent)]
    Bucket(#[from] BucketError),
}

fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> SinkError {
    move |source| SinkError::Io { action, source }
}

impl ParquetSink {
    /// Loads the sink's state, finishes interrupted commits, removes files a crash left in
    /// progress, and sets the stream counters from what is committed.
    pub fn open(
        config: ParquetConfig,
        node_id: String,
        registry: Arc<Registry>,
        wal: Arc<Wal>,
        state_dir: &Path,
    ) -> Result<ParquetSink, SinkError> {
        let (root, bucket) = match &config.target {
            // The state records file paths: absolute ones stay right whatever the working folder.
            ParquetTarget::Folder(path) => {
                (std::path::absolute(path).map_err(io("resolve the Parquet target"))?, None)
            }
            ParquetTarget::Bucket(s3) => (state_dir.join(STAGING_DIR), Some(Bucket::open(s3, state_dir)?)),
        };
        let state_path = state_dir.join(format!("{NAME}.json"));
        let mut state = SinkState::load(&state_path).map_err(io("load the Parquet sink state"))?;
        let finished = state.roll_forward().map_err(io("finish interrupted commits"))?;
        if finished > 0 {
            tracing::info!(sink = NAME, files = finished, "finished commits interrupted by a crash");
        }
        state.save(&state_path).map_err(io("save the Parquet sink state"))?;
        if bucket.is_some() {
            // Staged files were never uploaded (or their upload is repeated by the replay).
            match std::fs::remove_dir_all(&root) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(SinkError::Io { action: "empty the Parquet staging folder", source: e });
                }
                _ => {}
            }
        } else if let Err(error) = remove_in_progress(&root, &node_id) {
            // A target that cannot be read now (a mount not there yet, say) must not keep the
            // node from taking events: the WAL holds them and the sink retries.
            tracing::error!(sink = NAME, target = %root.display(), %error, "clean the Parquet target");
        }
        for (stream, rows) in &state.delivered {
            if let Some(stream) = registry.get(stream) {
                stream.stats.delivered_parquet.store(*rows, Ordering::Relaxed);
            }
        }
        let applied = state.checkpoint;
        let progress = Arc::new(SinkProgress::default());
        progress.applied.store(applied, Ordering::Relaxed);
        Ok(ParquetSink {
            config,
            root,
            bucket,
            node_id,
            registry,
            wal,
            progress,
            state,
            state_path,
            outputs: HashMap::new(),
            dead_letters: DeadLetterBuffers::default(),
            applied,
            checkpoint_saved_at: Instant::now(),
        })
    }

    pub fn progress(&self) -> Arc<SinkProgress> {
        self.progress.clone()
    }

    /// The WAL position this sink resumes after; register it before any consumer checkpoints.
    pub fn checkpoint_lsn(&self) -> Lsn {
        self.state.checkpoint
    }

    /// Runs until `stop` is set and everything durable in the WAL is applied, then commits
    /// every open file. A failure abandons the open files and replays from the checkpoint.
    pub fn run(mut self, mut reader: WalReader, stop: Arc<AtomicBool>) {
        if let Some(bucket) = &mut self.bucket {
            match bucket.check() {
                Ok(()) => tracing::info!(sink = NAME, target = bucket.url(), "bucket reachable"),
                Err(error) => {
                    // Not fatal: the store may come back (or the bucket be created); until
                    // then the WAL keeps the events and every upload is retried.
                    tracing::error!(sink = NAME, %error, "the bucket cannot be used yet; events wait in the WAL");
                    self.progress.health.set_degraded(true);
                }
            }
        }
        let mut pause = Backoff::default();
        loop {
            let stopping = stop.load(Ordering::Acquire);
            let wait = if stopping { Duration::ZERO } else { self.next_wake() };
            let step = self.step(&mut reader, wait);
            match step {
                Ok(idle) => {
                    pause.reset();
                    if stopping && idle {
                        break;
                    }
                }
                Err(error) => {
                    let wait = pause.next_pause();
                    tracing::error!(sink = NAME, %error, retry_in_ms = wait.as_millis() as u64, "delivery failed, replaying from the checkpoint");
                    self.progress.health.set_degraded(true);
                    self.abandon_open_files();
                    sleep_unless_stopped(wait, &stop);
                    reader = self.wal.read_from(self.state.checkpoint + 1);
                    if stopping {
                        break;
                    }
                }
            }
        }
        match self.commit_all() {
            Ok(()) => tracing::info!(sink = NAME, checkpoint = self.state.checkpoint, "flushed and stopped"),
            Err(error) => {
                tracing::error!(sink = NAME, %error, "flush at shutdown failed: the WAL keeps the rest")
            }
        }
    }

    /// Applies the next record, if one comes within `wait`, then commits what is due.
    /// Returns whether there was nothing to read.
    fn step(&mut self, reader: &mut WalReader, wait: Duration) -> Result<bool, SinkError> {
        let record = reader.read(wait)?;
        let idle = record.is_none();
        if let Some((lsn, payload)) = record {
            self.apply(lsn, &payload)?;
        }
        self.commit_due()?;
        if self.checkpoint_saved_at.elapsed() >= CHECKPOINT_INTERVAL {
            self.save_checkpoint()?;
        }
        Ok(idle)
    }

    fn next_wake(&self) -> Duration {
        let now = Instant::now();
        let oldest = self.outputs.values().map(|o| o.file.opened_at).min();
        let file_due =
            oldest.map_or(TICK_MAX, |opened| (opened + self.config.max_age).saturating_duration_since(now));
        file_due
            .min(self.dead_letters.next_due(self.config.max_age, now))
            .clamp(Duration::from_millis(1), TICK_MAX)
    }

    fn apply(&mut self, lsn: Lsn, payload: &[u8]) -> Result<(), SinkError> {
        assert!(lsn > self.applied, "records arrive in order");
        match pipeline::decode(payload) {
            Ok(batch) => self.apply_batch(lsn, &batch)?,
            // A record that cannot be read cannot be delivered; keeping the sink stuck on it
            // would stop every later record too.
            Err(error) => tracing::error!(sink = NAME, lsn, %error, "skipping an unreadable WAL record"),
        }
        self.applied = lsn;
        self.progress.applied.store(lsn, Ordering::Relaxed);
        Ok(())
    }

    fn apply_batch(&mut self, lsn: Lsn, batch: &Batch) -> Result<(), SinkError> {
        let header = &batch.header;
        let schema = self.registry.get(&header.stream).and_then(|s| s.schema_version(header.schema_version));
        let Some(schema) = schema else {
            tracing::error!(sink = NAME, lsn, stream = %header.stream, version = header.schema_version, "skipping a batch of an unknown stream or schema version");
            return Ok(());
        };
        if let Some(records) = &batch.records {
            for (hour, rows) in split_by_hour(records, schema.time_index) {
                let key = format!("{}/{hour}", header.stream);
                let total = rows.num_rows() as u64;
                let done = self.state.rows_done(&key, lsn, total);
                if done < total {
                    self.write_rows(&key, hour, &header.stream, &schema, lsn, &rows, done)?;
                }
            }
        }
        if !batch.dead_letters.is_empty() {
            let (key, dir) = dead_letter::key(&self.root, batch);
            if self.state.rows_done(&key, lsn, 1) == 0 {
                self.dead_letters.add(key.clone(), dir, lsn, batch);
                if self.dead_letters.pending.get(&key).is_some_and(|p| p.is_full()) {
                    self.commit_dead_letters(&key)?;
                }
            }
        }
        Ok(())
    }

    /// Writes rows `from..` of record `lsn`'s rows for output `key`.
    #[allow(clippy::too_many_arguments)]
    fn write_rows(
        &mut self,
        key: &str,
        hour: i64,
        stream: &str,
        schema: &Arc<StreamSchema>,
        lsn: Lsn,
        rows: &RecordBatch,
        from: u64,
    ) -> Result<(), SinkError> {
        let total = rows.num_rows() as u64;
        let mut offset = from;
        while offset < total {
            let stale = self.outputs.get(key).is_some_and(|o| o.file.schema_version != schema.version);
            if stale {
                self.commit(key)?;
            }
            if !self.outputs.contains_key(key) {
                self.make_room()?;
                let name = format!("part-{}-{lsn:020}-{offset:06}.parquet", self.node_id);
                let dir = layout::partition_dir(&self.root, stream, hour);
                let file = OpenFile::create(dir, &name, stream, schema, self.config.compression)?;
                let output = OpenOutput {
                    file,
                    stream: stream.to_owned(),
                    first_lsn: lsn,
                    last: Committed::default(),
                };
                self.outputs.insert(key.to_owned(), output);
            }
            let output = self.outputs.get_mut(key).expect("opened above");
            let room = self.config.max_rows - output.file.rows;
            let take = room.min(total - offset);
            output.file.write(&rows.slice(offset as usize, take as usize))?;
            offset += take;
            output.last = Committed { lsn, rows: offset };
            if output.file.rows >= self.config.max_rows {
                self.commit(key)?;
            }
        }
        Ok(())
    }

    fn make_room(&mut self) -> Result<(), SinkError> {
        while self.outputs.len() >= OPEN_FILES_MAX {
            let oldest = self.outputs.iter().min_by_key(|(_, o)| o.file.opened_at).map(|(k, _)| k.clone());
            match oldest {
                Some(key) => self.commit(&key)?,
                None => break,
            }
        }
        Ok(())
    }

    fn commit_due(&mut self) -> Result<(), SinkError> {
        let max_age = self.config.max_age;
        let due: Vec<String> = self
            .outputs
            .iter()
            .filter(|(_, o)| o.file.opened_at.elapsed() >= max_age)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.commit(&key)?;
        }
        for key in self.dead_letters.due(max_age) {
            self.commit_dead_letters(&key)?;
        }
        Ok(())
    }

    fn commit_all(&mut self) -> Result<(), SinkError> {
        let keys: Vec<String> = self.outputs.keys().cloned().collect();
        for key in keys {
            self.commit(&key)?;
        }
        let keys: Vec<String> = self.dead_letters.pending.keys().cloned().collect();
        for key in keys {
            self.commit_dead_letters(&key)?;
        }
        self.save_checkpoint()?;
        // Leave a clean state behind: no rename left to roll forward.
        self.state.save(&self.state_path).map_err(io("save the Parquet sink state"))
    }

    fn commit(&mut self, key: &str) -> Result<(), SinkError> {
        let Some(output) = self.outputs.remove(key) else { return Ok(()) };
        let finished = output.file.finish()?;
        self.record_commit(key, output.last, &output.stream, finished)
    }

    fn commit_dead_letters(&mut self, key: &str) -> Result<(), SinkError> {
        let Some(pending) = self.dead_letters.pending.remove(key) else { return Ok(()) };
        let mark = Committed { lsn: pending.last_lsn, rows: 1 };
        let stream = pending.stream.clone();
        let finished = DeadLetterBuffers::finish(pending, &self.node_id).map_err(io("write dead letters"))?;
        self.record_commit(key, mark, &stream, finished)
    }

    /// The commit protocol of `state`: record the decision durably, then rename. For a
    /// bucket: upload, then record (a crash in between replays and replaces the object).
    fn record_commit(
        &mut self,
        key: &str,
        mark: Committed,
        stream: &str,
        file: Finished,
    ) -> Result<(), SinkError> {
        let location = match &mut self.bucket {
            Some(bucket) => bucket.upload(&file.in_progress, &object_name(&self.root, &file.committed))?,
            None => {
                self.state
                    .pending
                    .push(PendingRename { from: file.in_progress.clone(), to: file.committed.clone() });
                file.committed.display().to_string()
            }
        };
        self.state.committed.insert(key.to_owned(), mark);
        *self.state.delivered.entry(stream.to_owned()).or_default() += file.rows;
        self.state.checkpoint = self.checkpoint();
        self.state.prune();
        self.state.save(&self.state_path).map_err(io("save the Parquet sink state"))?;
        if self.bucket.is_none() {
            durable::rename(&file.in_progress, &file.committed).map_err(io("commit a file"))?;
            self.state.pending.clear();
        }
        self.checkpoint_saved_at = Instant::now();
        self.wal.checkpoint(NAME, self.state.checkpoint);
        if let Some(stream) = self.registry.get(stream) {
            stream.stats.delivered_parquet.fetch_add(file.rows, Ordering::Relaxed);
        }
        self.progress.health.set_degraded(false);
        tracing::debug!(sink = NAME, stream, rows = file.rows, %location, "committed file");
        Ok(())
    }

    /// Every record up to here is fully in committed files.
    fn checkpoint(&self) -> Lsn {
        let open = self.outputs.values().map(|o| o.first_lsn);
        let buffered = self.dead_letters.pending.values().map(|p| p.first_lsn);
        open.chain(buffered).min().map_or(self.applied, |first| first - 1).max(self.state.checkpoint)
    }

    fn save_checkpoint(&mut self) -> Result<(), SinkError> {
        self.checkpoint_saved_at = Instant::now();
        let checkpoint = self.checkpoint();
        if checkpoint == self.state.checkpoint {
            return Ok(());
        }
        self.state.checkpoint = checkpoint;
        self.state.prune();
        self.state.save(&self.state_path).map_err(io("save the Parquet sink state"))?;
        self.wal.checkpoint(NAME, checkpoint);
        Ok(())
    }

    fn abandon_open_files(&mut self) {
        for (_, output) in self.outputs.drain() {
            output.file.abandon();
        }
        self.dead_letters.pending.clear();
        self.applied = self.state.checkpoint;
    }
}

/// Sleeps for `pause`, or less if `stop` is set meanwhile: a stop must not wait out a
/// retry pause of several seconds.
fn sleep_unless_stopped(pause: Duration, stop: &AtomicBool) {
    const SLICE: Duration = Duration::from_millis(20);
    let until = Instant::now() + pause;
    while !stop.load(Ordering::Acquire) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(SLICE));
    }
}

/// `a/b/c` for `{root}/a/b/c`: the name below the bucket's prefix.
fn object_name(root: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(root).expect("staged files are below the staging folder");
    let parts: Vec<_> = relative.iter().map(|part| part.to_string_lossy()).collect();
    parts.join("/")
}

/// Splits a batch into one batch per hour of its time column (usually a single hour), rows
/// kept in their order.
fn split_by_hour(records: &RecordBatch, time_index: usize) -> Vec<(i64, RecordBatch)> {
    let times = records.column(time_index).as_primitive::<TimestampMicrosecondType>();
    let first = layout::hour_of(times.value(0));
    if times.values().iter().all(|t| layout::hour_of(*t) == first) {
        return vec![(first, records.clone())];
    }
    let mut rows_by_hour: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (row, time) in times.values().iter().enumerate() {
        let row = u32::try_from(row).expect("a batch has fewer than 2^32 rows");
        rows_by_hour.entry(layout::hour_of(*time)).or_default().push(row);
    }
    rows_by_hour
        .into_iter()
        .map(|(hour, rows)| {
            let indices = UInt32Array::from(rows);
            let part =
                arrow_select::take::take_record_batch(records, &indices).expect("indices are in range");
            (hour, part)
        })
        .collect()
}

/// Removes the files this node left in progress: they were never committed, so no reader saw
/// them, and replay writes their rows again. Other nodes writing to the same target keep
/// theirs: those are still being written.
fn remove_in_progress(dir: &Path, node_id: &str) -> std::io::Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path: PathBuf = entry.path();
        if entry.file_type()?.is_dir() {
            removed += remove_in_progress(&path, node_id)?;
        } else if entry.file_name().to_str().and_then(layout::unfinished_owner) == Some(node_id) {
            tracing::info!(path = %path.display(), "removing a file left in progress by an earlier run");
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}
