//! Start-up and shut-down. Start: config → data dir → stream catalog → sinks → HTTP listener
//! → ready. Stop (SIGTERM/SIGINT): not ready at once, new requests 503 during
//! `server.drain_timeout`, listener closed, requests in flight finished, every sink flushed,
//! counters saved, exit 0.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::auth::{self, KeyStore, Scope};
use crate::budget::MemoryBudget;
use crate::cli::{CheckArgs, Cli, Command, KeysArgs, KeysCommand, LogFormat, ScopeArg, ServeArgs};
use crate::config::{Config, ConfigError, Overrides, valid_node_id};
use crate::http::{AppState, Status};
use crate::ingest::Ingestor;
use crate::ingest::idempotency::IdempotencyTable;
use crate::ingest::journal;
use crate::metrics::HttpMetrics;
use crate::schema::parse::{parse_schema, valid_stream_name};
use crate::schema::registry::Registry;
use crate::sinks::SinkProgress;
use crate::sinks::parquet::{self, ParquetSink};
use crate::sinks::postgres::{self, PostgresSink};
use crate::wal::{Lsn, SEGMENT_BYTES_TARGET, Wal, WalOptions};
use crate::{durable, http};

const NODE_ID_FILE: &str = "node_id";
const LOCK_FILE: &str = "floodway.lock";
const WAL_DIR: &str = "wal";
const SINK_STATE_DIR: &str = "sinks";
/// How long the sinks get at shutdown to deliver what the WAL holds; the rest waits there.
const CONSUMERS_STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(cli: Cli) -> ExitCode {
    crate::tls::install_default_provider();
    match cli.command {
        Command::Check(args) => check(args),
        Command::Serve(args) => serve(args),
        Command::Bench(args) => crate::bench::run(args),
        Command::Keys(args) => keys(args),
    }
}

