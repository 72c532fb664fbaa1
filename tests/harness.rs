//! Smoke tests of the integration-test support code itself (registries, token server, image
//! building and pushing), not of imagec. Tests run in parallel and share one storage, so each
//! uses its own repository names.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::Value;
use support::image::{ACCEPT_ALL, DOCKER_MANIFEST_LIST, OCI_INDEX};
use support::{client, world, Format, Image, Registry, PASSWORD, USER};

/// A small two-layer image whose content depends on `name`, so that tests do not share blobs.
fn small_image(format: Format, name: &str, arch: &str) -> Image {
    let hello = format!("hello from {name} on {arch}\n");
    support::image(
        format,
        "linux",
        arch,
        vec![
            support::layer_from_fixture("rootfs"),
            support::layer_from_files(&[("app/name.txt", hello.as_bytes())]),
        ],
    )
}

/// GET a manifest with every manifest type accepted; returns (status, digest header, body).
fn get_manifest(
    registry: &Registry,
    agent: &ureq::Agent,
    repo: &str,
    reference: &str,
    authorization: Option<&str>,
) -> (u16, Option<String>, Vec<u8>) {
    let url = registry.url(&format!("/v2/{repo}/manifests/{reference}"));
    let mut request = agent.get(&url).header("Accept", ACCEPT_ALL);
    if let Some(authorization) = authorization {
        request = request.header("Authorization", authorization);
    }
    let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let digest = response
        .headers()
        .get("docker-content-digest")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.body_mut().read_to_vec().unwrap();
    (response.status().as_u16(), digest, body)
}

fn challenge(registry: &Registry, agent: &ureq::Agent) -> (u16, String) {
    let response = agent.get(registry.url("/v2/")).call().unwrap();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (response.status().as_u16(), challenge)
}

