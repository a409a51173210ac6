//! The strict event decoder: request bytes → checked values → Arrow columns, in one pass.
//!
//! There is no generic JSON tree: the scanner reads each event's keys, finds the schema field,
//! and parses the value with that field's rule straight from the bytes (numbers stay text until
//! their field reads them, so `1.0` is refused for an int and decimals are exact). Each value is
//! appended to its column as soon as it is checked; when the event turns out invalid, what it
//! appended is cut off again, so a rejected event leaves no trace in the columns.
//!
//! Promises: never panics on any input; nesting is bounded by `DEPTH_MAX`; per-event work and
//! memory are linear in the event's size; one `DecodeScratch` is reused across requests.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::sync::Arc;

use arrow_array::RecordBatch;

use super::columns::{Column, ColumnBuilders};
use super::pattern::Pattern;
use super::types::{Field, FieldKind, OnInvalid, StreamSchema, UnknownFields};
use super::values::{self, DecimalSource};

/// Deepest nesting of arrays and objects accepted inside an event.
pub const DEPTH_MAX: u32 = 64;
/// How many error entries an answer lists; `rejected` still counts all.
pub const ERRORS_LISTED_MAX: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// One JSON object per line.
    Ndjson,
    /// One JSON object, or an array of objects.
    Json,
}

/// Where an event sits in its request: NDJSON line (1-based) or array index (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    Line(u64),
    Index(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventError {
    pub location: Location,
    pub field: Option<Box<str>>,
    pub reason: String,
}

/// An invalid event kept for the dead-letter output.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub location: Location,
    pub reason: String,
    pub raw: String,
}

/// The outcome of one request body.
pub struct Decoded {
    /// The accepted events, one row each.
    pub records: RecordBatch,
    /// Invalid events (rejected, or dead-lettered under `on_invalid = "dead_letter"`).
    pub invalid: u64,
    /// The first `ERRORS_LISTED_MAX` invalid events.
    pub errors: Vec<EventError>,
    /// Every invalid event, only under `on_invalid = "dead_letter"`.
    pub dead_letters: Vec<DeadLetter>,
}

impl Decoded {
    pub fn accepted(&self) -> u64 {
        self.records.num_rows() as u64
    }
}

/// The body as a whole cannot be read (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("invalid JSON at byte {offset}: {message}")]
    Syntax { offset: usize, message: &'static str },
    #[error("the body is not valid UTF-8 (byte {offset})")]
    Utf8 { offset: usize },
    #[error("expected a JSON object or an array of objects")]
    NotObjectOrArray,
}

/// Buffers reused across requests so the hot path does not allocate per event.
#[derive(Default)]
pub struct DecodeScratch {
    /// Per field, the number of the last event that gave it a value: finds repeated and
    /// missing fields without clearing anything per event.
    seen: Vec<u64>,
    /// Number of the current event; it only grows, so old marks in `seen` never match.
    event: u64,
    /// The current string when it had to be unescaped, and the last timestamp's day.
    value: ValueScratch,
    /// `_extra` members of the current event, as `,"k":v,"k2":v2`.
    extra: String,
    /// Per field, its key as words to match in place (`None` for long names).
    keys: Vec<Option<KeyWords>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SyntaxError {
    pos: usize,
    message: &'static str,
}

/// Why one event is invalid.
#[derive(Debug)]
struct Fault {
    field: Option<Box<str>>,
    reason: String,
}

fn fault(field: &Field, reason: String) -> Fault {
    Fault { field: Some(field.name.clone()), reason }
}

pub fn decode_body(
    schema: &Arc<StreamSchema>,
    body: &[u8],
    format: BodyFormat,
    scratch: &mut DecodeScratch,
) -> Result<Decoded, BodyError> {
    let capacity = (body.len() / 160).clamp(16, 1 << 16);
    scratch.seen.resize(schema.fields.len(), 0);
    scratch.keys.clear();
    scratch.keys.extend(schema.fields.iter().map(|field| KeyWords::new(&field.name)));
    let mut run = Run {
        schema,
        columns: ColumnBuilders::new(schema.clone(), capacity),
        scratch,
        invalid: 0,
        errors: Vec::new(),
        dead_letters: Vec::new(),
    };
    match format {
        BodyFormat::Ndjson => run.ndjson(body),
        BodyFormat::Json => run.json(body)?,
    }
    Ok(Decoded {
        records: run.columns.finish(),
        invalid: run.invalid,
        errors: run.errors,
        dead_letters: run.dead_letters,
    })
}

struct Run<'s> {
    schema: &'s Arc<StreamSchema>,
    columns: ColumnBuilders,
    scratch: &'s mut DecodeScratch,
    invalid: u64,
    errors: Vec<EventError>,
    dead_letters: Vec<DeadLetter>,
}

