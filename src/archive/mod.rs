//! `save`: an archive that `docker load` (since Docker 25), `podman load`, skopeo's
//! `docker-archive:` and `oci-archive:` and umoci all read (SPEC: save). It is an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/...`) plus docker's `manifest.json` and
//! `repositories`, whose paths point into `blobs/`. The blobs are the store's as pulled, each
//! written once however many images share it. This module knows the store and the format;
//! where the bytes go (a temp file renamed into place, or stdout) is the command's business.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Write};

use serde_json::{json, Value};

use crate::digest::Digest;
use crate::manifest::{media, ImageManifest};
use crate::reference::Reference;
use crate::store::{Store, StoreError};

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

/// Write the archive of `images` to `out`.
pub fn save(store: &Store, images: &[SavedImage], out: impl Write) -> Result<(), ArchiveError> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    let w = ArchiveError::Write;
    let mut written: HashSet<Digest> = HashSet::new();
    let mut index_entries = Vec::new();
    let mut docker_manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    add_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(w)?;
    add_dir(&mut tar, "blobs/").map_err(w)?;
    add_dir(&mut tar, "blobs/sha256/").map_err(w)?;
    for img in images {
        let bytes = store
            .read_blob(&img.manifest, crate::manifest::MAX_MANIFEST)?
            .ok_or_else(|| ArchiveError::Missing(img.manifest.clone()))?;
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| ArchiveError::NotAnImage {
                digest: img.manifest.clone(),
                reason: e.to_string(),
            })?;
        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
        for d in std::iter::once(&img.manifest)
            .chain(std::iter::once(&manifest.config.digest))
            .chain(manifest.layers.iter().map(|l| &l.digest))
        {
            if written.insert(d.clone()) {
                add_blob(&mut tar, store, d)?;
            }
        }
        let name = img.reference.to_string();
        index_entries.push(json!({
            "mediaType": media_type,
            "digest": img.manifest,
            "size": bytes.len(),
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
    tar.into_inner()
        .and_then(|mut o| o.flush())
        .map_err(ArchiveError::Write)
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

fn add_blob<W: Write>(
    tar: &mut tar::Builder<W>,
    store: &Store,
    d: &Digest,
) -> Result<(), ArchiveError> {
    let path = store.blob_path(d);
    let mut f = File::open(&path).map_err(|_| ArchiveError::Missing(d.clone()))?;
    let size = f.metadata().map_err(ArchiveError::Write)?.len();
    let mut h = header(tar::EntryType::Regular, size);
    tar.append_data(&mut h, blob_name(d), &mut f)
        .map_err(ArchiveError::Write)
}

fn header(kind: tar::EntryType, size: u64) -> tar::Header {
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
    h
}

fn add_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, 0);
    tar.append_data(&mut h, name, io::empty())
}

fn add_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, bytes.len() as u64);
    tar.append_data(&mut h, name, bytes)
}

fn add_json<W: Write>(tar: &mut tar::Builder<W>, name: &str, v: &Value) -> io::Result<()> {
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
