//! Blob transfer: the pool (`--jobs`) takes the plan's blobs largest first and streams each
//! missing one from the socket into its `store::Ingest` (which owns the partial file, the hash
//! and diff_id state, and the verified commit); this file keeps only the copy loop around it.
//! A stream that breaks, or ends short, continues with `Range` from the byte it reached, under
//! the registry's retry policy.

use std::io::{self, Read};

use super::plan::{Plan, PlannedBlob};
use super::pool::Budget;
use crate::cancel::Cancel;
use crate::digest::Digest;
use crate::layer::diffid;
use crate::manifest::Descriptor;
use crate::reference::Reference;
use crate::registry::{ClientError, Registry, RegistryError};
use crate::store::cache::{Cache, Linked};
use crate::store::ingest::{Begin, Ingest, IngestError};
use crate::store::{Store, StoreError};

/// Configs are small; a "config" larger than this is not one we will hold in memory.
pub const MAX_CONFIG: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("blob {digest} is not in the cache at {path} after its download (removed by another process?)")]
    NotInCache {
        digest: Digest,
        path: std::path::PathBuf,
    },
    #[error("interrupted while downloading {digest}; what arrived is kept for the next pull")]
    Interrupted { digest: Digest },
    #[error("layer {digest} is not a valid gzip stream: {source}")]
    Layer {
        digest: Digest,
        #[source]
        source: io::Error,
    },
}

impl crate::registry::retry::Retryable for TransferError {
    fn is_transient(&self) -> bool {
        match self {
            TransferError::Client(ClientError::Registry(e)) => e.is_transient(),
            _ => false,
        }
    }
    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            TransferError::Client(ClientError::Registry(e)) => e.retry_after(),
            _ => None,
        }
    }
    fn retried(self, attempts: u32, elapsed: std::time::Duration) -> Self {
        match self {
            TransferError::Client(ClientError::Registry(e)) => {
                ClientError::from(e.retried(attempts, elapsed)).into()
            }
            other => other,
        }
    }
    fn deadline(seconds: u64, last: String) -> Self {
        ClientError::from(RegistryError::Deadline { seconds, last }).into()
    }
}

/// The outcome for one blob: bytes received over the network (0 when it was already there),
/// and its diff_id with whether it is gzip, when asked for.
#[derive(Debug)]
pub struct Fetched {
    pub digest: Digest,
    pub bytes_received: u64,
    /// How it came from the shared cache into the store, when it did (nothing downloaded).
    pub linked: Option<Linked>,
    pub result: Result<Option<(Digest, bool)>, TransferError>,
}

/// Fetch every blob of the plan that the store lacks, at most `parallel` at a time, in the
/// plan's order (largest first).
/// `chunk_size`: blobs of at least this many bytes come as parallel Range chunks (0: never).
pub fn fetch_all(
    registry: &Registry,
    store: &Store,
    plan: &Plan,
    parallel: usize,
    chunk_size: u64,
    cache: Option<&Cache>,
    cancel: &Cancel,
) -> Vec<Fetched> {
    registry.reporter().transfer_planned(
        crate::report::Stage::Download,
        plan.missing().count(),
        plan.download_bytes(),
    );
    let fetched = super::pool::in_order(&plan.blobs, parallel, |b, budget| {
        let how = How {
            chunk_size,
            budget,
            cancel,
        };
        fetch_one(registry, store, cache, b, &how)
    });
    registry.reporter().transfer_finished();
    fetched
}

/// How one blob is fetched: in chunks from which size, with which spare connections.
struct How<'a> {
    chunk_size: u64,
    budget: &'a Budget,
    cancel: &'a Cancel,
}

