//! Generated events and the pool of request bodies the bench cycles through.
//!
//! `Generator` writes NDJSON events valid for any stream schema (SPEC §3): numbers within
//! `min`/`max` (integers and floats log-uniform near zero or the nearest bound), strings within
//! `max_length`, enum values from `values`, timestamps within the last minute (RFC 3339 with
//! milliseconds, or integers in the field's `epoch_unit`), dates within the last month,
//! nullable fields null one time in ten; the reference schema gives ~200 bytes per event.
//! Values vary (a SplitMix64 generator) so that compression and Parquet encoding see realistic
//! data: a few repeated bodies make compressed output look several times smaller than it is.
//!
//! Patterns: `^[0-9a-f]{32}$` (the reference `trace_id`) is generated directly. For any other
//! pattern the generator tries a small set of shapes (lowercase hex, UUIDs, words, digits,
//! `word-NN`, uppercase hex, and the field's usual shape) and keeps those whose samples the
//! pattern accepts; a schema whose pattern accepts none of them is refused before the run.
//!
//! `BodyPool` builds every body before the clock starts (up to `POOL_BODIES_MAX` bodies or
//! `POOL_BYTES_MAX` bytes), compressed once when asked, so that sending builds no JSON.

use std::io::Write;
use std::num::NonZeroUsize;

use bytes::Bytes;

use crate::schema::types::{EpochUnit, FieldKind, StreamSchema};
use crate::schema::values::{
    civil_from_days, compare_decimal_to_bound, format_decimal, format_rfc3339_micros,
};

/// Most distinct bodies built: cycling through 64 keeps compression and encoding honest.
const POOL_BODIES_MAX: usize = 64;
/// Fewest distinct bodies, even for huge batches, so consecutive requests never repeat.
const POOL_BODIES_MIN: usize = 2;
/// Memory the pool may take, uncompressed (the pool holds compressed bodies only when
/// compressing, so this bounds the larger of the two).
const POOL_BYTES_MAX: usize = 64 << 20;
/// One nullable value in this many is null.
const NULL_ONE_IN: u64 = 10;
/// Timestamps fall within this many microseconds before the pool is built (one minute).
const TIMESTAMP_SPREAD_US: u64 = 60_000_000;
/// Dates fall within this many days before today.
const DATE_SPREAD_DAYS: u64 = 30;
/// Samples drawn per shape when finding the shapes a pattern accepts.
const PATTERN_SAMPLES: usize = 16;
/// Draws of an accepted shape before falling back to a known-good sample.
const PATTERN_DRAWS_MAX: usize = 8;
/// Numbers are drawn within this distance of zero (or of the nearest bound when zero is out of
/// range), so `int64` values look like counts, not 19-digit noise.
const INTEGER_WINDOW: i128 = 1_000_000;
const FLOAT_WINDOW: f64 = 1_000.0;
/// Decimals: up to 10,000 in units of the field's scale.
const DECIMAL_WINDOW_UNITS: i128 = 10_000;

const REFERENCE_HEX_PATTERN: &str = "^[0-9a-f]{32}$";

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
const WORDS: &[&str] = &[
    "alpha", "bravo", "delta", "echo", "kilo", "lima", "nova", "orbit", "pixel", "quartz", "river", "sierra",
    "tango", "vector", "zephyr", "amber",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const ROUTES: &[&str] = &["/orders", "/users", "/cart", "/login", "/search", "/items"];
const HTTP_STATUSES: &[i64] =
    &[200, 200, 200, 200, 200, 201, 204, 301, 304, 400, 401, 403, 404, 429, 500, 503];

/// SplitMix64: tiny, fast, and good enough to make values vary; not for anything secret.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (Lemire's multiply-shift; the bias is far below what matters here).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    fn below_u128(&mut self, bound: u128) -> u128 {
        assert!(bound > 0);
        match u64::try_from(bound) {
            Ok(small) => u128::from(self.below(small)),
            Err(_) => (u128::from(self.next_u64()) << 64 | u128::from(self.next_u64())) % bound,
        }
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let index = self.below(items.len() as u64) as usize;
        &items[index]
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// The schema cannot be satisfied by the generator.
#[derive(Debug, thiserror::Error)]
#[error("field \"{field}\": {problem}")]
pub struct GenerateError {
    pub field: String,
    pub problem: String,
}

/// How the strings of a field are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    HexLower32,
    Uuid,
    Word,
    Digits,
    WordNumber,
    HexUpper16,
    Service,
    Host,
    Message,
}

