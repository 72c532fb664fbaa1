//! Resolution: a reference becomes the manifests to pull. The top manifest is what the
//! reference names at the registry (what `docker pull` reports); for an index or list, the
//! children `--platform` selects. When the store already holds a reference of this name, a
//! `HEAD` tells the current digest, and manifests the store holds are read from it instead of
//! fetched again (SPEC: a repeat pull asks the registry only for the manifest).

use std::collections::{BTreeMap, HashMap};

use crate::digest::Digest;
use crate::manifest::schema1::Schema1;
use crate::manifest::{
    media, media::Kind, Descriptor, ImageConfig, ImageManifest, Index, Manifest, ManifestError,
};
use crate::platform::{Platform, PlatformChoice};
use crate::pull::transfer::{read_small_blob, TransferError, MAX_CONFIG};
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
    #[error(transparent)]
    Transfer(#[from] Box<TransferError>),
    #[error("index {index} lists {child} with size {listed}, but it has {actual} bytes")]
    ChildSize {
        index: Digest,
        child: Digest,
        listed: u64,
        actual: u64,
    },
    #[error("index {index} nests another index ({child}); nested indexes are not supported")]
    Nested { index: Digest, child: Digest },
    #[error("index {index} lists a schema1 manifest ({child}), which an index cannot hold")]
    Schema1InIndex { index: Digest, child: Digest },
    /// The repository answers, the tag is not in it: say which tags are (SPEC hints).
    #[error("no tag {tag:?} in {repository}; {}", tag_list(tags, *more, repository))]
    NoSuchTag {
        repository: String,
        tag: String,
        tags: Vec<String>,
        more: bool,
    },
    /// The digest asked for is one imagec made by converting a manifest: the registry has
    /// never heard of it.
    #[error("{digest} is the digest of the manifest imagec stored for {name} (converted to OCI); the registry knows that image as {registry_digest}: pull {repository}@{registry_digest}")]
    ConvertedDigest {
        digest: Digest,
        name: String,
        repository: String,
        registry_digest: String,
    },
}

/// Tags shown when a tag is missing: a first page, not the whole list.
pub const TAG_HINT: usize = 10;

fn tag_list(tags: &[String], more: bool, repository: &str) -> String {
    match (tags.len(), more) {
        (0, _) => "it has no tags".to_string(),
        (_, false) => format!("its tags: {}", tags.join(", ")),
        (_, true) => format!(
            "its tags include {} (imagec tags {repository} lists them all)",
            tags.join(", ")
        ),
    }
}

/// What an image is made of.
#[derive(Debug, Clone)]
pub enum Content {
    /// A schema2 or OCI image manifest: config and layers are named.
    Manifest(Box<ImageManifest>),
    /// A schema1 manifest: its layers (base first, throwaways left out, sizes learned with
    /// `HEAD`); the config is made from its history once the layers' diff_ids are known.
    Schema1 {
        manifest: Box<Schema1>,
        layers: Vec<Descriptor>,
    },
}

/// One image manifest to pull.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub raw: RawManifest,
    pub kind: Kind,
    pub content: Content,
    /// The platform the index listed it under (None for a single-image reference).
    pub platform: Option<Platform>,
}

impl ResolvedImage {
    /// The config blob, when the manifest names one (not schema1).
    pub fn config(&self) -> Option<&Descriptor> {
        match &self.content {
            Content::Manifest(m) => Some(&m.config),
            Content::Schema1 { .. } => None,
        }
    }

    /// The layers, base first.
    pub fn layers(&self) -> &[Descriptor] {
        match &self.content {
            Content::Manifest(m) => &m.layers,
            Content::Schema1 { layers, .. } => layers,
        }
    }

    /// The media type the registry served this manifest as.
    pub fn served_media_type(&self) -> &str {
        served_media_type(self.kind, &self.raw)
    }
}

