//! `save`: an archive that `docker load` (since Docker 25), `podman load`, skopeo's
//! `docker-archive:` and `oci-archive:` and umoci all read (SPEC: save). It is an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/...`) plus docker's `manifest.json` and
//! `repositories`, whose paths point into `blobs/`. The blobs are the store's as pulled, each
//! written once however many images share it. This module knows the store and the format;
//! where the bytes go (a temp file renamed into place, or stdout) is the command's business.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};

use serde_json::{json, Value};

use crate::cancel::Cancel;
use crate::digest::Digest;
use crate::manifest::{media, ImageManifest};
use crate::reference::Reference;
use crate::report::{Reporter, Stage};
use crate::store::{Store, StoreError};

/// Blob bytes copied between two progress reports (and cancel checks).
const CHUNK: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{digest} is not an image manifest ({reason}); save takes one platform of an image")]
    NotAnImage { digest: Digest, reason: String },
    #[error("blob {0} is not in the store")]
    Missing(Digest),
    #[error("writing the archive: {0}")]
    Write(#[source] io::Error),
    #[error("interrupted")]
    Interrupted,
}

/// One image to save: the name it goes under and its manifest in the store.
pub struct SavedImage {
    pub reference: Reference,
    pub manifest: Digest,
}

/// The name `docker images` shows: `alpine:3.20` for `docker.io/library/alpine:3.20`,
/// `user/app:1` for `docker.io/user/app:1`, other registries in full. None without a tag.
pub fn repo_tag(r: &Reference) -> Option<(String, String)> {
    let tag = r.tag()?.to_string();
    let repo = if r.registry() == "docker.io" {
        r.repository()
            .strip_prefix("library/")
            .unwrap_or(r.repository())
            .to_string()
    } else {
        format!("{}/{}", r.registry(), r.repository())
    };
    Some((repo, tag))
}

