//! Mirrors and pull-through caches (SPEC: Networks): distribution's own pull-through cache
//! (`proxy: remoteurl:`) in front of a registry the test owns, used with `--mirror` and with a
//! registries.conf; and mirrors that are down, that 404, and that flip a byte, each falling
//! through to the next source with the store verified.

mod support;

use std::path::Path;

use support::faults::FaultProxy;
use support::*;

fn small_image(seed: u64) -> Image {
    image(
        Format::Docker,
        "linux",
        "amd64",
        vec![random_layer(seed, 300_000), random_layer(seed + 1, 200_000)],
    )
}

/// `pull --json --mirror MIRROR NAME` into `dest`, which must succeed: its JSON record and run.
fn pull_with_mirror(mirror: &str, name: &str, dest: &Path) -> (serde_json::Value, Run) {
    let out = run(imagec()
        .args(["pull", "--json", "--mirror", mirror, "--dest"])
        .arg(dest)
        .arg(name))
    .expect(0);
    let doc = serde_json::from_str(out.stdout.trim()).unwrap();
    (doc, out)
}

/// The requests a registry's access log shows from imagec (by its User-Agent) for blobs.
fn imagec_blob_requests(reg: &Registry) -> usize {
    reg.log()
        .lines()
        .filter(|l| l.contains("/blobs/") && l.contains("imagec/"))
        .count()
}

