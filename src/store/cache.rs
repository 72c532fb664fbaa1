//! The shared blob cache (`--cache-dir`, SPEC "Shared cache and speed"): a directory with a
//! store's `blobs/sha256/<hex>` and `.imagec/` (partials, chunk bookkeeping, locks, diff_id
//! records), so that downloads into it follow every rule of a store ([`super::ingest`]): verified
//! before visible, resumed after a failure, one process per blob. It holds no `index.json` and
//! no `oci-layout` (so no tool, imagec's own `gc --dest` included, takes it for a layout whose
//! blobs nothing names), but an `imagec-cache` marker file.
//!
//! A pull that uses a cache downloads configs and layers into it and then links each into its
//! store: a hardlink where both are on one filesystem and the kernel allows it (a hardlink to a
//! file another user owns is refused under `fs.protected_hardlinks`), else a reflink
//! (`FICLONE`: XFS, Btrfs), else a copy. The store stays a complete layout every tool reads
//! (skopeo's `--dest-shared-blob-dir` leaves the layouts' `blobs/` empty instead).
//!
//! Lifetimes: each use of a cached blob sets its mtime, so `gc --cache-dir --keep-days N` keeps
//! what was used in the last N days; a blob some store still hardlinks (link count above 1)
//! is never collected. Pulls hold the cache's activity lock shared, and its gc exclusive, so
//! gc never removes a blob between a pull's check and its link.
//!
//! A cache this user cannot write (one a provisioning step filled, owned by another user) is
//! read-only: what it holds is linked or copied, what it lacks is downloaded into the store.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::gc::{FreedBlob, GcReport};
use super::{io_err, Store, StoreError, PRIVATE};
use crate::digest::Digest;

/// The file that makes a directory an imagec cache.
pub const MARKER: &str = "imagec-cache";
const MARKER_TEXT: &[u8] =
    b"An imagec blob cache (imagec --cache-dir). Collect it with: imagec gc --cache-dir DIR\n";

#[derive(Debug)]
pub struct Cache {
    store: Store,
    writable: bool,
}

/// How a cached blob got into a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Linked {
    Hardlink,
    Reflink,
    Copy,
}

impl Linked {
    pub fn as_str(self) -> &'static str {
        match self {
            Linked::Hardlink => "hardlink",
            Linked::Reflink => "reflink",
            Linked::Copy => "copy",
        }
    }
}

impl Cache {
    /// Open the cache at `root`, creating it when it is absent or an empty directory. A
    /// directory that holds something else (an image layout, a home directory given by
    /// mistake) is refused rather than filled.
    pub fn open(root: &Path) -> Result<Cache, StoreError> {
        let store = Store {
            root: root.to_path_buf(),
        };
        let marker = root.join(MARKER);
        if root.join("oci-layout").exists() {
            return Err(StoreError::LayoutNotCache {
                path: root.to_path_buf(),
            });
        }
        // Checked again after the listing: another process may have made the cache between
        // the two looks (parallel CI jobs on a fresh cache directory).
        if !marker.exists() {
            let empty = match fs::read_dir(root) {
                Ok(mut entries) => entries.next().is_none(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                Err(e) => return Err(io_err("reading", root)(e)),
            };
            if !empty && !marker.exists() {
                return Err(StoreError::NotACache {
                    path: root.to_path_buf(),
                });
            }
            // The marker first: a second process opening the new cache at the same time
            // then finds it, not a directory filled by someone else.
            fs::create_dir_all(root).map_err(io_err("creating", root))?;
            let made = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
                .and_then(|mut f| io::Write::write_all(&mut f, MARKER_TEXT));
            match made {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("creating", &marker)(e)),
            }
        }
        let dirs = [
            root.join("blobs/sha256"),
            store.tmp_dir(),
            root.join(PRIVATE).join("partial"),
            root.join(PRIVATE).join("locks"),
        ];
        let mut writable = true;
        for dir in &dirs {
            match fs::create_dir_all(dir) {
                Ok(()) => {}
                Err(e) if denied(&e) => writable = false,
                Err(e) => return Err(io_err("creating", dir)(e)),
            }
        }
        // Every place a download writes must be ours to write.
        writable &= dirs.iter().all(|d| {
            rustix::fs::access(
                d,
                rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
            )
            .is_ok()
        });
        Ok(Cache { store, writable })
    }

