//! Docker schema1 images against the real distribution registry (schema1 pushes enabled): signed
//! manifests pushed by the tests, the registry's own on-the-fly conversion for a client that
//! accepts only schema1, unsigned `v1+json` answers, tampering, and what other tools read from
//! the converted image.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use support::faults::FaultProxy;
use support::image::gunzip;
use support::schema1::{self, Step};
use support::*;

fn fresh_dest() -> PathBuf {
    world().temp_dir().join("store")
}

fn pull(dest: &Path, args: &[&str]) -> Run {
    run(imagec().arg("pull").arg("--dest").arg(dest).args(args))
}

/// A legacy image: base rootfs, a throwaway ENV step, a random layer, the same small layer added
/// twice (a duplicated blob), and a throwaway CMD step on top.
struct Legacy {
    digest: String,
    signed: Vec<u8>,
    /// The layers that change files, base first (the duplicate twice).
    layers: Vec<Blob>,
    created_by: Vec<&'static str>,
}

fn push_legacy(repo: &str, seed: u64) -> Legacy {
    let reg = world().plain().host();
    let base = layer_from_fixture("rootfs");
    let random = random_layer(seed, 60_000);
    let dup = layer_from_files(&[("etc/dup.conf", format!("seed={seed}\n").as_bytes())]);
    let empty = schema1::empty_layer();
    let steps = [
        Step {
            layer: &base,
            created_by: "#(nop) ADD file:rootfs in /",
            throwaway: false,
        },
        Step {
            layer: &empty,
            created_by: "#(nop) ENV A=1",
            throwaway: true,
        },
        Step {
            layer: &random,
            created_by: "#(nop) ADD file:random in /",
            throwaway: false,
        },
        Step {
            layer: &dup,
            created_by: "#(nop) COPY dup.conf /etc/",
            throwaway: false,
        },
        Step {
            layer: &dup,
            created_by: "#(nop) COPY dup.conf /etc/ (again)",
            throwaway: false,
        },
        Step {
            layer: &empty,
            created_by: "#(nop) CMD [\"/bin/sh\"]",
            throwaway: true,
        },
    ];
    for b in [&base, &random, &dup, &empty] {
        push_blob(&reg, repo, b);
    }
    let payload = schema1::payload(repo, "1", "amd64", &steps);
    let signed = schema1::sign(&payload);
    let digest = push_manifest_bytes(&reg, repo, "1", schema1::SIGNED, &signed);
    assert_eq!(
        digest,
        sha256(&payload),
        "the registry digests schema1 over its payload"
    );
    Legacy {
        digest,
        signed,
        layers: vec![base, random, dup.clone(), dup],
        created_by: vec![
            "/bin/sh -c #(nop) ADD file:rootfs in /",
            "/bin/sh -c #(nop) ADD file:random in /",
            "/bin/sh -c #(nop) COPY dup.conf /etc/",
            "/bin/sh -c #(nop) COPY dup.conf /etc/ (again)",
        ],
    }
}

