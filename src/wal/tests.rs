//! Model-based tests of the WAL: appends, torn and garbled tails, checkpoints and restarts
//! against a plain list of the records that were acknowledged.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use super::record::{Decoded, decode};
use super::{AppendError, Lsn, Wal, WalOptions};
use crate::config::SyncMode;

const OPTIONS: WalOptions = WalOptions { sync: SyncMode::Fsync, max_bytes: 1 << 30, segment_bytes: 400 };

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn read_all(wal: &Wal) -> Vec<(Lsn, Vec<u8>)> {
    let mut reader = wal.read_from(1);
    let mut records = Vec::new();
    while let Some(record) = reader.read(Duration::ZERO).unwrap() {
        records.push(record);
    }
    records
}

fn last_segment(dir: &Path) -> Option<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.pop()
}

/// Ends (byte offsets) of the whole records of a segment file.
fn record_ends(bytes: &[u8]) -> Vec<(Lsn, usize)> {
    let mut offset = 0;
    let mut ends = Vec::new();
    while let Decoded::Record { lsn, bytes: used, .. } = decode(&bytes[offset..]) {
        offset += used;
        ends.push((lsn, offset));
    }
    ends
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    /// Cut this many bytes off the last segment while stopped (a lost or torn tail).
    Tear(usize),
    /// Add junk after the last record while stopped (an append torn mid-write).
    Garble(Vec<u8>),
    /// A consumer is done with this share of the records.
    Checkpoint(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..120).prop_map(Op::Append),
        1 => (1usize..80).prop_map(Op::Tear),
        1 => prop::collection::vec(any::<u8>(), 1..40).prop_map(Op::Garble),
        1 => any::<u8>().prop_map(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn wal_replays_exactly_what_survives(ops in prop::collection::vec(op(), 1..60)) {
        let runtime = runtime();
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), OPTIONS).unwrap();
        let mut model: Vec<(Lsn, Vec<u8>)> = Vec::new();
        let mut checkpoint: Lsn = 0;
        for op in ops {
            match op {
                Op::Append(payload) => {
                    let lsn = runtime.block_on(wal.append(payload.clone())).unwrap();
                    prop_assert_eq!(lsn, model.last().map_or(wal.first_lsn(), |(l, _)| l + 1));
                    model.push((lsn, payload));
                }
                Op::Checkpoint(share) => {
                    if let Some((last, _)) = model.last() {
                        checkpoint = checkpoint.max(last * u64::from(share) / 255);
                        wal.checkpoint("consumer", checkpoint);
                    }
                }
                Op::Tear(_) | Op::Garble(_) | Op::Reopen => {
                    runtime.block_on(wal.close());
                    drop(wal);
                    let path = last_segment(dir.path());
                    let bytes = path.as_ref().map(|p| std::fs::read(p).unwrap()).unwrap_or_default();
                    match (op, path) {
                        (Op::Tear(cut), Some(path)) => {
                            let kept = bytes.len().saturating_sub(cut);
                            std::fs::write(&path, &bytes[..kept]).unwrap();
                            let lost: Vec<Lsn> =
                                record_ends(&bytes).into_iter().filter(|(_, end)| *end > kept).map(|(l, _)| l).collect();
                            model.retain(|(lsn, _)| !lost.contains(lsn));
                        }
                        (Op::Garble(junk), Some(path)) => std::fs::write(&path, [bytes, junk].concat()).unwrap(),
                        _ => {}
                    }
                    wal = Wal::open(dir.path(), OPTIONS).unwrap();
                    wal.checkpoint("consumer", checkpoint.min(wal.durable_lsn()));
                }
            }
            let first = wal.first_lsn();
            prop_assert!(first <= checkpoint.min(wal.durable_lsn()) + 1, "deleted records a consumer needs");
            let expected: Vec<_> = model.iter().filter(|(lsn, _)| *lsn >= first).cloned().collect();
            prop_assert_eq!(read_all(&wal), expected);
        }
    }
}

#[test]
fn appends_above_max_bytes_are_refused_until_consumers_catch_up() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions { max_bytes: 2_000, segment_bytes: 500, ..OPTIONS };
    let wal = Wal::open(dir.path(), options).unwrap();
    let mut reader = wal.register("sink", 0).unwrap();
    let mut appended = 0;
    let refused = loop {
        match runtime.block_on(wal.append(vec![7; 100])) {
            Ok(_) => appended += 1,
            Err(error) => break error,
        }
        assert!(appended < 100, "max_bytes never applied");
    };
    assert!(matches!(refused, AppendError::Full { .. }), "{refused}");
    while let Some((lsn, _)) = reader.read(Duration::ZERO).unwrap() {
        wal.checkpoint("sink", lsn);
    }
    assert!(wal.bytes_held() < 1_000, "segments were not deleted: {}", wal.bytes_held());
    runtime.block_on(wal.append(vec![7; 100])).unwrap();
}

#[test]
fn a_damaged_segment_before_the_last_refuses_to_open() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), OPTIONS).unwrap();
    for _ in 0..20 {
        runtime.block_on(wal.append(vec![1; 100])).unwrap();
    }
    runtime.block_on(wal.close());
    drop(wal);
    let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() > 2);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&files[0], bytes).unwrap();
    let error = Wal::open(dir.path(), OPTIONS).err().unwrap().to_string();
    assert!(error.contains("corrupt"), "{error}");
}

#[test]
fn readers_wait_for_durable_records() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), OPTIONS).unwrap();
    let mut reader = wal.register("sink", 0).unwrap();
    assert!(reader.read(Duration::from_millis(10)).unwrap().is_none());
    let appender = wal.clone();
    runtime.spawn(async move { appender.append(b"late".to_vec()).await.unwrap() });
    let (lsn, payload) = reader.read(Duration::from_secs(10)).unwrap().expect("woken by the append");
    assert_eq!((lsn, payload.as_slice()), (1, &b"late"[..]));
}

#[test]
fn a_consumer_ahead_of_the_wal_is_refused() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), OPTIONS).unwrap();
    runtime.block_on(wal.append(b"one".to_vec())).unwrap();
    assert!(wal.register("sink", 1).is_ok());
    let error = wal.register("sink", 5).err().unwrap().to_string();
    assert!(error.contains("ends at record 1"), "{error}");
}
