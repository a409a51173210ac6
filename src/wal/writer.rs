//! The writer thread: group commit. It takes every append waiting, numbers and frames them
//! into one buffer, writes it with one call, fsyncs once, raises `durable_lsn`, and answers
//! them all. A failed write is cut back off the file so the segment stays a valid prefix; a
//! failed fsync poisons the WAL (the page cache may have dropped the data: never retry it).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::{AppendError, AppendRequest, Lsn, Segment, Shared, WriterMessage, record};
use crate::config::SyncMode;
use crate::durable;

/// Most bytes framed into one write.
const GROUP_BYTES_MAX: usize = 32 << 20;
const ENOSPC: i32 = 28;

struct Active {
    file: File,
    first_lsn: Lsn,
    bytes: u64,
}

pub(super) fn run(shared: Arc<Shared>, mut receiver: mpsc::Receiver<WriterMessage>, sync: SyncMode) {
    let mut next_lsn = *shared.durable.lock().expect("durable lock is never poisoned") + 1;
    let mut active: Option<Active> = None;
    let mut frames = Vec::new();
    let mut group: Vec<AppendRequest> = Vec::new();
    let mut closing = false;
    while !closing {
        match receiver.blocking_recv() {
            Some(WriterMessage::Append(request)) => group.push(request),
            Some(WriterMessage::Close) | None => break,
        }
        let mut group_bytes = group.iter().map(|r| r.payload.len()).sum::<usize>();
        while group_bytes < GROUP_BYTES_MAX {
            match receiver.try_recv() {
                Ok(WriterMessage::Append(request)) => {
                    group_bytes += request.payload.len();
                    group.push(request);
                }
                Ok(WriterMessage::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let result = write_group(&shared, &mut active, &mut frames, next_lsn, &group, sync);
        match result {
            Ok(last) => {
                shared.storage_full.store(false, Ordering::Release);
                *shared.durable.lock().expect("durable lock is never poisoned") = last;
                shared.durable_changed.notify_all();
                for (offset, request) in group.drain(..).enumerate() {
                    let _ = request.done.send(Ok(next_lsn + offset as u64));
                }
                next_lsn = last + 1;
            }
            Err(error) => {
                match error {
                    // Expected while the disk is full; the answers say so, the log need not shout.
                    AppendError::StorageFull(_) => {
                        shared.storage_full.store(true, Ordering::Release);
                        tracing::warn!(%error, records = group.len(), "WAL append refused")
                    }
                    _ => tracing::error!(%error, records = group.len(), "WAL append failed"),
                }
                for request in group.drain(..) {
                    let _ = request.done.send(Err(error.clone_for_waiter()));
                }
            }
        }
    }
    if let Some(active) = active
        && let Err(error) = active.file.sync_all()
    {
        tracing::error!(%error, "fsync the WAL at close");
    }
    tracing::debug!("WAL writer stopped");
}

impl AppendError {
    fn clone_for_waiter(&self) -> AppendError {
        match self {
            AppendError::Full { held_bytes, max_bytes } => {
                AppendError::Full { held_bytes: *held_bytes, max_bytes: *max_bytes }
            }
            AppendError::StorageFull(text) => AppendError::StorageFull(text.clone()),
            AppendError::Poisoned => AppendError::Poisoned,
            AppendError::Io(text) => AppendError::Io(text.clone()),
            AppendError::Closed => AppendError::Closed,
            AppendError::TooLarge { bytes, max_bytes } => {
                AppendError::TooLarge { bytes: *bytes, max_bytes: *max_bytes }
            }
        }
    }
}

/// Writes the group as records `first_lsn..`; returns the last LSN written.
fn write_group(
    shared: &Shared,
    active: &mut Option<Active>,
    frames: &mut Vec<u8>,
    first_lsn: Lsn,
    group: &[AppendRequest],
    sync: SyncMode,
) -> Result<Lsn, AppendError> {
    assert!(!group.is_empty());
    if shared.poisoned.load(Ordering::Acquire) {
        return Err(AppendError::Poisoned);
    }
    frames.clear();
    for (offset, request) in group.iter().enumerate() {
        record::encode(first_lsn + offset as u64, &request.payload, frames);
    }
    let last_lsn = first_lsn + group.len() as u64 - 1;
    let segment = match active {
        Some(segment) => segment,
        None => active.insert(open_active(shared, first_lsn).map_err(io_error)?),
    };
    if let Err(error) = segment.file.write_all(frames) {
        // Cut the partial write off so the segment stays a valid prefix for readers and
        // recovery; if even that fails, nothing after it can be trusted.
        let restored = segment.file.set_len(segment.bytes).and_then(|()| segment.file.seek(SeekFrom::End(0)));
        if restored.is_err() {
            shared.poisoned.store(true, Ordering::Release);
        }
        return Err(io_error(error));
    }
    if sync == SyncMode::Fsync
        && let Err(error) = segment.file.sync_data()
    {
        shared.poisoned.store(true, Ordering::Release);
        tracing::error!(%error, "fsync of the WAL failed: refusing appends until restart");
        return Err(AppendError::Poisoned);
    }
    segment.bytes += frames.len() as u64;
    shared.bytes_held.fetch_add(frames.len() as u64, Ordering::Relaxed);
    let mut segments = shared.segments.lock().expect("segments lock is never poisoned");
    if let Some(entry) = segments.get_mut(&segment.first_lsn) {
        entry.bytes = segment.bytes;
    }
    drop(segments);
    if segment.bytes >= shared.segment_bytes {
        // The next group starts a new segment; this one is complete and can be deleted
        // once every consumer is past it.
        if let Some(full) = active.take() {
            full.file.sync_all().map_err(|error| {
                shared.poisoned.store(true, Ordering::Release);
                io_error(error)
            })?;
        }
    }
    Ok(last_lsn)
}

/// The segment to append to: the last one on disk, or a new one starting at `first_lsn`.
fn open_active(shared: &Shared, first_lsn: Lsn) -> std::io::Result<Active> {
    let mut segments = shared.segments.lock().expect("segments lock is never poisoned");
    if let Some((&start, segment)) = segments.iter().next_back()
        && segment.bytes < shared.segment_bytes
    {
        let mut file = OpenOptions::new().write(true).open(&segment.path)?;
        file.seek(SeekFrom::Start(segment.bytes))?;
        return Ok(Active { file, first_lsn: start, bytes: segment.bytes });
    }
    durable::create_dir_all(&shared.dir)?;
    let path = super::segment_path(&shared.dir, first_lsn);
    let file = OpenOptions::new().write(true).create_new(true).open(&path)?;
    durable::sync_dir(&shared.dir)?;
    segments.insert(first_lsn, Segment { path, bytes: 0 });
    Ok(Active { file, first_lsn, bytes: 0 })
}

fn io_error(error: std::io::Error) -> AppendError {
    if error.raw_os_error() == Some(ENOSPC) || error.kind() == std::io::ErrorKind::StorageFull {
        AppendError::StorageFull(error.to_string())
    } else {
        AppendError::Io(error.to_string())
    }
}
