//! An S3-compatible bucket as the destination of the Parquet sink. Files are written and
//! finished in a staging folder of the data dir as for a local target, then uploaded under
//! the same relative name below the target's prefix: with one PUT up to `PART_BYTES`, else as
//! a multipart upload completed only once every part is in. Either way an object appears
//! whole or not at all.
//!
//! The ids of the multipart uploads begun are kept in `{state_dir}/parquet-uploads.json`
//! until they are completed or aborted, so those a crash abandoned are aborted on the next
//! start: some S3-compatible servers cannot list them, and S3 bills their parts until then.
//!
//! Object names carry the node id and the WAL position of their first row (see `layout`), so
//! a replay after a crash uploads an object under the name it had before and replaces it
//! instead of adding a second copy.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use serde::{Deserialize, Serialize};

use crate::config::S3Target;
use crate::durable;

/// Files up to this size go up in one PUT; larger ones in parts of this size (S3 wants
/// at least 5 MiB a part, and at most 10,000 parts: 80 GiB, far above any file here).
const PART_BYTES: usize = 8 << 20;
/// Parts uploaded at once: what a multipart upload holds in memory.
const PARTS_IN_FLIGHT: usize = 4;
/// The client's own retries smooth over a dropped connection; longer outages are the sink's
/// to handle (it backs off, reports itself degraded, and replays from its checkpoint).
const CLIENT_RETRIES: usize = 2;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("{action} {object} in {url}: {}", with_causes(source))]
    Store { action: &'static str, object: String, url: String, source: Box<object_store::Error> },
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("S3 client for {url}: {}", with_causes(source))]
    Client { url: String, source: Box<object_store::Error> },
}

/// The error and its causes, each once: the client's own message often stops at "error
/// sending request", and the reason (connection refused, a TLS failure) is further down.
fn with_causes(error: &object_store::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(next) = cause {
        let message = next.to_string();
        if !text.contains(&message) {
            text = format!("{text}: {message}");
        }
        cause = next.source();
    }
    text
}

/// A multipart upload begun and not yet completed or aborted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct OpenUpload {
    object: String,
    id: String,
}

pub struct Bucket {
    store: AmazonS3,
    bucket: String,
    url: String,
    /// Object names start with this (empty, or ending with `/`).
    prefix: String,
    runtime: tokio::runtime::Runtime,
    uploads_path: PathBuf,
    uploads: Vec<OpenUpload>,
}