fn fetch_one(
    registry: &Registry,
    store: &Store,
    cache: Option<&Cache>,
    job: &PlannedBlob,
    how: &How<'_>,
) -> Fetched {
    let d = &job.descriptor();
    let reporter = registry.reporter();
    let fetched = |bytes_received, linked, result| Fetched {
        digest: d.digest.clone(),
        bytes_received,
        linked,
        result,
    };
    if store.has_blob(&d.digest, d.size) {
        reporter.blob_skipped(&d.digest, d.size);
        return fetched(0, None, diff_id_of(store, job));
    }
    // Through a cache: linked from it when it holds the blob, else downloaded into it (under
    // its lock: another process fetching the same blob into it is waited for) and linked.
    let mut target = match cache {
        Some(cache) => match cache.link_into(store, &d.digest, d.size) {
            Err(e) => return fetched(0, None, Err(e.into())),
            Ok(Some(linked)) => {
                reporter.blob_linked(&d.digest, d.size, linked.as_str());
                return fetched(0, Some(linked), diff_id_of(store, job));
            }
            // A download the store began before the cache was used is resumed there.
            Ok(None) if cache.writable() && store.partial_len(&d.digest).unwrap_or(0) == 0 => {
                cache.store()
            }
            Ok(None) => store,
        },
        None => store,
    };
    // Another process may be fetching this blob into the same place: `begin_ingest` waits
    // for it, then finds the blob in place rather than fetch it a second time.
    let mut begun = ingest(registry, target, job, how);
    if matches!(&begun, Err(e) if e.is_denied()) && !std::ptr::eq(target, store) {
        // The cache's lock or partial for this blob is another user's (a pull once run
        // with sudo): this blob goes to the store alone.
        log::info!(
            "the cache cannot take {}: downloading it into the store alone",
            d.digest
        );
        target = store;
        begun = ingest(registry, store, job, how);
    }
    let downloaded = match begun {
        Err(e) => return fetched(0, None, Err(e.into())),
        Ok(None) => None,
        Ok(Some((received, Err(e)))) => return fetched(received, None, Err(e)),
        Ok(Some((received, Ok(diff_id)))) => Some((received, diff_id)),
    };
    let mut linked = None;
    if let Some(cache) = cache.filter(|_| !std::ptr::eq(target, store)) {
        let received = downloaded.as_ref().map_or(0, |(n, _)| *n);
        linked = match cache.link_into(store, &d.digest, d.size) {
            Ok(Some(l)) => Some(l),
            Ok(None) => {
                let path = cache.blob_path(&d.digest);
                let e = TransferError::NotInCache {
                    digest: d.digest.clone(),
                    path,
                };
                return fetched(received, None, Err(e));
            }
            Err(e) => return fetched(received, None, Err(e.into())),
        };
    }
    match downloaded {
        Some((received, diff_id)) => fetched(received, None, Ok(diff_id)),
        None => {
            match linked {
                // Fetched into the cache by another process while this one waited.
                Some(l) => reporter.blob_linked(&d.digest, d.size, l.as_str()),
                None => reporter.blob_skipped(&d.digest, d.size),
            }
            fetched(0, linked, diff_id_of(store, job))
        }
    }
}

/// The diff_id a stored blob's job asks for (none when it asks for none).
fn diff_id_of(store: &Store, job: &PlannedBlob) -> Result<Option<(Digest, bool)>, TransferError> {
    match job.diff_id {
        false => Ok(None),
        true => stored_diff_id(store, &job.digest).map(Some),
    }
}

/// Download one blob into `target` (a store or the cache) and commit it there. `None` when it
/// was there once its lock was held (another process fetched it); else the bytes received
/// and the outcome.
#[allow(clippy::type_complexity)]
fn ingest(
    registry: &Registry,
    target: &Store,
    job: &PlannedBlob,
    how: &How<'_>,
) -> Result<Option<(u64, Result<Option<(Digest, bool)>, TransferError>)>, StoreError> {
    let d = &job.descriptor();
    let reporter = registry.reporter();
    let Begin::Ingest(ingest) = target.begin_ingest(&d.digest, d.size, job.diff_id)? else {
        return Ok(None);
    };
    let mut received = 0;
    let mut served_by = Vec::new();
    let mut attempt_start = 0;
    let mut result = fetch_into(registry, job, *ingest, how, &mut received, &mut served_by);
    // Mirrors that served other bytes are passed over: the blob comes again from the next
    // source (the partial was discarded by the failed check). A blob begun at a mirror and
    // finished elsewhere after a resume counts as the mirror's: the registry's own bytes are
    // what the retry then fetches.
    while let Err(e) = &result {
        if served_by.is_empty() || !is_bad_bytes(e) {
            break;
        }
        for mirror in served_by.drain(..) {
            registry.distrust(&mirror, &d.digest);
        }
        // Whatever of it is kept came from that mirror.
        target.discard_partial(&d.digest);
        reporter.blob_rejected(&d.digest, received - attempt_start);
        attempt_start = received;
        result = match target.begin_ingest(&d.digest, d.size, job.diff_id) {
            Err(e) => Err(e.into()),
            Ok(Begin::Present) => Ok(None),
            Ok(Begin::Ingest(ingest)) => {
                fetch_into(registry, job, *ingest, how, &mut received, &mut served_by)
            }
        };
    }
    if result.is_ok() {
        reporter.blob_done(&d.digest, d.size);
    }
    Ok(Some((received, result)))
}

