//! Arrow column builders for one request's accepted events. The decoder checks a whole event
//! first and only then appends it, so every column always has the same number of rows.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Decimal128Builder, FixedSizeBinaryBuilder, Float64Builder, Int32Builder,
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};

use super::types::{FieldKind, StreamSchema, UnknownFields};

/// A checked value of one field of one event, ready to append.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a str),
    Decimal(i128),
    Micros(i64),
    Days(i32),
    Uuid([u8; 16]),
}

enum Column {
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Text(StringBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    Decimal(Decimal128Builder),
    Uuid(FixedSizeBinaryBuilder),
}

pub struct ColumnBuilders {
    schema: Arc<StreamSchema>,
    columns: Vec<Column>,
    extra: Option<StringBuilder>,
    rows: usize,
}

impl ColumnBuilders {
    pub fn new(schema: Arc<StreamSchema>, capacity: usize) -> ColumnBuilders {
        let columns = schema.fields.iter().map(|f| Column::new(&f.kind, capacity)).collect();
        let extra =
            (schema.unknown_fields == UnknownFields::Keep).then(|| StringBuilder::with_capacity(capacity, 0));
        ColumnBuilders { schema, columns, extra, rows: 0 }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends the value of field `index` for the current event. Every field gets exactly one
    /// value per event, then `end_event` closes the row.
    #[inline]
    pub fn append(&mut self, index: usize, value: Value<'_>) {
        self.columns[index].append(value);
    }

    /// Closes the current event; `extra` is the JSON object of its unknown fields under
    /// `unknown_fields = "keep"` (None when it had none).
    pub fn end_event(&mut self, extra: Option<&str>) {
        if let Some(builder) = &mut self.extra {
            builder.append_option(extra);
        }
        self.rows += 1;
    }

    pub fn finish(mut self) -> RecordBatch {
        let mut arrays: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        if let Some(builder) = &mut self.extra {
            arrays.push(Arc::new(builder.finish()));
        }
        RecordBatch::try_new(self.schema.arrow.clone(), arrays)
            .expect("builders are made from the same schema as the Arrow schema")
    }
}

impl Column {
    fn new(kind: &FieldKind, capacity: usize) -> Column {
        match kind {
            FieldKind::Bool => Column::Bool(BooleanBuilder::with_capacity(capacity)),
            FieldKind::Int32 { .. } => Column::Int32(Int32Builder::with_capacity(capacity)),
            FieldKind::Int64 { .. } => Column::Int64(Int64Builder::with_capacity(capacity)),
            FieldKind::Float64 { .. } => Column::Float64(Float64Builder::with_capacity(capacity)),
            FieldKind::String { .. } | FieldKind::Enum { .. } | FieldKind::Json => {
                Column::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            FieldKind::Timestamp { .. } => {
                Column::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"))
            }
            FieldKind::Date => Column::Date(Date32Builder::with_capacity(capacity)),
            FieldKind::Decimal { .. } => {
                Column::Decimal(Decimal128Builder::with_capacity(capacity).with_data_type(kind.arrow_type()))
            }
            FieldKind::Uuid => Column::Uuid(FixedSizeBinaryBuilder::with_capacity(capacity, 16)),
        }
    }

    fn append(&mut self, value: Value<'_>) {
        match (self, value) {
            (Column::Bool(b), Value::Null) => b.append_null(),
            (Column::Int32(b), Value::Null) => b.append_null(),
            (Column::Int64(b), Value::Null) => b.append_null(),
            (Column::Float64(b), Value::Null) => b.append_null(),
            (Column::Text(b), Value::Null) => b.append_null(),
            (Column::Timestamp(b), Value::Null) => b.append_null(),
            (Column::Date(b), Value::Null) => b.append_null(),
            (Column::Decimal(b), Value::Null) => b.append_null(),
            (Column::Uuid(b), Value::Null) => b.append_null(),
            (Column::Bool(b), Value::Bool(v)) => b.append_value(v),
            (Column::Int32(b), Value::Int(v)) => {
                b.append_value(i32::try_from(v).expect("the decoder checked the int32 range"))
            }
            (Column::Int64(b), Value::Int(v)) => b.append_value(v),
            (Column::Float64(b), Value::Float(v)) => b.append_value(v),
            (Column::Text(b), Value::Text(v)) => b.append_value(v),
            (Column::Timestamp(b), Value::Micros(v)) => b.append_value(v),
            (Column::Date(b), Value::Days(v)) => b.append_value(v),
            (Column::Decimal(b), Value::Decimal(v)) => b.append_value(v),
            (Column::Uuid(b), Value::Uuid(v)) => b.append_value(v).expect("a uuid is always 16 bytes"),
            (_, value) => unreachable!("decoder produced {value:?} for another column type"),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Int32(b) => Arc::new(b.finish()),
            Column::Int64(b) => Arc::new(b.finish()),
            Column::Float64(b) => Arc::new(b.finish()),
            Column::Text(b) => Arc::new(b.finish()),
            Column::Timestamp(b) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Decimal(b) => Arc::new(b.finish()),
            Column::Uuid(b) => Arc::new(b.finish()),
        }
    }
}
