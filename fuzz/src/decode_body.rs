//! Harness of the `decode_body` target: a request body, decoded as NDJSON against fixed
//! schemas that use every field type and every `unknown_fields` and `on_invalid` rule, and
//! as a JSON body against one of them.
//!
//! Properties checked besides "no panic" (each would fail if the decoder broke):
//! - every non-blank NDJSON line gets exactly one answer: accepted + invalid = the lines;
//! - the listed errors are the first `ERRORS_LISTED_MAX`, in line order, within the body;
//! - under `dead_letter` each invalid line is kept whole, with its raw text;
//! - `keep` and `drop` accept the same lines, and `reject` a subset of them;
//! - an accepted line is valid JSON by an independent parser (`serde_json`), and a line
//!   refused as invalid JSON is invalid for it too (nesting and surrogate rules aside,
//!   where the decoder is deliberately stricter);
//! - the same for a body read as one JSON document.

use std::sync::{Arc, OnceLock};

use floodway::schema::decode::{
    BodyError, BodyFormat, DecodeScratch, Decoded, ERRORS_LISTED_MAX, Location, decode_body,
};
use floodway::schema::parse::parse_schema;
use floodway::schema::types::StreamSchema;
use serde_json::value::RawValue;

/// Every type of SPEC §3 with its options (shapes from the reference schema of `floodway bench` and
/// the types table); required fields are few so mutated lines still get accepted.
const FIELDS: &str = r#"[
  {"name": "ts",         "type": "timestamp"},
  {"name": "seen",       "type": "timestamp", "epoch_unit": "ms", "nullable": true},
  {"name": "ok",         "type": "bool", "nullable": true},
  {"name": "status",     "type": "int32", "min": 100, "max": 599},
  {"name": "bytes",      "type": "int64", "min": 0, "nullable": true},
  {"name": "latency_ms", "type": "float64", "min": 0, "max": 1e9, "nullable": true},
  {"name": "service",    "type": "string", "max_length": 16},
  {"name": "trace_id",   "type": "string", "pattern": "^[0-9a-f]{32}$", "nullable": true},
  {"name": "level",      "type": "enum", "values": ["debug", "info", "warn", "error"]},
  {"name": "day",        "type": "date", "nullable": true},
  {"name": "price",      "type": "decimal", "precision": 18, "scale": 4, "min": -1000, "max": 1e9, "nullable": true},
  {"name": "big",        "type": "decimal", "precision": 38, "scale": 10, "nullable": true},
  {"name": "id",         "type": "uuid", "nullable": true},
  {"name": "attrs",      "type": "json", "nullable": true},
  {"name": "msg",        "type": "string", "nullable": true}
]"#;

struct Schemas {
    /// `unknown_fields = "reject"`, `on_invalid = "reject_line"` (the defaults).
    reject: Arc<StreamSchema>,
    /// `keep` (an `_extra` column) and `dead_letter` (every invalid line kept).
    keep: Arc<StreamSchema>,
    /// `drop` and `reject_request`.
    drop: Arc<StreamSchema>,
}

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let compile = |rules: &str| {
            let text = format!(r#"{{"fields": {FIELDS}, "time_field": "ts"{rules}}}"#);
            Arc::new(parse_schema(text.as_bytes(), 1).expect("the fuzz schema is valid"))
        };
        Schemas {
            reject: compile(""),
            keep: compile(r#", "unknown_fields": "keep", "on_invalid": "dead_letter""#),
            drop: compile(r#", "unknown_fields": "drop", "on_invalid": "reject_request""#),
        }
    })
}

/// What one body came to, for the corpus replay's own checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Non-blank NDJSON lines.
    pub lines: u64,
    /// Lines accepted under `unknown_fields = "reject"`.
    pub accepted_strict: u64,
    /// Lines accepted under `keep` (and so under `drop`).
    pub accepted_lenient: u64,
    /// Events accepted from the body read as one JSON document, if it could be read.
    pub json_accepted: Option<u64>,
}