#[derive(Clone, Debug)]
enum ValuePlan {
    Bool,
    /// `http_statuses`: for a field named like `status`, the common HTTP codes within range.
    Integer {
        low: i128,
        high: i128,
        http_statuses: Vec<i64>,
    },
    Float {
        low: f64,
        high: f64,
        min: Option<f64>,
        max: Option<f64>,
    },
    Text {
        shapes: Vec<Shape>,
        max_chars: Option<usize>,
        pattern: Option<(regex::Regex, String)>,
    },
    /// Each value as a JSON string literal, quotes included.
    Enum(Vec<Vec<u8>>),
    Timestamp(Option<EpochUnit>),
    Date,
    Decimal {
        low: i128,
        high: i128,
        scale: u8,
    },
    Uuid,
    Json,
}

#[derive(Clone, Debug)]
struct FieldPlan {
    /// `"name":`, ready to copy.
    key: Vec<u8>,
    nullable: bool,
    value: ValuePlan,
}

/// Writes events for one schema. Cloned per builder thread; each clone has its own scratch.
#[derive(Clone, Debug)]
pub struct Generator {
    fields: Vec<FieldPlan>,
    now_micros: i64,
    scratch: String,
}

impl Generator {
    /// A generator for `schema`, with timestamps just before `now_micros` (µs since the epoch).
    pub fn new(schema: &StreamSchema, now_micros: i64) -> Result<Generator, GenerateError> {
        let mut fields = Vec::with_capacity(schema.fields.len());
        for field in &schema.fields {
            let mut key = Vec::with_capacity(field.name.len() + 3);
            push_json_string(&mut key, &field.name);
            key.push(b':');
            let value = plan_value(&field.name, &field.kind)
                .map_err(|problem| GenerateError { field: field.name.to_string(), problem })?;
            fields.push(FieldPlan { key, nullable: field.nullable, value });
        }
        Ok(Generator { fields, now_micros, scratch: String::new() })
    }

    /// Appends one event and its newline to `out`.
    pub fn write_event(&mut self, rng: &mut Rng, out: &mut Vec<u8>) {
        out.push(b'{');
        for (index, field) in self.fields.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&field.key);
            if field.nullable && rng.one_in(NULL_ONE_IN) {
                out.extend_from_slice(b"null");
            } else {
                write_value(&field.value, self.now_micros, rng, &mut self.scratch, out);
            }
        }
        out.extend_from_slice(b"}\n");
    }

    /// One NDJSON body of `events` events.
    pub fn body(&mut self, rng: &mut Rng, events: u32, size_hint: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(size_hint);
        for _ in 0..events {
            self.write_event(rng, &mut body);
        }
        body
    }
}

fn plan_value(name: &str, kind: &FieldKind) -> Result<ValuePlan, String> {
    Ok(match kind {
        FieldKind::Bool => ValuePlan::Bool,
        FieldKind::Int32 { min, max } | FieldKind::Int64 { min, max } => {
            let (low, high) = window(i128::from(*min), i128::from(*max), INTEGER_WINDOW);
            let http_statuses = if name.contains("status") {
                HTTP_STATUSES.iter().copied().filter(|s| (low..=high).contains(&i128::from(*s))).collect()
            } else {
                Vec::new()
            };
            ValuePlan::Integer { low, high, http_statuses }
        }
        FieldKind::Float64 { min, max } => {
            let center = 0.0f64.clamp(min.unwrap_or(f64::MIN), max.unwrap_or(f64::MAX));
            let (low, high) = match (min, max) {
                (_, Some(max)) if center >= *max => {
                    (min.map_or(center - FLOAT_WINDOW, |m| m.max(center - FLOAT_WINDOW)), center)
                }
                _ => (center, max.map_or(center + FLOAT_WINDOW, |m| m.min(center + FLOAT_WINDOW))),
            };
            ValuePlan::Float { low, high, min: *min, max: *max }
        }
        FieldKind::String { max_length, pattern } => {
            let max_chars = max_length.map(|n| n as usize);
            match pattern {
                Some(regex)
                    if regex.as_str() == REFERENCE_HEX_PATTERN && max_chars.is_none_or(|n| n >= 32) =>
                {
                    ValuePlan::Text { shapes: vec![Shape::HexLower32], max_chars, pattern: None }
                }
                Some(pattern) => plan_pattern(name, pattern.regex(), max_chars)?,
                None => ValuePlan::Text { shapes: vec![shape_for_name(name)], max_chars, pattern: None },
            }
        }
        FieldKind::Enum { values } => ValuePlan::Enum(
            values
                .iter()
                .map(|value| {
                    let mut literal = Vec::with_capacity(value.len() + 2);
                    push_json_string(&mut literal, value);
                    literal
                })
                .collect(),
        ),
        FieldKind::Timestamp { epoch_unit } => ValuePlan::Timestamp(*epoch_unit),
        FieldKind::Date => ValuePlan::Date,
        FieldKind::Decimal { precision, scale, min, max } => {
            let min = min.as_ref().map(|b| b.text.as_bytes());
            let max = max.as_ref().map(|b| b.text.as_bytes());
            let (low, high) = decimal_range(*precision, *scale, min, max).ok_or_else(|| {
                "no decimal with this precision and scale lies within min and max".to_owned()
            })?;
            let units = 10i128.checked_pow(u32::from(*scale)).unwrap_or(i128::MAX);
            let (low, high) = window(low, high, DECIMAL_WINDOW_UNITS.saturating_mul(units));
            ValuePlan::Decimal { low, high, scale: *scale }
        }
        FieldKind::Uuid => ValuePlan::Uuid,
        FieldKind::Json => ValuePlan::Json,
    })
}

