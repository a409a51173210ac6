//! Harness of the `wal_recovery` target: segment files built from the input are written to a
//! temporary WAL folder, then the WAL is opened (recovery) and read back (reader).
//!
//! The input is a small program, so the fuzzer can make valid records (their checksums are
//! out of its reach otherwise) as well as arbitrary bytes between and after them:
//!
//! ```text
//! byte 0, flags: bit 0  append a record after recovery, reopen, read it back
//!                bit 1  damage a segment under the open WAL, then read (errors allowed)
//!                bit 2  wal.sync = "os" instead of "fsync"
//!                bits 3-4 segment size: 64, 256, 4096 or 1 MiB
//!                bits 5-6 damage kind, bit 7 damage the last segment instead of the first
//! then ops, each a byte (taken % 8) and its operands; missing operand bytes read as 0:
//!   0  start a segment at the next LSN
//!   1  start a segment at the LSN in the next 8 bytes (LE)
//!   2  a record with the next LSN; payload: a length byte and that many bytes
//!   3  a record with LSN next + (i8 byte); payload as in 2
//!   4  raw bytes: a length byte and that many bytes
//!   5  a record with the next LSN and one bit flipped (position byte); payload as in 2
//!   6  cut (byte) bytes off the end of the current segment
//!   7  a bare header for the next LSN that claims a payload of (4 bytes LE) bytes
//! ```
//!
//! Properties besides "no panic, no hang, bounded memory":
//! - opening either succeeds or fails with an error;
//! - after a successful open every record from `first_lsn` to `durable_lsn` reads back, in
//!   order, without error, and the files on disk add up to `bytes_held`;
//! - recovery is idempotent: a second open finds the same records;
//! - an append after recovery gets the next LSN and survives a reopen.

use std::path::{Path, PathBuf};
use std::time::Duration;

use floodway::config::SyncMode;
use floodway::wal::record::{HEADER_BYTES, Lsn, encode};
use floodway::wal::{Wal, WalOptions, segment_path};

const SEGMENT_BYTES: [u64; 4] = [64, 256, 4096, 1 << 20];
/// Segments one input may make; more add nothing but time.
const SEGMENTS_MAX: usize = 16;
const APPENDED: &[u8] = b"appended after recovery";

/// What one input came to, for the corpus replay's own checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the WAL opened.
    pub opened: bool,
    /// Records read back after recovery.
    pub records: u64,
}

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let byte = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        byte
    }

    fn bytes(&mut self, count: usize) -> &[u8] {
        let start = self.pos.min(self.data.len());
        let end = self.pos.saturating_add(count).min(self.data.len());
        self.pos = self.pos.saturating_add(count);
        self.data.get(start..end).unwrap_or_default()
    }

    fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        for byte in &mut bytes {
            *byte = self.byte();
        }
        u64::from_le_bytes(bytes)
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
}

/// Segment files as the input describes them: (first LSN, bytes).
fn build_segments(input: &mut Input<'_>) -> Vec<(Lsn, Vec<u8>)> {
    let mut segments: Vec<(Lsn, Vec<u8>)> = Vec::new();
    let mut next: Lsn = 1;
    while !input.done() {
        let op = input.byte() % 8;
        if segments.is_empty() && op > 1 {
            segments.push((next, Vec::new()));
        }
        match op {
            0 | 1 => {
                let first = if op == 0 { next } else { input.u64() };
                if segments.len() < SEGMENTS_MAX && segments.iter().all(|(f, _)| *f != first) {
                    segments.push((first, Vec::new()));
                    next = first;
                }
            }
            2 | 3 | 5 => {
                let lsn =
                    if op == 3 { next.wrapping_add_signed(i64::from(input.byte() as i8)) } else { next };
                let flip = (op == 5).then(|| input.byte());
                let length = usize::from(input.byte());
                let payload = input.bytes(length).to_vec();
                let bytes = &mut segments.last_mut().expect("a segment was started").1;
                let start = bytes.len();
                // LSN 0 cannot be framed (`encode` asserts); write its header by hand.
                if lsn == 0 {
                    bytes.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(0).to_le_bytes());
                    bytes.extend_from_slice(&[0; 12]);
                    bytes.extend_from_slice(&payload);
                } else {
                    encode(lsn, &payload, bytes);
                }
                if let Some(flip) = flip {
                    let at = start + usize::from(flip) % (bytes.len() - start);
                    if let Some(byte) = bytes.get_mut(at) {
                        *byte ^= 1 << (flip % 8);
                    }
                }
                next = lsn.wrapping_add(1);
            }
            4 => {
                let length = usize::from(input.byte());
                let raw = input.bytes(length).to_vec();
                segments.last_mut().expect("a segment was started").1.extend_from_slice(&raw);
            }
            6 => {
                let cut = usize::from(input.byte());
                let bytes = &mut segments.last_mut().expect("a segment was started").1;
                bytes.truncate(bytes.len().saturating_sub(cut));
            }
            _ => {
                let claimed = u32::from_le_bytes([input.byte(), input.byte(), input.byte(), input.byte()]);
                let bytes = &mut segments.last_mut().expect("a segment was started").1;
                bytes.extend_from_slice(&claimed.to_le_bytes());
                bytes.extend_from_slice(&[0; 4]);
                bytes.extend_from_slice(&next.to_le_bytes());
            }
        }
    }
    segments
}

