//! The ingest owns a blob's bytes on their way into the store: the blob's lock, its partial
//! file `.imagec/partial/<hex>`, the hash (and, for layers that need it, the diff_id) of what
//! the file holds, and the commit that verifies size and digest, syncs, and renames the file
//! under `blobs/`. Copy loops around it stay small: whatever the bytes come from (one stream, a
//! resumed stream, later parallel Range chunks or a shared cache), they are written here and
//! committed here (containerd: `content.Writer` with `Status`/`Commit`).
//!
//! Invariants: without chunk bookkeeping, the partial file's length always equals the bytes
//! hashed once [`Ingest::flush`] returns (so a crash leaves a prefix the next run re-hashes);
//! with it (a blob fetched in parallel chunks, [`super::chunks`]), the complete ranges are
//! the ones it lists; nothing past the descriptor's size is ever written; a blob whose bytes
//! turn out wrong is deleted, partial, bookkeeping and all.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};

use super::chunks::{Chunked, Ranges};
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
    /// The complete ranges an earlier chunked fetch left (the prefix included), when its
    /// bookkeeping file was there; the file then holds bytes past the hashed prefix.
    chunks: Option<Ranges>,
    /// The file may hold bytes past the hashed prefix (chunks): a sequential write first
    /// cuts them off, and the bookkeeping goes.
    tail_dirty: bool,
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
        let mut have = file.metadata().map_err(err("reading"))?.len();
        // Bookkeeping that lists bytes past the file's end (a crash between a truncation and
        // its removal) is not trusted.
        let listed = self.chunks_path(digest).exists();
        let mut chunks = self
            .read_chunks(digest, have.min(size))
            .filter(|_| have <= size);
        if chunks.is_none() {
            if listed && have > 0 {
                // Written in chunks, but what is where is unknown now: start over.
                file.set_len(0).map_err(err("truncating"))?;
                have = 0;
            }
            self.forget_chunks(digest);
        }
        // Without bookkeeping the whole file is the prefix; with it, the run from byte 0 it
        // lists.
        let prefix = chunks.as_ref().map_or(have, |c| c.prefix().min(have));
        if have > size {
            file.set_len(0).map_err(err("truncating"))?;
        } else if prefix > 0
            && rehash(&mut file, prefix, &mut ingest_hasher, ingest_diff.as_mut()).is_err()
        {
            // A partial we cannot read back (or whose start is no valid gzip) is started anew.
            file.set_len(0).map_err(err("truncating"))?;
            self.forget_chunks(digest);
            chunks = None;
            ingest_hasher = Hasher::new();
            ingest_diff = diff_id.then(DiffId::new);
        }
        let at = ingest_hasher.count();
        file.seek(io::SeekFrom::Start(at))
            .map_err(err("seeking in"))?;
        let tail_dirty = chunks.is_some() || file.metadata().map_or(true, |m| m.len() > at);
        Ok(Begin::Ingest(Box::new(Ingest {
            store: self,
            digest: digest.clone(),
            size,
            out: BufWriter::with_capacity(1 << 18, file),
            hasher: ingest_hasher,
            want_diff_id: diff_id,
            diff_id: ingest_diff,
            chunks,
            tail_dirty,
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

    /// Bytes handed to the file so far (the rest of the hashed ones wait in the buffer).
    fn handed(&self) -> u64 {
        self.offset() - self.out.buffer().len() as u64
    }

    /// Append bytes. More than the descriptor's size is refused (nothing of them is written).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), IngestError> {
        if self.offset() + bytes.len() as u64 > self.size {
            return Err(IngestError::TooLong {
                digest: self.digest.clone(),
                size: self.size,
            });
        }
        if self.tail_dirty {
            // Chunks an earlier fetch left past the prefix go: from here the file grows in
            // order again, and its length is the prefix.
            let at = self.offset();
            let cut = self.out.flush().and_then(|_| {
                let file = self.out.get_mut();
                file.set_len(at)?;
                file.seek(io::SeekFrom::Start(at)).map(|_| ())
            });
            cut.map_err(|e| self.io("truncating", e))?;
            self.store.forget_chunks(&self.digest);
            self.chunks = None;
            self.tail_dirty = false;
        }
        let handed = self.handed();
        self.out
            .write_all(bytes)
            .map_err(|e| self.io("writing", e))?;
        self.hasher.update(bytes);
        super::writeback::after_write(self.out.get_ref(), handed, self.handed());
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
        self.store.forget_chunks(&self.digest);
        self.chunks = None;
        self.tail_dirty = false;
        self.hasher = Hasher::new();
        self.diff_id = self.want_diff_id.then(DiffId::new);
        Ok(())
    }

    /// Ranges of the blob still to fetch, from the hashed prefix on (chunks an earlier
    /// chunked fetch completed are left out).
    pub fn missing(&self) -> Vec<(u64, u64)> {
        match &self.chunks {
            Some(c) => c.missing(self.offset(), self.size),
            None => vec![(self.offset(), self.size)]
                .into_iter()
                .filter(|(a, b)| a < b)
                .collect(),
        }
    }

    /// Switch to chunked writing: bytes at any offset, hashed in order as the prefix
    /// completes ([`Chunked`]). When it is dropped, the ingest can be committed (once every
    /// byte is hashed) or abandoned (completed chunks are kept for the next run).
    pub fn chunked(&mut self) -> Result<Chunked<'_>, IngestError> {
        self.flush()?;
        let done = self.chunks.take().unwrap_or_else(|| {
            let mut r = Ranges::new();
            r.add(0, self.hasher.count());
            r
        });
        self.tail_dirty = true;
        // Listed before any byte goes past the prefix: without bookkeeping, the next run
        // would take the whole file (holes included) for the prefix.
        self.store.write_chunks(&self.digest, &done)?;
        Ok(Chunked::new(
            self.store,
            self.digest.clone(),
            self.size,
            self.out.get_ref(),
            &mut self.hasher,
            &mut self.diff_id,
            done,
        ))
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
        self.store.forget_chunks(&self.digest);
        if let Some((id, gzip)) = &diff_id {
            // Derived data: a record that cannot be written (a directory another user made)
            // costs a later run one pass over the layer, never the blob just verified.
            if let Err(e) = self.store.record_diff_id(&self.digest, id, *gzip) {
                log::info!("not recording the diff_id of {}: {e}", self.digest);
            }
        }
        Ok(diff_id)
    }

    /// End without committing: what arrived stays for the next run, unless nothing did.
    pub fn abandon(mut self) {
        let _ = self.out.flush();
        if self.offset() == 0 && !self.store.chunks_path(&self.digest).exists() {
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

/// Feed the first `len` bytes a partial file holds to the hashers.
fn rehash(
    file: &mut File,
    len: u64,
    hasher: &mut Hasher,
    mut diff_id: Option<&mut DiffId>,
) -> io::Result<()> {
    file.rewind()?;
    let mut buf = vec![0u8; 1 << 16];
    let mut file = file.take(len);
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

    #[test]
    fn chunks_complete_out_of_order_survive_a_stop_and_hash_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path()).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let d = Digest::sha256_of(&data);
        let size = data.len() as u64;
        let mut i = begin(&s, &d, size);
        i.write(&data[..1000]).unwrap();
        {
            let c = i.chunked().unwrap();
            // Chunks past the prefix: listed, not hashed.
            c.write_at(50_000, &data[50_000..75_000]).unwrap();
            c.complete(50_000, 75_000).unwrap();
            assert_eq!(c.hashed(), 1000);
            c.write_at(1000, &data[1000..20_000]).unwrap();
            c.complete(1000, 20_000).unwrap();
            assert_eq!(c.hashed(), 20_000);
            // Half a chunk written, never completed (the process is killed here).
            c.write_at(20_000, &data[20_000..30_000]).unwrap();
            assert!(matches!(
                c.write_at(size - 10, &[0u8; 11]),
                Err(IngestError::TooLong { .. })
            ));
        }
        drop(i);
        // The next run re-hashes the listed prefix and fetches only what is not listed.
        let mut i = begin(&s, &d, size);
        assert_eq!(i.offset(), 20_000);
        assert_eq!(i.missing(), vec![(20_000, 50_000), (75_000, size)]);
        {
            let c = i.chunked().unwrap();
            c.write_at(75_000, &data[75_000..]).unwrap();
            c.complete(75_000, size).unwrap();
            c.write_at(20_000, &data[20_000..50_000]).unwrap();
            c.complete(20_000, 50_000).unwrap();
            assert_eq!(c.hashed(), size);
            assert!(c.missing().is_empty());
        }
        i.commit().unwrap();
        assert!(s.has_blob(&d, size));
        assert!(!s.chunks_path(&d).exists());
    }

    #[test]
    fn a_sequential_write_after_chunks_cuts_them_off() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path()).unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 13) as u8).collect();
        let d = Digest::sha256_of(&data);
        let size = data.len() as u64;
        let mut i = begin(&s, &d, size);
        {
            let c = i.chunked().unwrap();
            c.write_at(0, &data[..3000]).unwrap();
            c.complete(0, 3000).unwrap();
            c.write_at(6000, &[9u8; 4000]).unwrap();
            c.complete(6000, 10_000).unwrap();
        }
        drop(i);
        let mut i = begin(&s, &d, size);
        assert_eq!(i.offset(), 3000);
        // A source that does not answer Range: the rest comes in order.
        i.write(&data[3000..]).unwrap();
        assert!(!s.chunks_path(&d).exists());
        i.commit().unwrap();
        assert_eq!(std::fs::read(s.blob_path(&d)).unwrap(), data);
    }

    #[test]
    fn chunk_bookkeeping_that_does_not_match_the_file_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path()).unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 29) as u8).collect();
        let d = Digest::sha256_of(&data);
        let size = data.len() as u64;
        // Killed right after the switch to chunks, a chunk written past the prefix, nothing
        // listed yet: the listing made at the switch keeps the holes out of the prefix.
        let mut i = begin(&s, &d, size);
        i.write(&data[..100]).unwrap();
        {
            let c = i.chunked().unwrap();
            c.write_at(5000, &data[5000..6000]).unwrap();
        }
        drop(i);
        let i = begin(&s, &d, size);
        assert_eq!(i.offset(), 100);
        assert_eq!(i.missing(), vec![(100, size)]);
        drop(i);
        // A listing past the file's end (the file cut, the listing left): start over.
        std::fs::write(s.chunks_path(&d), "0 9000\n").unwrap();
        let i = begin(&s, &d, size);
        assert_eq!(i.offset(), 0);
        assert_eq!(s.partial_len(&d), Some(0));
        assert!(!s.chunks_path(&d).exists());
    }
}
