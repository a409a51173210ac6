//! The database side of the sink: its own thread with a small async runtime, a connection
//! pool, and `pool_size` workers that each commit one prepared delivery at a time.
//!
//! A delivery is one transaction: a shared advisory lock of this node, the ledger row
//! `(node_id, stream, first_lsn)` inserted first (`ON CONFLICT DO NOTHING`), then the rows by
//! binary COPY, then COMMIT. If the ledger row is already there, an earlier attempt committed
//! (its COMMIT answer was lost) and this one rolls back. A failed attempt is retried with
//! capped exponential backoff and jitter until it commits; meanwhile the WAL keeps the data.
//!
//! Start-up takes the node's advisory lock exclusively once, which waits for any transaction
//! of an earlier run of this node still in flight, then reads the ledger past the checkpoint.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::partition::{self, Period};
use super::sql;
use super::{NAME, SinkProgress};
use crate::config::{PartitionBy, PostgresConfig};
use crate::schema::types::StreamSchema;
use crate::sinks::Backoff;
use crate::wal::Lsn;

/// After the stop signal, how long failing deliveries are still retried (all together) before
/// they are left to the WAL for the next run.
const STOP_RETRY_WINDOW: Duration = Duration::from_secs(5);
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Rows of one stream from a range of WAL records, ready to COPY.
pub struct Delivery {
    pub seq: u64,
    pub stream: Arc<str>,
    pub schema: Arc<StreamSchema>,
    /// Periods the rows fall in: their partitions must exist before the COPY.
    pub periods: HashSet<Period>,
    /// Binary COPY data, header and trailer included.
    pub copy: Bytes,
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
    pub rows: u64,
}

pub enum Request {
    Deliver(Delivery),
    /// Ledger rows of this node ending at or before this LSN are no longer needed.
    Prune(Lsn),
}

/// A delivery of an earlier run found in the ledger past the checkpoint.
pub struct LedgerRow {
    pub stream: String,
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
    pub rows: u64,
}

pub enum Outcome {
    /// Start-up is done: the ledger's rows past the checkpoint.
    Ready(Vec<LedgerRow>),
    /// `committed` is false when the delivery was given up at shutdown.
    Done { seq: u64, committed: bool },
}

#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error("{}", with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("no database connection: {}", with_causes(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("{0}")]
    Refused(String),
}

/// An error and its causes, `: `-separated: "error connecting to server" alone does not say
/// that the connection was refused. The causes never hold the password.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

/// What is known to exist in the database, so DDL is sent once.
#[derive(Default)]
struct TableCache {
    /// Highest schema version whose columns the table has.
    version: u32,
    partition_by: Option<PartitionBy>,
    /// Partition names known to exist, or known to be impossible (their rows go to the
    /// default partition).
    partitions: HashSet<String>,
}

struct Shared {
    pool: Pool,
    schema: String,
    node_id: String,
    partition_by: PartitionBy,
    lock_key: i64,
    tables: Mutex<HashMap<Arc<str>, TableCache>>,
    /// One DDL change at a time from this process.
    ddl: tokio::sync::Mutex<()>,
    progress: Arc<SinkProgress>,
    stop: Arc<AtomicBool>,
    /// When a failing delivery first met the stop signal: one retry window for them all.
    stop_seen: std::sync::OnceLock<Instant>,
}

/// What ties the database thread to the sink thread.
pub struct Links {
    pub progress: Arc<SinkProgress>,
    pub stop: Arc<AtomicBool>,
    pub requests: mpsc::Receiver<Request>,
    pub outcomes: std::sync::mpsc::SyncSender<Outcome>,
}

/// Starts the database thread. It sets up, sends `Outcome::Ready`, then serves `requests`
/// until the sender is dropped.
pub fn start(
    config: &PostgresConfig,
    node_id: &str,
    checkpoint: Lsn,
    fresh: bool,
    links: Links,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let Links { progress, stop, requests, outcomes } = links;
    let recycling = ManagerConfig { recycling_method: RecyclingMethod::Fast };
    let manager = match &config.tls_ca_file {
        None => Manager::from_config(config.connection.clone(), NoTls, recycling),
        Some(ca_file) => {
            let tls = crate::tls::client_config(ca_file).map_err(std::io::Error::other)?;
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
            Manager::from_config(config.connection.clone(), connector, recycling)
        }
    };
    let pool = Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(std::io::Error::other)?;
    let shared = Arc::new(Shared {
        pool,
        schema: config.schema.clone(),
        node_id: node_id.to_owned(),
        partition_by: config.partition,
        lock_key: lock_key(node_id),
        tables: Mutex::default(),
        ddl: tokio::sync::Mutex::new(()),
        progress,
        stop,
        stop_seen: std::sync::OnceLock::new(),
    });
    let workers = config.pool_size;
    std::thread::Builder::new().name("postgres-io".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        match runtime {
            Ok(runtime) => runtime.block_on(serve(shared, workers, checkpoint, fresh, requests, outcomes)),
            Err(error) => tracing::error!(sink = NAME, %error, "start the database runtime"),
        }
    })
}

