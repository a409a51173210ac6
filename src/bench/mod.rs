//! `floodway bench`, the load generator (SPEC §8). It is a client: it talks HTTP to a target
//! and uses `schema` only to read the stream's schema and generate events valid for it.
//!
//! A run:
//! 1. Set-up: with `--create-stream`, `PUT /v1/streams/{stream}` with the reference schema
//!    (`REFERENCE_SCHEMA`; an existing stream keeps its schema); then `GET` the stream and
//!    compile its schema.
//! 2. Before the clock starts, `events` builds a pool of distinct NDJSON bodies of `--batch`
//!    events (compressed once with `--gzip`/`--zstd`), so sending builds no JSON and the
//!    generator leaves the CPU to the target.
//! 3. `--connections` tasks each hold one keep-alive connection and send on the open-loop
//!    (`--rate`) or closed-loop (`--max`) `schedule`, recording answers in a per-connection
//!    `report::Tally` and latencies in an HDR `histogram`.
//! 4. A progress line goes to stderr each second; at the deadline no new request starts,
//!    those in flight get up to `schedule::REQUEST_TIMEOUT`, and the summary is printed (the
//!    table on stdout, or on stderr with `--json`, which prints one JSON object on stdout).
//!
//! Exit status: 0 when at least one request got a 2xx answer, 1 otherwise or on a set-up error.

mod client;
mod events;
mod histogram;
mod report;
mod schedule;

use std::io::{IsTerminal, Write};
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use tokio::time::Instant;

use crate::cli::BenchArgs;
use crate::schema::parse::{parse_schema, valid_stream_name};
use client::{EventsRequest, RetryPolicy, Target};
use events::{BodyPool, Encoding, Generator};
use report::{Summary, Tally};
use schedule::{Load, Mode, Schedule};

/// The reference schema of SPEC §3 (`schemas/bench.json`), created by `--create-stream`.
pub const REFERENCE_SCHEMA: &str = r#"{
  "fields": [
    {"name": "ts",         "type": "timestamp"},
    {"name": "service",    "type": "string", "max_length": 128},
    {"name": "host",       "type": "string", "max_length": 128},
    {"name": "level",      "type": "enum", "values": ["debug", "info", "warn", "error"]},
    {"name": "latency_ms", "type": "float64", "min": 0},
    {"name": "status",     "type": "int32", "min": 100, "max": 599},
    {"name": "bytes",      "type": "int64", "min": 0},
    {"name": "trace_id",   "type": "string", "pattern": "^[0-9a-f]{32}$"},
    {"name": "msg",        "type": "string", "nullable": true}
  ],
  "time_field": "ts",
  "unknown_fields": "reject",
  "on_invalid": "reject_line"
}
"#;

/// Timeout of each set-up request.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the progress line is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Most runtime threads: a few are plenty to keep the connections busy, and every thread
/// more is CPU the target on the same machine does not get.
const THREADS_MAX: usize = 4;
/// Extra time, past the deadline and the request timeout, before stragglers are abandoned.
const FINISH_SLACK: Duration = Duration::from_secs(2);

/// Settings of a run, checked.
struct Plan {
    target: Target,
    stream: String,
    mode: Mode,
    duration: Duration,
    connections: u32,
    batch: u32,
    encoding: Encoding,
    create_stream: bool,
    token: Option<String>,
    idempotency_keys: bool,
    retries: u32,
    json: bool,
}

impl Plan {
    fn from_args(args: BenchArgs) -> anyhow::Result<Plan> {
        let target = Target::parse(&args.target)?;
        if !valid_stream_name(&args.stream) {
            anyhow::bail!("--stream \"{}\" is not a stream name (^[a-z][a-z0-9_]{{0,62}}$)", args.stream);
        }
        if args.duration.is_zero() {
            anyhow::bail!("--duration must be longer than zero");
        }
        let mode = match (args.rate, args.max) {
            (Some(events_per_second), false) => Mode::Open { events_per_second },
            (None, true) => Mode::Closed,
            _ => anyhow::bail!("give exactly one of --rate N and --max"),
        };
        let encoding = match (args.gzip, args.zstd) {
            (false, false) => Encoding::Identity,
            (true, false) => Encoding::Gzip,
            (false, true) => Encoding::Zstd,
            (true, true) => anyhow::bail!("give at most one of --gzip and --zstd"),
        };
        Ok(Plan {
            target,
            stream: args.stream,
            mode,
            duration: args.duration,
            connections: args.connections,
            batch: args.batch,
            encoding,
            create_stream: args.create_stream,
            token: args.token,
            idempotency_keys: args.idempotency_keys,
            retries: args.retries,
            json: args.json,
        })
    }

