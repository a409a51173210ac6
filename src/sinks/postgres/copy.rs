//! Rows of an Arrow batch in PostgreSQL's binary COPY format (`COPY ... FROM STDIN (FORMAT
//! binary)`): a signature, then per row a field count and per field a length and the value in
//! the type's binary send format. Written straight from the Arrow columns, without a value
//! object per field.
//!
//! PostgreSQL cannot store the character U+0000 in `text` or `jsonb`, which JSON allows; such
//! characters are written as U+FFFD (documented in docs/reference/postgres.md), so one event
//! cannot stop the sink.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{
    Array, BooleanArray, Decimal128Array, FixedSizeBinaryArray, PrimitiveArray, RecordBatch, StringArray,
};
use arrow_schema::DataType;
use std::borrow::Cow;

use crate::schema::types::{FieldKind, StreamSchema};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// 2000-01-01, PostgreSQL's epoch, in Unix microseconds and days.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const PG_EPOCH_DAYS: i32 = 10_957;
const JSONB_VERSION: u8 = 1;
const REPLACEMENT_CHARACTER: &str = "\u{FFFD}";

/// One column, downcast once per batch.
enum Column<'a> {
    Bool(&'a BooleanArray),
    Int32(&'a PrimitiveArray<Int32Type>),
    Int64(&'a PrimitiveArray<Int64Type>),
    Float64(&'a PrimitiveArray<Float64Type>),
    Text(&'a StringArray),
    Jsonb(&'a StringArray),
    Timestamptz(&'a PrimitiveArray<TimestampMicrosecondType>),
    Date(&'a PrimitiveArray<Date32Type>),
    Numeric(&'a Decimal128Array, u16),
    Uuid(&'a FixedSizeBinaryArray),
}

/// The PostgreSQL type of a column of `kind`, as `format_type` spells it.
pub fn sql_type(kind: &FieldKind) -> String {
    match kind {
        FieldKind::Bool => "boolean".into(),
        FieldKind::Int32 { .. } => "integer".into(),
        FieldKind::Int64 { .. } => "bigint".into(),
        FieldKind::Float64 { .. } => "double precision".into(),
        FieldKind::String { .. } | FieldKind::Enum { .. } => "text".into(),
        FieldKind::Timestamp { .. } => "timestamp with time zone".into(),
        FieldKind::Date => "date".into(),
        FieldKind::Decimal { precision, scale, .. } => format!("numeric({precision},{scale})"),
        FieldKind::Uuid => "uuid".into(),
        FieldKind::Json => "jsonb".into(),
    }
}

/// Appends the COPY signature and header to `out`; call once per COPY.
pub fn write_header(out: &mut Vec<u8>) {
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&0u32.to_be_bytes()); // flags
    out.extend_from_slice(&0u32.to_be_bytes()); // header extension length
}

/// Appends the end-of-data marker to `out`.
pub fn write_trailer(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i16).to_be_bytes());
}

/// Appends every row of `records`, written under `schema`, to `out`. The columns are the
/// schema's fields in order, then `_extra` when the schema keeps unknown fields.
pub fn write_rows(schema: &StreamSchema, records: &RecordBatch, out: &mut Vec<u8>) {
    let mut columns: Vec<Column<'_>> = schema
        .fields
        .iter()
        .zip(records.columns())
        .map(|(field, array)| column(&field.kind, array.as_ref()))
        .collect();
    if records.num_columns() > schema.fields.len() {
        columns.push(Column::Jsonb(records.column(schema.fields.len()).as_string::<i32>()));
    }
    let count = i16::try_from(columns.len()).expect("a schema has fewer than 32768 fields");
    for row in 0..records.num_rows() {
        out.extend_from_slice(&count.to_be_bytes());
        for column in &columns {
            write_value(column, row, out);
        }
    }
}

fn column<'a>(kind: &FieldKind, array: &'a dyn Array) -> Column<'a> {
    match (kind, array.data_type()) {
        (FieldKind::Bool, _) => Column::Bool(array.as_boolean()),
        (FieldKind::Int32 { .. }, _) => Column::Int32(array.as_primitive()),
        (FieldKind::Int64 { .. }, _) => Column::Int64(array.as_primitive()),
        (FieldKind::Float64 { .. }, _) => Column::Float64(array.as_primitive()),
        (FieldKind::String { .. } | FieldKind::Enum { .. }, _) => Column::Text(array.as_string()),
        (FieldKind::Json, _) => Column::Jsonb(array.as_string()),
        (FieldKind::Timestamp { .. }, _) => Column::Timestamptz(array.as_primitive()),
        (FieldKind::Date, _) => Column::Date(array.as_primitive()),
        (FieldKind::Decimal { .. }, DataType::Decimal128(_, scale)) => {
            Column::Numeric(array.as_primitive::<Decimal128Type>(), u16::try_from(*scale).unwrap_or(0))
        }
        (FieldKind::Decimal { .. }, other) => panic!("a decimal column is Decimal128, not {other}"),
        (FieldKind::Uuid, _) => Column::Uuid(array.as_fixed_size_binary()),
    }
}

fn write_value(column: &Column<'_>, row: usize, out: &mut Vec<u8>) {
    let array: &dyn Array = match column {
        Column::Bool(a) => *a,
        Column::Int32(a) => *a,
        Column::Int64(a) => *a,
        Column::Float64(a) => *a,
        Column::Text(a) | Column::Jsonb(a) => *a,
        Column::Timestamptz(a) => *a,
        Column::Date(a) => *a,
        Column::Numeric(a, _) => *a,
        Column::Uuid(a) => *a,
    };
    if array.is_null(row) {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return;
    }
    match column {
        Column::Bool(a) => fixed(out, &[u8::from(a.value(row))]),
        Column::Int32(a) => fixed(out, &a.value(row).to_be_bytes()),
        Column::Int64(a) => fixed(out, &a.value(row).to_be_bytes()),
        Column::Float64(a) => fixed(out, &a.value(row).to_bits().to_be_bytes()),
        Column::Timestamptz(a) => fixed(out, &(a.value(row) - PG_EPOCH_MICROS).to_be_bytes()),
        Column::Date(a) => fixed(out, &(a.value(row) - PG_EPOCH_DAYS).to_be_bytes()),
        Column::Uuid(a) => fixed(out, a.value(row)),
        Column::Text(a) => text(out, None, a.value(row)),
        Column::Jsonb(a) => text(out, Some(JSONB_VERSION), a.value(row)),
        Column::Numeric(a, scale) => numeric(out, a.value(row), *scale),
    }
}

fn fixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A text value (with jsonb's version byte first when given), NUL characters replaced.
fn text(out: &mut Vec<u8>, version: Option<u8>, value: &str) {
    let start = out.len();
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend(version);
    match version {
        // JSON text holds no raw NUL (control characters are escaped in JSON strings).
        Some(_) => out.extend_from_slice(jsonb_text(value).as_bytes()),
        None if value.contains('\0') => {
            out.extend_from_slice(value.replace('\0', REPLACEMENT_CHARACTER).as_bytes())
        }
        None => out.extend_from_slice(value.as_bytes()),
    }
    let length = i32::try_from(out.len() - start - 4).expect("a value is smaller than 2 GiB");
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
}

/// JSON text as jsonb takes it: `\u0000` escapes become `\ufffd`, and numbers that
/// PostgreSQL's `numeric` cannot hold (jsonb stores numbers as numeric) become JSON strings of
/// the same text. Either would otherwise fail the whole delivery, again at every retry.
fn jsonb_text(json: &str) -> Cow<'_, str> {
    let mut text = Cow::Borrowed(json);
    if json.contains("\\u0000") {
        text = Cow::Owned(without_nul_escapes(json));
    }
    // Without an exponent, a number's digits are all in the text: a short text fits.
    let may_overflow =
        text.len() > NUMERIC_SCALE_MAX as usize || text.bytes().any(|b| b == b'e' || b == b'E');
    if may_overflow && let Some(quoted) = quote_numbers_numeric_cannot_hold(&text) {
        text = Cow::Owned(quoted);
    }
    text
}

/// PostgreSQL's `numeric` holds up to 131072 digits before the decimal point and 16383 after.
const NUMERIC_WEIGHT_MAX: i64 = 131_071;
const NUMERIC_SCALE_MAX: i64 = 16_383;

/// The JSON text with each number `numeric` cannot hold written as a string, or `None` when
/// every number fits. `json` is valid JSON (the decoder checked it).
fn quote_numbers_numeric_cannot_hold(json: &str) -> Option<String> {
    let bytes = json.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    i += 1;
                }
                let number = &json[start..i];
                if !numeric_holds(number) {
                    let text = out.get_or_insert_with(|| String::with_capacity(json.len() + 16));
                    text.push_str(&json[copied..start]);
                    text.push('"');
                    text.push_str(number);
                    text.push('"');
                    copied = i;
                }
            }
            _ => i += 1,
        }
    }
    out.map(|mut text| {
        text.push_str(&json[copied..]);
        text
    })
}

