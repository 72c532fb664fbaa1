//! The commands that read an image's layer blobs from the store, each once, streamed through
//! the decompressor their media type names: `layers --files` (tar headers only, bodies read
//! through and dropped; nothing written) and `unpack` (the entries applied into a directory
//! through `layer::root`, each layer's diff_id checked on the way).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::cancel::Cancel;
use crate::layer::apply::{Applied, ApplyError, Unpacker};
use crate::layer::root::Root;
use crate::pull::describe::LayerRow;

use crate::digest::Digest;
use crate::layer::changes::{Changes, LayerChanges};
use crate::layer::decompress::{Compression, UnknownLayerType};
use crate::layer::tar::{TarError, TarReader};
use crate::manifest::Descriptor;
use crate::report::{Reporter, Stage};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("layer {digest}: {source}")]
    Type {
        digest: Digest,
        #[source]
        source: UnknownLayerType,
    },
    #[error("layer {digest} is not in the store ({path})")]
    Missing {
        digest: Digest,
        path: std::path::PathBuf,
    },
    #[error("layer {digest}: {source}")]
    Read {
        digest: Digest,
        #[source]
        source: TarError,
    },
    #[error("layer {digest}: {source}")]
    Apply {
        digest: Digest,
        #[source]
        source: ApplyError,
    },
    #[error("{0}")]
    Root(std::io::Error),
    #[error("interrupted; the directory holds part of the image")]
    Interrupted,
}

/// Apply `layers` (base first) from the store into `dir`, each checked against its row's diff_id.
pub fn unpack(
    layers: &[Descriptor],
    rows: &[LayerRow],
    dir: &Path,
    watch: Watch<'_>,
) -> Result<Applied, FilesError> {
    let root = Root::open(dir).map_err(FilesError::Root)?;
    let mut unpacker = Unpacker::new(root);
    watch.each(Stage::Unpack, layers, |i, l, tar| {
        let diff_id = rows.get(i).and_then(|r| r.diff_id.as_deref());
        unpacker
            .layer(i, tar, diff_id)
            .map_err(|source| FilesError::Apply {
                digest: l.digest.clone(),
                source,
            })
    })?;
    unpacker.finish().map_err(|source| FilesError::Apply {
        digest: layers
            .last()
            .map(|l| l.digest.clone())
            .unwrap_or_else(|| Digest::sha256_of(b"")),
        source,
    })
}

/// The changes of `layers` (base first), read from the store, which must hold them.
pub fn layer_changes(
    layers: &[Descriptor],
    watch: Watch<'_>,
) -> Result<Vec<LayerChanges>, FilesError> {
    let mut changes = Changes::new();
    watch.each(Stage::Read, layers, |_, l, tar| {
        let mut reader = TarReader::new(tar);
        let mut headers = Vec::new();
        while let Some(h) = reader.next_header().map_err(|source| FilesError::Read {
            digest: l.digest.clone(),
            source,
        })? {
            headers.push(h);
        }
        changes.layer(&headers);
        Ok(())
    })?;
    Ok(changes.finish())
}

/// Where a command over layer blobs reports its progress, and what stops it (Ctrl-C).
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    pub store: &'a Store,
    pub reporter: &'a dyn Reporter,
    pub cancel: &'a Cancel,
}

impl Watch<'_> {
    /// Run `f` on each layer's decompressed tar in turn, as one reported stage: each blob's
    /// bytes are reported as they are read, and a cancel stops the read at its next chunk.
    fn each(
        self,
        stage: Stage,
        layers: &[Descriptor],
        mut f: impl FnMut(usize, &Descriptor, Box<dyn Read + '_>) -> Result<(), FilesError>,
    ) -> Result<(), FilesError> {
        self.reporter
            .transfer_planned(stage, layers.len(), layers.iter().map(|l| l.size).sum());
        let result = (|| {
            for (i, l) in layers.iter().enumerate() {
                if self.cancel.is_cancelled() {
                    return Err(FilesError::Interrupted);
                }
                self.reporter.blob_started(&l.digest, l.size, 0);
                let tar = self.open_layer(l)?;
                match f(i, l, tar) {
                    Ok(()) => self.reporter.blob_done(&l.digest, l.size),
                    // The read stopped because of the cancel, whatever error it became.
                    Err(_) if self.cancel.is_cancelled() => return Err(FilesError::Interrupted),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })();
        self.reporter.transfer_finished();
        result
    }

    /// A layer blob from the store, decompressed: its compressed bytes are reported as they
    /// are read, and its decompressed ones stop coming once the command is cancelled (a small
    /// blob can hold a large tar).
    fn open_layer(&self, l: &Descriptor) -> Result<Box<dyn Read + '_>, FilesError> {
        let compression = Compression::of(&l.media_type).map_err(|source| FilesError::Type {
            digest: l.digest.clone(),
            source,
        })?;
        let path = self.store.blob_path(&l.digest);
        let file = File::open(&path).map_err(|_| FilesError::Missing {
            digest: l.digest.clone(),
            path: path.clone(),
        })?;
        let reported = Reported {
            file,
            digest: l.digest.clone(),
            reporter: self.reporter,
        };
        let tar = compression
            .reader(BufReader::with_capacity(1 << 16, reported))
            .map_err(|e| FilesError::Read {
                digest: l.digest.clone(),
                source: e.into(),
            })?;
        Ok(Box::new(Cancellable {
            inner: tar,
            cancel: self.cancel,
        }))
    }
}

/// A blob file whose reads are reported.
struct Reported<'a> {
    file: File,
    digest: Digest,
    reporter: &'a dyn Reporter,
}

impl Read for Reported<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.reporter.blob_progress(&self.digest, n as u64);
        Ok(n)
    }
}

/// A reader that fails once the command is cancelled.
struct Cancellable<'a, R> {
    inner: R,
    cancel: &'a Cancel,
}

impl<R: Read> Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(io::Error::other("interrupted"));
        }
        self.inner.read(buf)
    }
}