/// Every file under `root` with its bytes.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn signed_schema1_is_converted_to_an_oci_image_that_skopeo_and_umoci_read() {
    let legacy = push_legacy("s1/signed", 1);
    let reg = world().plain().host();
    let dest = fresh_dest();
    let name = format!("{reg}/s1/signed:1");
    let out = pull(&dest, &["--json", &name]).expect(0);
    let r = &out.json_lines()[0];
    assert_eq!(r["digest"], legacy.digest.as_str());
    assert_eq!(r["media_type"], schema1::SIGNED);
    assert_eq!(r["platform"], "linux/amd64");

    // The entry points at the converted manifest and remembers what the registry served.
    let e = entry(&dest, &name);
    assert_eq!(e["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(e["digest"], r["stored_digest"]);
    assert_eq!(
        e["annotations"]["dev.imagec.source.digest"],
        legacy.digest.as_str()
    );
    assert_eq!(
        e["annotations"]["dev.imagec.source.media-type"],
        schema1::SIGNED
    );
    // The payload is kept under the registry's digest, and the signed bytes as served (the
    // registry re-signs on every GET, so not the bytes pushed) under their own sha256.
    let payload = schema1::unsign(&legacy.signed);
    assert_eq!(
        std::fs::read(blob_path(&dest, &legacy.digest)).unwrap(),
        payload
    );
    let served: Vec<Vec<u8>> = blobs(&dest)
        .iter()
        .map(|d| std::fs::read(blob_path(&dest, d)).unwrap())
        .filter(|b| b.windows(12).any(|w| w == b"\"signatures\"") && schema1::unsign(b) == payload)
        .collect();
    assert_eq!(served.len(), 1, "the signed manifest as served is kept");

    // Layers base first, throwaways left out, the duplicate listed twice but fetched once.
    let m = read_blob_json(&dest, e["digest"].as_str().unwrap());
    let layers: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        layers,
        legacy
            .layers
            .iter()
            .map(|l| l.digest.as_str())
            .collect::<Vec<_>>()
    );
    assert!(m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"));
    assert_eq!(m["layers"][1]["size"], legacy.layers[1].data.len());
    let dup = &legacy.layers[2].digest;
    assert_eq!(
        world()
            .plain()
            .count("GET", &format!("/s1/signed/blobs/{dup}")),
        1
    );
    let empty = schema1::empty_layer().digest;
    assert_eq!(
        world()
            .plain()
            .count("GET", &format!("/s1/signed/blobs/{empty}")),
        0
    );

    // The config: diff_ids are the uncompressed layers' digests; history has every step.
    let c = read_blob_json(&dest, m["config"]["digest"].as_str().unwrap());
    assert_eq!(r["config"], m["config"]["digest"]);
    let want: Vec<String> = legacy
        .layers
        .iter()
        .map(|l| sha256(&gunzip(&l.data)))
        .collect();
    let got: Vec<&str> = c["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(got, want);
    assert_eq!(c["architecture"], "amd64");
    assert_eq!(c["os"], "linux");
    assert_eq!(c["config"]["Cmd"][0], "/bin/sh");
    assert!(c.get("id").is_none() && c.get("parent").is_none() && c.get("throwaway").is_none());
    let history = c["history"].as_array().unwrap();
    assert_eq!(history.len(), 6);
    assert_eq!(history[1]["empty_layer"], true);
    assert_eq!(history[1]["created_by"], "/bin/sh -c #(nop) ENV A=1");
    assert!(history[0].get("empty_layer").is_none());

    // Other tools read it, and it unpacks to the same files as the same layers in schema2.
    let inspect = skopeo_inspect(&dest, &name, &[]);
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 4);
    let rootfs = umoci_unpack(&dest, &name);
    let modern = image(Format::Docker, "linux", "amd64", legacy.layers.clone());
    push_image(&reg, "s1/modern", "1", &modern);
    let modern_name = format!("{reg}/s1/modern:1");
    pull(&dest, &["-q", &modern_name]).expect(0);
    let modern_rootfs = umoci_unpack(&dest, &modern_name);
    assert_eq!(tree(&rootfs), tree(&modern_rootfs));
    assert!(tree(&rootfs).contains_key("hello.txt"));
    // Same layers, same diff_ids as the schema2 image's own config.
    assert_eq!(modern.diff_ids, want);
}

#[test]
fn repeat_schema1_pull_downloads_no_blob_and_rewrites_nothing() {
    push_legacy("s1/repeat", 2);
    let plain = world().plain();
    let dest = fresh_dest();
    let name = format!("{}/s1/repeat:1", plain.host());
    pull(&dest, &["-q", &name]).expect(0);
    let index_before = std::fs::read(dest.join("index.json")).unwrap();
    let blobs_before = blobs(&dest);
    let gets = plain.count("GET", "/s1/repeat/");
    let heads = plain.count("HEAD", "/s1/repeat/manifests/1");
    let out = pull(&dest, &["--json", &name]).expect(0);
    assert_eq!(out.json_lines()[0]["bytes_downloaded"], 0);
    // The stored payload answers for the manifest: one HEAD, no GET at all.
    assert_eq!(plain.count("GET", "/s1/repeat/"), gets);
    assert_eq!(plain.count("HEAD", "/s1/repeat/manifests/1"), heads + 1);
    assert_eq!(
        std::fs::read(dest.join("index.json")).unwrap(),
        index_before
    );
    assert_eq!(blobs(&dest), blobs_before);
}

#[test]
fn a_tampered_payload_is_refused_and_nothing_lands() {
    let legacy = push_legacy("s1/tampered", 3);
    // One byte of the payload changed in the registry's storage; the signatures are kept.
    let path = world().stored_blob(&legacy.digest);
    let stored = std::fs::read(&path).unwrap();
    let at = stored
        .windows(5)
        .position(|w| w == b"amd64")
        .expect("the architecture in the payload");
    let mut tampered = stored.clone();
    tampered[at] = b'b';
    std::fs::write(&path, &tampered).unwrap();

    let dest = fresh_dest();
    let name = format!("{}/s1/tampered:1", world().plain().host());
    let out = pull(&dest, &[&name]).expect(1);
    assert!(out.stderr.contains("does not match"), "{}", out.stderr);
    assert!(out.stderr.contains(&legacy.digest), "{}", out.stderr);
    assert!(!dest.exists(), "a store was made: {:?}", blobs(&dest));
}

#[test]
fn registry_conversion_for_a_schema1_only_client_is_handled() {
    let reg = world().plain().host();
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![layer_from_fixture("rootfs"), random_layer(500, 30_000)],
    );
    let schema2_digest = push_image(&reg, "s1/onthefly", "1", &img);
    let proxy = FaultProxy::start(&reg).expect("starting the proxy");
    proxy.rewrite_accept("/manifests/", schema1::SIGNED);
    let dest = fresh_dest();
    let via_proxy = format!("{}/s1/onthefly:1", proxy.host());
    let out = pull(&dest, &["--json", &via_proxy]).expect(0);
    let r = &out.json_lines()[0];
    assert_eq!(
        r["media_type"],
        schema1::SIGNED,
        "the registry converted on the fly"
    );
    assert_ne!(r["digest"], schema2_digest.as_str());
    let e = entry(&dest, &via_proxy);
    let m = read_blob_json(&dest, e["digest"].as_str().unwrap());
    let c = read_blob_json(&dest, m["config"]["digest"].as_str().unwrap());
    assert_eq!(c["rootfs"]["diff_ids"], serde_json::json!(img.diff_ids));

    let direct = format!("{reg}/s1/onthefly:1");
    pull(&dest, &["-q", &direct]).expect(0);
    assert_eq!(
        tree(&umoci_unpack(&dest, &via_proxy)),
        tree(&umoci_unpack(&dest, &direct))
    );
}