    fn describe(&self) -> String {
        let mode = match self.mode {
            Mode::Open { events_per_second } => format!("open loop at {events_per_second} events/s"),
            Mode::Closed => "closed loop (--max)".to_owned(),
        };
        format!(
            "{} stream {}: {mode}, {} connections, {} events per request, {}, {}",
            self.target.url,
            self.stream,
            self.connections,
            self.batch,
            self.encoding.name(),
            humantime::format_duration(self.duration)
        )
    }
}

pub fn run(args: BenchArgs) -> ExitCode {
    match run_bench(args) {
        Ok(summary) if summary.tally.succeeded() > 0 => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("floodway bench: no request succeeded");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("floodway bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_bench(args: BenchArgs) -> anyhow::Result<Summary> {
    let plan = Plan::from_args(args)?;
    let cores = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    let threads = cores.get().min(THREADS_MAX).min(plan.connections as usize).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .thread_name("floodway-bench")
        .build()
        .context("start the async runtime")?;

    let schema_json = runtime.block_on(read_schema(&plan))?;
    let schema = parse_schema(&schema_json, 1)
        .map_err(|e| anyhow::anyhow!("the schema of stream \"{}\" does not parse: {e}", plan.stream))?;
    let now_micros = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    let generator = Generator::new(&schema, now_micros)
        .with_context(|| format!("generate events for stream \"{}\"", plan.stream))?;

    let prepare_start = std::time::Instant::now();
    let seed = random_u64()?;
    let pool = BodyPool::build(&generator, seed, plan.batch, plan.encoding, cores)
        .context("prepare request bodies")?;
    let events = u64::from(plan.batch) * pool.len() as u64;
    eprintln!(
        "floodway bench: {}\n  prepared {} bodies in {:.2} s: {:.0} bytes per event, {:.0} KB per body on the wire",
        plan.describe(),
        pool.len(),
        prepare_start.elapsed().as_secs_f64(),
        pool.raw_bytes() as f64 / events as f64,
        pool.wire_bytes() as f64 / pool.len() as f64 / 1e3,
    );

    let summary = runtime.block_on(drive(&plan, pool))?;
    let table = summary.table();
    if plan.json {
        eprint!("{table}");
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", summary.to_json()).context("write the JSON summary")?;
    } else {
        print!("{table}");
    }
    Ok(summary)
}

/// The stream's schema JSON, after creating the stream when asked.
async fn read_schema(plan: &Plan) -> anyhow::Result<Vec<u8>> {
    let path = plan.target.path(&format!("/v1/streams/{}", plan.stream));
    let token = plan.token.as_deref();
    let target = &plan.target;
    if plan.create_stream {
        let body = Bytes::from_static(REFERENCE_SCHEMA.as_bytes());
        let answer = client::exchange_once(target, Method::PUT, &path, Some(body), token, SETUP_TIMEOUT)
            .await
            .with_context(|| format!("create stream \"{}\" on {}", plan.stream, target.url))?;
        match answer.status {
            StatusCode::OK | StatusCode::CREATED => {}
            StatusCode::CONFLICT => eprintln!(
                "floodway bench: stream \"{}\" exists with another schema; generating events for that one",
                plan.stream
            ),
            status => anyhow::bail!(
                "create stream \"{}\": the target answered {status}: {}",
                plan.stream,
                answer.body_excerpt()
            ),
        }
    }
    let answer = client::exchange_once(target, Method::GET, &path, None, token, SETUP_TIMEOUT)
        .await
        .with_context(|| format!("read stream \"{}\" from {}", plan.stream, target.url))?;
    match answer.status {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => anyhow::bail!(
            "stream \"{}\" does not exist on {}: create it first, or pass --create-stream",
            plan.stream,
            target.url
        ),
        status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => anyhow::bail!(
            "read stream \"{}\": the target answered {status} (the bench reads the stream's schema: \
             the token needs the read scope): {}",
            plan.stream,
            answer.body_excerpt()
        ),
        status => {
            anyhow::bail!(
                "read stream \"{}\": the target answered {status}: {}",
                plan.stream,
                answer.body_excerpt()
            )
        }
    }
    let description: serde_json::Value =
        serde_json::from_slice(&answer.body).context("the stream description is not JSON")?;
    let schema = description.get("schema").context("the stream description has no \"schema\"")?;
    Ok(serde_json::to_vec(schema)?)
}

/// Sends until the deadline and returns what was measured.
async fn drive(plan: &Plan, pool: BodyPool) -> anyhow::Result<Summary> {
    let request = EventsRequest::new(
        &plan.target,
        &plan.stream,
        plan.token.as_deref(),
        plan.encoding.content_encoding(),
    )?;
    let idempotency_prefix =
        if plan.idempotency_keys { Some(format!("bench-{:016x}-", random_u64()?)) } else { None };
    let cpu_before = report::process_cpu_seconds();
    let start = Instant::now();
    let load = Arc::new(Load {
        schedule: Schedule::new(plan.mode, plan.batch, plan.connections),
        pool,
        target: plan.target.clone(),
        request,
        retry: RetryPolicy { retries: plan.retries },
        idempotency_prefix,
        start,
        deadline: start + plan.duration,
        tallies: (0..plan.connections).map(|_| Mutex::new(Tally::default())).collect(),
    });
    let workers: Vec<_> =
        (0..plan.connections).map(|c| tokio::spawn(schedule::drive_connection(load.clone(), c))).collect();
    let progress = tokio::spawn(show_progress(load.clone()));

    // Every worker stops by the deadline plus one request timeout (and a retry pause);
    // past that, whatever still runs is abandoned rather than waited for.
    let give_up = load.deadline + schedule::REQUEST_TIMEOUT + FINISH_SLACK;
    let mut abandoned = 0;
    for worker in workers {
        let abort = worker.abort_handle();
        if tokio::time::timeout_at(give_up, worker).await.is_err() {
            abort.abort();
            abandoned += 1;
        }
    }
    progress.abort();
    let cpu_after = report::process_cpu_seconds();
    if abandoned > 0 {
        eprintln!("floodway bench: {abandoned} connections were still busy after the request timeout");
    }
    if std::io::stderr().is_terminal() {
        eprintln!();
    }

    let tally = merged(&load);
    let end = tally.last_activity.map_or(load.deadline, |last| last.max(load.deadline));
    let duration = end.saturating_duration_since(start);
    let unsent =
        load.schedule.requests_due_before(plan.duration).map(|due| due.saturating_sub(tally.requests_sent));
    let cpu_seconds = cpu_before.zip(cpu_after).map(|(before, after)| (after - before).max(0.0));
    Ok(Summary { tally, duration, cpu_seconds, unsent })
}

fn merged(load: &Load) -> Tally {
    let mut total = Tally::default();
    for tally in &load.tallies {
        total.add(&tally.lock().unwrap_or_else(PoisonError::into_inner));
    }
    total
}

/// Once a second: accepted events/s over the last second, p99 so far, errors so far.
async fn show_progress(load: Arc<Load>) {
    let terminal = std::io::stderr().is_terminal();
    let mut ticker = tokio::time::interval_at(load.start + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
    let mut accepted_before = 0u64;
    let mut at_before = load.start;
    // Bounded by the run: the task is aborted when the workers are done.
    loop {
        let now = ticker.tick().await;
        let total = merged(&load);
        let seconds = now.saturating_duration_since(at_before).as_secs_f64().max(f64::MIN_POSITIVE);
        let rate = total.events_accepted.saturating_sub(accepted_before) as f64 / seconds;
        (accepted_before, at_before) = (total.events_accepted, now);
        let line = report::progress_line(now.saturating_duration_since(load.start), rate, &total);
        // A terminal gets one line rewritten in place; a log or pipe gets one line per second.
        if terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

fn random_u64() -> anyhow::Result<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("read random bytes: {e}"))?;
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_schema_parses_and_matches_the_spec() {
        let schema = parse_schema(REFERENCE_SCHEMA.as_bytes(), 1).expect("the reference schema is valid");
        let names: Vec<&str> = schema.fields.iter().map(|f| f.name.as_ref()).collect();
        assert_eq!(
            names,
            ["ts", "service", "host", "level", "latency_ms", "status", "bytes", "trace_id", "msg"]
        );
        assert_eq!(schema.time_field().name.as_ref(), "ts");
    }
}
