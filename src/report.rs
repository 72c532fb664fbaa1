//! Events the library reports while it works. The binary decides how they look (indicatif bars,
//! plain lines for CI logs, nothing); the library never prints (STYLE: Output). `-v` lines are
//! not events: they go through the `log` facade, and the binary installs the logger.

use std::time::Duration;

use crate::digest::Digest;

/// What a run of blob events is for: a pull downloads blobs; `unpack` applies layer blobs,
/// `layers --files` reads them, `save` writes blobs into an archive, all from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Download,
    Unpack,
    Read,
    Save,
}

impl Stage {
    /// `downloading`, `unpacking`, `reading`, `saving`.
    pub fn verb(self) -> &'static str {
        match self {
            Stage::Download => "downloading",
            Stage::Unpack => "unpacking",
            Stage::Read => "reading",
            Stage::Save => "saving",
        }
    }

    /// What its items are called: layers for unpack and read, blobs otherwise.
    pub fn noun(self) -> &'static str {
        match self {
            Stage::Unpack | Stage::Read => "layer",
            Stage::Download | Stage::Save => "blob",
        }
    }

    /// Whether a blob's last byte leaves work before it is done: a download's digest check
    /// and sync, an unpack's diff_id check.
    pub fn verifies(self) -> bool {
        matches!(self, Stage::Download | Stage::Unpack)
    }
}

/// Receives progress events from any worker thread.
pub trait Reporter: Send + Sync {
    /// A reference resolved to a manifest digest at the registry.
    fn resolved(&self, _reference: &str, _digest: &Digest) {}
    /// A stage is about to start over `blobs` blobs totalling `bytes`: for a download, those
    /// missing from the store. The blob events that follow belong to it.
    fn transfer_planned(&self, _stage: Stage, _blobs: usize, _bytes: u64) {}
    /// Every blob of the stage is done, skipped or failed.
    fn transfer_finished(&self) {}
    /// A blob is starting (`offset` > 0 when a download resumes).
    fn blob_started(&self, _digest: &Digest, _size: u64, _offset: u64) {}
    /// `bytes` more bytes of this blob arrived.
    fn blob_progress(&self, _digest: &Digest, _bytes: u64) {}
    /// The server ignored a Range request: the blob comes again from byte 0, and the `discarded`
    /// bytes already reported for it are thrown away.
    fn blob_restarted(&self, _digest: &Digest, _discarded: u64) {}
    /// The bytes of this blob so far (`discarded`) came from a source that sent wrong ones:
    /// they are thrown away, and the blob starts again from another source.
    fn blob_rejected(&self, _digest: &Digest, _discarded: u64) {}
    /// The blob is verified and in the store.
    fn blob_done(&self, _digest: &Digest, _size: u64) {}
    /// The blob was already in the store; nothing is downloaded.
    fn blob_skipped(&self, _digest: &Digest, _size: u64) {}
    /// The blob came from the shared cache (`how`: hardlink, reflink, copy); nothing is
    /// downloaded.
    fn blob_linked(&self, digest: &Digest, size: u64, _how: &str) {
        self.blob_skipped(digest, size)
    }
    /// Something the user should know that does not stop the command (a mirror dropped).
    fn warning(&self, _message: &str) {}
    /// A transient failure; the operation will be tried again after `delay`.
    fn retrying(&self, _what: &str, _attempt: u32, _delay: Duration, _error: &str) {}
}

/// Reports nothing.
pub struct Silent;

impl Reporter for Silent {}
