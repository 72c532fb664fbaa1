//! The store at `--dest`: an OCI image layout (image-spec `image-layout.md`) whose blobs are
//! the layer cache. A blob appears under `blobs/` only after its size and digest were checked:
//! downloads go to `.imagec/partial/<hex>` (same filesystem, named by digest so that the next
//! run finds and resumes them), are synced, and renamed into place. Several processes may share
//! a store: a blob is downloaded under a lock (`.imagec/locks/`), so a second process waits and
//! then finds it in place, and `index.json` is rewritten atomically under the store lock, one
//! entry per reference name. Locks are `flock`s: the kernel drops them when a process dies, so
//! a crash never leaves a lock behind.
//!
//! Write order, which every pull follows so that a reader never sees a reference whose blobs
//! are missing, whatever happens to the process: 1. layer and config blobs, 2. manifests
//! (children before the index that names them), 3. the `index.json` entry.
//!
//! This file owns the layout, blobs and the index; `ingest` a blob's bytes on their way in,
//! `locks` the locks, `diffids` the memoised layer diff_ids, `walk` the one walk from index
//! entries to everything they reach, `gc` the collection built on it.

pub mod cache;
pub mod chunks;
mod diffids;
pub mod gc;
pub mod ingest;
mod locks;
pub mod walk;
mod writeback;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::digest::Digest;
use crate::manifest::{media, Descriptor};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const SOURCE_DIGEST: &str = "dev.imagec.source.digest";
pub const SOURCE_MEDIA_TYPE: &str = "dev.imagec.source.media-type";

pub(crate) const PRIVATE: &str = ".imagec";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid OCI index: {reason}")]
    BadIndex { path: PathBuf, reason: String },
    #[error("{path} is not an OCI image layout (no oci-layout file)")]
    NotALayout { path: PathBuf },
    #[error("{path} is an imagec blob cache, not a store (use it with --cache-dir; collect it with imagec gc --cache-dir {path})")]
    CacheNotLayout { path: PathBuf },
    #[error("{path} is not an imagec blob cache: it is not empty and has no imagec-cache file (give an empty or new directory)")]
    NotACache { path: PathBuf },
    #[error("{path} is an OCI image layout, not a blob cache (give the cache its own directory)")]
    LayoutNotCache { path: PathBuf },
}

impl StoreError {
    /// A permission or read-only failure (a file another user made), not damage.
    pub fn is_denied(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if cache::denied(source))
    }
}

pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Open `root` for writing, creating the layout if needed.
    pub fn create(root: &Path) -> Result<Store, StoreError> {
        if root.join(cache::MARKER).exists() {
            return Err(StoreError::CacheNotLayout {
                path: root.to_path_buf(),
            });
        }
        let store = Store {
            root: root.to_path_buf(),
        };
        for dir in [
            store.root.join("blobs/sha256"),
            store.tmp_dir(),
            store.root.join(PRIVATE).join("partial"),
            store.root.join(PRIVATE).join("locks"),
        ] {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            let body = json!({ "imageLayoutVersion": media::OCI_LAYOUT_VERSION });
            store.write_atomic(&layout, &serde_json::to_vec(&body).unwrap_or_default())?;
        }
        let index = store.index_path();
        if !index.exists() {
            store.write_atomic(&index, &empty_index())?;
        }
        Ok(store)
    }

    /// Open an existing layout for reading; `None` when `root` does not exist yet, is an
    /// empty directory (where `create` would make one), or is one `create` is making.
    pub fn open(root: &Path) -> Result<Option<Store>, StoreError> {
        if !root.exists() {
            return Ok(None);
        }
        if root.join(cache::MARKER).exists() {
            return Err(StoreError::CacheNotLayout {
                path: root.to_path_buf(),
            });
        }
        // Empty, or holding only what `create` makes before it writes `oci-layout`: another
        // imagec is creating this store right now (three pulls started at once into a new
        // DEST raced here), and `create` will finish it.
        let only_ours = fs::read_dir(root).is_ok_and(|entries| {
            entries
                .filter_map(|e| e.ok())
                .all(|e| e.file_name() == "blobs" || e.file_name() == PRIVATE)
        });
        if only_ours && !root.join("oci-layout").exists() {
            return Ok(None);
        }
        if !root.join("oci-layout").exists() {
            return Err(StoreError::NotALayout {
                path: root.to_path_buf(),
            });
        }
        Ok(Some(Store {
            root: root.to_path_buf(),
        }))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    /// Is the blob in the store? Every file under `blobs/` was verified before it was renamed
    /// there, so presence is enough; the size is checked as a cheap guard against damage.
    pub fn has_blob(&self, d: &Digest, size: u64) -> bool {
        fs::metadata(self.blob_path(d)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Read a small blob (a manifest or config) and check its digest: `None` when absent, or
    /// when the file does not match (it will then be fetched and replaced).
    pub fn read_blob(&self, d: &Digest, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.blob_path(d);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("opening", &path)(e)),
        };
        let mut bytes = Vec::new();
        file.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err("reading", &path))?;
        if bytes.len() as u64 > max || &Digest::sha256_of(&bytes) != d {
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Store small bytes (a manifest or config) already verified to have digest `d`. Returns
    /// false when the store held exactly these bytes; a damaged file of that name is replaced.
    pub fn write_blob(&self, d: &Digest, bytes: &[u8]) -> Result<bool, StoreError> {
        if self.has_blob(d, bytes.len() as u64)
            && fs::read(self.blob_path(d)).is_ok_and(|held| held == bytes)
        {
            return Ok(false);
        }
        self.write_atomic(&self.blob_path(d), bytes)?;
        Ok(true)
    }

    /// Remove the entries named `names` from `index.json`, under the store lock; returns the
    /// entries removed (names not in the index are left out).
    pub fn remove_entries(&self, names: &[String]) -> Result<Vec<Descriptor>, StoreError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let Some(Value::Array(manifests)) = index.get_mut("manifests") else {
            return Ok(vec![]);
        };
        let mut removed = Vec::new();
        manifests.retain(|v| {
            let named = v["annotations"][REF_NAME]
                .as_str()
                .is_some_and(|n| names.iter().any(|w| w == n));
            if named {
                if let Ok(d) = serde_json::from_value(v.clone()) {
                    removed.push(d);
                }
            }
            !named
        });
        if !removed.is_empty() {
            let bytes = serde_json::to_vec(&index).unwrap_or_default();
            self.write_atomic(&self.index_path(), &bytes)?;
        }
        Ok(removed)
    }

    /// Files in the store's private directories that no pull will use: temp files, and
    /// partial downloads of blobs already in place or untouched for `older_than`.
    pub fn stale_files(
        &self,
        older_than: std::time::Duration,
    ) -> Result<Vec<(PathBuf, u64)>, StoreError> {
        let mut out = Vec::new();
        let age = |meta: &fs::Metadata| {
            meta.modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .unwrap_or_default()
        };
        if let Ok(entries) = fs::read_dir(self.tmp_dir()) {
            for e in entries.flatten() {
                if let Ok(meta) = e.metadata() {
                    out.push((e.path(), meta.len()));
                }
            }
        }
        // A partial download and its chunk bookkeeping (`<hex>`, `<hex>.chunks`,
        // `<hex>.chunks.tmp`) are one: stale when the blob is in place or the newest of
        // them is old, and then removed together.
        let mut groups: std::collections::BTreeMap<
            String,
            (Vec<(PathBuf, u64)>, std::time::Duration),
        > = Default::default();
        if let Ok(entries) = fs::read_dir(self.root.join(PRIVATE).join("partial")) {
            for e in entries.flatten() {
                let Ok(meta) = e.metadata() else { continue };
                let name = e.file_name().to_string_lossy().into_owned();
                let hex = name
                    .strip_suffix(".chunks.tmp")
                    .or_else(|| name.strip_suffix(".chunks"))
                    .unwrap_or(&name)
                    .to_string();
                let g = groups
                    .entry(hex)
                    .or_insert((Vec::new(), std::time::Duration::MAX));
                g.0.push((e.path(), meta.len()));
                g.1 = g.1.min(age(&meta));
            }
        }
        for (hex, (files, youngest)) in groups {
            let done = format!("sha256:{hex}")
                .parse::<Digest>()
                .is_ok_and(|d| self.blob_path(&d).exists());
            if done || youngest > older_than {
                out.extend(files);
            }
        }
        out.extend(self.orphan_diff_ids());
        Ok(out)
    }

    /// Where a download of `d` in progress (or interrupted) is kept.
    pub fn partial_path(&self, d: &Digest) -> PathBuf {
        self.root.join(PRIVATE).join("partial").join(d.hex())
    }

    /// Open the partial download of `d` for reading and appending (created empty if there is
    /// none). The caller holds the blob's lock.
    pub fn open_partial(&self, d: &Digest) -> Result<File, StoreError> {
        let path = self.partial_path(d);
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))
    }

    /// Move a verified partial download into `blobs/`: sync the data first so that a crash
    /// after the rename can never leave a short file under a digest name.
    pub fn commit_partial(&self, file: &File, d: &Digest) -> Result<(), StoreError> {
        let from = self.partial_path(d);
        file.sync_data().map_err(io_err("syncing", &from))?;
        let dest = self.blob_path(d);
        fs::rename(&from, &dest).map_err(io_err("renaming into", &dest))
    }

    /// The length of the partial download of `d`, if there is one.
    pub fn partial_len(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.partial_path(d)).ok().map(|m| m.len())
    }

    /// Forget a partial download whose bytes turned out wrong (and its chunk bookkeeping).
    pub fn discard_partial(&self, d: &Digest) {
        let _ = fs::remove_file(self.partial_path(d));
        self.forget_chunks(d);
    }

    /// The entries of `index.json` that parse as descriptors we model. For anything that must
    /// see every entry (listing, gc), use [`Store::raw_entries`].
    pub fn entries(&self) -> Result<Vec<Descriptor>, StoreError> {
        let index = self.read_index()?;
        Ok(index["manifests"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| serde_json::from_value(v.clone()).ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The entry named `name`, if any.
    pub fn entry(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        Ok(self
            .entries()?
            .into_iter()
            .find(|d| ref_name(d) == Some(name)))
    }

    /// Put `entry` in `index.json`, replacing any entry with the same reference name and keeping
    /// every other entry (and field) as it was. Read-modify-write happens under the store lock
    /// so that concurrent pulls never lose each other's entries. Returns false, and writes
    /// nothing, when the index already holds exactly this entry.
    pub fn set_entry(&self, entry: &Descriptor) -> Result<bool, StoreError> {
        let name = ref_name(entry).unwrap_or_default().to_string();
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let new = serde_json::to_value(entry).map_err(|e| StoreError::BadIndex {
            path: self.index_path(),
            reason: e.to_string(),
        })?;
        let manifests = match index.get_mut("manifests") {
            Some(Value::Array(a)) => a,
            _ => {
                index["manifests"] = Value::Array(vec![]);
                index["manifests"].as_array_mut().expect("just set")
            }
        };
        let same_name = |v: &Value| v["annotations"][REF_NAME].as_str() == Some(name.as_str());
        if manifests.iter().filter(|v| same_name(v)).count() == 1
            && manifests.iter().any(|v| same_name(v) && *v == new)
        {
            return Ok(false);
        }
        match manifests.iter().position(same_name) {
            Some(i) => {
                manifests[i] = new;
                // Never duplicate a name, even if another tool wrote it twice.
                let mut seen = false;
                manifests.retain(|v| {
                    if !same_name(v) {
                        return true;
                    }
                    let keep = !seen;
                    seen = true;
                    keep
                });
            }
            None => manifests.push(new),
        }
        let bytes = serde_json::to_vec(&index).unwrap_or_default();
        self.write_atomic(&self.index_path(), &bytes)?;
        Ok(true)
    }

    pub(crate) fn read_index(&self) -> Result<Value, StoreError> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => empty_index(),
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| StoreError::BadIndex {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if !v.is_object() {
            return Err(StoreError::BadIndex {
                path,
                reason: "not a JSON object".into(),
            });
        }
        Ok(v)
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join(PRIVATE).join("tmp")
    }

    /// Write a whole file so that readers see the old or the new content, never a mix.
    pub(crate) fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let dir = self.tmp_dir();
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        // Created 0666 minus the umask, as `cp` and skopeo create files: a store written by
        // root in CI stays readable by the user who reads it next (tempfile's default 0600
        // made index.json and the manifests owner-only while layers followed the umask).
        let mut tmp = tempfile::Builder::new()
            .permissions(fs::Permissions::from_mode(0o666))
            .tempfile_in(&dir)
            .map_err(io_err("creating a temp file in", &dir))?;
        tmp.write_all(bytes)
            .map_err(io_err("writing", tmp.path()))?;
        tmp.as_file()
            .sync_data()
            .map_err(io_err("syncing", tmp.path()))?;
        tmp.persist(dest)
            .map_err(|e| io_err("renaming into", dest)(e.error))?;
        Ok(())
    }
}

pub fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations.as_ref()?.get(REF_NAME).map(String::as_str)
}