/// The advisory lock key of a node: the first 8 bytes of a SHA-256 of its id.
fn lock_key(node_id: &str) -> i64 {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(format!("floodway node {node_id}").as_bytes());
    i64::from_be_bytes(hash[..8].try_into().expect("8 bytes"))
}

async fn serve(
    shared: Arc<Shared>,
    workers: usize,
    checkpoint: Lsn,
    fresh: bool,
    requests: mpsc::Receiver<Request>,
    outcomes: std::sync::mpsc::SyncSender<Outcome>,
) {
    let mut pause = Backoff::default();
    let ledger = loop {
        match set_up(&shared, checkpoint, fresh).await {
            Ok(rows) => break rows,
            Err(error) => {
                shared.progress.health.set_degraded(true);
                let retry_in = pause.next_pause();
                tracing::error!(sink = NAME, %error, retry_in_ms = retry_in.as_millis() as u64, "connect to PostgreSQL");
                if shared.stop.load(Ordering::Acquire) {
                    return;
                }
                tokio::time::sleep(retry_in).await;
            }
        }
    };
    shared.progress.health.set_degraded(false);
    tracing::info!(sink = NAME, schema = %shared.schema, "connected to PostgreSQL");
    if outcomes.send(Outcome::Ready(ledger)).is_err() {
        return;
    }
    let requests = Arc::new(tokio::sync::Mutex::new(requests));
    let tasks: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(work(shared.clone(), requests.clone(), outcomes.clone())))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    shared.pool.close();
}

async fn set_up(shared: &Shared, checkpoint: Lsn, fresh: bool) -> Result<Vec<LedgerRow>, DbError> {
    let client = shared.pool.get().await?;
    let schema = &shared.schema;
    let exists: bool = client.query_one(sql::SCHEMA_EXISTS, &[schema]).await?.get(0);
    if !exists {
        client.batch_execute(&sql::create_schema(schema)).await.or_else(already_exists)?;
    }
    client.batch_execute(&sql::create_ledger(schema)).await.or_else(already_exists)?;
    if fresh {
        let used: bool = client.query_one(&sql::any_ledger_row(schema), &[&shared.node_id]).await?.get(0);
        if used {
            return Err(DbError::Refused(format!(
                "the ledger in schema \"{schema}\" already holds deliveries of node \"{}\" but this data dir \
                 has no PostgreSQL sink state: give this node another server.node_id, or delete that \
                 node's rows from {} if its data is gone",
                shared.node_id,
                sql::LEDGER_TABLE
            )));
        }
    }
    // Waits for the transactions of an earlier run of this node that may still be committing.
    client.execute("SELECT pg_advisory_lock($1)", &[&shared.lock_key]).await?;
    client.execute("SELECT pg_advisory_unlock($1)", &[&shared.lock_key]).await?;
    let checkpoint = i64::try_from(checkpoint).unwrap_or(i64::MAX);
    let rows = client.query(&sql::select_ledger(schema), &[&shared.node_id, &checkpoint]).await?;
    Ok(rows
        .iter()
        .map(|row| LedgerRow {
            stream: row.get(0),
            first_lsn: row.get::<_, i64>(1) as Lsn,
            last_lsn: row.get::<_, i64>(2) as Lsn,
            rows: row.get::<_, i64>(3) as u64,
        })
        .collect())
}

async fn work(
    shared: Arc<Shared>,
    requests: Arc<tokio::sync::Mutex<mpsc::Receiver<Request>>>,
    outcomes: std::sync::mpsc::SyncSender<Outcome>,
) {
    loop {
        let request = requests.lock().await.recv().await;
        match request {
            None => return,
            Some(Request::Prune(lsn)) => {
                if let Err(error) = prune(&shared, lsn).await {
                    tracing::debug!(sink = NAME, %error, "prune the ledger");
                }
            }
            Some(Request::Deliver(delivery)) => {
                let committed = deliver_until_committed(&shared, &delivery).await;
                // The sink thread keeps room for every outcome of the deliveries it sent.
                let _ = outcomes.try_send(Outcome::Done { seq: delivery.seq, committed });
            }
        }
    }
}