impl Run<'_> {
    fn ndjson(&mut self, body: &[u8]) {
        // Validate the whole body once (fast, with SIMD) and cut lines out of it (a line ends at
        // an ASCII byte, so it is valid UTF-8 too); only a body with bad bytes pays per-line
        // checks, with std's checker, which also finds where a line goes wrong.
        let body_text = simdutf8::basic::from_utf8(body).ok();
        let mut line_number = 0u64;
        let mut start = 0usize;
        while start <= body.len() {
            let end = memchr::memchr(b'\n', body.get(start..).unwrap_or_default())
                .map_or(body.len(), |i| start + i);
            line_number += 1;
            let mut line = body.get(start..end).unwrap_or_default();
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            if !line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
                let location = Location::Line(line_number);
                let text = body_text.and_then(|all| all.get(start..start + line.len()));
                match text.map(Ok).unwrap_or_else(|| std::str::from_utf8(line)) {
                    Ok(text) => self.ndjson_line(text, location),
                    Err(e) => {
                        let reason = format!("invalid UTF-8 at column {}", e.valid_up_to() + 1);
                        self.record_invalid(location, None, reason, &String::from_utf8_lossy(line));
                    }
                }
            }
            start = end + 1;
        }
    }

    fn ndjson_line(&mut self, line: &str, location: Location) {
        let mut parser = Parser::new(line);
        parser.skip_whitespace();
        if parser.peek() != Some(b'{') {
            let reason = "expected a JSON object".to_owned();
            self.record_invalid(location, None, reason, line);
            return;
        }
        let outcome = self.event(&mut parser).and_then(|fault| {
            parser.skip_whitespace();
            match parser.peek() {
                None => Ok(fault),
                Some(_) => Err(parser.error("unexpected text after the object")),
            }
        });
        match outcome {
            Ok(None) => self.columns.end_event(&self.scratch.extra),
            Ok(Some(fault)) => {
                self.columns.discard_event();
                self.record_invalid(location, fault.field, fault.reason, line);
            }
            Err(syntax) => {
                self.columns.discard_event();
                let reason = format!("invalid JSON at column {}: {}", syntax.pos + 1, syntax.message);
                self.record_invalid(location, None, reason, line);
            }
        }
    }

    fn json(&mut self, body: &[u8]) -> Result<(), BodyError> {
        // The SIMD check only says whether the body is valid; std's finds where it is not.
        let text = simdutf8::basic::from_utf8(body)
            .or_else(|_| std::str::from_utf8(body))
            .map_err(|e| BodyError::Utf8 { offset: e.valid_up_to() })?;
        let mut parser = Parser::new(text);
        let body_error = |e: SyntaxError| BodyError::Syntax { offset: e.pos, message: e.message };
        parser.skip_whitespace();
        match parser.peek() {
            None => return Ok(()),
            Some(b'{') => self.array_element(&mut parser, 0).map_err(body_error)?,
            Some(b'[') => {
                parser.bump();
                let mut index = 0u64;
                parser.skip_whitespace();
                if parser.peek() == Some(b']') {
                    parser.bump();
                } else {
                    loop {
                        parser.skip_whitespace();
                        self.array_element(&mut parser, index).map_err(body_error)?;
                        index += 1;
                        parser.skip_whitespace();
                        match parser.next_byte() {
                            Some(b',') => continue,
                            Some(b']') => break,
                            _ => return Err(body_error(parser.error_before("expected ',' or ']'"))),
                        }
                    }
                }
            }
            Some(_) => return Err(BodyError::NotObjectOrArray),
        }
        parser.skip_whitespace();
        match parser.peek() {
            None => Ok(()),
            Some(_) => Err(body_error(parser.error("unexpected text after the JSON value"))),
        }
    }

    /// One element of a JSON body (or the single object): an object is an event, anything
    /// else is one invalid event. A syntax error anywhere makes the whole body unreadable.
    fn array_element(&mut self, parser: &mut Parser<'_>, index: u64) -> Result<(), SyntaxError> {
        let location = Location::Index(index);
        let start = parser.pos;
        if parser.peek() != Some(b'{') {
            parser.skip_value(0)?;
            let raw = parser.slice(start, parser.pos);
            self.record_invalid(location, None, "expected a JSON object".to_owned(), raw);
            return Ok(());
        }
        match self.event(parser) {
            Ok(None) => self.columns.end_event(&self.scratch.extra),
            Ok(Some(fault)) => {
                self.columns.discard_event();
                let raw = parser.slice(start, parser.pos);
                self.record_invalid(location, fault.field, fault.reason, raw);
            }
            Err(syntax) => {
                self.columns.discard_event();
                return Err(syntax);
            }
        }
        Ok(())
    }

    /// Reads one object (the parser is at `{`), appending each field's value to its column as
    /// soon as it is checked. Returns the first fault of an invalid event (the object is still
    /// read to its end), or a syntax error; either way the caller discards the event's values.
    fn event(&mut self, parser: &mut Parser<'_>) -> Result<Option<Fault>, SyntaxError> {
        let schema = self.schema;
        let scratch = &mut *self.scratch;
        scratch.event += 1;
        scratch.extra.clear();
        let mut present = Presence { seen: &mut scratch.seen, event: scratch.event, count: 0 };
        let mut first_fault: Option<Fault> = None;
        // Events usually list fields in schema order: the field after the last one is tried
        // first, and its key matched in place.
        let mut next = 0usize;

        parser.expect(b'{', "expected '{'")?;
        parser.skip_whitespace();
        if parser.peek() == Some(b'}') {
            parser.bump();
        } else {
            loop {
                parser.skip_whitespace();
                let key = match (schema.fields.get(next), scratch.keys.get(next)) {
                    (Some(field), Some(words)) if parser.eat_key(&field.name, words.as_ref()) => None,
                    _ => Some(parser.string_token()?),
                };
                parser.skip_whitespace();
                parser.expect(b':', "expected ':'")?;
                parser.skip_whitespace();
                if first_fault.is_some() {
                    parser.skip_value(0)?;
                } else {
                    let index = match key {
                        None => Some(next),
                        Some(key) => {
                            let name = key.value(parser.text, &mut scratch.value.text)?;
                            let index = schema.field_index(name.as_bytes());
                            if index.is_none() {
                                let rule = schema.unknown_fields;
                                first_fault = read_unknown(parser, rule, key, name, &mut scratch.extra)?;
                            }
                            index
                        }
                    };
                    if let Some(index) = index {
                        next = index + 1;
                        let column = self.columns.column(index);
                        first_fault =
                            read_field(parser, schema, index, column, &mut present, &mut scratch.value)?;
                    }
                }
                parser.skip_whitespace();
                match parser.next_byte() {
                    Some(b',') => continue,
                    Some(b'}') => break,
                    _ => return Err(parser.error_before("expected ',' or '}'")),
                }
            }
        }
        if first_fault.is_some() {
            return Ok(first_fault);
        }
        if present.count < schema.fields.len() {
            for (index, field) in schema.fields.iter().enumerate() {
                if !present.has(index) {
                    if !field.nullable {
                        return Ok(Some(fault(field, "required field is missing".to_owned())));
                    }
                    self.columns.column(index).push_null();
                }
            }
        }
        Ok(None)
    }

    fn record_invalid(&mut self, location: Location, field: Option<Box<str>>, reason: String, raw: &str) {
        self.invalid += 1;
        if self.schema.on_invalid == OnInvalid::DeadLetter {
            self.dead_letters.push(DeadLetter { location, reason: reason.clone(), raw: raw.to_owned() });
        }
        if self.errors.len() < ERRORS_LISTED_MAX {
            self.errors.push(EventError { location, field, reason });
        }
    }
}

