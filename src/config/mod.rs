//! Validated configuration. `raw` merges file, environment and flags; this module checks every
//! value and fills in defaults, so the rest of the program holds a `Config` that cannot be wrong.
//! Every error names the file (or variable or flag), the key, and the problem.

pub mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use raw::ConfigError;
use raw::{Layered, RawConfig, Source};

/// Default for `server.bind`: loopback only, so a fresh start exposes nothing.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./floodway-data";
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10_485_760;
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: u64 = 67_108_864;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for `limits.max_buffered_bytes`: accepted events not yet written, in memory.
pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 268_435_456;
pub const DEFAULT_WAL_MAX_BYTES: u64 = 10 << 30;
/// Smallest `wal.max_bytes`: room for a few segments of a few hundred KiB.
pub const WAL_MAX_BYTES_MIN: u64 = 1 << 20;
pub const DEFAULT_PARQUET_MAX_ROWS: u64 = 1_000_000;
pub const DEFAULT_PARQUET_MAX_AGE: Duration = Duration::from_secs(10);
pub const DEFAULT_POSTGRES_SCHEMA: &str = "public";
pub const DEFAULT_POSTGRES_POOL_SIZE: u64 = 8;
const POSTGRES_POOL_SIZE_MAX: u64 = 64;
const POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Config {
    /// The config file, if one was given.
    pub file: Option<PathBuf>,
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub wal: WalConfig,
    pub parquet: ParquetConfig,
    /// `None`: no PostgreSQL sink.
    pub postgres: Option<PostgresConfig>,
    pub auth: AuthConfig,
    pub streams: Vec<StreamDecl>,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// Empty: generated once and kept in the data dir.
    pub node_id: String,
    pub max_body_bytes: u64,
    pub max_decompressed_bytes: u64,
    pub request_timeout: Duration,
    pub drain_timeout: Duration,
    /// HTTPS when set: `server.tls_cert` and `server.tls_key`.
    pub tls: Option<TlsFiles>,
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug)]
pub struct LimitsConfig {
    pub max_buffered_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    Fsync,
    Os,
}

#[derive(Clone, Debug)]
pub struct WalConfig {
    pub sync: SyncMode,
    pub max_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParquetCompression {
    /// zstd at `level`.
    Zstd {
        level: i32,
    },
    None,
}

#[derive(Clone, Debug)]
pub struct ParquetConfig {
    /// Local folder that holds the Hive layout.
    pub target: PathBuf,
    pub compression: ParquetCompression,
    pub max_rows: u64,
    pub max_age: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionBy {
    Hour,
    Day,
    Month,
}

impl PartitionBy {
    pub fn name(self) -> &'static str {
        match self {
            PartitionBy::Hour => "hour",
            PartitionBy::Day => "day",
            PartitionBy::Month => "month",
        }
    }
}

/// `[sinks.postgres]`. The connection settings keep the password; their `Debug` hides it.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    pub connection: tokio_postgres::Config,
    pub schema: String,
    pub pool_size: usize,
    pub partition: PartitionBy,
    /// TLS to the database, trusting the CA certificates of this PEM file.
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub keys_file: PathBuf,
}

#[derive(Clone, Debug)]
pub struct StreamDecl {
    pub name: String,
    pub schema_file: PathBuf,
}

/// Command-line values that override the file and the environment.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub bind: Option<String>,
    pub data_dir: Option<String>,
}

