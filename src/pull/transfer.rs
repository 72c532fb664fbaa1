//! Blob transfer: one bounded pool (`--jobs`) downloads every missing blob once, streaming
//! each from the socket through a hashing, counting, size-capped reader into a temp file in
//! the store, and committing it only when size and digest match. A stream that breaks
//! mid-blob continues with `Range` from the byte it reached, keeping the hash state.

use std::collections::HashSet;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::time::Instant;

use crate::digest::{Digest, Hasher, HashingReader};
use crate::layer::diffid::{self, DiffId};
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
    #[error("interrupted while downloading {digest}; what arrived is kept for the next pull")]
    Interrupted { digest: Digest },
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
    let fetched = super::pool::in_order(&unique, parallel, |j| fetch_one(registry, store, j));
    registry.reporter().transfer_finished();
    fetched
}

fn fetch_one(registry: &Registry, store: &Store, job: &BlobJob) -> Fetched {
    let d = &job.descriptor;
    let reporter = registry.reporter();
    let fetched = |bytes_received, result| Fetched {
        digest: d.digest.clone(),
        bytes_received,
        result,
    };
    if !store.has_blob(&d.digest, d.size) {
        // Another process may be fetching this blob into the same store: wait for it, then
        // look again rather than fetch it a second time.
        let lock = match store.lock_blob(&d.digest) {
            Ok(lock) => lock,
            Err(e) => return fetched(0, Err(e.into())),
        };
        if !store.has_blob(&d.digest, d.size) {
            let mut received = 0;
            let result = download(registry, store, job, &mut received);
            if result.is_err() && store.partial_len(&d.digest) == Some(0) {
                // Nothing arrived (a 404, say): no partial worth keeping for a later run.
                store.discard_partial(&d.digest);
            }
            drop(lock);
            if result.is_ok() {
                reporter.blob_done(&d.digest, d.size);
            }
            return fetched(received, result);
        }
    }
    reporter.blob_skipped(&d.digest, d.size);
    let result = match job.diff_id {
        false => Ok(None),
        true => stored_diff_id(store, &d.digest, reporter.as_ref()).map(Some),
    };
    fetched(0, result)
}

/// The diff_id of a layer already in the store: its record when there is one, else computed
/// from the file (a local pass) and recorded, so that it is computed once per store.
pub fn stored_diff_id(
    store: &Store,
    digest: &Digest,
    reporter: &dyn crate::report::Reporter,
) -> Result<(Digest, bool), TransferError> {
    if let Some(known) = store.recorded_diff_id(digest) {
        return Ok(known);
    }
    if reporter.is_verbose() {
        reporter.verbose(&format!("computing the diff_id of {digest} from the store"));
    }
    let (diff_id, gzip) = diffid::of_file(&store.blob_path(digest), digest).map_err(|source| {
        TransferError::Layer {
            digest: digest.clone(),
            source,
        }
    })?;
    // A record we cannot write (a store another user owns) only costs the next run a pass.
    let _ = store.record_diff_id(digest, &diff_id, gzip);
    Ok((diff_id, gzip))
}

/// Download one blob into its partial file and commit it. What an earlier, interrupted run left
/// in the partial file is re-hashed (a local read) and only the rest is asked for, with Range;
/// a stream that breaks is resumed the same way. A blob whose bytes turn out wrong is deleted,
/// partial and all, so the next run starts afresh.
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
    let partial = store.partial_path(&d.digest);
    let file_err = |action: &'static str| {
        let path = partial.clone();
        move |source| {
            TransferError::from(StoreError::Io {
                action,
                path,
                source,
            })
        }
    };
    let mut file = store.open_partial(&d.digest)?;
    let mut hasher = Hasher::new();
    let mut diff_id = job.diff_id.then(DiffId::new);
    let have = file.metadata().map_err(file_err("reading"))?.len();
    if have > d.size {
        file.set_len(0).map_err(file_err("truncating"))?;
    } else if have > 0 {
        rehash(&mut file, &mut hasher, diff_id.as_mut()).map_err(file_err("reading"))?;
    }
    file.seek(io::SeekFrom::End(0))
        .map_err(file_err("seeking in"))?;
    let mut attempt = 1;
    let mut started = false;
    loop {
        if crate::interrupt::requested() {
            return Err(TransferError::Interrupted {
                digest: d.digest.clone(),
            });
        }
        let offset = hasher.count();
        let (body, start): (Box<dyn Read + Send>, u64) = if offset == d.size {
            // Everything is already here from an earlier run: only the check is left.
            (Box::new(io::empty()), offset)
        } else {
            registry.open_blob(&job.source, &d.digest, offset)?
        };
        if start != offset {
            // The server ignored our Range and sent the whole blob: start over.
            file.set_len(0).map_err(file_err("truncating"))?;
            file.rewind().map_err(file_err("seeking in"))?;
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
            &mut file,
            diff_id.as_mut(),
            &d.digest,
            registry,
            received,
        ) {
            Ok(()) => {
                let verified = reader.finish(&d.digest).map_err(|source| {
                    ClientError::from(RegistryError::Body { url: url(), source })
                })?;
                if let Err(source) = verified {
                    store.discard_partial(&d.digest);
                    return Err(ClientError::from(RegistryError::BlobVerify {
                        digest: d.digest.clone(),
                        url: url(),
                        source,
                    })
                    .into());
                }
                let diff_id =
                    diff_id
                        .map(|t| t.finish(&d.digest))
                        .transpose()
                        .map_err(|source| TransferError::Layer {
                            digest: d.digest.clone(),
                            source,
                        })?;
                store.commit_partial(file, &d.digest)?;
                if let Some((id, gzip)) = &diff_id {
                    store.record_diff_id(&d.digest, id, *gzip)?;
                }
                return Ok(diff_id);
            }
            Err(CopyError::Interrupted) => {
                return Err(TransferError::Interrupted {
                    digest: d.digest.clone(),
                })
            }
            Err(CopyError::Layer(e)) => {
                return Err(TransferError::Layer {
                    digest: d.digest.clone(),
                    source: e,
                })
            }
            Err(CopyError::Write(e)) => return Err(file_err("writing")(e)),
            Err(CopyError::Read(e)) => {
                hasher = reader.hasher().clone();
                // A stream that moved forward before breaking is not failing, just flaky: count
                // attempts from here (the whole run stays bounded by --timeout).
                if hasher.count() > offset {
                    attempt = 1;
                }
                let err = RegistryError::Body {
                    url: url(),
                    source: e,
                };
                if !err.is_transient() || attempt >= registry.attempts() {
                    return Err(ClientError::from(err).into());
                }
                let delay = crate::registry::retry::backoff(attempt, None);
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

/// Feed what a partial file holds to the hashers (from its start).
fn rehash(
    file: &mut std::fs::File,
    hasher: &mut Hasher,
    mut diff_id: Option<&mut DiffId>,
) -> io::Result<()> {
    file.rewind()?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
        if let Some(t) = diff_id.as_deref_mut() {
            t.update(&buf[..n])?;
        }
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
    Layer(io::Error),
    Interrupted,
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
        if crate::interrupt::requested() {
            break Err(CopyError::Interrupted);
        }
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
    if d.size > max {
        let url = registry.url_of(source, &format!("blobs/{}", d.digest))?;
        return Err(ClientError::from(RegistryError::ManifestTooLarge { url, limit: max }).into());
    }
    Ok(registry.get_small_blob(source, &d.digest, d.size)?)
}
