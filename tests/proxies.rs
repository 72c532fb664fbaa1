//! HTTP proxies as docker, skopeo and curl read them (SPEC: Networks), through a CONNECT proxy
//! the test starts that maps a name resolving nowhere (`registry.imagec.test`) to the real
//! registry: so a pull that works went through the proxy.

mod support;

use std::process::Command;

use support::http_proxy::HttpProxy;
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

/// `registry.imagec.test:PORT`, mapped by the proxy to the plain registry.
fn hidden_name() -> (String, Vec<(String, String)>) {
    let port = world()
        .plain()
        .host()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let name = format!("registry.imagec.test:{port}");
    let map = vec![(name.clone(), world().plain().host())];
    (name, map)
}

#[test]
fn a_registry_reachable_only_through_the_proxy_is_pulled_through_it() {
    pushed("proxies/through", 9200);
    let (host, map) = hidden_name();
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
    assert!(
        proxy.connects().iter().all(|t| *t == host),
        "{:?}",
        proxy.connects()
    );
    assert!(!proxy.connects().is_empty());
    assert!(
        out.stderr.contains(&format!("via proxy {url}")),
        "{}",
        out.stderr
    );

    // NO_PROXY naming the domain (leading dot: subdomains) sends it direct, where the name
    // resolves nowhere: exit 1, and the proxy saw nothing more.
    let before = proxy.connects().len();
    run(with_proxy_env(
        &[("HTTPS_PROXY", &url), ("HTTP_PROXY", &url)],
        "localhost,.imagec.test",
    )
    .args(["pull", "--insecure-allow-http", "--retries", "1", "--dest"])
    .arg(world().temp_dir().join("store"))
    .arg(&name))
    .expect(1);
    assert_eq!(proxy.connects().len(), before);
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
    assert_eq!(proxy.connects(), Vec::<String>::new());
}

/// A proxy that wants credentials: a 407 is the proxy's failure, named as such (exit 1); with
/// `user:password@` in its URL the pull works, and the password is in no output.
#[test]
fn a_proxy_asking_for_credentials() {
    pushed("proxies/auth", 9220);
    let (host, map) = hidden_name();
    let proxy = HttpProxy::start(map, Some("carol:pr0xy-secret")).unwrap();
    let name = format!("{host}/proxies/auth:1");
    let bare = format!("http://{}", proxy.host());
    let out = run(
        with_proxy_env(&[("HTTPS_PROXY", &bare), ("HTTP_PROXY", &bare)], "")
            .args(["pull", "--insecure-allow-http", "--dest"])
            .arg(world().temp_dir().join("store"))
            .arg(&name),
    )
    .expect(1);
    assert!(
        out.stderr.contains(&format!("proxy {bare} failed"))
            && out.stderr.contains("407")
            && out.stderr.contains("wants credentials"),
        "{}",
        out.stderr
    );

    let with = format!("http://carol:pr0xy-secret@{}", proxy.host());
    let dest = world().temp_dir().join("store");
    let out = run(
        with_proxy_env(&[("HTTPS_PROXY", &with), ("HTTP_PROXY", &with)], "")
            .args(["pull", "-v", "--insecure-allow-http", "--dest"])
            .arg(&dest)
            .arg(&name),
    )
    .expect(0);
    entry(&dest, &name);
    assert_no_secret("pr0xy-secret", &[&out.stdout, &out.stderr], &dest);
    assert!(
        out.stderr.contains(&format!("via proxy {bare}")),
        "{}",
        out.stderr
    );
}

/// TLS through the proxy: `CONNECT`, then the handshake with the registry itself, verified
/// against the test CA for the name the user wrote.
#[test]
fn a_tls_registry_through_the_proxy_is_verified_end_to_end() {
    pushed("proxies/tls", 9230);
    let port = world().tls().host().rsplit(':').next().unwrap().to_string();
    let host = format!("registry.imagec.test:{port}");
    let proxy = HttpProxy::start(vec![(host.clone(), world().tls().host())], None).unwrap();
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
    assert!(
        proxy.connects().iter().all(|t| *t == host),
        "{:?}",
        proxy.connects()
    );
    // Without the CA the certificate is refused, through the proxy as directly.
    let out = run(with_proxy_env(&[("HTTPS_PROXY", &url)], "")
        .args(["pull", "--dest"])
        .arg(world().temp_dir().join("store"))
        .arg(&name))
    .expect(1);
    assert!(out.stderr.contains("UnknownIssuer"), "{}", out.stderr);
}
