//! One ingestion request: decompress → decode and check every event → reserve memory budget →
//! hand the batch to the sinks. Takes bytes and a `BodyFormat`, never HTTP types.
//!
//! Decoding is CPU work: small bodies are decoded on the calling task, larger ones on the
//! blocking pool, so no executor thread is held for more than a fraction of a millisecond.

pub mod decompress;

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::budget::{MemoryBudget, OverBudget};
use crate::pipeline::{Batch, DispatchError, Dispatcher};
use crate::schema::decode::{BodyError, BodyFormat, DecodeScratch, Decoded, EventError, decode_body};
use crate::schema::registry::{Registry, Stream};
use crate::schema::types::{OnInvalid, StreamSchema};
pub use decompress::{DecompressError, Encoding};

/// Bodies up to this size are decoded inline (about 100 µs of work).
const INLINE_DECODE_BYTES_MAX: usize = 32 * 1024;

pub struct Request {
    pub body: Bytes,
    pub encoding: Encoding,
    pub format: BodyFormat,
    pub received_at_micros: i64,
}

/// What a request's events came to.
#[derive(Debug)]
pub struct Report {
    pub accepted: u64,
    pub invalid: u64,
    pub on_invalid: OnInvalid,
    pub errors: Vec<EventError>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("stream \"{0}\" does not exist")]
    UnknownStream(String),
    #[error(transparent)]
    Decompress(#[from] DecompressError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("{} of the events are invalid and the stream takes all or nothing", .0.invalid)]
    InvalidEvents(Report),
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
    #[error("the sinks are not taking more batches: {0}")]
    Dispatch(#[from] DispatchError),
}

pub struct Ingestor {
    registry: Arc<Registry>,
    budget: Arc<MemoryBudget>,
    dispatcher: Dispatcher,
    max_decompressed_bytes: u64,
}

thread_local! {
    static SCRATCH: RefCell<DecodeScratch> = RefCell::new(DecodeScratch::default());
}

impl Ingestor {
    pub fn new(
        registry: Arc<Registry>,
        budget: Arc<MemoryBudget>,
        dispatcher: Dispatcher,
        max_decompressed_bytes: u64,
    ) -> Ingestor {
        Ingestor { registry, budget, dispatcher, max_decompressed_bytes }
    }

    pub async fn ingest(&self, stream_name: &str, request: Request) -> Result<Report, IngestError> {
        let stream = self
            .registry
            .get(stream_name)
            .ok_or_else(|| IngestError::UnknownStream(stream_name.to_owned()))?;
        let schema = stream.schema();
        let limit = self.max_decompressed_bytes;
        let inline = request.encoding == Encoding::Identity && request.body.len() <= INLINE_DECODE_BYTES_MAX;
        let decoded = if inline {
            decode(&schema, &request.body, request.encoding, request.format, limit)?
        } else {
            let schema = schema.clone();
            let (body, encoding, format) = (request.body, request.encoding, request.format);
            tokio::task::spawn_blocking(move || decode(&schema, &body, encoding, format, limit))
                .await
                .expect("decoding never panics")?
        };
        self.deliver(&stream, schema, decoded, request.received_at_micros)
    }

    fn deliver(
        &self,
        stream: &Arc<Stream>,
        schema: Arc<StreamSchema>,
        decoded: Decoded,
        received_at_micros: i64,
    ) -> Result<Report, IngestError> {
        let report = Report {
            accepted: decoded.accepted(),
            invalid: decoded.invalid,
            on_invalid: schema.on_invalid,
            errors: decoded.errors,
        };
        if schema.on_invalid == OnInvalid::RejectRequest && report.invalid > 0 {
            stream.stats.rejected.fetch_add(report.invalid, Ordering::Relaxed);
            return Err(IngestError::InvalidEvents(report));
        }
        if report.accepted > 0 || !decoded.dead_letters.is_empty() {
            let dead_letter_bytes: usize =
                decoded.dead_letters.iter().map(|d| d.raw.len() + d.reason.len()).sum();
            let bytes = decoded.records.get_array_memory_size() + dead_letter_bytes;
            let permit = self.budget.try_reserve(bytes as u64)?;
            self.dispatcher.dispatch(Batch {
                stream: stream.clone(),
                schema,
                records: decoded.records,
                dead_letters: decoded.dead_letters,
                received_at_micros,
                permit: Arc::new(permit),
            })?;
        }
        stream.stats.accepted.fetch_add(report.accepted, Ordering::Relaxed);
        let invalid_counter = match report.on_invalid {
            OnInvalid::DeadLetter => &stream.stats.dead_lettered,
            _ => &stream.stats.rejected,
        };
        invalid_counter.fetch_add(report.invalid, Ordering::Relaxed);
        Ok(report)
    }
}

fn decode(
    schema: &Arc<StreamSchema>,
    body: &[u8],
    encoding: Encoding,
    format: BodyFormat,
    limit: u64,
) -> Result<Decoded, IngestError> {
    let inflated = decompress::decompress(body, encoding, limit)?;
    let bytes = inflated.as_deref().unwrap_or(body);
    Ok(SCRATCH.with(|scratch| decode_body(schema, bytes, format, &mut scratch.borrow_mut()))?)
}
