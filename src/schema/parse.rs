//! Schema JSON → `StreamSchema`, checking every rule of SPEC §3, and the comparison of two
//! versions that decides between "identical", "nullable additions" and "conflict".
//!
//! Each field is kept as canonical JSON text (fixed key order, defaults filled in, numbers as
//! written), so two schemas that differ only in key order compare equal, and `min`/`max` keep
//! their exact text for decimal bounds.

use std::collections::{BTreeMap, HashSet};

use serde_json::value::RawValue;

use super::types::{
    DECIMAL_PRECISION_MAX, DecimalBound, EXTRA_COLUMN, EpochUnit, Field, FieldKind, OnInvalid, StreamSchema,
    UnknownFields,
};

/// Why a schema was refused; `field` names the field at fault when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{problem}", field.as_ref().map(|f| format!("field \"{f}\": ")).unwrap_or_default())]
pub struct SchemaError {
    pub field: Option<String>,
    pub problem: String,
}

fn schema_error(field: Option<&str>, problem: impl Into<String>) -> SchemaError {
    SchemaError { field: field.map(str::to_owned), problem: problem.into() }
}

/// Largest compiled size of a `pattern`, so a schema cannot make the engine build a huge automaton.
const PATTERN_SIZE_MAX: usize = 1 << 20;

type RawMap = BTreeMap<String, Box<RawValue>>;

/// Parses a schema document. `version` is the stream version it will carry.
pub fn parse_schema(json: &[u8], version: u32) -> Result<StreamSchema, SchemaError> {
    let top: RawMap =
        serde_json::from_slice(json).map_err(|e| schema_error(None, format!("not a JSON object: {e}")))?;
    for key in top.keys() {
        if !matches!(key.as_str(), "fields" | "time_field" | "unknown_fields" | "on_invalid") {
            return Err(schema_error(None, format!("unknown option \"{key}\"")));
        }
    }
    let raw_fields: Vec<RawMap> = match top.get("fields") {
        None => return Err(schema_error(None, "\"fields\" is missing")),
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|_| schema_error(None, "\"fields\" must be an array of objects"))?,
    };
    if raw_fields.is_empty() {
        return Err(schema_error(None, "\"fields\" is empty"));
    }
    let unknown_fields = match optional_string(&top, "unknown_fields", None)?.as_deref() {
        None | Some("reject") => UnknownFields::Reject,
        Some("drop") => UnknownFields::Drop,
        Some("keep") => UnknownFields::Keep,
        Some(other) => {
            return Err(schema_error(
                None,
                format!("unknown_fields must be \"reject\", \"drop\" or \"keep\", got \"{other}\""),
            ));
        }
    };
    let on_invalid = match optional_string(&top, "on_invalid", None)?.as_deref() {
        None | Some("reject_line") => OnInvalid::RejectLine,
        Some("reject_request") => OnInvalid::RejectRequest,
        Some("dead_letter") => OnInvalid::DeadLetter,
        Some(other) => {
            return Err(schema_error(
                None,
                format!(
                    "on_invalid must be \"reject_line\", \"reject_request\" or \"dead_letter\", got \"{other}\""
                ),
            ));
        }
    };

    let mut fields = Vec::with_capacity(raw_fields.len());
    let mut field_texts = Vec::with_capacity(raw_fields.len());
    let mut names = HashSet::new();
    for (position, raw) in raw_fields.iter().enumerate() {
        let (field, text) = parse_field(raw, position)?;
        if !names.insert(field.name.clone()) {
            return Err(schema_error(Some(&field.name), "duplicate field name"));
        }
        if unknown_fields == UnknownFields::Keep && field.name.as_ref() == EXTRA_COLUMN {
            return Err(schema_error(
                Some(&field.name),
                "the name is reserved for unknown fields under unknown_fields = \"keep\"",
            ));
        }
        fields.push(field);
        field_texts.push(text);
    }

    let time_name = match optional_string(&top, "time_field", None)? {
        Some(name) => name,
        None => return Err(schema_error(None, "\"time_field\" is missing")),
    };
    let time_index = fields
        .iter()
        .position(|f| f.name.as_ref() == time_name)
        .ok_or_else(|| schema_error(Some(&time_name), "time_field names no field of the schema"))?;
    let time_field = &fields[time_index];
    if !matches!(time_field.kind, FieldKind::Timestamp { .. }) {
        return Err(schema_error(
            Some(&time_name),
            format!("time_field must be a timestamp, not {}", time_field.kind.type_name()),
        ));
    }
    if time_field.nullable {
        return Err(schema_error(Some(&time_name), "time_field must not be nullable"));
    }

    let canonical = format!(
        "{{\"fields\":[{}],\"time_field\":{},\"unknown_fields\":\"{}\",\"on_invalid\":\"{}\"}}",
        field_texts.join(","),
        json_string(&time_name),
        match unknown_fields {
            UnknownFields::Reject => "reject",
            UnknownFields::Drop => "drop",
            UnknownFields::Keep => "keep",
        },
        match on_invalid {
            OnInvalid::RejectLine => "reject_line",
            OnInvalid::RejectRequest => "reject_request",
            OnInvalid::DeadLetter => "dead_letter",
        },
    );
    let definitions = field_texts.into_iter().map(String::into_boxed_str).collect();
    Ok(StreamSchema::new(version, canonical, fields, definitions, time_index, unknown_fields, on_invalid))
}

