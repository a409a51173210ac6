//! One ingestion request: idempotency check → decompress → decode and check every event →
//! encode the batch as a WAL payload → reserve memory budget → append to the WAL and wait
//! until it is durable → answer. Takes bytes and a `BodyFormat`, never HTTP types.
//!
//! Decoding and encoding are CPU work: small identity bodies are handled on the calling task,
//! others on the blocking pool, so no executor thread is held for more than a fraction of a
//! millisecond.

pub mod decompress;
pub mod idempotency;
pub mod journal;

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::budget::{MemoryBudget, OverBudget};
use crate::pipeline::{self, Batch, CodecError, Counts, Header, IdempotentAnswer};
use crate::schema::decode::{
    BodyError, BodyFormat, DecodeScratch, Decoded, EventError, Location, decode_body,
};
use crate::schema::registry::Registry;
use crate::schema::types::{OnInvalid, StreamSchema};
use crate::wal::{AppendError, Wal};
pub use decompress::{DecompressError, Encoding};
use idempotency::{Begin, IdempotencyTable};

/// Identity bodies up to this size are decoded inline (about 100 µs of work).
const INLINE_DECODE_BYTES_MAX: usize = 32 * 1024;

pub struct Request {
    pub body: Bytes,
    pub encoding: Encoding,
    pub format: BodyFormat,
    pub received_at_micros: i64,
    /// `Idempotency-Key`, already checked for shape by the caller.
    pub idempotency_key: Option<String>,
}

/// What a request's events came to.
#[derive(Debug)]
pub struct Report {
    pub accepted: u64,
    pub invalid: u64,
    pub on_invalid: OnInvalid,
    pub errors: Vec<EventError>,
}

impl Report {
    /// `{"accepted", "rejected", ["dead_lettered"], "errors"}` (SPEC §4).
    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        // Under reject_request an invalid event refuses the whole request: nothing was accepted.
        let refused = self.on_invalid == OnInvalid::RejectRequest && self.invalid > 0;
        body.insert("accepted".into(), if refused { 0 } else { self.accepted }.into());
        if self.on_invalid == OnInvalid::DeadLetter {
            body.insert("rejected".into(), 0.into());
            body.insert("dead_lettered".into(), self.invalid.into());
        } else {
            body.insert("rejected".into(), self.invalid.into());
        }
        let errors: Vec<Value> = self.errors.iter().map(error_json).collect();
        body.insert("errors".into(), errors.into());
        Value::Object(body)
    }
}

fn error_json(error: &EventError) -> Value {
    let mut entry = Map::new();
    match error.location {
        Location::Line(line) => entry.insert("line".into(), line.into()),
        Location::Index(index) => entry.insert("index".into(), index.into()),
    };
    if let Some(field) = &error.field {
        entry.insert("field".into(), field.as_ref().into());
    }
    entry.insert("reason".into(), error.reason.clone().into());
    Value::Object(entry)
}

