//! Store maintenance: `gc` deletes the blobs no index entry reaches, and private files no pull
//! will use. Reachability starts at every entry of `index.json` (its manifest, and the manifest
//! the registry served, `dev.imagec.source.digest`) and follows indexes to their manifests and
//! manifests to their config and layers; schema1 payloads to their layers.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::digest::Digest;
use crate::manifest::Manifest;
use crate::manifest::MAX_MANIFEST;
use crate::store::{Store, StoreError, SOURCE_DIGEST};

/// A partial download untouched for this long is taken as abandoned.
pub const STALE_PARTIAL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What `gc` removed (or, with `--dry-run`, would remove).
#[derive(Debug, serde::Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub blobs: Vec<FreedBlob>,
    pub files: Vec<FreedFile>,
    pub bytes_freed: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct FreedBlob {
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct FreedFile {
    pub path: PathBuf,
    pub size: u64,
}

/// How far to follow a blob.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// A manifest or index an entry uses: follow it to everything it names.
    All,
    /// The manifest the registry served for an entry: keep it, and for a list or index keep
    /// the child manifests it names (the served bytes of the platform pulled), but not their
    /// layers: the entry's own manifest reaches the layers it uses, and a list's other
    /// platforms are not part of a single-platform pull.
    Source,
    /// Keep the blob; do not open it.
    Blob,
}

/// Every blob some index entry reaches.
pub fn reachable(store: &Store) -> Result<HashSet<Digest>, StoreError> {
    let mut seen = HashSet::new();
    let mut todo: Vec<(Digest, Follow)> = Vec::new();
    for e in store.entries()? {
        todo.push((e.digest.clone(), Follow::All));
        if let Some(source) = e
            .annotations
            .as_ref()
            .and_then(|a| a.get(SOURCE_DIGEST))
            .and_then(|s| s.parse().ok())
        {
            todo.push((source, Follow::Source));
        }
    }
    while let Some((d, follow)) = todo.pop() {
        if !seen.insert(d.clone()) || follow == Follow::Blob {
            continue;
        }
        let Some(bytes) = store.read_blob(&d, MAX_MANIFEST)? else {
            continue;
        };
        match Manifest::parse("", &bytes, &d) {
            Ok(Manifest::Image(_, m)) => {
                todo.push((m.config.digest.clone(), Follow::Blob));
                todo.extend(m.layers.iter().map(|l| (l.digest.clone(), Follow::Blob)));
            }
            Ok(Manifest::Index(_, i)) => {
                let child = if follow == Follow::All {
                    Follow::All
                } else {
                    Follow::Blob
                };
                todo.extend(i.manifests.iter().map(|c| (c.digest.clone(), child)));
            }
            Ok(Manifest::Schema1(s)) => {
                todo.extend(s.fs_layers.iter().map(|l| (l.clone(), Follow::Blob)));
            }
            Err(_) => {}
        }
    }
    Ok(seen)
}

/// Collect the store. Holds the activity lock exclusively, so it waits for running pulls and
/// pulls wait for it: a pull's blobs are never taken for garbage before its entry is written.
pub fn gc(store: &Store, dry_run: bool) -> Result<GcReport, StoreError> {
    let _quiet = store.activity_lock(true)?;
    let keep = reachable(store)?;
    let mut blobs: Vec<FreedBlob> = store
        .all_blobs()?
        .into_iter()
        .filter(|(d, _)| !keep.contains(d))
        .map(|(digest, size)| FreedBlob { digest, size })
        .collect();
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    let files: Vec<FreedFile> = store
        .stale_files(STALE_PARTIAL)?
        .into_iter()
        .map(|(path, size)| FreedFile { path, size })
        .collect();
    if !dry_run {
        for b in &blobs {
            let path = store.blob_path(&b.digest);
            std::fs::remove_file(&path).map_err(|source| StoreError::Io {
                action: "removing",
                path,
                source,
            })?;
        }
        for f in &files {
            let _ = std::fs::remove_file(&f.path);
        }
    }
    let bytes_freed = blobs
        .iter()
        .map(|b| b.size)
        .chain(files.iter().map(|f| f.size))
        .sum();
    Ok(GcReport {
        dry_run,
        blobs,
        files,
        bytes_freed,
    })
}
