//! A consumer's cursor over the WAL: reads records in order from its position, waiting for
//! new ones to become durable. Each record's checksum is checked again on the way out.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::record::{self, Decoded, HEADER_BYTES, Lsn};

const READ_BUFFER_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("read WAL segment {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("WAL record {lsn} in {path} is damaged: {problem}")]
    Damaged { lsn: Lsn, path: PathBuf, problem: &'static str },
    #[error("WAL record {lsn} is no longer on disk")]
    Missing { lsn: Lsn },
}

struct OpenSegment {
    path: PathBuf,
    reader: BufReader<File>,
}

pub struct WalReader {
    shared: Arc<Shared>,
    next: Lsn,
    segment: Option<OpenSegment>,
    buffer: Vec<u8>,
}

impl WalReader {
    pub(super) fn new(shared: Arc<Shared>, next: Lsn) -> WalReader {
        assert!(next > 0);
        WalReader { shared, next, segment: None, buffer: Vec::new() }
    }

    /// The LSN the next `read` returns.
    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    /// The next record, waiting up to `wait` for it to become durable.
    pub fn read(&mut self, wait: Duration) -> Result<Option<(Lsn, Vec<u8>)>, ReadError> {
        let durable = self.shared.wait_for_durable_past(self.next, wait);
        if durable < self.next {
            return Ok(None);
        }
        // The segment that just ended: the next record must be in another one.
        let mut ended: Option<PathBuf> = None;
        loop {
            if self.segment.is_none() {
                self.open_segment_holding(self.next)?;
                let opened = self.segment.as_ref().map(|s| &s.path);
                if ended.is_some() && opened == ended.as_ref() {
                    // A segment shorter than the WAL's own record of it (cut by hand, or
                    // damaged): reopening it would find the same end forever.
                    self.segment = None;
                    return Err(ReadError::Missing { lsn: self.next });
                }
            }
            let segment = self.segment.as_mut().expect("opened above");
            let io = |source| ReadError::Io { path: segment.path.clone(), source };
            self.buffer.resize(HEADER_BYTES, 0);
            match segment.reader.read_exact(&mut self.buffer) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    // This segment is done: the record is at the start of the next one.
                    ended = self.segment.take().map(|s| s.path);
                    continue;
                }
                Err(e) => return Err(io(e)),
            }
            let length = u32::from_le_bytes(self.buffer[..4].try_into().expect("4 bytes")) as usize;
            if length > record::PAYLOAD_BYTES_MAX {
                return Err(self.damaged("record length is beyond the limit"));
            }
            self.buffer.resize(HEADER_BYTES + length, 0);
            let segment = self.segment.as_mut().expect("still open");
            segment
                .reader
                .read_exact(&mut self.buffer[HEADER_BYTES..])
                .map_err(|source| ReadError::Io { path: segment.path.clone(), source })?;
            return match record::decode(&self.buffer) {
                Decoded::Record { lsn, payload, .. } if lsn == self.next => {
                    self.next += 1;
                    Ok(Some((lsn, payload.to_vec())))
                }
                Decoded::Record { .. } => Err(self.damaged("a record is out of sequence")),
                Decoded::Incomplete => Err(self.damaged("the record is incomplete")),
                Decoded::Corrupt(problem) => Err(self.damaged(problem)),
            };
        }
    }

    fn damaged(&self, problem: &'static str) -> ReadError {
        let path = self.segment.as_ref().map(|s| s.path.clone()).unwrap_or_default();
        ReadError::Damaged { lsn: self.next, path, problem }
    }

    /// Opens the segment that holds `lsn` and skips the records before it.
    fn open_segment_holding(&mut self, lsn: Lsn) -> Result<(), ReadError> {
        let (first, path) = {
            let segments = self.shared.segments.lock().expect("segments lock is never poisoned");
            let (first, segment) = segments.range(..=lsn).next_back().ok_or(ReadError::Missing { lsn })?;
            (*first, segment.path.clone())
        };
        let io = |source| ReadError::Io { path: path.clone(), source };
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, File::open(&path).map_err(io)?);
        let mut header = [0u8; HEADER_BYTES];
        for _ in first..lsn {
            reader.read_exact(&mut header).map_err(io)?;
            let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
            reader.seek(SeekFrom::Current(i64::from(length))).map_err(io)?;
        }
        self.segment = Some(OpenSegment { path, reader });
        Ok(())
    }
}
