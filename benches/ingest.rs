//! The CPU of one ingestion request, without HTTP: decode + validate + append to Arrow columns
//! (`schema::decode::decode_body`, as `ingest` calls it), and the same followed by the WAL
//! payload encoding (`pipeline::encode`), for bodies of 1,000 events of the reference schema.
//!
//! `cargo bench --bench ingest`; figures and how to read them: benches/README.md.

mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use floodway::pipeline::{self, Batch, Counts, Header};
use floodway::schema::decode::{BodyFormat, DecodeScratch, decode_body};

fn ingest(c: &mut Criterion) {
    let schema = common::reference_schema();
    let bodies = common::bodies();
    let mut scratch = DecodeScratch::default();
    for body in &bodies {
        common::decode(&schema, body, &mut scratch);
    }
    let bytes = common::total_bytes(&bodies);
    let events = bodies.len() * common::EVENTS_PER_BODY;
    eprintln!(
        "ingest: {} distinct bodies of {} events, {:.1} bytes/event as NDJSON",
        bodies.len(),
        common::EVENTS_PER_BODY,
        bytes as f64 / events as f64
    );

    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::ElementsAndBytes {
        elements: common::EVENTS_PER_BODY as u64,
        bytes: (bytes / bodies.len()) as u64,
    });

    group.bench_function("decode_1000", |b| {
        let mut next = 0;
        b.iter(|| {
            let body = &bodies[next % bodies.len()];
            next += 1;
            decode_body(&schema, black_box(body), BodyFormat::Ndjson, &mut scratch).expect("readable")
        })
    });

    group.bench_function("decode_and_wal_encode_1000", |b| {
        let mut next = 0;
        b.iter(|| {
            let body = &bodies[next % bodies.len()];
            next += 1;
            let decoded =
                decode_body(&schema, black_box(body), BodyFormat::Ndjson, &mut scratch).expect("readable");
            let header = Header {
                stream: "bench".to_owned(),
                schema_version: schema.version,
                received_at_micros: 1_780_000_000_000_000,
                counts: Counts {
                    accepted: decoded.accepted(),
                    invalid: decoded.invalid,
                    dead_lettered: false,
                },
                answer: None,
            };
            let batch = Batch { header, records: Some(decoded.records), dead_letters: decoded.dead_letters };
            // The capacity `ingest` reserves for the payload.
            let mut payload = Vec::with_capacity(body.len() / 3 + 256);
            pipeline::encode(&batch, &mut payload).expect("encodes");
            payload
        })
    });

    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = ingest
}
criterion_main!(benches);
