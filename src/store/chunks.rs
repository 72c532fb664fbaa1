//! A blob written as parallel Range chunks (SPEC: Shared cache and speed): each chunk's bytes
//! go to their offsets in the partial file, and the hash (and diff_id) follow in order as the
//! prefix from byte 0 completes: the chunk at the prefix is hashed from its buffers as it
//! arrives; what other chunks wrote ahead of it is read back from the file when the prefix
//! reaches it (the page cache holds it: the bytes were written moments before).
//!
//! Bookkeeping survives kill -9: `.imagec/partial/<hex>.chunks` lists the complete ranges
//! (`START END` lines, END exclusive, the prefix included), rewritten atomically as each chunk
//! completes. A chunk's bytes are in the file before it is listed; the next run re-hashes the
//! listed prefix and fetches only what is not listed. Whatever the list says, the digest
//! check at commit is the judge: a lost write costs a download again, never a wrong blob.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use super::ingest::IngestError;
use super::{Store, StoreError};
use crate::digest::{Digest, Hasher};
use crate::layer::diffid::DiffId;

/// Sorted, disjoint, non-adjacent `[start, end)` ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    pub fn new() -> Ranges {
        Ranges(Vec::new())
    }

    pub fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        let mut kept = Vec::with_capacity(self.0.len() + 1);
        for &(a, b) in &self.0 {
            if b < s || a > e {
                kept.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        kept.push((s, e));
        kept.sort_unstable();
        self.0 = kept;
    }

    /// Where the run starting at byte 0 ends (0 when byte 0 is missing).
    pub fn prefix(&self) -> u64 {
        match self.0.first() {
            Some(&(0, end)) => end,
            _ => 0,
        }
    }

    /// What of `[from, to)` is not covered, in order.
    pub fn missing(&self, from: u64, to: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = from;
        for &(a, b) in &self.0 {
            if b <= at {
                continue;
            }
            if a >= to {
                break;
            }
            if a > at {
                out.push((at, a.min(to)));
            }
            at = at.max(b);
        }
        if at < to {
            out.push((at, to));
        }
        out
    }

    /// The bookkeeping file's text.
    pub fn to_text(&self) -> String {
        self.0.iter().map(|(a, b)| format!("{a} {b}\n")).collect()
    }

    /// Parse the bookkeeping file; None for anything malformed or past `size` (then it is
    /// not trusted at all).
    pub fn parse(text: &str, size: u64) -> Option<Ranges> {
        let mut r = Ranges::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (a, b) = line.trim().split_once(' ')?;
            let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
            if a >= b || b > size {
                return None;
            }
            r.add(a, b);
        }
        Some(r)
    }
}

/// The chunked phase of an ingest: shared by the threads that fetch its chunks.
pub struct Chunked<'i> {
    store: &'i Store,
    digest: Digest,
    size: u64,
    file: &'i File,
    state: Mutex<State<'i>>,
}

struct State<'i> {
    done: Ranges,
    hasher: &'i mut Hasher,
    diff_id: &'i mut Option<DiffId>,
    /// A failure of the in-order hash (a read error, a layer that is not gzip): every later
    /// completion reports it.
    broken: Option<String>,
}

