//! Request body decoding (`Content-Encoding`), bounded: output beyond the limit is refused
//! as soon as it is produced, so a decompression bomb is never inflated whole.

use std::io::Read;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("the body decompresses to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the {encoding} body cannot be decoded: {source}")]
    Corrupt { encoding: &'static str, source: std::io::Error },
}

/// Decodes `body`; returns `None` for identity (use the body as it is).
pub fn decompress(body: &[u8], encoding: Encoding, limit: u64) -> Result<Option<Vec<u8>>, DecompressError> {
    match encoding {
        Encoding::Identity => Ok(None),
        Encoding::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(body), "gzip", limit, body.len()),
        Encoding::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|source| DecompressError::Corrupt { encoding: "zstd", source })?;
            read_bounded(decoder, "zstd", limit, body.len())
        }
    }
}

fn read_bounded(
    mut reader: impl Read,
    encoding: &'static str,
    limit: u64,
    compressed_len: usize,
) -> Result<Option<Vec<u8>>, DecompressError> {
    const CHUNK_BYTES: usize = 64 * 1024;
    // Telemetry compresses about 5-10x; start there and grow as output arrives.
    let initial = compressed_len.saturating_mul(6).min(usize::try_from(limit).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(initial.max(CHUNK_BYTES));
    let limit_len = usize::try_from(limit).unwrap_or(usize::MAX);
    loop {
        if out.len() > limit_len {
            return Err(DecompressError::TooLarge { limit });
        }
        let start = out.len();
        // Read at most one byte past the limit: enough to know it was passed.
        let room = (limit_len - start).saturating_add(1).min(CHUNK_BYTES);
        out.resize(start + room, 0);
        let read = match reader.read(&mut out[start..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(source) => return Err(DecompressError::Corrupt { encoding, source }),
        };
        out.truncate(start + read);
        if read == 0 {
            return Ok(Some(out));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn limits_are_inclusive_and_bombs_are_cut_short() {
        let data = vec![b'a'; 1000];
        let exact = decompress(&gzip(&data), Encoding::Gzip, 1000).unwrap().unwrap();
        assert_eq!(exact, data);
        assert!(matches!(
            decompress(&gzip(&data), Encoding::Gzip, 999),
            Err(DecompressError::TooLarge { .. })
        ));
        let zstd_exact = zstd::encode_all(&data[..], 3).unwrap();
        assert_eq!(decompress(&zstd_exact, Encoding::Zstd, 1000).unwrap().unwrap(), data);
        assert!(matches!(decompress(&zstd_exact, Encoding::Zstd, 10), Err(DecompressError::TooLarge { .. })));
    }

    #[test]
    fn truncated_bodies_are_corrupt() {
        let data = vec![b'a'; 100_000];
        let gz = gzip(&data);
        assert!(matches!(
            decompress(&gz[..gz.len() - 10], Encoding::Gzip, 1 << 20),
            Err(DecompressError::Corrupt { .. })
        ));
        let zs = zstd::encode_all(&data[..], 3).unwrap();
        assert!(matches!(
            decompress(&zs[..zs.len() - 5], Encoding::Zstd, 1 << 20),
            Err(DecompressError::Corrupt { .. })
        ));
        assert!(matches!(
            decompress(b"not gzip", Encoding::Gzip, 1 << 20),
            Err(DecompressError::Corrupt { .. })
        ));
    }
}