/// The shapes whose samples `regex` accepts (after truncation to `max_chars`), and one accepted
/// sample to fall back on.
fn plan_pattern(name: &str, regex: &regex::Regex, max_chars: Option<usize>) -> Result<ValuePlan, String> {
    let candidates = [
        shape_for_name(name),
        Shape::HexLower32,
        Shape::Uuid,
        Shape::Word,
        Shape::Digits,
        Shape::WordNumber,
        Shape::HexUpper16,
    ];
    // A fixed seed: which shapes a schema gets does not change from run to run.
    let mut rng = Rng::new(0x5EED);
    let mut text = String::new();
    let mut shapes = Vec::new();
    let mut fallback = None;
    for shape in candidates {
        let mut accepted = 0;
        for _ in 0..PATTERN_SAMPLES {
            text.clear();
            write_shape(shape, &mut rng, &mut text, max_chars);
            if regex.is_match(&text) {
                accepted += 1;
                fallback.get_or_insert_with(|| text.clone());
            }
        }
        if accepted > 0 && !shapes.contains(&shape) {
            shapes.push(shape);
        }
    }
    match fallback {
        Some(sample) => Ok(ValuePlan::Text { shapes, max_chars, pattern: Some((regex.clone(), sample)) }),
        None => Err(format!(
            "the generator cannot make strings matching the pattern {:?} (it knows hex, UUIDs, words, \
             digits and word-NN)",
            regex.as_str()
        )),
    }
}

fn shape_for_name(name: &str) -> Shape {
    let name = name.to_ascii_lowercase();
    if name.contains("service") || name.contains("app") {
        Shape::Service
    } else if name.contains("host") || name.contains("node") || name.contains("instance") {
        Shape::Host
    } else if name.contains("msg") || name.contains("message") || name.contains("text") {
        Shape::Message
    } else if name.contains("trace") || name.contains("span") {
        Shape::HexLower32
    } else {
        Shape::WordNumber
    }
}

/// A range of width at most `width` inside `[low, high]`, starting at zero when zero is inside,
/// else at the bound nearest zero.
fn window(low: i128, high: i128, width: i128) -> (i128, i128) {
    assert!(low <= high);
    let center = 0i128.clamp(low, high);
    if center < high {
        (center, high.min(center.saturating_add(width)))
    } else {
        (low.max(center.saturating_sub(width)), center)
    }
}

/// The smallest and largest unscaled decimals with `precision` digits and `scale` fraction
/// digits that lie within the schema's `min`/`max` (given as JSON number text), found by
/// bisection with the decoder's own exact comparison.
fn decimal_range(precision: u8, scale: u8, min: Option<&[u8]>, max: Option<&[u8]>) -> Option<(i128, i128)> {
    use std::cmp::Ordering;
    let limit = 10i128.checked_pow(u32::from(precision))? - 1;
    let at_least_min = |x: i128| {
        min.is_none_or(|bound| compare_decimal_to_bound(x, scale, bound).is_ok_and(|o| o != Ordering::Less))
    };
    let at_most_max = |x: i128| {
        max.is_none_or(|bound| {
            compare_decimal_to_bound(x, scale, bound).is_ok_and(|o| o != Ordering::Greater)
        })
    };
    let low = first_true(-limit, limit, at_least_min)?;
    // `at_most_max` is true then false going up: search its negation for the first false.
    let high = match first_true(-limit, limit, |x| !at_most_max(x)) {
        Some(first_above) if first_above == -limit => return None,
        Some(first_above) => first_above - 1,
        None => limit,
    };
    (low <= high).then_some((low, high))
}