impl Bucket {
    /// Sets up the client (no request is made yet) and loads the uploads left open.
    pub fn open(target: &S3Target, state_dir: &Path) -> Result<Bucket, BucketError> {
        let url = target.url();
        let client = |source| BucketError::Client { url: url.clone(), source: Box::new(source) };
        // The standard AWS_* variables first (credentials, session token, ...); what the
        // config sets wins.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&target.bucket)
            .with_region(&target.region)
            .with_virtual_hosted_style_request(!target.path_style)
            .with_allow_http(target.allow_http)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(target.allow_http)
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_timeout(REQUEST_TIMEOUT),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: CLIENT_RETRIES,
                retry_timeout: REQUEST_TIMEOUT,
            });
        if !target.endpoint.is_empty() {
            builder = builder.with_endpoint(&target.endpoint);
        }
        if !target.access_key_id.is_empty() {
            builder = builder.with_access_key_id(&target.access_key_id);
        }
        if !target.secret_access_key.is_empty() {
            builder = builder.with_secret_access_key(&target.secret_access_key);
        }
        let store = builder.build().map_err(client)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("parquet-upload")
            .build()
            .map_err(|source| BucketError::Io {
                action: "start the upload runtime",
                path: PathBuf::new(),
                source,
            })?;
        let uploads_path = state_dir.join("parquet-uploads.json");
        let uploads = match std::fs::read(&uploads_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| BucketError::Io {
                action: "read",
                path: uploads_path.clone(),
                source: std::io::Error::other(format!("damaged: {e}")),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(BucketError::Io { action: "read", path: uploads_path, source }),
        };
        let prefix = if target.prefix.is_empty() { String::new() } else { format!("{}/", target.prefix) };
        Ok(Bucket { store, bucket: target.bucket.clone(), url, prefix, runtime, uploads_path, uploads })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Lists the prefix once, so wrong settings (no such bucket, refused credentials, nothing
    /// at the endpoint) show at start rather than at the first upload, and aborts the uploads
    /// an earlier run left open.
    pub fn check(&mut self) -> Result<(), BucketError> {
        let prefix = ObjectPath::from(self.prefix.trim_end_matches('/'));
        self.runtime.block_on(self.store.list_with_delimiter(Some(&prefix))).map_err(|source| {
            BucketError::Store {
                action: "list",
                object: self.prefix.clone(),
                url: self.url.clone(),
                source: Box::new(source),
            }
        })?;
        self.abort_abandoned()
    }

    /// Uploads the finished file `local` as `{prefix}{relative}`, replacing an object of that
    /// name, and removes the local file. Returns the object's `s3://` address.
    pub fn upload(&mut self, local: &Path, relative: &str) -> Result<String, BucketError> {
        let object = format!("{}{relative}", self.prefix);
        let result = self.upload_file(local, &object);
        // Failed or not, the staged file has served: a retry replays the WAL and stages a new one.
        let _ = std::fs::remove_file(local);
        result.map(|()| format!("s3://{}/{object}", self.bucket))
    }

    fn upload_file(&mut self, local: &Path, object: &str) -> Result<(), BucketError> {
        let io = |action| move |source| BucketError::Io { action, path: local.to_owned(), source };
        let mut file = std::fs::File::open(local).map_err(io("open"))?;
        let size = file.metadata().map_err(io("read the size of"))?.len();
        let path = ObjectPath::from(object);
        if size <= PART_BYTES as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).map_err(io("read"))?;
            return self
                .runtime
                .block_on(self.store.put(&path, PutPayload::from(bytes)))
                .map(|_| ())
                .map_err(|source| self.error("put", object, source));
        }
        self.abort_abandoned()?;
        let id = self
            .runtime
            .block_on(self.store.create_multipart(&path))
            .map_err(|source| self.error("begin the upload of", object, source))?;
        self.remember(OpenUpload { object: object.to_owned(), id: id.clone() })?;
        let uploaded = self.runtime.block_on(upload_parts(&self.store, &path, &id, &mut file));
        let completed = match uploaded {
            Ok(parts) => self
                .runtime
                .block_on(self.store.complete_multipart(&path, &id, parts))
                .map(|_| ())
                .map_err(|source| self.error("complete the upload of", object, source)),
            Err(PartError::Store(source)) => Err(self.error("upload a part of", object, source)),
            Err(PartError::Read(source)) => {
                Err(BucketError::Io { action: "read", path: local.to_owned(), source })
            }
        };
        match completed {
            Ok(()) => self.forget(&id),
            Err(error) => {
                // Best effort: if the abort fails too, the next start or upload tries again.
                if self.runtime.block_on(self.store.abort_multipart(&path, &id)).is_ok() {
                    self.forget(&id)?;
                }
                Err(error)
            }
        }
    }

    fn abort_abandoned(&mut self) -> Result<(), BucketError> {
        for upload in self.uploads.clone() {
            let path = ObjectPath::from(upload.object.as_str());
            match self.runtime.block_on(self.store.abort_multipart(&path, &upload.id)) {
                // Already gone (completed or aborted before the record was updated): fine.
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    tracing::info!(sink = super::NAME, object = %upload.object, "aborted an upload an earlier run left open");
                    self.forget(&upload.id)?;
                }
                Err(source) => {
                    return Err(self.error("abort the abandoned upload of", &upload.object, source));
                }
            }
        }
        Ok(())
    }

    fn remember(&mut self, upload: OpenUpload) -> Result<(), BucketError> {
        self.uploads.push(upload);
        self.save_uploads()
    }

    fn forget(&mut self, id: &str) -> Result<(), BucketError> {
        self.uploads.retain(|u| u.id != id);
        self.save_uploads()
    }

    fn save_uploads(&self) -> Result<(), BucketError> {
        let bytes = serde_json::to_vec(&self.uploads).expect("upload ids serialise");
        durable::write_file(&self.uploads_path, &bytes).map_err(|source| BucketError::Io {
            action: "save",
            path: self.uploads_path.clone(),
            source,
        })
    }

    fn error(&self, action: &'static str, object: &str, source: object_store::Error) -> BucketError {
        BucketError::Store {
            action,
            object: object.to_owned(),
            url: self.url.clone(),
            source: Box::new(source),
        }
    }
}

enum PartError {
    Store(object_store::Error),
    Read(std::io::Error),
}

/// Uploads `file` in parts of `PART_BYTES`, `PARTS_IN_FLIGHT` at a time.
async fn upload_parts(
    store: &AmazonS3,
    path: &ObjectPath,
    id: &str,
    file: &mut std::fs::File,
) -> Result<Vec<PartId>, PartError> {
    let mut parts = Vec::new();
    loop {
        let mut chunks = Vec::with_capacity(PARTS_IN_FLIGHT);
        for _ in 0..PARTS_IN_FLIGHT {
            let mut chunk = Vec::with_capacity(PART_BYTES);
            file.by_ref().take(PART_BYTES as u64).read_to_end(&mut chunk).map_err(PartError::Read)?;
            if chunk.is_empty() {
                break;
            }
            chunks.push(chunk);
        }
        if chunks.is_empty() {
            return Ok(parts);
        }
        let first = parts.len();
        let id = id.to_owned();
        let uploads = chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| store.put_part(path, &id, first + i, PutPayload::from(chunk)));
        parts.extend(futures_util::future::try_join_all(uploads).await.map_err(PartError::Store)?);
    }
}
