//! One blob as parallel Range chunks (SPEC: Shared cache and speed): a CDN or object store caps
//! what one connection carries, so a blob of at least `--chunk-size` comes down over several,
//! each chunk written at its offset into the ingest ([`crate::store::chunks`]), which hashes
//! in order as the prefix completes. The first chunk's answer decides: anything but a 206 with
//! exactly the range asked for, and the blob (and every later one from that registry) comes
//! as one stream. Extra connections are borrowed from the `--jobs` budget, as slots free up:
//! helper threads wait for a free slot, then fetch chunks until none are left.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::plan::PlannedBlob;
use super::pool::Budget;
use super::transfer::TransferError;
use crate::cancel::Cancel;
use crate::registry::{Chunk, ClientError, Registry, RegistryError};
use crate::store::chunks::Chunked;
use crate::store::ingest::{Ingest, IngestError};

/// The default `--chunk-size`: 64 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 64 << 20;

/// A chunk's progress is listed at most this often (and every 1/16 of it, at least 64 KiB,
/// at most 1 MiB, when slower): what a kill -9 can cost per connection.
const RECORD_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// How often a helper waiting for a connection slot looks again.
const SLOT_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// `missing` ranges cut into chunks on the `chunk`-byte grid (a partly present chunk keeps
/// only its missing part).
pub fn split(missing: &[(u64, u64)], chunk: u64) -> Vec<(u64, u64)> {
    let chunk = chunk.max(1);
    let mut out = Vec::new();
    for &(start, end) in missing {
        let mut at = start;
        while at < end {
            let next = ((at / chunk) + 1).saturating_mul(chunk).min(end);
            out.push((at, next));
            at = next;
        }
    }
    out
}

/// What came of fetching a blob in chunks.
pub enum Outcome {
    /// Every byte is in and hashed: commit the ingest.
    Done,
    /// The registry does not answer chunks: fetch the rest as one stream, from the hashed
    /// prefix. `started`: the blob's bar is up already.
    Refused { started: bool },
}

/// Fetch what the ingest lacks as parallel chunks.
#[allow(clippy::too_many_arguments)]
pub fn fetch(
    registry: &Registry,
    job: &PlannedBlob,
    ingest: &mut Ingest<'_>,
    chunk_size: u64,
    budget: &Budget,
    cancel: &Cancel,
    received: &mut u64,
    served_by: &mut Vec<String>,
) -> Result<Outcome, TransferError> {
    let d = job.descriptor();
    let missing = ingest.missing();
    let chunks = split(&missing, chunk_size);
    let Some(&(start, end)) = chunks.first() else {
        if ingest.offset() == d.size {
            return Ok(Outcome::Done);
        }
        // Nothing listed as missing, yet not all hashed: bookkeeping not to be trusted.
        ingest.restart()?;
        return Ok(Outcome::Refused { started: false });
    };
    let opened = match registry.open_blob_chunk(&job.source, &d.digest, start, end, d.size)? {
        Chunk::Bytes(body, source) => (body, source),
        Chunk::Refused => return Ok(Outcome::Refused { started: false }),
    };
    let present = d.size - missing.iter().map(|(a, b)| b - a).sum::<u64>();
    let reporter = registry.reporter();
    reporter.blob_started(&d.digest, d.size, present);
    log::info!(
        "{}: {} chunks of up to {} bytes",
        d.digest.short(),
        chunks.len(),
        chunk_size
    );
    let chunked = ingest.chunked()?;
    let work = Work {
        registry,
        job,
        chunked: &chunked,
        cancel,
        queue: Mutex::new(chunks[1..].iter().copied().collect()),
        stop: AtomicBool::new(false),
        error: Mutex::new(None),
        received: AtomicU64::new(0),
        served_by: Mutex::new(Vec::new()),
    };
    std::thread::scope(|s| {
        // One helper per other connection --jobs allows, each waiting for a slot to free up
        // (another blob done) before it takes chunks: a freed slot is put to work within a
        // poll, not when this thread next finishes a chunk.
        let helpers = budget.total().saturating_sub(1).min(chunks.len() - 1);
        for _ in 0..helpers {
            let w = &work;
            let spawned = std::thread::Builder::new()
                .name("imagec-chunk".into())
                .spawn_scoped(s, move || w.help(budget));
            if spawned.is_err() {
                break;
            }
        }
        let mut next = Some((start, end, Some(opened)));
        while let Some((a, b, opened)) = next.take() {
            work.run(a, b, opened);
            next = work.take().map(|(a, b)| (a, b, None));
        }
    });
    *received += work.received.load(Ordering::SeqCst);
    for m in work
        .served_by
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
    {
        if !served_by.contains(&m) {
            served_by.push(m);
        }
    }
    match work.error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        // A later answer refused a chunk: what is complete stays; the rest comes as one
        // stream from the hashed prefix.
        Some(Failure::Refused) => Ok(Outcome::Refused { started: true }),
        Some(Failure::Error(e)) => Err(e),
        None if chunked.hashed() == d.size => Ok(Outcome::Done),
        None => Err(ClientError::from(RegistryError::Body {
            url: registry
                .url_of(&job.source, &format!("blobs/{}", d.digest))
                .unwrap_or_default(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("chunks hashed to byte {} of {}", chunked.hashed(), d.size),
            ),
        })
        .into()),
    }
}

