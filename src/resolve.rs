//! Resolution: a reference becomes the manifests to pull. The top manifest is what the
//! reference names at the registry (what `docker pull` reports); for an index or list, the
//! children `--platform` selects. When the store already holds a reference of this name, a
//! `HEAD` tells the current digest, and manifests the store holds are read from it instead of
//! fetched again (SPEC: a repeat pull asks the registry only for the manifest).

use crate::digest::Digest;
use crate::manifest::{media::Kind, Descriptor, ImageManifest, Index, Manifest, ManifestError};
use crate::platform::{Platform, PlatformChoice};
use crate::reference::Reference;
use crate::registry::{ClientError, RawManifest, Registry, RegistryError, MAX_MANIFEST};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("index {index} lists {child} with size {listed}, but it has {actual} bytes")]
    ChildSize {
        index: Digest,
        child: Digest,
        listed: u64,
        actual: u64,
    },
    #[error("index {index} nests another index ({child}); nested indexes are not supported")]
    Nested { index: Digest, child: Digest },
}

/// One image manifest to pull.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub raw: RawManifest,
    pub kind: Kind,
    pub manifest: ImageManifest,
    /// The platform the index listed it under (None for a single-image reference).
    pub platform: Option<Platform>,
}

/// What a reference resolved to.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub reference: Reference,
    pub top: RawManifest,
    pub top_kind: Kind,
    /// Present when the reference names an index or list.
    pub index: Option<Index>,
    pub images: Vec<ResolvedImage>,
}

impl Resolved {
    /// The config and layer descriptors of every selected image, in order, repeats included.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.images
            .iter()
            .flat_map(|i| std::iter::once(&i.manifest.config).chain(i.manifest.layers.iter()))
    }
}

pub fn resolve(
    registry: &Registry,
    store: Option<&Store>,
    reference: &Reference,
    choice: &PlatformChoice,
) -> Result<Resolved, ResolveError> {
    let name = reference.to_string();
    let top = fetch_top(registry, store, reference, &name)?;
    let reporter = registry.reporter();
    reporter.resolved(&name, &top.digest);
    let parsed = Manifest::parse(&top.media_type, &top.bytes, &top.digest)?;
    let top_kind = parsed.kind();
    match parsed {
        Manifest::Image(kind, manifest) => Ok(Resolved {
            reference: reference.clone(),
            top: top.clone(),
            top_kind,
            index: None,
            images: vec![ResolvedImage {
                raw: top,
                kind,
                manifest: *manifest,
                platform: None,
            }],
        }),
        Manifest::Index(_, index) => {
            let mut images = Vec::new();
            for child in index.select(choice, &name)? {
                let raw =
                    fetch_by_digest(registry, store, reference, &child.digest, &child.media_type)?;
                if raw.bytes.len() as u64 != child.size {
                    return Err(ResolveError::ChildSize {
                        index: top.digest.clone(),
                        child: child.digest.clone(),
                        listed: child.size,
                        actual: raw.bytes.len() as u64,
                    });
                }
                match Manifest::parse(&child.media_type, &raw.bytes, &raw.digest)? {
                    Manifest::Image(kind, manifest) => images.push(ResolvedImage {
                        raw,
                        kind,
                        manifest: *manifest,
                        platform: child.platform.clone(),
                    }),
                    Manifest::Index(..) => {
                        return Err(ResolveError::Nested {
                            index: top.digest.clone(),
                            child: child.digest.clone(),
                        })
                    }
                }
            }
            Ok(Resolved {
                reference: reference.clone(),
                top,
                top_kind,
                index: Some(*index),
                images,
            })
        }
    }
}

/// The top manifest: from the store when a HEAD says the store has it, else a GET.
fn fetch_top(
    registry: &Registry,
    store: Option<&Store>,
    reference: &Reference,
    name: &str,
) -> Result<RawManifest, ResolveError> {
    if let Some(store) = store {
        let known = store.entry(name)?.is_some()
            || reference
                .digest()
                .is_some_and(|d| store.blob_path(d).exists());
        if known {
            if let Some(head) = registry.head_manifest(reference)? {
                let digest_ok = reference.digest().is_none_or(|d| d == &head.digest);
                if digest_ok {
                    if let Some(bytes) = store.read_blob(&head.digest, MAX_MANIFEST)? {
                        registry.reporter().verbose(&format!(
                            "manifest {} is in the store: not fetching it",
                            head.digest
                        ));
                        return Ok(RawManifest {
                            media_type: head.media_type,
                            bytes,
                            digest: head.digest,
                        });
                    }
                }
            }
        }
    }
    let expected = reference.digest();
    Ok(registry.get_manifest(reference, &reference.manifest_reference(), expected)?)
}

fn fetch_by_digest(
    registry: &Registry,
    store: Option<&Store>,
    reference: &Reference,
    digest: &Digest,
    media_type: &str,
) -> Result<RawManifest, ResolveError> {
    if let Some(store) = store {
        if let Some(bytes) = store.read_blob(digest, MAX_MANIFEST)? {
            return Ok(RawManifest {
                bytes,
                media_type: media_type.to_string(),
                digest: digest.clone(),
            });
        }
    }
    match registry.get_manifest(reference, &digest.to_string(), Some(digest)) {
        Ok(raw) => Ok(raw),
        Err(ClientError::Registry(RegistryError::NotFound { url, body, .. })) => {
            Err(ClientError::from(RegistryError::NotFound {
                what: format!("manifest {digest} listed in the index of {reference}"),
                url,
                body,
            })
            .into())
        }
        Err(e) => Err(e.into()),
    }
}
