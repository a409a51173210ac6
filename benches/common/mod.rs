//! Data shared by the micro-benchmarks: the reference schema (`schemas/bench.json`, the same
//! text as `floodway::bench::REFERENCE_SCHEMA`) and distinct NDJSON bodies of realistic,
//! non-repeating events for it, ~195 bytes each, shaped like the events `floodway bench` sends.
//!
//! Bodies must not repeat: a few repeated bodies make compressed output (Parquet, the WAL)
//! look several times smaller and cheaper than it is. Every body gets its own seed, and every
//! run uses the same seeds, so runs compare.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use criterion::Criterion;
use floodway::schema::decode::{BodyFormat, DecodeScratch, decode_body};
use floodway::schema::parse::parse_schema;
use floodway::schema::types::StreamSchema;
use floodway::schema::values::format_rfc3339_micros;

/// Events per request body, as `floodway bench --batch 1000` sends them.
pub const EVENTS_PER_BODY: usize = 1_000;
/// Distinct bodies: 256 × 1,000 events, ~50 MB, more than the caches hold.
pub const BODIES: usize = 256;

/// Timestamps fall within the minute before this instant (2026-05-28T20:26:40Z).
const NOW_MICROS: i64 = 1_780_000_000_000_000;
const TIMESTAMP_SPREAD_US: u64 = 60_000_000;
const SEED: u64 = 0x5EED_F100_D3A7_0001;

const SERVICES: &[&str] = &[
    "checkout",
    "payments",
    "search",
    "auth",
    "cart",
    "catalog",
    "gateway",
    "billing",
    "orders",
    "users",
    "inventory",
    "shipping",
];
const HOST_PREFIXES: &[&str] = &["web", "api", "worker", "db", "cache", "edge"];
const LEVELS: &[&str] = &["debug", "info", "warn", "error"];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const ROUTES: &[&str] = &["/orders", "/users", "/cart", "/login", "/search", "/items"];
const HTTP_STATUSES: &[u16] =
    &[200, 200, 200, 200, 200, 201, 204, 301, 304, 400, 401, 403, 404, 429, 500, 503];

/// Short runs: a whole `cargo bench` measures for about three minutes.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6))
        .sample_size(20)
}

/// The reference schema, compiled as the server compiles it.
pub fn reference_schema() -> Arc<StreamSchema> {
    let schema =
        parse_schema(floodway::bench::REFERENCE_SCHEMA.as_bytes(), 1).expect("the reference schema is valid");
    Arc::new(schema)
}

/// `BODIES` distinct NDJSON bodies of `EVENTS_PER_BODY` events each.
pub fn bodies() -> Vec<Vec<u8>> {
    (0..BODIES as u64)
        .map(|index| body(&mut Rng::new(SEED ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03))))
        .collect()
}

/// Decodes `body` with the server's decoder; every generated event must be accepted.
pub fn decode(schema: &Arc<StreamSchema>, body: &[u8], scratch: &mut DecodeScratch) -> RecordBatch {
    let decoded = decode_body(schema, body, BodyFormat::Ndjson, scratch).expect("the body is readable");
    assert_eq!(decoded.invalid, 0, "generated events are valid: {:?}", decoded.errors.first());
    assert_eq!(decoded.records.num_rows(), EVENTS_PER_BODY);
    decoded.records
}

pub fn total_bytes(bodies: &[Vec<u8>]) -> usize {
    bodies.iter().map(Vec::len).sum()
}

/// One body: the fields in schema order, values varied like `floodway bench`'s generator.
fn body(rng: &mut Rng) -> Vec<u8> {
    let mut out = String::with_capacity(EVENTS_PER_BODY * 224);
    let mut ts = String::with_capacity(32);
    for _ in 0..EVENTS_PER_BODY {
        ts.clear();
        format_rfc3339_micros(NOW_MICROS - rng.below(TIMESTAMP_SPREAD_US) as i64, &mut ts);
        // Milliseconds, as most clients send them.
        ts.truncate(ts.len() - 4);
        ts.push('Z');
        let service = rng.pick(SERVICES);
        let host = rng.pick(HOST_PREFIXES);
        let host_number = rng.below(64);
        let level = rng.pick(LEVELS);
        // Log-uniform over four decades, like latencies; three decimals.
        let latency = (1_000.0 * (10f64.powf(4.0 * rng.unit()) - 1.0) / 9_999.0 * 1_000.0).round() / 1_000.0;
        let status = rng.pick(HTTP_STATUSES);
        // Log-uniform in 0..=1,000,000, like sizes.
        let bytes = (1_000_001f64.powf(rng.unit()) as u64).saturating_sub(1);
        let (trace_high, trace_low) = (rng.next_u64(), rng.next_u64());
        let _ = write!(
            out,
            r#"{{"ts":"{ts}","service":"{service}","host":"{host}-{host_number:02}","level":"{level}","latency_ms":{latency},"status":{status},"bytes":{bytes},"trace_id":"{trace_high:016x}{trace_low:016x}","msg":"#
        );
        if rng.below(10) == 0 {
            out.push_str("null");
        } else {
            let _ = match rng.below(4) {
                0 | 1 => write!(out, "\"{} {}/{}\"", rng.pick(METHODS), rng.pick(ROUTES), rng.below(1_000)),
                2 => write!(out, "\"cache miss {}\"", rng.below(10_000)),
                _ => write!(out, "\"retry {} {}\"", rng.below(5) + 1, rng.pick(SERVICES)),
            };
        }
        out.push_str("}\n");
    }
    out.into_bytes()
}

/// SplitMix64: small, fast, deterministic.
struct Rng {
    state: u64,
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut rng = Rng { state: seed };
        rng.state = rng.next_u64();
        rng
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