#[test]
fn a_pull_through_cache_serves_the_pull_and_keeps_serving_with_the_upstream_down() {
    let upstream = Registry::start_own(&world().temp_dir(), world().ca_cert_path()).unwrap();
    let img = small_image(9100);
    push_image(&upstream.host(), "team/app", "1", &img);
    let cache_dir = world().temp_dir();
    let cache = Registry::start_pull_through(&cache_dir, world().ca_cert_path(), &upstream.url(""))
        .unwrap();
    let name = format!("{}/team/app:1", upstream.host());
    let mirror = format!("http://{}", cache.host());

    let dest = world().temp_dir().join("store");
    let (doc, out) = pull_with_mirror(&format!("{}={mirror}", upstream.host()), &name, &dest);
    assert_eq!(doc["mirror"], mirror.as_str(), "{}", out.stdout);
    assert_eq!(doc["reference"], name.as_str());
    entry(&dest, &name);
    assert_eq!(
        imagec_blob_requests(&upstream),
        0,
        "imagec fetched blobs from the upstream:\n{}",
        upstream.log()
    );
    // containerd's dialect: the registry a mirror is asked for.
    assert!(
        cache.log().contains(&format!("ns={}", upstream.host())),
        "{}",
        cache.log()
    );

    // The same through a registries.conf, with the upstream gone: by digest, from the cache.
    let conf = world().temp_dir().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"{up}\"\nlocation = \"{up}\"\n\n[[registry.mirror]]\nlocation = \"{cache}\"\ninsecure = true\n",
            up = upstream.host(),
            cache = cache.host()
        ),
    )
    .unwrap();
    let by_digest = format!("{}/team/app@{}", upstream.host(), img.digest);
    // distribution's cache writes what it served into its storage as it streams, and commits
    // a blob just after the answer: wait until every blob is there before the upstream goes.
    let stored = |d: &str| {
        cache_dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&d[7..9])
            .join(&d[7..])
            .join("data")
            .exists()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(stored(&img.config.digest) && img.layers.iter().all(|l| stored(&l.digest))) {
        assert!(
            std::time::Instant::now() < deadline,
            "the cache never stored the blobs"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(upstream);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let dest = world().temp_dir().join("store");
    let out = run(imagec()
        .args(["pull", "--json", "--registries-conf"])
        .arg(&conf)
        .arg("--dest")
        .arg(&dest)
        .arg(&by_digest))
    .expect(0);
    let doc: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(doc["mirror"], cache.host().as_str(), "{}", out.stdout);
    assert_eq!(doc["digest"], img.digest.as_str());
    entry(&dest, &by_digest);
}

/// A mirror nothing listens on is skipped, with one warning for the whole run; a mirror that
/// answers 404 is skipped for each request; the registry serves, and `mirror` is null.
#[test]
fn a_mirror_that_is_down_or_404s_falls_through_to_the_registry() {
    let reg = world().plain().host();
    let img = small_image(9110);
    push_image(&reg, "mirrors/fallthrough", "1", &img);
    let name = format!("{reg}/mirrors/fallthrough:1");
    let dest = world().temp_dir().join("store");
    let out = run(imagec()
        .args(["pull", "--json"])
        .args(["--mirror", &format!("{reg}=http://127.0.0.1:1")])
        // The same registry under a prefix that holds nothing: 404 for every request.
        .args([
            "--mirror",
            &format!("{reg}=http://{}/empty", world().basic().host()),
        ])
        .arg("--dest")
        .arg(&dest)
        .arg(&name))
    .expect(0);
    let doc: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(doc["mirror"], serde_json::Value::Null);
    entry(&dest, &name);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("imagec: warning: mirror"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(
        warnings[0].contains("http://127.0.0.1:1 cannot be reached"),
        "{}",
        out.stderr
    );
}

/// A mirror that flips a byte of a layer (a broken cache, or a hostile one) costs time, never
/// correctness: the blob comes again from the registry and the store verifies.
#[test]
fn a_mirror_serving_wrong_bytes_is_passed_over_for_that_blob() {
    let reg = world().plain().host();
    let img = small_image(9120);
    push_image(&reg, "mirrors/lying", "1", &img);
    let proxy = FaultProxy::start(&reg).unwrap();
    let layer = &img.layers[0];
    proxy.flip_byte(&format!("/blobs/{}", layer.digest), 1000);
    let name = format!("{reg}/mirrors/lying:1");
    let dest = world().temp_dir().join("store");
    let (doc, out) = pull_with_mirror(&format!("{reg}=http://{}", proxy.host()), &name, &dest);
    assert_eq!(doc["mirror"], format!("http://{}", proxy.host()).as_str());
    assert!(
        out.stderr.contains(&format!(
            "mirror http://{} served bytes that are not {}",
            proxy.host(),
            layer.digest
        )),
        "{}",
        out.stderr
    );
    entry(&dest, &name);
    for l in &img.layers {
        assert_eq!(
            sha256(&std::fs::read(blob_path(&dest, &l.digest)).unwrap()),
            l.digest
        );
    }
    assert_store_consistent(Path::new(&dest));
    // The other layer came from the mirror, once.
    assert_eq!(
        proxy.requests("GET", &format!("/blobs/{}", img.layers[1].digest)),
        1
    );
}

/// registries.conf `blocked = true` refuses the registry before anything is sent (exit 2).
#[test]
fn a_blocked_registry_is_refused() {
    let conf = world().temp_dir().join("registries.conf");
    std::fs::write(
        &conf,
        "[[registry]]\nprefix = \"blocked.example\"\nblocked = true\n",
    )
    .unwrap();
    let out = run(imagec()
        .args(["pull", "--registries-conf"])
        .arg(&conf)
        .arg("blocked.example/team/app:1"))
    .expect(2);
    assert!(
        out.stderr.contains("blocked by registries.conf"),
        "{}",
        out.stderr
    );
    // `tags` too: it talks to the registry itself, and a blocked one is never asked.
    let out = run(imagec()
        .args(["tags", "--registries-conf"])
        .arg(&conf)
        .arg("blocked.example/team/app"))
    .expect(2);
    assert!(
        out.stderr.contains("blocked by registries.conf"),
        "{}",
        out.stderr
    );
}

/// A mirror whose manifest is not the one the registry's digest names is passed over too: the
/// manifest comes from the registry (`mirror` null), the blobs still from the mirror.
#[test]
fn a_mirror_serving_a_wrong_manifest_is_passed_over() {
    let reg = world().plain().host();
    let img = small_image(9130);
    push_image(&reg, "mirrors/lying-manifest", "1", &img);
    let proxy = FaultProxy::start(&reg).unwrap();
    proxy.flip_byte("/manifests/", 40);
    let name = format!("{reg}/mirrors/lying-manifest@{}", img.digest);
    let dest = world().temp_dir().join("store");
    let (doc, out) = pull_with_mirror(&format!("{reg}=http://{}", proxy.host()), &name, &dest);
    assert_eq!(doc["mirror"], serde_json::Value::Null, "{}", out.stderr);
    assert_eq!(doc["digest"], img.digest.as_str());
    entry(&dest, &name);
    assert_store_consistent(Path::new(&dest));
    for l in &img.layers {
        assert_eq!(proxy.requests("GET", &format!("/blobs/{}", l.digest)), 1);
    }
}

/// Credentials are looked up by the mirror's own host: the registry's (`-u` for it) are not
/// sent to a mirror on another host. Here the mirror fronts the same Basic-auth registry, so
/// it would serve if it got them; it answers 401 instead, and the registry serves.
#[test]
fn the_registrys_credentials_are_not_sent_to_a_mirror() {
    let basic = world().basic().host();
    let img = small_image(9140);
    push_image(&world().plain().host(), "mirrors/credentials", "1", &img);
    let proxy = FaultProxy::start(&basic).unwrap();
    let name = format!("{basic}/mirrors/credentials:1");
    let dest = world().temp_dir().join("store");
    let out = run_with_stdin(
        imagec()
            .args(["pull", "--json", "-u", USER, "--password-stdin", "--mirror"])
            .arg(format!("{basic}=http://{}", proxy.host()))
            .arg("--dest")
            .arg(&dest)
            .arg(&name),
        &format!("{PASSWORD}\n"),
    )
    .expect(0);
    let doc: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(doc["mirror"], serde_json::Value::Null, "{}", out.stderr);
    entry(&dest, &name);
    assert!(proxy.requests("GET", "/manifests/") >= 1);
}

/// A mirror that sends more bytes than the blob's size (or a layer that is not gzip) is the
/// mirror's fault too: what it sent is discarded and the registry serves the blob.
#[test]
fn a_mirror_sending_too_many_bytes_is_passed_over() {
    let reg = world().plain().host();
    let img = small_image(9150);
    push_image(&reg, "mirrors/too-long", "1", &img);
    let proxy = FaultProxy::start(&reg).unwrap();
    let layer = &img.layers[1];
    proxy.serve(
        &format!("/blobs/{}", layer.digest),
        200,
        &[],
        vec![0u8; layer.data.len() + 10],
    );
    let name = format!("{reg}/mirrors/too-long:1");
    let dest = world().temp_dir().join("store");
    let (_, out) = pull_with_mirror(&format!("{reg}=http://{}", proxy.host()), &name, &dest);
    assert!(
        out.stderr
            .contains(&format!("served bytes that are not {}", layer.digest)),
        "{}",
        out.stderr
    );
    entry(&dest, &name);
    assert_store_consistent(Path::new(&dest));
}

/// registries.conf's registry-level `insecure = true`, as containers/image means it: a
/// registry whose certificate no CA here vouches for is pulled without verification, and one
/// on a name that is not loopback may answer plain HTTP, with no flag. Without the file both
/// fail. Regression: the key was ignored (only a mirror's `insecure` was read).
#[test]
fn an_insecure_registry_in_registries_conf() {
    let tls = world().tls().host();
    // The world's registries share one storage: pushed to one, served by all.
    push_image(
        &world().plain().host(),
        "conf/insecure",
        "1",
        &small_image(9130),
    );
    let scratch = world().temp_dir();
    let conf = scratch.join("registries.conf");
    let name = format!("{tls}/conf/insecure:1");
    let out = run(imagec()
        .args(["pull", "--retries", "1", "--dest"])
        .arg(scratch.join("refused"))
        .arg(&name))
    .expect(1);
    assert!(out.stderr.contains("UnknownIssuer"), "{}", out.stderr);
    std::fs::write(
        &conf,
        format!("[[registry]]\nprefix = \"{tls}\"\ninsecure = true\n"),
    )
    .unwrap();
    let dest = scratch.join("tls");
    let out = run(imagec()
        .args(["pull", "-v", "--registries-conf"])
        .arg(&conf)
        .arg("--dest")
        .arg(&dest)
        .arg(&name))
    .expect(0);
    entry(&dest, &name);
    assert!(out.stderr.contains("TLS not verified"), "{}", out.stderr);

    // Only where the insecure entry leads: another repository on the host than the rule's
    // prefix, and the host as a registry when only a mirror on it is insecure, are verified.
    push_image(
        &world().plain().host(),
        "elsewhere/app",
        "1",
        &small_image(9131),
    );
    let elsewhere = format!("{tls}/elsewhere/app:1");
    for text in [
        format!("[[registry]]\nprefix = \"{tls}/conf\"\ninsecure = true\n"),
        format!(
            "[[registry]]\nprefix = \"other.example\"\n[[registry.mirror]]\nlocation = \"{tls}/mirror\"\ninsecure = true\n"
        ),
    ] {
        std::fs::write(&conf, &text).unwrap();
        let out = run(imagec()
            .args(["pull", "--retries", "1", "--registries-conf"])
            .arg(&conf)
            .arg("--dest")
            .arg(scratch.join("elsewhere"))
            .arg(&elsewhere))
        .expect(1);
        assert!(out.stderr.contains("UnknownIssuer"), "{text}\n{}", out.stderr);
    }

    // Plain HTTP on a name that is not loopback, reached through a proxy that maps it.
    let (hidden, map) = world().plain().hidden_name();
    let proxy = support::http_proxy::HttpProxy::start(map, None).unwrap();
    let via = format!("http://{}", proxy.host());
    let name = format!("{hidden}/conf/insecure:1");
    let pull = |conf: Option<&Path>, dest: &Path| {
        let mut cmd = imagec();
        cmd.env("NO_PROXY", "")
            .env("no_proxy", "")
            .env("HTTPS_PROXY", &via)
            .env("HTTP_PROXY", &via)
            .args(["pull", "--retries", "1"]);
        if let Some(c) = conf {
            cmd.arg("--registries-conf").arg(c);
        }
        run(cmd.arg("--dest").arg(dest).arg(&name))
    };
    pull(None, &scratch.join("no-http")).expect(1);
    std::fs::write(
        &conf,
        format!("[[registry]]\nprefix = \"{hidden}\"\ninsecure = true\n"),
    )
    .unwrap();
    let dest = scratch.join("http");
    pull(Some(&conf), &dest).expect(0);
    entry(&dest, &name);
    assert!(!proxy.forwarded().is_empty());
}

/// A mirror whose `/v2/` answers 503 is passed over, and not asked again before each request
/// of the pull: one probe for the whole pull of an image of four blobs and a manifest.
/// Regression: it was probed again before every request (a round trip each, under the lock
/// every request takes to find its endpoint).
#[test]
fn a_mirror_failing_its_probe_is_not_probed_before_every_request() {
    let reg = world().plain().host();
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        (0..3).map(|i| random_layer(9140 + i, 50_000)).collect(),
    );
    push_image(&reg, "mirrors/probe", "1", &img);
    let broken = FaultProxy::start(&reg).unwrap();
    broken.fail_first("/v2/", 503, None, 1000);
    let name = format!("{reg}/mirrors/probe:1");
    let dest = world().temp_dir().join("store");
    let (doc, out) = pull_with_mirror(&format!("{reg}=http://{}", broken.host()), &name, &dest);
    assert_eq!(doc["mirror"], serde_json::Value::Null, "{}", out.stdout);
    entry(&dest, &name);
    let asked = broken.requests("GET", "/v2/") + broken.requests("HEAD", "/v2/");
    assert_eq!(asked, 1, "the mirror was asked {asked} times");
}

/// A layer begun at a mirror that sent a wrong byte and then broke off, and finished by the
/// registry after the resume (the mirror refused the `Range`), fails its digest check: the
/// mirror is blamed for it, and the layer comes again whole from the registry. Regression:
/// nobody was blamed, and the pull failed (exit 1).
#[test]
fn a_blob_begun_at_a_lying_mirror_and_finished_by_the_registry_comes_again() {
    let reg = world().plain().host();
    let img = small_image(9150);
    push_image(&reg, "mirrors/mixed", "1", &img);
    let mirror = FaultProxy::start(&reg).unwrap();
    let layer = &img.layers[0];
    let path = format!("/blobs/{}", layer.digest);
    mirror.flip_byte(&path, 1000);
    mirror.reset_after(&path, 100_000, 1);
    mirror.fail_ranged(&path, 503, 1000);
    let name = format!("{reg}/mirrors/mixed:1");
    let dest = world().temp_dir().join("store");
    let (_, out) = pull_with_mirror(&format!("{reg}=http://{}", mirror.host()), &name, &dest);
    assert!(
        out.stderr.contains(&format!(
            "mirror http://{} served bytes that are not {}",
            mirror.host(),
            layer.digest
        )),
        "{}",
        out.stderr
    );
    entry(&dest, &name);
    assert_eq!(
        sha256(&std::fs::read(blob_path(&dest, &layer.digest)).unwrap()),
        layer.digest
    );
    assert_store_consistent(Path::new(&dest));
    // The mirror was asked for the layer twice: the first GET, and the resume it refused.
    assert_eq!(mirror.requests("GET", &path), 2);
}

/// A mirror that holds nothing (a real, empty registry) costs what it did when `/v2/` was
/// asked before anything else: the first request's 404 says nothing of how to log in, so
/// `/v2/` is asked once, and then every other request once.
#[test]
fn an_empty_mirror_is_asked_v2_once_and_everything_else_once() {
    let reg = world().plain().host();
    let img = small_image(9160);
    push_image(&reg, "mirrors/empty", "1", &img);
    let empty = Registry::start_own(&world().temp_dir(), world().ca_cert_path()).unwrap();
    let mirror = FaultProxy::start(&empty.host()).unwrap();
    let name = format!("{reg}/mirrors/empty:1");
    let dest = world().temp_dir().join("store");
    let (doc, out) = pull_with_mirror(&format!("{reg}=http://{}", mirror.host()), &name, &dest);
    assert_eq!(doc["mirror"], serde_json::Value::Null, "{}", out.stdout);
    entry(&dest, &name);
    let seen = mirror.seen();
    let probes = seen.iter().filter(|(_, p)| p == "/v2/").count();
    assert_eq!(probes, 1, "{seen:?}");
    let mut others: Vec<_> = seen.iter().filter(|(_, p)| p != "/v2/").collect();
    assert_eq!(others.len(), 4, "manifest, config, two layers: {seen:?}");
    others.sort();
    others.dedup();
    assert_eq!(others.len(), 4, "a request asked twice: {seen:?}");
}
