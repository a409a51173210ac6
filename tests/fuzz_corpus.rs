//! Replays the fuzz targets' seed corpora (`fuzz/corpus/<target>/`) and the reproducers kept in
//! `fuzz/artifacts-found/` through the same harness code as the fuzz targets, so a change that
//! makes one of them panic or break a harness property fails the ordinary test run, without
//! libFuzzer or a nightly toolchain. See docs/how-to/fuzz.md.

#[path = "../fuzz/src/decode_body.rs"]
mod decode_body;
#[path = "../fuzz/src/wal_recovery.rs"]
mod wal_recovery;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The seed corpus of `target`, then its kept reproducers, each with its file name.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fuzz_dir().join("corpus").join(target))
        .unwrap_or_else(|e| panic!("read the seed corpus of {target}: {e}"))
        .map(|entry| entry.expect("list the seed corpus").path())
        .collect();
    paths.sort();
    let mut found: Vec<PathBuf> = std::fs::read_dir(fuzz_dir().join("artifacts-found"))
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    found.retain(|p| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{target}-")))
    });
    found.sort();
    paths.extend(found);
    paths
        .into_iter()
        .map(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (name, bytes)
        })
        .collect()
}

#[test]
fn decode_body_corpus_replays() {
    let inputs = inputs("decode_body");
    assert!(inputs.len() >= 10, "the decode_body seed corpus is missing");
    let (mut accepted, mut rejected) = (0, 0);
    for (name, body) in &inputs {
        let outcome = decode_body::check(body);
        accepted += outcome.accepted_strict;
        rejected += outcome.lines - outcome.accepted_strict;
        // Seeds named valid-* hold only valid events: every line must be accepted.
        if name.starts_with("valid-") {
            assert!(outcome.lines > 0, "{name}: no events");
            assert_eq!(outcome.accepted_strict, outcome.lines, "{name}: a valid event was refused");
        }
    }
    let json = inputs.iter().find(|(name, _)| name == "json-array.json").expect("json-array.json seed");
    assert_eq!(decode_body::check(&json.1).json_accepted, Some(2), "json-array.json: two valid objects");
    assert!(
        accepted >= 10 && rejected >= 20,
        "the corpus lost its variety: {accepted} accepted, {rejected} rejected"
    );
}

#[test]
fn wal_recovery_corpus_replays() {
    let inputs = inputs("wal_recovery");
    assert!(inputs.len() >= 10, "the wal_recovery seed corpus is missing");
    let mut opened = 0;
    for (name, data) in &inputs {
        let outcome = wal_recovery::check(data);
        opened += u32::from(outcome.opened);
        let expected = match name.as_str() {
            "one-segment.bin" => Some((true, 3)),
            "two-segments.bin" => Some((true, 5)),
            "torn-tail-partial-header.bin" | "torn-tail-cut.bin" => Some((true, 3)),
            "starts-after-deleted-segments.bin" => Some((true, 2)),
            "damaged-segment-before-last.bin" | "gap-between-segments.bin" => Some((false, 0)),
            "garbage-then-valid-record.bin" => Some((false, 0)),
            _ => None,
        };
        if let Some((opens, records)) = expected {
            assert_eq!((outcome.opened, outcome.records), (opens, records), "{name}");
        }
    }
    assert!(opened > 5, "only {opened} seeds open a WAL");
}
