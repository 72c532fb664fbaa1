//! What the commands print on stdout: JSON documents and aligned tables (SPEC: Output).

use serde::Serialize;
use serde_json::{json, Value};

use crate::cli::progress::human_size;
use crate::layer::changes::{Change, LayerChanges};
use crate::pull::describe::LayerRow;
use crate::pull::plan::Plan;
use crate::pull::resolve::Resolved;
use crate::pull::PullReport;
use crate::store::walk::EntrySummary;

pub fn json_line<T: Serialize>(v: &T) -> String {
    format!("{}\n", serde_json::to_string(v).unwrap_or_default())
}

/// `pull --json`'s record for a reference that failed: `code` is the exit code the failure
/// alone would give (SPEC: Exit codes), `message` the line printed on stderr.
pub fn json_error_line(reference: &str, code: u8, message: &str) -> String {
    json_line(&serde_json::json!({
        "reference": reference,
        "error": { "code": code, "message": message },
    }))
}

pub fn json_pretty<T: Serialize>(v: &T) -> String {
    format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
}

/// The human line `pull` writes to stderr when a reference is done.
pub fn pull_summary(r: &PullReport) -> String {
    let cached = r.layers.iter().filter(|l| l.cached).count();
    let from_cache = match r.layers.iter().filter(|l| l.from_cache.is_some()).count() {
        0 => String::new(),
        n => format!(", {n} from the cache"),
    };
    format!(
        "Pulled {} ({}, {} already present{from_cache}; {} downloaded in {:.1} s)",
        r.reference,
        crate::cli::progress::plural(r.layers.len(), "layer"),
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
    let present = plan.blobs.iter().filter(|b| b.present).count();
    let in_cache = plan.blobs.iter().filter(|b| b.in_cache).count();
    let mut out = if table.len() > 1 {
        align(&table)
    } else {
        String::new()
    };
    let cached = match in_cache {
        0 => String::new(),
        n => format!(", {n} in the cache"),
    };
    out.push_str(&format!(
        "would download {} blobs, {} ({} already in the store{cached})\n",
        plan.missing().count(),
        human_size(plan.download_bytes()),
        present
    ));
    out
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

/// `layers --files --json`: the `layers --json` rows, each with its `files` and
/// `wasted_bytes` (SPEC: layers --files).
pub fn files_doc(rows: &[LayerRow], changes: &[LayerChanges]) -> Value {
    Value::Array(
        rows.iter()
            .zip(changes)
            .map(|(row, c)| {
                let mut v = serde_json::to_value(row).unwrap_or(Value::Null);
                v["files"] = serde_json::to_value(&c.files).unwrap_or(Value::Null);
                v["wasted_bytes"] = json!(c.wasted_bytes);
                v
            })
            .collect(),
    )
}

/// `layers --files`: each layer's line, then one line per entry (change letter, size, path),
/// then the totals.
pub fn files_table(rows: &[LayerRow], changes: &[LayerChanges]) -> String {
    let mut out = String::new();
    let (mut files, mut bytes, mut wasted) = (0usize, 0u64, 0u64);
    for (i, (row, c)) in rows.iter().zip(changes).enumerate() {
        let created = row.created_by.clone().unwrap_or_default();
        let created = created.split_whitespace().collect::<Vec<_>>().join(" ");
        out.push_str(&format!(
            "layer {i}  sha256:{}  {}  {created}\n",
            row.digest.short(),
            human_size(row.size)
        ));
        let table: Vec<Vec<String>> = c
            .files
            .iter()
            .map(|f| {
                vec![
                    format!("  {}", f.change.letter()),
                    if f.kind == "file" && matches!(f.change, Change::Added | Change::Modified) {
                        human_size(f.size)
                    } else {
                        "-".to_string()
                    },
                    match f.kind {
                        "dir" => format!("{}/", f.path),
                        _ => f.path.clone(),
                    },
                ]
            })
            .collect();
        out.push_str(&align(&table));
        if c.wasted_bytes > 0 {
            out.push_str(&format!(
                "  ({} of this layer is hidden by later layers)\n",
                human_size(c.wasted_bytes)
            ));
        }
        // Files the layer ships (a whiteout ships none).
        files += c
            .files
            .iter()
            .filter(|f| f.kind == "file" && matches!(f.change, Change::Added | Change::Modified))
            .count();
        bytes += c.files.iter().map(|f| f.size).sum::<u64>();
        wasted += c.wasted_bytes;
    }
    out.push_str(&format!(
        "{} in {}, {} in all, {} wasted (shipped but hidden by a later layer)\n",
        crate::cli::progress::plural(files, "file"),
        crate::cli::progress::plural(rows.len(), "layer"),
        human_size(bytes),
        human_size(wasted)
    ));
    out
}

/// `images`: the DIGEST users know is the registry's (what `pull` printed and `pull
/// REF@DIGEST` accepts); where the store converted the manifest, STORED shows the digest the
/// index entry points at (SPEC: Commands).
pub fn images_table(rows: &[EntrySummary]) -> String {
    let converted = |r: &EntrySummary| r.source_digest.is_some() && r.source_digest != r.digest;
    let any_converted = rows.iter().any(converted);
    let mut header = vec!["REFERENCE", "DIGEST"];
    if any_converted {
        header.push("STORED");
    }
    header.extend(["PLATFORM", "SIZE"]);
    let mut table = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for r in rows {
        let registry = r.source_digest.as_ref().or(r.digest.as_ref());
        let mut row = vec![
            r.reference.clone().unwrap_or_else(|| "-".to_string()),
            short_digest(registry.map(String::as_str)),
        ];
        if any_converted {
            row.push(if converted(r) {
                short_digest(r.digest.as_deref())
            } else {
                "-".to_string()
            });
        }
        row.push(if r.platforms.is_empty() {
            "-".to_string()
        } else {
            r.platforms.join(",")
        });
        row.push(human_size(r.size));
        table.push(row);
    }
    align(&table)
}

/// `sha256:` and the first 12 hex digits, as docker shows image IDs.
fn short_digest(d: Option<&str>) -> String {
    let d = d.unwrap_or("-");
    match d.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", hex.get(..12).unwrap_or(hex)),
        None => d.to_string(),
    }
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
