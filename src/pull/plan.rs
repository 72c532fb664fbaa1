//! The plan: what a pull of some resolved references needs, as a plain value that can be
//! printed (`pull --dry-run`) before anything is downloaded. Each distinct blob appears once,
//! with the repository to fetch it from, the references that want it, whether the store holds
//! it, and whether its diff_id is needed (schema1 layers: their config is made from them).
//! Blobs are ordered largest first: the transfer pool takes them in this order, since the last
//! blob to finish decides the wall time. `images` keeps each image's layers in manifest order:
//! that is what `layers` shows.

use std::collections::HashMap;

use super::resolve::{Content, Resolved};
use crate::digest::Digest;
use crate::manifest::Descriptor;
use crate::reference::Reference;
use crate::store::cache::Cache;
use crate::store::Store;

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedBlob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    /// Where it is fetched from: the repository of the first reference that wants it.
    #[serde(serialize_with = "as_string")]
    pub source: Reference,
    /// The references (by their place in the pull) that need this blob.
    #[serde(skip)]
    pub wanted_by: Vec<usize>,
    /// Already in the store: nothing to download.
    pub present: bool,
    /// Not in the store but in the shared cache: linked from there, nothing to download.
    pub in_cache: bool,
    /// Its diff_id must be computed (from the stream, or from the stored file).
    #[serde(skip)]
    pub diff_id: bool,
}

fn as_string<S: serde::Serializer>(r: &Reference, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(r)
}

impl PlannedBlob {
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            urls: None,
            annotations: None,
            platform: None,
            extra: Default::default(),
        }
    }
}

/// One image of the plan: what `layers` shows, base layer first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedImage {
    /// The reference (by its place in the pull) it belongs to.
    pub reference: usize,
    pub manifest: Digest,
    pub config: Option<Digest>,
    pub layers: Vec<Digest>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Plan {
    pub blobs: Vec<PlannedBlob>,
    pub images: Vec<PlannedImage>,
}

impl Plan {
    /// Plan the blobs of every resolved reference (`None` for one that failed to resolve; its
    /// place still counts in `wanted_by`). `store` is where presence is checked; without one,
    /// nothing is present.
    pub fn build(store: Option<&Store>, resolved: &[Option<&Resolved>]) -> Plan {
        let mut blobs: Vec<PlannedBlob> = Vec::new();
        let mut images = Vec::new();
        let mut at: HashMap<Digest, usize> = HashMap::new();
        for (i, res) in resolved.iter().enumerate() {
            let Some(res) = res else { continue };
            for img in &res.images {
                images.push(PlannedImage {
                    reference: i,
                    manifest: img.raw.digest.clone(),
                    config: img.config().map(|c| c.digest.clone()),
                    layers: img.layers().iter().map(|l| l.digest.clone()).collect(),
                });
                let schema1 = matches!(img.content, Content::Schema1 { .. });
                for d in img.config().into_iter().chain(img.layers()) {
                    match at.get(&d.digest) {
                        Some(&k) => {
                            let b = &mut blobs[k];
                            if !b.wanted_by.contains(&i) {
                                b.wanted_by.push(i);
                            }
                            b.diff_id |= schema1;
                        }
                        None => {
                            at.insert(d.digest.clone(), blobs.len());
                            blobs.push(PlannedBlob {
                                digest: d.digest.clone(),
                                size: d.size,
                                media_type: d.media_type.clone(),
                                source: res.reference.clone(),
                                wanted_by: vec![i],
                                present: store.is_some_and(|s| s.has_blob(&d.digest, d.size)),
                                in_cache: false,
                                diff_id: schema1,
                            });
                        }
                    }
                }
            }
        }
        // Stable: equal sizes keep the order the references named them in.
        blobs.sort_by_key(|b| std::cmp::Reverse(b.size));
        Plan { blobs, images }
    }

    /// The planned blob of `digest`.
    pub fn blob(&self, digest: &Digest) -> Option<&PlannedBlob> {
        self.blobs.iter().find(|b| &b.digest == digest)
    }

    /// An image's layers, base first, as planned blobs.
    pub fn layers_of<'p>(
        &'p self,
        image: &'p PlannedImage,
    ) -> impl Iterator<Item = &'p PlannedBlob> {
        image.layers.iter().filter_map(|d| self.blob(d))
    }

    /// Note the blobs the store lacks that the shared cache holds.
    pub fn mark_cached(&mut self, cache: &Cache) {
        for b in self.blobs.iter_mut().filter(|b| !b.present) {
            b.in_cache = cache.has_blob(&b.digest, b.size);
        }
    }

    /// The blobs to download.
    pub fn missing(&self) -> impl Iterator<Item = &PlannedBlob> {
        self.blobs.iter().filter(|b| !b.present && !b.in_cache)
    }

    /// Bytes to download in all.
    pub fn download_bytes(&self) -> u64 {
        self.missing().fold(0u64, |a, b| a.saturating_add(b.size))
    }

    /// The reference charged for a blob's bytes: the first that wants it.
    pub fn owner(&self, digest: &Digest) -> Option<usize> {
        self.blob(digest).and_then(|b| b.wanted_by.first().copied())
    }

    pub fn is_present(&self, digest: &Digest) -> bool {
        self.blob(digest).is_some_and(|b| b.present)
    }
}