fn empty_index() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": []
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_store_being_created_is_no_store_yet_but_a_foreign_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        fs::create_dir_all(dir.path().join(PRIVATE).join("tmp")).unwrap();
        assert!(Store::open(dir.path()).unwrap().is_none());
        fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::NotALayout { .. })
        ));
    }

    fn entry(name: &str, n: u8) -> Descriptor {
        Descriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest: Digest::sha256_of(&[n]),
            size: 1,
            urls: None,
            annotations: Some(BTreeMap::from([(REF_NAME.to_string(), name.to_string())])),
            platform: None,
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn index_entries_replace_by_name_and_keep_others() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path()).unwrap();
        assert!(s.set_entry(&entry("a:1", 1)).unwrap());
        assert!(s.set_entry(&entry("b:1", 2)).unwrap());
        assert!(
            !s.set_entry(&entry("a:1", 1)).unwrap(),
            "same entry rewrites nothing"
        );
        assert!(s.set_entry(&entry("a:1", 3)).unwrap());
        let e = s.entries().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            s.entry("a:1").unwrap().unwrap().digest,
            Digest::sha256_of(&[3])
        );
        assert_eq!(
            s.entry("b:1").unwrap().unwrap().digest,
            Digest::sha256_of(&[2])
        );
    }

    #[test]
    fn blobs_are_verified_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path()).unwrap();
        let d = Digest::sha256_of(b"abc");
        assert!(s.write_blob(&d, b"abc").unwrap());
        assert!(!s.write_blob(&d, b"abc").unwrap());
        assert_eq!(s.read_blob(&d, 10).unwrap().unwrap(), b"abc");
        fs::write(s.blob_path(&d), b"abd").unwrap();
        assert_eq!(
            s.read_blob(&d, 10).unwrap(),
            None,
            "a damaged blob reads as absent"
        );
        // Regression: a damaged file of the right size was kept, as if it were the blob.
        assert!(
            s.write_blob(&d, b"abc").unwrap(),
            "a damaged blob is replaced"
        );
        assert_eq!(s.read_blob(&d, 10).unwrap().unwrap(), b"abc");
        assert!(fs::read_dir(dir.path().join(".imagec/tmp"))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn a_partial_and_its_chunk_bookkeeping_are_stale_together() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path()).unwrap();
        let d = Digest::sha256_of(b"partly here");
        fs::write(s.partial_path(&d), b"partly").unwrap();
        fs::write(s.chunks_path(&d), "0 6\n").unwrap();
        let month = std::time::Duration::from_secs(30 * 86400);
        let old = std::time::SystemTime::now() - month;
        let age = |p: &Path, t| {
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(t)
                .unwrap()
        };
        let week = std::time::Duration::from_secs(7 * 86400);
        // Only the bookkeeping is old: the download is alive, nothing goes.
        age(&s.chunks_path(&d), old);
        assert!(s.stale_files(week).unwrap().is_empty());
        // Both old: both go.
        age(&s.partial_path(&d), old);
        let mut stale: Vec<PathBuf> = s
            .stale_files(week)
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        stale.sort();
        assert_eq!(stale, vec![s.partial_path(&d), s.chunks_path(&d)]);
    }
}
