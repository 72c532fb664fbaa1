//! Events the library reports while it works. The binary decides how they look (indicatif bars,
//! plain lines for CI logs, nothing); the library never prints (STYLE: Output). `-v` lines are
//! not events: they go through the `log` facade, and the binary installs the logger.

use std::time::Duration;

use crate::digest::Digest;

/// Receives progress events from any worker thread.
pub trait Reporter: Send + Sync {
    /// A reference resolved to a manifest digest at the registry.
    fn resolved(&self, _reference: &str, _digest: &Digest) {}
    /// The transfer is about to start: `blobs` blobs totalling `bytes` are missing from the store.
    fn transfer_planned(&self, _blobs: usize, _bytes: u64) {}
    /// Every blob of the plan is done, skipped or failed.
    fn transfer_finished(&self) {}
    /// A blob download is starting (`offset` > 0 when resuming).
    fn blob_started(&self, _digest: &Digest, _size: u64, _offset: u64) {}
    /// `bytes` more bytes of this blob arrived.
    fn blob_progress(&self, _digest: &Digest, _bytes: u64) {}
    /// The server ignored a Range request: the blob comes again from byte 0, and the `discarded`
    /// bytes already reported for it are thrown away.
    fn blob_restarted(&self, _digest: &Digest, _discarded: u64) {}
    /// The blob is verified and in the store.
    fn blob_done(&self, _digest: &Digest, _size: u64) {}
    /// The blob was already in the store; nothing is downloaded.
    fn blob_skipped(&self, _digest: &Digest, _size: u64) {}
    /// A transient failure; the operation will be tried again after `delay`.
    fn retrying(&self, _what: &str, _attempt: u32, _delay: Duration, _error: &str) {}
}

/// Reports nothing.
pub struct Silent;

impl Reporter for Silent {}
