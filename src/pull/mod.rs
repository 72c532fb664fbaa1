//! `pull`: resolve every reference (`resolve`), plan the union of their blobs once (`plan`),
//! fetch what is missing in one pool (`pool`, `transfer`), then store manifests and index
//! entries in the order `store` documents: blobs, then manifests, then the index entry.
//! `describe` is what `layers` and `inspect` show of a resolved image.

pub mod chunks;
pub mod describe;
pub mod files;
pub mod plan;
pub mod pool;
pub mod resolve;
pub mod transfer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use self::plan::Plan;
use crate::digest::Digest;
use crate::manifest::{self, media, media::Kind, Descriptor, ImageConfig, ImageManifest};
use crate::platform::PlatformChoice;
use crate::pull::resolve::{resolve, Content, ResolveError, Resolved, ResolvedImage};
use crate::pull::transfer::{fetch_all, TransferError};
use crate::reference::Reference;
use crate::registry::Registry;
use crate::store::cache::{Cache, Linked};
use crate::store::{Store, StoreError, REF_NAME, SOURCE_DIGEST, SOURCE_MEDIA_TYPE};

/// How manifests are stored (SPEC: `--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Docker schema2 manifests and lists rewritten with OCI media types (same blobs).
    Oci,
    /// Every manifest exactly as served.
    Preserve,
}

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platform: PlatformChoice,
    pub jobs: usize,
    /// Blobs of at least this many bytes come as parallel Range chunks (`--chunk-size`; 0:
    /// never).
    pub chunk_size: u64,
    pub format: Format,
    /// The shared blob cache (`--cache-dir`): configs and layers go through it.
    pub cache: Option<Arc<Cache>>,
    /// Set by the command layer on Ctrl-C: transfers stop at their next chunk.
    pub cancel: crate::cancel::Cancel,
}

/// What `pull --json` prints for one reference (SPEC: Output).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PullReport {
    pub reference: String,
    pub digest: Digest,
    pub media_type: String,
    pub stored_digest: Digest,
    pub platform: Option<String>,
    pub config: Option<Digest>,
    pub layers: Vec<LayerReport>,
    pub bytes_downloaded: u64,
    pub elapsed_ms: u64,
    /// The mirror that served the manifest, as configured; None when the registry did.
    pub mirror: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub cached: bool,
    /// How it came from the shared cache (`hardlink`, `reflink`, `copy`), when it did.
    pub from_cache: Option<Linked>,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// A blob failed; shared, since every reference that needs the blob fails with its cause.
    #[error(transparent)]
    Transfer(Arc<TransferError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("blob {digest} is not in the store at {path} after the transfer (removed by another process?)")]
    BlobMissing { digest: Digest, path: PathBuf },
    #[error("{reference} selected no image")]
    NoImage { reference: String },
    #[error(
        "the diff_id of layer {layer} was not computed, so its schema1 image cannot be converted"
    )]
    NoDiffId { layer: Digest },
}

/// Per blob: bytes received, and its diff_id (when asked for) or why it failed.
type Outcome = (u64, Result<Option<(Digest, bool)>, Arc<TransferError>>);

/// Resolve every reference (manifests from the store where it has them, else the registry).
/// Nothing is written: a run whose references all fail here leaves no store behind (SPEC).
pub fn resolve_all(
    registry: &Registry,
    store: Option<&Store>,
    refs: &[Reference],
    opts: &PullOptions,
) -> Vec<(Reference, Result<Resolved, ResolveError>)> {
    // `--jobs` at a time: on a link with tens of milliseconds per round trip, 50 references
    // resolved one after the other wait 50 round trips or more before the first blob moves.
    pool::in_order(refs, opts.jobs, |r, _| {
        (r.clone(), resolve(registry, store, r, &opts.platform))
    })
}