enum Failure {
    Refused,
    Error(TransferError),
}

/// What the threads fetching one blob's chunks share.
struct Work<'a> {
    registry: &'a Registry,
    job: &'a PlannedBlob,
    chunked: &'a Chunked<'a>,
    cancel: &'a Cancel,
    queue: Mutex<VecDeque<(u64, u64)>>,
    /// Set on the first failure: the others stop at their next read.
    stop: AtomicBool,
    error: Mutex<Option<Failure>>,
    received: AtomicU64,
    served_by: Mutex<Vec<String>>,
}

type Opened = (Box<dyn Read + Send>, Option<String>);

impl Work<'_> {
    fn take(&self) -> Option<(u64, u64)> {
        if self.stop.load(Ordering::SeqCst) {
            return None;
        }
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    fn queued(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A helper: wait for a free slot of the budget while chunks are waiting, then fetch
    /// chunks until none are left, and give the slot back.
    fn help(&self, budget: &Budget) {
        loop {
            if self.queued() == 0 || self.stop.load(Ordering::SeqCst) {
                return;
            }
            if budget.borrow(1) == 1 {
                break;
            }
            std::thread::sleep(SLOT_POLL);
        }
        while let Some((a, b)) = self.take() {
            self.run(a, b, None);
        }
        budget.give_back(1);
    }

    /// List `[start, at)` as received (nothing when empty).
    fn record(&self, start: u64, at: u64) -> Result<(), Stop> {
        if at > start {
            self.chunked
                .complete(start, at)
                .map_err(|e| Stop::Transfer(e.into()))?;
        }
        Ok(())
    }

    fn fail(&self, f: Failure) {
        self.stop.store(true, Ordering::SeqCst);
        let mut error = self.error.lock().unwrap_or_else(|e| e.into_inner());
        // The first failure is the one reported; a refusal outranks what it caused.
        if error.is_none() || matches!(f, Failure::Refused) {
            *error = Some(f);
        }
    }

    /// Fetch chunk `[start, end)`, resuming within it under the retry policy.
    fn run(&self, start: u64, end: u64, opened: Option<Opened>) {
        let d = self.job.descriptor();
        let registry = self.registry;
        let reporter = registry.reporter();
        let mut opened = opened;
        let mut at = start;
        let mut recorded = start;
        let step = ((end - start) / 16).clamp(64 << 10, 1 << 20);
        let outcome = registry.retry_policy().run_resumable(
            d.digest.short(),
            reporter.as_ref(),
            |progressed| {
                if self.cancel.is_cancelled() || self.stop.load(Ordering::SeqCst) {
                    return Err(Stop::Interrupted);
                }
                let (mut body, source) = match opened.take() {
                    Some(o) => o,
                    None => {
                        match registry.open_blob_chunk(&self.job.source, &d.digest, at, end, d.size)
                        {
                            Ok(Chunk::Bytes(body, source)) => (body, source),
                            Ok(Chunk::Refused) => return Err(Stop::Refused),
                            Err(e) => return Err(Stop::Transfer(e.into())),
                        }
                    }
                };
                let from = at;
                let result = self.copy(
                    &mut *body,
                    start,
                    end,
                    &mut at,
                    &mut recorded,
                    step,
                    progressed,
                );
                // A mirror answers for the bytes it sent (too many of them included), none
                // for those it did not.
                let too_long = matches!(
                    result,
                    Err(Stop::Transfer(TransferError::Ingest(
                        IngestError::TooLong { .. }
                    )))
                );
                if let Some(m) = source.filter(|_| at > from || too_long) {
                    let mut served = self.served_by.lock().unwrap_or_else(|e| e.into_inner());
                    if !served.contains(&m) {
                        served.push(m);
                    }
                }
                result
            },
        );
        let result = outcome.and_then(|()| {
            self.chunked
                .complete(start, end)
                .map_err(|e| Stop::Transfer(e.into()))
        });
        match result {
            Ok(()) => {}
            Err(Stop::Refused) => self.fail(Failure::Refused),
            Err(Stop::Interrupted) if !self.cancel.is_cancelled() => {
                // Another chunk failed first: its error is the one reported.
            }
            Err(Stop::Interrupted) => self.fail(Failure::Error(TransferError::Interrupted {
                digest: d.digest.clone(),
            })),
            Err(Stop::Transfer(e)) => self.fail(Failure::Error(e)),
        }
    }

    /// Copy a chunk's body to its offsets until it ends, listing progress as it goes (so
    /// that a killed run loses little of a chunk, and the chunk at the prefix is hashed as it
    /// arrives).
    #[allow(clippy::too_many_arguments)]
    fn copy(
        &self,
        body: &mut (dyn Read + Send),
        start: u64,
        end: u64,
        at: &mut u64,
        recorded: &mut u64,
        step: u64,
        progressed: &mut bool,
    ) -> Result<(), Stop> {
        let d = self.job.descriptor();
        let reporter = self.registry.reporter();
        let body_error = |source| {
            Stop::Transfer(
                ClientError::from(RegistryError::Body {
                    url: self
                        .registry
                        .url_of(&self.job.source, &format!("blobs/{}", d.digest))
                        .unwrap_or_default(),
                    source,
                })
                .into(),
            )
        };
        let mut buf = vec![0u8; 1 << 18];
        let mut last = std::time::Instant::now();
        loop {
            if self.cancel.is_cancelled() || self.stop.load(Ordering::SeqCst) {
                self.record(start, *at)?;
                return Err(Stop::Interrupted);
            }
            // Listed every `step` bytes, but not more often than RECORD_EVERY: on a fast link
            // the bookkeeping's renames would cost more than the little a kill could lose.
            if *at - *recorded >= step && last.elapsed() >= RECORD_EVERY {
                self.record(start, *at)?;
                *recorded = *at;
                last = std::time::Instant::now();
            }
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    self.record(start, *at)?;
                    return Err(body_error(source));
                }
            };
            if *at + n as u64 > end {
                // More than the range asked for: bytes that cannot be the blob.
                return Err(Stop::Transfer(
                    IngestError::TooLong {
                        digest: d.digest.clone(),
                        size: d.size,
                    }
                    .into(),
                ));
            }
            self.chunked
                .write_at(*at, &buf[..n])
                .map_err(|e| Stop::Transfer(e.into()))?;
            *at += n as u64;
            *progressed = true;
            self.received.fetch_add(n as u64, Ordering::SeqCst);
            reporter.blob_progress(&d.digest, n as u64);
        }
        if *at < end {
            // Ended cleanly but short: resumed where it stopped.
            self.record(start, *at)?;
            return Err(body_error(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the chunk ended at byte {} of {start}-{}", *at, end - 1),
            )));
        }
        Ok(())
    }
}

