//! One Parquet file being written: opened under a hidden in-progress name, committed by fsync
//! and an atomic rename, so readers never see a partial file.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::layout;
use crate::config::ParquetCompression;
use crate::durable;
use crate::schema::types::{FieldKind, StreamSchema};

/// Rows per row group, and its encoded size: together they bound the memory an open file
/// holds before it reaches the disk.
const ROW_GROUP_ROWS_MAX: usize = 128 * 1024;
pub const ROW_GROUP_BYTES_MAX: usize = 8 << 20;
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// A durable file still under its in-progress name.
pub struct Finished {
    pub in_progress: PathBuf,
    pub committed: PathBuf,
    pub rows: u64,
}

pub struct OpenFile {
    writer: ArrowWriter<BufWriter<File>>,
    in_progress: PathBuf,
    committed: PathBuf,
    pub rows: u64,
    pub opened_at: Instant,
    pub schema_version: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("encode {path}: {source}")]
    Parquet { path: PathBuf, source: parquet::errors::ParquetError },
}

impl OpenFile {
    /// Opens `{dir}/{name}` in progress.
    pub fn create(
        dir: PathBuf,
        name: &str,
        stream: &str,
        schema: &StreamSchema,
        compression: ParquetCompression,
    ) -> Result<OpenFile, WriteError> {
        let io = |action, path: &PathBuf| {
            let path = path.clone();
            move |source| WriteError::Io { action, path, source }
        };
        durable::create_dir_all(&dir).map_err(io("create folder", &dir))?;
        let in_progress = dir.join(layout::in_progress_name(name));
        let committed = dir.join(name);
        let file = File::create(&in_progress).map_err(io("create", &in_progress))?;
        let properties = properties(stream, schema, compression);
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            schema.arrow.clone(),
            Some(properties),
        )
        .map_err(|source| WriteError::Parquet { path: in_progress.clone(), source })?;
        Ok(OpenFile {
            writer,
            in_progress,
            committed,
            rows: 0,
            opened_at: Instant::now(),
            schema_version: schema.version,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        self.writer
            .write(batch)
            .map_err(|source| WriteError::Parquet { path: self.in_progress.clone(), source })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Finishes the file and makes it durable under its in-progress name; the caller renames
    /// it once the commit is recorded (see `state`).
    pub fn finish(self) -> Result<Finished, WriteError> {
        let path = self.in_progress;
        let buffered =
            self.writer.into_inner().map_err(|source| WriteError::Parquet { path: path.clone(), source })?;
        let file = buffered.into_inner().map_err(|e| WriteError::Io {
            action: "flush",
            path: path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(|source| WriteError::Io { action: "fsync", path: path.clone(), source })?;
        Ok(Finished { in_progress: path, committed: self.committed, rows: self.rows })
    }

    /// Drops an unfinished file (after a write error).
    pub fn abandon(self) {
        drop(self.writer);
        let _ = std::fs::remove_file(&self.in_progress);
    }
}

fn properties(stream: &str, schema: &StreamSchema, compression: ParquetCompression) -> WriterProperties {
    let compression = match compression {
        ParquetCompression::Zstd { level } => {
            Compression::ZSTD(ZstdLevel::try_new(level).expect("config checks the zstd level"))
        }
        ParquetCompression::None => Compression::UNCOMPRESSED,
    };
    let metadata = vec![
        KeyValue::new("floodway.stream".to_owned(), stream.to_owned()),
        KeyValue::new("floodway.schema_version".to_owned(), schema.version.to_string()),
    ];
    // Dictionaries pay off for enums and free-form strings (service, host, level); for ids,
    // numbers and times they are tried and abandoned, which costs CPU for nothing.
    let mut builder = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS_MAX))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES_MAX))
        .set_key_value_metadata(Some(metadata))
        .set_dictionary_enabled(false);
    for field in &schema.fields {
        let dictionary = matches!(
            field.kind,
            FieldKind::Enum { .. } | FieldKind::Bool | FieldKind::String { pattern: None, .. }
        );
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(field.name.as_ref()), dictionary);
    }
    builder.build()
}
