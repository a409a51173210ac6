//! The Parquet sink: a dedicated thread that takes batches in order, splits them by the hour
//! of their time field, and keeps one open file per stream and hour. A file is committed (fsync
//! and atomic rename) when it reaches `max_rows`, `max_age` after its first event, when its
//! stream's schema version changes, and at shutdown.
//!
//! Memory: at most `OPEN_FILES_MAX` files are open, each buffering at most one row group of
//! `writer::ROW_GROUP_BYTES_MAX` encoded bytes: 128 MiB in the worst case, on top of the
//! memory budget (a batch's permit is released once the batch is encoded).

pub mod dead_letter;
pub mod layout;
pub mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{RecordBatch, UInt32Array};

use super::SinkHealth;
use crate::config::ParquetConfig;
use crate::durable;
use crate::pipeline::{Batch, SinkMessage};
use crate::schema::registry::Stream;
use dead_letter::DeadLetterWriter;
use writer::{OpenFile, WriteError};

/// Open files at once; past it the oldest is committed early.
const OPEN_FILES_MAX: usize = 16;
/// Longest sleep between checks of file ages.
const TICK_MAX: Duration = Duration::from_millis(500);

pub struct ParquetSink {
    config: ParquetConfig,
    node_id: String,
    files: HashMap<(Arc<str>, i64), (OpenFile, Arc<Stream>)>,
    dead_letters: DeadLetterWriter,
    health: Arc<SinkHealth>,
    sequence: u64,
}

impl ParquetSink {
    pub fn new(config: ParquetConfig, node_id: String, health: Arc<SinkHealth>) -> ParquetSink {
        let dead_letters = DeadLetterWriter::new(config.target.clone(), node_id.clone(), config.max_age);
        ParquetSink { config, node_id, files: HashMap::new(), dead_letters, health, sequence: 0 }
    }

    /// Removes files a crash left in progress: they were never committed, so no reader saw them.
    pub fn remove_leftovers(&self) -> std::io::Result<usize> {
        remove_in_progress(&self.config.target)
    }

    /// Runs until `Shutdown` (or until every sender is gone), then commits everything.
    pub fn run(mut self, receiver: Receiver<SinkMessage>) {
        loop {
            match receiver.recv_timeout(self.next_wake()) {
                Ok(SinkMessage::Batch(batch)) => self.write_batch(&batch),
                Ok(SinkMessage::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.commit_expired();
        }
        let keys: Vec<_> = self.files.keys().cloned().collect();
        for key in keys {
            self.commit(&key);
        }
        if let Err(e) = self.dead_letters.flush_all() {
            tracing::error!(sink = "parquet", error = %e, "write dead letters at shutdown");
        }
        tracing::info!(sink = "parquet", "flushed and stopped");
    }

    fn next_wake(&self) -> Duration {
        let now = Instant::now();
        let oldest = self.files.values().map(|(file, _)| file.opened_at).min();
        let file_due =
            oldest.map_or(TICK_MAX, |opened| (opened + self.config.max_age).saturating_duration_since(now));
        file_due.min(self.dead_letters.next_due(now)).clamp(Duration::from_millis(1), TICK_MAX)
    }

    fn write_batch(&mut self, batch: &Batch) {
        if batch.records.num_rows() > 0 {
            for (hour, records) in split_by_hour(&batch.records, batch.schema.time_index) {
                if let Err(e) = self.write_hour(batch, hour, &records) {
                    self.health.set_degraded(true);
                    tracing::error!(sink = "parquet", stream = %batch.stream.name, error = %e, "write parquet");
                }
            }
        }
        if !batch.dead_letters.is_empty()
            && let Err(e) = self.dead_letters.add(batch)
        {
            tracing::error!(sink = "parquet", stream = %batch.stream.name, error = %e, "write dead letters");
        }
    }

    fn write_hour(&mut self, batch: &Batch, hour: i64, records: &RecordBatch) -> Result<(), WriteError> {
        let key = (batch.stream.name.clone(), hour);
        let mut offset = 0usize;
        while offset < records.num_rows() {
            let stale = self.files.get(&key).is_some_and(|(f, _)| f.schema_version != batch.schema.version);
            if stale {
                self.commit(&key);
            }
            if !self.files.contains_key(&key) {
                self.make_room();
                let file = self.open(batch, hour)?;
                self.files.insert(key.clone(), (file, batch.stream.clone()));
            }
            let (file, _) = self.files.get_mut(&key).expect("opened above");
            let room = usize::try_from(self.config.max_rows - file.rows).unwrap_or(usize::MAX);
            let take = room.min(records.num_rows() - offset);
            let written = file.write(&records.slice(offset, take));
            if let Err(e) = written {
                if let Some((file, _)) = self.files.remove(&key) {
                    tracing::error!(
                        sink = "parquet",
                        rows = file.rows,
                        "abandoning a file after a write error"
                    );
                    file.abandon();
                }
                return Err(e);
            }
            offset += take;
            if file.rows >= self.config.max_rows {
                self.commit(&key);
            }
        }
        Ok(())
    }

    fn open(&mut self, batch: &Batch, hour: i64) -> Result<OpenFile, WriteError> {
        self.sequence += 1;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros();
        let name = format!("part-{}-{now:016}-{:06}.parquet", self.node_id, self.sequence);
        let dir = layout::partition_dir(&self.config.target, &batch.stream.name, hour);
        OpenFile::create(dir, &name, &batch.stream.name, &batch.schema, self.config.compression)
    }

    fn make_room(&mut self) {
        while self.files.len() >= OPEN_FILES_MAX {
            let oldest = self.files.iter().min_by_key(|(_, (f, _))| f.opened_at).map(|(k, _)| k.clone());
            match oldest {
                Some(key) => self.commit(&key),
                None => break,
            }
        }
    }

    fn commit_expired(&mut self) {
        let max_age = self.config.max_age;
        let expired: Vec<_> = self
            .files
            .iter()
            .filter(|(_, (file, _))| file.opened_at.elapsed() >= max_age)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.commit(&key);
        }
        if let Err(e) = self.dead_letters.flush_due(Instant::now()) {
            tracing::error!(sink = "parquet", error = %e, "write dead letters");
        }
    }

    fn commit(&mut self, key: &(Arc<str>, i64)) {
        let Some((file, stream)) = self.files.remove(key) else { return };
        match file.commit() {
            Ok((path, rows)) => {
                stream.stats.delivered_parquet.fetch_add(rows, Ordering::Relaxed);
                self.health.set_degraded(false);
                tracing::debug!(sink = "parquet", stream = %stream.name, rows, path = %path.display(), "committed file");
            }
            Err(e) => {
                self.health.set_degraded(true);
                tracing::error!(sink = "parquet", stream = %stream.name, error = %e, "commit parquet file");
            }
        }
    }
}

/// Splits a batch into one batch per hour of its time column (usually a single hour).
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

fn remove_in_progress(dir: &std::path::Path) -> std::io::Result<usize> {
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
            removed += remove_in_progress(&path)?;
        } else if entry
            .file_name()
            .to_str()
            .is_some_and(|n| layout::is_in_progress(n) || durable::is_temporary(n))
        {
            tracing::warn!(path = %path.display(), "removing a file left in progress by an earlier run");
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}
