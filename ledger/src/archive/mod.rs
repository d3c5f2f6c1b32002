//! The archive: a second, write-once home for the evidence on object
//! storage (S3 or any S3-compatible server; a local directory as the
//! embedded default).
//!
//! Sealed segments, checkpoints, policy texts, signer keys and the origin
//! are copied there as immutable objects (`layout`), each written with a
//! conditional put that never overwrites (`If-None-Match: *` on S3), so an
//! upload is idempotent: a second put of the same bytes finds them there,
//! and a put of other bytes under a taken name is refused and reported.
//! `upload` copies what a ledger directory has and the archive lacks;
//! `restore` rebuilds a ledger directory from the archive alone.
//!
//! The object store client is async; the archive drives it on a runtime of
//! its own, so that callers (the consumer's loop, the CLI) stay
//! synchronous.

mod continuation;
pub mod layout;
mod restore;
mod upload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::store::StoreError;

pub use continuation::{Continuation, continue_chain};
pub use restore::{RestoreReport, ledger_checkpoints, restore};
pub use upload::{ArchiveProgress, Uploader, unarchived};

/// What went wrong with the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive URL {url:?}: {detail}")]
    Url { url: String, detail: String },
    #[error("archive {location}: {source}")]
    Store {
        location: String,
        source: object_store::Error,
    },
    /// A name the archive already holds with other bytes: someone else
    /// wrote there (another writer extending the same chain, or a ledger
    /// that is not this one).
    #[error(
        "archive object {location} already holds other bytes than this ledger's ({detail}); nothing was overwritten"
    )]
    Conflict { location: String, detail: String },
    /// An archived object that does not read as what its name says.
    #[error("archive object {location}: {detail}")]
    Damaged { location: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ledger(#[from] StoreError),
}

/// The outcome of a write-once put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The object did not exist; it does now.
    Created,
    /// The object existed with the same bytes (an earlier upload got
    /// there first): nothing to do.
    AlreadyThere,
}

/// An archive: an object store and the prefix the ledger's objects live
/// under.
///
/// With `LIFELEDGER_ARCHIVE_OBJECT_LOCK=true`, puts to S3 also carry
/// `x-amz-sdk-checksum-algorithm` (beside the SHA-256 checksum they always
/// carry), which a bucket with Object Lock default retention demands of
/// every upload. The client sends it as a default header, outside the
/// request signature, so it is off unless asked for.
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    /// For S3: how to build a client again (for puts that carry a
    /// retention date).
    s3: Option<S3Config>,
    prefix: ObjectPath,
    /// For messages: the URL the archive was opened with.
    url: String,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("url", &self.url).finish()
    }
}

impl Archive {
    /// Opens the archive at `url`: `s3://BUCKET/PREFIX` (credentials,
    /// region and endpoint from the usual `AWS_*` environment variables,
    /// e.g. `AWS_ENDPOINT` and `AWS_ALLOW_HTTP=true` for a local server),
    /// or `file:///PATH` or a plain path (a local directory, created if
    /// missing).
    pub fn open(url: &str) -> Result<Archive, ArchiveError> {
        Archive::open_with(url, &[])
    }

