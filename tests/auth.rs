//! Authentication and transport setups users meet, against the real registry: Basic auth
//! (flags, environment, docker config files, credential helpers), bearer tokens from a token
//! server (anonymous and with credentials, one fetch per scope, renewal of an expired token),
//! TLS with a private CA, an unreachable registry, and no secret in any output.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::faults::FaultProxy;
use support::*;

fn fresh_dest() -> PathBuf {
    world().temp_dir().join("store")
}

fn small_image(seed: u64) -> Image {
    image(
        Format::Docker,
        "linux",
        "amd64",
        vec![random_layer(seed, 5000)],
    )
}

/// Push through the plain registry; the name to pull through `via` (which shares storage).
fn pushed(repo: &str, seed: u64, via: &Registry) -> String {
    push_image(&world().plain().host(), repo, "1", &small_image(seed));
    format!("{}/{repo}:1", via.host())
}

/// The DOCKER_CONFIG directory imagec() set for this command.
fn docker_config_dir(cmd: &std::process::Command) -> PathBuf {
    cmd.get_envs()
        .find(|(k, _)| *k == "DOCKER_CONFIG")
        .and_then(|(_, v)| v.map(PathBuf::from))
        .expect("imagec() sets DOCKER_CONFIG")
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn basic_auth_with_password_on_stdin() {
    let name = pushed("auth/basic-stdin", 1, world().basic());
    let dest = fresh_dest();
    let out = run_with_stdin(
        imagec()
            .args(["pull", "-q", "-u", USER, "--password-stdin", "--dest"])
            .arg(&dest)
            .arg(&name),
        &format!("{PASSWORD}\n"),
    )
    .expect(0);
    assert!(out.stdout.starts_with("sha256:"));
    entry(&dest, &name);
}

#[test]
fn basic_auth_from_environment() {
    let name = pushed("auth/basic-env", 2, world().basic());
    run(imagec()
        .env("IMAGEC_USERNAME", USER)
        .env("IMAGEC_PASSWORD", PASSWORD)
        .args(["pull", "-q", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(0);
}

#[test]
fn basic_auth_refused_or_missing_exits_3() {
    let name = pushed("auth/basic-refused", 3, world().basic());
    let out = run_with_stdin(
        imagec()
            .args(["pull", "-u", USER, "--password-stdin", "--dest"])
            .arg(fresh_dest())
            .arg(&name),
        "wrong-password",
    )
    .expect(3);
    assert!(out.stderr.contains("HTTP 401"), "{}", out.stderr);
    assert!(!out.stderr.contains("wrong-password"));
    let out = run(imagec()
        .args(["pull", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(3);
    assert!(out.stderr.contains("credentials"), "{}", out.stderr);
    // A user without a password is a usage error, before any request.
    run(imagec()
        .args(["pull", "-u", USER, "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(2);
}

#[test]
fn credentials_from_docker_config_auths() {
    let name = pushed("auth/config-file", 4, world().basic());
    let mut cmd = imagec();
    let config = docker_config_dir(&cmd).join("config.json");
    let host = world().basic().host();
    std::fs::write(
        &config,
        format!(
            r#"{{"auths":{{"http://{host}/v2/":{{"auth":"{}"}}}}}}"#,
            b64(&format!("{USER}:{PASSWORD}"))
        ),
    )
    .unwrap();
    run(cmd
        .args(["pull", "-q", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(0);

    // --auth-file names another file; a wrong entry there is refused (it is really read).
    let other = world().temp_dir().join("auth.json");
    std::fs::write(
        &other,
        format!(
            r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#,
            b64(&format!("{USER}:nope"))
        ),
    )
    .unwrap();
    run(imagec()
        .args(["pull", "--dest"])
        .arg(fresh_dest())
        .arg("--auth-file")
        .arg(&other)
        .arg(&name))
    .expect(3);
}

#[test]
fn credentials_from_a_credential_helper() {
    let name = pushed("auth/helper", 5, world().basic());
    let bin = world().temp_dir();
    // A docker-credential-helpers protocol peer: `get` reads the server URL on stdin.
    let helper = bin.join("docker-credential-imagectest");
    let log = bin.join("asked");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\necho \"$server\" > {}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\n",
            log.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&helper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&helper, perms).unwrap();

    let mut cmd = imagec();
    let host = world().basic().host();
    std::fs::write(
        docker_config_dir(&cmd).join("config.json"),
        format!(r#"{{"credHelpers":{{"{host}":"imagectest"}}}}"#),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run(cmd
        .env("PATH", path)
        .args(["pull", "-q", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(0);
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), host);
}

#[test]
fn token_auth_anonymous_pull_of_a_public_repository_fetches_one_token() {
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        (0..6).map(|i| random_layer(100 + i, 3000)).collect(),
    );
    push_image(&world().plain().host(), "public/many-blobs", "1", &img);
    let name = format!("{}/public/many-blobs:1", world().token().host());
    let ts = world().token_server();
    let scope = "repository:public/many-blobs:";
    assert_eq!(ts.requests_for_scope(scope), 0);
    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(0);
    // A manifest and 7 blobs, one token.
    assert_eq!(ts.requests_for_scope(scope), 1);
}

#[test]
fn token_auth_private_repository_needs_credentials() {
    let name = pushed("auth/private", 6, world().token());
    let out = run(imagec()
        .args(["pull", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(3);
    assert!(out.stderr.contains("HTTP 401"), "{}", out.stderr);
    let dest = fresh_dest();
    run(imagec()
        .env("IMAGEC_USERNAME", USER)
        .env("IMAGEC_PASSWORD", PASSWORD)
        .args(["pull", "-q", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    entry(&dest, &name);
    assert_eq!(
        world()
            .token_server()
            .requests_for_scope("repository:auth/private:"),
        2
    );
    // A wrong password is refused by the token server: exit 3.
    let out = run(imagec()
        .env("IMAGEC_USERNAME", USER)
        .env("IMAGEC_PASSWORD", "nope")
        .args(["pull", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(3);
    assert!(out.stderr.contains("token server"), "{}", out.stderr);
}

#[test]
fn expired_token_is_renewed_once_and_the_pull_succeeds() {
    let name = pushed("public/expiring", 7, world().token());
    let ts = world().token_server();
    let scope = "repository:public/expiring:";
    ts.expire_next_for(scope, 1);
    let out = run(imagec()
        .args(["pull", "-q", "-v", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(0);
    assert_eq!(ts.requests_for_scope(scope), 2, "{}", out.stderr);
    assert!(out.stderr.contains("token refused"), "{}", out.stderr);
}

#[test]
fn token_server_answering_access_token_only() {
    let name = pushed("public/access-token", 8, world().token());
    let ts = world().token_server();
    ts.set_only_access_token(true);
    let out = run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(fresh_dest())
        .arg(&name));
    ts.set_only_access_token(false);
    out.expect(0);
}

#[test]
fn tls_with_private_ca() {
    let name = pushed("auth/tls", 9, world().tls());
    let ca = world().ca_cert_path();
    let dest = fresh_dest();
    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(&dest)
        .arg("--ca-cert")
        .arg(ca)
        .arg(&name))
    .expect(0);
    entry(&dest, &name);

    // Without the CA: the certificate is refused (no silent fallback to HTTP), exit 1.
    let out = run(imagec()
        .args(["pull", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(1);
    assert!(
        out.stderr.to_lowercase().contains("certificate"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(&world().tls().host()), "{}", out.stderr);
    // The next step is named, once.
    assert!(
        out.stderr.contains(
            "pass that CA with --ca-cert FILE (or put it in a certs.d directory: --cert-dir DIR, DIR/HOST[:PORT]/ca.crt), or skip verification with --insecure-skip-verify"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    run(imagec()
        .args(["pull", "-q", "--insecure-skip-verify", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(0);
    // A CA file that is not PEM is a usage error, like a missing one.
    let junk = world().temp_dir().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let out = run(imagec()
        .args(["pull", "--dest"])
        .arg(fresh_dest())
        .arg("--ca-cert")
        .arg(&junk)
        .arg(&name))
    .expect(2);
    assert!(
        out.stderr.contains("junk.pem: not a PEM certificate file"),
        "{}",
        out.stderr
    );
}

#[test]
fn unreachable_registry_fails_fast_naming_the_host() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let start = Instant::now();
    let name = format!("127.0.0.1:{port}/x/y:1");
    let out = run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(1);
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.to_lowercase().contains("refused"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    // Without -q, each retry of the transient failure is reported as it happens.
    let out = run(imagec()
        .args(["pull", "--retries", "3", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(1);
    assert_eq!(out.stderr.matches("retrying").count(), 2, "{}", out.stderr);
}

#[test]
fn verbose_output_never_shows_a_secret() {
    let ts = world().token_server();
    for (via, repo) in [
        (world().basic(), "auth/secret-basic"),
        (world().token(), "auth/secret-token"),
    ] {
        let name = pushed(repo, 10, via);
        let out = run_with_stdin(
            imagec()
                .args(["pull", "-v", "-u", USER, "--password-stdin", "--dest"])
                .arg(fresh_dest())
                .arg(&name),
            PASSWORD,
        )
        .expect(0);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(all.contains("GET"), "-v logs requests: {all}");
        // The HTTPS probe of a plain HTTP registry says what happened, not rustls's words.
        assert!(
            out.stderr
                .contains(&format!("{}: not TLS, trying HTTP", via.host())),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("InvalidContentType"), "{}", out.stderr);
        assert!(!all.contains(PASSWORD), "password in output: {all}");
        assert!(
            !all.contains(&b64(&format!("{USER}:{PASSWORD}"))),
            "basic header in output"
        );
        assert!(!all.contains("Bearer ey"), "token in output: {all}");
        assert!(!all.contains("eyJ"), "JWT in output: {all}");
    }
    assert!(ts.requests() > 0);
}

#[test]
fn loopback_registries_are_reached_over_plain_http_without_a_flag() {
    // 127.0.0.1 gets HTTP automatically (docker's rule for localhost registries).
    let name = pushed("auth/loopback", 11, world().plain());
    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(fresh_dest())
        .arg(&name))
    .expect(0);
    // localhost is loopback too.
    let port = world().plain().port();
    let local = format!("localhost:{port}/auth/loopback:1");
    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(fresh_dest())
        .arg(&local))
    .expect(0);
}

#[test]
fn explicit_credentials_are_for_one_registry_only() {
    // Regression: -u credentials were sent to every registry of a multi-reference pull,
    // including a stranger's.
    let private = pushed("auth/one-registry", 12, world().basic());
    let other = pushed("auth/one-registry", 12, world().plain());
    let pulls = || {
        world().plain().count("GET", "/auth/one-registry/")
            + world().basic().count("GET", "/auth/one-registry/")
    };
    let before = pulls();
    let out = run_with_stdin(
        imagec()
            .args(["pull", "-u", USER, "--password-stdin", "--dest"])
            .arg(fresh_dest())
            .args([&private, &other]),
        PASSWORD,
    )
    .expect(2);
    assert!(out.stderr.contains("auth file"), "{}", out.stderr);
    assert_eq!(pulls(), before, "nothing was sent anywhere");
    // With an auth file, each registry gets its own credentials (the plain one, none).
    let mut cmd = imagec();
    let host = world().basic().host();
    std::fs::write(
        docker_config_dir(&cmd).join("config.json"),
        format!(
            r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#,
            b64(&format!("{USER}:{PASSWORD}"))
        ),
    )
    .unwrap();
    run(cmd
        .args(["pull", "-q", "--dest"])
        .arg(fresh_dest())
        .args([&private, &other]))
    .expect(0);
}

/// Write a docker config.json for `cmd` naming `host` with `entry` (a JSON object).
fn auth_entry(cmd: &std::process::Command, host: &str, entry: &str) {
    std::fs::write(
        docker_config_dir(cmd).join("config.json"),
        format!(r#"{{"auths":{{"{host}":{entry}}}}}"#),
    )
    .unwrap();
}

/// What `az acr login` writes: an `auth` of the zero GUID with no password, and an
/// `identitytoken`, which is an OAuth2 refresh token. It is POSTed to the realm as the
/// refresh-token grant (docker's and containerd's form), never sent as a password on a GET;
/// and it appears in no output and no file of the store.
#[test]
fn an_identitytoken_is_an_oauth2_refresh_token_posted_to_the_realm() {
    let repo = "auth/oauth2-identitytoken";
    let name = pushed(repo, 31, world().token());
    let ts = world().token_server();
    let before = ts.posts_with(REFRESH_TOKEN).len();
    let mut cmd = imagec();
    auth_entry(
        &cmd,
        &world().token().host(),
        &format!(
            r#"{{"auth":"{}","identitytoken":"{REFRESH_TOKEN}"}}"#,
            b64("00000000-0000-0000-0000-000000000000:")
        ),
    );
    let dest = fresh_dest();
    let out = run(cmd.args(["pull", "-v", "--dest"]).arg(&dest).arg(&name)).expect(0);
    entry(&dest, &name);
    // Other tests post the same refresh token in parallel: this pull's POST names its repo.
    let posts = ts.posts_with(REFRESH_TOKEN);
    assert!(posts.len() > before, "no OAuth2 POST: {}", out.stderr);
    let form = posts
        .iter()
        .find(|f| f.iter().any(|(k, v)| k == "scope" && v.contains(repo)))
        .unwrap_or_else(|| panic!("no POST for {repo}: {posts:?}"));
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field("grant_type"), "refresh_token");
    assert_eq!(field("client_id"), "imagec");
    assert_eq!(field("service"), "imagec-test");
    assert!(
        field("scope").contains(&format!("repository:{repo}:pull")),
        "{form:?}"
    );
    assert!(
        !ts.basic_users()
            .iter()
            .any(|u| u == "<token>" || u.starts_with("00000000-")),
        "the refresh token went out as a password"
    );
    assert!(
        out.stderr.contains("with a refresh token"),
        "{}",
        out.stderr
    );
    assert_no_secret(REFRESH_TOKEN, &[&out.stdout, &out.stderr], &dest);
}

/// A credential helper answering the user name `<token>` hands over a refresh token too (the
/// ACR and ECR helpers do): the same POST.
#[test]
fn a_helper_answering_token_gives_a_refresh_token() {
    let name = pushed("auth/oauth2-helper", 32, world().token());
    let ts = world().token_server();
    let before = ts.posts_with(REFRESH_TOKEN).len();
    let bin = world().temp_dir();
    let helper = bin.join("docker-credential-imagecoauth");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"<token>\",\"Secret\":\"{REFRESH_TOKEN}\"}}' \"$server\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = imagec();
    std::fs::write(
        docker_config_dir(&cmd).join("config.json"),
        format!(
            r#"{{"credHelpers":{{"{}":"imagecoauth"}}}}"#,
            world().token().host()
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dest = fresh_dest();
    let out = run(cmd
        .env("PATH", path)
        .args(["pull", "-v", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    assert!(
        ts.posts_with(REFRESH_TOKEN).len() > before,
        "{}",
        out.stderr
    );
    assert!(!ts.basic_users().iter().any(|u| u == "<token>"));
    assert_no_secret(REFRESH_TOKEN, &[&out.stdout, &out.stderr], &dest);
}

/// A refresh token the realm refuses (expired, revoked: OAuth2's `invalid_grant`) is exit 3; a
/// realm that takes no OAuth2 POST (an HTML 404 page, a 405) is exit 3 saying so; a realm that
/// answers the POST with an HTML page and 200 is exit 1 naming the realm (containerd#12822).
#[test]
fn refresh_token_refusals_and_realms_without_oauth2_are_clear_errors() {
    let name = pushed("auth/oauth2-refusals", 33, world().token());
    let realm = world().token_server().realm();
    for (token, code, needles) in [
        (
            "revoked-refresh-token",
            3,
            vec![
                "refused the refresh token",
                "invalid_grant: the refresh token has expired",
            ],
        ),
        (
            "answer-404-html",
            3,
            vec![
                "takes no OAuth2 refresh token",
                "HTTP 404 with an HTML page",
            ],
        ),
        (
            "answer-405",
            3,
            vec!["takes no OAuth2 refresh token", "HTTP 405"],
        ),
        ("answer-200-html", 1, vec!["an HTML page, not a JSON token"]),
    ] {
        let mut cmd = imagec();
        auth_entry(
            &cmd,
            &world().token().host(),
            &format!(r#"{{"identitytoken":"{token}"}}"#),
        );
        let out = run(cmd.args(["pull", "--dest"]).arg(fresh_dest()).arg(&name));
        assert_eq!(out.code, code, "{token}: {}", out.stderr);
        assert!(out.stderr.contains(&realm), "{token}: {}", out.stderr);
        for n in needles {
            assert!(out.stderr.contains(n), "{token}: {}", out.stderr);
        }
        assert_eq!(out.stderr.lines().count(), 1, "{token}: {}", out.stderr);
        assert!(!out.stderr.contains(token), "{token}: {}", out.stderr);
    }
}

/// An open registry is asked for the manifest straight away, with no `GET /v2/` before it
/// (containerd's way): the first answer itself says that no login is needed. A one-layer
/// image costs three requests: manifest, config, layer.
#[test]
fn an_open_registry_is_pulled_without_asking_v2_first() {
    let reg = world().plain().host();
    push_image(&reg, "auth/no-probe", "1", &small_image(30));
    let proxy = FaultProxy::start(&reg).unwrap();
    let name = format!("{}/auth/no-probe:1", proxy.host());
    let dest = fresh_dest();
    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    entry(&dest, &name);
    let seen = proxy.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        seen[0],
        (
            "GET".to_string(),
            "/v2/auth/no-probe/manifests/1".to_string()
        )
    );
    assert!(seen[1..]
        .iter()
        .all(|(m, p)| m == "GET" && p.contains("/blobs/")));
}

/// A host where some repositories are open to everyone and the others need a login (here a
/// front end opens `/v2/` and one repository of the Basic-auth registry with its own
/// credentials). A run that pulls the open one first learns "no login" from its answer; the
/// private one's 401 then names Basic, which is taken once, and the user's credentials go
/// with the request sent again. Without credentials the private one is refused (exit 3) and
/// the open one still lands.
#[test]
fn open_and_private_repositories_of_one_host_in_one_run() {
    let plain = world().plain().host();
    push_image(&plain, "auth/mixed-open", "1", &small_image(31));
    push_image(&plain, "auth/mixed-private", "1", &small_image(32));
    let proxy = FaultProxy::start(&world().basic().host()).unwrap();
    let login = format!("Basic {}", b64(&format!("{USER}:{PASSWORD}")));
    proxy.authorize("=/v2/", &login);
    proxy.authorize("/v2/auth/mixed-open/", &login);
    let open = format!("{}/auth/mixed-open:1", proxy.host());
    let private = format!("{}/auth/mixed-private:1", proxy.host());
    let manifest = "/v2/auth/mixed-private/manifests/1";

    let dest = fresh_dest();
    // `-j 1`: the open one is resolved first, so its answer is the host's first.
    let out = run_with_stdin(
        imagec()
            .args([
                "pull",
                "-v",
                "-j",
                "1",
                "-u",
                USER,
                "--password-stdin",
                "--dest",
            ])
            .arg(&dest)
            .arg(&open)
            .arg(&private),
        &format!("{PASSWORD}\n"),
    )
    .expect(0);
    entry(&dest, &open);
    entry(&dest, &private);
    assert!(
        out.stderr.contains("no authentication"),
        "the open repository answered first: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("asks for authentication now"),
        "{}",
        out.stderr
    );
    assert_eq!(proxy.requests("GET", manifest), 2, "{:?}", proxy.seen());

    let dest = fresh_dest();
    let out = run(imagec()
        .args(["pull", "-j", "1", "--dest"])
        .arg(&dest)
        .arg(&open)
        .arg(&private))
    .expect(3);
    entry(&dest, &open);
    assert!(
        out.stderr.contains(&format!("pulling {private}:")),
        "{}",
        out.stderr
    );
}
