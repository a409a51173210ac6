//! Column storage for one request's accepted events. The decoder appends each value as soon as
//! it is checked; an event found invalid later is cut off again with `discard_event`, so every
//! column always has the same number of rows. Plain vectors rather than Arrow's builders,
//! because those cannot drop what was appended; `finish` hands the vectors to Arrow without
//! copying.

use std::sync::Arc;

use arrow_array::types::{
    ArrowPrimitiveType, Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type,
    TimestampMicrosecondType,
};
use arrow_array::{ArrayRef, BooleanArray, FixedSizeBinaryArray, PrimitiveArray, RecordBatch, StringArray};
use arrow_buffer::{
    ArrowNativeType, BooleanBufferBuilder, Buffer, NullBufferBuilder, OffsetBuffer, ScalarBuffer,
};
use arrow_schema::DataType;

use super::types::{FieldKind, StreamSchema, UnknownFields};

pub struct ColumnBuilders {
    schema: Arc<StreamSchema>,
    columns: Vec<Column>,
    /// `_extra`, under `unknown_fields = "keep"`.
    extra: Option<Text>,
    rows: usize,
}

/// One column; the variant follows the field's kind.
pub enum Column {
    Bool(Bools),
    Int32(Fixed<i32>),
    Int64(Fixed<i64>),
    Float64(Fixed<f64>),
    /// string, enum and json fields.
    Text(Text),
    /// Microseconds since the epoch, UTC.
    Timestamp(Fixed<i64>),
    /// Days since 1970-01-01.
    Date(Fixed<i32>),
    Decimal(Fixed<i128>),
    Uuid(Fixed<[u8; 16]>),
}

impl ColumnBuilders {
    pub fn new(schema: Arc<StreamSchema>, capacity: usize) -> ColumnBuilders {
        let columns = schema.fields.iter().map(|f| Column::new(&f.kind, capacity)).collect();
        let extra = (schema.unknown_fields == UnknownFields::Keep).then(|| Text::new(capacity, 0));
        ColumnBuilders { schema, columns, extra, rows: 0 }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The column of field `index`, to append the current event's value to.
    #[inline]
    pub fn column(&mut self, index: usize) -> &mut Column {
        &mut self.columns[index]
    }

    /// Closes the current event, whose every field got exactly one value; `extra` holds its
    /// unknown fields under `unknown_fields = "keep"` as `,"k":v,"k2":v2` (empty when none).
    pub fn end_event(&mut self, extra: &str) {
        if let Some(column) = &mut self.extra {
            match extra.strip_prefix(',') {
                Some(members) => column.push_parts(&["{", members, "}"]),
                None => column.push_null(),
            }
        }
        self.rows += 1;
    }

    /// Drops whatever the current (invalid) event appended.
    pub fn discard_event(&mut self) {
        for column in &mut self.columns {
            column.truncate(self.rows);
        }
    }

    pub fn finish(self) -> RecordBatch {
        let arrow = self.schema.arrow.clone();
        let mut arrays: Vec<ArrayRef> = self
            .columns
            .into_iter()
            .zip(arrow.fields())
            .map(|(column, field)| column.finish(field.data_type().clone()))
            .collect();
        if let Some(column) = self.extra {
            arrays.push(Arc::new(column.finish()));
        }
        RecordBatch::try_new(arrow, arrays)
            .expect("columns are made from the same schema as the Arrow schema")
    }
}

impl Column {
    fn new(kind: &FieldKind, capacity: usize) -> Column {
        match kind {
            FieldKind::Bool => Column::Bool(Bools::new(capacity)),
            FieldKind::Int32 { .. } => Column::Int32(Fixed::new(capacity)),
            FieldKind::Int64 { .. } => Column::Int64(Fixed::new(capacity)),
            FieldKind::Float64 { .. } => Column::Float64(Fixed::new(capacity)),
            FieldKind::String { .. } | FieldKind::Enum { .. } | FieldKind::Json => {
                Column::Text(Text::new(capacity, capacity * 16))
            }
            FieldKind::Timestamp { .. } => Column::Timestamp(Fixed::new(capacity)),
            FieldKind::Date => Column::Date(Fixed::new(capacity)),
            FieldKind::Decimal { .. } => Column::Decimal(Fixed::new(capacity)),
            FieldKind::Uuid => Column::Uuid(Fixed::new(capacity)),
        }
    }

    pub fn push_null(&mut self) {
        match self {
            Column::Bool(c) => c.push_null(),
            Column::Int32(c) | Column::Date(c) => c.push_null(),
            Column::Int64(c) | Column::Timestamp(c) => c.push_null(),
            Column::Float64(c) => c.push_null(),
            Column::Text(c) => c.push_null(),
            Column::Decimal(c) => c.push_null(),
            Column::Uuid(c) => c.push_null(),
        }
    }