    /// [`Archive::open`], with settings that take precedence over the
    /// environment variables of the same names (`AWS_ENDPOINT`,
    /// `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `LIFELEDGER_ARCHIVE_OBJECT_LOCK`), e.g. from a config
    /// file.
    pub fn open_with(url: &str, settings: &[(String, String)]) -> Result<Archive, ArchiveError> {
        let setting = |name: &str| -> Option<String> {
            settings
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(name).ok())
        };
        let bad = |detail: String| ArchiveError::Url {
            url: url.to_owned(),
            detail,
        };
        let mut s3_config = None;
        let (store, prefix): (Arc<dyn ObjectStore>, String) = if let Some(rest) =
            url.strip_prefix("s3://")
        {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("names no bucket".to_owned()));
            }
            let config = S3Config {
                bucket: bucket.to_owned(),
                endpoint: setting("AWS_ENDPOINT"),
                access_key_id: setting("AWS_ACCESS_KEY_ID"),
                secret_access_key: setting("AWS_SECRET_ACCESS_KEY"),
                region: setting("AWS_REGION"),
                allow_http: setting("AWS_ALLOW_HTTP").is_some_and(|v| v == "true"),
                object_lock: setting("LIFELEDGER_ARCHIVE_OBJECT_LOCK")
                    .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes")),
                retention_days: match setting("LIFELEDGER_ARCHIVE_RETENTION_DAYS") {
                    None => None,
                    Some(v) => Some(v.parse::<u32>().map_err(|_| {
                        bad(format!(
                            "LIFELEDGER_ARCHIVE_RETENTION_DAYS {v:?} is not a number of days"
                        ))
                    })?),
                },
            };
            let s3 = config.store(None).map_err(|e| bad(e.to_string()))?;
            s3_config = Some(config);
            (Arc::new(s3), prefix.trim_matches('/').to_owned())
        } else {
            let path = match url.strip_prefix("file://") {
                Some(p) => PathBuf::from(p),
                None if url.contains("://") => {
                    return Err(bad(
                        "only s3:// and file:// archives (or a plain path) are known".to_owned(),
                    ));
                }
                None => PathBuf::from(url),
            };
            std::fs::create_dir_all(&path).map_err(|source| ArchiveError::Io {
                path: path.clone(),
                source,
            })?;
            let local = LocalFileSystem::new_with_prefix(&path).map_err(|e| bad(e.to_string()))?;
            (Arc::new(local), String::new())
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ArchiveError::Io {
                path: PathBuf::from(url),
                source,
            })?;
        Ok(Archive {
            store,
            s3: s3_config,
            prefix: ObjectPath::from(prefix),
            url: url.to_owned(),
            runtime,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, name: &str) -> ObjectPath {
        if self.prefix.as_ref().is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    fn store_error(&self, name: &str, source: object_store::Error) -> ArchiveError {
        ArchiveError::Store {
            location: format!("{}/{name}", self.url.trim_end_matches('/')),
            source,
        }
    }

    /// Writes `bytes` as `name` if no object has that name. If one has,
    /// reads it: the same bytes are [`Put::AlreadyThere`], other bytes a
    /// [`ArchiveError::Conflict`]. Never overwrites.
    pub fn put_new(&self, name: &str, bytes: Bytes) -> Result<Put, ArchiveError> {
        let path = self.path(name);
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        // With a retention date, the put goes through a client whose
        // headers carry it (computed now: today + the configured days).
        let dated = match &self.s3 {
            Some(config) if config.retention_days.is_some() => {
                let until = config.retain_until();
                Some(
                    Arc::new(config.store(until).map_err(|e| self.store_error(name, e))?)
                        as Arc<dyn ObjectStore>,
                )
            }
            _ => None,
        };
        let store = dated.as_ref().unwrap_or(&self.store);
        let put = self.runtime.block_on(store.put_opts(
            &path,
            PutPayload::from_bytes(bytes.clone()),
            options,
        ));
        match put {
            Ok(_) => Ok(Put::Created),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => match self.get(name)? {
                Some(there) if there == bytes => Ok(Put::AlreadyThere),
                Some(there) => Err(ArchiveError::Conflict {
                    location: format!("{}/{name}", self.url.trim_end_matches('/')),
                    detail: format!(
                        "{} bytes there, BLAKE3 {}; {} bytes here, BLAKE3 {}",
                        there.len(),
                        blake3::hash(&there).to_hex(),
                        bytes.len(),
                        blake3::hash(&bytes).to_hex()
                    ),
                }),
                None => Err(ArchiveError::Conflict {
                    location: format!("{}/{name}", self.url.trim_end_matches('/')),
                    detail:
                        "the server refused the put as if the object existed, but it cannot be read"
                            .to_owned(),
                }),
            },
            Err(e) => Err(self.store_error(name, e)),
        }
    }

    /// The bytes of object `name`, or `None` if there is none.
    pub fn get(&self, name: &str) -> Result<Option<Bytes>, ArchiveError> {
        let path = self.path(name);
        let got = self.runtime.block_on(async {
            let result = self.store.get(&path).await?;
            result.bytes().await
        });
        match got {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error(name, e)),
        }
    }

    /// Every object under `dir` (a name relative to the prefix, or "" for
    /// all), as (name relative to the prefix, size), sorted by name.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, ArchiveError> {
        let under = if dir.is_empty() {
            self.prefix.clone()
        } else {
            self.path(dir)
        };
        let prefix_len = if self.prefix.as_ref().is_empty() {
            0
        } else {
            self.prefix.as_ref().len() + 1
        };
        let listed: Result<Vec<_>, _> = self
            .runtime
            .block_on(self.store.list(Some(&under)).try_collect::<Vec<_>>());
        let mut out: Vec<(String, u64)> = listed
            .map_err(|e| self.store_error(dir, e))?
            .into_iter()
            .filter_map(|meta| {
                let name = meta.location.as_ref().get(prefix_len..)?.to_owned();
                Some((name, meta.size))
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

/// What an S3 client is built from.
#[derive(Debug, Clone)]
struct S3Config {
    bucket: String,
    endpoint: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    region: Option<String>,
    allow_http: bool,
    /// Send `x-amz-sdk-checksum-algorithm`, which a bucket with Object
    /// Lock demands of every upload.
    object_lock: bool,
    /// Every object written gets Object Lock in compliance mode until this
    /// many days after its upload.
    retention_days: Option<u32>,
}

impl S3Config {
    fn retain_until(&self) -> Option<jiff::Timestamp> {
        let days = self.retention_days?;
        jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(24 * i64::from(days)))
            .ok()
    }

    /// A client; with `retain_until`, every put it makes carries Object
    /// Lock in compliance mode until then. Extra headers go as the HTTP
    /// client's default headers, which the request signature does not
    /// cover (the client offers no other way).
    fn store(
        &self,
        retain_until: Option<jiff::Timestamp>,
    ) -> Result<object_store::aws::AmazonS3, object_store::Error> {
        let mut s3 = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_checksum_algorithm(object_store::aws::Checksum::SHA256);
        if let Some(v) = &self.endpoint {
            s3 = s3.with_endpoint(v);
        }
        if let Some(v) = &self.access_key_id {
            s3 = s3.with_access_key_id(v);
        }
        if let Some(v) = &self.secret_access_key {
            s3 = s3.with_secret_access_key(v);
        }
        if let Some(v) = &self.region {
            s3 = s3.with_region(v);
        }
        s3 = s3.with_allow_http(self.allow_http);
        let mut headers = http::HeaderMap::new();
        if self.object_lock || retain_until.is_some() {
            headers.insert(
                "x-amz-sdk-checksum-algorithm",
                http::HeaderValue::from_static("SHA256"),
            );
        }
        if let Some(until) = retain_until {
            headers.insert(
                "x-amz-object-lock-mode",
                http::HeaderValue::from_static("COMPLIANCE"),
            );
            let date = until.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            if let Ok(v) = http::HeaderValue::from_str(&date) {
                headers.insert("x-amz-object-lock-retain-until-date", v);
            }
        }
        if !headers.is_empty() {
            // These options replace those `from_env` read; of them, only
            // AWS_ALLOW_HTTP matters here, and it is set again.
            s3 = s3.with_client_options(
                object_store::ClientOptions::new()
                    .with_allow_http(self.allow_http)
                    .with_default_headers(headers),
            );
        }
        s3.build()
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_owned(),
        source,
    }
}