/// The first `x` in `[low, high]` where the monotone `predicate` (false…false true…true) holds.
fn first_true(mut low: i128, mut high: i128, predicate: impl Fn(i128) -> bool) -> Option<i128> {
    if !predicate(high) {
        return None;
    }
    // 10^38 spans fit in u128, not in i128: take the midpoint through the unsigned distance.
    // The range halves each time, so this runs at most 128 times.
    while low < high {
        let distance = (high as u128).wrapping_sub(low as u128);
        let middle = low.wrapping_add((distance / 2) as i128);
        if predicate(middle) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    Some(low)
}

fn write_value(plan: &ValuePlan, now_micros: i64, rng: &mut Rng, scratch: &mut String, out: &mut Vec<u8>) {
    match plan {
        ValuePlan::Bool => out.extend_from_slice(if rng.one_in(2) { b"true" } else { b"false" }),
        ValuePlan::Integer { low, high, http_statuses } => {
            let value = if !http_statuses.is_empty() {
                i128::from(*rng.pick(http_statuses))
            } else {
                // Log-uniform over wide ranges, like most counts and sizes: as many values of
                // two digits as of five.
                let span = (high - low) as u128 + 1;
                let offset = if span > 100 {
                    ((span as f64).powf(rng.unit()) as u128).saturating_sub(1).min(span - 1)
                } else {
                    rng.below_u128(span)
                };
                low + offset as i128
            };
            write_display(out, value);
        }
        ValuePlan::Float { low, high, min, max } => {
            // Log-uniform over four decades: most latencies are small, a few are large.
            let raw = low + (high - low) * (10f64.powf(4.0 * rng.unit()) - 1.0) / 9_999.0;
            let mut value = (raw * 1_000.0).round() / 1_000.0;
            // Rounding may step past a bound; the bounds themselves are valid values.
            if let Some(min) = min {
                value = value.max(*min);
            }
            if let Some(max) = max {
                value = value.min(*max);
            }
            write_display(out, value);
        }
        ValuePlan::Text { shapes, max_chars, pattern } => {
            scratch.clear();
            let shape = *rng.pick(shapes);
            write_shape(shape, rng, scratch, *max_chars);
            if let Some((regex, fallback)) = pattern {
                let mut draws = 1;
                while !regex.is_match(scratch) && draws < PATTERN_DRAWS_MAX {
                    scratch.clear();
                    write_shape(shape, rng, scratch, *max_chars);
                    draws += 1;
                }
                if !regex.is_match(scratch) {
                    scratch.clone_from(fallback);
                }
            }
            push_json_string(out, scratch);
        }
        ValuePlan::Enum(literals) => {
            let literal: &Vec<u8> = rng.pick(literals);
            out.extend_from_slice(literal);
        }
        ValuePlan::Timestamp(unit) => {
            let micros = now_micros - rng.below(TIMESTAMP_SPREAD_US) as i64;
            match unit {
                None => {
                    scratch.clear();
                    format_rfc3339_micros(micros, scratch);
                    // Milliseconds, as most clients send them: drop three of the six digits.
                    scratch.truncate(scratch.len().saturating_sub(4));
                    scratch.push('Z');
                    out.push(b'"');
                    out.extend_from_slice(scratch.as_bytes());
                    out.push(b'"');
                }
                Some(EpochUnit::Seconds) => write_display(out, micros.div_euclid(1_000_000)),
                Some(EpochUnit::Millis) => write_display(out, micros.div_euclid(1_000)),
                Some(EpochUnit::Micros) => write_display(out, micros),
                Some(EpochUnit::Nanos) => write_display(out, i128::from(micros) * 1_000),
            }
        }
        ValuePlan::Date => {
            let days = now_micros.div_euclid(86_400_000_000) - rng.below(DATE_SPREAD_DAYS) as i64;
            let (year, month, day) = civil_from_days(days);
            let _ = write!(out, "\"{year:04}-{month:02}-{day:02}\"");
        }
        ValuePlan::Decimal { low, high, scale } => {
            let span = (high - low) as u128 + 1;
            let value = low + rng.below_u128(span) as i128;
            scratch.clear();
            format_decimal(value, *scale, scratch);
            out.extend_from_slice(scratch.as_bytes());
        }
        ValuePlan::Uuid => {
            scratch.clear();
            write_uuid(rng, scratch);
            out.push(b'"');
            out.extend_from_slice(scratch.as_bytes());
            out.push(b'"');
        }
        ValuePlan::Json => write_json_value(rng, out),
    }
}

fn write_display(out: &mut Vec<u8>, value: impl std::fmt::Display) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{value}");
}