/// The diff_id of a layer already in the store: its record when there is one, else computed
/// from the file (a local pass) and recorded, so that it is computed once per store.
pub fn stored_diff_id(store: &Store, digest: &Digest) -> Result<(Digest, bool), TransferError> {
    if let Some(known) = store.recorded_diff_id(digest) {
        return Ok(known);
    }
    log::info!("computing the diff_id of {digest} from the store");
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

/// Stream one blob into its ingest and commit it. The ingest starts where an earlier run
/// stopped; a stream that breaks is resumed with Range from the byte it reached, under the
/// run's retry policy (an attempt that moved forward starts the count again).
/// Bytes that cannot be the blob: a wrong digest, more bytes than its size, or a layer that
/// is not the gzip its media type says. From a mirror, that is the mirror's fault.
fn is_bad_bytes(e: &TransferError) -> bool {
    matches!(
        e,
        TransferError::Client(ClientError::Registry(RegistryError::BlobVerify { .. }))
            | TransferError::Ingest(IngestError::TooLong { .. } | IngestError::Layer { .. })
    )
}

/// Fetch a blob into its ingest and commit it: in parallel chunks when it is large enough and
/// its registry answers them, else as one stream. `served_by` gets the mirrors that sent any
/// of the bytes kept (none: the registry alone).
fn fetch_into(
    registry: &Registry,
    job: &PlannedBlob,
    mut ingest: Ingest<'_>,
    how: &How<'_>,
    received: &mut u64,
    served_by: &mut Vec<String>,
) -> Result<Option<(Digest, bool)>, TransferError> {
    let size = job.descriptor().size;
    let mut started = false;
    if how.chunk_size > 0 && size >= how.chunk_size && registry.takes_chunks(&job.source) {
        let chunked = super::chunks::fetch(
            registry,
            job,
            &mut ingest,
            how.chunk_size,
            how.budget,
            how.cancel,
            received,
            served_by,
        );
        match chunked {
            Ok(super::chunks::Outcome::Done) => return commit(registry, job, ingest),
            // The registry does not answer chunks: one stream, from the hashed prefix.
            Ok(super::chunks::Outcome::Refused { started: s }) => started = s,
            Err(e) => {
                ingest.abandon();
                return Err(e);
            }
        }
    }
    download(
        registry, job, ingest, how.cancel, received, served_by, started,
    )
}

/// Verify and commit an ingest whose bytes are all in.
fn commit(
    registry: &Registry,
    job: &PlannedBlob,
    ingest: Ingest<'_>,
) -> Result<Option<(Digest, bool)>, TransferError> {
    let d = job.descriptor();
    ingest.commit().map_err(|e| match e {
        IngestError::Verify(source) => ClientError::from(RegistryError::BlobVerify {
            digest: d.digest.clone(),
            url: registry
                .url_of(&job.source, &format!("blobs/{}", d.digest))
                .unwrap_or_default(),
            source,
        })
        .into(),
        other => other.into(),
    })
}

/// One stream, resumed with `Range` where it broke. `served_by` as for [`fetch_into`];
/// `started`: the blob's bar is already up (chunks came before).
fn download(
    registry: &Registry,
    job: &PlannedBlob,
    mut ingest: Ingest<'_>,
    cancel: &Cancel,
    received: &mut u64,
    served_by: &mut Vec<String>,
    mut started: bool,
) -> Result<Option<(Digest, bool)>, TransferError> {
    let d = &job.descriptor();
    let reporter = registry.reporter();
    let url = || {
        registry
            .url_of(&job.source, &format!("blobs/{}", d.digest))
            .unwrap_or_default()
    };
    let streamed =
        registry
            .retry_policy()
            .run_resumable(d.digest.short(), reporter.as_ref(), |progressed| {
                if cancel.is_cancelled() {
                    return Err(TransferError::Interrupted {
                        digest: d.digest.clone(),
                    });
                }
                let offset = ingest.offset();
                if offset == d.size {
                    // Everything is already here from an earlier run: only the check is left.
                    return Ok(());
                }
                let (body, start, source) = registry.open_blob(&job.source, &d.digest, offset)?;
                if start != offset {
                    // The server ignored our Range and sends the whole blob: start over.
                    ingest.restart()?;
                    served_by.clear();
                    if started {
                        reporter.blob_restarted(&d.digest, offset);
                    }
                }
                if !started {
                    reporter.blob_started(&d.digest, d.size, start);
                    started = true;
                }
                let from = ingest.offset();
                let mut result = copy_with_progress(body, &mut ingest, registry, cancel, received);
                ingest.flush()?;
                if ingest.offset() > offset {
                    *progressed = true;
                }
                // A mirror answers for the bytes it sent (too many of them included), none
                // for those it did not.
                let too_long =
                    matches!(result, Err(CopyError::Ingest(IngestError::TooLong { .. })));
                if let Some(mirror) = source.filter(|m| !served_by.contains(m)) {
                    if ingest.offset() > from || too_long {
                        served_by.push(mirror);
                    }
                }
                if result.is_ok() && ingest.offset() < d.size {
                    // A body that ended cleanly but short (a proxy that closed a chunked
                    // answer, say) is a truncated body: transient, resumed where it stopped.
                    result = Err(CopyError::Read(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the body ended at byte {} of {}", ingest.offset(), d.size),
                    )));
                }
                result.map_err(|e| match e {
                    CopyError::Interrupted => TransferError::Interrupted {
                        digest: d.digest.clone(),
                    },
                    CopyError::Ingest(e) => e.into(),
                    CopyError::Read(source) => {
                        ClientError::from(RegistryError::Body { url: url(), source }).into()
                    }
                })
            });
    if let Err(e) = streamed {
        ingest.abandon();
        return Err(e);
    }
    commit(registry, job, ingest)
}

