//! The PostgreSQL sink's local state, `{data_dir}/sinks/postgres.json`.
//!
//! - `checkpoint`: every WAL record up to it is committed in the database (or had nothing for
//!   it); replay starts after it. Deliveries past it are recognised by the ledger table.
//! - `delivered`: rows per stream committed by deliveries that end at or before the
//!   checkpoint. Start-up adds the ledger's rows past the checkpoint to get the exact count.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::durable;
use crate::wal::Lsn;

#[derive(Serialize, Deserialize, Default, Debug)]
pub struct SinkState {
    pub checkpoint: Lsn,
    pub delivered: BTreeMap<String, u64>,
}

impl SinkState {
    /// The saved state, or `None` when this data dir never had a PostgreSQL sink.
    pub fn load(path: &Path) -> std::io::Result<Option<SinkState>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::other(format!("{} is damaged: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            durable::create_dir_all(dir)?;
        }
        durable::write_file(path, &serde_json::to_vec(self).expect("sink state serialises"))
    }
}
