//! What happens to a decoded batch: Parquet encoding through the sink's own writer
//! (`sinks::parquet::writer::OpenFile`), the WAL payload encoding and decoding (`pipeline::encode`, `decode`), and
//! WAL appends (`wal::Wal::append`) on the real disk, with `wal.sync = "os"` and `"fsync"`.
//!
//! `cargo bench --bench outputs`; figures and how to read them: benches/README.md.
//!
//! Where the files go:
//! - Parquet: `/dev/shm` when it exists (tmpfs: the final fsync costs nothing, so the figure is
//!   the encoding CPU), else the temp dir; `FLOODWAY_BENCH_PARQUET_DIR` overrides.
//! - WAL: the temp dir (`TMPDIR`, else `/tmp`), which must be on the disk being measured;
//!   `FLOODWAY_BENCH_WAL_DIR` overrides.

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use floodway::config::{ParquetCompression, SyncMode};
use floodway::pipeline::{self, Batch, Counts, Header};
use floodway::schema::decode::DecodeScratch;
use floodway::schema::types::StreamSchema;
use floodway::sinks::parquet::writer::OpenFile;
use floodway::wal::{SEGMENT_BYTES_TARGET, Wal, WalOptions};

/// Rows per Parquet file: 64 requests of 1,000 events.
const PARQUET_BODIES: usize = 64;
/// Appends in flight in the concurrent WAL benchmarks, like 16 client connections.
const WAL_IN_FLIGHT: usize = 16;

fn outputs(c: &mut Criterion) {
    let schema = common::reference_schema();
    let bodies = common::bodies();
    let mut scratch = DecodeScratch::default();
    let batches: Vec<RecordBatch> =
        bodies.iter().map(|body| common::decode(&schema, body, &mut scratch)).collect();
    let ndjson_bytes_per_event =
        common::total_bytes(&bodies) as f64 / (bodies.len() * common::EVENTS_PER_BODY) as f64;
    eprintln!(
        "outputs: {} distinct batches of {} events, {ndjson_bytes_per_event:.1} bytes/event as NDJSON",
        batches.len(),
        common::EVENTS_PER_BODY
    );
    parquet(c, &schema, &bodies, &batches);
    let payloads = wal_encode(c, &schema, &bodies, &batches);
    wal_append(c, &payloads);
}

fn parquet(c: &mut Criterion, schema: &Arc<StreamSchema>, bodies: &[Vec<u8>], batches: &[RecordBatch]) {
    let base = bench_dir("FLOODWAY_BENCH_PARQUET_DIR", Some(Path::new("/dev/shm")));
    let dir = tempfile::Builder::new().prefix("floodway-bench-parquet-").tempdir_in(&base).expect("temp dir");
    // Distinct files' worth of rows: 4 × 64,000 rows, both as one batch each and as the
    // 1,000-row batches the sink writes (one per WAL record).
    let files: Vec<&[RecordBatch]> = batches.chunks_exact(PARQUET_BODIES).collect();
    let whole: Vec<RecordBatch> = files
        .iter()
        .map(|parts| arrow_select::concat::concat_batches(&schema.arrow, *parts).expect("same schema"))
        .collect();
    let rows = (PARQUET_BODIES * common::EVENTS_PER_BODY) as u64;
    let ndjson = (common::total_bytes(bodies) / bodies.len() * PARQUET_BODIES) as u64;

    let mut group = c.benchmark_group("parquet");
    group.throughput(Throughput::ElementsAndBytes { elements: rows, bytes: ndjson });
    for (name, compression) in
        [("zstd1", ParquetCompression::Zstd { level: 1 }), ("uncompressed", ParquetCompression::None)]
    {
        let size = write_file(dir.path(), schema, compression, std::slice::from_ref(&whole[0]));
        eprintln!(
            "parquet {name}: {:.1} bytes/event in the file ({}, {} rows)",
            size as f64 / rows as f64,
            dir.path().display(),
            rows
        );
        group.bench_function(format!("{name}_64000_rows"), |b| {
            let mut next = 0;
            b.iter(|| {
                let batch = &whole[next % whole.len()];
                next += 1;
                write_file(dir.path(), schema, compression, std::slice::from_ref(batch))
            })
        });
    }
    group.bench_function("zstd1_64x1000_rows", |b| {
        let mut next = 0;
        b.iter(|| {
            let parts = files[next % files.len()];
            next += 1;
            write_file(dir.path(), schema, ParquetCompression::Zstd { level: 1 }, parts)
        })
    });
    group.finish();
}

/// Writes one Parquet file of `parts` with the sink's writer, finishes it (fsync included),
/// deletes it, and returns its size.
fn write_file(
    dir: &Path,
    schema: &StreamSchema,
    compression: ParquetCompression,
    parts: &[RecordBatch],
) -> u64 {
    let mut file = OpenFile::create(dir.to_path_buf(), "part-bench.parquet", "bench", schema, compression)
        .expect("create the file");
    for part in parts {
        file.write(black_box(part)).expect("encode");
    }
    let finished = file.finish().expect("finish the file");
    let size = std::fs::metadata(&finished.in_progress).expect("the file exists").len();
    std::fs::remove_file(&finished.in_progress).expect("delete the file");
    size
}

