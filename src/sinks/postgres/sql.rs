//! The SQL text the sink sends. Only identifiers that passed validation (stream and field
//! names, the configured schema) and the schema's own enum values appear in it, always quoted;
//! event data travels in the binary COPY stream and in query parameters, never in SQL text.

use std::fmt::Write;

use super::copy::sql_type;
use super::partition::{self, Period};
use crate::config::PartitionBy;
use crate::schema::types::{EXTRA_COLUMN, Field, FieldKind, StreamSchema, UnknownFields};

/// The ledger: one row per committed COPY, so a replayed batch is recognised.
pub const LEDGER_TABLE: &str = "_floodway_ledger";

/// `"name"`, with any `"` doubled (validated names hold none, but quoting stays correct).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with any `'` doubled; `standard_conforming_strings` (on since PostgreSQL 9.1)
/// keeps backslashes literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

pub fn table(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

pub fn create_schema(schema: &str) -> String {
    format!("CREATE SCHEMA IF NOT EXISTS {}", ident(schema))
}

pub fn create_ledger(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\
         node_id text NOT NULL, stream text NOT NULL, first_lsn bigint NOT NULL, \
         last_lsn bigint NOT NULL, rows bigint NOT NULL, \
         committed_at timestamptz NOT NULL DEFAULT now(), \
         PRIMARY KEY (node_id, stream, first_lsn))",
        table(schema, LEDGER_TABLE)
    )
}

pub fn insert_ledger(schema: &str) -> String {
    format!(
        "INSERT INTO {} (node_id, stream, first_lsn, last_lsn, rows) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING",
        table(schema, LEDGER_TABLE)
    )
}

pub fn select_ledger(schema: &str) -> String {
    format!(
        "SELECT stream, first_lsn, last_lsn, rows FROM {} WHERE node_id = $1 AND last_lsn > $2",
        table(schema, LEDGER_TABLE)
    )
}

pub fn any_ledger_row(schema: &str) -> String {
    format!("SELECT EXISTS (SELECT 1 FROM {} WHERE node_id = $1)", table(schema, LEDGER_TABLE))
}

pub fn prune_ledger(schema: &str) -> String {
    format!("DELETE FROM {} WHERE node_id = $1 AND last_lsn <= $2", table(schema, LEDGER_TABLE))
}

/// A column definition: name, type, `NOT NULL` unless nullable, and for an enum the CHECK
/// that holds it to its values.
fn column(field: &Field) -> String {
    let name = ident(&field.name);
    let mut out = format!("{name} {}", sql_type(&field.kind));
    if !field.nullable {
        out.push_str(" NOT NULL");
    }
    if let FieldKind::Enum { values } = &field.kind {
        let values: Vec<String> = values.iter().map(|v| literal(v)).collect();
        let _ = write!(out, " CHECK ({name} IN ({}))", values.join(", "));
    }
    out
}

/// The columns of a stream's table, with their PostgreSQL types: the fields, then `_extra`.
pub fn columns(schema: &StreamSchema) -> Vec<(String, String)> {
    let mut columns: Vec<(String, String)> =
        schema.fields.iter().map(|f| (f.name.to_string(), sql_type(&f.kind))).collect();
    if schema.unknown_fields == UnknownFields::Keep {
        columns.push((EXTRA_COLUMN.to_owned(), "jsonb".to_owned()));
    }
    columns
}

/// The definition of column `name` of `schema` (a field, or `_extra`).
pub fn column_definition(schema: &StreamSchema, name: &str) -> String {
    match schema.fields.iter().find(|f| &*f.name == name) {
        Some(field) => column(field),
        None => format!("{} jsonb", ident(name)),
    }
}

/// The table comment records the partitioning, so a later change of `partition` in the
/// config leaves existing tables as they are.
pub fn comment(stream: &str, by: PartitionBy) -> String {
    format!("floodway stream {stream}, partitioned by {}", by.name())
}

/// The partitioning that a table comment made by `comment` records.
pub fn partition_by_from_comment(comment: &str) -> Option<PartitionBy> {
    match comment.rsplit("partitioned by ").next()? {
        "hour" => Some(PartitionBy::Hour),
        "day" => Some(PartitionBy::Day),
        "month" => Some(PartitionBy::Month),
        _ => None,
    }
}

/// The statements that create a stream's table: the partitioned table, its comment and its
/// default partition (the last resort for rows whose period has no partition).
pub fn create_table(pg_schema: &str, stream: &str, schema: &StreamSchema, by: PartitionBy) -> Vec<String> {
    let mut definitions: Vec<String> = schema.fields.iter().map(column).collect();
    if schema.unknown_fields == UnknownFields::Keep {
        definitions.push(format!("{} jsonb", ident(EXTRA_COLUMN)));
    }
    let time = ident(&schema.fields[schema.time_index].name);
    let parent = table(pg_schema, stream);
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {parent} ({}) PARTITION BY RANGE ({time})",
            definitions.join(", ")
        ),
        format!("COMMENT ON TABLE {parent} IS {}", literal(&comment(stream, by))),
        format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF {parent} DEFAULT",
            table(pg_schema, &partition::default_partition_name(stream))
        ),
    ]
}

pub fn add_column(pg_schema: &str, stream: &str, definition: &str) -> String {
    format!("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {definition}", table(pg_schema, stream))
}

/// Bounds are written as `to_timestamp(seconds)`: partition bounds may be any expression
/// without variables, and this one needs no date formatting (year 0 included).
pub fn create_partition(pg_schema: &str, stream: &str, by: PartitionBy, period: Period) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM (to_timestamp({})) TO (to_timestamp({}))",
        table(pg_schema, &partition::partition_name(stream, by, period)),
        table(pg_schema, stream),
        period.start / 1_000_000,
        period.end / 1_000_000,
    )
}

/// `COPY "schema"."stream" ("a", "b", ...) FROM STDIN (FORMAT binary)`.
pub fn copy_in(pg_schema: &str, stream: &str, schema: &StreamSchema) -> String {
    let names: Vec<String> = columns(schema).iter().map(|(name, _)| ident(name)).collect();
    format!("COPY {} ({}) FROM STDIN (FORMAT binary)", table(pg_schema, stream), names.join(", "))
}

/// Existence and comment of a table: `$1` schema, `$2` name.
pub const FIND_TABLE: &str = "SELECT c.oid, obj_description(c.oid, 'pg_class') FROM pg_class c \
     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2";

/// Columns of a table and their types as `format_type` spells them: `$1` the table's oid.
pub const TABLE_COLUMNS: &str = "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
     WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped";

/// Partitions of a table with their bounds: `$1` the table's oid.
pub const TABLE_PARTITIONS: &str = "SELECT c.relname::text FROM pg_inherits i \
     JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1";

pub const SCHEMA_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("Select"), "\"Select\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(table("public", "events"), "\"public\".\"events\"");
    }

    #[test]
    fn comment_round_trips_the_partitioning() {
        for by in [PartitionBy::Hour, PartitionBy::Day, PartitionBy::Month] {
            assert_eq!(partition_by_from_comment(&comment("s", by)), Some(by));
        }
        assert_eq!(partition_by_from_comment("made by hand"), None);
    }
}
