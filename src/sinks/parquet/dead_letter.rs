//! Dead letters (SPEC §6): invalid events kept as NDJSON under
//! `{target}/_dead_letter/{stream}/date=YYYY-MM-DD/`, one object per line with the time the
//! request arrived, the reason, the event's place in its request and its original text.
//! Lines are buffered per stream and day and written as one file at `max_age`; the sink
//! commits it like a Parquet file (see `state`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::layout;
use super::writer::Finished;
use crate::durable;
use crate::pipeline::Batch;
use crate::schema::decode::Location;
use crate::schema::values::format_rfc3339_micros;
use crate::wal::Lsn;

/// A buffer is written out early when it reaches this size.
pub const BUFFER_BYTES_MAX: usize = 8 << 20;

pub struct Pending {
    dir: PathBuf,
    lines: String,
    since: Instant,
    pub stream: String,
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
}

impl Pending {
    pub fn is_full(&self) -> bool {
        self.lines.len() >= BUFFER_BYTES_MAX
    }
}

/// The output key of a stream's dead letters of one day.
pub fn key(target: &std::path::Path, batch: &Batch) -> (String, PathBuf) {
    let dir = layout::dead_letter_dir(target, &batch.header.stream, batch.header.received_at_micros);
    let day = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    (format!("{}/_dead_letter/{day}", batch.header.stream), dir)
}

#[derive(Default)]
pub struct DeadLetterBuffers {
    pub pending: HashMap<String, Pending>,
}

impl DeadLetterBuffers {
    pub fn add(&mut self, key: String, dir: PathBuf, lsn: Lsn, batch: &Batch) {
        let mut received_at = String::new();
        format_rfc3339_micros(batch.header.received_at_micros, &mut received_at);
        let pending = self.pending.entry(key).or_insert_with(|| Pending {
            dir,
            lines: String::new(),
            since: Instant::now(),
            stream: batch.header.stream.clone(),
            first_lsn: lsn,
            last_lsn: lsn,
        });
        pending.last_lsn = lsn;
        for letter in &batch.dead_letters {
            let mut line = serde_json::json!({
                "received_at": received_at,
                "reason": letter.reason,
                "raw": letter.raw,
            });
            let (place, number) = match letter.location {
                Location::Line(n) => ("line", n),
                Location::Index(n) => ("index", n),
            };
            line[place] = number.into();
            pending.lines.push_str(&line.to_string());
            pending.lines.push('\n');
        }
    }

    pub fn due(&self, max_age: Duration) -> Vec<String> {
        self.pending.iter().filter(|(_, p)| p.since.elapsed() >= max_age).map(|(k, _)| k.clone()).collect()
    }

    pub fn next_due(&self, max_age: Duration, now: Instant) -> Duration {
        self.pending
            .values()
            .map(|p| (p.since + max_age).saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::MAX)
    }

    /// Writes a buffer to its in-progress file, fsynced. The name comes from the first WAL
    /// record in it, so a replay writes the same file again.
    pub fn finish(pending: Pending, node_id: &str) -> std::io::Result<Finished> {
        durable::create_dir_all(&pending.dir)?;
        let name = format!("dl-{node_id}-{:020}.ndjson", pending.first_lsn);
        let in_progress = pending.dir.join(layout::in_progress_name(&name));
        std::fs::write(&in_progress, pending.lines.as_bytes())?;
        std::fs::File::open(&in_progress)?.sync_all()?;
        Ok(Finished { in_progress, committed: pending.dir.join(name), rows: 0 })
    }
}