/// Handles a key that names no field, by the schema's `unknown_fields` rule; `extra`
/// collects the members kept for `_extra`.
fn read_unknown(
    parser: &mut Parser<'_>,
    rule: UnknownFields,
    key: StringToken,
    name: &str,
    extra: &mut String,
) -> Result<Option<Fault>, SyntaxError> {
    let start = parser.pos;
    parser.skip_value(0)?;
    match rule {
        // An unknown name is the client's text: cut it, so a huge key cannot bloat the answer.
        UnknownFields::Reject => {
            Ok(Some(Fault { field: Some(shorten(name).as_ref().into()), reason: "unknown field".to_owned() }))
        }
        UnknownFields::Drop => Ok(None),
        UnknownFields::Keep => {
            // The key's raw text (quotes included) is already valid JSON.
            extra.push(',');
            extra.push_str(parser.slice(key.start - 1, key.end + 1));
            extra.push(':');
            extra.push_str(parser.slice(start, parser.pos));
            Ok(None)
        }
    }
}

/// Which fields the current event gave a value.
struct Presence<'s> {
    /// Per field, the number of the last event that gave it one.
    seen: &'s mut [u64],
    event: u64,
    /// How many fields got a value.
    count: usize,
}

impl Presence<'_> {
    fn has(&self, index: usize) -> bool {
        self.seen.get(index) == Some(&self.event)
    }

    /// Records field `index`; false if it already had a value.
    fn add(&mut self, index: usize) -> bool {
        match self.seen.get_mut(index) {
            Some(mark) if *mark != self.event => {
                *mark = self.event;
                self.count += 1;
                true
            }
            _ => false,
        }
    }
}

/// Reads the value of field `index` into its column; returns the fault if it is invalid.
fn read_field(
    parser: &mut Parser<'_>,
    schema: &StreamSchema,
    index: usize,
    column: &mut Column,
    present: &mut Presence<'_>,
    scratch: &mut ValueScratch,
) -> Result<Option<Fault>, SyntaxError> {
    let field = schema.fields.get(index).expect("index from the schema");
    if !present.add(index) {
        parser.skip_value(0)?;
        return Ok(Some(fault(field, "field appears twice".to_owned())));
    }
    match read_value(parser, field, column, scratch) {
        Ok(()) => Ok(None),
        Err(Stop::Invalid(reason)) => Ok(Some(fault(field, reason))),
        Err(Stop::Syntax(error)) => Err(error),
    }
}

/// What reading one value may need besides the text.
#[derive(Default)]
struct ValueScratch {
    /// The string being read, when it had to be unescaped.
    text: String,
    days: values::DayCache,
}

/// Why a field's value was not appended: the event is invalid, or the text is not JSON.
enum Stop {
    Invalid(String),
    Syntax(SyntaxError),
}

impl From<SyntaxError> for Stop {
    fn from(error: SyntaxError) -> Stop {
        Stop::Syntax(error)
    }
}