    fn truncate(&mut self, rows: usize) {
        match self {
            Column::Bool(c) => c.truncate(rows),
            Column::Int32(c) | Column::Date(c) => c.truncate(rows),
            Column::Int64(c) | Column::Timestamp(c) => c.truncate(rows),
            Column::Float64(c) => c.truncate(rows),
            Column::Text(c) => c.truncate(rows),
            Column::Decimal(c) => c.truncate(rows),
            Column::Uuid(c) => c.truncate(rows),
        }
    }

    fn finish(self, data_type: DataType) -> ArrayRef {
        match self {
            Column::Bool(c) => Arc::new(c.finish()),
            Column::Int32(c) => Arc::new(c.finish::<Int32Type>()),
            Column::Int64(c) => Arc::new(c.finish::<Int64Type>()),
            Column::Float64(c) => Arc::new(c.finish::<Float64Type>()),
            Column::Text(c) => Arc::new(c.finish()),
            Column::Timestamp(c) => {
                Arc::new(c.finish::<TimestampMicrosecondType>().with_data_type(data_type))
            }
            Column::Date(c) => Arc::new(c.finish::<Date32Type>()),
            Column::Decimal(c) => Arc::new(c.finish::<Decimal128Type>().with_data_type(data_type)),
            Column::Uuid(mut c) => {
                let values = Buffer::from_vec(c.values.into_flattened());
                Arc::new(FixedSizeBinaryArray::new(16, values, c.nulls.finish()))
            }
        }
    }
}

/// Fixed-width values; a null takes a default value.
pub struct Fixed<T> {
    values: Vec<T>,
    nulls: NullBufferBuilder,
}

impl<T: Copy + Default> Fixed<T> {
    fn new(capacity: usize) -> Fixed<T> {
        Fixed { values: Vec::with_capacity(capacity), nulls: NullBufferBuilder::new(capacity) }
    }

    #[inline]
    pub fn push(&mut self, value: T) {
        self.values.push(value);
        self.nulls.append_non_null();
    }

    fn push_null(&mut self) {
        self.values.push(T::default());
        self.nulls.append_null();
    }

    fn truncate(&mut self, rows: usize) {
        self.values.truncate(rows);
        self.nulls.truncate(rows);
    }
}

impl<T: ArrowNativeType> Fixed<T> {
    fn finish<A: ArrowPrimitiveType<Native = T>>(mut self) -> PrimitiveArray<A> {
        PrimitiveArray::new(ScalarBuffer::from(self.values), self.nulls.finish())
    }
}

pub struct Bools {
    values: BooleanBufferBuilder,
    nulls: NullBufferBuilder,
}

impl Bools {
    fn new(capacity: usize) -> Bools {
        Bools { values: BooleanBufferBuilder::new(capacity), nulls: NullBufferBuilder::new(capacity) }
    }

    pub fn push(&mut self, value: bool) {
        self.values.append(value);
        self.nulls.append_non_null();
    }

    fn push_null(&mut self) {
        self.values.append(false);
        self.nulls.append_null();
    }

    fn truncate(&mut self, rows: usize) {
        self.values.truncate(rows);
        self.nulls.truncate(rows);
    }

    fn finish(mut self) -> BooleanArray {
        BooleanArray::new(self.values.finish(), self.nulls.finish())
    }
}

/// UTF-8 strings, end to end in `data`; row `i` is `data[offsets[i]..offsets[i + 1]]`.
pub struct Text {
    offsets: Vec<i32>,
    data: Vec<u8>,
    nulls: NullBufferBuilder,
}

impl Text {
    fn new(capacity: usize, bytes: usize) -> Text {
        let mut offsets = Vec::with_capacity(capacity + 1);
        offsets.push(0);
        Text { offsets, data: Vec::with_capacity(bytes), nulls: NullBufferBuilder::new(capacity) }
    }

    #[inline]
    pub fn push(&mut self, value: &str) {
        self.data.extend_from_slice(value.as_bytes());
        self.end_value();
    }

    /// Appends one value made of `parts` written one after the other.
    pub fn push_parts(&mut self, parts: &[&str]) {
        for part in parts {
            self.data.extend_from_slice(part.as_bytes());
        }
        self.end_value();
    }

    #[inline]
    fn end_value(&mut self) {
        self.offsets.push(i32::try_from(self.data.len()).expect("a request holds less than 2 GiB of text"));
        self.nulls.append_non_null();
    }

    fn push_null(&mut self) {
        self.offsets.push(i32::try_from(self.data.len()).expect("a request holds less than 2 GiB of text"));
        self.nulls.append_null();
    }

    fn truncate(&mut self, rows: usize) {
        self.offsets.truncate(rows + 1);
        let end = self.offsets.last().map_or(0, |&end| end as usize);
        self.data.truncate(end);
        self.nulls.truncate(rows);
    }

    /// Arrow checks the text is UTF-8 once more here: only `&str` values were appended.
    fn finish(mut self) -> StringArray {
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        StringArray::new(offsets, Buffer::from_vec(self.data), self.nulls.finish())
    }
}