enum CopyError {
    Read(io::Error),
    Ingest(IngestError),
    Interrupted,
}

/// Copy the body into the ingest until EOF, reporting progress after every read: a report
/// held back for later would leave the bars short of the truth for as long as the connection
/// stalls (and show it so when the user presses Ctrl-C). Reporters are cheap per call; the
/// bars redraw at their own rate.
fn copy_with_progress(
    mut body: Box<dyn Read + Send>,
    ingest: &mut Ingest<'_>,
    registry: &Registry,
    cancel: &Cancel,
    received: &mut u64,
) -> Result<(), CopyError> {
    let reporter = registry.reporter();
    let digest = ingest.digest().clone();
    let mut buf = vec![0u8; 1 << 18];
    loop {
        if cancel.is_cancelled() {
            break Err(CopyError::Interrupted);
        }
        let n = match body.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(CopyError::Read(e)),
        };
        if let Err(e) = ingest.write(&buf[..n]) {
            break Err(CopyError::Ingest(e));
        }
        *received += n as u64;
        reporter.blob_progress(&digest, n as u64);
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
    if d.size > max {
        let url = registry.url_of(source, &format!("blobs/{}", d.digest))?;
        return Err(ClientError::from(RegistryError::ManifestTooLarge { url, limit: max }).into());
    }
    Ok(registry.get_small_blob(source, &d.digest, d.size)?)
}
