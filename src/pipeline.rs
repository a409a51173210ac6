//! The unit of work between ingestion, the WAL and the sinks: one request's checked events
//! (`Batch`), and its encoding as a WAL record payload.
//!
//! Payload, little-endian: `version u8 = 1 | stream (u8 len, bytes) | schema_version u32 |
//! received_at_micros i64 | accepted u64 | invalid u64 | invalid_dead_lettered u8 |
//! idempotency key (u8 len, bytes; 0 = none) [| answer (u32 len, bytes)] | events (u32 len, Arrow IPC stream, zstd; 0 = no events) | dead letters (u32
//! count, each: place kind u8, place u64, reason (u32 len, bytes), raw (u32 len, bytes))`.
//! The header comes first so the request journal (counters, idempotency keys) reads it
//! without decoding the events.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use arrow_array::RecordBatch;
use arrow_ipc::CompressionType;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};

use crate::schema::decode::{DeadLetter, Location};

const PAYLOAD_VERSION: u8 = 1;
const WAL_ZSTD_LEVEL: i32 = 1;

/// The first answer to a request that carried an `Idempotency-Key`, kept with its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentAnswer {
    pub key: String,
    /// The JSON body of the 200 answer.
    pub body: Vec<u8>,
}

/// What a payload says before its events: enough for the request journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub stream: String,
    pub schema_version: u32,
    pub received_at_micros: i64,
    pub counts: Counts,
    pub answer: Option<IdempotentAnswer>,
}

/// A request's events by outcome, for the stream counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub accepted: u64,
    pub invalid: u64,
    /// Whether the invalid events went to the dead-letter output (else they were rejected).
    pub dead_lettered: bool,
}

pub struct Batch {
    pub header: Header,
    /// Accepted events (None when the request had none).
    pub records: Option<RecordBatch>,
    /// Invalid events under `on_invalid = "dead_letter"`.
    pub dead_letters: Vec<DeadLetter>,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("the WAL payload is truncated or malformed: {0}")]
    Malformed(&'static str),
    #[error("the WAL payload has version {0}, this floodway reads version 1")]
    Version(u8),
    #[error("Arrow IPC: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

pub fn encode(batch: &Batch, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let header = &batch.header;
    out.push(PAYLOAD_VERSION);
    put_short(out, header.stream.as_bytes());
    out.extend_from_slice(&header.schema_version.to_le_bytes());
    out.extend_from_slice(&header.received_at_micros.to_le_bytes());
    out.extend_from_slice(&header.counts.accepted.to_le_bytes());
    out.extend_from_slice(&header.counts.invalid.to_le_bytes());
    out.push(u8::from(header.counts.dead_lettered));
    match &header.answer {
        None => out.push(0),
        Some(answer) => {
            assert!(!answer.key.is_empty() && answer.key.len() <= 255, "keys are checked at the door");
            put_short(out, answer.key.as_bytes());
            put_long(out, &answer.body);
        }
    }
    let length_at = out.len();
    out.extend_from_slice(&[0; 4]);
    if let Some(records) = batch.records.as_ref().filter(|r| r.num_rows() > 0) {
        let start = out.len();
        // Level 1: arrow-ipc's default (3) costs about twice the CPU for a few % of bytes.
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::ZSTD))?
            .try_with_compression_level(Some(WAL_ZSTD_LEVEL))?;
        let mut writer = StreamWriter::try_new_with_options(&mut *out, &records.schema(), options)?;
        writer.write(records)?;
        writer.finish()?;
        drop(writer);
        let length =
            u32::try_from(out.len() - start).map_err(|_| CodecError::Malformed("events too large"))?;
        if let Some(slot) = out.get_mut(length_at..length_at + 4) {
            slot.copy_from_slice(&length.to_le_bytes());
        }
    }
    let count = u32::try_from(batch.dead_letters.len()).map_err(|_| CodecError::Malformed("too many"))?;
    out.extend_from_slice(&count.to_le_bytes());
    for letter in &batch.dead_letters {
        let (kind, place) = match letter.location {
            Location::Line(line) => (0u8, line),
            Location::Index(index) => (1u8, index),
        };
        out.push(kind);
        out.extend_from_slice(&place.to_le_bytes());
        put_long(out, letter.reason.as_bytes());
        put_long(out, letter.raw.as_bytes());
    }
    Ok(())
}

pub fn decode_header(payload: &[u8]) -> Result<Header, CodecError> {
    Cursor { bytes: payload, at: 0 }.header()
}

