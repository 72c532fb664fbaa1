//! `pull`: resolve every reference, fetch the union of missing blobs in one pool (each digest
//! once, whichever image or platform shares it), then store manifests and index entries in
//! the order `store` documents: blobs, then manifests, then the index entry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use crate::digest::Digest;
use crate::manifest::{self, media, media::Kind, Descriptor, ImageConfig};
use crate::platform::PlatformChoice;
use crate::reference::Reference;
use crate::registry::Registry;
use crate::resolve::{resolve, ResolveError, Resolved, ResolvedImage};
use crate::store::{Store, StoreError, REF_NAME, SOURCE_DIGEST, SOURCE_MEDIA_TYPE};
use crate::transfer::{fetch_all, BlobJob, TransferError};

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
    pub format: Format,
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
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub cached: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Pull `refs` into `store`. One result per reference, in order: a failure of one reference
/// does not stop the others.
pub fn pull(
    registry: &Registry,
    store: &Store,
    refs: &[Reference],
    opts: &PullOptions,
) -> Vec<(Reference, Result<PullReport, PullError>)> {
    let start = Instant::now();
    let resolved: Vec<(Reference, Result<Resolved, ResolveError>)> = refs
        .iter()
        .map(|r| (r.clone(), resolve(registry, Some(store), r, &opts.platform)))
        .collect();

    // The plan: every blob of every resolved image; which were already in the store; and which
    // reference fetches each shared blob (the first that needs it is charged for its bytes).
    let mut jobs = Vec::new();
    let mut cached = HashSet::new();
    let mut owner: HashMap<Digest, usize> = HashMap::new();
    for (i, (_, res)) in resolved.iter().enumerate() {
        let Ok(res) = res else { continue };
        for d in res.blobs() {
            if store.has_blob(&d.digest, d.size) {
                cached.insert(d.digest.clone());
            }
            owner.entry(d.digest.clone()).or_insert(i);
            jobs.push(BlobJob {
                source: res.reference.clone(),
                descriptor: d.clone(),
            });
        }
    }
    let fetched = fetch_all(registry, store, jobs, opts.jobs);
    let mut outcome: HashMap<Digest, (u64, Result<(), TransferError>)> = fetched
        .into_iter()
        .map(|f| (f.digest, (f.bytes_received, f.result)))
        .collect();

    resolved
        .into_iter()
        .enumerate()
        .map(|(i, (r, res))| {
            let result = res.map_err(PullError::from).and_then(|res| {
                // Every blob of this reference must be in place before its manifest is written.
                for d in res.blobs() {
                    if let Some((_, Err(_))) = outcome.get(&d.digest) {
                        let (_, err) = outcome.remove(&d.digest).expect("checked");
                        return Err(err.expect_err("checked").into());
                    }
                    if !store.has_blob(&d.digest, d.size) {
                        // A blob another reference failed to fetch (its error was reported there).
                        return Err(missing(store, &d.digest));
                    }
                }
                let bytes: u64 = outcome
                    .iter()
                    .filter(|(d, _)| owner.get(*d) == Some(&i))
                    .map(|(_, (n, _))| *n)
                    .sum();
                let stored = store_reference(store, &res, opts)?;
                Ok(report(store, &res, stored, &cached, opts, bytes, start))
            });
            (r, result)
        })
        .collect()
}

fn missing(store: &Store, d: &Digest) -> PullError {
    PullError::Store(StoreError::Io {
        action: "finding",
        path: store.blob_path(d),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "blob was not downloaded"),
    })
}

/// Write the manifests of one reference and then its index entry. Returns the entry.
fn store_reference(
    store: &Store,
    res: &Resolved,
    opts: &PullOptions,
) -> Result<Descriptor, StoreError> {
    let children: Vec<Descriptor> = res
        .images
        .iter()
        .map(|img| store_image(store, img, opts.format))
        .collect::<Result<_, _>>()?;
    // The bytes the registry served for the reference itself are always kept.
    store.write_blob(&res.top.digest, &res.top.bytes)?;
    let mut entry =
        match (&res.index, &opts.platform) {
            (None, _) | (Some(_), PlatformChoice::One(_)) => children
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::BadIndex {
                    path: store.root().join("index.json"),
                    reason: format!("{} selected no image", res.reference),
                })?,
            (Some(index), PlatformChoice::All) => {
                if opts.format == Format::Oci && res.top_kind == Kind::DockerList {
                    let oci = manifest::index_to_oci(index, children);
                    let bytes = manifest::to_bytes(&oci);
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
            res.top_kind.media_type().to_string(),
        );
    }
    entry.annotations = Some(annotations);
    store.set_entry(&entry)?;
    Ok(entry)
}

/// Store one image manifest (served bytes, plus the OCI rewrite when asked) and return the
/// descriptor the store's index or entry should use for it.
fn store_image(
    store: &Store,
    img: &ResolvedImage,
    format: Format,
) -> Result<Descriptor, StoreError> {
    store.write_blob(&img.raw.digest, &img.raw.bytes)?;
    let mut d = if format == Format::Oci && img.kind == Kind::DockerManifest {
        let bytes = manifest::to_bytes(&manifest::image_to_oci(&img.manifest));
        let digest = Digest::sha256_of(&bytes);
        store.write_blob(&digest, &bytes)?;
        plain_descriptor(media::OCI_MANIFEST, digest, bytes.len() as u64)
    } else {
        plain_descriptor(
            img.kind.media_type(),
            img.raw.digest.clone(),
            img.raw.bytes.len() as u64,
        )
    };
    d.platform = img.platform.clone();
    Ok(d)
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

fn report(
    store: &Store,
    res: &Resolved,
    entry: Descriptor,
    cached: &HashSet<Digest>,
    opts: &PullOptions,
    bytes_downloaded: u64,
    start: Instant,
) -> PullReport {
    let single = res.images.len() == 1 && !matches!(opts.platform, PlatformChoice::All);
    let platform = if matches!(opts.platform, PlatformChoice::All) && res.index.is_some() {
        Some("all".to_string())
    } else {
        res.images
            .first()
            .and_then(|img| {
                img.platform.clone().or_else(|| {
                    let c = &img.manifest.config;
                    let bytes = store.read_blob(&c.digest, 16 << 20).ok().flatten()?;
                    ImageConfig::parse(&bytes, &c.digest).ok()?.platform()
                })
            })
            .map(|p| p.to_string())
    };
    let mut seen = HashSet::new();
    let layers = res
        .images
        .iter()
        .flat_map(|img| img.manifest.layers.iter().map(move |l| (img.kind, l)))
        .filter(|(_, l)| seen.insert(l.digest.clone()))
        .map(|(kind, l)| LayerReport {
            digest: l.digest.clone(),
            size: l.size,
            media_type: if opts.format == Format::Oci && kind == Kind::DockerManifest {
                media::to_oci(&l.media_type).to_string()
            } else {
                l.media_type.clone()
            },
            cached: cached.contains(&l.digest),
        })
        .collect();
    PullReport {
        reference: res.reference.to_string(),
        digest: res.top.digest.clone(),
        media_type: res.top_kind.media_type().to_string(),
        stored_digest: entry.digest,
        platform,
        config: single.then(|| res.images[0].manifest.config.digest.clone()),
        layers,
        bytes_downloaded,
        elapsed_ms: start.elapsed().as_millis() as u64,
    }
}