/// Why a chunk stopped.
enum Stop {
    Refused,
    Interrupted,
    Transfer(TransferError),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Refused => f.write_str("a chunk was refused"),
            Stop::Interrupted => f.write_str("interrupted"),
            Stop::Transfer(e) => e.fmt(f),
        }
    }
}

impl crate::registry::retry::Retryable for Stop {
    fn is_transient(&self) -> bool {
        match self {
            Stop::Transfer(e) => e.is_transient(),
            _ => false,
        }
    }
    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Stop::Transfer(e) => e.retry_after(),
            _ => None,
        }
    }
    fn retried(self, attempts: u32, elapsed: std::time::Duration) -> Self {
        match self {
            Stop::Transfer(e) => Stop::Transfer(e.retried(attempts, elapsed)),
            other => other,
        }
    }
    fn deadline(seconds: u64, last: String) -> Self {
        Stop::Transfer(TransferError::deadline(seconds, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_grid() {
        assert_eq!(split(&[(0, 10)], 4), vec![(0, 4), (4, 8), (8, 10)]);
        assert_eq!(split(&[(2, 9)], 4), vec![(2, 4), (4, 8), (8, 9)]);
        assert_eq!(
            split(&[(0, 3), (8, 13)], 4),
            vec![(0, 3), (8, 12), (12, 13)]
        );
        assert!(split(&[], 4).is_empty());
        assert_eq!(
            split(&[(0, 5)], 0),
            vec![(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
        );
    }
}
