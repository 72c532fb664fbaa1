//! Blob transfer: one bounded pool (`--jobs`) downloads every missing blob once, streaming
//! each from the socket through a hashing, counting, size-capped reader into a temp file in
//! the store, and committing it only when size and digest match. A stream that breaks
//! mid-blob continues with `Range` from the byte it reached, keeping the hash state.

use std::collections::HashSet;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::time::Instant;

use rayon::prelude::*;

use crate::diffid::{self, DiffId};
use crate::digest::{Digest, Hasher, HashingReader};
use crate::manifest::Descriptor;
use crate::reference::Reference;
use crate::registry::{ClientError, Registry, RegistryError};
use crate::store::{Store, StoreError};

/// Configs are small; a "config" larger than this is not one we will hold in memory.
pub const MAX_CONFIG: u64 = 16 << 20;

/// A blob to fetch and the repository to fetch it from.
#[derive(Debug, Clone)]
pub struct BlobJob {
    pub source: Reference,
    pub descriptor: Descriptor,
    /// Also compute the layer's diff_id (schema1 layers: their config is made from these).
    pub diff_id: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("layer {digest} is not a valid gzip stream: {source}")]
    Layer {
        digest: Digest,
        #[source]
        source: io::Error,
    },
}

/// The outcome for one blob: bytes received over the network (0 when it was already there),
/// and its diff_id with whether it is gzip, when asked for.
#[derive(Debug)]
pub struct Fetched {
    pub digest: Digest,
    pub bytes_received: u64,
    pub result: Result<Option<(Digest, bool)>, TransferError>,
}

/// Fetch every blob in `jobs` that the store lacks, each distinct digest once, at most
/// `parallel` at a time. Larger blobs start first: the last one to finish decides the wall
/// time, so the big ones must not be queued behind small ones.
pub fn fetch_all(
    registry: &Registry,
    store: &Store,
    jobs: Vec<BlobJob>,
    parallel: usize,
) -> Vec<Fetched> {
    // One job per digest; its diff_id is wanted if any image sharing it wants it.
    let want_diff_id: HashSet<Digest> = jobs
        .iter()
        .filter(|j| j.diff_id)
        .map(|j| j.descriptor.digest.clone())
        .collect();
    let mut seen = HashSet::new();
    let mut unique: Vec<BlobJob> = jobs
        .into_iter()
        .filter(|j| seen.insert(j.descriptor.digest.clone()))
        .map(|j| BlobJob {
            diff_id: want_diff_id.contains(&j.descriptor.digest),
            ..j
        })
        .collect();
    unique.sort_by_key(|j| std::cmp::Reverse(j.descriptor.size));
    let missing: Vec<u64> = unique
        .iter()
        .filter(|j| !store.has_blob(&j.descriptor.digest, j.descriptor.size))
        .map(|j| j.descriptor.size)
        .collect();
    registry.reporter().transfer_planned(
        missing.len(),
        missing.iter().fold(0u64, |a, b| a.saturating_add(*b)),
    );
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(parallel.max(1))
        .thread_name(|i| format!("imagec-transfer-{i}"))
        .build()
    {
        Ok(p) => p,
        // Could not start threads (resource limits): do the work on this thread instead.
        Err(_) => {
            return unique
                .iter()
                .map(|j| fetch_one(registry, store, j))
                .collect()
        }
    };
    let fetched = pool.install(|| {
        unique
            .par_iter()
            .with_max_len(1)
            .map(|j| fetch_one(registry, store, j))
            .collect()
    });
    registry.reporter().transfer_finished();
    fetched
}

fn fetch_one(registry: &Registry, store: &Store, job: &BlobJob) -> Fetched {
    let d = &job.descriptor;
    let reporter = registry.reporter();
    if store.has_blob(&d.digest, d.size) {
        reporter.blob_skipped(&d.digest, d.size);
        let result = match job.diff_id {
            false => Ok(None),
            true => diffid::of_file(&store.blob_path(&d.digest), &d.digest)
                .map(Some)
                .map_err(|source| TransferError::Layer {
                    digest: d.digest.clone(),
                    source,
                }),
        };
        return Fetched {
            digest: d.digest.clone(),
            bytes_received: 0,
            result,
        };
    }
    let mut received = 0;
    let result = download(registry, store, job, &mut received);
    if result.is_ok() {
        reporter.blob_done(&d.digest, d.size);
    }
    Fetched {
        digest: d.digest.clone(),
        bytes_received: received,
        result,
    }
}

