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
const DEFAULT_S3_REGION: &str = "us-east-1";
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
    pub target: ParquetTarget,
    pub compression: ParquetCompression,
    pub max_rows: u64,
    pub max_age: Duration,
}

/// Where the Hive layout of Parquet files and dead letters goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParquetTarget {
    /// A local folder.
    Folder(PathBuf),
    /// An S3-compatible object store.
    Bucket(S3Target),
}

/// `s3://bucket/prefix` with `[sinks.parquet.s3]`. Empty strings mean "not set": the
/// standard `AWS_*` environment variables then apply. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Target {
    pub bucket: String,
    /// Object names start with this, without a leading or trailing `/`; empty for the root.
    pub prefix: String,
    /// Empty: AWS itself.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub path_style: bool,
    pub allow_http: bool,
}

impl S3Target {
    /// `s3://bucket/prefix`, for logs.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = if self.secret_access_key.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("S3Target")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &secret)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .finish()
    }
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
        let s3 = parquet.and_then(|p| p.s3.as_ref());
        let target = match parquet.and_then(|p| p.target.as_deref()) {
            None => ParquetTarget::Folder(data_dir.join("parquet")),
            Some(text) => check.target("sinks.parquet.target", text, s3)?,
        };
        if s3.is_some() && matches!(target, ParquetTarget::Folder(_)) {
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

    /// `sinks.parquet.target`: a plain path, `file:///abs`, `file://./rel` or
    /// `s3://bucket/prefix` (with `[sinks.parquet.s3]`).
    fn target(&self, key: &str, text: &str, s3: Option<&raw::RawS3>) -> Result<ParquetTarget, ConfigError> {
        if let Some(rest) = text.strip_prefix("s3://") {
            return self
                .s3_target(key, rest, s3.unwrap_or(&raw::RawS3::default()))
                .map(ParquetTarget::Bucket);
        }
        let path = match text.strip_prefix("file://") {
            Some(rest) if !rest.is_empty() => rest,
            Some(_) => return Err(self.error(key, "file:// needs a path")),
            None if text.contains("://") => {
                return Err(self.error(key, format!("unsupported target \"{text}\": use a path or file://")));
            }
            None => text,
        };
        Ok(ParquetTarget::Folder(self.relative_to_file(key, path)))
    }

    fn s3_target(
        &self,
        key: &str,
        bucket_and_prefix: &str,
        raw: &raw::RawS3,
    ) -> Result<S3Target, ConfigError> {
        let (bucket, prefix) = bucket_and_prefix.split_once('/').unwrap_or((bucket_and_prefix, ""));
        if !valid_bucket_name(bucket) {
            return Err(self.error(
                key,
                format!(
                    "\"{bucket}\" is not a bucket name: use s3://bucket/prefix with a bucket of 3 to 63 \
                     characters from [a-z0-9.-_]"
                ),
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        for segment in prefix.split('/').filter(|_| !prefix.is_empty()) {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(self.error(key, format!("the prefix \"{prefix}\" has an empty, . or .. segment")));
            }
            if segment.starts_with(['_', '.']) {
                return Err(self.error(
                    key,
                    format!("the prefix segment \"{segment}\" starts with _ or ., which readers of the dataset skip"),
                ));
            }
            if segment.chars().any(|c| c.is_control() || c == '\\') {
                return Err(
                    self.error(key, format!("the prefix \"{prefix}\" has a control character or a \\"))
                );
            }
        }
        let endpoint = raw.endpoint.clone().unwrap_or_default().trim_end_matches('/').to_owned();
        let allow_http = raw.allow_http.unwrap_or(false);
        if !endpoint.is_empty() {
            if endpoint.starts_with("http://") {
                if !allow_http {
                    return Err(self.error(
                        "sinks.parquet.s3.allow_http",
                        format!("must be true to use the plain-http endpoint {endpoint}"),
                    ));
                }
            } else if !endpoint.starts_with("https://") {
                return Err(self.error(
                    "sinks.parquet.s3.endpoint",
                    format!("\"{endpoint}\" is not an http:// or https:// address"),
                ));
            }
        }
        let region = raw.region.clone().unwrap_or_else(|| DEFAULT_S3_REGION.to_owned());
        if region.is_empty() {
            return Err(self.error("sinks.parquet.s3.region", "must not be empty"));
        }
        Ok(S3Target {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            endpoint,
            region,
            access_key_id: raw.access_key_id.clone().unwrap_or_default(),
            secret_access_key: raw.secret_access_key.clone().unwrap_or_default(),
            path_style: raw.path_style.unwrap_or(true),
            allow_http,
        })
    }
}

/// S3's rules for bucket names, loosened to what S3-compatible servers also accept.
fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
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
        assert_eq!(
            config.parquet.target,
            ParquetTarget::Folder(PathBuf::from(DEFAULT_DATA_DIR).join("parquet"))
        );
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

    #[test]
    fn s3_targets_split_bucket_and_prefix_and_hide_the_secret() {
        let config = load_text(
            "[sinks.parquet]\ntarget = \"s3://logs.example/a/b/\"\n[sinks.parquet.s3]\n\
             endpoint = \"http://127.0.0.1:9000\"\nallow_http = true\nsecret_access_key = \"hunter2\"\n",
        )
        .unwrap();
        let ParquetTarget::Bucket(s3) = &config.parquet.target else { panic!("not a bucket") };
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("logs.example", "a/b"));
        assert_eq!((s3.region.as_str(), s3.path_style), ("us-east-1", true));
        assert_eq!(s3.url(), "s3://logs.example/a/b");
        assert!(!format!("{config:?}").contains("hunter2"));
        let root = load_text("[sinks.parquet]\ntarget = \"s3://bucket\"\n").unwrap();
        let ParquetTarget::Bucket(s3) = &root.parquet.target else { panic!("not a bucket") };
        assert_eq!((s3.prefix.as_str(), s3.endpoint.as_str(), s3.allow_http), ("", "", false));
    }

    #[test]
    fn bad_s3_settings_name_the_key() {
        for (text, needle) in [
            ("[sinks.parquet]\ntarget = \"s3://\"", "is not a bucket name"),
            ("[sinks.parquet]\ntarget = \"s3://Big_Bucket/x\"", "is not a bucket name"),
            ("[sinks.parquet]\ntarget = \"s3://bucket/a//b\"", "empty, . or .. segment"),
            ("[sinks.parquet]\ntarget = \"s3://bucket/_hidden\"", "readers of the dataset skip"),
            (
                "[sinks.parquet]\ntarget = \"s3://bucket\"\n[sinks.parquet.s3]\nendpoint = \"http://127.0.0.1:9\"",
                "sinks.parquet.s3.allow_http",
            ),
            (
                "[sinks.parquet]\ntarget = \"s3://bucket\"\n[sinks.parquet.s3]\nendpoint = \"ftp://x\"",
                "sinks.parquet.s3.endpoint",
            ),
            (
                "[sinks.parquet]\ntarget = \"/tmp/x\"\n[sinks.parquet.s3]\nregion = \"eu-west-1\"",
                "only applies",
            ),
            ("[sinks.parquet]\ntarget = \"s3://bucket\"\n[sinks.parquet.s3]\nbucket = \"b\"", "bucket"),
        ] {
            let error = load_text(text).unwrap_err().to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }
}