#[test]
fn every_registry_answers_v2_as_configured() {
    let world = world();
    let agent = client::agent();

    assert_eq!(challenge(world.plain(), &agent), (200, String::new()));

    let (status, basic) = challenge(world.basic(), &agent);
    assert_eq!(status, 401);
    assert!(basic.starts_with("Basic realm="), "{basic}");

    let (status, bearer) = challenge(world.token(), &agent);
    assert_eq!(status, 401);
    let realm = world.token_server().realm();
    assert_eq!(
        bearer,
        format!(r#"Bearer realm="{realm}",service="imagec-test""#)
    );

    let trusting = client::agent_trusting(world.ca_cert_path());
    assert_eq!(challenge(world.tls(), &trusting), (200, String::new()));
    // Without the test CA the certificate is not trusted.
    let untrusted = agent.get(world.tls().url("/v2/")).call();
    assert!(
        untrusted.is_err(),
        "the TLS registry was trusted without the test CA"
    );
    // Both names in the certificate work.
    let localhost = world.tls().url("/v2/").replace("127.0.0.1", "localhost");
    assert_eq!(trusting.get(&localhost).call().unwrap().status(), 200);
}

#[test]
fn a_pushed_image_reads_back_through_every_registry() {
    let world = world();
    let repo = "harness/every";
    let image = small_image(Format::Docker, repo, "amd64");
    let digest = support::push_image(&world.plain().host(), repo, "v1", &image);
    assert_eq!(digest, image.digest);
    // Pushing again skips every blob.
    let uploads = world
        .plain()
        .count("POST", "/v2/harness/every/blobs/uploads/");
    assert_eq!(uploads, 3, "config and two layers");
    support::push_image(&world.plain().host(), repo, "v1", &image);
    assert_eq!(
        world
            .plain()
            .count("POST", "/v2/harness/every/blobs/uploads/"),
        3
    );

    let agent = client::agent();
    let expect = (200, Some(image.digest.clone()), image.manifest.clone());
    assert_eq!(
        get_manifest(world.plain(), &agent, repo, "v1", None),
        expect
    );
    assert_eq!(
        world.plain().count("GET", "/v2/harness/every/manifests/v1"),
        1
    );

    let basic = client::basic_auth(USER, PASSWORD);
    assert_eq!(
        get_manifest(world.basic(), &agent, repo, "v1", Some(&basic)),
        expect
    );
    let wrong = client::basic_auth(USER, "not-the-password");
    assert_eq!(
        get_manifest(world.basic(), &agent, repo, "v1", Some(&wrong)).0,
        401
    );
    assert_eq!(get_manifest(world.basic(), &agent, repo, "v1", None).0, 401);

    let scope = "repository:harness/every:pull";
    let token = world
        .token_server()
        .fetch(Some((USER, PASSWORD)), &[scope])
        .unwrap();
    let bearer = format!("Bearer {token}");
    assert_eq!(
        get_manifest(world.token(), &agent, repo, "v1", Some(&bearer)),
        expect
    );
    assert_eq!(get_manifest(world.token(), &agent, repo, "v1", None).0, 401);
    assert_eq!(
        world
            .token_server()
            .requests_for_scope("repository:harness/every:"),
        1
    );

    let trusting = client::agent_trusting(world.ca_cert_path());
    assert_eq!(
        get_manifest(world.tls(), &trusting, repo, "v1", None),
        expect
    );
    assert_eq!(
        get_manifest(world.tls(), &trusting, repo, &image.digest, None),
        expect
    );

    // A blob comes back byte for byte too.
    let layer = &image.layers[1];
    let url = world
        .plain()
        .url(&format!("/v2/{repo}/blobs/{}", layer.digest));
    let body = agent
        .get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap();
    assert_eq!(body, layer.data);
}

#[test]
fn anonymous_tokens_pull_only_public_repositories() {
    let world = world();
    let server = world.token_server();
    let agent = client::agent();
    let host = world.plain().host();
    let public = "public/harness-anonymous";
    let private = "harness/anonymous";
    let image = small_image(Format::Docker, public, "amd64");
    support::push_image(&host, public, "1", &image);
    support::push_image(&host, private, "1", &image);

    let token = server
        .fetch(None, &[&format!("repository:{public}:pull")])
        .unwrap();
    let (status, _, body) = get_manifest(
        world.token(),
        &agent,
        public,
        "1",
        Some(&format!("Bearer {token}")),
    );
    assert_eq!(status, 200);
    assert_eq!(body, image.manifest);

    let token = server
        .fetch(None, &[&format!("repository:{private}:pull")])
        .unwrap();
    let url = world.token().url(&format!("/v2/{private}/manifests/1"));
    let response = agent
        .get(&url)
        .header("Accept", ACCEPT_ALL)
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );

    // Anonymous push to a public repository is not granted either.
    let token = server
        .fetch(None, &[&format!("repository:{public}:pull,push")])
        .unwrap();
    let claims = jwt_claims(&token);
    assert_eq!(claims["access"][0]["actions"], serde_json::json!(["pull"]));
    assert_eq!(claims["aud"], "imagec-test");
    assert_eq!(claims["sub"], "");

    let refused = server.fetch(
        Some((USER, "wrong")),
        &[&format!("repository:{public}:pull")],
    );
    let refusal = refused.unwrap_err();
    assert!(
        refusal.contains(": 401 ") && refusal.contains("UNAUTHORIZED"),
        "{refusal}"
    );
}

#[test]
fn expired_tokens_are_refused_and_the_next_is_fresh() {
    let world = world();
    let server = world.token_server();
    let agent = client::agent();
    let repo = "harness/expired";
    let image = small_image(Format::Docker, repo, "amd64");
    support::push_image(&world.plain().host(), repo, "1", &image);

    let scope = format!("repository:{repo}:pull");
    server.expire_next_for("repository:harness/expired:", 1);
    let expired = server.fetch(Some((USER, PASSWORD)), &[&scope]).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(jwt_claims(&expired)["exp"].as_u64().unwrap() + 100 < now);
    let bearer = format!("Bearer {expired}");
    assert_eq!(
        get_manifest(world.token(), &agent, repo, "1", Some(&bearer)).0,
        401
    );

    let fresh = server.fetch(Some((USER, PASSWORD)), &[&scope]).unwrap();
    let bearer = format!("Bearer {fresh}");
    assert_eq!(
        get_manifest(world.token(), &agent, repo, "1", Some(&bearer)).0,
        200
    );
    assert_eq!(server.requests_for_scope("repository:harness/expired:"), 2);
    assert!(server.requests() >= 2);
}

