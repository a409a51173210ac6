//! The PostgreSQL sink: a WAL consumer on its own thread that turns WAL records into binary
//! COPY data, grouped per stream, and hands each group to the database thread (`io`) as one
//! delivery: one transaction with its ledger row.
//!
//! Exactly once: a delivery covers the records of one stream between `first_lsn` and
//! `last_lsn`; its ledger row commits with its rows. The checkpoint moves past a delivery
//! only when it and every earlier one committed; after a crash, replay starts after the
//! checkpoint and skips the records that a ledger row past the checkpoint already covers.
//!
//! Memory: at most `pool_size + 1` deliveries in flight and `OUTSTANDING_BYTES_MAX` bytes of
//! COPY data among them, plus one open group per stream of at most `DELIVERY_BYTES_MAX`.

mod copy;
mod io;
mod partition;
mod sql;
mod state;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;

use super::SinkProgress;
use crate::config::{PartitionBy, PostgresConfig};
use crate::pipeline;
use crate::schema::registry::Registry;
use crate::schema::types::StreamSchema;
use crate::wal::{Lsn, Wal, WalReader};
use io::{Delivery, LedgerRow, Outcome, Request};
use partition::Period;
use state::SinkState;

/// The sink's name as a WAL consumer, in `/readyz` and in metrics.
pub const NAME: &str = "postgres";
/// A group is delivered once it holds this many rows or bytes of COPY data…
const DELIVERY_ROWS_MAX: u64 = 100_000;
const DELIVERY_BYTES_MAX: usize = 8 << 20;
/// …or this long after its first record, or when the WAL has nothing new.
const DELIVERY_AGE_MAX: Duration = Duration::from_millis(200);
const OUTSTANDING_BYTES_MAX: usize = 64 << 20;
const READ_WAIT: Duration = Duration::from_millis(200);
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

pub struct PostgresSink {
    config: PostgresConfig,
    node_id: String,
    registry: Arc<Registry>,
    wal: Arc<Wal>,
    progress: Arc<SinkProgress>,
    state: SinkState,
    state_path: PathBuf,
    /// No state file yet: this data dir never delivered to PostgreSQL.
    fresh: bool,
}

/// Rows of one stream collected for the next delivery.
struct Group {
    schema: Arc<StreamSchema>,
    first_lsn: Lsn,
    last_lsn: Lsn,
    rows: u64,
    copy: Vec<u8>,
    /// Hours the rows fall in; the database side maps them to partitions.
    hours: HashSet<Period>,
    started: Instant,
}

struct InFlight {
    seq: u64,
    /// Every record up to here is in this delivery or an earlier one (or needs none).
    cover: Lsn,
    stream: Arc<str>,
    rows: u64,
    bytes: usize,
    committed: bool,
    abandoned: bool,
}

impl PostgresSink {
    /// Loads the sink's state and sets the stream counters from it; connects later, in `run`,
    /// so a database that is down does not keep the node from starting.
    pub fn open(
        config: PostgresConfig,
        node_id: String,
        registry: Arc<Registry>,
        wal: Arc<Wal>,
        state_dir: &Path,
    ) -> std::io::Result<PostgresSink> {
        let state_path = state_dir.join(format!("{NAME}.json"));
        let loaded = SinkState::load(&state_path)?;
        let fresh = loaded.is_none();
        let state = loaded.unwrap_or_default();
        for (stream, rows) in &state.delivered {
            if let Some(stream) = registry.get(stream) {
                stream.stats.delivered_postgres.store(*rows, Ordering::Relaxed);
            }
        }
        let progress = Arc::new(SinkProgress::default());
        progress.applied.store(state.checkpoint, Ordering::Relaxed);
        Ok(PostgresSink { config, node_id, registry, wal, progress, state, state_path, fresh })
    }

    pub fn progress(&self) -> Arc<SinkProgress> {
        self.progress.clone()
    }

    pub fn checkpoint_lsn(&self) -> Lsn {
        self.state.checkpoint
    }