#[test]
fn unsigned_schema1_is_handled_the_same_way() {
    let legacy = push_legacy("s1/unsigned", 4);
    let proxy = FaultProxy::start(&world().plain().host()).expect("starting the proxy");
    proxy.unsign_schema1("/manifests/");
    // Shadowed, not dropped: the proxy runs until the end of the test.
    let proxy = proxy.host();
    let dest = fresh_dest();
    for name in [
        format!("{proxy}/s1/unsigned:1"),
        format!("{proxy}/s1/unsigned@{}", legacy.digest),
    ] {
        let out = pull(&dest, &["--json", &name]).expect(0);
        let r = &out.json_lines()[0];
        assert_eq!(r["media_type"], schema1::UNSIGNED);
        assert_eq!(r["digest"], legacy.digest.as_str());
        assert_eq!(r["layers"].as_array().unwrap().len(), 3, "distinct layers");
    }
    skopeo_inspect(&dest, &format!("{proxy}/s1/unsigned:1"), &[]);
}

#[test]
fn warm_schema1_pull_layers_and_inspect_inflate_no_layer_again() {
    // Regression: every warm schema1 pull, and `layers`/`inspect` of a stored schema1 image,
    // inflated each layer again to learn diff_ids the first pull had already computed (0.93 s
    // of CPU for one 155 MB layer on a no-op re-pull). To show the layers are not read, their
    // bytes past the gzip header are zeroed (same size): reading them would fail or change
    // the diff_ids.
    let legacy = push_legacy("s1/warm", 6);
    let name = format!("{}/s1/warm:1", world().plain().host());
    let dest = fresh_dest();
    pull(&dest, &["-q", &name]).expect(0);
    let index_before = std::fs::read(dest.join("index.json")).unwrap();
    for l in &legacy.layers {
        let path = blob_path(&dest, &l.digest);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10..].fill(0);
        std::fs::write(&path, bytes).unwrap();
    }
    let out = pull(&dest, &["-v", &name]).expect(0);
    assert!(
        !out.stderr.contains("computing the diff_id"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read(dest.join("index.json")).unwrap(),
        index_before,
        "the warm pull made a different image"
    );
    let rows = run(imagec()
        .args(["layers", "-v", "--json", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    assert!(
        !rows.stderr.contains("computing the diff_id"),
        "{}",
        rows.stderr
    );
    assert_eq!(
        rows.json()[1]["diff_id"],
        sha256(&gunzip(&legacy.layers[1].data)).as_str()
    );
    let doc = run(imagec()
        .args(["inspect", "--full", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0)
    .json();
    assert_eq!(
        doc["config"]["rootfs"]["diff_ids"][1],
        sha256(&gunzip(&legacy.layers[1].data)).as_str()
    );
}

#[test]
fn layers_and_inspect_on_schema1() {
    let legacy = push_legacy("s1/layers", 5);
    let name = format!("{}/s1/layers:1", world().plain().host());
    let dest = fresh_dest();
    let rows = run(imagec()
        .args(["layers", "--json", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0)
    .json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["digest"], legacy.layers[i].digest.as_str());
        assert_eq!(row["size"], legacy.layers[i].data.len());
        assert_eq!(row["created_by"], legacy.created_by[i]);
        assert_eq!(row["diff_id"], Value::Null, "unknown without downloading");
    }
    assert_eq!(
        world().plain().count("GET", "/s1/layers/blobs/"),
        0,
        "layers downloaded nothing"
    );

    pull(&dest, &["-q", &name]).expect(0);
    let rows = run(imagec()
        .args(["layers", "--json", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0)
    .json();
    assert_eq!(
        rows[1]["diff_id"],
        sha256(&gunzip(&legacy.layers[1].data)).as_str()
    );

    // `images` counts the converted manifest, its config and each distinct layer once.
    // Regression: the schema1 payload's fsLayers (no sizes) were met first and the layers
    // counted as 0 bytes.
    let e = entry(&dest, &name);
    let m = read_blob_json(&dest, e["digest"].as_str().unwrap());
    let mut layers: Vec<(String, u64)> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect();
    layers.sort();
    layers.dedup();
    let want = e["size"].as_u64().unwrap()
        + m["config"]["size"].as_u64().unwrap()
        + layers.iter().map(|(_, n)| n).sum::<u64>();
    let rows = run(imagec().args(["images", "--json", "--dest"]).arg(&dest))
        .expect(0)
        .json();
    assert_eq!(rows[0]["size"], want, "{rows}");

    let doc = run(imagec()
        .args(["inspect", "--full", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0)
    .json();
    assert_eq!(doc["media_type"], schema1::SIGNED);
    assert_eq!(doc["platform"], "linux/amd64");
    assert_eq!(doc["config"]["architecture"], "amd64");
    assert_eq!(
        doc["config"]["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(doc["config"]["history"].as_array().unwrap().len(), 6);
    // --raw: the bytes as served, signatures and all (distribution signs them anew on each GET).
    let raw = run(imagec()
        .args(["inspect", "--raw", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    assert!(raw.stdout.contains("\"signatures\""), "{}", raw.stdout);
    assert_eq!(
        schema1::unsign(raw.stdout.as_bytes()),
        schema1::unsign(&legacy.signed)
    );
}

#[test]
fn malformed_schema1_is_refused_with_a_clear_error() {
    // A registry cannot be made to serve these (it validates pushes), so a fake one does.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "history entries",
            br#"{"schemaVersion":1,"fsLayers":[{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],"history":[]}"#.to_vec(),
        ),
        (
            "\"id\"",
            br#"{"schemaVersion":1,"fsLayers":[{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],"history":[{"v1Compatibility":"{}"}]}"#.to_vec(),
        ),
        ("not a JSON object", br#"{"schemaVersion":1,"fsLayers":[{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],"history":[{"v1Compatibility":"nope"}]}"#.to_vec()),
    ];
    for (needle, body) in cases {
        let digest = sha256(&body);
        let served = body.clone();
        let addr = support::httpd::serve(move |req: &support::httpd::Request| {
            if req.path() == "/v2/" {
                return support::httpd::Response::json(200, &serde_json::json!({}));
            }
            support::httpd::Response {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), schema1::UNSIGNED.into()),
                    ("Docker-Content-Digest".into(), digest.clone()),
                ],
                body: served.clone(),
            }
        })
        .unwrap();
        let dest = fresh_dest();
        let out = pull(&dest, &[&format!("{addr}/bad/schema1:1")]).expect(1);
        assert!(out.stderr.contains("schema1"), "{}", out.stderr);
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"));
        assert!(blobs(&dest).is_empty());
    }
}

/// `payload` dressed as a signed schema1 manifest whose bytes after `formatLength` are
/// `extra` (what a server controls outside what the digest covers).
fn dressed(payload: &[u8], extra: &str) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let close = payload.iter().rposition(|b| *b == b'}').unwrap();
    let length = payload[..close]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .unwrap()
        + 1;
    let protected = b64(
        serde_json::json!({ "formatLength": length, "formatTail": b64(&payload[length..]) })
            .to_string()
            .as_bytes(),
    );
    let mut out = payload[..length].to_vec();
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(
        format!(r#","signatures":[{{"header":{{"alg":"ES256"}},"signature":"c2ln","protected":"{protected}"}}]}}"#)
            .as_bytes(),
    );
    out
}

/// A proxy to the plain registry that answers `path` with `body` as a signed schema1 manifest
/// whose `Docker-Content-Digest` is `digest`.
fn serving_manifest(path: String, body: Vec<u8>, digest: String) -> FaultProxy {
    let proxy = FaultProxy::start(&world().plain().host()).expect("starting the proxy");
    proxy.serve(
        &path,
        200,
        &[
            ("Content-Type", schema1::SIGNED),
            ("Docker-Content-Digest", &digest),
        ],
        body,
    );
    proxy
}

#[test]
fn bytes_outside_the_signed_payload_are_never_used() {
    // Regression: the digest was checked over the payload but the whole body was parsed, so a
    // server could append its own fsLayers after formatLength and keep the digest.
    let legacy = push_legacy("s1/outside", 6);
    let payload = schema1::unsign(&legacy.signed);
    let other = random_layer(66, 1000);
    push_blob(&world().plain().host(), "s1/outside", &other);
    let evil = format!(
        r#","fsLayers":[{{"blobSum":"{}"}}],"history":[{{"v1Compatibility":"{{\"id\":\"x\"}}"}}]"#,
        other.digest
    );
    let body = dressed(&payload, &evil);
    let served_digest = sha256(&body);
    assert_ne!(served_digest, legacy.digest);
    let proxy = serving_manifest(
        "/v2/s1/outside/manifests/1".into(),
        body,
        legacy.digest.clone(),
    );
    let proxy = proxy.host();

    let dest = fresh_dest();
    let name = format!("{proxy}/s1/outside:1");
    let out = pull(&dest, &["--json", &name]).expect(0);
    let layers: Vec<String> = out.json_lines()[0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = legacy.layers.iter().map(|l| l.digest.clone()).collect();
    want.dedup();
    assert_eq!(
        layers, want,
        "the layers are the payload's, not the appended ones"
    );
    assert!(!blob_path(&dest, &other.digest).exists());
    // The crafted body was what imagec got (the store keeps the served bytes under their
    // sha256): without it the real manifest would give the same layers, and this test nothing.
    assert!(
        blob_path(&dest, &served_digest).exists(),
        "the crafted body was not served"
    );
}

#[test]
fn a_body_dressed_as_schema1_cannot_pass_for_another_manifests_digest() {
    // Regression: an OCI manifest's bytes served as the "payload" of a fake schema1 body passed
    // that manifest's pinned digest, and the body around it was what got parsed.
    let reg = world().plain().host();
    let img = image(Format::Oci, "linux", "amd64", vec![random_layer(67, 1000)]);
    // OCI lets a manifest omit mediaType; without it only the Content-Type says "schema1".
    let mut m: Value = serde_json::from_slice(&img.manifest).unwrap();
    m.as_object_mut().unwrap().remove("mediaType");
    let bare = serde_json::to_vec_pretty(&m).unwrap();
    for b in std::iter::once(&img.config).chain(&img.layers) {
        push_blob(&reg, "s1/dressed", b);
    }
    let digest = push_manifest_bytes(
        &reg,
        "s1/dressed",
        "1",
        "application/vnd.oci.image.manifest.v1+json",
        &bare,
    );
    let body = dressed(&bare, "");
    let proxy = serving_manifest(
        format!("/v2/s1/dressed/manifests/{digest}"),
        body,
        digest.clone(),
    );
    let proxy = proxy.host();
    let dest = fresh_dest();
    let out = pull(&dest, &[&format!("{proxy}/s1/dressed@{digest}")]).expect(1);
    assert!(
        out.stderr.contains("payload is not a schema1 manifest"),
        "{}",
        out.stderr
    );
    assert!(blobs(&dest).is_empty());
}

#[test]
fn an_explicit_platform_a_schema1_image_lacks_is_not_found() {
    push_legacy("s1/platform", 7);
    let name = format!("{}/s1/platform:1", world().plain().host());
    let out = pull(&fresh_dest(), &["--platform", "linux/arm64", &name]).expect(4);
    assert!(out.stderr.contains("linux/amd64"), "{}", out.stderr);
    pull(&fresh_dest(), &["-q", "--platform", "linux/amd64", &name]).expect(0);
}