/// Download what `resolved` needs into `store` and write each reference's entry.
/// `start` is when the run began (the reports' elapsed time counts resolution too).
pub fn pull(
    registry: &Registry,
    store: &Store,
    resolved: Vec<(Reference, Result<Resolved, ResolveError>)>,
    opts: &PullOptions,
    start: Instant,
) -> Vec<(Reference, Result<PullReport, PullError>)> {
    let mut plan = Plan::build(
        Some(store),
        &resolved
            .iter()
            .map(|(_, r)| r.as_ref().ok())
            .collect::<Vec<_>>(),
    );
    let cache = opts.cache.as_deref();
    if let Some(cache) = cache {
        plan.mark_cached(cache);
    }
    let fetched = fetch_all(
        registry,
        store,
        &plan,
        opts.jobs,
        opts.chunk_size,
        cache,
        &opts.cancel,
    );
    let linked: HashMap<Digest, Linked> = fetched
        .iter()
        .filter_map(|f| Some((f.digest.clone(), f.linked?)))
        .collect();
    let outcome: HashMap<Digest, Outcome> = fetched
        .into_iter()
        .map(|f| (f.digest, (f.bytes_received, f.result.map_err(Arc::new))))
        .collect();
    // Layer diff_ids computed during the transfer (schema1 configs are made from them).
    let diff_ids: HashMap<Digest, (Digest, bool)> = outcome
        .iter()
        .filter_map(|(d, (_, r))| Some((d.clone(), r.as_ref().ok()?.clone()?)))
        .collect();

    resolved
        .into_iter()
        .enumerate()
        .map(|(i, (r, res))| {
            let result = res.map_err(PullError::from).and_then(|res| {
                // Every blob of this reference must be in place before its manifest is written.
                for d in res.blobs() {
                    if let Some((_, Err(e))) = outcome.get(&d.digest) {
                        return Err(PullError::Transfer(e.clone()));
                    }
                    if !store.has_blob(&d.digest, d.size) {
                        return Err(PullError::BlobMissing {
                            digest: d.digest.clone(),
                            path: store.blob_path(&d.digest),
                        });
                    }
                }
                let bytes: u64 = outcome
                    .iter()
                    .filter(|(d, _)| plan.owner(d) == Some(i))
                    .map(|(_, (n, _))| *n)
                    .sum();
                let stored = store_reference(store, &res, opts, &diff_ids)?;
                Ok(report(
                    store, &res, stored, &plan, &linked, opts, bytes, start,
                ))
            });
            (r, result)
        })
        .collect()
}

/// What was stored for one reference: its index entry and the image manifests as stored.
struct Stored {
    entry: Descriptor,
    images: Vec<ImageManifest>,
}

/// Write the manifests of one reference and then its index entry.
fn store_reference(
    store: &Store,
    res: &Resolved,
    opts: &PullOptions,
    diff_ids: &HashMap<Digest, (Digest, bool)>,
) -> Result<Stored, PullError> {
    let mut children = Vec::new();
    let mut images = Vec::new();
    for img in &res.images {
        let (descriptor, manifest) = store_image(store, img, opts.format, diff_ids)?;
        children.push(descriptor);
        images.push(manifest);
    }
    // The bytes the registry served for the reference itself are always kept.
    store.write_blob(&Digest::sha256_of(&res.top.bytes), &res.top.bytes)?;
    let mut entry = match (&res.index, &opts.platform) {
        (None, _) | (Some(_), PlatformChoice::Host(_) | PlatformChoice::One(_)) => children
            .into_iter()
            .next()
            .ok_or_else(|| PullError::NoImage {
                reference: res.reference.to_string(),
            })?,
        (Some(index), PlatformChoice::All) => {
            if opts.format == Format::Oci && res.top_kind == Kind::DockerList {
                let oci = manifest::convert::index_to_oci(index, children);
                let bytes = manifest::convert::to_bytes(&oci);
                let digest = Digest::sha256_of(&bytes);
                store.write_blob(&digest, &bytes)?;
                plain_descriptor(media::OCI_INDEX, digest, bytes.len() as u64)
            } else {
                plain_descriptor(
                    res.top_kind.media_type(),
                    res.top.digest.clone(),
                    res.top.bytes.len() as u64,
                )
            }
        }
    };
    let mut annotations = BTreeMap::new();
    annotations.insert(REF_NAME.to_string(), res.reference.to_string());
    if entry.digest != res.top.digest {
        annotations.insert(SOURCE_DIGEST.to_string(), res.top.digest.to_string());
        annotations.insert(
            SOURCE_MEDIA_TYPE.to_string(),
            res.top_media_type().to_string(),
        );
    }
    entry.annotations = Some(annotations);
    store.set_entry(&entry)?;
    Ok(Stored { entry, images })
}

