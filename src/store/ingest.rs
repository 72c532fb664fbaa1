//! The ingest owns a blob's bytes on their way into the store: the blob's lock, its partial
//! file `.imagec/partial/<hex>`, the hash (and, for layers that need it, the diff_id) of what
//! the file holds, and the commit that verifies size and digest, syncs, and renames the file
//! under `blobs/`. Copy loops around it stay small: whatever the bytes come from (one stream, a
//! resumed stream, later parallel Range chunks or a shared cache), they are written here and
//! committed here (containerd: `content.Writer` with `Status`/`Commit`).
//!
//! Invariants: the partial file's length always equals the bytes hashed once [`Ingest::flush`]
//! returns (so a crash leaves a prefix the next run re-hashes); nothing past the descriptor's
//! size is ever written; a blob whose bytes turn out wrong is deleted, partial and all.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};

use super::{Store, StoreError};
use crate::digest::{Digest, Hasher, VerifyError};
use crate::layer::diffid::DiffId;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("blob {digest} is longer than the {size} bytes its descriptor gives")]
    TooLong { digest: Digest, size: u64 },
    #[error("layer {digest} is not a valid gzip stream: {source}")]
    Layer {
        digest: Digest,
        #[source]
        source: io::Error,
    },
}

/// What [`Store::begin_ingest`] found.
pub enum Begin<'s> {
    /// The blob is in the store (another process fetched it while we waited for its lock).
    Present,
    Ingest(Box<Ingest<'s>>),
}

pub struct Ingest<'s> {
    store: &'s Store,
    digest: Digest,
    size: u64,
    out: BufWriter<File>,
    hasher: Hasher,
    want_diff_id: bool,
    diff_id: Option<DiffId>,
    /// Held until the ingest ends: other processes wait for it, then find the blob in place.
    _lock: File,
}

impl Store {
    /// Start (or resume) the ingest of blob `digest` of `size` bytes, waiting for its lock. What
    /// an earlier run left in the partial file is re-hashed (a local read): only the rest needs
    /// fetching. `diff_id`: also compute the layer's diff_id while the bytes pass.
    pub fn begin_ingest(
        &self,
        digest: &Digest,
        size: u64,
        diff_id: bool,
    ) -> Result<Begin<'_>, StoreError> {
        let lock = self.lock_blob(digest)?;
        if self.has_blob(digest, size) {
            return Ok(Begin::Present);
        }
        let mut file = self.open_partial(digest)?;
        let path = self.partial_path(digest);
        let err = |action| super::io_err(action, &path);
        let mut ingest_hasher = Hasher::new();
        let mut ingest_diff = diff_id.then(DiffId::new);
        let have = file.metadata().map_err(err("reading"))?.len();
        if have > size {
            file.set_len(0).map_err(err("truncating"))?;
        } else if have > 0 && rehash(&mut file, &mut ingest_hasher, ingest_diff.as_mut()).is_err() {
            // A partial we cannot read back (or whose start is no valid gzip) is started anew.
            file.set_len(0).map_err(err("truncating"))?;
            ingest_hasher = Hasher::new();
            ingest_diff = diff_id.then(DiffId::new);
        }
        file.seek(io::SeekFrom::End(0)).map_err(err("seeking in"))?;
        Ok(Begin::Ingest(Box::new(Ingest {
            store: self,
            digest: digest.clone(),
            size,
            out: BufWriter::with_capacity(1 << 16, file),
            hasher: ingest_hasher,
            want_diff_id: diff_id,
            diff_id: ingest_diff,
            _lock: lock,
        })))
    }
}

