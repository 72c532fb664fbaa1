//! `layers --files`: each layer blob of an image, read once from the store through its
//! decompressor, tar headers only (bodies are read through and dropped), into what each layer
//! adds, changes and deletes (SPEC: layers --files). Nothing is written.

use std::fs::File;
use std::io::BufReader;

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
}

/// The changes of `layers` (base first), read from `store`, which must hold them.
pub fn layer_changes(
    store: &Store,
    layers: &[Descriptor],
) -> Result<Vec<LayerChanges>, FilesError> {
    let mut changes = Changes::new();
    for l in layers {
        let compression = Compression::of(&l.media_type).map_err(|source| FilesError::Type {
            digest: l.digest.clone(),
            source,
        })?;
        let path = store.blob_path(&l.digest);
        let read = |source: TarError| FilesError::Read {
            digest: l.digest.clone(),
            source,
        };
        let blob = File::open(&path).map_err(|_| FilesError::Missing {
            digest: l.digest.clone(),
            path: path.clone(),
        })?;
        let tar = compression
            .reader(BufReader::with_capacity(1 << 16, blob))
            .map_err(|e| read(e.into()))?;
        let mut reader = TarReader::new(tar);
        let mut headers = Vec::new();
        while let Some(h) = reader.next_header().map_err(read)? {
            headers.push(h);
        }
        changes.layer(&headers);
    }
    Ok(changes.finish())
}