/// Parses one field; returns it with its canonical JSON text.
fn parse_field(raw: &RawMap, position: usize) -> Result<(Field, String), SchemaError> {
    let name = match raw.get("name") {
        Some(value) => serde_json::from_str::<String>(value.get())
            .map_err(|_| schema_error(None, format!("fields[{position}].name must be a string")))?,
        None => return Err(schema_error(None, format!("fields[{position}] has no \"name\""))),
    };
    if !valid_field_name(&name) {
        return Err(schema_error(
            Some(&name),
            "invalid field name: it must match ^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        ));
    }
    let field = Some(name.as_str());
    let type_name =
        optional_string(raw, "type", field)?.ok_or_else(|| schema_error(field, "\"type\" is missing"))?;
    let allowed: &[&str] = match type_name.as_str() {
        "bool" | "date" | "uuid" | "json" => &[],
        "int32" | "int64" | "float64" => &["min", "max"],
        "string" => &["max_length", "pattern"],
        "enum" => &["values"],
        "timestamp" => &["epoch_unit"],
        "decimal" => &["precision", "scale", "min", "max"],
        other => return Err(schema_error(field, format!("unknown type \"{other}\""))),
    };
    for key in raw.keys() {
        let common = matches!(key.as_str(), "name" | "type" | "nullable");
        if !common && !allowed.contains(&key.as_str()) {
            return Err(schema_error(field, format!("unknown option \"{key}\" for type {type_name}")));
        }
    }
    let nullable = match raw.get("nullable") {
        None => false,
        Some(value) => serde_json::from_str::<bool>(value.get())
            .map_err(|_| schema_error(field, "\"nullable\" must be true or false"))?,
    };

    let mut options = String::new();
    let kind = match type_name.as_str() {
        "bool" => FieldKind::Bool,
        "date" => FieldKind::Date,
        "uuid" => FieldKind::Uuid,
        "json" => FieldKind::Json,
        "int32" => {
            let (min, max) = integer_bounds(raw, field, i32::MIN.into(), i32::MAX.into(), &mut options)?;
            FieldKind::Int32 { min, max }
        }
        "int64" => {
            let (min, max) = integer_bounds(raw, field, i64::MIN, i64::MAX, &mut options)?;
            FieldKind::Int64 { min, max }
        }
        "float64" => {
            let min = float_bound(raw, "min", field, &mut options)?;
            let max = float_bound(raw, "max", field, &mut options)?;
            if let (Some(low), Some(high)) = (min, max)
                && low > high
            {
                return Err(schema_error(field, "min is above max"));
            }
            FieldKind::Float64 { min, max }
        }
        "string" => string_kind(raw, field, &mut options)?,
        "enum" => enum_kind(raw, field, &mut options)?,
        "timestamp" => {
            let epoch_unit = match optional_string(raw, "epoch_unit", field)?.as_deref() {
                None => None,
                Some(unit) => {
                    options.push_str(&format!(",\"epoch_unit\":\"{unit}\""));
                    Some(match unit {
                        "s" => EpochUnit::Seconds,
                        "ms" => EpochUnit::Millis,
                        "us" => EpochUnit::Micros,
                        "ns" => EpochUnit::Nanos,
                        other => {
                            return Err(schema_error(
                                field,
                                format!("unknown epoch_unit \"{other}\": use s, ms, us or ns"),
                            ));
                        }
                    })
                }
            };
            FieldKind::Timestamp { epoch_unit }
        }
        "decimal" => decimal_kind(raw, field, &mut options)?,
        _ => unreachable!("types were matched above"),
    };
    let text = format!(
        "{{\"name\":{},\"type\":\"{type_name}\",\"nullable\":{nullable}{options}}}",
        json_string(&name)
    );
    Ok((Field { name: name.into_boxed_str(), kind, nullable }, text))
}

fn string_kind(raw: &RawMap, field: Option<&str>, options: &mut String) -> Result<FieldKind, SchemaError> {
    let max_length = match raw.get("max_length") {
        None => None,
        Some(value) => {
            let length = serde_json::from_str::<u32>(value.get())
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| schema_error(field, "max_length must be a positive integer"))?;
            options.push_str(&format!(",\"max_length\":{length}"));
            Some(length)
        }
    };
    let pattern = match optional_string(raw, "pattern", field)? {
        None => None,
        Some(text) => {
            let regex = regex::RegexBuilder::new(&text)
                .size_limit(PATTERN_SIZE_MAX)
                .build()
                .map_err(|e| schema_error(field, format!("pattern does not compile: {e}")))?;
            options.push_str(&format!(",\"pattern\":{}", json_string(&text)));
            Some(super::pattern::Pattern::new(regex))
        }
    };
    Ok(FieldKind::String { max_length, pattern })
}

fn enum_kind(raw: &RawMap, field: Option<&str>, options: &mut String) -> Result<FieldKind, SchemaError> {
    let values: Vec<String> = match raw.get("values") {
        None => return Err(schema_error(field, "an enum needs \"values\"")),
        Some(value) => serde_json::from_str(value.get())
            .map_err(|_| schema_error(field, "\"values\" must be an array of strings"))?,
    };
    if values.is_empty() {
        return Err(schema_error(field, "an enum needs at least one value"));
    }
    let mut seen = HashSet::new();
    for value in &values {
        if !seen.insert(value) {
            return Err(schema_error(field, format!("enum value \"{value}\" is listed twice")));
        }
    }
    let list: Vec<String> = values.iter().map(|v| json_string(v)).collect();
    options.push_str(&format!(",\"values\":[{}]", list.join(",")));
    Ok(FieldKind::Enum { values: values.into_iter().map(String::into_boxed_str).collect() })
}

fn decimal_kind(raw: &RawMap, field: Option<&str>, options: &mut String) -> Result<FieldKind, SchemaError> {
    let precision = match raw.get("precision") {
        None => return Err(schema_error(field, "a decimal needs \"precision\"")),
        Some(value) => serde_json::from_str::<u8>(value.get())
            .ok()
            .filter(|p| (1..=DECIMAL_PRECISION_MAX).contains(p))
            .ok_or_else(|| schema_error(field, "precision must be an integer from 1 to 38"))?,
    };
    let scale = match raw.get("scale") {
        None => 0,
        Some(value) => serde_json::from_str::<u8>(value.get())
            .map_err(|_| schema_error(field, "scale must be a non-negative integer"))?,
    };
    if scale > precision {
        return Err(schema_error(field, format!("scale {scale} is above precision {precision}")));
    }
    options.push_str(&format!(",\"precision\":{precision},\"scale\":{scale}"));
    let mut bound = |key: &str| -> Result<Option<DecimalBound>, SchemaError> {
        let Some(value) = raw.get(key) else { return Ok(None) };
        let text = value.get();
        // The comparison itself validates the text as a JSON number.
        super::values::compare_decimal_to_bound(0, scale, text.as_bytes())
            .map_err(|_| schema_error(field, format!("{key} must be a number")))?;
        options.push_str(&format!(",\"{key}\":{text}"));
        Ok(Some(DecimalBound { text: text.into() }))
    };
    let min = bound("min")?;
    let max = bound("max")?;
    Ok(FieldKind::Decimal { precision, scale, min, max })
}

fn integer_bounds(
    raw: &RawMap,
    field: Option<&str>,
    type_min: i64,
    type_max: i64,
    options: &mut String,
) -> Result<(i64, i64), SchemaError> {
    let mut bound = |key: &str, default: i64| -> Result<i64, SchemaError> {
        let Some(value) = raw.get(key) else { return Ok(default) };
        let number = serde_json::from_str::<i64>(value.get())
            .ok()
            .filter(|n| (type_min..=type_max).contains(n))
            .ok_or_else(|| {
                schema_error(field, format!("{key} must be an integer from {type_min} to {type_max}"))
            })?;
        options.push_str(&format!(",\"{key}\":{number}"));
        Ok(number)
    };
    let min = bound("min", type_min)?;
    let max = bound("max", type_max)?;
    if min > max {
        return Err(schema_error(field, "min is above max"));
    }
    Ok((min, max))
}

fn float_bound(
    raw: &RawMap,
    key: &str,
    field: Option<&str>,
    options: &mut String,
) -> Result<Option<f64>, SchemaError> {
    let Some(value) = raw.get(key) else { return Ok(None) };
    let number = serde_json::from_str::<f64>(value.get())
        .ok()
        .filter(|n| n.is_finite())
        .ok_or_else(|| schema_error(field, format!("{key} must be a number")))?;
    options.push_str(&format!(",\"{key}\":{}", value.get()));
    Ok(Some(number))
}

fn optional_string(raw: &RawMap, key: &str, field: Option<&str>) -> Result<Option<String>, SchemaError> {
    match raw.get(key) {
        None => Ok(None),
        Some(value) => serde_json::from_str::<String>(value.get())
            .map(Some)
            .map_err(|_| schema_error(field, format!("\"{key}\" must be a string"))),
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serialises")
}

/// `^[A-Za-z_][A-Za-z0-9_]{0,62}$`, checked by hand (no regex at start-up for this).
pub fn valid_field_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(first) if first.is_ascii_alphabetic() || *first == b'_' => {}
        _ => return false,
    }
    bytes.len() <= 63 && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// `^[a-z][a-z0-9_]{0,62}$`.
pub fn valid_stream_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(first) if first.is_ascii_lowercase() => {}
        _ => return false,
    }
    bytes.len() <= 63 && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// What a new schema document means for an existing stream.
