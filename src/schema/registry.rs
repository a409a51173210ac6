//! The stream catalog: names, current schema versions and counters, kept in the data dir.
//!
//! `catalog.json` changes only when a stream is created or altered and is replaced durably
//! before the change is answered. The counters are restored at start-up by their owners: the
//! request journal (`ingest::journal`) and each sink.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::parse::{SchemaChange, SchemaError, compare, parse_schema, valid_stream_name};
use super::types::StreamSchema;
use crate::durable;

const CATALOG_FILE: &str = "catalog.json";

/// Counters of one stream since it was created.
#[derive(Default, Debug)]
pub struct StreamStats {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub delivered_parquet: AtomicU64,
    pub delivered_postgres: AtomicU64,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
pub struct StatsSnapshot {
    pub accepted: u64,
    pub rejected: u64,
    pub dead_lettered: u64,
    pub delivered_parquet: u64,
    pub delivered_postgres: u64,
}

impl StatsSnapshot {
    /// Events delivered by the sink named `sink`.
    pub fn delivered(&self, sink: &str) -> u64 {
        match sink {
            crate::sinks::parquet::NAME => self.delivered_parquet,
            crate::sinks::postgres::NAME => self.delivered_postgres,
            _ => 0,
        }
    }
}

impl StreamStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            delivered_parquet: self.delivered_parquet.load(Ordering::Relaxed),
            delivered_postgres: self.delivered_postgres.load(Ordering::Relaxed),
        }
    }
}

pub struct Stream {
    pub name: Arc<str>,
    /// Every version of the schema: the WAL may still hold batches of older ones.
    versions: RwLock<BTreeMap<u32, Arc<StreamSchema>>>,
    pub stats: StreamStats,
}

impl Stream {
    /// The current schema version; cheap, called once per request.
    pub fn schema(&self) -> Arc<StreamSchema> {
        let versions = self.versions.read().expect("schema lock is never poisoned: no panics while held");
        versions.values().next_back().expect("a stream has at least one version").clone()
    }

    /// A given version of the schema, for batches written under it.
    pub fn schema_version(&self, version: u32) -> Option<Arc<StreamSchema>> {
        self.versions.read().expect("schema lock is never poisoned").get(&version).cloned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("invalid stream name \"{0}\": it must match ^[a-z][a-z0-9_]{{0,62}}$")]
    InvalidName(String),
    #[error("{0}")]
    InvalidSchema(SchemaError),
    #[error("{0}")]
    Conflict(String),
    #[error("save the catalog: {0}")]
    Persist(#[source] std::io::Error),
}

#[derive(Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Identical,
    Altered { added: Vec<String> },
}

#[derive(Serialize, Deserialize)]
struct CatalogFile {
    streams: Vec<CatalogEntry>,
}

#[derive(Serialize, Deserialize)]
struct CatalogEntry {
    name: String,
    versions: Vec<CatalogVersion>,
}

#[derive(Serialize, Deserialize)]
struct CatalogVersion {
    version: u32,
    schema: Box<RawValue>,
}

pub struct Registry {
    dir: PathBuf,
    streams: RwLock<BTreeMap<Arc<str>, Arc<Stream>>>,
    /// Serialises changes so the catalog file is written in the order changes are answered.
    change: Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is damaged: {problem}")]
    Damaged { path: PathBuf, problem: String },
}

