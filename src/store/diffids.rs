//! Memoised layer diff_ids, kept next to the content as containerd keeps its "uncompressed"
//! label: `.imagec/diffids/<hex>` holds `<diff_id> gzip|plain` for the verified blob
//! `blobs/sha256/<hex>`. Written after the blob is committed (or its diff_id computed from
//! the stored file), so no warm path inflates a layer twice: a warm schema1 re-pull, `layers`
//! and `inspect` of a stored schema1 image read the record instead. A record is derived data:
//! a missing or unreadable one is computed again, and gc drops it with its blob.

use std::fs;
use std::path::PathBuf;

use super::{Store, StoreError, PRIVATE};
use crate::digest::Digest;

impl Store {
    fn diff_id_path(&self, blob: &Digest) -> PathBuf {
        self.root.join(PRIVATE).join("diffids").join(blob.hex())
    }

    /// The recorded diff_id of a stored layer, and whether it is gzip.
    pub fn recorded_diff_id(&self, blob: &Digest) -> Option<(Digest, bool)> {
        let text = fs::read_to_string(self.diff_id_path(blob)).ok()?;
        let (diff_id, compression) = text.trim_end().split_once(' ')?;
        let gzip = match compression {
            "gzip" => true,
            "plain" => false,
            _ => return None,
        };
        Some((diff_id.parse().ok()?, gzip))
    }

    /// Record the diff_id of a layer whose blob is in the store (verified).
    pub fn record_diff_id(
        &self,
        blob: &Digest,
        diff_id: &Digest,
        gzip: bool,
    ) -> Result<(), StoreError> {
        let dir = self.root.join(PRIVATE).join("diffids");
        fs::create_dir_all(&dir).map_err(super::io_err("creating", &dir))?;
        let line = format!("{diff_id} {}\n", if gzip { "gzip" } else { "plain" });
        self.write_atomic(&self.diff_id_path(blob), line.as_bytes())
    }

    /// Drop the record of a blob that is being deleted.
    pub(crate) fn forget_diff_id(&self, blob: &Digest) {
        let _ = fs::remove_file(self.diff_id_path(blob));
    }

    /// Records whose blob is gone (left by another tool's deletion, or an older gc).
    pub(crate) fn orphan_diff_ids(&self) -> Vec<(PathBuf, u64)> {
        let dir = self.root.join(PRIVATE).join("diffids");
        let Ok(entries) = fs::read_dir(&dir) else {
            return vec![];
        };
        entries
            .flatten()
            .filter(|e| {
                format!("sha256:{}", e.file_name().to_string_lossy())
                    .parse::<Digest>()
                    .map_or(true, |d| !self.blob_path(&d).exists())
            })
            .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_read_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path()).unwrap();
        let blob = Digest::sha256_of(b"layer");
        let id = Digest::sha256_of(b"tar");
        assert_eq!(s.recorded_diff_id(&blob), None);
        s.record_diff_id(&blob, &id, true).unwrap();
        assert_eq!(s.recorded_diff_id(&blob), Some((id.clone(), true)));
        s.record_diff_id(&blob, &id, false).unwrap();
        assert_eq!(s.recorded_diff_id(&blob), Some((id, false)));
        fs::write(s.diff_id_path(&blob), "sha256:nothex gzip\n").unwrap();
        assert_eq!(s.recorded_diff_id(&blob), None);
        // The blob is not in the store: its record is an orphan.
        assert_eq!(s.orphan_diff_ids().len(), 1);
        s.forget_diff_id(&blob);
        assert!(s.orphan_diff_ids().is_empty());
    }
}
