//! The unit of work between ingestion, the WAL and the sinks: one request's checked events
//! (`Batch`), and its encoding as a WAL record payload.
//!
//! Payload, little-endian: `version u8 = 2 | stream (u8 len, bytes) | schema_version u32 |
//! received_at_micros i64 | accepted u64 | invalid u64 | invalid_dead_lettered u8 |
//! idempotency key (u8 len, bytes; 0 = none) [| answer (u32 len, bytes)] | events (u32 len,
//! one zstd frame holding an Arrow IPC stream; 0 = no events) | dead letters (u32 count,
//! each: place kind u8, place u64, reason (u32 len, bytes), raw (u32 len, bytes))`.
//! The header comes first so the request journal (counters, idempotency keys) reads it
//! without decoding the events.
//!
//! Version 1, which earlier releases wrote, differs only in its events: an Arrow IPC stream
//! whose buffers arrow-ipc compressed one by one. It is still read. One frame for the whole
//! stream, with zstd contexts kept per thread, costs far less CPU on both ends: a record has
//! some twenty buffers, and each frame of its own paid for setting up a context and tables.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::cell::RefCell;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::{StreamDecoder, StreamReader};
use arrow_ipc::writer::StreamWriter;

use crate::schema::decode::{DeadLetter, Location};

const PAYLOAD_VERSION: u8 = 2;
/// Events as an Arrow IPC stream with buffers compressed one by one (earlier releases).
const PAYLOAD_VERSION_BUFFER_ZSTD: u8 = 1;
/// One of zstd's fast levels: against level 1, a payload of 1,000 reference events takes
/// 42 % less CPU to pack and 50 % less to unpack, for 80 bytes an event instead of 48.5. The
/// WAL is short-lived and its disk takes ~800 MB/s, while CPU is what ingestion runs out of.
const WAL_ZSTD_LEVEL: i32 = -3;
/// Largest events section a payload may unpack to: far above what a request can hold
/// (`limits.max_buffered_bytes`), and a bound on what a damaged size field can make us
/// allocate.
const EVENTS_UNPACKED_MAX: u64 = 1 << 30;
/// Scratch space a thread keeps between records; a larger one (after a huge request) is
/// given back.
const SCRATCH_KEEP_BYTES: usize = 16 << 20;

/// A thread's zstd context and scratch space for encoding payloads.
struct Packer {
    compressor: zstd::bulk::Compressor<'static>,
    ipc: Vec<u8>,
    packed: Vec<u8>,
}