/// Runs one body through the decoder; panics if a property fails.
pub fn check(body: &[u8]) -> Outcome {
    let schemas = schemas();
    let mut scratch = DecodeScratch::default();
    let lines = split_lines(body);
    let count = lines.iter().filter(|(_, line)| !is_blank(line)).count() as u64;

    let strict = ndjson(&schemas.reject, body, &mut scratch, count);
    let lenient = ndjson(&schemas.keep, body, &mut scratch, count);
    let dropped = ndjson(&schemas.drop, body, &mut scratch, count);
    assert_eq!(lenient.accepted(), dropped.accepted(), "keep and drop accept different lines");
    assert!(strict.accepted() <= lenient.accepted(), "reject accepts more lines than keep");
    assert!(strict.dead_letters.is_empty() && dropped.dead_letters.is_empty());

    // Under dead_letter every invalid line is listed, so the accepted ones are known exactly.
    assert_eq!(lenient.dead_letters.len() as u64, lenient.invalid, "dead letters are not complete");
    for (error, dead) in lenient.errors.iter().zip(&lenient.dead_letters) {
        assert_eq!(
            (error.location, &error.reason),
            (dead.location, &dead.reason),
            "errors and dead letters differ"
        );
    }
    let mut invalid = lenient.dead_letters.iter().peekable();
    for (number, line) in &lines {
        if is_blank(line) {
            continue;
        }
        match invalid.next_if(|dead| dead.location == Location::Line(*number)) {
            Some(dead) => {
                let raw = String::from_utf8_lossy(strip_cr(line));
                assert_eq!(dead.raw, raw, "the dead letter of line {number} is not its text");
            }
            None => {
                let text = std::str::from_utf8(strip_cr(line)).expect("an accepted line is UTF-8");
                if let Err(error) = serde_json::from_str::<&RawValue>(text) {
                    panic!("line {number} accepted but serde_json refuses it ({error}): {text:?}");
                }
            }
        }
    }
    assert!(invalid.next().is_none(), "dead letters for lines that are not in the body");
    // A syntax error names no field; a field's reason may quote the value, so it is not read.
    for error in lenient.errors.iter().filter(|e| e.field.is_none()) {
        let Location::Line(number) = error.location else { continue };
        let refused =
            error.reason.starts_with("invalid JSON at column ") && !decoder_is_stricter(&error.reason);
        let line = lines.get(usize::try_from(number - 1).unwrap_or(usize::MAX)).map(|(_, line)| *line);
        if let (true, Some(line)) = (refused, line) {
            let text = String::from_utf8_lossy(strip_cr(line));
            assert!(
                serde_json::from_str::<&RawValue>(&text).is_err(),
                "line {number} refused ({}) but serde_json reads it: {text:?}",
                error.reason
            );
        }
    }

    let json_accepted = json(&schemas.reject, body, &mut scratch);
    Outcome {
        lines: count,
        accepted_strict: strict.accepted(),
        accepted_lenient: lenient.accepted(),
        json_accepted,
    }
}

fn ndjson(schema: &Arc<StreamSchema>, body: &[u8], scratch: &mut DecodeScratch, lines: u64) -> Decoded {
    let decoded =
        decode_body(schema, body, BodyFormat::Ndjson, scratch).expect("NDJSON bodies never fail whole");
    assert_eq!(decoded.accepted() + decoded.invalid, lines, "a line got no answer, or two");
    assert_eq!(decoded.records.schema(), schema.arrow, "the batch does not have the schema's columns");
    let listed = usize::try_from(decoded.invalid).unwrap_or(usize::MAX).min(ERRORS_LISTED_MAX);
    assert_eq!(decoded.errors.len(), listed, "not the first {ERRORS_LISTED_MAX} errors");
    let mut previous = 0u64;
    for error in &decoded.errors {
        let Location::Line(line) = error.location else { panic!("an NDJSON error without a line") };
        assert!(line > previous, "errors out of line order");
        previous = line;
    }
    assert!(previous <= body.iter().filter(|b| **b == b'\n').count() as u64 + 1, "an error past the body");
    decoded
}

fn json(schema: &Arc<StreamSchema>, body: &[u8], scratch: &mut DecodeScratch) -> Option<u64> {
    let reference = serde_json::from_slice::<&RawValue>(body);
    match decode_body(schema, body, BodyFormat::Json, scratch) {
        Ok(decoded) => {
            let blank = body.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
            if let Err(error) = reference
                && !blank
            {
                panic!("JSON body accepted but serde_json refuses it ({error}): {body:?}");
            }
            let listed = usize::try_from(decoded.invalid).unwrap_or(usize::MAX).min(ERRORS_LISTED_MAX);
            assert_eq!(decoded.errors.len(), listed, "not the first {ERRORS_LISTED_MAX} errors");
            Some(decoded.accepted())
        }
        Err(BodyError::Syntax { message, .. }) => {
            assert!(
                reference.is_err() || decoder_is_stricter(message),
                "JSON body refused ({message}) but serde_json reads it: {body:?}"
            );
            None
        }
        Err(BodyError::Utf8 { .. }) => {
            assert!(std::str::from_utf8(body).is_err(), "a UTF-8 body refused as not UTF-8");
            None
        }
        Err(BodyError::NotObjectOrArray) => None,
    }
}

/// Rules where the decoder refuses JSON that the grammar allows: a nesting limit, and
/// `\u` escapes that name no character (serde_json checks those only when it decodes).
fn decoder_is_stricter(reason: &str) -> bool {
    reason.contains("nested deeper") || reason.contains("surrogate") || reason.contains("\\u escape")
}

/// The body's lines with their 1-based numbers, as NDJSON counts them: split at `\n` only,
/// the last line needs no newline.
fn split_lines(body: &[u8]) -> Vec<(u64, &[u8])> {
    body.split(|b| *b == b'\n').zip(1u64..).map(|(line, number)| (number, line)).collect()
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}
