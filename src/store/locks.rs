//! Locks, all `flock`s, which the kernel drops when a process dies, so a crash never leaves a
//! lock behind: per-blob download locks (striped), the store lock around `index.json`
//! read-modify-writes, and the activity lock that keeps gc and pulls apart.

use std::fs::{self, File};
use std::path::Path;

use super::{io_err, Store, StoreError, PRIVATE};
use crate::digest::Digest;

impl Store {
    /// Hold the download lock for blob `d`, waiting while another process (or thread) holds it.
    /// Locks are striped over 4096 files by digest prefix, so the store never collects one lock
    /// file per blob; two blobs that share a stripe are merely fetched one after the other.
    pub fn lock_blob(&self, d: &Digest) -> Result<File, StoreError> {
        let path = self.root.join(PRIVATE).join("locks").join(&d.hex()[..3]);
        lock_file(&path)
    }

    /// Held (shared) by every pull for its whole run and (exclusive) by `gc`: a pull's blobs are
    /// in place before its index entry names them, and gc must not take them for garbage then.
    pub fn activity_lock(&self, exclusive: bool) -> Result<File, StoreError> {
        let path = self.root.join(PRIVATE).join("activity");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        if exclusive {
            f.lock().map_err(io_err("locking", &path))?;
        } else {
            f.lock_shared().map_err(io_err("locking", &path))?;
        }
        Ok(f)
    }

    /// An exclusive lock on the store, released when the returned file is dropped (or the
    /// process dies: the kernel releases flock locks, so no stale lock file can block a user).
    pub(super) fn lock(&self) -> Result<File, StoreError> {
        lock_file(&self.root.join(PRIVATE).join("lock"))
    }
}

/// An exclusive `flock` on `path` (created if needed), released when the file is dropped.
pub(super) fn lock_file(path: &Path) -> Result<File, StoreError> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("opening", path))?;
    f.lock().map_err(io_err("locking", path))?;
    Ok(f)
}