pub fn decode(payload: &[u8]) -> Result<Batch, CodecError> {
    let mut cursor = Cursor { bytes: payload, at: 0 };
    let header = cursor.header()?;
    let events = cursor.long()?;
    let records = if events.is_empty() {
        None
    } else {
        let mut reader = StreamReader::try_new(events, None)?;
        reader.next().transpose()?
    };
    let count = cursor.u32()?;
    let mut dead_letters = Vec::with_capacity((count as usize).min(payload.len() / 17));
    for _ in 0..count {
        let location = match (cursor.u8()?, cursor.u64()?) {
            (0, line) => Location::Line(line),
            (1, index) => Location::Index(index),
            _ => return Err(CodecError::Malformed("unknown place kind")),
        };
        let reason = cursor.text()?;
        let raw = cursor.text()?;
        dead_letters.push(DeadLetter { location, reason, raw });
    }
    Ok(Batch { header, records, dead_letters })
}

fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(u8::try_from(bytes.len()).expect("stream names and keys are at most 255 bytes"));
    out.extend_from_slice(bytes);
}

fn put_long(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).expect("payload parts fit u32").to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], CodecError> {
        let slice = self.bytes.get(self.at..self.at + count).ok_or(CodecError::Malformed("ends early"))?;
        self.at += count;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        self.take(1)?.first().copied().ok_or(CodecError::Malformed("ends early"))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(bytes))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(bytes))
    }

    fn short(&mut self) -> Result<&'a [u8], CodecError> {
        let length = self.u8()?;
        self.take(usize::from(length))
    }

    fn long(&mut self) -> Result<&'a [u8], CodecError> {
        let length = self.u32()?;
        self.take(length as usize)
    }

    fn text(&mut self) -> Result<String, CodecError> {
        let bytes = self.long()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::Malformed("text is not UTF-8"))
    }

    fn header(&mut self) -> Result<Header, CodecError> {
        let version = self.u8()?;
        if version != PAYLOAD_VERSION {
            return Err(CodecError::Version(version));
        }
        let stream =
            String::from_utf8(self.short()?.to_vec()).map_err(|_| CodecError::Malformed("stream name"))?;
        let schema_version = self.u32()?;
        let received_at_micros = i64::from_le_bytes(self.u64()?.to_le_bytes());
        let counts = Counts { accepted: self.u64()?, invalid: self.u64()?, dead_lettered: self.u8()? == 1 };
        let key = self.short()?;
        let answer = if key.is_empty() {
            None
        } else {
            let key =
                String::from_utf8(key.to_vec()).map_err(|_| CodecError::Malformed("idempotency key"))?;
            Some(IdempotentAnswer { key, body: self.long()?.to_vec() })
        };
        Ok(Header { stream, schema_version, received_at_micros, counts, answer })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::schema::decode::{BodyFormat, DecodeScratch, decode_body};
    use crate::schema::parse::parse_schema;
    use std::sync::Arc;

    #[test]
    fn batches_round_trip_through_the_payload_encoding() {
        let schema = Arc::new(
            parse_schema(
                br#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"n","type":"int64"}],"time_field":"ts","on_invalid":"dead_letter"}"#,
                3,
            )
            .unwrap(),
        );
        let body = b"{\"ts\":\"2024-01-01T00:00:00Z\",\"n\":1}\n{\"ts\":1}\n";
        let decoded = decode_body(&schema, body, BodyFormat::Ndjson, &mut DecodeScratch::default()).unwrap();
        let batch = Batch {
            header: Header {
                stream: "s".into(),
                schema_version: 3,
                received_at_micros: -5,
                counts: Counts { accepted: 1, invalid: 1, dead_lettered: true },
                answer: Some(IdempotentAnswer { key: "k-1".into(), body: b"{\"accepted\":1}".to_vec() }),
            },
            records: Some(decoded.records.clone()),
            dead_letters: decoded.dead_letters.clone(),
        };
        let mut payload = Vec::new();
        encode(&batch, &mut payload).unwrap();
        let back = decode(&payload).unwrap();
        assert_eq!(back.header, batch.header);
        assert_eq!(back.records.unwrap(), decoded.records);
        assert_eq!(back.dead_letters.len(), 1);
        assert_eq!(back.dead_letters[0].raw, "{\"ts\":1}");
        assert_eq!(decode_header(&payload).unwrap(), batch.header);
        for cut in 0..payload.len() {
            assert!(decode(&payload[..cut]).is_err(), "cut at {cut} decoded");
        }
    }
}
