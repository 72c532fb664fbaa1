//! What the commands print on stdout: JSON documents and aligned tables (SPEC: Output).

use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::progress::human_size;
use crate::digest::Digest;
use crate::manifest::{self, media, Descriptor, ImageConfig};
use crate::pull::plan::Plan;
use crate::pull::resolve::{Content, Resolved};
use crate::pull::transfer::{read_small_blob, stored_diff_id, TransferError, MAX_CONFIG};
use crate::pull::PullReport;
use crate::registry::Registry;
use crate::store::walk::EntrySummary;
use crate::store::Store;

pub fn json_line<T: Serialize>(v: &T) -> String {
    format!("{}\n", serde_json::to_string(v).unwrap_or_default())
}

pub fn json_pretty<T: Serialize>(v: &T) -> String {
    format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
}

/// The human line `pull` writes to stderr when a reference is done.
pub fn pull_summary(r: &PullReport) -> String {
    let cached = r.layers.iter().filter(|l| l.cached).count();
    format!(
        "Pulled {} ({} layers, {} already present; {} downloaded in {:.1} s)",
        r.reference,
        r.layers.len(),
        cached,
        human_size(r.bytes_downloaded),
        r.elapsed_ms as f64 / 1000.0
    )
}

/// `pull --dry-run --json`: what each reference resolved to, every blob of the plan with
/// whether the store holds it, and what would be downloaded.
pub fn plan_doc(plan: &Plan, resolved: &[Option<Resolved>]) -> Value {
    let references: Vec<Value> = resolved
        .iter()
        .flatten()
        .map(|r| {
            json!({
                "reference": r.reference.to_string(),
                "digest": r.top.digest,
                "media_type": r.top_media_type(),
            })
        })
        .collect();
    json!({
        "references": references,
        "blobs": plan.blobs,
        "download_blobs": plan.missing().count(),
        "download_bytes": plan.download_bytes(),
    })
}

/// `pull --dry-run`: each blob to download with its size, then the total.
pub fn plan_table(plan: &Plan) -> String {
    let mut table = vec![vec![
        "DIGEST".to_string(),
        "SIZE".to_string(),
        "FROM".to_string(),
    ]];
    for b in plan.missing() {
        table.push(vec![
            b.digest.to_string(),
            human_size(b.size),
            b.source.to_string(),
        ]);
    }
    let present = plan.blobs.len() - plan.missing().count();
    let mut out = if table.len() > 1 {
        align(&table)
    } else {
        String::new()
    };
    out.push_str(&format!(
        "would download {} blobs, {} ({} already in the store)\n",
        plan.missing().count(),
        human_size(plan.download_bytes()),
        present
    ));
    out
}

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

pub fn layer_rows(
    registry: &Registry,
    store: Option<&Store>,
    res: &Resolved,
) -> Result<Vec<LayerRow>, TransferError> {
    let img = &res.images[0];
    let row = |l: &Descriptor, diff_id: Option<String>, created_by: Option<String>| LayerRow {
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
            Ok(m.layers
                .iter()
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
        Content::Schema1 { manifest, layers } => {
            let ids = stored_diff_ids(store, layers);
            Ok(layers
                .iter()
                .zip(manifest.layers())
                .zip(ids)
                .map(|((l, (_, entry)), id)| row(l, id.map(|d| d.to_string()), entry.created_by()))
                .collect())
        }
    }
}

/// Schema1 layers' diff_ids, for the layers the store holds (a local pass over each); the
/// others cannot be known without downloading them.
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

pub fn layers_table(rows: &[LayerRow]) -> String {
    let mut table = vec![vec![
        "#".to_string(),
        "DIGEST".to_string(),
        "SIZE".to_string(),
        "DIFF ID".to_string(),
        "CREATED BY".to_string(),
    ]];
    for (i, r) in rows.iter().enumerate() {
        let created = r.created_by.clone().unwrap_or_default();
        let created = created.split_whitespace().collect::<Vec<_>>().join(" ");
        let created = match created.char_indices().nth(70) {
            Some((i, _)) => format!("{}...", &created[..i]),
            None => created,
        };
        table.push(vec![
            i.to_string(),
            format!("sha256:{}", r.digest.short()),
            human_size(r.size),
            r.diff_id
                .as_deref()
                .and_then(|d| d.get(..19))
                .unwrap_or("-")
                .to_string(),
            created,
        ]);
    }
    align(&table)
}

/// `inspect`: the reference, what it resolved to, the selected image's manifest and config,
/// and the index when the reference names one.
pub fn inspect_doc(
    registry: &Registry,
    store: Option<&Store>,
    res: &Resolved,
) -> Result<Value, TransferError> {
    let img = &res.images[0];
    // Schema1 has no config blob: show the config a pull would make (diff_ids of layers not in
    // the store are null).
    let (config_bytes, config_digest) = match &img.content {
        Content::Manifest(m) => (
            read_small_blob(registry, store, &res.reference, &m.config, MAX_CONFIG)?,
            m.config.digest.clone(),
        ),
        Content::Schema1 { manifest, layers } => {
            let bytes = manifest.config(&stored_diff_ids(store, layers));
            let digest = Digest::sha256_of(&bytes);
            (bytes, digest)
        }
    };
    let config: Value = serde_json::from_slice(&config_bytes).unwrap_or(Value::Null);
    let manifest: Value = match &img.content {
        Content::Manifest(_) => serde_json::from_slice(&img.raw.bytes).unwrap_or(Value::Null),
        Content::Schema1 { .. } => manifest::schema1::payload(&img.raw.bytes)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .unwrap_or(Value::Null),
    };
    let platform = img.platform.as_ref().map(|p| p.to_string()).or_else(|| {
        ImageConfig::parse(&config_bytes, &config_digest)
            .ok()?
            .platform()
            .map(|p| p.to_string())
    });
    let mut doc = json!({
        "reference": res.reference.to_string(),
        "digest": res.top.digest,
        "media_type": res.top_media_type(),
        "manifest_digest": img.raw.digest,
        "platform": platform,
        "manifest": manifest,
        "config": config,
    });
    if res.index.is_some() {
        doc["index"] = serde_json::from_slice(&res.top.bytes).unwrap_or(Value::Null);
    }
    Ok(doc)
}

pub fn images_table(rows: &[EntrySummary]) -> String {
    let mut table = vec![vec![
        "REFERENCE".to_string(),
        "DIGEST".to_string(),
        "PLATFORM".to_string(),
        "SIZE".to_string(),
    ]];
    for r in rows {
        let digest = r.digest.as_deref().unwrap_or("-");
        let short = match digest.split_once(':') {
            Some((alg, hex)) => format!("{alg}:{}", hex.get(..12).unwrap_or(hex)),
            None => digest.to_string(),
        };
        table.push(vec![
            r.reference.clone().unwrap_or_else(|| "-".to_string()),
            short,
            if r.platforms.is_empty() {
                "-".to_string()
            } else {
                r.platforms.join(",")
            },
            human_size(r.size),
        ]);
    }
    align(&table)
}

/// Columns padded to their widest cell, separated by two spaces; the last is not padded.
fn align(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let t = align(&[
            vec!["A".into(), "BB".into(), "C".into()],
            vec!["long".into(), "x".into(), "y".into()],
        ]);
        assert_eq!(t, "A     BB  C\nlong  x   y\n");
    }
}
