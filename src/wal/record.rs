//! WAL record framing: `len u32 | crc32c u32 | lsn u64 | payload[len]`, little-endian, where
//! the checksum covers `lsn ++ payload`. A torn write (short tail) or garbled bytes fail the
//! length or checksum test, so recovery can tell the valid prefix from what follows.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

/// Bytes of a record header.
pub const HEADER_BYTES: usize = 16;
/// Largest payload: a request's whole decompressed body fits many times over once encoded.
pub const PAYLOAD_BYTES_MAX: usize = 256 << 20;

/// Log sequence number: records are numbered 1, 2, 3, ... without gaps.
pub type Lsn = u64;
/// The largest record number: it fits a signed 64-bit integer (PostgreSQL's `bigint` in the
/// ledger), and a million records a second would take 290,000 years to reach it. A segment
/// named past it is damage.
pub const LSN_MAX: Lsn = i64::MAX as Lsn;

/// Appends one framed record to `out`.
pub fn encode(lsn: Lsn, payload: &[u8], out: &mut Vec<u8>) {
    assert!(payload.len() <= PAYLOAD_BYTES_MAX, "ingest keeps payloads under the record limit");
    assert!(lsn > 0);
    let lsn_bytes = lsn.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&lsn_bytes), payload);
    let len = u32::try_from(payload.len()).expect("payload limit fits u32");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&lsn_bytes);
    out.extend_from_slice(payload);
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, valid record and the bytes it took.
    Record { lsn: Lsn, payload: &'a [u8], bytes: usize },
    /// The buffer ends inside a record (a torn tail if nothing follows on disk).
    Incomplete,
    /// The bytes are not a valid record.
    Corrupt(&'static str),
}

/// Reads the record at the start of `buffer`.
pub fn decode(buffer: &[u8]) -> Decoded<'_> {
    let Some(header) = buffer.get(..HEADER_BYTES) else {
        return Decoded::Incomplete;
    };
    let field = |at: usize| -> [u8; 4] {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(header.get(at..at + 4).unwrap_or(&[0; 4]));
        bytes
    };
    let len = u32::from_le_bytes(field(0)) as usize;
    let crc = u32::from_le_bytes(field(4));
    let mut lsn_bytes = [0u8; 8];
    lsn_bytes.copy_from_slice(header.get(8..16).unwrap_or(&[0; 8]));
    let lsn = u64::from_le_bytes(lsn_bytes);
    if len > PAYLOAD_BYTES_MAX {
        return Decoded::Corrupt("record length is beyond the limit");
    }
    let Some(payload) = buffer.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Decoded::Incomplete;
    };
    if crc32c::crc32c_append(crc32c::crc32c(&lsn_bytes), payload) != crc {
        return Decoded::Corrupt("checksum mismatch");
    }
    if lsn == 0 {
        return Decoded::Corrupt("record number 0");
    }
    Decoded::Record { lsn, payload, bytes: HEADER_BYTES + len }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_every_cut_or_flip_is_detected() {
        let mut buffer = Vec::new();
        encode(7, b"hello wal", &mut buffer);
        assert_eq!(decode(&buffer), Decoded::Record { lsn: 7, payload: b"hello wal", bytes: buffer.len() });
        for cut in 0..buffer.len() {
            assert_eq!(decode(&buffer[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
        for byte in 4..buffer.len() {
            let mut garbled = buffer.clone();
            garbled[byte] ^= 0x40;
            assert!(matches!(decode(&garbled), Decoded::Corrupt(_)), "flip at {byte}");
        }
    }
}