/// Write the archive of `images` to `out`, reporting each blob as a stage of `reporter`;
/// `cancel` stops it at the next chunk.
pub fn save(
    store: &Store,
    images: &[SavedImage],
    out: impl Write,
    reporter: &dyn Reporter,
    cancel: &Cancel,
) -> Result<(), ArchiveError> {
    // Every manifest first: the blobs, each once, are known (and open) before a byte is written.
    let mut parsed = Vec::new();
    let mut seen: HashSet<Digest> = HashSet::new();
    // Paths and sizes only: a file is opened when it is written (an image of a thousand
    // blobs would otherwise hold a thousand descriptors).
    let mut blobs: Vec<(Digest, std::path::PathBuf, u64)> = Vec::new();
    for img in images {
        let bytes = store
            .read_blob(&img.manifest, crate::manifest::MAX_MANIFEST)?
            .ok_or_else(|| ArchiveError::Missing(img.manifest.clone()))?;
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| ArchiveError::NotAnImage {
                digest: img.manifest.clone(),
                reason: e.to_string(),
            })?;
        for d in std::iter::once(&img.manifest)
            .chain(std::iter::once(&manifest.config.digest))
            .chain(manifest.layers.iter().map(|l| &l.digest))
        {
            if seen.insert(d.clone()) {
                let path = store.blob_path(d);
                let size = match std::fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(ArchiveError::Missing(d.clone()))
                    }
                    Err(e) => return Err(ArchiveError::Write(e)),
                };
                blobs.push((d.clone(), path, size));
            }
        }
        parsed.push((img, bytes.len(), manifest));
    }

    let mut tar = Archive { out };
    let w = ArchiveError::Write;
    add_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(w)?;
    add_dir(&mut tar, "blobs/").map_err(w)?;
    add_dir(&mut tar, "blobs/sha256/").map_err(w)?;
    reporter.transfer_planned(
        Stage::Save,
        blobs.len(),
        blobs.iter().map(|(_, _, size)| size).sum(),
    );
    let result = (|| {
        for (d, path, size) in blobs {
            let f = File::open(&path)?;
            reporter.blob_started(&d, size, 0);
            tar.blob(&blob_name(&d), size, f, &|n| {
                reporter.blob_progress(&d, n);
                !cancel.is_cancelled()
            })?;
            reporter.blob_done(&d, size);
        }
        Ok(())
    })();
    reporter.transfer_finished();
    result.map_err(|e: io::Error| {
        if cancel.is_cancelled() {
            ArchiveError::Interrupted
        } else {
            ArchiveError::Write(e)
        }
    })?;

    let mut index_entries = Vec::new();
    let mut docker_manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (img, manifest_size, manifest) in parsed {
        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
        let name = img.reference.to_string();
        index_entries.push(json!({
            "mediaType": media_type,
            "digest": img.manifest,
            "size": manifest_size,
            "annotations": {
                crate::store::REF_NAME: name,
                "io.containerd.image.name": name,
            },
        }));
        let tags: Vec<String> = repo_tag(&img.reference)
            .map(|(repo, tag)| {
                if let Some(top) = manifest.layers.last() {
                    repositories
                        .entry(repo.clone())
                        .or_default()
                        .insert(tag.clone(), top.digest.hex().to_string());
                }
                vec![format!("{repo}:{tag}")]
            })
            .unwrap_or_default();
        docker_manifest.push(json!({
            "Config": blob_name(&manifest.config.digest),
            "RepoTags": tags,
            "Layers": manifest.layers.iter().map(|l| blob_name(&l.digest)).collect::<Vec<_>>(),
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": index_entries,
    });
    add_json(&mut tar, "index.json", &index).map_err(w)?;
    add_json(&mut tar, "manifest.json", &Value::Array(docker_manifest)).map_err(w)?;
    add_json(&mut tar, "repositories", &json!(repositories)).map_err(w)?;
    tar.finish().map(|_| ()).map_err(ArchiveError::Write)
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

/// The archive's writer: ustar headers from the `tar` crate, bodies copied with `io::copy`
/// straight from the blob's file (std turns File-to-File into copy_file_range and
/// File-to-pipe into splice, so layer bytes need not pass through user space; the crate's
/// Builder copies through its own buffer), then the padding, and two zero blocks at the end.
struct Archive<W: Write> {
    out: W,
}

impl<W: Write> Archive<W> {
    /// A blob's entry, its body copied [`CHUNK`] bytes at a time, `progress` told after each
    /// (it answers false to stop).
    fn blob(
        &mut self,
        name: &str,
        size: u64,
        mut body: File,
        progress: &dyn Fn(u64) -> bool,
    ) -> io::Result<()> {
        self.header(tar::EntryType::Regular, name, size)?;
        let mut left = size;
        while left > 0 {
            let copied = io::copy(&mut (&mut body).take(left.min(CHUNK)), &mut self.out)?;
            if copied == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{name} ended early"),
                ));
            }
            left -= copied;
            if !progress(copied) {
                return Err(io::Error::other("interrupted"));
            }
        }
        self.pad(size)
    }

    fn entry<R: io::Read>(
        &mut self,
        kind: tar::EntryType,
        name: &str,
        size: u64,
        body: R,
    ) -> io::Result<()> {
        self.header(kind, name, size)?;
        let copied = io::copy(&mut body.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name} ended early"),
            ));
        }
        self.pad(size)
    }

    fn header(&mut self, kind: tar::EntryType, name: &str, size: u64) -> io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_path(name)?;
        h.set_cksum();
        self.out.write_all(h.as_bytes())
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let pad = (512 - size % 512) % 512;
        self.out.write_all(&[0u8; 512][..pad as usize])
    }

    fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 1024])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn add_dir<W: Write>(tar: &mut Archive<W>, name: &str) -> io::Result<()> {
    tar.entry(tar::EntryType::Directory, name, 0, io::empty())
}

fn add_bytes<W: Write>(tar: &mut Archive<W>, name: &str, bytes: &[u8]) -> io::Result<()> {
    tar.entry(tar::EntryType::Regular, name, bytes.len() as u64, bytes)
}

fn add_json<W: Write>(tar: &mut Archive<W>, name: &str, v: &Value) -> io::Result<()> {
    add_bytes(tar, name, &serde_json::to_vec(v).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_tags_are_written_the_way_docker_shows_them() {
        let rt = |s: &str| repo_tag(&s.parse().unwrap());
        assert_eq!(rt("alpine:3.20"), Some(("alpine".into(), "3.20".into())));
        assert_eq!(rt("user/app:1"), Some(("user/app".into(), "1".into())));
        assert_eq!(
            rt("127.0.0.1:5000/team/app:2"),
            Some(("127.0.0.1:5000/team/app".into(), "2".into()))
        );
        let digest = format!("alpine@sha256:{}", "a".repeat(64));
        assert_eq!(rt(&digest), None);
    }
}
