//! The commands that read an image's layer blobs from the store, each once, streamed through
//! the decompressor their media type names: `layers --files` (tar headers only, bodies read
//! through and dropped; nothing written) and `unpack` (the entries applied into a directory
//! through `layer::root`, each layer's diff_id checked on the way).

use std::fs::File;
use std::io::BufReader;
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

/// Apply `layers` (base first) from `store` into `dir`, each checked against its row's diff_id.
pub fn unpack(
    store: &Store,
    layers: &[Descriptor],
    rows: &[LayerRow],
    dir: &Path,
    cancel: &Cancel,
) -> Result<Applied, FilesError> {
    let root = Root::open(dir).map_err(FilesError::Root)?;
    let mut unpacker = Unpacker::new(root);
    for (i, l) in layers.iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(FilesError::Interrupted);
        }
        let tar = open_layer(store, l)?;
        let diff_id = rows.get(i).and_then(|r| r.diff_id.as_deref());
        unpacker
            .layer(i, tar, diff_id)
            .map_err(|source| FilesError::Apply {
                digest: l.digest.clone(),
                source,
            })?;
    }
    unpacker.finish().map_err(|source| FilesError::Apply {
        digest: layers
            .last()
            .map(|l| l.digest.clone())
            .unwrap_or_else(|| Digest::sha256_of(b"")),
        source,
    })
}

/// A layer blob from the store, decompressed.
fn open_layer<'a>(
    store: &Store,
    l: &Descriptor,
) -> Result<Box<dyn std::io::Read + 'a>, FilesError> {
    let compression = Compression::of(&l.media_type).map_err(|source| FilesError::Type {
        digest: l.digest.clone(),
        source,
    })?;
    let path = store.blob_path(&l.digest);
    let blob = File::open(&path).map_err(|_| FilesError::Missing {
        digest: l.digest.clone(),
        path: path.clone(),
    })?;
    compression
        .reader(BufReader::with_capacity(1 << 16, blob))
        .map_err(|e| FilesError::Read {
            digest: l.digest.clone(),
            source: e.into(),
        })
}

/// The changes of `layers` (base first), read from `store`, which must hold them.
pub fn layer_changes(
    store: &Store,
    layers: &[Descriptor],
) -> Result<Vec<LayerChanges>, FilesError> {
    let mut changes = Changes::new();
    for l in layers {
        let read = |source: TarError| FilesError::Read {
            digest: l.digest.clone(),
            source,
        };
        let tar = open_layer(store, l)?;
        let mut reader = TarReader::new(tar);
        let mut headers = Vec::new();
        while let Some(h) = reader.next_header().map_err(read)? {
            headers.push(h);
        }
        changes.layer(&headers);
    }
    Ok(changes.finish())
}
