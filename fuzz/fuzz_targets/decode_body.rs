//! A request body, decoded as NDJSON (and as one JSON document) against schemas that use
//! every field type; see `floodway_fuzz::decode_body` for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    floodway_fuzz::decode_body::check(body);
});