/// A runtime per input: dropping it joins its blocking threads (`Wal::close` uses one), which
/// a long-lived runtime keeps idle for a while, where LeakSanitizer counts them as leaks.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("build a tokio runtime")
}

/// A fresh folder, in memory where the machine has one: fsync there costs nothing.
fn temporary_dir() -> tempfile::TempDir {
    let builder = tempfile::Builder::new().prefix("floodway-fuzz-").tempdir_in("/dev/shm");
    builder.or_else(|_| tempfile::tempdir()).expect("create a temporary folder")
}

/// Reads every record the WAL says is durable; panics if one is missing or damaged.
fn read_all(wal: &Wal) -> Vec<(Lsn, Vec<u8>)> {
    let first = wal.first_lsn();
    let durable = wal.durable_lsn();
    let mut reader = wal.read_from(1);
    let mut records = Vec::new();
    for expected in first..=durable {
        match reader.read(Duration::ZERO) {
            Ok(Some((lsn, payload))) => {
                assert_eq!(lsn, expected, "records out of order after recovery");
                records.push((lsn, payload));
            }
            Ok(None) => panic!("record {expected} of {first}..={durable} is missing after recovery"),
            Err(error) => panic!("record {expected} is unreadable after recovery: {error}"),
        }
    }
    assert!(matches!(reader.read(Duration::ZERO), Ok(None)), "a record past durable_lsn {durable}");
    records
}

fn bytes_on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Damages a segment of an open WAL as `kind` says, behind the WAL's back.
fn damage(dir: &Path, kind: u8, last: bool) {
    let files = segment_files(dir);
    let Some(path) = (if last { files.last() } else { files.first() }) else { return };
    let Ok(mut bytes) = std::fs::read(path) else { return };
    match kind {
        // Half of it lost.
        0 => bytes.truncate(bytes.len() / 2),
        // Only the first record left (its length field says where it ends).
        1 => {
            let length = bytes.get(..4).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])));
            bytes.truncate(HEADER_BYTES.saturating_add(length as usize));
        }
        // A bit flipped in the middle.
        2 => {
            let middle = bytes.len() / 2;
            if let Some(byte) = bytes.get_mut(middle) {
                *byte ^= 0x10;
            }
        }
        // The first record claims a payload longer than the file. (Not near the 256 MiB limit:
        // the reader allocates and zeroes what a header claims before it reads, which makes
        // such inputs too slow to fuzz; that bound is plain in reader.rs.)
        _ => {
            let claimed = u32::try_from(bytes.len()).unwrap_or(u32::MAX).saturating_add(1 << 20);
            if let Some(length) = bytes.get_mut(..4) {
                length.copy_from_slice(&claimed.to_le_bytes());
            }
        }
    }
    let _ = std::fs::write(path, bytes);
}

/// Runs one input; panics if a property fails.
pub fn check(data: &[u8]) -> Outcome {
    let mut input = Input { data, pos: 0 };
    let flags = input.byte();
    let options = WalOptions {
        sync: if flags & 4 == 0 { SyncMode::Fsync } else { SyncMode::Os },
        max_bytes: 1 << 40,
        segment_bytes: SEGMENT_BYTES[usize::from(flags >> 3 & 3)],
    };
    let segments = build_segments(&mut input);

    let temporary = temporary_dir();
    let dir = temporary.path().join("wal");
    std::fs::create_dir(&dir).expect("create the WAL folder");
    for (first, bytes) in &segments {
        std::fs::write(segment_path(&dir, *first), bytes).expect("write a segment");
    }

    let runtime = runtime();
    let Ok(wal) = Wal::open(&dir, options) else {
        return Outcome::default();
    };
    let records = read_all(&wal);
    assert_eq!(wal.bytes_held(), bytes_on_disk(&dir), "bytes_held is not what the segments hold");
    let durable = wal.durable_lsn();
    runtime.block_on(wal.close());
    drop(wal);

    let wal = Wal::open(&dir, options).expect("a recovered WAL opens again");
    assert_eq!(wal.durable_lsn(), durable, "a second recovery found other records");
    assert!(read_all(&wal) == records, "a second recovery reads other records");

    if flags & 1 != 0 {
        let lsn = runtime.block_on(wal.append(APPENDED.to_vec())).expect("append after recovery");
        assert_eq!(lsn, durable + 1, "the append after recovery got the wrong LSN");
        runtime.block_on(wal.close());
        drop(wal);
        let wal = Wal::open(&dir, options).expect("the WAL opens after an append");
        let after = read_all(&wal);
        assert_eq!(after.last().map(|(lsn, p)| (*lsn, p.as_slice())), Some((lsn, APPENDED)));
        runtime.block_on(wal.close());
    } else if flags & 2 != 0 {
        damage(&dir, flags >> 5 & 3, flags & 0x80 != 0);
        let mut reader = wal.read_from(1);
        // Errors are the expected answer here; reading on after one must not panic either.
        for _ in 0..=records.len() + 1 {
            let _ = reader.read(Duration::ZERO);
        }
        runtime.block_on(wal.close());
    } else {
        runtime.block_on(wal.close());
    }
    Outcome { opened: true, records: records.len() as u64 }
}