impl Ingest<'_> {
    /// Bytes held so far: where the next byte goes, and the offset to ask a registry for.
    pub fn offset(&self) -> u64 {
        self.hasher.count()
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Append bytes. More than the descriptor's size is refused (nothing of them is written).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), IngestError> {
        if self.offset() + bytes.len() as u64 > self.size {
            return Err(IngestError::TooLong {
                digest: self.digest.clone(),
                size: self.size,
            });
        }
        self.out
            .write_all(bytes)
            .map_err(|e| self.io("writing", e))?;
        self.hasher.update(bytes);
        if let Some(d) = self.diff_id.as_mut() {
            d.update(bytes).map_err(|source| IngestError::Layer {
                digest: self.digest.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Make the partial file hold exactly the bytes hashed (call when a stream ends or breaks).
    pub fn flush(&mut self) -> Result<(), IngestError> {
        self.out.flush().map_err(|e| self.io("writing", e).into())
    }

    /// Forget what is held and start from byte 0 (a server that ignored our Range).
    pub fn restart(&mut self) -> Result<(), IngestError> {
        let emptied = self.out.flush().and_then(|_| {
            let file = self.out.get_mut();
            file.set_len(0)?;
            file.rewind()
        });
        emptied.map_err(|e| self.io("truncating", e))?;
        self.hasher = Hasher::new();
        self.diff_id = self.want_diff_id.then(DiffId::new);
        Ok(())
    }

    /// Verify size and digest, sync, and move the blob under `blobs/`; a blob whose bytes are
    /// wrong is deleted, partial and all. Returns the layer's diff_id and whether it is gzip,
    /// when asked for (and records it beside the blob).
    pub fn commit(mut self) -> Result<Option<(Digest, bool)>, IngestError> {
        self.flush()?;
        let count = self.hasher.count();
        if count != self.size {
            return Err(VerifyError::Size {
                digest: self.digest.clone(),
                expected: self.size,
                actual: count,
            }
            .into());
        }
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != self.digest {
            self.store.discard_partial(&self.digest);
            return Err(VerifyError::Digest {
                expected: self.digest.clone(),
                actual,
            }
            .into());
        }
        let diff_id = match self.diff_id.take() {
            Some(d) => Some(d.finish(&self.digest).map_err(|source| {
                self.store.discard_partial(&self.digest);
                IngestError::Layer {
                    digest: self.digest.clone(),
                    source,
                }
            })?),
            None => None,
        };
        self.store
            .commit_partial(self.out.get_ref(), &self.digest)?;
        if let Some((id, gzip)) = &diff_id {
            self.store.record_diff_id(&self.digest, id, *gzip)?;
        }
        Ok(diff_id)
    }

    /// End without committing: what arrived stays for the next run, unless nothing did.
    pub fn abandon(mut self) {
        let _ = self.out.flush();
        if self.offset() == 0 {
            self.store.discard_partial(&self.digest);
        }
    }

    fn io(&self, action: &'static str, source: io::Error) -> StoreError {
        StoreError::Io {
            action,
            path: self.store.partial_path(&self.digest),
            source,
        }
    }
}

/// Feed what a partial file holds to the hashers (from its start).
fn rehash(
    file: &mut File,
    hasher: &mut Hasher,
    mut diff_id: Option<&mut DiffId>,
) -> io::Result<()> {
    file.rewind()?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
        if let Some(t) = diff_id.as_deref_mut() {
            t.update(&buf[..n])?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin<'s>(s: &'s Store, d: &Digest, size: u64) -> Ingest<'s> {
        match s.begin_ingest(d, size, false).unwrap() {
            Begin::Ingest(i) => *i,
            Begin::Present => panic!("present"),
        }
    }

    #[test]
    fn resumes_refuses_overruns_and_commits_only_what_matches() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path()).unwrap();
        let data = b"hello, layered world";
        let d = Digest::sha256_of(data);
        let mut i = begin(&s, &d, data.len() as u64);
        i.write(&data[..7]).unwrap();
        i.abandon();
        assert_eq!(s.partial_len(&d), Some(7));
        let mut i = begin(&s, &d, data.len() as u64);
        assert_eq!(i.offset(), 7, "a partial is resumed");
        assert!(matches!(
            i.write(&[0u8; 100]),
            Err(IngestError::TooLong { .. })
        ));
        i.write(&data[7..]).unwrap();
        assert_eq!(i.commit().unwrap(), None);
        assert!(s.has_blob(&d, data.len() as u64));
        assert!(matches!(
            s.begin_ingest(&d, data.len() as u64, false).unwrap(),
            Begin::Present
        ));

        // A restart forgets the prefix; wrong bytes are deleted, partial and all.
        let other = Digest::sha256_of(b"other bytes");
        let mut i = begin(&s, &other, 11);
        i.write(b"junk").unwrap();
        i.restart().unwrap();
        assert_eq!(i.offset(), 0);
        i.write(b"other bytez").unwrap();
        assert!(matches!(
            i.commit(),
            Err(IngestError::Verify(VerifyError::Digest { .. }))
        ));
        assert_eq!(s.partial_len(&other), None);
        assert!(!s.blob_path(&other).exists());

        // Nothing arrived: no partial is left.
        let i = begin(&s, &other, 11);
        i.abandon();
        assert_eq!(s.partial_len(&other), None);
    }
}
