//! API keys (SPEC §1, §7). A key is a random token shown once at creation; the keys file
//! (`auth.keys_file`) keeps only its SHA-256, its scopes, its streams and its rate limit.
//!
//! Why SHA-256 and not a password hash: a token is 256 bits from the OS CSPRNG, so nobody can
//! guess it or try a dictionary against its hash; a slow hash only protects low-entropy
//! secrets, and it would cost milliseconds on every request. Hashes are compared in constant
//! time. The server re-reads the file when it changes (checked every 500 ms), so `keys
//! create` and `keys revoke` take effect without a restart.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::durable;
use crate::schema::values::format_rfc3339_micros;

/// Every token starts with this, so a leaked one is easy to recognise and search for.
pub const TOKEN_PREFIX: &str = "fw_";
const TOKEN_RANDOM_BYTES: usize = 32;
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Ingest events.
    Write,
    /// Read stream information.
    Read,
    /// Create and alter streams.
    Admin,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Key {
    pub name: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    pub scopes: Vec<Scope>,
    /// None: every stream.
    pub streams: Option<Vec<String>>,
    /// Events per second, None: no limit.
    pub rate_limit: Option<u64>,
    pub created_at: String,
}

#[derive(Serialize, Deserialize, Default)]
struct KeysFile {
    keys: Vec<Key>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is damaged: {problem}")]
    Damaged { path: PathBuf, problem: String },
    #[error("a key named \"{0}\" exists already")]
    Exists(String),
    #[error("no key is named \"{0}\"")]
    Unknown(String),
    #[error("invalid key name \"{0}\": use 1 to 64 characters from [A-Za-z0-9_.-]")]
    InvalidName(String),
}

fn load(path: &Path) -> Result<Vec<Key>, KeysError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<KeysFile>(&bytes)
            .map(|file| file.keys)
            .map_err(|e| KeysError::Damaged { path: path.to_path_buf(), problem: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(KeysError::Io { path: path.to_path_buf(), source }),
    }
}

fn save(path: &Path, keys: Vec<Key>) -> Result<(), KeysError> {
    let io = |source| KeysError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        durable::create_dir_all(dir).map_err(io)?;
    }
    let bytes = serde_json::to_vec_pretty(&KeysFile { keys }).expect("keys serialise");
    durable::write_file(path, &bytes).map_err(io)
}

/// Holds an exclusive lock on `{keys_file}.lock` while it lives, so that two `floodway keys`
/// commands at once do not both read the old file and lose one's change.
fn lock_for_edit(path: &Path) -> Result<std::fs::File, KeysError> {
    let io = |source| KeysError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        durable::create_dir_all(dir).map_err(io)?;
    }
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io)?;
    file.lock().map_err(io)?;
    Ok(file)
}

pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates a key and returns its token (the only time it exists outside the caller).
pub fn create(
    path: &Path,
    name: &str,
    scopes: Vec<Scope>,
    streams: Option<Vec<String>>,
    rate_limit: Option<u64>,
) -> Result<String, KeysError> {
    let valid = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid {
        return Err(KeysError::InvalidName(name.to_owned()));
    }
    let _lock = lock_for_edit(path)?;
    let mut keys = load(path)?;
    if keys.iter().any(|k| k.name == name) {
        return Err(KeysError::Exists(name.to_owned()));
    }
    let mut random = [0u8; TOKEN_RANDOM_BYTES];
    getrandom::fill(&mut random).map_err(|e| KeysError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!("read random bytes: {e}")),
    })?;
    let token: String =
        std::iter::once(TOKEN_PREFIX.to_owned()).chain(random.iter().map(|b| format!("{b:02x}"))).collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
    let mut created_at = String::new();
    format_rfc3339_micros(now, &mut created_at);
    keys.push(Key {
        name: name.to_owned(),
        hash: hash_token(&token),
        scopes,
        streams,
        rate_limit,
        created_at,
    });
    save(path, keys)?;
    Ok(token)
}

pub fn revoke(path: &Path, name: &str) -> Result<(), KeysError> {
    let _lock = lock_for_edit(path)?;
    let mut keys = load(path)?;
    let before = keys.len();
    keys.retain(|k| k.name != name);
    if keys.len() == before {
        return Err(KeysError::Unknown(name.to_owned()));
    }
    save(path, keys)
}

pub fn list(path: &Path) -> Result<Vec<Key>, KeysError> {
    load(path)
}

/// What the server checks requests against; reloaded when the file changes.
pub struct KeyStore {
    path: PathBuf,
    /// A node reachable beyond loopback never opens up, even if its last key is revoked.
    required: std::sync::atomic::AtomicBool,
    keys: RwLock<Vec<Key>>,
    seen: RwLock<Option<(SystemTime, u64)>>,
}

/// A key's allowance: its name (the bucket it draws from) and events per second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub key: String,
    pub events_per_second: u64,
}

