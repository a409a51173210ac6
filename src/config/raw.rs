//! The raw configuration layer: TOML file, then `FLOODWAY_<SECTION>__<KEY>` environment
//! variables, then command-line flags, merged into one TOML table and read into serde structs
//! that refuse unknown keys. `mod.rs` turns the result into a validated `Config`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where a setting came from, so an error can name it and relative paths resolve correctly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File,
    Env(String),
    Flag(&'static str),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub wal: RawWal,
    #[serde(default)]
    pub sinks: RawSinks,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub streams: Vec<RawStream>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub bind: Option<String>,
    pub data_dir: Option<String>,
    pub node_id: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub max_decompressed_bytes: Option<u64>,
    pub request_timeout: Option<String>,
    pub drain_timeout: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_buffered_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWal {
    pub sync: Option<String>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSinks {
    pub parquet: Option<RawParquet>,
    pub postgres: Option<RawPostgres>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgres {
    pub url: Option<String>,
    pub schema: Option<String>,
    pub pool_size: Option<u64>,
    pub partition: Option<String>,
    pub tls_ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParquet {
    pub target: Option<String>,
    pub compression: Option<String>,
    pub max_rows: Option<u64>,
    pub max_age: Option<String>,
    pub s3: Option<RawS3>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3 {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub path_style: Option<bool>,
    pub allow_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub keys_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    pub name: String,
    pub schema_file: String,
}

/// The merged settings and the source of every key that did not come from the file.
pub struct Layered {
    pub raw: RawConfig,
    /// Dotted key → its source, for keys set by the environment or a flag.
    pub overrides: HashMap<String, Source>,
    pub file: Option<PathBuf>,
}

/// A configuration error: the file (or variable or flag), the key, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {key}{separator}{problem}", separator = if key.is_empty() { "" } else { ": " })]
pub struct ConfigError {
    pub origin: String,
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(origin: impl Into<String>, key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError { origin: origin.into(), key: key.into(), problem: problem.into() }
    }
}

pub fn file_label(file: Option<&Path>) -> String {
    file.map_or_else(|| "defaults".to_owned(), |f| f.display().to_string())
}

/// Reads the file (if any), overlays the environment and the flags, and deserializes.
pub fn load(
    file: Option<&Path>,
    env: impl Iterator<Item = (String, String)>,
    flags: &[(&'static str, &'static str, String)],
) -> Result<Layered, ConfigError> {
    let label = file_label(file);
    let mut table = match file {
        None => toml::Table::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::new(&label, "", format!("cannot read the file: {e}")))?;
            text.parse::<toml::Table>()
                .map_err(|e| ConfigError::new(&label, "", format!("invalid TOML: {e}")))?
        }
    };
    let mut overrides = HashMap::new();
    let mut env: Vec<(String, String)> = env.collect();
    env.sort();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("FLOODWAY_") else { continue };
        if !rest.contains("__") {
            continue; // FLOODWAY_SOMETHING without a section is not a setting
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        set_path(&mut table, &path, env_value(&value))
            .map_err(|problem| ConfigError::new(format!("environment {name}"), path.join("."), problem))?;
        overrides.insert(path.join("."), Source::Env(name));
    }
    for (flag, key, value) in flags {
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        set_path(&mut table, &path, toml::Value::String(value.clone()))
            .map_err(|problem| ConfigError::new(format!("flag {flag}"), *key, problem))?;
        overrides.insert((*key).to_owned(), Source::Flag(flag));
    }
    let raw: RawConfig = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        let origin = match overrides.get(&key) {
            Some(Source::Env(name)) => format!("environment {name}"),
            Some(Source::Flag(flag)) => format!("flag {flag}"),
            _ => label.clone(),
        };
        let key = if key == "." { String::new() } else { key };
        ConfigError::new(origin, key, e.inner().to_string())
    })?;
    Ok(Layered { raw, overrides, file: file.map(Path::to_path_buf) })
}

/// An environment value is read as a TOML value when it is one (`5`, `true`, `"x"`), else as
/// a plain string (`127.0.0.1:9000`, `10s`).
fn env_value(text: &str) -> toml::Value {
    match format!("v = {text}").parse::<toml::Table>() {
        Ok(mut table) => table.remove("v").unwrap_or_else(|| toml::Value::String(text.to_owned())),
        Err(_) => toml::Value::String(text.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut current = table;
    for part in parents {
        let entry = current.entry(part.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| format!("\"{part}\" is not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_beats_file_and_flags_beat_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "[server]\nbind = \"127.0.0.1:1\"\nmax_body_bytes = 5\n").unwrap();
        let env = vec![
            ("FLOODWAY_SERVER__BIND".to_owned(), "127.0.0.1:2".to_owned()),
            ("FLOODWAY_SERVER__MAX_BODY_BYTES".to_owned(), "7".to_owned()),
            ("FLOODWAY_BIN".to_owned(), "ignored".to_owned()),
        ];
        let layered = load(Some(&file), env.clone().into_iter(), &[]).unwrap();
        assert_eq!(layered.raw.server.bind.as_deref(), Some("127.0.0.1:2"));
        assert_eq!(layered.raw.server.max_body_bytes, Some(7));
        let flags = [("--bind", "server.bind", "127.0.0.1:3".to_owned())];
        let layered = load(Some(&file), env.into_iter(), &flags).unwrap();
        assert_eq!(layered.raw.server.bind.as_deref(), Some("127.0.0.1:3"));
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "[server]\nmax_body_bytes = \"big\"\n").unwrap();
        let error = load(Some(&file), std::iter::empty(), &[]).err().unwrap().to_string();
        assert!(error.contains("f.toml: server.max_body_bytes: "), "{error}");
        std::fs::write(&file, "[server]\nbogus = 1\n").unwrap();
        let error = load(Some(&file), std::iter::empty(), &[]).err().unwrap().to_string();
        assert!(error.contains("bogus"), "{error}");
    }
}