    /// Runs until `stop` is set and everything durable in the WAL is delivered (or, with the
    /// database unreachable, left in the WAL for the next start).
    pub fn run(self, reader: WalReader, stop: Arc<AtomicBool>) {
        let outstanding_max = self.config.pool_size + 1;
        let (requests, request_receiver) = tokio::sync::mpsc::channel(outstanding_max + 1);
        let (outcome_sender, outcomes) = std::sync::mpsc::sync_channel(outstanding_max + 1);
        self.progress.health.set_degraded(true);
        let io_thread = match io::start(
            &self.config,
            &self.node_id,
            self.state.checkpoint,
            self.fresh,
            io::Links {
                progress: self.progress.clone(),
                stop: stop.clone(),
                requests: request_receiver,
                outcomes: outcome_sender,
            },
        ) {
            Ok(thread) => thread,
            Err(error) => {
                tracing::error!(sink = NAME, %error, "start the PostgreSQL sink: the WAL keeps its events");
                return;
            }
        };
        let ledger = loop {
            match outcomes.recv_timeout(Duration::from_millis(100)) {
                Ok(Outcome::Ready(ledger)) => break Some(ledger),
                Ok(Outcome::Done { .. }) => unreachable!("no delivery before start-up is done"),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !stop.load(Ordering::Acquire) => {}
                Err(_) => break None,
            }
        };
        if let Some(ledger) = ledger {
            let mut runner = Runner::new(self, reader, requests, outcomes, outstanding_max, ledger);
            runner.run(&stop);
        } else {
            drop(requests);
        }
        let _ = io_thread.join();
    }
}

/// The running sink: reads, groups, dispatches, and moves the checkpoint.
struct Runner {
    sink: PostgresSink,
    reader: WalReader,
    requests: tokio::sync::mpsc::Sender<Request>,
    outcomes: std::sync::mpsc::Receiver<Outcome>,
    outstanding_max: usize,
    groups: HashMap<Arc<str>, Group>,
    in_flight: VecDeque<InFlight>,
    next_seq: u64,
    /// Last WAL record read and placed in a group (or needing nothing).
    applied: Lsn,
    /// Records of each stream that an earlier run committed past the checkpoint.
    committed_before: HashMap<String, Vec<(Lsn, Lsn)>>,
    /// Their rows, counted into the state once the checkpoint passes them.
    counted_before: Vec<(Lsn, String, u64)>,
    saved_at: Instant,
    /// The checkpoint in the state file.
    saved: Lsn,
    pruned_at: Instant,
    pruned: Lsn,
}

impl Runner {
    fn new(
        sink: PostgresSink,
        reader: WalReader,
        requests: tokio::sync::mpsc::Sender<Request>,
        outcomes: std::sync::mpsc::Receiver<Outcome>,
        outstanding_max: usize,
        ledger: Vec<LedgerRow>,
    ) -> Runner {
        let mut committed_before: HashMap<String, Vec<(Lsn, Lsn)>> = HashMap::new();
        let mut counted_before = Vec::new();
        for row in ledger {
            if let Some(stream) = sink.registry.get(&row.stream) {
                stream.stats.delivered_postgres.fetch_add(row.rows, Ordering::Relaxed);
            }
            committed_before.entry(row.stream.clone()).or_default().push((row.first_lsn, row.last_lsn));
            counted_before.push((row.last_lsn, row.stream, row.rows));
        }
        if !counted_before.is_empty() {
            tracing::info!(
                sink = NAME,
                deliveries = counted_before.len(),
                "the ledger holds deliveries past the checkpoint: replay skips them"
            );
        }
        let applied = sink.state.checkpoint;
        Runner {
            sink,
            reader,
            requests,
            outcomes,
            outstanding_max,
            groups: HashMap::new(),
            in_flight: VecDeque::new(),
            next_seq: 0,
            applied,
            committed_before,
            counted_before,
            saved_at: Instant::now(),
            saved: applied,
            pruned_at: Instant::now(),
            pruned: 0,
        }
    }