fn keys(args: KeysArgs) -> ExitCode {
    let overrides = Overrides { bind: None, data_dir: args.data_dir.clone() };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("floodway: {error}");
            return ExitCode::FAILURE;
        }
    };
    let path = &config.auth.keys_file;
    let outcome = match args.command {
        KeysCommand::Create { name, streams, scopes, rate_limit } => {
            let scopes = scopes
                .iter()
                .map(|s| match s {
                    ScopeArg::Write => Scope::Write,
                    ScopeArg::Read => Scope::Read,
                    ScopeArg::Admin => Scope::Admin,
                })
                .collect();
            auth::create(path, &name, scopes, streams, rate_limit).map(|token| {
                println!("{token}");
                eprintln!("key \"{name}\" created in {}; the token above is shown only once", path.display());
            })
        }
        KeysCommand::List => auth::list(path).map(|keys| {
            println!("{:<24} {:<18} {:<24} {:<10} CREATED", "NAME", "SCOPES", "STREAMS", "RATE");
            for key in keys {
                let scopes: Vec<String> =
                    key.scopes.iter().map(|s| format!("{s:?}").to_lowercase()).collect();
                let streams = key.streams.as_ref().map_or("*".to_owned(), |s| s.join(","));
                let rate = key.rate_limit.map_or("-".to_owned(), |r| r.to_string());
                println!(
                    "{:<24} {:<18} {:<24} {:<10} {}",
                    key.name,
                    scopes.join(","),
                    streams,
                    rate,
                    key.created_at
                );
            }
        }),
        KeysCommand::Revoke { name } => {
            auth::revoke(path, &name).map(|()| eprintln!("key \"{name}\" revoked"))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("floodway: {error}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: CheckArgs) -> ExitCode {
    let loaded = Config::load(args.config.as_deref(), &Overrides::default())
        .and_then(|config| read_declared_streams(&config).map(|streams| (config, streams)));
    match loaded {
        Ok((config, streams)) => {
            let label = config.file.as_ref().map_or("defaults".into(), |f| f.display().to_string());
            println!("{label}: ok ({} streams declared)", streams.len());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("floodway: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A stream declared in the config, with its schema file read and checked.
struct DeclaredStream {
    name: String,
    schema_json: Vec<u8>,
}

fn read_declared_streams(config: &Config) -> Result<Vec<DeclaredStream>, ConfigError> {
    let mut streams = Vec::new();
    for (index, declaration) in config.streams.iter().enumerate() {
        if !valid_stream_name(&declaration.name) {
            return Err(config.error(
                &format!("streams[{index}].name"),
                format!(
                    "invalid stream name \"{}\": it must match ^[a-z][a-z0-9_]{{0,62}}$",
                    declaration.name
                ),
            ));
        }
        let file = declaration.schema_file.display().to_string();
        let schema_json = std::fs::read(&declaration.schema_file).map_err(|e| {
            config.error(&format!("streams[{index}].schema_file"), format!("cannot read {file}: {e}"))
        })?;
        parse_schema(&schema_json, 1).map_err(|e| {
            let key = e.field.as_ref().map_or("schema".to_owned(), |f| format!("field \"{f}\""));
            ConfigError::new(&file, key, e.problem.clone())
        })?;
        streams.push(DeclaredStream { name: declaration.name.clone(), schema_json });
    }
    Ok(streams)
}

fn serve(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format, args.log_level.as_deref());
    let overrides = Overrides { bind: args.bind.clone(), data_dir: args.data_dir.clone() };
    let prepared = Config::load(args.config.as_deref(), &overrides)
        .and_then(|config| read_declared_streams(&config).map(|streams| (config, streams)));
    let (config, streams) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            eprintln!("floodway: {error}");
            return ExitCode::FAILURE;
        }
    };
    let keys = match KeyStore::open(&config.auth.keys_file) {
        Ok(keys) => Arc::new(keys),
        Err(error) => {
            eprintln!("floodway: auth.keys_file: {error}");
            return ExitCode::FAILURE;
        }
    };
    let exposed = !config.server.bind.ip().is_loopback() && !args.insecure_no_auth;
    if exposed {
        keys.require_keys();
    }
    if exposed && keys.is_empty() {
        eprintln!(
            "floodway: refusing to listen on {} without API keys: anyone who can reach it could write \
             and alter streams. Create a key with `floodway keys create --name NAME`, listen on a \
             loopback address, or pass --insecure-no-auth if another layer protects it.",
            config.server.bind
        );
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("floodway-worker")
        .build()
        .expect("the async runtime starts");
    let outcome = runtime.block_on(serve_until_stopped(config, streams, keys));
    // A sink still delivering after its time at shutdown is joined by a blocking task:
    // exit without waiting for it. The WAL keeps what it has not delivered.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("floodway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_until_stopped(
    config: Config,
    streams: Vec<DeclaredStream>,
    keys: Arc<KeyStore>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let data_dir = config.server.data_dir.clone();
    durable::create_dir_all(&data_dir).with_context(|| format!("create data dir {}", data_dir.display()))?;
    let _lock = lock_data_dir(&data_dir)?;
    let node_id = node_id(&data_dir, &config.server.node_id)?;

    let registry = Arc::new(Registry::open(&data_dir).context("open the stream catalog")?);
    for stream in &streams {
        registry
            .put(&stream.name, &stream.schema_json)
            .map_err(|e| config.error("streams", format!("stream \"{}\": {e}", stream.name)))?;
    }

    let wal_dir = data_dir.join(WAL_DIR);
    // Only whole segments are deleted, so several must fit under the limit for the WAL to
    // make room as consumers move on.
    let segment_bytes = SEGMENT_BYTES_TARGET.min(config.wal.max_bytes / 4);
    let wal_options = WalOptions { sync: config.wal.sync, max_bytes: config.wal.max_bytes, segment_bytes };
    let wal = Wal::open(&wal_dir, wal_options).context("open the WAL")?;
    let recovered_lsn = wal.durable_lsn();
    let idempotency = Arc::new(IdempotencyTable::default());
    let journal =
        journal::restore(&data_dir, &wal, &idempotency, &registry).context("restore the request journal")?;
    let parquet = ParquetSink::open(
        config.parquet.clone(),
        node_id.clone(),
        registry.clone(),
        wal.clone(),
        &data_dir.join(SINK_STATE_DIR),
    )
    .context("open the Parquet sink")?;
    let parquet_progress = parquet.progress();
    let postgres = match config.postgres.clone() {
        Some(pg) => Some(
            PostgresSink::open(
                pg,
                node_id.clone(),
                registry.clone(),
                wal.clone(),
                &data_dir.join(SINK_STATE_DIR),
            )
            .context("open the PostgreSQL sink")?,
        ),
        None => None,
    };
    // Every consumer registers before any of them runs: a checkpoint deletes the segments
    // that every consumer registered so far is past.
    let journal_reader = wal.register(journal::CONSUMER, journal.lsn)?;
    let parquet_reader = wal.register(parquet::NAME, parquet.checkpoint_lsn())?;
    let postgres_reader = match &postgres {
        Some(sink) => Some(wal.register(postgres::NAME, sink.checkpoint_lsn())?),
        None => None,
    };
    let mut sinks = vec![(parquet::NAME, parquet_progress.clone())];
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let mut consumers = vec![
        spawn_consumer("parquet-sink", {
            let stop = stop_consumers.clone();
            move || parquet.run(parquet_reader, stop)
        })?,
        spawn_consumer("request-journal", {
            let (data_dir, wal, stop) = (data_dir.clone(), wal.clone(), stop_consumers.clone());
            move || journal::run(data_dir, wal, journal_reader, journal, stop)
        })?,
    ];
    if let (Some(sink), Some(reader)) = (postgres, postgres_reader) {
        sinks.push((postgres::NAME, sink.progress()));
        let stop = stop_consumers.clone();
        consumers.push(spawn_consumer("postgres-sink", move || sink.run(reader, stop))?);
    }

    let status = Arc::new(Status::default());
    let budget = MemoryBudget::new(config.limits.max_buffered_bytes);
    let ingestor = Ingestor::new(
        registry.clone(),
        budget.clone(),
        wal.clone(),
        idempotency,
        config.server.max_decompressed_bytes,
    );
    let metrics = Arc::new(HttpMetrics::default());
    let heartbeat = tokio::spawn({
        let metrics = metrics.clone();
        async move { metrics.run_heartbeat().await }
    });
    let key_reloader = tokio::spawn(reload_keys(keys.clone()));
    let state = Arc::new(AppState {
        keys,
        rate_limiter: Default::default(),
        registry: registry.clone(),
        wal: wal.clone(),
        budget,
        metrics,
        ingestor,
        status: status.clone(),
        sinks,
        max_body_bytes: config.server.max_body_bytes,
        max_decompressed_bytes: config.server.max_decompressed_bytes,
        request_timeout: config.server.request_timeout,
    });

    let listener = bind(config.server.bind).await?;
    let local = listener.local_addr().context("read the bound address")?;
    let (stop_sender, stop_receiver) = tokio::sync::oneshot::channel::<()>();
    let tls = match &config.server.tls {
        Some(files) => Some(crate::tls::server_config(&files.cert, &files.key).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = tokio::spawn(http::server::serve(
        listener,
        tls,
        http::routes::router(state),
        config.server.request_timeout,
        config.server.request_timeout,
        async move {
            let _ = stop_receiver.await;
        },
    ));
    wait_for_replay(&parquet_progress, recovered_lsn).await;
    status.set_ready();
    tracing::info!(addr = %local, scheme, node_id = %node_id, data_dir = %data_dir.display(), recovered_lsn, "listening");

    wait_for_stop_signal().await;
    status.start_draining();
    tracing::info!(
        drain_timeout = ?config.server.drain_timeout,
        "stop signal: not ready, answering 503 while load balancers move away (signal again to skip)"
    );
    tokio::select! {
        () = tokio::time::sleep(config.server.drain_timeout) => {}
        () = wait_for_stop_signal() => tracing::info!("second stop signal: skipping the rest of the drain"),
    }
    let _ = stop_sender.send(());
    server.await.context("stop the HTTP server")?;
    heartbeat.abort();
    key_reloader.abort();

    // No more appends; the consumers apply what is durable, commit, and stop.
    wal.close().await;
    stop_consumers.store(true, Ordering::Release);
    let joined = tokio::time::timeout(
        CONSUMERS_STOP_TIMEOUT,
        tokio::task::spawn_blocking(move || consumers.into_iter().all(|c| c.join().is_ok())),
    )
    .await;
    match joined {
        Ok(Ok(true)) => {}
        Ok(_) => tracing::error!("a WAL consumer thread panicked: the WAL keeps what it did not deliver"),
        Err(_) => {
            tracing::warn!(timeout = ?CONSUMERS_STOP_TIMEOUT, "sinks did not finish in time: the WAL keeps the rest")
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Picks up `floodway keys create` and `revoke` within a second, without a restart.
async fn reload_keys(keys: Arc<KeyStore>) {
    let mut ticker = tokio::time::interval(auth::RELOAD_INTERVAL);
    loop {
        ticker.tick().await;
        let keys = keys.clone();
        match tokio::task::spawn_blocking(move || keys.reload()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "reload API keys: keeping the previous ones"),
            Err(error) => tracing::warn!(%error, "reload API keys"),
        }
    }
}

fn spawn_consumer(
    name: &str,
    run: impl FnOnce() + Send + 'static,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(run)
        .map_err(|e| anyhow::anyhow!("start {name}: {e}"))
}

/// Waits until the sink has replayed what the WAL held at start-up (or is degraded: a sink
/// that cannot write does not keep the node from taking traffic while the WAL has room).
async fn wait_for_replay(sink: &SinkProgress, recovered_lsn: Lsn) {
    let started = std::time::Instant::now();
    while sink.applied.load(Ordering::Relaxed) < recovered_lsn && sink.health.status() == "ok" {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if recovered_lsn > 0 {
        tracing::info!(recovered_lsn, replay_ms = started.elapsed().as_millis() as u64, "replayed the WAL");
    }
}

async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}

/// Holds an exclusive lock on the data dir for the life of the process: two servers on one
/// data dir would overwrite each other's catalog and files.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    let path = data_dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("open {}: {e}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!("data dir {} is in use by another floodway process", data_dir.display())
    })?;
    Ok(file)
}

/// The configured node id, or the one generated at the first start and kept in the data dir.
fn node_id(data_dir: &Path, configured: &str) -> anyhow::Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_owned());
    }
    let path: PathBuf = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if valid_node_id(text.trim()) => return Ok(text.trim().to_owned()),
        Ok(_) => anyhow::bail!("{} does not hold a valid node id", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("read {}: {e}", path.display()),
    }
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("read random bytes: {e}"))?;
    let id: String = random.iter().map(|b| format!("{b:02x}")).collect();
    durable::write_file(&path, id.as_bytes())
        .map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))?;
    Ok(id)
}

fn init_logging(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