/// The answer to give: a new one, or the first answer to the same Idempotency-Key again.
pub enum Answer {
    Fresh { body: Vec<u8>, accepted: u64 },
    Replayed(Bytes),
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
    #[error("a request with the same Idempotency-Key is still in progress")]
    IdempotencyInFlight,
    #[error(transparent)]
    Wal(#[from] AppendError),
    #[error("encode the batch: {0}")]
    Encode(#[from] CodecError),
}

pub struct Ingestor {
    registry: Arc<Registry>,
    budget: Arc<MemoryBudget>,
    wal: Arc<Wal>,
    idempotency: Arc<IdempotencyTable>,
    max_decompressed_bytes: u64,
}

thread_local! {
    static SCRATCH: RefCell<DecodeScratch> = RefCell::new(DecodeScratch::default());
}

/// The decoded request, encoded as a WAL payload.
struct Prepared {
    report: Report,
    answer: Vec<u8>,
    payload: Vec<u8>,
    accepted_bytes: usize,
}

impl Ingestor {
    pub fn new(
        registry: Arc<Registry>,
        budget: Arc<MemoryBudget>,
        wal: Arc<Wal>,
        idempotency: Arc<IdempotencyTable>,
        max_decompressed_bytes: u64,
    ) -> Ingestor {
        Ingestor { registry, budget, wal, idempotency, max_decompressed_bytes }
    }

    pub async fn ingest(&self, stream_name: &str, request: Request) -> Result<Answer, IngestError> {
        let stream = self
            .registry
            .get(stream_name)
            .ok_or_else(|| IngestError::UnknownStream(stream_name.to_owned()))?;
        let reservation = match &request.idempotency_key {
            None => None,
            Some(key) => match self.idempotency.begin(stream_name, key) {
                Begin::Replay(body) => return Ok(Answer::Replayed(body)),
                Begin::InFlight => return Err(IngestError::IdempotencyInFlight),
                Begin::Fresh(reservation) => Some(reservation),
            },
        };
        let schema = stream.schema();
        let limit = self.max_decompressed_bytes;
        let inline = request.encoding == Encoding::Identity && request.body.len() <= INLINE_DECODE_BYTES_MAX;
        let header = Header {
            stream: stream_name.to_owned(),
            schema_version: schema.version,
            received_at_micros: request.received_at_micros,
            counts: Counts::default(),
            answer: None,
        };
        let (body, encoding, format, key) =
            (request.body, request.encoding, request.format, request.idempotency_key);
        let prepared = if inline {
            prepare(&schema, &body, encoding, format, limit, header, key)?
        } else {
            let schema = schema.clone();
            tokio::task::spawn_blocking(move || prepare(&schema, &body, encoding, format, limit, header, key))
                .await
                .expect("decoding never panics")?
        };
        let report = prepared.report;
        if report.on_invalid == OnInvalid::RejectRequest && report.invalid > 0 {
            // Nothing is stored, but the rejection is counted: the count-only record carries
            // it to the journal so the counter survives a restart.
            if let Err(error) = self.wal.append(prepared.payload).await {
                tracing::debug!(%error, "count of a refused request not logged");
            }
            stream.stats.rejected.fetch_add(report.invalid, Ordering::Relaxed);
            return Err(IngestError::InvalidEvents(report));
        }
        let permit = self.budget.try_reserve((prepared.payload.len() + prepared.accepted_bytes) as u64)?;
        self.wal.append(prepared.payload).await?;
        drop(permit);
        if let Some(reservation) = reservation {
            reservation.complete(Bytes::from(prepared.answer.clone()), request.received_at_micros);
        }
        stream.stats.accepted.fetch_add(report.accepted, Ordering::Relaxed);
        let invalid_counter = match report.on_invalid {
            OnInvalid::DeadLetter => &stream.stats.dead_lettered,
            _ => &stream.stats.rejected,
        };
        invalid_counter.fetch_add(report.invalid, Ordering::Relaxed);
        Ok(Answer::Fresh { body: prepared.answer, accepted: report.accepted })
    }
}

fn prepare(
    schema: &Arc<StreamSchema>,
    body: &[u8],
    encoding: Encoding,
    format: BodyFormat,
    limit: u64,
    mut header: Header,
    idempotency_key: Option<String>,
) -> Result<Prepared, IngestError> {
    let inflated = decompress::decompress(body, encoding, limit)?;
    let bytes = inflated.as_deref().unwrap_or(body);
    let decoded: Decoded =
        SCRATCH.with(|scratch| decode_body(schema, bytes, format, &mut scratch.borrow_mut()))?;
    let report = Report {
        accepted: decoded.accepted(),
        invalid: decoded.invalid,
        on_invalid: schema.on_invalid,
        errors: decoded.errors,
    };
    let answer = serde_json::to_vec(&report.to_json()).expect("a report serialises");
    let dead_lettered = report.on_invalid == OnInvalid::DeadLetter;
    if report.on_invalid == OnInvalid::RejectRequest && report.invalid > 0 {
        header.counts = Counts { accepted: 0, invalid: report.invalid, dead_lettered };
        let batch = Batch { header, records: None, dead_letters: Vec::new() };
        let mut payload = Vec::new();
        pipeline::encode(&batch, &mut payload)?;
        return Ok(Prepared { report, answer, payload, accepted_bytes: 0 });
    }
    header.counts = Counts { accepted: report.accepted, invalid: report.invalid, dead_lettered };
    header.answer = idempotency_key.map(|key| IdempotentAnswer { key, body: answer.clone() });
    let accepted_bytes = decoded.records.get_array_memory_size();
    let batch = Batch {
        header,
        records: (decoded.records.num_rows() > 0).then_some(decoded.records),
        dead_letters: decoded.dead_letters,
    };
    let mut payload = Vec::with_capacity(bytes.len() / 3 + 256);
    pipeline::encode(&batch, &mut payload)?;
    Ok(Prepared { report, answer, payload, accepted_bytes })
}