/// Reads the value of a schema field, checks the field's rule and appends it to `column`.
fn read_value(
    parser: &mut Parser<'_>,
    field: &Field,
    column: &mut Column,
    scratch: &mut ValueScratch,
) -> Result<(), Stop> {
    let first = parser.peek().ok_or_else(|| parser.error("expected a value"))?;
    if first == b'n' {
        parser.literal(b"null")?;
        if !field.nullable {
            return Err(Stop::Invalid("must not be null".to_owned()));
        }
        column.push_null();
        return Ok(());
    }
    match (&field.kind, column) {
        (FieldKind::Bool, Column::Bool(column)) => match first {
            b't' => parser.literal(b"true").map(|()| column.push(true))?,
            b'f' => parser.literal(b"false").map(|()| column.push(false))?,
            _ => return Err(mismatch(parser, "true or false")),
        },
        (FieldKind::Int32 { min, max }, Column::Int32(column)) => {
            let value = read_integer(parser, first, field, *min, *max)?;
            column.push(i32::try_from(value).expect("checked against the int32 range"));
        }
        (FieldKind::Int64 { min, max }, Column::Int64(column)) => {
            column.push(read_integer(parser, first, field, *min, *max)?);
        }
        (FieldKind::Float64 { min, max }, Column::Float64(column)) => {
            if !is_number_start(first) {
                return Err(mismatch(parser, "a number"));
            }
            let number = parser.number_token()?;
            column.push(check_float(number, parser.text, *min, *max).map_err(Stop::Invalid)?);
        }
        (FieldKind::Decimal { precision, scale, min, max }, Column::Decimal(column)) => {
            let (digits, source) = if is_number_start(first) {
                let number = parser.number_token()?;
                (parser.slice(number.start, number.end), DecimalSource::JsonNumber)
            } else if first == b'"' {
                let token = parser.string_token()?;
                (token.value(parser.text, &mut scratch.text)?, DecimalSource::String)
            } else {
                return Err(mismatch(parser, "a decimal number or a string holding one"));
            };
            let value = check_decimal(digits, source, *precision, *scale, min.as_ref(), max.as_ref());
            column.push(value.map_err(Stop::Invalid)?);
        }
        (FieldKind::Timestamp { epoch_unit }, Column::Timestamp(column)) => {
            column.push(read_timestamp(parser, first, *epoch_unit, scratch)?);
        }
        (FieldKind::Json, Column::Text(column)) => {
            let start = parser.pos;
            parser.skip_value(0)?;
            column.push(parser.slice(start, parser.pos));
        }
        (
            kind @ (FieldKind::String { .. } | FieldKind::Enum { .. } | FieldKind::Date | FieldKind::Uuid),
            column,
        ) => {
            if first != b'"' {
                return Err(mismatch(parser, "a string"));
            }
            let token = parser.string_token()?;
            // A bad escape here makes the event invalid, not the text: the string is whole.
            let value = token
                .value(parser.text, &mut scratch.text)
                .map_err(|e| Stop::Invalid(e.message.to_owned()))?;
            let invalid = |reason: &str| Stop::Invalid(reason.to_owned());
            match (kind, column) {
                (FieldKind::String { max_length, pattern }, Column::Text(column)) => {
                    check_string(value, *max_length, pattern.as_ref()).map_err(Stop::Invalid)?;
                    column.push(value);
                }
                (FieldKind::Enum { values }, Column::Text(column)) => {
                    if !values.iter().any(|v| v.as_ref() == value) {
                        let list: Vec<&str> = values.iter().map(AsRef::as_ref).collect();
                        return Err(Stop::Invalid(format!(
                            "\"{}\" is not one of {}",
                            shorten(value),
                            list.join(", ")
                        )));
                    }
                    column.push(value);
                }
                (FieldKind::Date, Column::Date(column)) => {
                    column.push(values::parse_date_days(value.as_bytes()).map_err(invalid)?);
                }
                (FieldKind::Uuid, Column::Uuid(column)) => {
                    column.push(values::parse_uuid(value.as_bytes()).map_err(invalid)?);
                }
                _ => unreachable!("each field's column is made for its kind"),
            }
        }
        _ => unreachable!("each field's column is made for its kind"),
    }
    Ok(())
}

/// Skips a value of the wrong JSON type and explains what was expected.
fn mismatch(parser: &mut Parser<'_>, expected: &str) -> Stop {
    let got = match parser.peek() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    };
    match parser.skip_value(0) {
        Ok(()) => Stop::Invalid(format!("expected {expected}, got {got}")),
        Err(error) => Stop::Syntax(error),
    }
}

fn is_number_start(byte: u8) -> bool {
    byte == b'-' || byte.is_ascii_digit()
}

fn read_integer(parser: &mut Parser<'_>, first: u8, field: &Field, min: i64, max: i64) -> Result<i64, Stop> {
    if !is_number_start(first) {
        return Err(mismatch(parser, "an integer"));
    }
    let number = parser.number_token()?;
    check_integer(number, parser.text, field, min, max).map_err(Stop::Invalid)
}

/// An RFC 3339 string, or an integer epoch when the field has an `epoch_unit`.
fn read_timestamp(
    parser: &mut Parser<'_>,
    first: u8,
    epoch_unit: Option<values::EpochUnit>,
    scratch: &mut ValueScratch,
) -> Result<i64, Stop> {
    let invalid = |reason: &str| Stop::Invalid(reason.to_owned());
    if first == b'"' {
        let token = parser.string_token()?;
        let value = token.value(parser.text, &mut scratch.text)?;
        return values::parse_rfc3339_micros_cached(value.as_bytes(), &mut scratch.days).map_err(invalid);
    }
    let Some(unit) = epoch_unit else {
        return Err(mismatch(parser, "an RFC 3339 string (integers need epoch_unit)"));
    };
    if !is_number_start(first) {
        return Err(mismatch(parser, "an RFC 3339 string or an integer epoch"));
    }
    let number = parser.number_token()?;
    let digits = parser.slice(number.start, number.end);
    if !number.integral {
        return Err(Stop::Invalid(format!("{digits} is not an integer epoch")));
    }
    match digits.parse::<i64>() {
        Ok(epoch) => values::epoch_to_micros(epoch, unit).map_err(invalid),
        Err(_) => Err(Stop::Invalid(format!("{digits} is out of range for an epoch"))),
    }
}

