//! Store maintenance: `gc` deletes the blobs no index entry reaches, and private files no pull
//! will use. Reachability is the store walk (`walk.rs`) from every entry of `index.json`, read
//! raw. gc fails closed: an entry or manifest the walk cannot fully read stops it before it
//! deletes anything, naming the entry; `--force` goes on, keeping everything the walk could
//! reach from that entry (SPEC: Commands).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use super::walk::{BlobName, Problem};
use super::{Store, StoreError};

/// A partial download untouched for this long is taken as abandoned.
pub const STALE_PARTIAL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What `gc` removed (or, with `--dry-run`, would remove).
#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// What could not be read (only with `--force`; without it gc stops instead).
    pub warnings: Vec<EntryProblem>,
    pub blobs: Vec<FreedBlob>,
    pub files: Vec<FreedFile>,
    pub bytes_freed: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct FreedBlob {
    pub digest: BlobName,
    pub size: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct FreedFile {
    pub path: PathBuf,
    pub size: u64,
}

/// A problem of one entry, named.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EntryProblem {
    pub entry: String,
    pub problem: Problem,
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "entry {entry} cannot be fully read ({problem}){}; nothing was deleted (--force collects anyway, keeping every blob it can reach from that entry)",
        if *more > 0 { format!(", and {more} more problems") } else { String::new() }
    )]
    Unreadable {
        entry: String,
        problem: Problem,
        more: usize,
    },
}

/// Delete `blobs` (with their diff_id records) and the `stale` files, unless `dry_run`, and
/// say what was (or would be) freed: the one deletion both `gc` of a store and of the cache
/// make.
pub(crate) fn collect(
    store: &Store,
    mut blobs: Vec<FreedBlob>,
    stale: Vec<(PathBuf, u64)>,
    dry_run: bool,
) -> Result<GcReport, StoreError> {
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    let files: Vec<FreedFile> = stale
        .into_iter()
        .map(|(path, size)| FreedFile { path, size })
        .collect();
    if !dry_run {
        for b in &blobs {
            if let Some(d) = b.digest.digest() {
                store.forget_diff_id(&d);
            }
            let path = store.blob_path_of(&b.digest);
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
        warnings: vec![],
        blobs,
        files,
        bytes_freed,
    })
}

/// Every blob some index entry reaches, and what the walk could not read.
pub fn reachable(store: &Store) -> Result<(HashSet<BlobName>, Vec<EntryProblem>), StoreError> {
    let mut keep = HashSet::new();
    let mut problems = Vec::new();
    for entry in store.raw_entries()? {
        let reach = store.reach(&entry)?;
        keep.extend(reach.blobs.into_keys());
        problems.extend(reach.problems.into_iter().map(|problem| EntryProblem {
            entry: entry.label(),
            problem,
        }));
    }
    Ok((keep, problems))
}

/// Collect the store. Holds the activity lock exclusively, so it waits for running pulls and
/// pulls wait for it: a pull's blobs are never taken for garbage before its entry is written.
pub fn gc(store: &Store, dry_run: bool, force: bool) -> Result<GcReport, GcError> {
    let _quiet = store.activity_lock(true)?;
    let (keep, warnings) = reachable(store)?;
    if let (Some(first), false) = (warnings.first(), force) {
        return Err(GcError::Unreadable {
            entry: first.entry.clone(),
            problem: first.problem.clone(),
            more: warnings.len() - 1,
        });
    }
    let blobs: Vec<FreedBlob> = store
        .all_blob_files()?
        .into_iter()
        .filter(|(d, _)| !keep.contains(d))
        .map(|(digest, size)| FreedBlob { digest, size })
        .collect();
    let stale = store.stale_files(STALE_PARTIAL)?;
    let mut report = collect(store, blobs, stale, dry_run)?;
    report.warnings = warnings;
    Ok(report)
}
