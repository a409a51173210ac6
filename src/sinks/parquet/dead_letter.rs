//! Dead letters (SPEC §6): invalid events kept as NDJSON under
//! `{target}/_dead_letter/{stream}/date=YYYY-MM-DD/`, one object per line with the time the
//! request arrived, the reason, the event's place in its request and its original text.
//! Lines are buffered per stream and day and written as one file (atomically) at `max_age`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::layout;
use crate::durable;
use crate::pipeline::Batch;
use crate::schema::decode::Location;
use crate::schema::values::format_rfc3339_micros;

/// A buffer is written out early when it reaches this size.
const BUFFER_BYTES_MAX: usize = 8 << 20;

struct Pending {
    lines: String,
    since: Instant,
}

pub struct DeadLetterWriter {
    target: PathBuf,
    node_id: String,
    max_age: Duration,
    pending: HashMap<PathBuf, Pending>,
    sequence: u64,
}

impl DeadLetterWriter {
    pub fn new(target: PathBuf, node_id: String, max_age: Duration) -> DeadLetterWriter {
        DeadLetterWriter { target, node_id, max_age, pending: HashMap::new(), sequence: 0 }
    }

    pub fn add(&mut self, batch: &Batch) -> std::io::Result<()> {
        let dir = layout::dead_letter_dir(&self.target, &batch.stream.name, batch.received_at_micros);
        let mut received_at = String::new();
        format_rfc3339_micros(batch.received_at_micros, &mut received_at);
        let pending = self
            .pending
            .entry(dir.clone())
            .or_insert_with(|| Pending { lines: String::new(), since: Instant::now() });
        for letter in &batch.dead_letters {
            let mut line = serde_json::json!({
                "received_at": received_at,
                "reason": letter.reason,
                "raw": letter.raw,
            });
            let (key, place) = match letter.location {
                Location::Line(n) => ("line", n),
                Location::Index(n) => ("index", n),
            };
            line[key] = place.into();
            pending.lines.push_str(&line.to_string());
            pending.lines.push('\n');
        }
        if pending.lines.len() >= BUFFER_BYTES_MAX {
            self.flush(&dir)?;
        }
        Ok(())
    }

    pub fn next_due(&self, now: Instant) -> Duration {
        self.pending
            .values()
            .map(|p| (p.since + self.max_age).saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::MAX)
    }

    pub fn flush_due(&mut self, now: Instant) -> std::io::Result<()> {
        let due: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) >= self.max_age)
            .map(|(dir, _)| dir.clone())
            .collect();
        due.iter().try_for_each(|dir| self.flush(dir))
    }

    pub fn flush_all(&mut self) -> std::io::Result<()> {
        let all: Vec<PathBuf> = self.pending.keys().cloned().collect();
        all.iter().try_for_each(|dir| self.flush(dir))
    }

    fn flush(&mut self, dir: &PathBuf) -> std::io::Result<()> {
        let Some(pending) = self.pending.remove(dir) else { return Ok(()) };
        self.sequence += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        durable::create_dir_all(dir)?;
        // `durable::write_file` writes under a hidden temporary name, then renames.
        durable::write_file(
            &dir.join(format!("dl-{}-{now:016}-{:06}.ndjson", self.node_id, self.sequence)),
            pending.lines.as_bytes(),
        )
    }
}