/// Store one image manifest (the served bytes, plus the OCI form when it is converted) and
/// return the descriptor the index entry or index should use, with the manifest as stored.
fn store_image(
    store: &Store,
    img: &ResolvedImage,
    format: Format,
    diff_ids: &HashMap<Digest, (Digest, bool)>,
) -> Result<(Descriptor, ImageManifest), PullError> {
    // Named by the sha256 of the bytes: for signed schema1 that is not the registry's digest
    // (which covers the JWS payload only), but every file under blobs/ must match its name.
    store.write_blob(&Digest::sha256_of(&img.raw.bytes), &img.raw.bytes)?;
    if let Content::Schema1 { .. } = img.content {
        // The payload is what the registry's digest names, so it is stored under that digest:
        // a repeat pull finds it with a HEAD. (distribution re-signs schema1 on every GET, so
        // the signed bytes differ each time and could never be found that way.)
        if let Ok(payload) = manifest::schema1::payload(&img.raw.bytes) {
            store.write_blob(&Digest::sha256_of(&payload), &payload)?;
        }
    }
    let converted = match &img.content {
        Content::Manifest(m) if format == Format::Oci && img.kind == Kind::DockerManifest => {
            Some(manifest::convert::image_to_oci(m))
        }
        Content::Manifest(_) => None,
        // Schema1 is always converted: no modern tool reads it, and it cannot be stored under
        // the registry's digest anyway (see above).
        Content::Schema1 { manifest, layers } => {
            Some(schema1_to_oci(store, manifest, layers, diff_ids)?)
        }
    };
    let (mut d, m) = match (converted, &img.content) {
        (Some(oci), _) => {
            let bytes = manifest::convert::to_bytes(&oci);
            let digest = Digest::sha256_of(&bytes);
            store.write_blob(&digest, &bytes)?;
            (
                plain_descriptor(media::OCI_MANIFEST, digest, bytes.len() as u64),
                oci,
            )
        }
        (None, Content::Manifest(m)) => (
            plain_descriptor(
                img.kind.media_type(),
                img.raw.digest.clone(),
                img.raw.bytes.len() as u64,
            ),
            (**m).clone(),
        ),
        (None, Content::Schema1 { .. }) => unreachable!("schema1 is always converted"),
    };
    d.platform = img.platform.clone();
    Ok((d, m))
}

/// The OCI image for a schema1 manifest: a config made from its history and the diff_ids
/// computed while the layers streamed in (written to the store), and a manifest naming it.
fn schema1_to_oci(
    store: &Store,
    m: &manifest::schema1::Schema1,
    layers: &[Descriptor],
    diff_ids: &HashMap<Digest, (Digest, bool)>,
) -> Result<ImageManifest, PullError> {
    let ids: Vec<Option<Digest>> = layers
        .iter()
        .map(|l| diff_ids.get(&l.digest).map(|(d, _)| d.clone()))
        .collect();
    if let Some(i) = ids.iter().position(Option::is_none) {
        return Err(PullError::NoDiffId {
            layer: layers[i].digest.clone(),
        });
    }
    let config = m.config(&ids);
    let config_digest = Digest::sha256_of(&config);
    store.write_blob(&config_digest, &config)?;
    let layers = layers
        .iter()
        .map(|l| {
            let gzip = diff_ids.get(&l.digest).is_none_or(|(_, gz)| *gz);
            plain_descriptor(
                manifest::schema1::layer_media_type(gzip),
                l.digest.clone(),
                l.size,
            )
        })
        .collect();
    Ok(ImageManifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.to_string()),
        config: plain_descriptor(media::OCI_CONFIG, config_digest, config.len() as u64),
        layers,
        extra: BTreeMap::new(),
    })
}

fn plain_descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest,
        size,
        urls: None,
        annotations: None,
        platform: None,
        extra: BTreeMap::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    store: &Store,
    res: &Resolved,
    stored: Stored,
    plan: &Plan,
    linked: &HashMap<Digest, Linked>,
    opts: &PullOptions,
    bytes_downloaded: u64,
    start: Instant,
) -> PullReport {
    let all = matches!(opts.platform, PlatformChoice::All) && res.index.is_some();
    let platform = if all {
        Some("all".to_string())
    } else {
        res.images
            .first()
            .and_then(|img| {
                img.platform.clone().or_else(|| {
                    let c = &stored.images.first()?.config;
                    let bytes = store.read_blob(&c.digest, 16 << 20).ok().flatten()?;
                    ImageConfig::parse(&bytes, &c.digest).ok()?.platform()
                })
            })
            .map(|p| p.to_string())
    };
    let mut seen = HashSet::new();
    let layers = stored
        .images
        .iter()
        .flat_map(|m| m.layers.iter())
        .filter(|l| seen.insert(l.digest.clone()))
        .map(|l| LayerReport {
            digest: l.digest.clone(),
            size: l.size,
            media_type: l.media_type.clone(),
            cached: plan.is_present(&l.digest),
            from_cache: linked.get(&l.digest).copied(),
        })
        .collect();
    PullReport {
        reference: res.reference.to_string(),
        digest: res.top.digest.clone(),
        media_type: res.top_media_type().to_string(),
        stored_digest: stored.entry.digest,
        platform,
        config: (!all)
            .then(|| stored.images.first().map(|m| m.config.digest.clone()))
            .flatten(),
        layers,
        bytes_downloaded,
        elapsed_ms: start.elapsed().as_millis() as u64,
        mirror: res.top.served_by.clone(),
    }
}
