//! The command line (SPEC §1).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "floodway",
    version,
    about = "Telemetry ingestion engine: strict JSON over HTTP into Parquet"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Validate the configuration and the streams' schemas; exit 0 when good, 1 otherwise.
    Check(CheckArgs),
    /// Load generator: send generated events to a stream and report throughput and latency.
    Bench(BenchArgs),
    /// Manage API keys: create (prints the token once), list, revoke.
    Keys(KeysArgs),
}

#[derive(clap::Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
    /// TOML configuration file (for auth.keys_file and server.data_dir).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Data dir, when the keys file is the default {data_dir}/keys.json.
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; its token is printed alone on the first line, and never again.
    Create {
        #[arg(long)]
        name: String,
        /// Streams the key may use (comma-separated); every stream when not given.
        #[arg(long, value_delimiter = ',')]
        streams: Option<Vec<String>>,
        /// write (ingest), read (stream info), admin (create and alter streams).
        #[arg(long, value_delimiter = ',', default_value = "write")]
        scopes: Vec<ScopeArg>,
        /// Events per second allowed to this key.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        rate_limit: Option<u64>,
    },
    /// List keys: name, scopes, streams, rate limit, creation time (never a token or hash).
    List,
    /// Revoke a key; a running server stops accepting it within a second.
    Revoke { name: String },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeArg {
    Write,
    Read,
    Admin,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration file (optional: every setting has a default).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Folder for the catalog, counters and (by default) Parquet output [default: ./floodway-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Log level or filter (e.g. "debug", "floodway=debug"); RUST_LOG is used when not given.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Allow listening on a non-loopback address without API keys.
    #[arg(long)]
    pub insecure_no_auth: bool,
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
#[command(group(ArgGroup::new("mode").required(true).args(["rate", "max"])))]
pub struct BenchArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:8080 (plain HTTP).
    #[arg(long, value_name = "URL")]
    pub target: String,
    /// Stream to send to; its schema decides what the generated events look like.
    #[arg(long, value_name = "NAME")]
    pub stream: String,
    /// Open loop: send N events per second on a fixed schedule; latency counts from each
    /// request's intended send time (corrected for coordinated omission).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Closed loop: each connection sends its next request as soon as the answer arrives.
    #[arg(long)]
    pub max: bool,
    /// How long to send (e.g. 30s, 2m).
    #[arg(long, value_name = "TIME", default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Keep-alive connections to the target.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub connections: u32,
    /// Events per request.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch: u32,
    /// Send the bodies gzip-compressed (Content-Encoding: gzip).
    #[arg(long, conflicts_with = "zstd")]
    pub gzip: bool,
    /// Send the bodies zstd-compressed (Content-Encoding: zstd).
    #[arg(long)]
    pub zstd: bool,
    /// Create the stream with the reference schema first (an existing stream keeps its schema).
    #[arg(long)]
    pub create_stream: bool,
    /// API key, sent as `Authorization: Bearer TOKEN`.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Give every request a unique Idempotency-Key (a retry reuses its request's key).
    #[arg(long)]
    pub idempotency_keys: bool,
    /// Retry a request answered 503, 429, 502 or 504, or failed on the connection, up to N times
    /// (with --idempotency-keys, a retry is never ingested twice).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,
    /// Print the summary as one JSON object on stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}