thread_local! {
    static PACKER: RefCell<Option<Packer>> = const { RefCell::new(None) };
    static UNPACKER: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

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
    #[error("the WAL payload has version {0}, this floodway reads versions 1 and 2")]
    Version(u8),
    #[error("Arrow IPC: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("zstd: {0}")]
    Zstd(#[from] std::io::Error),
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
    match batch.records.as_ref().filter(|r| r.num_rows() > 0) {
        Some(records) => put_events(out, records)?,
        None => out.extend_from_slice(&0u32.to_le_bytes()),
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
    let mut cursor = Cursor { bytes: payload, at: 0 };
    cursor.version()?;
    cursor.header()
}

pub fn decode(payload: &[u8]) -> Result<Batch, CodecError> {
    let mut cursor = Cursor { bytes: payload, at: 0 };
    let version = cursor.version()?;
    let header = cursor.header()?;
    let events = cursor.long()?;
    let records = if events.is_empty() {
        None
    } else if version == PAYLOAD_VERSION_BUFFER_ZSTD {
        let mut reader = StreamReader::try_new(events, None)?;
        reader.next().transpose()?
    } else {
        unpack_events(events)?
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

/// The events as one zstd frame of an Arrow IPC stream, after its u32 length.
fn put_events(out: &mut Vec<u8>, records: &RecordBatch) -> Result<(), CodecError> {
    PACKER.with_borrow_mut(|packer| {
        let packer = match packer {
            Some(packer) => packer,
            None => packer.insert(Packer {
                compressor: zstd::bulk::Compressor::new(WAL_ZSTD_LEVEL)?,
                ipc: Vec::new(),
                packed: Vec::new(),
            }),
        };
        packer.ipc.clear();
        let mut writer = StreamWriter::try_new(&mut packer.ipc, &records.schema())?;
        writer.write(records)?;
        writer.finish()?;
        drop(writer);
        packer.packed.clear();
        packer.packed.reserve(zstd::zstd_safe::compress_bound(packer.ipc.len()));
        // Writes the frame with its content size, which `events` relies on.
        packer.compressor.compress_to_buffer(&packer.ipc, &mut packer.packed)?;
        let length =
            u32::try_from(packer.packed.len()).map_err(|_| CodecError::Malformed("events too large"))?;
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&packer.packed);
        if packer.ipc.capacity() > SCRATCH_KEEP_BYTES {
            packer.ipc = Vec::new();
            packer.packed = Vec::new();
        }
        Ok(())
    })
}

/// The events of a version 2 payload: one zstd frame of an Arrow IPC stream.
fn unpack_events(frame: &[u8]) -> Result<Option<RecordBatch>, CodecError> {
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) if size <= EVENTS_UNPACKED_MAX => size as usize,
        Ok(Some(_)) => return Err(CodecError::Malformed("events unpack too large")),
        Ok(None) | Err(_) => return Err(CodecError::Malformed("events frame without its size")),
    };
    let ipc = UNPACKER.with_borrow_mut(|unpacker| {
        let unpacker = match unpacker {
            Some(unpacker) => unpacker,
            None => unpacker.insert(zstd::bulk::Decompressor::new()?),
        };
        unpacker.decompress(frame, size)
    })?;
    if ipc.len() != size {
        return Err(CodecError::Malformed("events frame size"));
    }
    // The arrays point into this buffer: no copy after the one out of zstd.
    let mut buffer = Buffer::from_vec(ipc);
    let mut decoder = StreamDecoder::new();
    let records = decoder.decode(&mut buffer)?;
    if decoder.decode(&mut buffer)?.is_some() {
        return Err(CodecError::Malformed("more than one batch of events"));
    }
    decoder.finish()?;
    Ok(records)
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

    fn version(&mut self) -> Result<u8, CodecError> {
        match self.u8()? {
            version @ (PAYLOAD_VERSION | PAYLOAD_VERSION_BUFFER_ZSTD) => Ok(version),
            other => Err(CodecError::Version(other)),
        }
    }

    fn header(&mut self) -> Result<Header, CodecError> {
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

    /// WALs written by earlier releases (version 1: buffers compressed by arrow-ipc) stay
    /// readable, so an upgrade replays what the previous binary left.
    #[test]
    fn version_1_payloads_are_still_read() {
        use arrow_ipc::CompressionType;
        use arrow_ipc::writer::IpcWriteOptions;

        let schema = Arc::new(
            parse_schema(br#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"s","type":"string"}],"time_field":"ts"}"#, 1)
                .unwrap(),
        );
        let body =
            b"{\"ts\":\"2024-01-01T00:00:00Z\",\"s\":\"a\"}\n{\"ts\":\"2024-01-01T00:00:01Z\",\"s\":\"b\"}\n";
        let records =
            decode_body(&schema, body, BodyFormat::Ndjson, &mut DecodeScratch::default()).unwrap().records;
        let header = Header {
            stream: "s".into(),
            schema_version: 1,
            received_at_micros: 7,
            counts: Counts { accepted: 2, invalid: 0, dead_lettered: false },
            answer: None,
        };
        let batch =
            Batch { header: header.clone(), records: Some(records.clone()), dead_letters: Vec::new() };
        let mut current = Vec::new();
        encode(&batch, &mut current).unwrap();
        assert_eq!(current[0], PAYLOAD_VERSION);

        // The same payload as version 1 wrote it: same header, the events as arrow-ipc's
        // compressed stream.
        let mut header_only = Vec::new();
        encode(&Batch { header: header.clone(), records: None, dead_letters: Vec::new() }, &mut header_only)
            .unwrap();
        // Without events the payload ends with two zero u32: no events, no dead letters.
        let mut old = header_only[..header_only.len() - 8].to_vec();
        old[0] = PAYLOAD_VERSION_BUFFER_ZSTD;
        let options = IpcWriteOptions::default().try_with_compression(Some(CompressionType::ZSTD)).unwrap();
        let mut ipc = Vec::new();
        let mut writer = StreamWriter::try_new_with_options(&mut ipc, &records.schema(), options).unwrap();
        writer.write(&records).unwrap();
        writer.finish().unwrap();
        drop(writer);
        put_long(&mut old, &ipc);
        old.extend_from_slice(&0u32.to_le_bytes());

        let back = decode(&old).unwrap();
        assert_eq!(back.header, header);
        assert_eq!(back.records.unwrap(), records);
        assert_eq!(decode_header(&old).unwrap(), header);
        let mut unknown = current.clone();
        unknown[0] = 3;
        assert!(matches!(decode(&unknown), Err(CodecError::Version(3))));
    }
}