fn download(
    registry: &Registry,
    store: &Store,
    job: &BlobJob,
    received: &mut u64,
) -> Result<Option<(Digest, bool)>, TransferError> {
    let d = &job.descriptor;
    let reporter = registry.reporter();
    let url = || {
        registry
            .url_of(&job.source, &format!("blobs/{}", d.digest))
            .unwrap_or_default()
    };
    let mut tmp = store.temp_for(&d.digest)?;
    let mut hasher = Hasher::new();
    let mut diff_id = job.diff_id.then(DiffId::new);
    let mut attempt = 1;
    let mut started = false;
    loop {
        let offset = hasher.count();
        let (body, start) = registry.open_blob(&job.source, &d.digest, offset)?;
        if start != offset {
            // The server ignored our Range and sent the whole blob: start over.
            tmp.as_file_mut().set_len(0).map_err(io(tmp.path()))?;
            tmp.as_file_mut().rewind().map_err(io(tmp.path()))?;
            hasher = Hasher::new();
            diff_id = job.diff_id.then(DiffId::new);
        }
        if !started {
            reporter.blob_started(&d.digest, d.size, start);
            started = true;
        }
        let mut reader = HashingReader::new(body, hasher.clone(), d.size);
        match copy_with_progress(
            &mut reader,
            tmp.as_file_mut(),
            diff_id.as_mut(),
            &d.digest,
            registry,
            received,
        ) {
            Ok(()) => {
                let verified = reader.finish(&d.digest).map_err(|source| {
                    ClientError::from(RegistryError::Body { url: url(), source })
                })?;
                verified.map_err(|source| {
                    ClientError::from(RegistryError::BlobVerify {
                        digest: d.digest.clone(),
                        url: url(),
                        source,
                    })
                })?;
                let diff_id =
                    diff_id
                        .map(|t| t.finish(&d.digest))
                        .transpose()
                        .map_err(|source| TransferError::Layer {
                            digest: d.digest.clone(),
                            source,
                        })?;
                store.commit(tmp, &d.digest)?;
                return Ok(diff_id);
            }
            Err(CopyError::Layer(e)) => {
                return Err(TransferError::Layer {
                    digest: d.digest.clone(),
                    source: e,
                })
            }
            Err(CopyError::Write(e)) => {
                return Err(StoreError::Io {
                    action: "writing",
                    path: tmp.path().to_path_buf(),
                    source: e,
                }
                .into())
            }
            Err(CopyError::Read(e)) => {
                hasher = reader.hasher().clone();
                let err = RegistryError::Body {
                    url: url(),
                    source: e,
                };
                if !err.is_transient() || attempt >= registry.attempts() {
                    return Err(ClientError::from(err).into());
                }
                let delay = crate::retry::backoff(attempt, None);
                reporter.retrying(
                    &format!("{} from byte {}", d.digest.short(), hasher.count()),
                    attempt,
                    delay,
                    &err.to_string(),
                );
                std::thread::sleep(delay);
                attempt += 1;
            }
        }
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
    Layer(io::Error),
}

/// Copy until EOF or the size cap, reporting progress; the file is flushed before returning
/// so that its length always equals the bytes hashed.
fn copy_with_progress<R: Read>(
    reader: &mut HashingReader<R>,
    file: &mut std::fs::File,
    mut diff_id: Option<&mut DiffId>,
    digest: &Digest,
    registry: &Registry,
    received: &mut u64,
) -> Result<(), CopyError> {
    let reporter = registry.reporter();
    let mut out = BufWriter::with_capacity(1 << 16, file);
    let mut buf = vec![0u8; 1 << 16];
    let mut pending = 0u64;
    let mut last = Instant::now();
    let result = loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(CopyError::Read(e)),
        };
        if let Err(e) = out.write_all(&buf[..n]) {
            return Err(CopyError::Write(e));
        }
        if let Some(t) = diff_id.as_deref_mut() {
            t.update(&buf[..n]).map_err(CopyError::Layer)?;
        }
        *received += n as u64;
        pending += n as u64;
        if last.elapsed().as_millis() >= 100 {
            reporter.blob_progress(digest, pending);
            pending = 0;
            last = Instant::now();
        }
    };
    if pending > 0 {
        reporter.blob_progress(digest, pending);
    }
    out.flush().map_err(CopyError::Write)?;
    result
}

fn io(path: &std::path::Path) -> impl FnOnce(io::Error) -> TransferError + '_ {
    move |source| {
        StoreError::Io {
            action: "truncating",
            path: path.to_path_buf(),
            source,
        }
        .into()
    }
}

/// Read a small blob (an image config) into memory, verified, from the store when it is there
/// and from the registry otherwise. Nothing is written.
pub fn read_small_blob(
    registry: &Registry,
    store: Option<&Store>,
    source: &Reference,
    d: &Descriptor,
    max: u64,
) -> Result<Vec<u8>, TransferError> {
    if let Some(store) = store {
        if let Some(bytes) = store.read_blob(&d.digest, max)? {
            return Ok(bytes);
        }
    }
    let url = registry.url_of(source, &format!("blobs/{}", d.digest))?;
    if d.size > max {
        return Err(ClientError::from(RegistryError::ManifestTooLarge { url, limit: max }).into());
    }
    registry
        .with_retries(&format!("GET {url}"), || {
            let (body, _) = registry
                .open_blob(source, &d.digest, 0)
                .map_err(|e| match e {
                    ClientError::Registry(r) => r,
                    ClientError::Credentials(c) => RegistryError::TokenInvalid {
                        realm: source.registry().to_string(),
                        reason: c.to_string(),
                    },
                })?;
            let mut reader = HashingReader::new(body, Hasher::new(), d.size);
            let mut bytes = Vec::with_capacity(d.size as usize);
            reader
                .read_to_end(&mut bytes)
                .map_err(|source| RegistryError::Body {
                    url: url.clone(),
                    source,
                })?;
            reader
                .finish(&d.digest)
                .map_err(|source| RegistryError::Body {
                    url: url.clone(),
                    source,
                })?
                .map_err(|source| RegistryError::BlobVerify {
                    digest: d.digest.clone(),
                    url: url.clone(),
                    source,
                })?;
            Ok(bytes)
        })
        .map_err(|e| ClientError::from(e).into())
}