#[test]
fn the_token_server_can_answer_with_access_token_only() {
    let world = world();
    let server = world.token_server();
    let url = format!(
        "{}?service=imagec-test&scope=repository%3Aharness%2Foauth%3Apull",
        server.realm()
    );
    let fetch = || -> Value {
        let mut response = client::agent().get(&url).call().unwrap();
        assert_eq!(response.status(), 200);
        serde_json::from_slice(&response.body_mut().read_to_vec().unwrap()).unwrap()
    };
    server.set_only_access_token(true);
    let oauth = fetch();
    server.set_only_access_token(false);
    assert!(oauth.get("token").is_none(), "{oauth}");
    assert!(oauth["access_token"].is_string(), "{oauth}");
    let docker = fetch();
    assert!(docker["token"].is_string(), "{docker}");
    assert_eq!(docker["expires_in"], 300);
    assert!(
        docker["issued_at"].as_str().unwrap().ends_with('Z'),
        "{docker}"
    );
}

#[test]
fn the_token_server_survives_bad_requests() {
    let world = world();
    let server = world.token_server();
    let addr = server
        .realm()
        .trim_start_matches("http://")
        .trim_end_matches("/token")
        .to_string();
    for garbage in [
        &b"\x00\xff garbage\r\n\r\n"[..],
        b"GET",
        b"GET /token?%zz=%4 HTTP/1.1\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.write_all(garbage).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{answer}"
        );
    }
    let wrong_service = format!("{}?service=other", server.realm());
    assert_eq!(
        client::agent().get(&wrong_service).call().unwrap().status(),
        400
    );
    assert!(server.fetch(None, &[]).is_ok());
}

#[test]
fn a_manifest_list_and_an_oci_index_read_back() {
    let world = world();
    let host = world.plain().host();
    let agent = client::agent();
    for (format, repo, media_type) in [
        (Format::Docker, "harness/list", DOCKER_MANIFEST_LIST),
        (Format::Oci, "harness/index", OCI_INDEX),
    ] {
        let amd64 = small_image(format, repo, "amd64");
        let arm64 = small_image(format, repo, "arm64/v8");
        let digest = support::push_index(&host, repo, "multi", &[&amd64, &arm64], format);
        let (status, served_digest, body) =
            get_manifest(world.plain(), &agent, repo, "multi", None);
        assert_eq!((status, served_digest), (200, Some(digest.clone())));
        assert_eq!(support::sha256(&body), digest);
        let index: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(index["mediaType"], media_type);
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 2);
        assert_eq!(manifests[0]["digest"], amd64.digest.as_str());
        assert_eq!(
            manifests[0]["platform"],
            serde_json::json!({"architecture": "amd64", "os": "linux"})
        );
        assert_eq!(
            manifests[1]["platform"],
            serde_json::json!({"architecture": "arm64", "os": "linux", "variant": "v8"})
        );
        // Each child is there by digest.
        let (status, _, child) = get_manifest(world.plain(), &agent, repo, &arm64.digest, None);
        assert_eq!((status, child), (200, arm64.manifest.clone()));
    }
}

#[test]
fn images_are_deterministic_and_describe_their_layers() {
    let a = small_image(Format::Oci, "same", "amd64");
    let b = small_image(Format::Oci, "same", "amd64");
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.media_type, support::image::OCI_MANIFEST);
    assert!(a
        .layers
        .iter()
        .all(|l| l.media_type == support::image::OCI_LAYER));
    let config: Value = serde_json::from_slice(&a.config.data).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!(a.diff_ids));
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(config["history"].as_array().unwrap().len(), 2);

    // The fixture layer holds the fixture files with fixed metadata.
    let tar = support::image::gunzip(&a.layers[0].data);
    let mut archive = tar::Archive::new(&tar[..]);
    let mut files = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        assert_eq!(
            (
                header.mtime().unwrap(),
                header.uid().unwrap(),
                header.gid().unwrap()
            ),
            (0, 0, 0)
        );
        if header.entry_type().is_file() {
            assert_eq!(header.mode().unwrap(), 0o644);
            files.push(entry.path().unwrap().to_string_lossy().into_owned());
        }
    }
    assert_eq!(
        files,
        ["etc/os-release", "hello.txt", "usr/share/imagec/notes.txt"]
    );

    let random = support::random_layer(7, 100_000);
    assert_eq!(random.digest, support::random_layer(7, 100_000).digest);
    assert_ne!(random.digest, support::random_layer(8, 100_000).digest);
    assert!(random.data.len() > 100_000, "random bytes do not compress");
    assert_eq!(
        support::image::gunzip(&random.data).len(),
        512 + 100_352 + 1024
    );
    // Its diff_id is hashed from the stored blocks without inflating: the same as inflating.
    let unpacked = support::sha256(&support::image::gunzip(&random.data));
    let with_random = support::image(Format::Docker, "linux", "amd64", vec![random]);
    assert_eq!(with_random.diff_ids, [unpacked]);
}