fn check_integer(number: NumberToken, text: &str, field: &Field, min: i64, max: i64) -> Result<i64, String> {
    let digits = text.get(number.start..number.end).unwrap_or_default();
    if !number.integral {
        return Err(format!("{digits} is not an integer"));
    }
    let type_name = field.kind.type_name();
    let value = number
        .short_integer()
        .or_else(|| digits.parse().ok())
        .ok_or_else(|| format!("{digits} is out of range for {type_name}"))?;
    let (type_min, type_max) = match field.kind {
        FieldKind::Int32 { .. } => (i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => (i64::MIN, i64::MAX),
    };
    if value < type_min || value > type_max {
        return Err(format!("{digits} is out of range for {type_name}"));
    }
    if value < min {
        return Err(format!("{value} is below the minimum {min}"));
    }
    if value > max {
        return Err(format!("{value} is above the maximum {max}"));
    }
    Ok(value)
}

fn check_float(number: NumberToken, text: &str, min: Option<f64>, max: Option<f64>) -> Result<f64, String> {
    let digits = text.get(number.start..number.end).unwrap_or_default();
    // Rust's float parsing is correctly rounded (Eisel-Lemire with a big-number fallback).
    let value = match number.short_decimal() {
        Some(value) => value,
        None => digits.parse().map_err(|_| format!("{digits} is not a number"))?,
    };
    if !value.is_finite() {
        return Err(format!("{digits} is out of range for float64"));
    }
    if let Some(min) = min.filter(|m| value < *m) {
        return Err(format!("{digits} is below the minimum {min}"));
    }
    if let Some(max) = max.filter(|m| value > *m) {
        return Err(format!("{digits} is above the maximum {max}"));
    }
    Ok(value)
}

fn check_decimal(
    digits: &str,
    source: DecimalSource,
    precision: u8,
    scale: u8,
    min: Option<&super::types::DecimalBound>,
    max: Option<&super::types::DecimalBound>,
) -> Result<i128, String> {
    let shown = shorten(digits);
    let value = values::parse_decimal(digits.as_bytes(), source, precision, scale)
        .map_err(|reason| format!("{shown} {reason}"))?;
    use std::cmp::Ordering;
    if let Some(bound) = min
        && values::compare_decimal_to_bound(value, scale, bound.text.as_bytes()) == Ok(Ordering::Less)
    {
        return Err(format!("{shown} is below the minimum {}", bound.text));
    }
    if let Some(bound) = max
        && values::compare_decimal_to_bound(value, scale, bound.text.as_bytes()) == Ok(Ordering::Greater)
    {
        return Err(format!("{shown} is above the maximum {}", bound.text));
    }
    Ok(value)
}

/// Checks a string field's `max_length` and `pattern`.
fn check_string(value: &str, max_length: Option<u32>, pattern: Option<&Pattern>) -> Result<(), String> {
    if let Some(limit) = max_length {
        let limit = limit as usize;
        // Bytes bound characters from above: only long strings need counting.
        if value.len() > limit && value.chars().count() > limit {
            return Err(format!("string is longer than max_length {limit} characters"));
        }
    }
    if let Some(regex) = pattern
        && !regex.is_match(value)
    {
        return Err(format!("\"{}\" does not match the pattern {}", shorten(value), regex.as_str()));
    }
    Ok(())
}

/// A value quoted in an error message, cut so answers stay small.
fn shorten(value: &str) -> std::borrow::Cow<'_, str> {
    const SHOWN_MAX: usize = 64;
    match value.char_indices().nth(SHOWN_MAX) {
        None => value.into(),
        Some((cut, _)) => format!("{}…", value.get(..cut).unwrap_or_default()).into(),
    }
}

#[derive(Clone, Copy, Debug)]
struct StringToken {
    /// Content range, quotes excluded.
    start: usize,
    end: usize,
    escaped: bool,
}

impl StringToken {
    /// The string's value: borrowed from the body, or unescaped into `text` (cleared first).
    fn value<'v>(&self, body: &'v str, text: &'v mut String) -> Result<&'v str, SyntaxError> {
        if !self.escaped {
            return Ok(body.get(self.start..self.end).unwrap_or_default());
        }
        text.clear();
        self.unescape_into(body, text)?;
        Ok(text.as_str())
    }
    fn unescape_into(&self, body: &str, out: &mut String) -> Result<(), SyntaxError> {
        let raw = body.get(self.start..self.end).unwrap_or_default();
        let bytes = raw.as_bytes();
        let mut i = 0usize;
        let mut copied_from = 0usize;
        let error = |offset: usize, message| SyntaxError { pos: self.start + offset, message };
        while let Some(position) = memchr::memchr(b'\\', bytes.get(i..).unwrap_or_default()) {
            let at = i + position;
            out.push_str(raw.get(copied_from..at).unwrap_or_default());
            let escape = bytes.get(at + 1).copied().ok_or_else(|| error(at, "bad escape"))?;
            i = at + 2;
            let decoded = match escape {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let high = hex4(bytes, at + 2).ok_or_else(|| error(at, "bad \\u escape"))?;
                    i = at + 6;
                    if (0xD800..0xDC00).contains(&high) {
                        let low = match (bytes.get(i), bytes.get(i + 1)) {
                            (Some(b'\\'), Some(b'u')) => hex4(bytes, i + 2),
                            _ => None,
                        }
                        .filter(|low| (0xDC00..0xE000).contains(low))
                        .ok_or_else(|| error(at, "unpaired surrogate in \\u escape"))?;
                        i += 6;
                        char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
                            .ok_or_else(|| error(at, "bad \\u escape"))?
                    } else {
                        char::from_u32(high).ok_or_else(|| error(at, "unpaired surrogate in \\u escape"))?
                    }
                }
                _ => return Err(error(at, "bad escape")),
            };
            out.push(decoded);
            copied_from = i;
        }
        out.push_str(raw.get(copied_from..).unwrap_or_default());
        Ok(())
    }
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = bytes.get(at..at + 4)?;
    digits.iter().try_fold(0u32, |acc, b| Some(acc * 16 + char::from(*b).to_digit(16)?))
}

/// A key `"name"` of at most 16 bytes and the mask of its bytes in a little-endian word:
/// compared with the next 16 bytes of the text at once, without a call to `memcmp`.
#[derive(Clone, Copy, Debug)]
struct KeyWords {
    key: u128,
    mask: u128,
}