/// Appends a string of `shape` to `text`, cut to `max_chars` characters (every shape is ASCII).
fn write_shape(shape: Shape, rng: &mut Rng, text: &mut String, max_chars: Option<usize>) {
    use std::fmt::Write as _;
    let start = text.len();
    let _ = match shape {
        Shape::HexLower32 => write!(text, "{:016x}{:016x}", rng.next_u64(), rng.next_u64()),
        Shape::HexUpper16 => write!(text, "{:016X}", rng.next_u64()),
        Shape::Uuid => {
            write_uuid(rng, text);
            Ok(())
        }
        Shape::Word => write!(text, "{}", rng.pick(WORDS)),
        Shape::Digits => write!(text, "{}", rng.below(1_000_000)),
        Shape::WordNumber => write!(text, "{}-{:02}", rng.pick(WORDS), rng.below(100)),
        Shape::Service => write!(text, "{}", rng.pick(SERVICES)),
        Shape::Host => write!(text, "{}-{:02}", rng.pick(HOST_PREFIXES), rng.below(64)),
        Shape::Message => write_message(rng, text),
    };
    if let Some(max) = max_chars {
        text.truncate(start + max.min(text.len() - start));
    }
}

fn write_message(rng: &mut Rng, text: &mut String) -> std::fmt::Result {
    use std::fmt::Write as _;
    match rng.below(4) {
        0 | 1 => write!(text, "{} {}/{}", rng.pick(METHODS), rng.pick(ROUTES), rng.below(1_000)),
        2 => write!(text, "cache miss {}", rng.below(10_000)),
        _ => write!(text, "retry {} {}", rng.below(5) + 1, rng.pick(SERVICES)),
    }
}

fn write_uuid(rng: &mut Rng, text: &mut String) {
    use std::fmt::Write as _;
    // Version 4 (random) and the RFC 4122 variant, like the UUIDs clients send.
    let high = (rng.next_u64() & !0xF000) | 0x4000;
    let low = (rng.next_u64() & !(0b11 << 62)) | (0b10 << 62);
    let _ = write!(
        text,
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xFFFF,
        high & 0xFFFF,
        low >> 48,
        low & 0xFFFF_FFFF_FFFF
    );
}

fn write_json_value(rng: &mut Rng, out: &mut Vec<u8>) {
    let _ = match rng.below(5) {
        0 => write!(out, "{{\"region\":\"{}\",\"attempt\":{}}}", rng.pick(WORDS), rng.below(5)),
        1 => write!(
            out,
            "{{\"tags\":[\"{}\",\"{}\"],\"sampled\":{}}}",
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.one_in(2)
        ),
        2 => write!(out, "[{},{},{}]", rng.below(100), rng.below(1_000), rng.below(10_000)),
        3 => write!(out, "\"{}\"", rng.pick(WORDS)),
        _ => write!(out, "{}", rng.below(1_000_000)),
    };
}

/// Appends `text` as a JSON string literal.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for character in text.chars() {
        match character {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => {
                let mut buffer = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// How request bodies are encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Zstd => Some("zstd"),
        }
    }

    pub fn name(self) -> &'static str {
        self.content_encoding().unwrap_or("identity")
    }

    /// Levels are the libraries' defaults (gzip 6, zstd 3), what most clients send.
    fn encode(self, raw: Vec<u8>) -> std::io::Result<Vec<u8>> {
        match self {
            Encoding::Identity => Ok(raw),
            Encoding::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(raw.len() / 4),
                    flate2::Compression::default(),
                );
                encoder.write_all(&raw)?;
                encoder.finish()
            }
            Encoding::Zstd => zstd::bulk::compress(&raw, zstd::DEFAULT_COMPRESSION_LEVEL),
        }
    }
}

