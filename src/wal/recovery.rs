//! Opening the WAL after any stop, a crash included: every segment is checked record by
//! record. A torn or garbled tail of the last segment is cut off (it can only hold appends
//! that were never acknowledged: an answer waits for the whole group to be durable) and the
//! cut is logged. Damage followed by valid records (in a later segment, or later in the same
//! one) is refused: those records were acknowledged, and dropping them silently would break
//! the promise of a 200.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use super::record::{self, Decoded, LSN_MAX, Lsn};
use super::{OpenError, Segment};
use crate::durable;

pub struct Recovered {
    pub segments: BTreeMap<Lsn, Segment>,
    /// Last valid record (0 when the WAL is empty).
    pub last_lsn: Lsn,
}

pub fn recover(dir: &Path) -> Result<Recovered, OpenError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| OpenError::Io { action, path, source }
    };
    durable::create_dir_all(dir).map_err(io("create", dir))?;
    let mut files: Vec<(Lsn, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("list", dir))? {
        let path = entry.map_err(io("list", dir))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<Lsn>().ok());
        if let Some(first) = first {
            // Records are numbered from 1, and never near the end of the number range.
            if !(1..=LSN_MAX).contains(&first) {
                return Err(OpenError::Corrupt {
                    path,
                    offset: 0,
                    problem: "the segment's name is not a possible record number",
                });
            }
            files.push((first, path));
        }
    }
    files.sort();

    let mut segments = BTreeMap::new();
    let mut last_lsn: Lsn = 0;
    // The record the next segment must start with, once a segment was seen (an empty
    // segment counts: the records after it must follow on without a gap).
    let mut next_expected: Option<Lsn> = None;
    let count = files.len();
    for (index, (first, path)) in files.into_iter().enumerate() {
        if next_expected.is_some_and(|expected| first != expected) {
            return Err(OpenError::Corrupt {
                path,
                offset: 0,
                problem: "records are missing before this segment",
            });
        }
        let bytes = std::fs::read(&path).map_err(io("read", &path))?;
        let (valid, last, problem) = scan(&bytes, first);
        if let Some(problem) = problem {
            let expected = last.unwrap_or(first - 1) + 1;
            if index + 1 < count || valid_record_after(&bytes, valid, expected) {
                return Err(OpenError::Corrupt { path, offset: valid as u64, problem });
            }
            let dropped = bytes.len() - valid;
            tracing::warn!(
                path = %path.display(), kept_bytes = valid, dropped_bytes = dropped, problem,
                "cut the WAL's torn or damaged tail: it held no acknowledged record"
            );
            let file = OpenOptions::new().write(true).open(&path).map_err(io("open", &path))?;
            file.set_len(valid as u64).map_err(io("truncate", &path))?;
            file.sync_all().map_err(io("fsync", &path))?;
        }
        last_lsn = last.unwrap_or(first - 1);
        next_expected = Some(last_lsn + 1);
        segments.insert(first, Segment { path, bytes: valid as u64 });
    }
    Ok(Recovered { segments, last_lsn })
}

/// Whether a valid record numbered `expected` or later follows the damage at `from`: then
/// the damage is not a torn tail, and records after it may have been acknowledged.
fn valid_record_after(bytes: &[u8], from: usize, expected: Lsn) -> bool {
    // Records are numbered in sequence: a header whose number is in this window is worth a
    // checksum; anything else is skipped after a cheap look.
    const WINDOW: Lsn = 1 << 20;
    // Each checksum may cover the rest of the file; past this many candidates the answer is
    // "cannot tell", and refusing to start is the answer that loses nothing.
    const CANDIDATES_MAX: usize = 256;
    let mut candidates = 0usize;
    (from + 1..bytes.len()).any(|offset| {
        let Some(header) = bytes.get(offset..offset + record::HEADER_BYTES) else { return false };
        let mut lsn_bytes = [0u8; 8];
        lsn_bytes.copy_from_slice(header.get(8..16).unwrap_or(&[0; 8]));
        let lsn = Lsn::from_le_bytes(lsn_bytes);
        if !(expected..expected.saturating_add(WINDOW)).contains(&lsn) {
            return false;
        }
        candidates += 1;
        candidates > CANDIDATES_MAX
            || matches!(record::decode(bytes.get(offset..).unwrap_or_default()), Decoded::Record { .. })
    })
}

/// Checks the records of a segment that starts at `first`: returns the bytes of the valid
/// prefix, its last LSN, and what is wrong after it (if anything).
fn scan(bytes: &[u8], first: Lsn) -> (usize, Option<Lsn>, Option<&'static str>) {
    let mut offset = 0usize;
    let mut expected = first;
    let mut last = None;
    while offset < bytes.len() {
        match record::decode(bytes.get(offset..).unwrap_or_default()) {
            Decoded::Record { lsn, bytes: used, .. } if lsn == expected => {
                offset += used;
                last = Some(lsn);
                expected += 1;
            }
            Decoded::Record { .. } => return (offset, last, Some("a record is out of sequence")),
            Decoded::Incomplete => return (offset, last, Some("the last record is incomplete")),
            Decoded::Corrupt(problem) => return (offset, last, Some(problem)),
        }
    }
    (offset, last, None)
}