/// The outcome of checking a request's credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    /// Allowed; with the key's rate limit (events/s) when it has one.
    Granted(Option<RateLimit>),
    /// No or an unknown token (401).
    Unauthenticated,
    /// A known token without the scope or the stream (403).
    Forbidden(&'static str),
}

impl KeyStore {
    pub fn open(path: &Path) -> Result<KeyStore, KeysError> {
        let store = KeyStore {
            path: path.to_path_buf(),
            required: false.into(),
            keys: RwLock::new(Vec::new()),
            seen: RwLock::new(None),
        };
        store.reload()?;
        Ok(store)
    }

    /// From now on a request needs a valid key even when no key exists.
    pub fn require_keys(&self) {
        self.required.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.read().expect("keys lock is never poisoned").is_empty()
    }

    /// Re-reads the file if its modification time or size changed.
    pub fn reload(&self) -> Result<(), KeysError> {
        let stamp = std::fs::metadata(&self.path).ok().map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.len()));
        if *self.seen.read().expect("keys lock is never poisoned") == stamp && stamp.is_some() {
            return Ok(());
        }
        let keys = load(&self.path)?;
        *self.keys.write().expect("keys lock is never poisoned") = keys;
        *self.seen.write().expect("keys lock is never poisoned") = stamp;
        Ok(())
    }

    /// Checks a bearer token for `scope` on `stream` (None: the route names no stream).
    /// With no keys at all, everything is open (loopback-only by default, SPEC §1).
    pub fn check(&self, token: Option<&str>, scope: Scope, stream: Option<&str>) -> Access {
        let keys = self.keys.read().expect("keys lock is never poisoned");
        if keys.is_empty() && !self.required.load(std::sync::atomic::Ordering::Acquire) {
            return Access::Granted(None);
        }
        let Some(token) = token else { return Access::Unauthenticated };
        let hash = hash_token(token);
        // Every key is compared, each in constant time, so timing tells nothing of a match.
        let mut found: Option<&Key> = None;
        for key in keys.iter() {
            if constant_time_eq(key.hash.as_bytes(), hash.as_bytes()) {
                found = Some(key);
            }
        }
        let Some(key) = found else { return Access::Unauthenticated };
        if !key.scopes.contains(&scope) {
            return Access::Forbidden("the key lacks the scope this call needs");
        }
        match (stream, &key.streams) {
            (Some(stream), Some(allowed)) if !allowed.iter().any(|s| s == stream) => {
                Access::Forbidden("the key is not allowed on this stream")
            }
            _ => Access::Granted(
                key.rate_limit
                    .map(|events_per_second| RateLimit { key: key.name.clone(), events_per_second }),
            ),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_created_at_once_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || create(&path, &format!("k{i}"), vec![Scope::Write], None, None))
            })
            .collect();
        for thread in threads {
            thread.join().unwrap().unwrap();
        }
        assert_eq!(list(&path).unwrap().len(), 16, "a concurrent create lost another's key");
    }

    #[test]
    fn keys_grant_by_scope_and_stream_and_revoke_takes_effect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let store = KeyStore::open(&path).unwrap();
        assert_eq!(store.check(None, Scope::Admin, None), Access::Granted(None), "no keys: open");
        let token = create(&path, "ci", vec![Scope::Write], Some(vec!["a".into()]), None).unwrap();
        assert!(token.starts_with(TOKEN_PREFIX));
        assert!(!std::fs::read_to_string(&path).unwrap().contains(&token), "only the hash is stored");
        store.reload().unwrap();
        assert_eq!(store.check(Some(&token), Scope::Write, Some("a")), Access::Granted(None));
        assert!(matches!(store.check(Some(&token), Scope::Write, Some("b")), Access::Forbidden(_)));
        assert!(matches!(store.check(Some(&token), Scope::Admin, Some("a")), Access::Forbidden(_)));
        assert_eq!(store.check(Some("fw_wrong"), Scope::Write, Some("a")), Access::Unauthenticated);
        assert_eq!(store.check(None, Scope::Write, Some("a")), Access::Unauthenticated);
        assert!(matches!(create(&path, "ci", vec![], None, None), Err(KeysError::Exists(_))));
        create(&path, "other", vec![Scope::Read], None, None).unwrap();
        revoke(&path, "ci").unwrap();
        store.reload().unwrap();
        assert_eq!(store.check(Some(&token), Scope::Write, Some("a")), Access::Unauthenticated);
        assert!(matches!(revoke(&path, "ci"), Err(KeysError::Unknown(_))));
        revoke(&path, "other").unwrap();
        store.require_keys();
        store.reload().unwrap();
        assert_eq!(
            store.check(None, Scope::Read, None),
            Access::Unauthenticated,
            "required: no keys, no access"
        );
    }
}