impl Config {
    /// Loads `file` (if any) with the process environment and `overrides` on top.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut flags = Vec::new();
        if let Some(bind) = &overrides.bind {
            flags.push(("--bind", "server.bind", bind.clone()));
        }
        if let Some(dir) = &overrides.data_dir {
            flags.push(("--data-dir", "server.data_dir", dir.clone()));
        }
        let layered = raw::load(file, std::env::vars(), &flags)?;
        Config::validate(layered)
    }

    fn validate(layered: Layered) -> Result<Config, ConfigError> {
        let check = Checker { layered: &layered };
        let RawConfig { server, limits, wal, sinks, auth, streams } = &layered.raw;

        let bind_text = server.bind.clone().unwrap_or_else(|| DEFAULT_BIND.to_owned());
        let bind: SocketAddr = bind_text.parse().map_err(|_| {
            check.error("server.bind", format!("\"{bind_text}\" is not an address like 127.0.0.1:8080"))
        })?;
        let data_dir = check.path("server.data_dir", server.data_dir.as_deref(), DEFAULT_DATA_DIR);
        let node_id = server.node_id.clone().unwrap_or_default();
        if !node_id.is_empty() && !valid_node_id(&node_id) {
            return Err(check.error("server.node_id", "use 1 to 64 characters from [A-Za-z0-9_-]"));
        }
        let max_body_bytes =
            check.positive("server.max_body_bytes", server.max_body_bytes, DEFAULT_MAX_BODY_BYTES)?;
        let max_decompressed_bytes = check.positive(
            "server.max_decompressed_bytes",
            server.max_decompressed_bytes,
            DEFAULT_MAX_DECOMPRESSED_BYTES,
        )?;
        let request_timeout = check.duration(
            "server.request_timeout",
            server.request_timeout.as_deref(),
            DEFAULT_REQUEST_TIMEOUT,
        )?;
        if request_timeout.is_zero() {
            return Err(check.error("server.request_timeout", "must be more than 0s"));
        }
        let drain_timeout =
            check.duration("server.drain_timeout", server.drain_timeout.as_deref(), DEFAULT_DRAIN_TIMEOUT)?;
        let tls = match (&server.tls_cert, &server.tls_key) {
            (None, None) => None,
            (Some(_), None) => return Err(check.error("server.tls_key", "is needed with server.tls_cert")),
            (None, Some(_)) => return Err(check.error("server.tls_cert", "is needed with server.tls_key")),
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert: check.path("server.tls_cert", Some(cert), ""),
                    key: check.path("server.tls_key", Some(key), ""),
                };
                crate::tls::load_certificates(&files.cert).map_err(|e| check.error("server.tls_cert", e))?;
                crate::tls::load_private_key(&files.key).map_err(|e| check.error("server.tls_key", e))?;
                crate::tls::server_config(&files.cert, &files.key)
                    .map_err(|e| check.error("server.tls_cert", e))?;
                Some(files)
            }
        };

        let max_buffered_bytes = check.positive(
            "limits.max_buffered_bytes",
            limits.max_buffered_bytes,
            DEFAULT_MAX_BUFFERED_BYTES,
        )?;
        let sync = match wal.sync.as_deref() {
            None | Some("fsync") => SyncMode::Fsync,
            Some("os") => SyncMode::Os,
            Some(other) => {
                return Err(check.error("wal.sync", format!("must be \"fsync\" or \"os\", got \"{other}\"")));
            }
        };
        let wal_max_bytes = check.positive("wal.max_bytes", wal.max_bytes, DEFAULT_WAL_MAX_BYTES)?;
        if wal_max_bytes < WAL_MAX_BYTES_MIN {
            return Err(check.error(
                "wal.max_bytes",
                format!("must be at least {WAL_MAX_BYTES_MIN} bytes (1 MiB), got {wal_max_bytes}"),
            ));
        }

        let postgres = sinks.postgres.as_ref().map(|p| check.postgres(p)).transpose()?;
        let parquet = sinks.parquet.as_ref();
        let target = match parquet.and_then(|p| p.target.as_deref()) {
            None => data_dir.join("parquet"),
            Some(text) => check.target("sinks.parquet.target", text)?,
        };
        if parquet.is_some_and(|p| p.s3.is_some()) {
            return Err(check.error("sinks.parquet.s3", "only applies to an s3:// target"));
        }
        let compression = match parquet.and_then(|p| p.compression.as_deref()) {
            None | Some("zstd") => ParquetCompression::Zstd { level: 1 },
            Some("none") | Some("uncompressed") => ParquetCompression::None,
            Some(other) => {
                return Err(check.error(
                    "sinks.parquet.compression",
                    format!("must be \"zstd\" or \"none\", got \"{other}\""),
                ));
            }
        };
        let max_rows = check.positive(
            "sinks.parquet.max_rows",
            parquet.and_then(|p| p.max_rows),
            DEFAULT_PARQUET_MAX_ROWS,
        )?;
        let max_age = check.duration(
            "sinks.parquet.max_age",
            parquet.and_then(|p| p.max_age.as_deref()),
            DEFAULT_PARQUET_MAX_AGE,
        )?;
        if max_age.is_zero() {
            return Err(check.error("sinks.parquet.max_age", "must be more than 0s"));
        }
        let keys_file = match &auth.keys_file {
            None => data_dir.join("keys.json"),
            Some(text) => check.path("auth.keys_file", Some(text), ""),
        };
        let streams = streams
            .iter()
            .enumerate()
            .map(|(i, s)| StreamDecl {
                name: s.name.clone(),
                schema_file: check.relative_to_file(&format!("streams[{i}].schema_file"), &s.schema_file),
            })
            .collect();

        Ok(Config {
            file: layered.file.clone(),
            server: ServerConfig {
                bind,
                data_dir,
                node_id,
                max_body_bytes,
                max_decompressed_bytes,
                request_timeout,
                drain_timeout,
                tls,
            },
            limits: LimitsConfig { max_buffered_bytes },
            wal: WalConfig { sync, max_bytes: wal_max_bytes },
            parquet: ParquetConfig { target, compression, max_rows, max_age },
            postgres,
            auth: AuthConfig { keys_file },
            streams,
        })
    }

    /// Where a problem with `key` came from: the file, a variable or a flag.
    pub fn error(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::new(raw::file_label(self.file.as_deref()), key, problem)
    }
}

pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

struct Checker<'a> {
    layered: &'a Layered,
}

impl Checker<'_> {
    fn error(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        let origin = match self.layered.overrides.get(key) {
            Some(Source::Env(name)) => format!("environment {name}"),
            Some(Source::Flag(flag)) => format!("flag {flag}"),
            _ => raw::file_label(self.layered.file.as_deref()),
        };
        ConfigError::new(origin, key, problem)
    }

    fn positive(&self, key: &str, value: Option<u64>, default: u64) -> Result<u64, ConfigError> {
        match value {
            None => Ok(default),
            Some(0) => Err(self.error(key, "must be more than 0")),
            Some(n) => Ok(n),
        }
    }

    fn duration(&self, key: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(text) => humantime::parse_duration(text).map_err(|e| {
                self.error(key, format!("\"{text}\" is not a duration like \"10s\" or \"500ms\": {e}"))
            }),
        }
    }

    /// A path setting: relative paths from the file are relative to the file's folder; from
    /// the environment, a flag or the defaults, to the working directory.
    fn path(&self, key: &str, value: Option<&str>, default: &str) -> PathBuf {
        match value {
            None => PathBuf::from(default),
            Some(text) => self.relative_to_file(key, text),
        }
    }

    fn relative_to_file(&self, key: &str, text: &str) -> PathBuf {
        let path = PathBuf::from(text);
        let from_file = !self.layered.overrides.contains_key(key);
        match (&self.layered.file, from_file && path.is_relative()) {
            (Some(file), true) => file.parent().unwrap_or(Path::new(".")).join(path),
            _ => path,
        }
    }

    fn postgres(&self, raw: &raw::RawPostgres) -> Result<PostgresConfig, ConfigError> {
        let Some(url) = raw.url.as_deref() else {
            return Err(self.error(
                "sinks.postgres.url",
                "is required, e.g. \"postgres://user@127.0.0.1:5432/telemetry\"",
            ));
        };
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(self.error("sinks.postgres.url", "must start with postgres:// or postgresql://"));
        }
        // The parser's message never repeats the URL, so the password stays out of it.
        let mut connection: tokio_postgres::Config =
            url.parse().map_err(|e| self.error("sinks.postgres.url", format!("is not a valid URL: {e}")))?;
        if connection.get_dbname().is_none() {
            return Err(self.error("sinks.postgres.url", "must name a database, e.g. .../telemetry"));
        }
        if connection.get_connect_timeout().is_none() {
            connection.connect_timeout(POSTGRES_CONNECT_TIMEOUT);
        }
        if connection.get_application_name().is_none() {
            connection.application_name("floodway");
        }
        let schema = raw.schema.clone().unwrap_or_else(|| DEFAULT_POSTGRES_SCHEMA.to_owned());
        if !crate::schema::parse::valid_field_name(&schema) {
            return Err(self.error(
                "sinks.postgres.schema",
                "use 1 to 63 characters from [A-Za-z0-9_], not starting with a digit",
            ));
        }
        let pool_size =
            self.positive("sinks.postgres.pool_size", raw.pool_size, DEFAULT_POSTGRES_POOL_SIZE)?;
        if pool_size > POSTGRES_POOL_SIZE_MAX {
            return Err(
                self.error("sinks.postgres.pool_size", format!("must be at most {POSTGRES_POOL_SIZE_MAX}"))
            );
        }
        let partition = match raw.partition.as_deref() {
            Some("hour") => PartitionBy::Hour,
            None | Some("day") => PartitionBy::Day,
            Some("month") => PartitionBy::Month,
            Some(other) => {
                return Err(self.error(
                    "sinks.postgres.partition",
                    format!("must be \"hour\", \"day\" or \"month\", got \"{other}\""),
                ));
            }
        };
        let tls_ca_file =
            raw.tls_ca_file.as_deref().map(|text| self.path("sinks.postgres.tls_ca_file", Some(text), ""));
        match (&tls_ca_file, connection.get_ssl_mode()) {
            (Some(_), tokio_postgres::config::SslMode::Disable) => {
                return Err(
                    self.error("sinks.postgres.tls_ca_file", "is set, but the URL says sslmode=disable")
                );
            }
            (Some(file), _) => {
                crate::tls::client_config(file).map_err(|e| self.error("sinks.postgres.tls_ca_file", e))?;
                // With a CA to check the server against, TLS is required, never skipped.
                connection.ssl_mode(tokio_postgres::config::SslMode::Require);
            }
            (None, tokio_postgres::config::SslMode::Require) => {
                return Err(self.error(
                    "sinks.postgres.url",
                    "sslmode=require needs sinks.postgres.tls_ca_file: the PEM file of the CA that signed the server's certificate",
                ));
            }
            // `prefer` (the URL default) without a CA: plain TCP.
            (None, _) => {
                connection.ssl_mode(tokio_postgres::config::SslMode::Disable);
            }
        }
        Ok(PostgresConfig { connection, schema, pool_size: pool_size as usize, partition, tls_ca_file })
    }

    /// `sinks.parquet.target`: a plain path, `file:///abs` or `file://./rel`.
    fn target(&self, key: &str, text: &str) -> Result<PathBuf, ConfigError> {
        if text.starts_with("s3://") {
            return Err(self.error(key, "s3:// targets are not available in this version of floodway"));
        }
        let path = match text.strip_prefix("file://") {
            Some(rest) if !rest.is_empty() => rest,
            Some(_) => return Err(self.error(key, "file:// needs a path")),
            None if text.contains("://") => {
                return Err(self.error(key, format!("unsupported target \"{text}\": use a path or file://")));
            }
            None => text,
        };
        Ok(self.relative_to_file(key, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("floodway.toml");
        std::fs::write(&file, text).unwrap();
        let layered = raw::load(Some(&file), std::iter::empty(), &[])?;
        Config::validate(layered)
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::validate(raw::load(None, std::iter::empty(), &[]).unwrap()).unwrap();
        assert_eq!(config.server.bind.to_string(), DEFAULT_BIND);
        assert_eq!(config.parquet.target, PathBuf::from(DEFAULT_DATA_DIR).join("parquet"));
        assert_eq!(config.parquet.max_age, DEFAULT_PARQUET_MAX_AGE);
    }

    #[test]
    fn relative_paths_in_the_file_follow_the_file() {
        let config = load_text("[[streams]]\nname = \"a\"\nschema_file = \"s/a.json\"\n").unwrap();
        let schema = &config.streams[0].schema_file;
        assert!(schema.ends_with("s/a.json"));
        assert!(schema.parent().unwrap().parent().unwrap() == config.file.unwrap().parent().unwrap());
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, needle) in [
            ("[server]\nbind = \"nowhere\"", "server.bind"),
            ("[sinks.parquet]\nmax_age = \"soon\"", "sinks.parquet.max_age"),
            ("[wal]\nsync = \"never\"", "wal.sync"),
            ("[sinks.parquet]\nmax_rows = 0", "sinks.parquet.max_rows"),
        ] {
            let error = load_text(text).unwrap_err().to_string();
            assert!(error.contains(needle), "{error}");
            assert!(error.contains("floodway.toml"), "{error}");
        }
    }
}