    fn run(&mut self, stop: &AtomicBool) {
        if self.sink.fresh
            && let Err(error) = self.sink.state.save(&self.sink.state_path)
        {
            tracing::error!(sink = NAME, %error, "save the PostgreSQL sink state");
        }
        loop {
            self.take_outcomes(Duration::ZERO);
            self.advance(false);
            let stopping = stop.load(Ordering::Acquire);
            if self.outstanding() >= self.outstanding_max || self.outstanding_bytes() >= OUTSTANDING_BYTES_MAX
            {
                self.take_outcomes(Duration::from_millis(100));
                continue;
            }
            let wait = if stopping { Duration::ZERO } else { self.read_wait() };
            match self.reader.read(wait) {
                Ok(Some((lsn, payload))) => self.apply(lsn, &payload),
                Ok(None) => {
                    self.dispatch_all();
                    if stopping {
                        if self.outstanding() == 0 {
                            break;
                        }
                        self.take_outcomes(Duration::from_millis(100));
                    }
                }
                Err(error) => {
                    tracing::error!(sink = NAME, %error, "read the WAL; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                    self.reader = self.sink.wal.read_from(self.applied + 1);
                    if stopping {
                        break;
                    }
                }
            }
            self.dispatch_due();
        }
        self.advance(true);
        tracing::info!(sink = NAME, checkpoint = self.sink.state.checkpoint, "stopped");
    }

    fn read_wait(&self) -> Duration {
        let oldest = self.groups.values().map(|g| g.started).min();
        oldest.map_or(READ_WAIT, |started| {
            (started + DELIVERY_AGE_MAX)
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        })
    }

    fn outstanding(&self) -> usize {
        self.in_flight.iter().filter(|f| !f.committed && !f.abandoned).count()
    }

    fn outstanding_bytes(&self) -> usize {
        self.in_flight.iter().filter(|f| !f.committed && !f.abandoned).map(|f| f.bytes).sum()
    }

    fn apply(&mut self, lsn: Lsn, payload: &[u8]) {
        let batch = match pipeline::decode(payload) {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(sink = NAME, lsn, %error, "skipping an unreadable WAL record");
                self.applied = lsn;
                return;
            }
        };
        let header = &batch.header;
        let records = batch.records.as_ref().filter(|r| r.num_rows() > 0);
        let already = self
            .committed_before
            .get(&header.stream)
            .is_some_and(|ranges| ranges.iter().any(|(first, last)| (*first..=*last).contains(&lsn)));
        if let Some(records) = records
            && !already
        {
            let stream = self.sink.registry.get(&header.stream);
            match stream
                .as_ref()
                .and_then(|s| Some((s.name.clone(), s.schema_version(header.schema_version)?)))
            {
                Some((stream, schema)) => self.add(stream, schema, lsn, records),
                None => {
                    tracing::error!(sink = NAME, lsn, stream = %header.stream, version = header.schema_version, "skipping a batch of an unknown stream or schema version")
                }
            }
        }
        self.applied = lsn;
    }

    fn add(&mut self, stream: Arc<str>, schema: Arc<StreamSchema>, lsn: Lsn, records: &RecordBatch) {
        if self.groups.get(&stream).is_some_and(|g| g.schema.version != schema.version) {
            self.dispatch(&stream);
        }
        let group = self.groups.entry(stream.clone()).or_insert_with(|| {
            let mut copy = Vec::with_capacity(1 << 20);
            copy::write_header(&mut copy);
            Group {
                schema: schema.clone(),
                first_lsn: lsn,
                last_lsn: lsn,
                rows: 0,
                copy,
                hours: HashSet::new(),
                started: Instant::now(),
            }
        });
        copy::write_rows(&schema, records, &mut group.copy);
        group.rows += records.num_rows() as u64;
        group.last_lsn = lsn;
        let times = records.column(schema.time_index).as_primitive::<TimestampMicrosecondType>();
        group.hours.extend(times.values().iter().map(|t| partition::period_of(PartitionBy::Hour, *t)));
        if group.rows >= DELIVERY_ROWS_MAX || group.copy.len() >= DELIVERY_BYTES_MAX {
            self.dispatch(&stream);
        }
    }

    fn dispatch_due(&mut self) {
        let due: Vec<Arc<str>> = self
            .groups
            .iter()
            .filter(|(_, g)| g.started.elapsed() >= DELIVERY_AGE_MAX)
            .map(|(s, _)| s.clone())
            .collect();
        for stream in due {
            self.dispatch(&stream);
        }
    }

