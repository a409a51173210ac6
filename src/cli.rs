//! The command line (SPEC §1).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}
