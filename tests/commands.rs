//! `layers`, `inspect` and `images` against the real registry: what they print, and that
//! `layers` and `inspect` never download a layer.

mod support;

use std::path::PathBuf;

use support::*;

fn fresh_dest() -> PathBuf {
    world().temp_dir().join("store")
}

fn pushed_image(repo: &str) -> (String, String, Image) {
    let reg = world().plain().host();
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![layer_from_fixture("rootfs"), random_layer(200, 7000)],
    );
    let digest = push_image(&reg, repo, "1", &img);
    (format!("{reg}/{repo}:1"), digest, img)
}

#[test]
fn layers_json_lists_layers_base_first_without_downloading_them() {
    let (name, _, img) = pushed_image("cmd/layers");
    let plain = world().plain();
    let out = run(imagec()
        .args(["layers", "--json", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(0);
    let rows = out.json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (i, (row, layer)) in rows.iter().zip(&img.layers).enumerate() {
        assert_eq!(row["digest"], layer.digest.as_str());
        assert_eq!(row["size"], layer.data.len() as u64);
        assert_eq!(
            row["media_type"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        assert_eq!(row["diff_id"], img.diff_ids[i].as_str());
        assert_eq!(
            row["created_by"],
            format!("/bin/sh -c #(nop) ADD layer-{i} /").as_str()
        );
        assert_eq!(row["empty_layer"], false);
        let keys: std::collections::BTreeSet<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "created_by",
                "diff_id",
                "digest",
                "empty_layer",
                "media_type",
                "size"
            ]
            .into_iter()
            .collect()
        );
    }
    for layer in &img.layers {
        assert_eq!(
            plain.count("GET", &format!("/cmd/layers/blobs/{}", layer.digest)),
            0,
            "a layer was downloaded"
        );
    }
    assert_eq!(
        plain.count("GET", &format!("/cmd/layers/blobs/{}", img.config.digest)),
        1
    );

    // The table: a header and one row per layer, digests by their 12 first hex digits.
    let out = run(imagec()
        .args(["layers", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[0].contains("DIGEST") && lines[0].contains("CREATED BY"));
    assert!(lines[1].contains(&img.layers[0].digest[7..19]));
    assert!(lines[2].contains("ADD layer-1"));
}

#[test]
fn layers_of_a_list_follow_the_platform() {
    let reg = world().plain().host();
    let amd = image(Format::Oci, "linux", "amd64", vec![random_layer(210, 100)]);
    let arm = image(
        Format::Oci,
        "linux",
        "arm64/v8",
        vec![random_layer(211, 100), random_layer(212, 100)],
    );
    push_index(&reg, "cmd/layers-list", "1", &[&amd, &arm], Format::Oci);
    let name = format!("{reg}/cmd/layers-list:1");
    let out = run(imagec()
        .args(["layers", "--json", "--platform", "linux/arm64/v8", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(0);
    assert_eq!(out.json().as_array().unwrap().len(), 2);
    let out = run(imagec()
        .args(["layers", "--json", "--platform", "linux/riscv64", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(4);
    assert!(out.stderr.contains("linux/amd64"), "{}", out.stderr);
    run(imagec()
        .args(["layers", "--platform", "all", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(2);
}

#[test]
fn inspect_shows_a_summary_then_with_full_the_manifest_and_config() {
    let (name, digest, img) = pushed_image("cmd/inspect");
    let out = run(imagec()
        .args(["inspect", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(0);
    let doc = out.json();
    // The keys a script reads first, in this order; nothing else by default.
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "reference",
            "digest",
            "media_type",
            "manifest_digest",
            "platform",
            "created",
            "size",
            "layers",
            "env",
            "entrypoint",
            "cmd",
            "working_dir",
            "user",
            "labels"
        ]
    );
    assert_eq!(doc["reference"], name.as_str());
    assert_eq!(doc["digest"], digest.as_str());
    assert_eq!(doc["platform"], "linux/amd64");
    let sizes: u64 = img.layers.iter().map(|l| l.data.len() as u64).sum();
    assert_eq!(doc["size"], sizes);
    for flag in ["--full", "--json"] {
        let out = run(imagec()
            .args(["inspect", flag, "--dest"])
            .arg(fresh_dest())
            .arg(&name))
        .expect(0);
        let full = out.json();
        assert_eq!(full["reference"], name.as_str(), "{flag}");
        assert_eq!(
            full["manifest"]["config"]["digest"],
            img.config.digest.as_str()
        );
        assert_eq!(full["config"]["architecture"], "amd64");
        assert_eq!(
            full["config"]["rootfs"]["diff_ids"][0],
            img.diff_ids[0].as_str()
        );
    }

    let out = run(imagec()
        .args(["inspect", "--raw", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(0);
    assert_eq!(out.stdout.as_bytes(), img.manifest.as_slice());
    for layer in &img.layers {
        assert_eq!(
            world()
                .plain()
                .count("GET", &format!("/cmd/inspect/blobs/{}", layer.digest)),
            0
        );
    }
    // (after the checks that nothing was downloaded) What skopeo says of the same image, pulled: the same created time, env and layers.
    let dest = fresh_dest();
    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    let skopeo = skopeo_inspect(&dest, &name, &[]);
    assert_eq!(doc["created"], skopeo["Created"]);
    assert_eq!(doc["env"], skopeo["Env"]);
    let layers: Vec<&serde_json::Value> = doc["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["digest"])
        .collect();
    let skopeo_layers: Vec<&serde_json::Value> =
        skopeo["Layers"].as_array().unwrap().iter().collect();
    assert_eq!(layers, skopeo_layers);
}

#[test]
fn images_lists_what_the_store_holds() {
    let (name, _, img) = pushed_image("cmd/images");
    let dest = fresh_dest();
    // A store that does not exist yet is empty, not an error.
    let out = run(imagec().args(["images", "--json", "--dest"]).arg(&dest)).expect(0);
    assert_eq!(out.json(), serde_json::json!([]));

    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    let out = run(imagec().args(["images", "--json", "--dest"]).arg(&dest)).expect(0);
    let rows = out.json();
    let row = &rows[0];
    assert_eq!(row["reference"], name.as_str());
    assert_eq!(row["platforms"], serde_json::json!(["linux/amd64"]));
    let e = entry(&dest, &name);
    assert_eq!(row["digest"], e["digest"]);
    let expected: u64 = e["size"].as_u64().unwrap()
        + img.config.data.len() as u64
        + img.layers.iter().map(|l| l.data.len() as u64).sum::<u64>();
    assert_eq!(row["size"], expected);

    let out = run(imagec().args(["images", "--dest"]).arg(&dest)).expect(0);
    assert!(
        out.stdout.lines().nth(1).unwrap().starts_with(&name),
        "{}",
        out.stdout
    );

    // A directory that holds something else is refused, not silently treated as empty; an
    // empty one is where `pull` would make a store, so it holds nothing yet.
    let empty = world().temp_dir();
    let out = run(imagec().args(["images", "--json", "--dest"]).arg(&empty)).expect(0);
    assert_eq!(out.json(), serde_json::json!([]));
    let not_layout = world().temp_dir();
    std::fs::write(not_layout.join("notes.txt"), "mine").unwrap();
    let out = run(imagec().args(["images", "--dest"]).arg(&not_layout)).expect(1);
    assert!(
        out.stderr.contains("not an OCI image layout"),
        "{}",
        out.stderr
    );
}

#[test]
fn closed_stdout_ends_quietly() {
    let (name, _, _) = pushed_image("cmd/pipe");
    let dest = fresh_dest();
    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    // `imagec images | true`: the reader is gone before imagec writes.
    let mut child = imagec()
        .args(["images", "--dest"])
        .arg(&dest)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    // Regression: a closed stdout turned a failed pull into exit 0. The failure still counts.
    let missing = name.replace("cmd/pipe", "cmd/pipe-missing");
    let mut child = imagec()
        .args(["pull", "-q", "--dest"])
        .arg(&dest)
        .args([&name, &missing])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