    fn dispatch_all(&mut self) {
        let streams: Vec<Arc<str>> = self.groups.keys().cloned().collect();
        for stream in streams {
            self.dispatch(&stream);
        }
    }

    /// Sends a stream's group to the database thread.
    fn dispatch(&mut self, stream: &Arc<str>) {
        let Some(mut group) = self.groups.remove(stream) else { return };
        copy::write_trailer(&mut group.copy);
        let cover = self.groups.values().map(|g| g.first_lsn - 1).min().unwrap_or(self.applied);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.push_back(InFlight {
            seq,
            cover,
            stream: stream.clone(),
            rows: group.rows,
            bytes: group.copy.len(),
            committed: false,
            abandoned: false,
        });
        let delivery = Delivery {
            seq,
            stream: stream.clone(),
            schema: group.schema,
            periods: group.hours,
            copy: group.copy.into(),
            first_lsn: group.first_lsn,
            last_lsn: group.last_lsn,
            rows: group.rows,
        };
        // The channel has room for every delivery allowed in flight.
        if self.requests.blocking_send(Request::Deliver(delivery)).is_err() {
            tracing::error!(sink = NAME, "the database thread has stopped");
        }
    }

    /// Takes the outcomes there are, waiting up to `wait` for the first.
    fn take_outcomes(&mut self, wait: Duration) {
        let mut next = if wait.is_zero() {
            self.outcomes.try_recv().ok()
        } else {
            self.outcomes.recv_timeout(wait).ok()
        };
        while let Some(outcome) = next {
            if let Outcome::Done { seq, committed } = outcome
                && let Some(flight) = self.in_flight.iter_mut().find(|f| f.seq == seq)
            {
                if committed {
                    flight.committed = true;
                    if let Some(stream) = self.sink.registry.get(&flight.stream) {
                        stream.stats.delivered_postgres.fetch_add(flight.rows, Ordering::Relaxed);
                    }
                } else {
                    flight.abandoned = true;
                }
            }
            next = self.outcomes.try_recv().ok();
        }
    }

    /// Moves the checkpoint past every committed delivery with nothing uncommitted before it,
    /// and saves it at most once a second (always when `force`).
    fn advance(&mut self, force: bool) {
        let state = &mut self.sink.state;
        let mut checkpoint = state.checkpoint;
        while self.in_flight.front().is_some_and(|f| f.committed) {
            let flight = self.in_flight.pop_front().expect("checked above");
            checkpoint = checkpoint.max(flight.cover);
            *state.delivered.entry(flight.stream.to_string()).or_default() += flight.rows;
        }
        if self.in_flight.is_empty() && self.groups.is_empty() {
            checkpoint = checkpoint.max(self.applied);
        }
        if checkpoint > state.checkpoint {
            state.checkpoint = checkpoint;
            self.sink.progress.applied.store(checkpoint, Ordering::Relaxed);
            self.counted_before.retain(|(last, stream, rows)| {
                let passed = *last <= checkpoint;
                if passed {
                    *state.delivered.entry(stream.clone()).or_default() += rows;
                }
                !passed
            });
            if self.counted_before.is_empty() {
                self.committed_before.clear();
            }
        }
        let unsaved = self.sink.state.checkpoint != self.saved;
        if unsaved && (force || self.saved_at.elapsed() >= CHECKPOINT_INTERVAL) {
            self.save();
        }
    }

    fn save(&mut self) {
        self.saved_at = Instant::now();
        let state = &self.sink.state;
        if let Err(error) = state.save(&self.sink.state_path) {
            tracing::error!(sink = NAME, %error, "save the PostgreSQL sink state");
            return;
        }
        self.saved = state.checkpoint;
        self.sink.wal.checkpoint(NAME, state.checkpoint);
        // Ledger rows behind the saved checkpoint are never needed again.
        if self.pruned_at.elapsed() >= PRUNE_INTERVAL && state.checkpoint > self.pruned {
            if self.requests.try_send(Request::Prune(state.checkpoint)).is_ok() {
                self.pruned = state.checkpoint;
            }
            self.pruned_at = Instant::now();
        }
    }
}