impl<'i> Chunked<'i> {
    pub(super) fn new(
        store: &'i Store,
        digest: Digest,
        size: u64,
        file: &'i File,
        hasher: &'i mut Hasher,
        diff_id: &'i mut Option<DiffId>,
        done: Ranges,
    ) -> Chunked<'i> {
        Chunked {
            store,
            digest,
            size,
            file,
            state: Mutex::new(State {
                done,
                hasher,
                diff_id,
                broken: None,
            }),
        }
    }

    /// Write bytes of a chunk at `at`. Nothing past the descriptor's size is written. Bytes
    /// that continue the hashed prefix are hashed here, from the buffer: the chunk at the
    /// prefix is never read back (measured on loopback: reading every byte back cost the
    /// cold pull of 600 MB about a fifth of its wall time).
    pub fn write_at(&self, at: u64, bytes: &[u8]) -> Result<(), IngestError> {
        if at + bytes.len() as u64 > self.size {
            return Err(IngestError::TooLong {
                digest: self.digest.clone(),
                size: self.size,
            });
        }
        self.file
            .write_all_at(bytes, at)
            .map_err(|e| self.io("writing", e))?;
        super::writeback::after_write(self.file, at, at + bytes.len() as u64);
        // A writer never waits for the lock: while another thread hashes (a read-back after a
        // completion), these bytes are left for the read-back too.
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
        };
        if state.broken.is_some() || state.hasher.count() != at {
            return Ok(());
        }
        state.hasher.update(bytes);
        if let Some(d) = state.diff_id.as_mut() {
            if let Err(e) = d.update(bytes) {
                state.broken = Some(e.to_string());
                return Err(self.layer_error(e.to_string()));
            }
        }
        // Listed in memory (the file gets it with the next completion), and whatever other
        // chunks completed right after it is hashed now.
        state.done.add(at, at + bytes.len() as u64);
        self.advance(&mut state)
    }

    /// `[start, end)` is in the file (a whole chunk, or the part of one received so far):
    /// list it, and hash whatever is now contiguous from the hashed prefix.
    pub fn complete(&self, start: u64, end: u64) -> Result<(), IngestError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.done.add(start, end);
        self.store
            .write_chunks(&self.digest, &state.done)
            .map_err(IngestError::from)?;
        self.advance(&mut state)
    }

    /// Everything still to fetch, from the hashed prefix on.
    pub fn missing(&self) -> Vec<(u64, u64)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.done.missing(state.hasher.count(), self.size)
    }

    /// Bytes hashed so far (the complete prefix).
    pub fn hashed(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hasher
            .count()
    }

    fn advance(&self, state: &mut State<'_>) -> Result<(), IngestError> {
        if let Some(reason) = &state.broken {
            return Err(self.layer_error(reason.clone()));
        }
        let to = state.done.prefix();
        let mut at = state.hasher.count();
        let mut buf = vec![0u8; 1 << 16];
        while at < to {
            let n = ((to - at) as usize).min(buf.len());
            if let Err(e) = self.file.read_exact_at(&mut buf[..n], at) {
                return Err(self.io("reading back", e).into());
            }
            state.hasher.update(&buf[..n]);
            if let Some(d) = state.diff_id.as_mut() {
                if let Err(e) = d.update(&buf[..n]) {
                    state.broken = Some(e.to_string());
                    return Err(self.layer_error(e.to_string()));
                }
            }
            at += n as u64;
        }
        Ok(())
    }

    fn layer_error(&self, reason: String) -> IngestError {
        IngestError::Layer {
            digest: self.digest.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason),
        }
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> StoreError {
        StoreError::Io {
            action,
            path: self.store.partial_path(&self.digest),
            source,
        }
    }
}

impl Store {
    /// Where the chunk bookkeeping of the partial download of `d` is kept.
    pub fn chunks_path(&self, d: &Digest) -> std::path::PathBuf {
        let mut p = self.partial_path(d).into_os_string();
        p.push(".chunks");
        p.into()
    }

    /// Replace the bookkeeping file by a rename. Not synced: it is rewritten often (each
    /// chunk's progress), a kill -9 loses nothing the kernel has, and after a power loss the
    /// digest check catches whatever it claims wrongly.
    pub(super) fn write_chunks(&self, d: &Digest, done: &Ranges) -> Result<(), StoreError> {
        let path = self.chunks_path(d);
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        std::fs::write(&tmp, done.to_text()).map_err(super::io_err("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(super::io_err("renaming into", &path))
    }

    /// The complete ranges of the partial download of `d`, when it was written in chunks and
    /// its bookkeeping can be trusted.
    pub(super) fn read_chunks(&self, d: &Digest, size: u64) -> Option<Ranges> {
        let text = std::fs::read_to_string(self.chunks_path(d)).ok()?;
        Ranges::parse(&text, size)
    }

    pub(super) fn forget_chunks(&self, d: &Digest) {
        let _ = std::fs::remove_file(self.chunks_path(d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_say_what_is_missing() {
        let mut r = Ranges::new();
        r.add(10, 20);
        r.add(30, 40);
        assert_eq!(r.prefix(), 0);
        assert_eq!(r.missing(0, 50), vec![(0, 10), (20, 30), (40, 50)]);
        r.add(0, 10);
        assert_eq!(r.prefix(), 20, "adjacent ranges join");
        r.add(15, 35);
        assert_eq!(r.prefix(), 40);
        assert_eq!(r.missing(0, 50), vec![(40, 50)]);
        assert_eq!(r.missing(5, 40), vec![]);
        assert_eq!(Ranges::parse(&r.to_text(), 50), Some(r.clone()));
        assert_eq!(Ranges::parse("0 60\n", 50), None, "past the size");
        assert_eq!(Ranges::parse("5 5\n", 50), None, "empty");
        assert_eq!(Ranges::parse("x y\n", 50), None);
    }
}