/// One prepared request body.
#[derive(Clone, Debug)]
pub struct Body {
    /// What goes on the wire (compressed when asked).
    pub wire: Bytes,
    /// Size before compression.
    pub raw_bytes: usize,
}

/// The distinct bodies a run cycles through.
#[derive(Debug)]
pub struct BodyPool {
    bodies: Vec<Body>,
    pub events_per_body: u32,
}

impl BodyPool {
    /// Builds the pool on up to `threads` threads; each body has its own seed, derived from
    /// `seed`, so bodies differ from each other and from run to run.
    pub fn build(
        generator: &Generator,
        seed: u64,
        events_per_body: u32,
        encoding: Encoding,
        threads: NonZeroUsize,
    ) -> std::io::Result<BodyPool> {
        BodyPool::build_within(generator, seed, events_per_body, encoding, threads, POOL_BYTES_MAX)
    }

    fn build_within(
        generator: &Generator,
        seed: u64,
        events_per_body: u32,
        encoding: Encoding,
        threads: NonZeroUsize,
        bytes_max: usize,
    ) -> std::io::Result<BodyPool> {
        assert!(events_per_body > 0);
        // The first body, built once more below with the same seed, tells how many fit.
        let probe = generator.clone().body(&mut body_rng(seed, 0), events_per_body, 0).len();
        let count = (bytes_max / probe.max(1)).clamp(POOL_BODIES_MIN, POOL_BODIES_MAX);
        let size_hint = probe + probe / 8;
        let per_thread = count.div_ceil(threads.get().min(count));
        let mut slots: Vec<Option<std::io::Result<Body>>> = (0..count).map(|_| None).collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = slots
                .chunks_mut(per_thread)
                .enumerate()
                .map(|(chunk_index, chunk)| {
                    let mut generator = generator.clone();
                    scope.spawn(move || {
                        for (offset, slot) in chunk.iter_mut().enumerate() {
                            let index = (chunk_index * per_thread + offset) as u64;
                            let raw = generator.body(&mut body_rng(seed, index), events_per_body, size_hint);
                            let raw_bytes = raw.len();
                            let body =
                                encoding.encode(raw).map(|wire| Body { wire: Bytes::from(wire), raw_bytes });
                            *slot = Some(body);
                        }
                    })
                })
                .collect();
            for handle in handles {
                if let Err(panic) = handle.join() {
                    std::panic::resume_unwind(panic);
                }
            }
        });
        let bodies = slots
            .into_iter()
            .map(|slot| slot.expect("every slot is filled by its thread"))
            .collect::<std::io::Result<Vec<Body>>>()?;
        Ok(BodyPool { bodies, events_per_body })
    }

    /// The body for request `number`: the pool, in turn.
    pub fn body(&self, number: u64) -> &Body {
        &self.bodies[(number % self.bodies.len() as u64) as usize]
    }

    pub fn len(&self) -> usize {
        self.bodies.len()
    }

    pub fn raw_bytes(&self) -> usize {
        self.bodies.iter().map(|b| b.raw_bytes).sum()
    }

    pub fn wire_bytes(&self) -> usize {
        self.bodies.iter().map(|b| b.wire.len()).sum()
    }
}

