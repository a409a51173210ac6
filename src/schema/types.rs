//! The compiled form of a stream's schema: what the decoder checks each event against and
//! what the Arrow/Parquet columns look like. Built only by `schema::parse`, so every value of
//! these types has passed the SPEC §3 rules (valid names, precision ≤ 38, compiled pattern, ...).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field as ArrowField, Schema as ArrowSchema, SchemaRef, TimeUnit};

pub use super::values::EpochUnit;

/// Name of the column that holds unknown fields under `unknown_fields = "keep"`.
pub const EXTRA_COLUMN: &str = "_extra";
/// Largest decimal precision: what fits an i128 (Arrow Decimal128, Parquet DECIMAL).
pub const DECIMAL_PRECISION_MAX: u8 = 38;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownFields {
    Reject,
    Drop,
    Keep,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnInvalid {
    RejectLine,
    RejectRequest,
    DeadLetter,
}

/// A bound given in the schema, kept as the JSON number text so decimals compare exactly.
#[derive(Clone, Debug)]
pub struct DecimalBound {
    pub text: Box<str>,
}

#[derive(Clone, Debug)]
pub enum FieldKind {
    Bool,
    Int32 { min: i64, max: i64 },
    Int64 { min: i64, max: i64 },
    Float64 { min: Option<f64>, max: Option<f64> },
    String { max_length: Option<u32>, pattern: Option<super::pattern::Pattern> },
    Enum { values: Vec<Box<str>> },
    Timestamp { epoch_unit: Option<EpochUnit> },
    Date,
    Decimal { precision: u8, scale: u8, min: Option<DecimalBound>, max: Option<DecimalBound> },
    Uuid,
    Json,
}

impl FieldKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            FieldKind::Bool => "bool",
            FieldKind::Int32 { .. } => "int32",
            FieldKind::Int64 { .. } => "int64",
            FieldKind::Float64 { .. } => "float64",
            FieldKind::String { .. } => "string",
            FieldKind::Enum { .. } => "enum",
            FieldKind::Timestamp { .. } => "timestamp",
            FieldKind::Date => "date",
            FieldKind::Decimal { .. } => "decimal",
            FieldKind::Uuid => "uuid",
            FieldKind::Json => "json",
        }
    }

    /// The Arrow type of the column; the Parquet logical type follows from it (SPEC §3 table).
    pub fn arrow_type(&self) -> DataType {
        match self {
            FieldKind::Bool => DataType::Boolean,
            FieldKind::Int32 { .. } => DataType::Int32,
            FieldKind::Int64 { .. } => DataType::Int64,
            FieldKind::Float64 { .. } => DataType::Float64,
            FieldKind::String { .. } | FieldKind::Enum { .. } | FieldKind::Json => DataType::Utf8,
            FieldKind::Timestamp { .. } => DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
            FieldKind::Date => DataType::Date32,
            FieldKind::Decimal { precision, scale, .. } => {
                DataType::Decimal128(*precision, i8::try_from(*scale).unwrap_or(i8::MAX))
            }
            FieldKind::Uuid => DataType::FixedSizeBinary(16),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Field {
    pub name: Box<str>,
    pub kind: FieldKind,
    pub nullable: bool,
}

/// One version of a stream's schema, compiled.
#[derive(Debug)]
pub struct StreamSchema {
    pub version: u32,
    /// The canonical JSON text of the schema (stable key order, defaults filled in).
    pub canonical: String,
    pub fields: Vec<Field>,
    pub time_index: usize,
    pub unknown_fields: UnknownFields,
    pub on_invalid: OnInvalid,
    pub arrow: SchemaRef,
    /// Canonical JSON of each field, to compare versions field by field.
    definitions: Vec<Box<str>>,
    by_name: HashMap<Box<[u8]>, usize>,
}

impl StreamSchema {
    pub fn new(
        version: u32,
        canonical: String,
        fields: Vec<Field>,
        definitions: Vec<Box<str>>,
        time_index: usize,
        unknown_fields: UnknownFields,
        on_invalid: OnInvalid,
    ) -> StreamSchema {
        assert!(time_index < fields.len());
        assert_eq!(definitions.len(), fields.len());
        let by_name = fields.iter().enumerate().map(|(i, f)| (Box::from(f.name.as_bytes()), i)).collect();
        let mut columns: Vec<ArrowField> = fields
            .iter()
            .map(|f| {
                let column = ArrowField::new(f.name.as_ref(), f.kind.arrow_type(), f.nullable);
                match f.kind {
                    FieldKind::Uuid => column.with_extension_type(arrow_schema::extension::Uuid),
                    _ => column,
                }
            })
            .collect();
        if unknown_fields == UnknownFields::Keep {
            columns.push(ArrowField::new(EXTRA_COLUMN, DataType::Utf8, true));
        }
        StreamSchema {
            version,
            canonical,
            fields,
            time_index,
            unknown_fields,
            on_invalid,
            arrow: Arc::new(ArrowSchema::new(columns)),
            definitions,
            by_name,
        }
    }

    /// Index of the field named `name`.
    pub fn field_index(&self, name: &[u8]) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn definition(&self, index: usize) -> &str {
        &self.definitions[index]
    }

    pub fn time_field(&self) -> &Field {
        &self.fields[self.time_index]
    }
}