impl Registry {
    /// Opens the catalog in `dir` (an empty catalog when there is none yet).
    pub fn open(dir: &Path) -> Result<Registry, OpenError> {
        let catalog_path = dir.join(CATALOG_FILE);
        let damaged = |problem: String| OpenError::Damaged { path: catalog_path.clone(), problem };
        let catalog: CatalogFile = match std::fs::read(&catalog_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CatalogFile { streams: Vec::new() },
            Err(source) => return Err(OpenError::Read { path: catalog_path, source }),
        };
        let mut streams = BTreeMap::new();
        for entry in catalog.streams {
            let mut versions = BTreeMap::new();
            for stored in &entry.versions {
                let schema = parse_schema(stored.schema.get().as_bytes(), stored.version)
                    .map_err(|e| damaged(format!("stream {} version {}: {e}", entry.name, stored.version)))?;
                versions.insert(stored.version, Arc::new(schema));
            }
            if versions.is_empty() {
                return Err(damaged(format!("stream {} has no schema", entry.name)));
            }
            let name: Arc<str> = Arc::from(entry.name.as_str());
            let stream =
                Stream { name: name.clone(), versions: RwLock::new(versions), stats: StreamStats::default() };
            streams.insert(name, Arc::new(stream));
        }
        Ok(Registry { dir: dir.to_path_buf(), streams: RwLock::new(streams), change: Mutex::new(()) })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams.read().expect("streams lock is never poisoned").get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Stream>> {
        self.streams.read().expect("streams lock is never poisoned").values().cloned().collect()
    }

    /// Creates or alters a stream (SPEC §3): identical → nothing, nullable additions → next
    /// version, anything else → conflict. The catalog is durable before this returns.
    pub fn put(&self, name: &str, schema_json: &[u8]) -> Result<PutOutcome, PutError> {
        if !valid_stream_name(name) {
            return Err(PutError::InvalidName(name.to_owned()));
        }
        let _change = self.change.lock().expect("change lock is never poisoned");
        let current = self.get(name);
        let version = current.as_ref().map_or(1, |s| s.schema().version + 1);
        let proposed = parse_schema(schema_json, version).map_err(PutError::InvalidSchema)?;
        let outcome = match &current {
            None => PutOutcome::Created,
            Some(stream) => match compare(&stream.schema(), &proposed) {
                SchemaChange::Identical => return Ok(PutOutcome::Identical),
                SchemaChange::Conflict(reason) => return Err(PutError::Conflict(reason)),
                SchemaChange::NullableAdditions(added) => PutOutcome::Altered { added },
            },
        };
        let proposed = Arc::new(proposed);
        let mut entries = self.catalog_entries();
        let stored = CatalogVersion { version, schema: raw_json(&proposed.canonical) };
        match entries.iter_mut().find(|e| e.name == name) {
            Some(entry) => entry.versions.push(stored),
            None => entries.push(CatalogEntry { name: name.to_owned(), versions: vec![stored] }),
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let bytes = serde_json::to_vec_pretty(&CatalogFile { streams: entries }).expect("catalog serialises");
        durable::write_file(&self.dir.join(CATALOG_FILE), &bytes).map_err(PutError::Persist)?;

        match current {
            Some(stream) => {
                stream.versions.write().expect("schema lock is never poisoned").insert(version, proposed);
            }
            None => {
                let name: Arc<str> = Arc::from(name);
                let versions = RwLock::new(BTreeMap::from([(version, proposed)]));
                let stream = Stream { name: name.clone(), versions, stats: StreamStats::default() };
                self.streams.write().expect("streams lock is never poisoned").insert(name, Arc::new(stream));
            }
        }
        Ok(outcome)
    }

    fn catalog_entries(&self) -> Vec<CatalogEntry> {
        self.list()
            .iter()
            .map(|stream| {
                let versions = stream.versions.read().expect("schema lock is never poisoned");
                CatalogEntry {
                    name: stream.name.to_string(),
                    versions: versions
                        .values()
                        .map(|schema| CatalogVersion {
                            version: schema.version,
                            schema: raw_json(&schema.canonical),
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

fn raw_json(canonical: &str) -> Box<RawValue> {
    RawValue::from_string(canonical.to_owned()).expect("canonical schema is JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"fields":[{"name":"ts","type":"timestamp"}],"time_field":"ts"}"#;
    const ADDED: &str = r#"{"fields":[{"name":"ts","type":"timestamp"},{"name":"m","type":"string","nullable":true}],"time_field":"ts"}"#;

    #[test]
    fn catalog_and_schema_versions_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        assert_eq!(registry.put("a", SCHEMA.as_bytes()).unwrap(), PutOutcome::Created);
        assert_eq!(registry.put("a", SCHEMA.as_bytes()).unwrap(), PutOutcome::Identical);
        assert!(matches!(registry.put("a", ADDED.as_bytes()).unwrap(), PutOutcome::Altered { .. }));
        drop(registry);
        let reopened = Registry::open(dir.path()).unwrap();
        let stream = reopened.get("a").unwrap();
        assert_eq!(stream.schema().version, 2);
        assert_eq!(stream.schema().fields.len(), 2);
        assert_eq!(stream.schema_version(1).unwrap().fields.len(), 1, "older versions are kept");
    }

    #[test]
    fn bad_names_and_conflicts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        assert!(matches!(registry.put("Bad", SCHEMA.as_bytes()), Err(PutError::InvalidName(_))));
        registry.put("a", ADDED.as_bytes()).unwrap();
        assert!(matches!(registry.put("a", SCHEMA.as_bytes()), Err(PutError::Conflict(_))));
    }
}