    /// The cache as a store: downloads into it go through its ingest.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Can blobs be downloaded into it? (When not, they go to the store alone.)
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Where the cache keeps blob `d` (for messages).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.store.blob_path(d)
    }

    pub fn has_blob(&self, d: &Digest, size: u64) -> bool {
        self.store.has_blob(d, size)
    }

    /// Held (shared) by every pull that uses the cache, and (exclusive) by its gc. `None` for
    /// a read-only cache whose lock file was never made (nobody else writes to it either).
    pub fn activity_lock(&self, exclusive: bool) -> Result<Option<File>, StoreError> {
        let path = self.store.root.join(PRIVATE).join("activity");
        let file = match fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            // flock needs no write access: a read-only cache is locked through a read-only
            // descriptor.
            Err(e) if denied(&e) => match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound && !self.writable => return Ok(None),
                Err(e) => return Err(io_err("opening", &path)(e)),
            },
            Err(e) => return Err(io_err("opening", &path)(e)),
        };
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        locked.map_err(io_err("locking", &path))?;
        Ok(Some(file))
    }

    /// Put the cached blob `d` into `dest` (`None` when the cache does not hold it): a
    /// hardlink, else a reflink, else a copy, each made under a temporary name in the store
    /// and renamed into place, so a crash never leaves a short file under a digest name. The
    /// blob's diff_id record comes along, and its mtime is set: it was just used.
    pub fn link_into(
        &self,
        dest: &Store,
        d: &Digest,
        size: u64,
    ) -> Result<Option<Linked>, StoreError> {
        let from = self.store.blob_path(d);
        let src = match File::open(&from) {
            Ok(f) => f,
            // Not there, or not ours to read (another user's private cache): downloaded instead.
            Err(e) if e.kind() == io::ErrorKind::NotFound || denied(&e) => return Ok(None),
            Err(e) => return Err(io_err("opening", &from)(e)),
        };
        let meta = src.metadata().map_err(io_err("reading", &from))?;
        if !meta.is_file() || meta.len() != size {
            return Ok(None);
        }
        // Both times set to now: that needs write access only, where any other pair needs
        // the file's owner (a group that shares the cache). Not ours to touch in a read-only
        // cache; the use then goes unrecorded.
        let _ = rustix::fs::futimens(
            &src,
            &rustix::fs::Timestamps {
                last_access: now(),
                last_modification: now(),
            },
        );
        let to = dest.blob_path(d);
        let how = match fs::metadata(&to) {
            // Already the same file (a store that hardlinked it before, then lost track).
            Ok(m) if m.dev() == meta.dev() && m.ino() == meta.ino() => Linked::Hardlink,
            _ => place(&from, &src, dest, &to)?,
        };
        if let Some((id, gzip)) = self.store.recorded_diff_id(d) {
            // A record the store cannot take only costs the next run a pass over the layer.
            let _ = dest.record_diff_id(d, &id, gzip);
        }
        Ok(Some(how))
    }

    /// Collect the cache: blobs no store hardlinks (link count 1) whose mtime (their last
    /// use) is older than `keep`, and partial downloads, temp files and records as stale as
    /// that. Waits for every pull that uses the cache to finish.
    pub fn gc(&self, keep: Duration, dry_run: bool) -> Result<GcReport, StoreError> {
        let _quiet = self.activity_lock(true)?;
        let age = |m: &fs::Metadata| {
            m.modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default()
        };
        let mut blobs = Vec::new();
        for (name, size) in self.store.all_blob_files()? {
            let path = self.store.blob_path_of(&name);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.nlink() == 1 && age(&meta) > keep {
                blobs.push(FreedBlob { digest: name, size });
            }
        }
        let stale = self.store.stale_files(keep)?;
        super::gc::collect(&self.store, blobs, stale, dry_run)
    }
}

/// Make `to` hold the blob at `from` (open as `src`): a hardlink, else a reflink, else a copy.
fn place(from: &Path, src: &File, dest: &Store, to: &Path) -> Result<Linked, StoreError> {
    let tmp_dir = dest.tmp_dir();
    fs::create_dir_all(&tmp_dir).map_err(io_err("creating", &tmp_dir))?;
    // EXDEV (another filesystem), EPERM (protected_hardlinks: another user's file), EMLINK:
    // all mean "not a hardlink", none is an error yet.
    if let Ok(link) = tempfile::Builder::new()
        .prefix("link-")
        .make_in(&tmp_dir, |p| fs::hard_link(from, p))
    {
        link.persist(to)
            .map_err(|e| io_err("renaming into", to)(e.error))?;
        return Ok(Linked::Hardlink);
    }
    let mut tmp = tempfile::Builder::new()
        .prefix("copy-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(&tmp_dir)
        .map_err(io_err("creating a temp file in", &tmp_dir))?;
    let how = if rustix::fs::ioctl_ficlone(tmp.as_file(), src).is_ok() {
        Linked::Reflink
    } else {
        // std's copy between files is copy_file_range: in the kernel, no user-space buffer.
        io::copy(&mut &*src, tmp.as_file_mut()).map_err(io_err("copying", from))?;
        Linked::Copy
    };
    tmp.as_file()
        .sync_data()
        .map_err(io_err("syncing", tmp.path()))?;
    tmp.persist(to)
        .map_err(|e| io_err("renaming into", to)(e.error))?;
    Ok(how)
}

/// A permission or read-only failure: the cache is another user's, not broken.
pub fn denied(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    )
}