#[test]
fn skopeo_inspects_an_image_on_the_plain_registry() {
    let world = world();
    let repo = "harness/skopeo";
    let image = small_image(Format::Docker, repo, "arm64/v8");
    let digest = support::push_image(&world.plain().host(), repo, "1.0", &image);
    let home = support::temp_dir();
    let output = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/{repo}:1.0", world.plain().host()))
        .env("HOME", &home)
        .output()
        .expect("running skopeo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let inspected: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(inspected["Digest"], digest.as_str());
    assert_eq!(inspected["Architecture"], "arm64");
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2);

    // The layers make a root filesystem the OCI tools can unpack.
    let layout = home.join("layout");
    let bundle = home.join("bundle");
    let run = |command: &mut std::process::Command| {
        let output = command.env("HOME", &home).output().unwrap();
        assert!(
            output.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(std::process::Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/{repo}:1.0", world.plain().host()))
        .arg(format!("oci:{}:1.0", layout.display())));
    run(std::process::Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:1.0", layout.display()))
        .arg(&bundle));
    let hello = std::fs::read_to_string(bundle.join("rootfs/app/name.txt")).unwrap();
    assert_eq!(hello, "hello from harness/skopeo on arm64/v8\n");
    assert!(bundle.join("rootfs/etc/os-release").is_file());
}

#[test]
fn imagec_commands_get_a_clean_environment() {
    let command = support::imagec();
    let envs: Vec<(String, Option<String>)> = command
        .get_envs()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.map(|v| v.to_string_lossy().into_owned()),
            )
        })
        .collect();
    let get = |name: &str| {
        envs.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    };
    assert_eq!(get("IMAGEC_RETRY_BASE_MS").as_deref(), Some("0"));
    assert_eq!(get("NO_PROXY").as_deref(), Some("*"));
    assert_eq!(get("HTTPS_PROXY"), None);
    let home = std::path::PathBuf::from(get("HOME").unwrap());
    assert_eq!(command.get_current_dir(), Some(home.as_path()));
    let docker_config = std::path::PathBuf::from(get("DOCKER_CONFIG").unwrap());
    assert_eq!(std::fs::read_dir(docker_config).unwrap().count(), 0);
    assert!(envs
        .iter()
        .all(|(k, _)| !k.starts_with("IMAGEC_") || k == "IMAGEC_RETRY_BASE_MS"));
}

/// The claims of a JWT, decoded without verification.
fn jwt_claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Send `bytes` on a fresh connection to `host`, then read what comes back until the proxy
/// closes or a second passes in silence.
fn send_raw(host: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn the_fault_proxy_answers_garbage_with_400_keeps_serving_and_stops_when_dropped() {
    let proxy = support::faults::FaultProxy::start(&world().plain().host()).unwrap();
    let host = proxy.host();
    for garbage in [
        &b"\x00\xff not http\r\n\r\n"[..],
        b"GET",
        b"\x16\x03\x01\x00\x05hello",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\n",
        &[b'x'; 70_000][..],
        b"GET relative HTTP/1.1\r\n\r\n",
    ] {
        let answer = String::from_utf8_lossy(&send_raw(&host, garbage)).into_owned();
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{garbage:?}: {answer}"
        );
    }
    // Still serving, and a crafted answer comes back as given.
    let answer = send_raw(&host, b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    proxy.serve("/v2/harness/teapot", 418, &[], b"short and stout".to_vec());
    let answer = String::from_utf8(send_raw(&host, b"GET /v2/harness/teapot HTTP/1.1\r\n\r\n"));
    let answer = answer.unwrap();
    assert!(answer.starts_with("HTTP/1.1 418"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nshort and stout"), "{answer}");
    // Dropped: the accept thread ends and the port is closed.
    drop(proxy);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while TcpStream::connect(&host).is_ok() {
        assert!(std::time::Instant::now() < deadline, "{host} still accepts");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

proptest::proptest! {
    #[test]
    fn http_heads_of_any_bytes_never_panic(
        raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        shaped in "[A-Z]{0,6} /[ -~]{0,20} HTTP/1\\.1\r\n([A-Za-z-]{0,10}:[ -~]{0,20}\r\n){0,4}(\r\n)?",
    ) {
        for bytes in [&raw[..], shaped.as_bytes()] {
            let _ = support::httpd::read_head(&mut std::io::BufReader::new(bytes));
        }
    }
}
