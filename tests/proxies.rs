//! HTTP proxies as docker, skopeo and curl read them (SPEC: Networks), through a proxy the test
//! starts (HTTPS through `CONNECT`, plain HTTP in absolute form, as squid wants them) that maps
//! a name resolving nowhere (`registry.imagec.test`) to the real registry: so a pull that works
//! went through the proxy.

mod support;

use std::process::Command;

use support::http_proxy::HttpProxy;
use support::socks_proxy::SocksProxy;
use support::squid::Squid;
use support::*;

/// `imagec()` with the proxy variables given and NO_PROXY (which the test support sets to `*`)
/// as given, both cases.
fn with_proxy_env(vars: &[(&str, &str)], no_proxy: &str) -> Command {
    let mut cmd = imagec();
    cmd.env("NO_PROXY", no_proxy).env("no_proxy", no_proxy);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

fn pushed(repo: &str, seed: u64) -> Image {
    push_one_layer(repo, seed, 50_000)
}

/// Every target a proxy logged was `host`, and there was one.
#[track_caller]
fn assert_only(targets: &[String], host: &str) {
    assert!(
        !targets.is_empty() && targets.iter().all(|t| t == host),
        "{targets:?}"
    );
}

/// The error names the proxy (not the registry) as the one that failed, with its status and
/// what to do about it.
#[track_caller]
fn assert_refused(stderr: &str, proxy: &str, status: u16, why: &str) {
    assert!(
        stderr.contains(&format!("proxy {proxy} failed"))
            && stderr.contains(&format!(" {status}"))
            && stderr.contains(why),
        "{stderr}"
    );
}

/// `-v` named the proxy each request went through.
#[track_caller]
fn assert_via(stderr: &str, proxy: &str) {
    assert!(stderr.contains(&format!("via proxy {proxy}")), "{stderr}");
}

#[test]
fn a_registry_reachable_only_through_the_proxy_is_pulled_through_it() {
    pushed("proxies/through", 9200);
    let (host, map) = world().plain().hidden_name();
    let proxy = HttpProxy::start(map, None).unwrap();
    let url = format!("http://{}", proxy.host());
    let name = format!("{host}/proxies/through:1");
    let dest = world().temp_dir().join("store");
    let out = run(
        with_proxy_env(&[("HTTPS_PROXY", &url), ("http_proxy", &url)], "")
            .args(["pull", "-v", "--insecure-allow-http", "--dest"])
            .arg(&dest)
            .arg(&name),
    )
    .expect(0);
    entry(&dest, &name);
    // HTTPS is tried first, through CONNECT (the plain registry answers it with no TLS); the
    // plain-HTTP requests go in absolute form, which the proxy forwards: a proxy that allows
    // CONNECT to port 443 alone (squid's default) would refuse a CONNECT to this port.
    assert_only(&proxy.connects(), &host);
    let forwarded = proxy.forwarded();
    assert!(
        forwarded
            .iter()
            .all(|r| r.starts_with("GET ") || r.starts_with("HEAD ")),
        "{forwarded:?}"
    );
    assert!(
        forwarded
            .iter()
            .all(|r| r.contains(&format!(" http://{host}/v2/"))),
        "{forwarded:?}"
    );
    assert!(
        forwarded.iter().any(|r| r.starts_with(&format!(
            "GET http://{host}/v2/proxies/through/blobs/sha256:"
        ))),
        "{forwarded:?}"
    );
    // Connections to the proxy are kept alive: the rewrite holds for every request on one.
    let forwarding_connections = proxy.connections() - proxy.connects().len();
    assert!(
        forwarding_connections < forwarded.len(),
        "{forwarding_connections} connections for {} requests",
        forwarded.len()
    );
    assert_via(&out.stderr, &url);

    // NO_PROXY naming the domain (leading dot: subdomains) sends it direct, where the name
    // resolves nowhere: exit 1, and the proxy saw nothing more.
    let before = proxy.connections();
    run(with_proxy_env(
        &[("HTTPS_PROXY", &url), ("HTTP_PROXY", &url)],
        "localhost,.imagec.test",
    )
    .args(["pull", "--insecure-allow-http", "--retries", "1", "--dest"])
    .arg(world().temp_dir().join("store"))
    .arg(&name))
    .expect(1);
    assert_eq!(proxy.connections(), before);
}

/// A loopback registry is never proxied, whatever the variables say.
#[test]
fn loopback_registries_are_never_proxied() {
    pushed("proxies/loopback", 9210);
    let proxy = HttpProxy::start(vec![], None).unwrap();
    let url = format!("http://{}", proxy.host());
    let name = format!("{}/proxies/loopback:1", world().plain().host());
    run(with_proxy_env(
        &[
            ("HTTPS_PROXY", &url),
            ("HTTP_PROXY", &url),
            ("ALL_PROXY", &url),
        ],
        "",
    )
    .args(["pull", "-q", "--dest"])
    .arg(world().temp_dir().join("store"))
    .arg(&name))
    .expect(0);
    assert_eq!(proxy.connections(), 0);
}

/// A proxy that wants credentials: a 407 is the proxy's failure, named as such (exit 1), whether
/// it answers a `CONNECT` (HTTPS) or a request in absolute form (plain HTTP); a wrong password
/// is told apart from none; with `user:password@` in its URL the pull works, and the password
/// is in no output.
#[test]
fn a_proxy_asking_for_credentials() {
    pushed("proxies/auth", 9220);
    let (host, map) = world().plain().hidden_name();
    let proxy = HttpProxy::start(map.clone(), Some("carol:pr0xy-secret")).unwrap();
    let name = format!("{host}/proxies/auth:1");
    let bare = format!("http://{}", proxy.host());
    let scratch = world().temp_dir();
    let dest = scratch.join("store");
    let pull = |https: &str, http: &str| {
        run(
            with_proxy_env(&[("HTTPS_PROXY", https), ("HTTP_PROXY", http)], "")
                .args(["pull", "-v", "--insecure-allow-http", "--dest"])
                .arg(&dest)
                .arg(&name),
        )
    };
    let refused = |stderr: &str, proxy: &str, why: &str| assert_refused(stderr, proxy, 407, why);
    let out = pull(&bare, &bare).expect(1);
    refused(&out.stderr, &bare, "wants credentials");
    assert!(!proxy.connects().is_empty());

    // HTTPS through an open proxy (where the plain registry fails the handshake), plain HTTP
    // through this one: its 407 to the absolute-form request is what the user is told.
    let open = HttpProxy::start(map, None).unwrap();
    let open_url = format!("http://{}", open.host());
    let forwarded_before = proxy.forwarded().len();
    let out = pull(&open_url, &bare).expect(1);
    refused(&out.stderr, &bare, "wants credentials");
    assert!(proxy.forwarded().len() > forwarded_before);
    assert!(!open.connects().is_empty());

    let wrong = format!("http://carol:not-it@{}", proxy.host());
    let out = pull(&open_url, &wrong).expect(1);
    refused(&out.stderr, &bare, "refused the credentials");
    assert_no_secret("not-it", &[&out.stdout, &out.stderr], &scratch);

    let with = format!("http://carol:pr0xy-secret@{}", proxy.host());
    let out = run(
        with_proxy_env(&[("HTTPS_PROXY", &with), ("HTTP_PROXY", &with)], "")
            .args(["pull", "-v", "--insecure-allow-http", "--dest"])
            .arg(&dest)
            .arg(&name),
    )
    .expect(0);
    entry(&dest, &name);
    assert_no_secret("pr0xy-secret", &[&out.stdout, &out.stderr], &dest);
    assert_via(&out.stderr, &bare);
}

/// TLS through the proxy: `CONNECT`, then the handshake with the registry itself, verified
/// against the test CA for the name the user wrote.
#[test]
fn a_tls_registry_through_the_proxy_is_verified_end_to_end() {
    pushed("proxies/tls", 9230);
    let (host, map) = world().tls().hidden_name();
    let proxy = HttpProxy::start(map, None).unwrap();
    let url = format!("http://{}", proxy.host());
    let name = format!("{host}/proxies/tls:1");
    let dest = world().temp_dir().join("store");
    run(with_proxy_env(&[("HTTPS_PROXY", &url)], "")
        .args(["pull", "-q", "--ca-cert"])
        .arg(world().ca_cert_path())
        .arg("--dest")
        .arg(&dest)
        .arg(&name))
    .expect(0);
    entry(&dest, &name);
    assert_only(&proxy.connects(), &host);
    // Without the CA the certificate is refused, through the proxy as directly.
    let out = run(with_proxy_env(&[("HTTPS_PROXY", &url)], "")
        .args(["pull", "--dest"])
        .arg(world().temp_dir().join("store"))
        .arg(&name))
    .expect(1);
    assert!(out.stderr.contains("UnknownIssuer"), "{}", out.stderr);
}

/// A SOCKS proxy (`socks5h://` in ALL_PROXY, as docker's docs show) carries the pull, the name
/// resolved by the proxy. Regression: ureq was built without its SOCKS support, and a SOCKS
/// proxy in the environment made imagec panic (exit 101).
#[test]
fn a_socks_proxy_carries_the_pull() {
    pushed("proxies/socks", 9240);
    let (host, map) = world().plain().hidden_name();
    let proxy = SocksProxy::start(map).unwrap();
    let url = format!("socks5h://{}", proxy.host());
    let name = format!("{host}/proxies/socks:1");
    let dest = world().temp_dir().join("store");
    let out = run(with_proxy_env(&[("ALL_PROXY", &url)], "")
        .args(["pull", "-v", "--insecure-allow-http", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    entry(&dest, &name);
    assert_only(&proxy.targets(), &host);
    assert_via(&out.stderr, &url);
}

/// A real squid, configured as corporate proxies are (Basic credentials required, `CONNECT`
/// to port 443 only, here also to the TLS registry's port): a plain-HTTP registry on another
/// port is pulled in absolute form (a `CONNECT` there is refused with 403, and HTTPS is not
/// the way in), a TLS one through `CONNECT` with the certificate verified end to end; without
/// credentials the 407 is squid's, named as the proxy's. Regression: plain HTTP went through
/// `CONNECT` too, which squid refused, so no plain-HTTP registry could be pulled through it.
#[test]
fn a_real_squid_carries_plain_http_and_tls_pulls() {
    let img = pushed("proxies/squid", 9250);
    let plain_port = world().plain().port();
    let tls_port = world().tls().port();
    let squid = Squid::start(
        &["registry.imagec.test"],
        Some(("carol", "sq-secret")),
        &[tls_port],
    )
    .unwrap();
    let with = format!("http://carol:sq-secret@{}", squid.host());
    let shown = format!("http://{}", squid.host());
    let scratch = world().temp_dir();

    let plain = format!("registry.imagec.test:{plain_port}/proxies/squid:1");
    let dest = scratch.join("plain");
    let out = run(
        with_proxy_env(&[("HTTPS_PROXY", &with), ("HTTP_PROXY", &with)], "")
            .args(["pull", "-v", "--insecure-allow-http", "--dest"])
            .arg(&dest)
            .arg(&plain),
    )
    .expect(0);
    entry(&dest, &plain);
    assert_no_secret("sq-secret", &[&out.stdout, &out.stderr], &scratch);
    let blob_gets = |log: &[support::squid::Access]| -> usize {
        log.iter()
            .filter(|a| a.method == "GET" && a.url.contains("/v2/proxies/squid/blobs/"))
            .count()
    };
    let blobs = img.layers.len() + 1;
    let log = squid.accesses_once(|log| blob_gets(log) >= blobs);
    assert_eq!(blob_gets(&log), blobs, "{log:?}");
    assert!(
        log.iter()
            .filter(|a| a.method == "GET" && a.url.contains("/v2/proxies/squid/blobs/"))
            .all(|a| a
                .url
                .starts_with(&format!("http://registry.imagec.test:{plain_port}/v2/"))
                && a.result.ends_with("/200")
                && a.user == "carol"),
        "{log:?}"
    );

    // Without --insecure-allow-http only HTTPS is tried: squid's 403 to the CONNECT is
    // explained.
    let out = run(
        with_proxy_env(&[("HTTPS_PROXY", &with), ("HTTP_PROXY", &with)], "")
            .args(["pull", "--dest"])
            .arg(scratch.join("refused"))
            .arg(&plain),
    )
    .expect(1);
    assert_refused(&out.stderr, &shown, 403, "CONNECT to port 443 only");

    let tls = format!("registry.imagec.test:{tls_port}/proxies/squid:1");
    let dest = scratch.join("tls");
    run(with_proxy_env(&[("HTTPS_PROXY", &with)], "")
        .args(["pull", "-q", "--ca-cert"])
        .arg(world().ca_cert_path())
        .arg("--dest")
        .arg(&dest)
        .arg(&tls))
    .expect(0);
    entry(&dest, &tls);
    // squid logs a tunnel when it closes, which may be just after imagec exits.
    let tunnel = format!("registry.imagec.test:{tls_port}");
    let tunnelled = |log: &[support::squid::Access]| {
        log.iter()
            .any(|a| a.method == "CONNECT" && a.url == tunnel && a.result.ends_with("/200"))
    };
    let log = squid.accesses_once(tunnelled);
    assert!(tunnelled(&log), "{log:?}");

    let bare = shown.clone();
    let out = run(
        with_proxy_env(&[("HTTPS_PROXY", &bare), ("HTTP_PROXY", &bare)], "")
            .args(["pull", "--insecure-allow-http", "--dest"])
            .arg(scratch.join("none"))
            .arg(&plain),
    )
    .expect(1);
    assert_refused(&out.stderr, &shown, 407, "wants credentials");
}

/// With both variables set to different proxies on an address that is not loopback, HTTPS
/// goes through HTTPS_PROXY's tunnel and nothing of it reaches HTTP_PROXY. Regression: ureq
/// reaches a CONNECT proxy by its `http://` URL through imagec's resolver and connector, which
/// sent that connection to HTTP_PROXY, with HTTPS_PROXY's credentials. (Both proxies listen on
/// 127.0.0.1; the test names them by the IPv4-mapped address `::ffff:127.0.0.1`, which imagec
/// does not take for loopback.)
#[test]
fn https_and_http_proxies_on_other_hosts_each_get_their_own_traffic() {
    pushed("proxies/two", 9260);
    let (host, map) = world().tls().hidden_name();
    let tunnel = HttpProxy::start(map.clone(), Some("t:tunnel-secret")).unwrap();
    let forward = HttpProxy::start(map, Some("f:forward-secret")).unwrap();
    let mapped = |p: &HttpProxy, creds: &str| {
        let port = p.host().rsplit(':').next().unwrap().to_string();
        format!("http://{creds}@[::ffff:127.0.0.1]:{port}")
    };
    let name = format!("{host}/proxies/two:1");
    let dest = world().temp_dir().join("store");
    let out = run(with_proxy_env(
        &[
            ("HTTPS_PROXY", &mapped(&tunnel, "t:tunnel-secret")),
            ("HTTP_PROXY", &mapped(&forward, "f:forward-secret")),
        ],
        "",
    )
    .args(["pull", "-v", "--ca-cert"])
    .arg(world().ca_cert_path())
    .arg("--dest")
    .arg(&dest)
    .arg(&name))
    .expect(0);
    entry(&dest, &name);
    assert_only(&tunnel.connects(), &host);
    assert_eq!(forward.connections(), 0, "{}", out.stderr);
    for secret in ["tunnel-secret", "forward-secret"] {
        assert_no_secret(secret, &[&out.stdout, &out.stderr], &dest);
    }
}
