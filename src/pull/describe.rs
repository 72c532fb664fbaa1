//! What `layers` and `inspect` show of a resolved image: its layers with sizes, diff_ids and
//! history, and its manifest and config as documents. Read from the store where it holds them,
//! else from the registry; nothing is written (but a layer's diff_id computed from a stored
//! blob is recorded beside it). The command layer renders these values.

use serde::Serialize;
use serde_json::{json, Value};

use super::plan::{Plan, PlannedBlob};
use super::resolve::{Content, Resolved};
use super::transfer::{read_small_blob, stored_diff_id, TransferError, MAX_CONFIG};
use crate::digest::Digest;
use crate::manifest::{self, media, Descriptor, ImageConfig};
use crate::registry::Registry;
use crate::store::Store;

/// One row of `layers` (SPEC: `layers --json`).
#[derive(Debug, Serialize)]
pub struct LayerRow {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Option<String>,
    pub created_by: Option<String>,
    pub empty_layer: bool,
}

/// The rows of `layers` for the first image of a one-reference plan: sizes and media types
/// from the plan, diff_ids and history from the config (schema1: from the manifest's history
/// and, for layers the plan finds in the store, their recorded or computed diff_ids).
pub fn layer_rows(
    registry: &Registry,
    store: Option<&Store>,
    res: &Resolved,
    plan: &Plan,
) -> Result<Vec<LayerRow>, TransferError> {
    let img = &res.images[0];
    let Some(planned) = plan.images.first() else {
        return Ok(vec![]);
    };
    let row = |l: &PlannedBlob, diff_id: Option<String>, created_by: Option<String>| LayerRow {
        digest: l.digest.clone(),
        size: l.size,
        media_type: l.media_type.clone(),
        diff_id,
        created_by,
        empty_layer: l.digest.to_string() == media::EMPTY_GZIP_LAYER,
    };
    match &img.content {
        Content::Manifest(m) => {
            let config = config_of(registry, store, res, &m.config)?;
            let history = config.layer_history();
            let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
            Ok(plan
                .layers_of(planned)
                .enumerate()
                .map(|(i, l)| {
                    row(
                        l,
                        diff_ids.get(i).cloned(),
                        history.get(i).cloned().flatten(),
                    )
                })
                .collect())
        }
        Content::Schema1 { manifest, .. } => Ok(plan
            .layers_of(planned)
            .zip(manifest.layers())
            .map(|(l, (_, entry))| {
                let id = match (store, l.present) {
                    (Some(s), true) => stored_diff_id(s, &l.digest).ok().map(|(d, _)| d),
                    _ => None,
                };
                row(l, id.map(|d| d.to_string()), entry.created_by())
            })
            .collect()),
    }
}

/// Schema1 layers' diff_ids, for the layers the store holds (recorded, or a local pass over
/// each); the others cannot be known without downloading them.
fn stored_diff_ids(store: Option<&Store>, layers: &[Descriptor]) -> Vec<Option<Digest>> {
    layers
        .iter()
        .map(|l| {
            let store = store?;
            store.has_blob(&l.digest, l.size).then_some(())?;
            stored_diff_id(store, &l.digest).ok().map(|(d, _)| d)
        })
        .collect()
}

fn config_of(
    registry: &Registry,
    store: Option<&Store>,
    res: &Resolved,
    config: &Descriptor,
) -> Result<ImageConfig, TransferError> {
    let bytes = read_small_blob(registry, store, &res.reference, config, MAX_CONFIG)?;
    Ok(ImageConfig::parse(&bytes, &config.digest).unwrap_or_default())
}

/// `inspect`: a short summary first, its keys in the order a script reads them (what the
/// reference resolved to, the platform, the layers, how the image runs), as skopeo's
/// `inspect` shows one; with `full`, the selected image's manifest and config (and the index,
/// when the reference names one) after it (SPEC: Commands).
pub fn inspect_doc(
    registry: &Registry,
    store: Option<&Store>,
    res: &Resolved,
    full: bool,
) -> Result<Value, TransferError> {
    let img = &res.images[0];
    // Schema1 has no config blob: show the config a pull would make (diff_ids of layers not in
    // the store are null).
    let (config_bytes, layers) = match &img.content {
        Content::Manifest(m) => (
            read_small_blob(registry, store, &res.reference, &m.config, MAX_CONFIG)?,
            m.layers.clone(),
        ),
        Content::Schema1 { manifest, layers } => (
            manifest.config(&stored_diff_ids(store, layers)),
            layers.clone(),
        ),
    };
    let config: Value = serde_json::from_slice(&config_bytes).unwrap_or(Value::Null);
    // From the config's own fields: a schema1 config made before its layers are in the store
    // has null diff_ids and does not parse as a whole.
    let platform = img.platform.as_ref().map(|p| p.to_string()).or_else(|| {
        let os = config["os"].as_str()?;
        let arch = config["architecture"].as_str()?;
        Some(match config["variant"].as_str() {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        })
    });
    let run = &config["config"];
    let mut doc = json!({
        "reference": res.reference.to_string(),
        "digest": res.top.digest,
        "media_type": res.top_media_type(),
        "manifest_digest": img.raw.digest,
        "platform": platform,
        "created": config["created"],
        "size": layers.iter().map(|l| l.size).sum::<u64>(),
        "layers": layers
            .iter()
            .map(|l| json!({ "digest": l.digest, "size": l.size, "media_type": l.media_type }))
            .collect::<Vec<_>>(),
        "env": run["Env"],
        "entrypoint": run["Entrypoint"],
        "cmd": run["Cmd"],
        "working_dir": run.get("WorkingDir").filter(|w| w.as_str() != Some("")).unwrap_or(&Value::Null),
        "user": run.get("User").filter(|u| u.as_str() != Some("")).unwrap_or(&Value::Null),
        "labels": run["Labels"],
    });
    if full {
        doc["manifest"] = match &img.content {
            Content::Manifest(_) => serde_json::from_slice(&img.raw.bytes).unwrap_or(Value::Null),
            Content::Schema1 { .. } => manifest::schema1::payload(&img.raw.bytes)
                .ok()
                .and_then(|p| serde_json::from_slice(&p).ok())
                .unwrap_or(Value::Null),
        };
        doc["config"] = config;
        if res.index.is_some() {
            doc["index"] = serde_json::from_slice(&res.top.bytes).unwrap_or(Value::Null);
        }
    }
    Ok(doc)
}