impl KeyWords {
    fn new(name: &str) -> Option<KeyWords> {
        let length = name.len() + 2;
        if length > 16 {
            return None;
        }
        let mut bytes = [b'"'; 16];
        bytes.get_mut(1..length - 1)?.copy_from_slice(name.as_bytes());
        let mask = u128::MAX >> (8 * (16 - length));
        Some(KeyWords { key: u128::from_le_bytes(bytes) & mask, mask })
    }

    /// Whether `window` starts with the key.
    #[inline]
    fn matches(&self, window: &[u8; 16]) -> bool {
        u128::from_le_bytes(*window) & self.mask == self.key
    }
}

#[derive(Clone, Copy, Debug)]
struct NumberToken {
    start: usize,
    end: usize,
    /// No fraction and no exponent.
    integral: bool,
    negative: bool,
    /// The digits before the exponent as one integer, exact when there are at most 19.
    mantissa: u64,
    /// How many digits `mantissa` was read from, and how many of them follow the point.
    digits: usize,
    fraction_digits: usize,
    exponent: bool,
}

impl NumberToken {
    /// The value of an integer of at most 18 digits, which cannot overflow; None for others,
    /// left to `str::parse`.
    fn short_integer(&self) -> Option<i64> {
        let magnitude = i64::try_from(self.mantissa).ok().filter(|_| self.integral && self.digits <= 18)?;
        Some(if self.negative { -magnitude } else { magnitude })
    }

    /// The value of a number of at most 15 digits without exponent, as one division of two
    /// exactly represented floats (Clinger's fast path, which `str::parse` takes too): the same
    /// correctly rounded value without the general parser's work. None for others.
    fn short_decimal(&self) -> Option<f64> {
        const POWERS_OF_TEN: [f64; 16] =
            [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
        if self.exponent || self.digits > 15 {
            return None;
        }
        // Below 10^15, so exact in an f64, as is the power of ten.
        let value = self.mantissa as f64 / POWERS_OF_TEN.get(self.fraction_digits)?;
        Some(if self.negative { -value } else { value })
    }
}

/// A cursor over valid UTF-8 text; JSON's structural bytes are ASCII, so every position it
/// stops at is a character boundary.
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Parser<'a> {
        Parser { text, bytes: text.as_bytes(), pos: 0 }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    fn bump(&mut self) {
        self.pos += 1;
    }