fn now() -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_NOW,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_is_made_only_in_an_empty_directory_and_never_in_a_layout() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("cache");
        let cache = Cache::open(&c).unwrap();
        assert!(cache.writable());
        assert!(c.join(MARKER).is_file());
        assert!(!c.join("oci-layout").exists() && !c.join("index.json").exists());
        // Opened again: it is ours.
        Cache::open(&c).unwrap();
        let home = dir.path().join("home");
        fs::create_dir_all(&home).unwrap();
        fs::write(home.join("notes.txt"), "mine").unwrap();
        assert!(matches!(
            Cache::open(&home),
            Err(StoreError::NotACache { .. })
        ));
        assert!(!home.join("blobs").exists(), "nothing is made in it");
        let layout = dir.path().join("layout");
        Store::create(&layout).unwrap();
        assert!(matches!(
            Cache::open(&layout),
            Err(StoreError::LayoutNotCache { .. })
        ));
        // And a store refuses to be made where the cache is.
        assert!(matches!(
            Store::open(&c),
            Err(StoreError::CacheNotLayout { .. })
        ));
    }

    #[test]
    fn linking_hardlinks_on_one_filesystem_and_carries_the_diff_id() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        let bytes = b"layer bytes";
        let d = Digest::sha256_of(bytes);
        assert_eq!(cache.link_into(&store, &d, 11).unwrap(), None);
        cache.store().write_blob(&d, bytes).unwrap();
        let id = Digest::sha256_of(b"tar");
        cache.store().record_diff_id(&d, &id, true).unwrap();
        // The wrong size is not this blob.
        assert_eq!(cache.link_into(&store, &d, 12).unwrap(), None);
        assert_eq!(
            cache.link_into(&store, &d, 11).unwrap(),
            Some(Linked::Hardlink)
        );
        assert_eq!(fs::read(store.blob_path(&d)).unwrap(), bytes);
        assert_eq!(fs::metadata(cache.blob_path(&d)).unwrap().nlink(), 2);
        assert_eq!(store.recorded_diff_id(&d), Some((id, true)));
        // Linked again: nothing changes, nothing is left in the store's temp directory.
        assert_eq!(
            cache.link_into(&store, &d, 11).unwrap(),
            Some(Linked::Hardlink)
        );
        assert_eq!(fs::metadata(cache.blob_path(&d)).unwrap().nlink(), 2);
        assert!(fs::read_dir(store.tmp_dir()).unwrap().next().is_none());
    }

    #[test]
    fn gc_keeps_linked_and_recently_used_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let store = Store::create(&dir.path().join("store")).unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(30 * 86400);
        let mut digests = Vec::new();
        for bytes in [&b"linked"[..], b"used today", b"unused"] {
            let d = Digest::sha256_of(bytes);
            cache.store().write_blob(&d, bytes).unwrap();
            File::options()
                .write(true)
                .open(cache.blob_path(&d))
                .unwrap()
                .set_modified(old)
                .unwrap();
            digests.push(d);
        }
        let week = Duration::from_secs(7 * 86400);
        fs::hard_link(cache.blob_path(&digests[0]), store.blob_path(&digests[0])).unwrap();
        // Copied into a store elsewhere today: the use set its mtime.
        let other = Store::create(&dir.path().join("other")).unwrap();
        cache.link_into(&other, &digests[1], 10).unwrap();
        fs::remove_file(other.blob_path(&digests[1])).unwrap();
        let dry = cache.gc(week, true).unwrap();
        assert_eq!(dry.blobs.len(), 1);
        assert!(cache.has_blob(&digests[2], 6), "a dry run deletes nothing");
        let report = cache.gc(week, false).unwrap();
        let freed: Vec<String> = report.blobs.iter().map(|b| b.digest.to_string()).collect();
        assert_eq!(freed, vec![digests[2].to_string()]);
        assert!(cache.has_blob(&digests[0], 6) && cache.has_blob(&digests[1], 10));
        assert!(!cache.has_blob(&digests[2], 6));
        // Keep-days 0: every blob no store links goes; the hardlinked one stays.
        cache.gc(Duration::ZERO, false).unwrap();
        assert!(cache.has_blob(&digests[0], 6));
        assert!(!cache.has_blob(&digests[1], 10));
    }
}
