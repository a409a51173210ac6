//! The Parquet sink's durable state, `{data_dir}/sinks/parquet.json`: what makes delivery
//! exactly once across crashes.
//!
//! - `committed[key] = (lsn, rows)`: for each output (stream and hour, or stream's dead
//!   letters and day), every row of records before `lsn` and the first `rows` rows of record
//!   `lsn` are in committed files. A replay skips them.
//! - `checkpoint`: every record up to it is fully in committed files; the WAL may delete them
//!   and replay starts after it.
//! - `pending`: files fsynced under their in-progress name whose commit is decided (this
//!   state was saved with them) but whose rename may not have happened. Start-up finishes
//!   those renames (roll forward), so a commit is all-or-nothing.
//! - `delivered`: rows committed per stream, for the stream counters.
//!
//! Commit order: fsync the file → save this state (with the pending rename) → rename →
//! fsync the folder. A crash before the save leaves an in-progress file that start-up
//! deletes and replay rewrites; a crash after it is rolled forward.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable;
use crate::wal::Lsn;

#[derive(Serialize, Deserialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub lsn: Lsn,
    pub rows: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PendingRename {
    pub from: PathBuf,
    pub to: PathBuf,
}

#[derive(Serialize, Deserialize, Default, Debug)]
pub struct SinkState {
    pub checkpoint: Lsn,
    pub committed: BTreeMap<String, Committed>,
    pub pending: Vec<PendingRename>,
    pub delivered: BTreeMap<String, u64>,
}

impl SinkState {
    pub fn load(path: &Path) -> std::io::Result<SinkState> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::other(format!("{} is damaged: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SinkState::default()),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            durable::create_dir_all(dir)?;
        }
        durable::write_file(path, &serde_json::to_vec(self).expect("sink state serialises"))
    }

    /// Finishes the renames a crash interrupted. Returns how many were completed.
    pub fn roll_forward(&mut self) -> std::io::Result<usize> {
        let mut finished = 0;
        for rename in self.pending.drain(..) {
            if rename.from.exists() {
                durable::rename(&rename.from, &rename.to)?;
                finished += 1;
            } else if !rename.to.exists() {
                tracing::error!(file = %rename.to.display(), "a committed file is missing from the output");
            }
        }
        Ok(finished)
    }

    /// Rows of record `lsn` for output `key` that are already committed (all of them when the
    /// record is older than the output's mark).
    pub fn rows_done(&self, key: &str, lsn: Lsn, rows: u64) -> u64 {
        match self.committed.get(key) {
            Some(mark) if lsn < mark.lsn => rows,
            Some(mark) if lsn == mark.lsn => mark.rows.min(rows),
            _ => 0,
        }
    }

    /// Drops marks that replay (which starts after the checkpoint) can no longer meet.
    pub fn prune(&mut self) {
        let checkpoint = self.checkpoint;
        self.committed.retain(|_, mark| mark.lsn > checkpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_done_follows_the_mark() {
        let mut state = SinkState::default();
        state.committed.insert("s/1".into(), Committed { lsn: 10, rows: 3 });
        assert_eq!(state.rows_done("s/1", 9, 5), 5);
        assert_eq!(state.rows_done("s/1", 10, 5), 3);
        assert_eq!(state.rows_done("s/1", 11, 5), 0);
        assert_eq!(state.rows_done("s/2", 9, 5), 0);
    }

    #[test]
    fn roll_forward_finishes_interrupted_renames() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("_a.inprogress");
        std::fs::write(&from, b"x").unwrap();
        let to = dir.path().join("a.parquet");
        let mut state =
            SinkState { pending: vec![PendingRename { from, to: to.clone() }], ..SinkState::default() };
        assert_eq!(state.roll_forward().unwrap(), 1);
        assert!(to.exists());
        assert!(state.pending.is_empty());
    }
}