async fn deliver_until_committed(shared: &Shared, delivery: &Delivery) -> bool {
    let mut pause = Backoff::default();
    loop {
        match deliver(shared, delivery).await {
            Ok(()) => {
                shared.progress.health.set_degraded(false);
                return true;
            }
            Err(error) => {
                shared.progress.health.set_degraded(true);
                if shared.stop.load(Ordering::Acquire) {
                    let since = *shared.stop_seen.get_or_init(Instant::now);
                    if since.elapsed() >= STOP_RETRY_WINDOW {
                        tracing::warn!(sink = NAME, %error, stream = %delivery.stream, "stopping: this delivery waits in the WAL for the next start");
                        return false;
                    }
                }
                let retry_in = pause.next_pause();
                tracing::error!(sink = NAME, %error, stream = %delivery.stream, first_lsn = delivery.first_lsn, retry_in_ms = retry_in.as_millis() as u64, "delivery failed");
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

async fn deliver(shared: &Shared, delivery: &Delivery) -> Result<(), DbError> {
    let mut client = shared.pool.get().await?;
    prepare_table(shared, &client, delivery).await?;
    let transaction = client.transaction().await?;
    transaction.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&shared.lock_key]).await?;
    let first = i64::try_from(delivery.first_lsn).unwrap_or(i64::MAX);
    let last = i64::try_from(delivery.last_lsn).unwrap_or(i64::MAX);
    let rows = i64::try_from(delivery.rows).unwrap_or(i64::MAX);
    let stream: &str = &delivery.stream;
    let inserted = transaction
        .execute(&sql::insert_ledger(&shared.schema), &[&shared.node_id, &stream, &first, &last, &rows])
        .await?;
    if inserted == 0 {
        tracing::info!(
            sink = NAME,
            stream,
            first_lsn = delivery.first_lsn,
            "already committed by an earlier attempt"
        );
        transaction.rollback().await?;
        return Ok(());
    }
    let copy = sql::copy_in(&shared.schema, stream, &delivery.schema);
    let sink = transaction.copy_in(&copy).await?;
    futures_util::pin_mut!(sink);
    sink.send(delivery.copy.clone()).await?;
    sink.finish().await?;
    transaction.commit().await?;
    Ok(())
}

/// Makes sure the stream's table has this schema version's columns and the partitions the
/// rows need, plus those of the current and the next period (created ahead of need).
async fn prepare_table(
    shared: &Shared,
    client: &deadpool_postgres::Client,
    delivery: &Delivery,
) -> Result<(), DbError> {
    let stream = &delivery.stream;
    let now = crate::ingest::idempotency::now_micros();
    let needed = |cache: &TableCache| -> Option<(PartitionBy, BTreeSet<Period>)> {
        let by = cache.partition_by?;
        let current = partition::period_of(by, now);
        let mut periods: BTreeSet<Period> =
            delivery.periods.iter().map(|p| partition::period_of(by, p.start)).collect();
        periods.extend([current, partition::next(by, current)]);
        periods.retain(|p| !cache.partitions.contains(&partition::partition_name(stream, by, *p)));
        Some((by, periods))
    };
    {
        let tables = shared.tables.lock().expect("table cache lock is never poisoned");
        if let Some(cache) = tables.get(stream)
            && cache.version >= delivery.schema.version
            && needed(cache).is_some_and(|(_, periods)| periods.is_empty())
        {
            return Ok(());
        }
    }
    let _ddl = shared.ddl.lock().await;
    let mut cache = shared.tables.lock().expect("never poisoned").remove(stream).unwrap_or_default();
    let result = async {
        if cache.version < delivery.schema.version || cache.partition_by.is_none() {
            ensure_columns(shared, client, stream, &delivery.schema, &mut cache).await?;
        }
        let (by, periods) = needed(&cache).expect("set by ensure_columns");
        for period in periods {
            let name = partition::partition_name(stream, by, period);
            let statement = sql::create_partition(&shared.schema, stream, by, period);
            match client.batch_execute(&statement).await {
                Ok(()) => {}
                // Rows of this period are already in the default partition (they arrived when
                // a partition could not be made): new ones go there too.
                Err(e) if e.code() == Some(&SqlState::CHECK_VIOLATION) => {
                    tracing::warn!(sink = NAME, stream = %stream, partition = %name, "rows of this period stay in the default partition");
                }
                // A partition made otherwise (by hand, or with another `partition` setting)
                // already covers part of the period: rows go where it routes them.
                Err(e) if e.code() == Some(&SqlState::INVALID_OBJECT_DEFINITION) => {
                    tracing::warn!(sink = NAME, stream = %stream, partition = %name, error = %with_causes(&e), "another partition covers part of this period");
                }
                Err(e) => already_exists(e)?,
            }
            cache.partitions.insert(name);
        }
        Ok::<(), DbError>(())
    }
    .await;
    shared.tables.lock().expect("never poisoned").insert(stream.clone(), cache);
    result
}

/// Creates the table, or adds the columns a newer schema version brought; checks the types
/// of the columns that are there.
async fn ensure_columns(
    shared: &Shared,
    client: &deadpool_postgres::Client,
    stream: &str,
    schema: &StreamSchema,
    cache: &mut TableCache,
) -> Result<(), DbError> {
    let pg_schema = &shared.schema;
    let mut found = client.query_opt(sql::FIND_TABLE, &[pg_schema, &stream]).await?;
    if found.is_none() {
        for statement in sql::create_table(pg_schema, stream, schema, shared.partition_by) {
            client.batch_execute(&statement).await.or_else(already_exists)?;
        }
        tracing::info!(sink = NAME, stream, table = %sql::table(pg_schema, stream), partition = shared.partition_by.name(), "created the table");
        found = client.query_opt(sql::FIND_TABLE, &[pg_schema, &stream]).await?;
    }
    let Some(found) = found else {
        return Err(DbError::Refused(format!(
            "table {} vanished while being created",
            sql::table(pg_schema, stream)
        )));
    };
    let oid: u32 = found.get(0);
    let comment: Option<String> = found.get(1);
    let by = comment.as_deref().and_then(sql::partition_by_from_comment).unwrap_or(shared.partition_by);
    if by != shared.partition_by && cache.partition_by.is_none() {
        tracing::warn!(
            sink = NAME,
            stream,
            table_partition = by.name(),
            configured = shared.partition_by.name(),
            "the table keeps the partitioning it was created with"
        );
    }
    let existing: HashMap<String, String> =
        client.query(sql::TABLE_COLUMNS, &[&oid]).await?.iter().map(|row| (row.get(0), row.get(1))).collect();
    for (name, sql_type) in sql::columns(schema) {
        match existing.get(&name) {
            Some(found) if *found == sql_type => {}
            Some(found) => {
                return Err(DbError::Refused(format!(
                    "column \"{name}\" of {} is {found}, but the stream's schema needs {sql_type}",
                    sql::table(pg_schema, stream)
                )));
            }
            None => {
                let definition = sql::column_definition(schema, &name);
                client.batch_execute(&sql::add_column(pg_schema, stream, &definition)).await?;
                tracing::info!(sink = NAME, stream, column = %name, "added a column");
            }
        }
    }
    let partitions = client.query(sql::TABLE_PARTITIONS, &[&oid]).await?;
    cache.partitions.extend(partitions.iter().map(|row| row.get::<_, String>(0)));
    cache.partition_by = Some(by);
    cache.version = schema.version;
    Ok(())
}

async fn prune(shared: &Shared, lsn: Lsn) -> Result<(), DbError> {
    let client = shared.pool.get().await?;
    let lsn = i64::try_from(lsn).unwrap_or(i64::MAX);
    client.execute(&sql::prune_ledger(&shared.schema), &[&shared.node_id, &lsn]).await?;
    Ok(())
}

/// `CREATE ... IF NOT EXISTS` can still fail when another node creates the same object at the
/// same moment; the object exists then, which is all that was asked.
fn already_exists(error: tokio_postgres::Error) -> Result<(), DbError> {
    match error.code() {
        Some(code)
            if *code == SqlState::DUPLICATE_TABLE
                || *code == SqlState::UNIQUE_VIOLATION
                || *code == SqlState::DUPLICATE_SCHEMA
                || *code == SqlState::DUPLICATE_OBJECT =>
        {
            Ok(())
        }
        _ => Err(error.into()),
    }
}