fn body_rng(seed: u64, index: u64) -> Rng {
    // Spread the index through the generator once so neighbouring seeds share no prefix.
    let mut mixer = Rng::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    Rng::new(mixer.next_u64())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bench::REFERENCE_SCHEMA;
    use crate::schema::decode::{BodyFormat, DecodeScratch, decode_body};
    use crate::schema::parse::parse_schema;

    const NOW_MICROS: i64 = 1_780_000_000_000_000;

    fn schema(json: &str) -> Arc<StreamSchema> {
        Arc::new(parse_schema(json.as_bytes(), 1).expect("test schema is valid"))
    }

    /// Decodes `body` with the server's own decoder and returns (accepted, invalid, first error).
    fn decode(schema: &Arc<StreamSchema>, body: &[u8]) -> (u64, u64, String) {
        let mut scratch = DecodeScratch::default();
        let decoded = decode_body(schema, body, BodyFormat::Ndjson, &mut scratch).expect("body is readable");
        let first = decoded.errors.first().map(|e| format!("{e:?}")).unwrap_or_default();
        (decoded.accepted(), decoded.invalid, first)
    }

    #[test]
    fn reference_schema_events_are_all_valid_and_about_190_bytes() {
        let schema = schema(REFERENCE_SCHEMA);
        let mut generator = Generator::new(&schema, NOW_MICROS).expect("reference schema is supported");
        let body = generator.body(&mut Rng::new(7), 5_000, 0);
        let (accepted, invalid, first) = decode(&schema, &body);
        assert_eq!(invalid, 0, "first error: {first}");
        assert_eq!(accepted, 5_000);
        let bytes_per_event = body.len() / 5_000;
        assert!((170..=210).contains(&bytes_per_event), "{bytes_per_event} bytes per event");
    }

    #[test]
    fn every_type_and_option_gives_valid_values() {
        let schema = schema(
            r#"{"fields": [
                {"name": "ts", "type": "timestamp"},
                {"name": "flag", "type": "bool"},
                {"name": "small", "type": "int32", "min": -5, "max": 5},
                {"name": "negative", "type": "int64", "min": -9000000000, "max": -8000000000},
                {"name": "huge", "type": "int64", "min": 9000000000000000000},
                {"name": "unbounded", "type": "int64"},
                {"name": "ratio", "type": "float64", "min": 0.25, "max": 0.5},
                {"name": "below", "type": "float64", "max": -10},
                {"name": "free", "type": "float64", "nullable": true},
                {"name": "short", "type": "string", "max_length": 3},
                {"name": "service", "type": "string"},
                {"name": "msg", "type": "string", "nullable": true, "max_length": 10},
                {"name": "trace_id", "type": "string", "pattern": "^[0-9a-f]{32}$"},
                {"name": "code", "type": "string", "pattern": "^[a-z]+-[0-9]+$"},
                {"name": "zip", "type": "string", "pattern": "^[0-9]{1,6}$", "max_length": 4},
                {"name": "request_id", "type": "string", "pattern": "^[0-9a-fA-F-]{36}$"},
                {"name": "level", "type": "enum", "values": ["a\"quote", "back\\slash", "ünï", "tab\tin"]},
                {"name": "at_s", "type": "timestamp", "epoch_unit": "s"},
                {"name": "at_ms", "type": "timestamp", "epoch_unit": "ms", "nullable": true},
                {"name": "at_us", "type": "timestamp", "epoch_unit": "us"},
                {"name": "at_ns", "type": "timestamp", "epoch_unit": "ns"},
                {"name": "day", "type": "date"},
                {"name": "price", "type": "decimal", "precision": 18, "scale": 4, "nullable": true},
                {"name": "tight", "type": "decimal", "precision": 6, "scale": 2, "min": 1000.5, "max": 1000.75},
                {"name": "wide", "type": "decimal", "precision": 38, "scale": 10, "min": -1e30},
                {"name": "whole", "type": "decimal", "precision": 3, "scale": 0, "max": -990},
                {"name": "id", "type": "uuid"},
                {"name": "attrs", "type": "json", "nullable": true},
                {"name": "payload", "type": "json"}
            ], "time_field": "ts", "on_invalid": "reject_line"}"#,
        );
        let mut generator = Generator::new(&schema, NOW_MICROS).expect("every type is supported");
        for seed in 0..4 {
            let body = generator.body(&mut Rng::new(seed), 2_000, 0);
            let (accepted, invalid, first) = decode(&schema, &body);
            assert_eq!(invalid, 0, "seed {seed}, first error: {first}");
            assert_eq!(accepted, 2_000);
        }
    }

    #[test]
    fn values_vary_and_nullable_fields_are_sometimes_null() {
        let schema = schema(REFERENCE_SCHEMA);
        let mut generator = Generator::new(&schema, NOW_MICROS).expect("reference schema is supported");
        let body = generator.body(&mut Rng::new(1), 1_000, 0);
        let text = std::str::from_utf8(&body).expect("generated text is UTF-8");
        let lines: std::collections::HashSet<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1_000, "every event differs");
        let nulls = text.matches("\"msg\":null").count();
        assert!((30..=200).contains(&nulls), "{nulls} null messages in 1000");
    }

    #[test]
    fn an_unsatisfiable_schema_is_refused_with_the_field_named() {
        let pattern = schema(
            r#"{"fields": [{"name": "ts", "type": "timestamp"},
                {"name": "odd", "type": "string", "pattern": "^x{3}!$"}], "time_field": "ts"}"#,
        );
        let error = Generator::new(&pattern, NOW_MICROS).expect_err("no shape matches");
        assert_eq!(error.field, "odd");
        let decimal = schema(
            r#"{"fields": [{"name": "ts", "type": "timestamp"},
                {"name": "d", "type": "decimal", "precision": 4, "scale": 2, "min": 100}], "time_field": "ts"}"#,
        );
        let error = Generator::new(&decimal, NOW_MICROS).expect_err("99.99 is the largest value");
        assert_eq!(error.field, "d");
    }

    #[test]
    fn decimal_range_is_exact_at_the_bounds() {
        assert_eq!(decimal_range(6, 2, Some(b"1000.5"), Some(b"1000.75")), Some((100_050, 100_075)));
        assert_eq!(decimal_range(3, 0, None, None), Some((-999, 999)));
        assert_eq!(decimal_range(3, 1, Some(b"-0.05"), Some(b"0.05")), Some((0, 0)));
        assert_eq!(decimal_range(38, 0, None, None), Some((-(10i128.pow(38) - 1), 10i128.pow(38) - 1)));
        assert_eq!(decimal_range(2, 0, Some(b"100"), None), None);
        assert_eq!(decimal_range(2, 0, None, Some(b"-100")), None);
        assert_eq!(decimal_range(2, 0, Some(b"5"), Some(b"4")), None);
    }

    #[test]
    fn window_starts_at_zero_or_the_bound_nearest_it() {
        assert_eq!(window(-10, 10, 100), (0, 10));
        assert_eq!(window(0, i128::from(i64::MAX), 1_000), (0, 1_000));
        assert_eq!(window(-50, 0, 10), (-10, 0));
        assert_eq!(window(500, 10_000, 1_000), (500, 1_500));
        assert_eq!(window(-10_000, -500, 1_000), (-1_500, -500));
        assert_eq!(window(7, 7, 1_000), (7, 7));
    }

    #[test]
    fn pool_bodies_differ_and_compressed_ones_decode_to_valid_events() {
        let schema = schema(REFERENCE_SCHEMA);
        let generator = Generator::new(&schema, NOW_MICROS).expect("reference schema is supported");
        let threads = NonZeroUsize::new(3).expect("non-zero");
        for encoding in [Encoding::Identity, Encoding::Gzip, Encoding::Zstd] {
            let pool = BodyPool::build(&generator, 42, 50, encoding, threads).expect("pool builds");
            assert_eq!(pool.len(), POOL_BODIES_MAX);
            let distinct: std::collections::HashSet<&[u8]> =
                (0..pool.len() as u64).map(|n| &pool.body(n).wire[..]).collect();
            assert_eq!(distinct.len(), pool.len());
            for number in [0, 1, 63] {
                let body = pool.body(number);
                let raw = match encoding {
                    Encoding::Identity => body.wire.to_vec(),
                    Encoding::Gzip => {
                        let mut raw = Vec::new();
                        std::io::Read::read_to_end(
                            &mut flate2::read::GzDecoder::new(&body.wire[..]),
                            &mut raw,
                        )
                        .expect("valid gzip");
                        raw
                    }
                    Encoding::Zstd => zstd::decode_all(&body.wire[..]).expect("valid zstd"),
                };
                assert_eq!(raw.len(), body.raw_bytes);
                let (accepted, invalid, first) = decode(&schema, &raw);
                assert_eq!((accepted, invalid), (50, 0), "{first}");
            }
        }
    }

    #[test]
    fn pool_keeps_at_least_two_bodies_and_stays_within_its_byte_budget() {
        let schema = schema(REFERENCE_SCHEMA);
        let generator = Generator::new(&schema, NOW_MICROS).expect("reference schema is supported");
        let threads = NonZeroUsize::new(2).expect("non-zero");
        let budget = 1 << 20;
        let pool = BodyPool::build_within(&generator, 1, 5_000, Encoding::Identity, threads, budget)
            .expect("pool builds");
        assert_eq!(pool.len(), POOL_BODIES_MIN);
        let pool = BodyPool::build_within(&generator, 1, 500, Encoding::Identity, threads, budget)
            .expect("pool builds");
        assert!(pool.len() > POOL_BODIES_MIN);
        assert!(pool.len() < POOL_BODIES_MAX);
        assert!(pool.raw_bytes() <= budget + budget / 10);
    }

    #[test]
    fn rng_below_stays_in_range_and_covers_it() {
        let mut rng = Rng::new(3);
        let mut seen = [false; 7];
        for _ in 0..1_000 {
            let value = rng.below(7);
            seen[value as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        for _ in 0..1_000 {
            let unit = rng.unit();
            assert!((0.0..1.0).contains(&unit));
        }
    }
}