/// Schema1 comes signed (`prettyjws`) or not (`v1+json`): report what was served.
fn served_media_type(kind: Kind, raw: &RawManifest) -> &str {
    match (kind, raw.media_type.as_str()) {
        (Kind::Schema1, t @ (media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED)) => t,
        _ => kind.media_type(),
    }
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
            .flat_map(|i| i.config().into_iter().chain(i.layers().iter()))
    }

    /// The media type the reference resolved to at the registry.
    pub fn top_media_type(&self) -> &str {
        served_media_type(self.top_kind, &self.top)
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
    let single = |content| {
        Ok(Resolved {
            reference: reference.clone(),
            top: top.clone(),
            top_kind,
            index: None,
            images: vec![ResolvedImage {
                raw: top.clone(),
                kind: top_kind,
                content,
                platform: None,
            }],
        })
    };
    match parsed {
        Manifest::Image(_, manifest) => {
            if let PlatformChoice::One(wanted) = choice {
                let bytes =
                    read_small_blob(registry, store, reference, &manifest.config, MAX_CONFIG)
                        .map_err(Box::new)?;
                let config = ImageConfig::parse(&bytes, &manifest.config.digest)?;
                check_platform(wanted, config.platform(), &name)?;
            }
            single(Content::Manifest(manifest))
        }
        Manifest::Schema1(manifest) => {
            if let PlatformChoice::One(wanted) = choice {
                check_platform(wanted, manifest.platform(), &name)?;
            }
            let layers = schema1_layers(registry, store, reference, &manifest)?;
            single(Content::Schema1 { manifest, layers })
        }
        Manifest::Index(_, index) => {
            let mut images = Vec::new();
            for child in index.select(choice, &name)? {
                let raw = fetch_by_digest(
                    registry,
                    store,
                    reference,
                    &child.digest,
                    &child.media_type,
                    child.size,
                )?;
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
                        content: Content::Manifest(manifest),
                        platform: child.platform.clone(),
                    }),
                    Manifest::Index(..) => {
                        return Err(ResolveError::Nested {
                            index: top.digest.clone(),
                            child: child.digest.clone(),
                        })
                    }
                    Manifest::Schema1(_) => {
                        return Err(ResolveError::Schema1InIndex {
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

/// An explicit `--platform` that a single-platform image does not match is "not found" (exit
/// 4), as docker has it; an image that does not say its platform is taken.
fn check_platform(
    wanted: &Platform,
    has: Option<Platform>,
    name: &str,
) -> Result<(), ResolveError> {
    match has {
        Some(p) if !wanted.matches(&p) => Err(ManifestError::NoPlatform {
            reference: name.to_string(),
            wanted: wanted.to_string(),
            available: vec![p.normalized().to_string()],
        }
        .into()),
        _ => Ok(()),
    }
}

/// Descriptors for a schema1 image's layers. Schema1 names blobs without sizes, and a size
/// caps every blob stream we read: the store tells it for blobs it has, a `HEAD` for the rest.
fn schema1_layers(
    registry: &Registry,
    store: Option<&Store>,
    reference: &Reference,
    manifest: &Schema1,
) -> Result<Vec<Descriptor>, ResolveError> {
    let mut sizes: HashMap<&Digest, u64> = HashMap::new();
    let mut layers = Vec::new();
    for (digest, _) in manifest.layers() {
        let size = match sizes.get(digest) {
            Some(s) => *s,
            None => {
                let known = store.and_then(|s| std::fs::metadata(s.blob_path(digest)).ok());
                let size = match known {
                    Some(m) => m.len(),
                    None => registry.blob_size(reference, digest)?,
                };
                sizes.insert(digest, size);
                size
            }
        };
        layers.push(Descriptor {
            media_type: media::DOCKER_LAYER_GZIP.to_string(),
            digest: digest.clone(),
            size,
            urls: None,
            annotations: None,
            platform: None,
            extra: BTreeMap::new(),
        });
    }
    Ok(layers)
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
                        log::info!("manifest {} is in the store: not fetching it", head.digest);
                        return Ok(RawManifest {
                            media_type: head.media_type,
                            bytes,
                            digest: head.digest,
                            served_by: None,
                        });
                    }
                }
            }
        }
    }
    let expected = reference.digest();
    match registry.get_manifest(
        reference,
        &reference.manifest_reference(),
        expected,
        MAX_MANIFEST,
    ) {
        Err(e) if is_not_found(&e) => {
            Err(not_found_hint(registry, store, reference).unwrap_or(e.into()))
        }
        r => Ok(r?),
    }
}

fn is_not_found(e: &ClientError) -> bool {
    let mut e = match e {
        ClientError::Registry(r) => r,
        ClientError::Credentials(_) => return false,
    };
    while let RegistryError::Retried { source, .. } = e {
        e = source;
    }
    matches!(e, RegistryError::NotFound { .. })
}

/// A better error than "manifest not found" where one is known: the digest of a manifest
/// imagec converted (the registry's digest is in the store), or a missing tag in a
/// repository whose tags can be listed.
fn not_found_hint(
    registry: &Registry,
    store: Option<&Store>,
    reference: &Reference,
) -> Option<ResolveError> {
    let repository = format!("{}/{}", reference.registry(), reference.repository());
    if let Some(digest) = reference.digest() {
        let entries = store?.entries().ok()?;
        let (name, source) = entries.iter().find_map(|d| {
            let source = d.annotations.as_ref()?.get(crate::store::SOURCE_DIGEST)?;
            (&d.digest == digest && source != &digest.to_string()).then(|| {
                (
                    crate::store::ref_name(d).unwrap_or("an entry").to_string(),
                    source.clone(),
                )
            })
        })?;
        return Some(ResolveError::ConvertedDigest {
            digest: digest.clone(),
            name,
            repository,
            registry_digest: source,
        });
    }
    let tag = reference.tag()?.to_string();
    // One page, one more than shown: an extra tag says there are more.
    let mut tags = registry
        .list_tags(reference, TAG_HINT + 1, Some(TAG_HINT + 1))
        .ok()?;
    let more = tags.len() > TAG_HINT;
    // Sorted for reading (distribution's order is its storage's); a registry that ignores
    // `n` sends them all, and the first ten in order are the ones shown.
    tags.sort_unstable();
    tags.truncate(TAG_HINT);
    Some(ResolveError::NoSuchTag {
        repository,
        tag,
        tags,
        more,
    })
}

fn fetch_by_digest(
    registry: &Registry,
    store: Option<&Store>,
    reference: &Reference,
    digest: &Digest,
    media_type: &str,
    size: u64,
) -> Result<RawManifest, ResolveError> {
    if let Some(store) = store {
        if let Some(bytes) = store.read_blob(digest, MAX_MANIFEST)? {
            return Ok(RawManifest {
                bytes,
                media_type: media_type.to_string(),
                digest: digest.clone(),
                served_by: None,
            });
        }
    }
    match registry.get_manifest(reference, &digest.to_string(), Some(digest), size) {
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
