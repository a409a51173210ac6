//! WAL segment files built from the input, then recovery and the reader over them; see
//! `floodway_fuzz::wal_recovery` for the input's layout and the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    floodway_fuzz::wal_recovery::check(data);
});
