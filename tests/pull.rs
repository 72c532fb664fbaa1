//! `imagec pull` against the real distribution registry (plain HTTP, no auth): the store it
//! writes, what other tools read from it, de-duplication, platforms, formats and output.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn fresh_dest() -> PathBuf {
    world().temp_dir().join("store")
}

fn pull(dest: &Path, args: &[&str]) -> Run {
    run(imagec().arg("pull").arg("--dest").arg(dest).args(args))
}

/// A two-layer docker image: the fixture rootfs and `seed`-dependent random data.
fn docker_image(seed: u64) -> Image {
    image(
        Format::Docker,
        "linux",
        "amd64",
        vec![layer_from_fixture("rootfs"), random_layer(seed, 300_000)],
    )
}

#[test]
fn docker_image_lands_as_oci_layout_that_skopeo_and_umoci_read() {
    let reg = world().plain().host();
    let img = docker_image(1);
    let digest = push_image(&reg, "pull/basic", "1.4", &img);
    let dest = fresh_dest();
    let name = format!("{reg}/pull/basic:1.4");

    let out = pull(&dest, &[&name]).expect(0);
    assert_eq!(out.stdout.trim(), format!("{name} {digest}"));

    // The layout: oci-layout, one entry with the full name, the registry's digest kept.
    let layout: Value =
        serde_json::from_slice(&std::fs::read(dest.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let e = entry(&dest, &name);
    assert_eq!(e["mediaType"], OCI_MANIFEST);
    assert_eq!(
        e["annotations"]["dev.imagec.source.digest"],
        digest.as_str()
    );
    assert_eq!(
        e["annotations"]["dev.imagec.source.media-type"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    // The converted manifest names the same blobs with OCI media types.
    let m = read_blob_json(&dest, e["digest"].as_str().unwrap());
    assert_eq!(m["config"]["digest"], img.config.digest.as_str());
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    for (l, want) in m["layers"].as_array().unwrap().iter().zip(&img.layers) {
        assert_eq!(l["digest"], want.digest.as_str());
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }
    // Every blob, including the served manifest, is there and matches its name.
    let mut want = vec![
        digest.clone(),
        img.config.digest.clone(),
        e["digest"].as_str().unwrap().to_string(),
    ];
    want.extend(img.layers.iter().map(|l| l.digest.clone()));
    want.sort();
    assert_eq!(blobs(&dest), want);
    for d in &want {
        assert_eq!(&sha256(&std::fs::read(blob_path(&dest, d)).unwrap()), d);
    }
    // Nothing temporary is left behind.
    assert_eq!(
        std::fs::read_dir(dest.join(".imagec/tmp")).unwrap().count(),
        0
    );

    // The oracles: skopeo inspects it, umoci unpacks it to the fixture files.
    let inspect = skopeo_inspect(&dest, &name, &[]);
    assert_eq!(inspect["Architecture"], "amd64");
    let layers: Vec<&str> = inspect["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(
        layers,
        img.layers
            .iter()
            .map(|l| l.digest.as_str())
            .collect::<Vec<_>>()
    );
    let rootfs = umoci_unpack(&dest, &name);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/rootfs");
    for f in ["hello.txt", "etc/os-release", "usr/share/imagec/notes.txt"] {
        assert_eq!(
            std::fs::read(rootfs.join(f)).unwrap(),
            std::fs::read(fixture.join(f)).unwrap(),
            "{f} unpacked by umoci"
        );
    }
}

#[test]
fn repeat_pull_makes_one_head_downloads_nothing_and_rewrites_no_file() {
    let plain = world().plain();
    let reg = plain.host();
    let img = docker_image(2);
    let digest = push_image(&reg, "pull/repeat", "1", &img);
    let dest = fresh_dest();
    let name = format!("{reg}/pull/repeat:1");
    pull(&dest, &[&name]).expect(0);

    // The registry logs a request when its handler returns, which can be a moment after the
    // client has the whole answer: wait for the first pull's blob GETs (config and layers,
    // once each) to be logged before counting, or a late line is charged to the second pull.
    let first_pull_blobs = 1 + img.layers.len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while plain.count("GET", "/pull/repeat/blobs/") < first_pull_blobs
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(plain.count("GET", "/pull/repeat/blobs/"), first_pull_blobs);
    let before = plain.requests().len();
    let stamp = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let index_time = stamp(&dest.join("index.json"));
    let index_bytes = std::fs::read(dest.join("index.json")).unwrap();
    let blob_times: Vec<_> = blobs(&dest)
        .iter()
        .map(|d| stamp(&blob_path(&dest, d)))
        .collect();

    let out = pull(&dest, &["--json", &name]).expect(0);
    let report = &out.json_lines()[0];
    assert_eq!(report["digest"], digest.as_str());
    assert_eq!(report["bytes_downloaded"], 0);
    assert!(report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["cached"] == true));

    let after: Vec<_> = plain.requests()[before..]
        .iter()
        .filter(|(_, uri, _)| uri.contains("/pull/repeat/"))
        .map(|(m, uri, _)| format!("{m} {uri}"))
        .collect();
    assert_eq!(after, vec!["HEAD /v2/pull/repeat/manifests/1".to_string()]);
    assert_eq!(
        stamp(&dest.join("index.json")),
        index_time,
        "index.json was rewritten"
    );
    assert_eq!(std::fs::read(dest.join("index.json")).unwrap(), index_bytes);
    let now: Vec<_> = blobs(&dest)
        .iter()
        .map(|d| stamp(&blob_path(&dest, d)))
        .collect();
    assert_eq!(now, blob_times, "a blob was rewritten");
}

#[test]
fn retagged_image_in_store_is_refreshed_when_the_tag_moves() {
    let reg = world().plain().host();
    let dest = fresh_dest();
    let name = format!("{reg}/pull/moving:latest");
    let first = push_image(&reg, "pull/moving", "latest", &docker_image(3));
    pull(&dest, &[&name]).expect(0);
    let second = push_image(&reg, "pull/moving", "latest", &docker_image(4));
    let out = pull(&dest, &["--json", &name]).expect(0);
    assert_eq!(out.json_lines()[0]["digest"], second.as_str());
    let e = entry(&dest, &name);
    assert_eq!(
        e["annotations"]["dev.imagec.source.digest"],
        second.as_str()
    );
    assert_ne!(first, second);
    // Both images' blobs stay in the store (the layer cache); only the entry moved.
    assert!(blob_path(&dest, &first).exists());
}

#[test]
fn shared_layers_are_fetched_once_when_pulling_several_images() {
    let plain = world().plain();
    let reg = plain.host();
    let base = random_layer(50, 400_000);
    let a = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![base.clone(), random_layer(51, 1000)],
    );
    let b = image(
        Format::Oci,
        "linux",
        "amd64",
        vec![base.clone(), random_layer(52, 1000)],
    );
    push_image(&reg, "pull/share-a", "1", &a);
    push_image(&reg, "pull/share-b", "1", &b);
    let dest = fresh_dest();
    let (na, nb) = (
        format!("{reg}/pull/share-a:1"),
        format!("{reg}/pull/share-b:1"),
    );
    let out = pull(&dest, &["--json", &na, &nb]).expect(0);
    let reports = out.json_lines();
    assert_eq!(reports.len(), 2);

    let base_gets = plain.count("GET", &format!("/blobs/{}", base.digest));
    assert_eq!(
        base_gets, 1,
        "the shared base layer was fetched {base_gets} times"
    );
    // Its bytes are charged to the first reference only.
    let total: u64 = reports
        .iter()
        .map(|r| r["bytes_downloaded"].as_u64().unwrap())
        .sum();
    let distinct: u64 = [&a.config, &b.config, &base, &a.layers[1], &b.layers[1]]
        .iter()
        .map(|bl| bl.data.len() as u64)
        .sum();
    assert_eq!(total, distinct);
    entry(&dest, &na);
    entry(&dest, &nb);

    // A third image with the same base, pulled later, reuses the cached layer.
    let c = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![base.clone(), random_layer(53, 1000)],
    );
    push_image(&reg, "pull/share-c", "1", &c);
    let out = pull(&dest, &["--json", &format!("{reg}/pull/share-c:1")]).expect(0);
    let layers = out.json_lines()[0]["layers"].as_array().unwrap().clone();
    assert_eq!(layers[0]["digest"], base.digest.as_str());
    assert_eq!(layers[0]["cached"], true);
    assert_eq!(layers[1]["cached"], false);
    assert_eq!(plain.count("GET", &format!("/blobs/{}", base.digest)), 1);
}

fn two_platform_list(repo: &str, format: Format) -> (String, String, Image, Image) {
    let reg = world().plain().host();
    let amd = image(format, "linux", "amd64", vec![random_layer(60, 2000)]);
    let arm = image(format, "linux", "arm64/v8", vec![random_layer(61, 3000)]);
    let digest = push_index(&reg, repo, "1", &[&amd, &arm], format);
    (format!("{reg}/{repo}:1"), digest, amd, arm)
}

#[test]
fn manifest_list_pull_takes_the_requested_platform() {
    let (name, list_digest, amd, arm) = two_platform_list("pull/list", Format::Docker);
    let dest = fresh_dest();
    let out = pull(&dest, &["--json", "--platform", "linux/arm64", &name]).expect(0);
    let r = &out.json_lines()[0];
    assert_eq!(r["digest"], list_digest.as_str());
    assert_eq!(
        r["media_type"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    assert_eq!(r["platform"], "linux/arm64/v8");
    assert_eq!(r["config"], arm.config.digest.as_str());

    let e = entry(&dest, &name);
    assert_eq!(e["mediaType"], OCI_MANIFEST);
    assert_eq!(e["platform"]["architecture"], "arm64");
    assert_eq!(e["platform"]["os"], "linux");
    assert_eq!(e["digest"], r["stored_digest"]);
    assert_eq!(
        e["annotations"]["dev.imagec.source.digest"],
        list_digest.as_str()
    );
    // Only the arm64 image's blobs were fetched; the list and the served manifest are kept.
    assert!(blob_path(&dest, &arm.layers[0].digest).exists());
    assert!(!blob_path(&dest, &amd.layers[0].digest).exists());
    assert!(blob_path(&dest, &list_digest).exists());
    assert!(blob_path(&dest, &arm.digest).exists());
    // `images` counts what the entry uses (its manifest, config, layer), not the list's other
    // platform nor the served copies it keeps.
    let rows = run(imagec().args(["images", "--json", "--dest"]).arg(&dest))
        .expect(0)
        .json();
    let want = e["size"].as_u64().unwrap()
        + arm.config.data.len() as u64
        + arm.layers[0].data.len() as u64;
    assert_eq!(rows[0]["size"], want, "{rows}");
    assert_eq!(rows[0]["platforms"], serde_json::json!(["linux/arm64/v8"]));

    let inspect = skopeo_inspect(&dest, &name, &[]);
    assert_eq!(inspect["Architecture"], "arm64");
    let rootfs = umoci_unpack(&dest, &name);
    // The arm64 image's one layer holds random-61.bin (3000 bytes); amd64's random-60.bin is absent.
    assert_eq!(
        std::fs::metadata(rootfs.join("random-61.bin"))
            .unwrap()
            .len(),
        3000
    );
    assert!(!rootfs.join("random-60.bin").exists());
}

#[test]
fn platform_all_keeps_every_platform_in_an_oci_index() {
    let (name, list_digest, amd, arm) = two_platform_list("pull/list-all", Format::Docker);
    let dest = fresh_dest();
    let out = pull(&dest, &["--json", "--platform", "all", &name]).expect(0);
    let r = &out.json_lines()[0];
    assert_eq!(r["platform"], "all");
    assert_eq!(r["config"], Value::Null);
    let e = entry(&dest, &name);
    assert_eq!(e["mediaType"], OCI_INDEX);
    assert_eq!(
        e["annotations"]["dev.imagec.source.digest"],
        list_digest.as_str()
    );
    let idx = read_blob_json(&dest, e["digest"].as_str().unwrap());
    let children = idx["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2);
    for (child, img) in children.iter().zip([&amd, &arm]) {
        assert_eq!(child["mediaType"], OCI_MANIFEST);
        let m = read_blob_json(&dest, child["digest"].as_str().unwrap());
        assert_eq!(m["layers"][0]["digest"], img.layers[0].digest.as_str());
        assert!(blob_path(&dest, &img.layers[0].digest).exists());
    }
    assert_eq!(children[1]["platform"]["variant"], "v8");
    // skopeo resolves the index to a platform image (it needs to be told which).
    let inspect = skopeo_inspect(&dest, &name, &["--override-arch", "arm64"]);
    assert_eq!(inspect["Architecture"], "arm64");
}

#[test]
fn oci_index_is_stored_exactly_as_served() {
    let (name, index_digest, _, _) = two_platform_list("pull/oci-index", Format::Oci);
    let dest = fresh_dest();
    let out = pull(&dest, &["--json", "--platform", "all", &name]).expect(0);
    let r = &out.json_lines()[0];
    assert_eq!(r["digest"], index_digest.as_str());
    assert_eq!(r["stored_digest"], index_digest.as_str());
    let e = entry(&dest, &name);
    assert_eq!(e["digest"], index_digest.as_str());
    assert_eq!(e["mediaType"], OCI_INDEX);
    assert!(e["annotations"].get("dev.imagec.source.digest").is_none());
}

#[test]
fn oci_manifest_is_stored_as_served() {
    let reg = world().plain().host();
    let img = image(
        Format::Oci,
        "linux",
        "amd64",
        vec![layer_from_fixture("rootfs")],
    );
    let digest = push_image(&reg, "pull/oci", "v1", &img);
    let dest = fresh_dest();
    let name = format!("{reg}/pull/oci:v1");
    let r = pull(&dest, &["--json", &name]).expect(0).json_lines()[0].clone();
    assert_eq!(r["digest"], digest.as_str());
    assert_eq!(r["stored_digest"], digest.as_str());
    assert_eq!(
        std::fs::read(blob_path(&dest, &digest)).unwrap(),
        img.manifest
    );
}

#[test]
fn preserve_format_keeps_registry_digests_and_media_types() {
    let (name, list_digest, amd, _) = two_platform_list("pull/preserve", Format::Docker);
    let all = fresh_dest();
    pull(&all, &["--format", "preserve", "--platform", "all", &name]).expect(0);
    let e = entry(&all, &name);
    assert_eq!(e["digest"], list_digest.as_str());
    assert_eq!(
        e["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let dest2 = fresh_dest();
    pull(
        &dest2,
        &["--format", "preserve", "--platform", "linux/amd64", &name],
    )
    .expect(0);
    let e = entry(&dest2, &name);
    assert_eq!(e["digest"], amd.digest.as_str());
    assert_eq!(
        e["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        std::fs::read(blob_path(&dest2, &amd.digest)).unwrap(),
        amd.manifest
    );
}

#[test]
fn missing_platform_exits_4_and_lists_what_the_image_has() {
    let (name, _, _, _) = two_platform_list("pull/noplat", Format::Docker);
    let dest = fresh_dest();
    let out = pull(&dest, &["--platform", "linux/s390x", &name]).expect(4);
    assert!(out.stderr.contains("linux/s390x"), "{}", out.stderr);
    assert!(
        out.stderr.contains("linux/amd64, linux/arm64/v8"),
        "{}",
        out.stderr
    );
    // Nothing could be pulled: no store was made.
    assert!(!dest.exists());
}

#[test]
fn pull_by_digest_and_by_tag_with_digest() {
    let reg = world().plain().host();
    let img = docker_image(5);
    let digest = push_image(&reg, "pull/bydigest", "t", &img);
    let dest = fresh_dest();
    let by_digest = format!("{reg}/pull/bydigest@{digest}");
    let out = pull(&dest, &["-q", &by_digest]).expect(0);
    assert_eq!(out.stdout, format!("{digest}\n"));
    entry(&dest, &by_digest);
    // The tag is informative when a digest is given: the digest decides what is pulled.
    let both = format!("{reg}/pull/bydigest:whatever@{digest}");
    pull(&dest, &["-q", &both]).expect(0);
    entry(&dest, &both);
}

#[test]
fn not_found_exits_4_and_says_what_is_missing() {
    let reg = world().plain().host();
    push_image(&reg, "pull/exists", "1", &docker_image(6));
    let dest = fresh_dest();
    let out = pull(&dest, &[&format!("{reg}/pull/exists:nope")]).expect(4);
    // The registry's MANIFEST_UNKNOWN, said as what it means here (issue 9's hints).
    assert!(out.stderr.contains("no tag \"nope\""), "{}", out.stderr);
    assert!(out.stderr.contains("pull/exists:nope"), "{}", out.stderr);
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "one-line error: {}",
        out.stderr
    );
    pull(&dest, &[&format!("{reg}/pull/never-pushed:1")]).expect(4);
    let missing = format!("sha256:{}", "0".repeat(64));
    pull(&dest, &[&format!("{reg}/pull/exists@{missing}")]).expect(4);
}

#[test]
fn usage_errors_exit_2_with_a_message() {
    let dest = fresh_dest();
    for (args, needle) in [
        (vec!["UPPER/case"], "lowercase"),
        (vec!["a:b:c"], "invalid reference"),
        (vec!["alpine@sha256:abc"], "digest"),
        (vec!["--platform", "linux", "alpine"], "platform"),
        (vec!["--jobs", "0", "alpine"], "jobs"),
        (vec!["--no-such-flag", "alpine"], "no-such-flag"),
        (
            vec!["--auth-file", "/nonexistent/config.json", "alpine"],
            "/nonexistent/config.json",
        ),
    ] {
        let out = pull(&dest, &args).expect(2);
        assert!(
            out.stderr.to_lowercase().contains(needle),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    run(imagec().arg("pull")).expect(2);
    run(imagec().arg("--version")).expect(0);
}

#[test]
fn a_blob_that_does_not_match_its_digest_never_lands() {
    let reg = world().plain().host();
    let img = docker_image(7);
    push_image(&reg, "pull/corrupt", "1", &img);
    // Damage the layer in the registry's storage, as bit rot or a bad disk would.
    let bad = &img.layers[1];
    let path = world().stored_blob(&bad.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let dest = fresh_dest();
    let name = format!("{reg}/pull/corrupt:1");
    let out = pull(&dest, &[&name]).expect(1);
    assert!(out.stderr.contains(&bad.digest), "{}", out.stderr);
    assert!(out.stderr.contains("digest mismatch"), "{}", out.stderr);
    assert!(
        !blob_path(&dest, &bad.digest).exists(),
        "the damaged blob landed"
    );
    assert!(
        index(&dest)["manifests"].as_array().unwrap().is_empty(),
        "an entry was written"
    );
    assert_eq!(
        std::fs::read_dir(dest.join(".imagec/tmp")).unwrap().count(),
        0
    );
    // The wrong bytes are not kept as a partial for a later run to resume from either.
    assert!(!dest.join(".imagec/partial").join(&bad.digest[7..]).exists());
    // The blobs that were fine are kept for next time.
    assert!(blob_path(&dest, &img.layers[0].digest).exists());
}

#[test]
fn quiet_and_json_and_plain_progress_output() {
    let reg = world().plain().host();
    let img = docker_image(8);
    let digest = push_image(&reg, "pull/output", "1", &img);
    let name = format!("{reg}/pull/output:1");

    let out = pull(&fresh_dest(), &["-q", &name]).expect(0);
    assert_eq!(out.stdout, format!("{digest}\n"));
    assert_eq!(out.stderr, "");

    let out = pull(&fresh_dest(), &["--json", &name]).expect(0);
    let r = &out.json_lines()[0];
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = vec![
        "reference",
        "digest",
        "media_type",
        "stored_digest",
        "platform",
        "config",
        "layers",
        "bytes_downloaded",
        "elapsed_ms",
        "mirror",
    ];
    want.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(r["reference"], name.as_str());
    assert_eq!(r["platform"], "linux/amd64");
    assert_eq!(r["mirror"], serde_json::Value::Null);
    let layers = r["layers"].as_array().unwrap();
    assert_eq!(layers.len(), img.layers.len());
    for (l, b) in layers.iter().zip(&img.layers) {
        assert_eq!(l["digest"], b.digest.as_str());
        assert_eq!(l["size"], b.data.len() as u64);
        assert_eq!(l["cached"], false);
    }
    assert_eq!(out.stderr, "", "--json prints no progress");

    // Not a terminal: plain lines naming blobs by 12 hex digits, no escape codes.
    let out = pull(&fresh_dest(), &[&name]).expect(0);
    assert!(
        !out.stderr.contains('\x1b'),
        "escape codes in: {:?}",
        out.stderr
    );
    for l in &img.layers {
        let short = &l.digest[7..19];
        assert!(
            out.stderr.contains(&format!("{short}: downloading")),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&format!("{short}: done")),
            "{}",
            out.stderr
        );
    }
    assert!(
        !out.stderr.contains("already exists"),
        "a fresh store has nothing: {}",
        out.stderr
    );
    // Into a store that has the blobs: one "already exists" line per blob, no download.
    let dest = fresh_dest();
    pull(&dest, &["-q", &name]).expect(0);
    let out = pull(&dest, &[&name]).expect(0);
    for b in std::iter::once(&img.config).chain(&img.layers) {
        let short = &b.digest[7..19];
        assert!(
            out.stderr.contains(&format!("{short}: already exists")),
            "{}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("downloading"), "{}", out.stderr);
}

#[test]
fn same_name_pulled_again_replaces_its_entry_and_keeps_others() {
    let reg = world().plain().host();
    push_image(&reg, "pull/keep-a", "1", &docker_image(9));
    push_image(&reg, "pull/keep-b", "1", &docker_image(10));
    let dest = fresh_dest();
    let a = format!("{reg}/pull/keep-a:1");
    let b = format!("{reg}/pull/keep-b:1");
    pull(&dest, &[&a]).expect(0);
    pull(&dest, &[&b]).expect(0);
    push_image(&reg, "pull/keep-a", "1", &docker_image(11));
    pull(&dest, &[&a]).expect(0);
    assert_eq!(index(&dest)["manifests"].as_array().unwrap().len(), 2);
    entry(&dest, &a);
    entry(&dest, &b);
}

#[test]
fn one_failing_reference_does_not_stop_the_others() {
    let reg = world().plain().host();
    push_image(&reg, "pull/partial-ok", "1", &docker_image(12));
    let dest = fresh_dest();
    let ok = format!("{reg}/pull/partial-ok:1");
    let out = pull(
        &dest,
        &["-q", &format!("{reg}/pull/partial-missing:1"), &ok],
    )
    .expect(4);
    assert_eq!(out.stdout.lines().count(), 1);
    entry(&dest, &ok);
}

#[test]
fn default_dest_is_images_in_the_working_directory_and_env_overrides_it() {
    let reg = world().plain().host();
    push_image(&reg, "pull/default-dest", "1", &docker_image(13));
    let name = format!("{reg}/pull/default-dest:1");
    let mut cmd = imagec();
    let cwd = cmd.get_current_dir().unwrap().to_path_buf();
    run(cmd.args(["pull", "-q", &name])).expect(0);
    entry(&cwd.join("images"), &name);

    let elsewhere = fresh_dest();
    run(imagec()
        .env("IMAGEC_DEST", &elsewhere)
        .args(["pull", "-q", &name]))
    .expect(0);
    entry(&elsewhere, &name);
}

#[test]
fn a_manifest_that_does_not_match_its_digest_is_refused() {
    let reg = world().plain().host();
    let img = docker_image(14);
    let digest = push_image(&reg, "pull/bad-manifest", "1", &img);
    // The registry serves the stored bytes with Docker-Content-Digest naming the original.
    let path = world().stored_blob(&digest);
    let mut bytes = std::fs::read(&path).unwrap();
    // A digit of the config's size: still a manifest the registry parses and serves.
    let size = bytes.windows(7).position(|w| w == b"\"size\":").unwrap();
    let at = size + bytes[size..].iter().position(u8::is_ascii_digit).unwrap();
    bytes[at] = if bytes[at] == b'9' {
        b'8'
    } else {
        bytes[at] + 1
    };
    std::fs::write(&path, &bytes).unwrap();

    let dest = fresh_dest();
    for name in [
        format!("{reg}/pull/bad-manifest:1"),
        format!("{reg}/pull/bad-manifest@{digest}"),
    ] {
        let out = pull(&dest, &[&name]).expect(1);
        assert!(out.stderr.contains("does not match"), "{}", out.stderr);
        assert!(out.stderr.contains(&digest), "{}", out.stderr);
    }
    assert!(!dest.exists(), "a store was made: {:?}", blobs(&dest));
}

#[test]
fn an_explicit_platform_a_single_platform_image_lacks_is_not_found() {
    // docker refuses `--platform linux/arm64` for an amd64-only image; without --platform
    // (the host's), a single-platform image is taken whatever it is.
    let reg = world().plain().host();
    push_image(&reg, "pull/single-platform", "1", &docker_image(15));
    let name = format!("{reg}/pull/single-platform:1");
    let dest = fresh_dest();
    let out = pull(&dest, &["--platform", "linux/arm64", &name]).expect(4);
    assert!(out.stderr.contains("linux/amd64"), "{}", out.stderr);
    assert!(
        blobs(&dest).is_empty(),
        "nothing is downloaded for the wrong platform"
    );
    pull(&dest, &["-q", "--platform", "linux/amd64", &name]).expect(0);
    let elsewhere = fresh_dest();
    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(&elsewhere)
        .arg(&name))
    .expect(0);
}

#[test]
fn dry_run_prints_the_plan_and_downloads_and_creates_nothing() {
    let plain = world().plain();
    let reg = plain.host();
    let base = random_layer(60, 300_000);
    let a = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![base.clone(), random_layer(61, 2000)],
    );
    let b = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![base.clone(), random_layer(62, 3000)],
    );
    push_image(&reg, "pull/dry-a", "1", &a);
    push_image(&reg, "pull/dry-b", "1", &b);
    let (na, nb) = (format!("{reg}/pull/dry-a:1"), format!("{reg}/pull/dry-b:1"));
    let dest = fresh_dest();
    let size = |img: &Image| {
        img.config.data.len() + img.layers.iter().map(|l| l.data.len()).sum::<usize>()
    };

    let out = pull(&dest, &["--dry-run", "--json", &na, &nb]).expect(0);
    assert!(!dest.exists(), "a dry run created the store");
    assert_eq!(plain.count("GET", "/pull/dry-a/blobs/"), 0);
    assert_eq!(plain.count("GET", "/pull/dry-b/blobs/"), 0);
    let plan = out.json();
    assert_eq!(plan["references"][1]["digest"], b.digest.as_str());
    // The shared base once; five blobs in all, largest first.
    let blobs = plan["blobs"].as_array().unwrap();
    assert_eq!(blobs.len(), 5, "{plan}");
    assert_eq!(blobs[0]["digest"], base.digest.as_str());
    assert!(blobs
        .windows(2)
        .all(|w| w[0]["size"].as_u64() >= w[1]["size"].as_u64()));
    assert_eq!(
        plan["download_bytes"],
        (size(&a) + size(&b) - base.data.len()) as u64
    );

    // With a in the store, only b's own blobs are left; the human table lists them.
    pull(&dest, &["-q", &na]).expect(0);
    let listing = std::fs::read_dir(&dest).unwrap().count();
    let out = pull(&dest, &["--dry-run", &na, &nb]).expect(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(lines[1].starts_with(&b.layers[1].digest), "{}", out.stdout);
    assert!(lines[2].starts_with(&b.config.digest), "{}", out.stdout);
    assert!(
        lines[3].starts_with("would download 2 blobs")
            && lines[3].contains("(3 already in the store)"),
        "{}",
        out.stdout
    );
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), listing);
    assert!(!entry_exists(&dest, &nb));
    // A reference that does not resolve is reported with pull's exit code.
    let out = pull(&dest, &["--dry-run", &format!("{reg}/pull/dry-none:1")]).expect(4);
    assert!(out.stderr.contains("dry-none"), "{}", out.stderr);
}

fn entry_exists(dest: &Path, name: &str) -> bool {
    index(dest)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["annotations"]["org.opencontainers.image.ref.name"] == name)
}