/// Whether `numeric` takes the JSON number `number` (checked as PostgreSQL 15 does: the
/// scale written, and the position of the first significant digit).
fn numeric_holds(number: &str) -> bool {
    let unsigned = number.strip_prefix('-').unwrap_or(number);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => match exponent.parse::<i64>() {
            Ok(e) if e.abs() < 1 << 31 => (mantissa, e),
            _ => return false,
        },
        None => (unsigned, 0),
    };
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if fraction.len() as i64 - exponent > NUMERIC_SCALE_MAX {
        return false;
    }
    // Position of the first significant digit: 0 for units, -1 for tenths.
    let first = if integer.bytes().any(|b| b != b'0') {
        integer.len() as i64 - 1
    } else {
        match fraction.bytes().position(|b| b != b'0') {
            Some(k) => -(k as i64) - 1,
            None => return true, // zero
        }
    };
    first + exponent <= NUMERIC_WEIGHT_MAX
}

/// JSON text with every `\u0000` escape (which jsonb refuses) turned into `\ufffd`; an escaped
/// backslash followed by `u0000` is left alone.
fn without_nul_escapes(json: &str) -> String {
    let bytes = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes[i + 1..].starts_with(b"u0000") {
                out.push_str(&json[copied..i]);
                out.push_str("\\ufffd");
                i += 6;
                copied = i;
                continue;
            }
            i += 2; // the escaped character, whatever it is
        } else {
            i += 1;
        }
    }
    out.push_str(&json[copied.min(json.len())..]);
    out
}