#[derive(Debug, PartialEq, Eq)]
pub enum SchemaChange {
    Identical,
    /// Only nullable fields were added: the stream moves to the next version.
    NullableAdditions(Vec<String>),
    Conflict(String),
}

pub fn compare(current: &StreamSchema, proposed: &StreamSchema) -> SchemaChange {
    if current.canonical == proposed.canonical {
        return SchemaChange::Identical;
    }
    if current.time_field().name != proposed.time_field().name {
        return SchemaChange::Conflict(format!(
            "time_field changed from \"{}\" to \"{}\"",
            current.time_field().name,
            proposed.time_field().name
        ));
    }
    if current.unknown_fields != proposed.unknown_fields {
        return SchemaChange::Conflict("unknown_fields changed".into());
    }
    if current.on_invalid != proposed.on_invalid {
        return SchemaChange::Conflict("on_invalid changed".into());
    }
    for (index, field) in current.fields.iter().enumerate() {
        let Some(new_index) = proposed.fields.iter().position(|f| f.name == field.name) else {
            return SchemaChange::Conflict(format!("field \"{}\" was removed", field.name));
        };
        if current.definition(index) != proposed.definition(new_index) {
            let new_field = &proposed.fields[new_index];
            let reason = if field.kind.type_name() != new_field.kind.type_name() {
                format!(
                    "field \"{}\" changed type from {} to {}",
                    field.name,
                    field.kind.type_name(),
                    new_field.kind.type_name()
                )
            } else {
                format!(
                    "field \"{}\" changed from {} to {}",
                    field.name,
                    current.definition(index),
                    proposed.definition(new_index)
                )
            };
            return SchemaChange::Conflict(reason);
        }
    }
    let mut added = Vec::new();
    for field in &proposed.fields {
        if current.fields.iter().any(|f| f.name == field.name) {
            continue;
        }
        if !field.nullable {
            return SchemaChange::Conflict(format!(
                "new field \"{}\" is not nullable: only nullable fields can be added",
                field.name
            ));
        }
        added.push(field.name.to_string());
    }
    if added.is_empty() {
        // Same fields, same definitions, different canonical text: only the order changed,
        // and the order decides the column order of every file.
        return SchemaChange::Conflict("the fields were reordered".into());
    }
    SchemaChange::NullableAdditions(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StreamSchema, SchemaError> {
        parse_schema(text.as_bytes(), 1)
    }

    const BASE: &str = r#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"n","type":"int32","min":0}],"time_field":"ts"}"#;

    #[test]
    fn key_order_does_not_change_identity() {
        let a = parse(BASE).unwrap();
        let b = parse(r#"{"time_field":"ts","fields":[{"type":"timestamp","name":"ts"},{"min":0,"name":"n","type":"int32","nullable":false}]}"#).unwrap();
        assert_eq!(compare(&a, &b), SchemaChange::Identical);
    }

    #[test]
    fn nullable_addition_is_allowed_and_other_changes_conflict() {
        let a = parse(BASE).unwrap();
        let added = parse(r#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"n","type":"int32","min":0},{"name":"m","type":"string","nullable":true}],"time_field":"ts"}"#).unwrap();
        assert_eq!(compare(&a, &added), SchemaChange::NullableAdditions(vec!["m".into()]));
        let required = parse(r#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"n","type":"int32","min":0},{"name":"m","type":"string"}],"time_field":"ts"}"#).unwrap();
        assert!(matches!(compare(&a, &required), SchemaChange::Conflict(_)));
        let retyped = parse(r#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"n","type":"int64","min":0}],"time_field":"ts"}"#).unwrap();
        assert!(matches!(compare(&a, &retyped), SchemaChange::Conflict(r) if r.contains("int32 to int64")));
        let reordered = parse(r#"{"fields":[{"name":"n","type":"int32","min":0},{"name":"ts","type":"timestamp"}],"time_field":"ts"}"#).unwrap();
        assert!(matches!(compare(&a, &reordered), SchemaChange::Conflict(r) if r.contains("reordered")));
        let removed = parse(r#"{"fields":[{"name":"ts","type":"timestamp"}],"time_field":"ts"}"#).unwrap();
        assert!(matches!(compare(&a, &removed), SchemaChange::Conflict(r) if r.contains("removed")));
    }

    #[test]
    fn bad_schemas_name_the_field_and_the_problem() {
        let cases = [
            (
                r#"{"fields":[{"name":"1x","type":"timestamp"}],"time_field":"1x"}"#,
                Some("1x"),
                "invalid field name",
            ),
            (
                r#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"ts","type":"int32"}],"time_field":"ts"}"#,
                Some("ts"),
                "duplicate",
            ),
            (
                r#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"a","type":"int"}],"time_field":"ts"}"#,
                Some("a"),
                "unknown type",
            ),
            (
                r#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"a","type":"int32","max_length":3}],"time_field":"ts"}"#,
                Some("a"),
                "unknown option",
            ),
            (
                r#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"a","type":"enum","values":[]}],"time_field":"ts"}"#,
                Some("a"),
                "at least one value",
            ),
            (
                r#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"a","type":"decimal","precision":4,"scale":5}],"time_field":"ts"}"#,
                Some("a"),
                "scale 5 is above precision 4",
            ),
            (
                r#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"a","type":"decimal","precision":39}],"time_field":"ts"}"#,
                Some("a"),
                "precision",
            ),
            (
                r#"{"fields":[{"name":"ts","type":"timestamp","epoch_unit":"h"}],"time_field":"ts"}"#,
                Some("ts"),
                "epoch_unit",
            ),
            (
                r#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"a","type":"string","pattern":"("}],"time_field":"ts"}"#,
                Some("a"),
                "pattern does not compile",
            ),
            (r#"{"fields":[{"name":"ts","type":"timestamp"}]}"#, None, "time_field\" is missing"),
            (
                r#"{"fields":[{"name":"ts","type":"timestamp","nullable":true}],"time_field":"ts"}"#,
                Some("ts"),
                "must not be nullable",
            ),
            (
                r#"{"fields":[{"name":"ts","type":"date"}],"time_field":"ts"}"#,
                Some("ts"),
                "must be a timestamp",
            ),
            (
                r#"{"fields":[{"name":"ts","type":"timestamp"}],"time_field":"ts","extra":1}"#,
                None,
                "unknown option",
            ),
        ];
        for (text, field, problem) in cases {
            let error = parse(text).expect_err(text);
            assert_eq!(error.field.as_deref(), field, "{text}");
            assert!(error.problem.contains(problem), "{text}: {}", error.problem);
        }
    }
}