fn wal_encode(
    c: &mut Criterion,
    schema: &StreamSchema,
    bodies: &[Vec<u8>],
    batches: &[RecordBatch],
) -> Vec<Vec<u8>> {
    let encode = |batch: &RecordBatch, body_bytes: usize| {
        let header = Header {
            stream: "bench".to_owned(),
            schema_version: schema.version,
            received_at_micros: 1_780_000_000_000_000,
            counts: Counts { accepted: batch.num_rows() as u64, invalid: 0, dead_lettered: false },
            answer: None,
        };
        let batch = Batch { header, records: Some(batch.clone()), dead_letters: Vec::new() };
        // The capacity `ingest` reserves for the payload.
        let mut payload = Vec::with_capacity(body_bytes / 3 + 256);
        pipeline::encode(&batch, &mut payload).expect("encodes");
        payload
    };
    let payloads: Vec<Vec<u8>> =
        batches.iter().zip(bodies).map(|(batch, body)| encode(batch, body.len())).collect();
    let payload_bytes = payloads.iter().map(Vec::len).sum::<usize>();
    eprintln!(
        "wal payload: {:.1} bytes/event, {:.1} KB per 1,000-event payload",
        payload_bytes as f64 / (payloads.len() * common::EVENTS_PER_BODY) as f64,
        payload_bytes as f64 / payloads.len() as f64 / 1_000.0
    );

    let mut group = c.benchmark_group("wal");
    group.throughput(Throughput::ElementsAndBytes {
        elements: common::EVENTS_PER_BODY as u64,
        bytes: (common::total_bytes(bodies) / bodies.len()) as u64,
    });
    group.bench_function("encode_payload_1000", |b| {
        let mut next = 0;
        b.iter(|| {
            let index = next % batches.len();
            next += 1;
            encode(black_box(&batches[index]), bodies[index].len())
        })
    });
    // What every sink pays per record before it can write: the payload back to Arrow.
    group.bench_function("decode_payload_1000", |b| {
        let mut next = 0;
        b.iter(|| {
            let index = next % payloads.len();
            next += 1;
            pipeline::decode(black_box(&payloads[index])).expect("decodes")
        })
    });
    group.finish();
    payloads
}

fn wal_append(c: &mut Criterion, payloads: &[Vec<u8>]) {
    let base = bench_dir("FLOODWAY_BENCH_WAL_DIR", None);
    eprintln!("wal append: segments in {}", base.display());
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("tokio runtime");
    let mean_payload = (payloads.iter().map(Vec::len).sum::<usize>() / payloads.len()) as u64;

    let mut group = c.benchmark_group("wal_append");
    group.throughput(Throughput::BytesDecimal(mean_payload));
    group.sampling_mode(SamplingMode::Flat);
    for (sync, sync_name) in [(SyncMode::Os, "os"), (SyncMode::Fsync, "fsync")] {
        for in_flight in [1, WAL_IN_FLIGHT] {
            let dir =
                tempfile::Builder::new().prefix("floodway-bench-wal-").tempdir_in(&base).expect("temp dir");
            let options = WalOptions { sync, max_bytes: u64::MAX / 2, segment_bytes: SEGMENT_BYTES_TARGET };
            let wal = Wal::open(dir.path(), options).expect("open the WAL");
            // A consumer that is always done, so that full segments are deleted as they close.
            drop(wal.register("bench", 0).expect("register"));
            bench_appends(&mut group, &runtime, &wal, payloads, sync_name, in_flight);
            runtime.block_on(wal.close());
        }
    }
    group.finish();
}

fn bench_appends(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &tokio::runtime::Runtime,
    wal: &Arc<Wal>,
    payloads: &[Vec<u8>],
    sync_name: &str,
    in_flight: usize,
) {
    let name = format!("{sync_name}_{in_flight}_in_flight");
    group.bench_function(name, |b| {
        let mut next = 0;
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                // Copies made off the clock: `append` takes the payload by value.
                let count = left.min(payloads.len());
                let round: Vec<Vec<u8>> =
                    (0..count).map(|offset| payloads[(next + offset) % payloads.len()].clone()).collect();
                next += count;
                left -= count;
                let start = Instant::now();
                let last = runtime.block_on(append_all(wal, round, in_flight));
                elapsed += start.elapsed();
                wal.checkpoint("bench", last);
            }
            elapsed
        })
    });
}

/// Appends `round` with `in_flight` appends waiting at a time; returns the last LSN.
async fn append_all(wal: &Arc<Wal>, round: Vec<Vec<u8>>, in_flight: usize) -> u64 {
    if in_flight == 1 {
        let mut last = 0;
        for payload in round {
            last = wal.append(payload).await.expect("append");
        }
        return last;
    }
    let mut lanes: Vec<Vec<Vec<u8>>> = (0..in_flight).map(|_| Vec::new()).collect();
    for (index, payload) in round.into_iter().enumerate() {
        lanes[index % in_flight].push(payload);
    }
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|lane| {
            let wal = wal.clone();
            tokio::spawn(async move {
                let mut last = 0;
                for payload in lane {
                    last = wal.append(payload).await.expect("append");
                }
                last
            })
        })
        .collect();
    let mut last = 0;
    for task in tasks {
        last = last.max(task.await.expect("append task"));
    }
    last
}

/// `env` when set, else `preferred` when it is a folder, else the temp dir.
fn bench_dir(env: &str, preferred: Option<&Path>) -> PathBuf {
    if let Some(dir) = std::env::var_os(env) {
        return PathBuf::from(dir);
    }
    match preferred {
        Some(dir) if dir.is_dir() => dir.to_path_buf(),
        _ => std::env::temp_dir(),
    }
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = outputs
}
criterion_main!(benches);
