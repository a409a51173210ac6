//! Harnesses of the fuzz targets, one module per target. `fuzz_targets/*.rs` call them with
//! libFuzzer's input; `tests/fuzz_corpus.rs` in the main crate includes the same files and
//! replays the seed corpora in `fuzz/corpus/<target>/`, so both check the same properties.
//!
//! A harness panics only when a property fails: the code under test returning an error is
//! an expected outcome, a panic inside it is a finding.

pub mod decode_body;
pub mod wal_recovery;