    #[inline]
    fn next_byte(&mut self) -> Option<u8> {
        let byte = self.peek();
        self.pos += 1;
        byte
    }

    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.text.get(start..end).unwrap_or_default()
    }

    fn error(&self, message: &'static str) -> SyntaxError {
        SyntaxError { pos: self.pos, message }
    }

    /// An error at the byte just consumed by `next_byte`.
    fn error_before(&self, message: &'static str) -> SyntaxError {
        SyntaxError { pos: self.pos.saturating_sub(1).min(self.bytes.len()), message }
    }

    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8, message: &'static str) -> Result<(), SyntaxError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(message))
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), SyntaxError> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error("invalid literal"))
        }
    }

    /// Consumes the key `"name"` if it is at the cursor, written plainly (names need no escapes).
    #[inline]
    fn eat_key(&mut self, name: &str, words: Option<&KeyWords>) -> bool {
        let end = self.pos + name.len() + 2;
        let window = self.bytes.get(self.pos..).and_then(<[u8]>::first_chunk);
        let found = match (words, window) {
            (Some(words), Some(window)) => words.matches(window),
            _ => {
                matches!(self.bytes.get(self.pos..end), Some([b'"', inner @ .., b'"']) if inner == name.as_bytes())
            }
        };
        if found {
            self.pos = end;
        }
        found
    }

    /// Reads a string token at `"`; checks escapes' shape and refuses raw control characters.
    fn string_token(&mut self) -> Result<StringToken, SyntaxError> {
        self.expect(b'"', "expected a string")?;
        let start = self.pos;
        let mut escaped = false;
        loop {
            let Some(at) = next_special_byte(self.bytes, self.pos) else {
                self.pos = self.bytes.len();
                return Err(self.error("unterminated string"));
            };
            self.pos = at;
            match self.bytes.get(at) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(StringToken { start, end: at, escaped });
                }
                Some(b'\\') => {
                    escaped = true;
                    // Step over the backslash and the escaped byte; `unescape_into` checks the rest.
                    self.pos += 2;
                    if self.pos > self.bytes.len() {
                        self.pos = self.bytes.len();
                        return Err(self.error("unterminated string"));
                    }
                }
                _ => {
                    // A string without an end is reported as such, whatever it holds.
                    let rest = self.bytes.get(at..).unwrap_or_default();
                    if memchr::memchr2(b'"', b'\\', rest).is_none() {
                        self.pos = self.bytes.len();
                        return Err(self.error("unterminated string"));
                    }
                    return Err(self.error("control character in a string"));
                }
            }
        }
    }

    /// Reads a number token per the JSON grammar, keeping its text and, in the same pass, its
    /// digits as an integer for the short numbers most values are.
    fn number_token(&mut self) -> Result<NumberToken, SyntaxError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let mut mantissa = 0u64;
        let mut digits = match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                1
            }
            Some(b'1'..=b'9') => self.read_digits(&mut mantissa),
            _ => return Err(self.error("invalid number")),
        };
        let mut integral = true;
        let mut fraction_digits = 0;
        if self.peek() == Some(b'.') {
            integral = false;
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number: digits must follow '.'"));
            }
            fraction_digits = self.read_digits(&mut mantissa);
            digits += fraction_digits;
        }
        let exponent = matches!(self.peek(), Some(b'e' | b'E'));
        if exponent {
            integral = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("invalid number: digits must follow the exponent"));
            }
            self.skip_digits();
        }
        if let Some(b'0'..=b'9') = self.peek() {
            return Err(self.error("invalid number: leading zero"));
        }
        Ok(NumberToken {
            start,
            end: self.pos,
            integral,
            negative,
            mantissa,
            digits,
            fraction_digits,
            exponent,
        })
    }

    /// Skips digits, adding them to `value` (which wraps past 19 of them); returns how many.
    fn read_digits(&mut self, value: &mut u64) -> usize {
        let start = self.pos;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            *value = value.wrapping_mul(10).wrapping_add(u64::from(digit - b'0'));
            self.pos += 1;
        }
        self.pos - start
    }

    fn skip_digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    /// Skips any JSON value, checking its syntax; `depth` counts the enclosing containers.
    fn skip_value(&mut self, depth: u32) -> Result<(), SyntaxError> {
        match self.peek() {
            Some(b'"') => {
                // Escapes are checked too: skipped text may still be stored (json, `_extra`).
                let token = self.string_token()?;
                if token.escaped {
                    token.unescape_into(self.text, &mut String::new())?;
                }
                Ok(())
            }
            Some(b'{') => self.skip_container(depth, b'}', true),
            Some(b'[') => self.skip_container(depth, b']', false),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number_token().map(drop),
            Some(_) => Err(self.error("expected a value")),
            None => Err(self.error("unexpected end of input")),
        }
    }

    fn skip_container(&mut self, depth: u32, close: u8, object: bool) -> Result<(), SyntaxError> {
        if depth >= DEPTH_MAX {
            return Err(self.error("nested deeper than 64 levels"));
        }
        self.pos += 1;
        self.skip_whitespace();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            if object {
                let token = self.string_token()?;
                if token.escaped {
                    token.unescape_into(self.text, &mut String::new())?;
                }
                self.skip_whitespace();
                self.expect(b':', "expected ':'")?;
                self.skip_whitespace();
            }
            self.skip_value(depth + 1)?;
            self.skip_whitespace();
            match self.next_byte() {
                Some(b',') => continue,
                Some(byte) if byte == close => return Ok(()),
                _ if object => return Err(self.error_before("expected ',' or '}'")),
                _ => return Err(self.error_before("expected ',' or ']'")),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::schema::parse::parse_schema;
    use arrow_array::Array;
    use arrow_array::cast::AsArray;

    fn schema(json: &str) -> Arc<StreamSchema> {
        Arc::new(parse_schema(json.as_bytes(), 1).unwrap())
    }

    fn decode(schema: &Arc<StreamSchema>, body: &str, format: BodyFormat) -> Decoded {
        decode_body(schema, body.as_bytes(), format, &mut DecodeScratch::default()).unwrap()
    }

    const LOG: &str = r#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"n","type":"int32","min":0,"max":599},{"name":"s","type":"string","nullable":true}],"time_field":"ts"}"#;

    #[test]
    fn ndjson_lines_are_numbered_physically_and_blank_lines_skipped() {
        let s = schema(LOG);
        let body = "{\"ts\":\"2024-01-01T00:00:00Z\",\"n\":1}\r\n\n  \n{\"ts\":\"2024-01-01T00:00:00Z\",\"n\":700}\n{bad\n{\"ts\":\"2024-01-01T00:00:00Z\",\"n\":2,\"s\":\"a\\nb\"}";
        let out = decode(&s, body, BodyFormat::Ndjson);
        assert_eq!(out.accepted(), 2);
        assert_eq!(out.invalid, 2);
        assert_eq!(out.errors[0].location, Location::Line(4));
        assert_eq!(out.errors[0].field.as_deref(), Some("n"));
        assert_eq!(out.errors[0].reason, "700 is above the maximum 599");
        assert_eq!(out.errors[1].location, Location::Line(5));
        assert!(out.errors[1].reason.starts_with("invalid JSON at column 2"), "{}", out.errors[1].reason);
        let strings = out.records.column(2).as_string::<i32>();
        assert!(strings.is_null(0));
        assert_eq!(strings.value(1), "a\nb");
    }

    #[test]
    fn json_array_reports_index_and_malformed_array_is_a_body_error() {
        let s = schema(LOG);
        let out = decode(
            &s,
            r#"[{"ts":"2024-01-01T00:00:00Z","n":1}, 5, {"ts":"2024-01-01T00:00:00Z"}]"#,
            BodyFormat::Json,
        );
        assert_eq!(out.accepted(), 1);
        assert_eq!(out.errors[0].location, Location::Index(1));
        assert_eq!(out.errors[1].location, Location::Index(2));
        assert_eq!(out.errors[1].field.as_deref(), Some("n"));
        let error = decode_body(&s, br#"[{"ts":1}"#, BodyFormat::Json, &mut DecodeScratch::default());
        assert!(matches!(error, Err(BodyError::Syntax { .. })));
    }

    #[test]
    fn integers_are_strict() {
        let s = schema(LOG);
        for (value, reason) in [
            ("1.0", "1.0 is not an integer"),
            ("1e3", "1e3 is not an integer"),
            ("\"1\"", "expected an integer, got a string"),
            ("-1", "-1 is below the minimum 0"),
            ("2147483648", "2147483648 is out of range for int32"),
        ] {
            let body = format!(r#"{{"ts":"2024-01-01T00:00:00Z","n":{value}}}"#);
            let out = decode(&s, &body, BodyFormat::Ndjson);
            assert_eq!(out.errors[0].reason, reason, "{value}");
        }
    }

    #[test]
    fn unknown_fields_follow_the_schema_rule() {
        let keep = schema(
            r#"{"fields":[{"name":"ts","type":"timestamp"}],"time_field":"ts","unknown_fields":"keep"}"#,
        );
        let out =
            decode(&keep, r#"{"ts":"2024-01-01T00:00:00Z","x":[1, {"y":null}],"z":"q"}"#, BodyFormat::Ndjson);
        assert_eq!(out.records.column(1).as_string::<i32>().value(0), r#"{"x":[1, {"y":null}],"z":"q"}"#);
        let reject = schema(r#"{"fields":[{"name":"ts","type":"timestamp"}],"time_field":"ts"}"#);
        let out = decode(&reject, r#"{"ts":"2024-01-01T00:00:00Z","x":1}"#, BodyFormat::Ndjson);
        assert_eq!(out.errors[0].field.as_deref(), Some("x"));
    }

    #[test]
    fn keys_are_matched_in_place_up_to_16_bytes() {
        let words = KeyWords::new("latency_ms").unwrap();
        let window = |text: &str| -> [u8; 16] {
            let mut bytes = [b' '; 16];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            bytes
        };
        assert!(words.matches(&window(r#""latency_ms":1.5"#)));
        assert!(!words.matches(&window(r#""latency_msx":1"#)));
        assert!(!words.matches(&window(r#""latency_m":1.5,"#)));
        assert!(!words.matches(&window(r#""Latency_ms":1.5"#)));
        assert!(KeyWords::new("fourteen_chars").unwrap().matches(&window(r#""fourteen_chars""#)));
        assert!(KeyWords::new("fifteen_chars_x").is_none(), "longer keys are compared as slices");
    }

    #[test]
    fn short_numbers_parse_as_str_parse_does() {
        let mut tokens: Vec<String> = ["0", "-0", "0.0", "-0.0", "1.5", "123.456", "0.1", "0.3", "-2.675"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        tokens.extend(
            ["999999999999999", "99999999999999.9", "0.000000000000001", "9007199254740993"]
                .map(String::from),
        );
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let digits = (state >> 33) % 10_u64.pow(1 + (state % 15) as u32);
            let point = (state >> 8) % 17;
            let mut text = digits.to_string();
            if point > 0 && (point as usize) <= text.len() {
                text.insert(text.len() - point as usize, '.');
                if text.starts_with('.') {
                    text.insert(0, '0');
                }
            }
            if state & 1 == 1 {
                text.insert(0, '-');
            }
            tokens.push(text);
        }
        let number = |text: &str| Parser::new(text).number_token().unwrap();
        for token in &tokens {
            if let Some(value) = number(token).short_decimal() {
                assert_eq!(value.to_bits(), token.parse::<f64>().unwrap().to_bits(), "{token}");
            }
            let expected: Option<i64> = token.parse().ok();
            assert_eq!(number(token).short_integer().or(expected), expected, "{token}");
        }
        assert_eq!(number("1e5").short_decimal(), None);
        assert_eq!(number("1e5").short_integer(), None);
        assert_eq!(number("1234567890123456").short_decimal(), None, "16 digits");
        assert_eq!(number("123456789012345.6").short_decimal(), None, "16 digits");
        assert_eq!(number("1234567890123.45").short_decimal(), Some(1_234_567_890_123.45));
        assert_eq!(number("-999999999999999999").short_integer(), Some(-999_999_999_999_999_999));
        assert_eq!(number("9223372036854775807").short_integer(), None, "19 digits go to str::parse");
        assert_eq!(number("1.5").short_integer(), None);
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion_blowup() {
        let s = schema(
            r#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"j","type":"json"}],"time_field":"ts"}"#,
        );
        let deep =
            format!(r#"{{"ts":"2024-01-01T00:00:00Z","j":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        let out = decode(&s, &deep, BodyFormat::Ndjson);
        assert_eq!(out.invalid, 1);
        assert!(out.errors[0].reason.contains("nested deeper"));
    }
}

/// The position of the first `"`, `\\` or byte below 0x20 (a raw control character, which
/// JSON strings may not hold) at or after `from`, looking at eight bytes at a time: strings
/// are short, so this beats a call to `memchr` and then a second look for control bytes.
fn next_special_byte(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    // The high bit of each zero byte, and maybe of bytes after one: only the lowest is exact.
    let zero_bytes = |word: u64| word.wrapping_sub(ONES) & !word & HIGH_BITS;
    let mut at = from;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of 8 bytes"));
        let found = zero_bytes(word ^ (ONES * u64::from(b'"')))
            | zero_bytes(word ^ (ONES * u64::from(b'\\')))
            | word.wrapping_sub(ONES * 0x20) & !word & HIGH_BITS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = bytes.get(at..)?;
    tail.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).map(|i| at + i)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod special_byte_tests {
    use super::next_special_byte;

    #[test]
    fn finds_the_first_special_byte_anywhere() {
        for length in 0..40 {
            let clean = vec![b'a'; length];
            assert_eq!(next_special_byte(&clean, 0), None);
            for at in 0..length {
                for special in [0u8, 0x1f, b'\n', b'\t', b'"', b'\\'] {
                    let mut bytes = clean.clone();
                    bytes[at] = special;
                    if at + 1 < length {
                        bytes[at + 1] = 0x01;
                    }
                    for from in 0..=at {
                        assert_eq!(next_special_byte(&bytes, from), Some(at), "length {length}, at {at}");
                    }
                    assert_eq!(next_special_byte(&bytes, at + 2), None, "length {length}, after {at}");
                }
            }
        }
        let plain: Vec<u8> = (0x20..=0xff).filter(|b| *b != b'"' && *b != b'\\').collect();
        assert_eq!(next_special_byte(&plain, 0), None, "other bytes from 0x20 up are plain");
        assert_eq!(next_special_byte(b"abc", 7), None, "past the end");
    }
}