/// PostgreSQL's binary `numeric`: base-10000 digits around the decimal point.
fn numeric(out: &mut Vec<u8>, value: i128, scale: u16) {
    const NBASE: u128 = 10_000;
    const POSITIVE: u16 = 0x0000;
    const NEGATIVE: u16 = 0x4000;
    let sign = if value < 0 { NEGATIVE } else { POSITIVE };
    let magnitude = value.unsigned_abs();
    let scale_power = 10u128.pow(u32::from(scale));
    let integer = magnitude / scale_power;

    // Integer digits, most significant first.
    let mut integer_digits: Vec<u16> = Vec::with_capacity(10);
    let mut rest = integer;
    while rest > 0 {
        integer_digits.push((rest % NBASE) as u16);
        rest /= NBASE;
    }
    integer_digits.reverse();
    let mut digits = integer_digits.clone();
    // Fraction digits, the last one padded on the right with zeros.
    let mut fraction_digits = vec![0u16; usize::from(scale).div_ceil(4)];
    let mut rest = magnitude % scale_power;
    let mut slots = fraction_digits.iter_mut().rev();
    let partial = u32::from(scale % 4);
    if partial != 0 {
        let power = 10u128.pow(partial);
        *slots.next().expect("a partial digit exists") = ((rest % power) * 10u128.pow(4 - partial)) as u16;
        rest /= power;
    }
    for slot in slots {
        *slot = (rest % NBASE) as u16;
        rest /= NBASE;
    }
    digits.extend_from_slice(&fraction_digits);
    let mut weight = integer_digits.len() as i16 - 1;
    // No leading or trailing zero digits: the weight says where the point is.
    let leading = digits.iter().take_while(|d| **d == 0).count();
    digits.drain(..leading);
    weight -= leading as i16;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    let length = 8 + 2 * digits.len();
    out.extend_from_slice(&(length as i32).to_be_bytes());
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&(if digits.is_empty() { POSITIVE } else { sign }).to_be_bytes());
    out.extend_from_slice(&scale.to_be_bytes());
    for digit in digits {
        out.extend_from_slice(&digit.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_parts(value: i128, scale: u16) -> (i16, i16, u16, u16, Vec<u16>) {
        let mut out = Vec::new();
        numeric(&mut out, value, scale);
        let length = i32::from_be_bytes(out[0..4].try_into().unwrap()) as usize;
        assert_eq!(length, out.len() - 4);
        let word = |i: usize| u16::from_be_bytes(out[4 + 2 * i..6 + 2 * i].try_into().unwrap());
        let ndigits = word(0) as i16;
        let digits = (0..ndigits as usize).map(|i| word(4 + i)).collect();
        (ndigits, word(1) as i16, word(2), word(3), digits)
    }

    #[test]
    fn numeric_follows_postgres_layout() {
        // 12345.6789 → digits [1, 2345, 6789], weight 1
        assert_eq!(numeric_parts(123_456_789, 4), (3, 1, 0, 4, vec![1, 2345, 6789]));
        // -0.5 with scale 2 → [5000], weight -1, negative
        assert_eq!(numeric_parts(-50, 2), (1, -1, 0x4000, 2, vec![5000]));
        // 0 → no digits
        assert_eq!(numeric_parts(0, 4), (0, 0, 0, 4, vec![]));
        // 10000 with scale 0 → [1], weight 1 (trailing zero digit dropped)
        assert_eq!(numeric_parts(10_000, 0), (1, 1, 0, 0, vec![1]));
        // 0.0001 → [1], weight -1
        assert_eq!(numeric_parts(1, 4), (1, -1, 0, 4, vec![1]));
        // 0.00001 (scale 5) → [0, 1000] minus the leading zero: [1000], weight -2
        assert_eq!(numeric_parts(1, 5), (1, -2, 0, 5, vec![1000]));
        // 38 digits, scale 10: 9999…9.9999999999
        let max = 10i128.pow(38) - 1;
        let (ndigits, weight, sign, dscale, digits) = numeric_parts(max, 10);
        assert_eq!((weight, sign, dscale), (6, 0, 10));
        assert_eq!(ndigits, 10);
        assert_eq!(digits[0], 9999);
        assert_eq!(*digits.last().unwrap(), 9900);
        // scale 38: 0.999…9 (38 nines) → nine full digits and 9900
        let (ndigits, weight, _, dscale, digits) = numeric_parts(-max, 38);
        assert_eq!((ndigits, weight, dscale), (10, -1, 38));
        assert_eq!(digits[9], 9900);
    }

    #[test]
    fn nul_escapes_in_json_are_replaced_but_escaped_backslashes_kept() {
        assert_eq!(without_nul_escapes(r#"{"a":"x\u0000y"}"#), r#"{"a":"x\ufffdy"}"#);
        assert_eq!(without_nul_escapes(r#"{"a":"\\u0000"}"#), r#"{"a":"\\u0000"}"#);
        assert_eq!(without_nul_escapes(r#"["\\\u0000"]"#), r#"["\\\ufffd"]"#);
        assert_eq!(without_nul_escapes("plain"), "plain");
    }

    #[test]
    fn numbers_numeric_cannot_hold_become_strings() {
        // As PostgreSQL 15 answered for `'[v]'::jsonb`.
        for fits in ["1e-16383", "1e131071", "123e131069", "0e99999999", "-0.0", "1E+5", "0.0001e131075"] {
            assert!(numeric_holds(fits), "{fits}");
        }
        for overflows in
            ["1e-20000", "1e-16384", "1e131072", "0.5e-16383", "0.0e-20000", "0e-20000", "1e2147483648"]
        {
            assert!(!numeric_holds(overflows), "{overflows}");
        }
        assert_eq!(quote_numbers_numeric_cannot_hold(r#"{"a":1.5,"b":[2e3]}"#), None);
        assert_eq!(
            quote_numbers_numeric_cannot_hold(r#"{"big":-1e1000000,"s":"1e1000000","x":[1,5e-20000]}"#)
                .as_deref(),
            Some(r#"{"big":"-1e1000000","s":"1e1000000","x":[1,"5e-20000"]}"#)
        );
        assert_eq!(
            quote_numbers_numeric_cannot_hold(r#"["a\"1e999999",1e999999]"#).as_deref(),
            Some(r#"["a\"1e999999","1e999999"]"#)
        );
        assert!(matches!(jsonb_text(r#"{"a":1}"#), Cow::Borrowed(_)));
    }

    #[test]
    fn text_replaces_nul_and_sets_length() {
        let mut out = Vec::new();
        text(&mut out, None, "a\0b");
        assert_eq!(&out[..4], &(5i32).to_be_bytes());
        assert_eq!(&out[4..], "a\u{FFFD}b".as_bytes());
        let mut out = Vec::new();
        text(&mut out, Some(1), "{}");
        assert_eq!(out, [0, 0, 0, 3, 1, b'{', b'}']);
    }
}
