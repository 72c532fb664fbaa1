//! Many references in one pull (SPEC: Shared cache and speed): the references are resolved
//! side by side (`--jobs` at a time), connections are reused across blobs, manifests and
//! references, and one token is fetched per scope even when two references of one repository
//! are resolved at the same moment.

mod support;

use support::http_proxy::HttpProxy;
use support::*;

/// imagec with every request sent through the HTTP proxy at `url` (loopback excepted).
fn via_proxy(url: &str) -> std::process::Command {
    let mut cmd = imagec();
    cmd.env("HTTP_PROXY", url)
        .env("HTTPS_PROXY", url)
        .env("NO_PROXY", "")
        .env("no_proxy", "");
    cmd
}

#[test]
fn many_images_in_one_pull_reuse_connections_and_fetch_one_token_per_scope() {
    // 6 repositories with 2 tags each, sharing a base layer: 12 references, 13 layers.
    let base = random_layer(9500, 50_000);
    let plain = world().plain().host();
    let mut refs = Vec::new();
    let (host, map) = world().token().hidden_name();
    for repo in 0..6u64 {
        for tag in 0..2u64 {
            let img = image(
                Format::Docker,
                "linux",
                "amd64",
                vec![base.clone(), random_layer(9501 + repo * 2 + tag, 20_000)],
            );
            push_image(
                &plain,
                &format!("public/many{repo}"),
                &tag.to_string(),
                &img,
            );
            refs.push(format!("{host}/public/many{repo}:{tag}"));
        }
    }
    // The registry is reachable only through a kept-alive HTTP proxy, which counts the
    // connections it is given (the token server, on loopback, is reached directly).
    let proxy = HttpProxy::start(map, None).unwrap();
    let url = format!("http://{}", proxy.host());
    let dest = world().temp_dir().join("store");
    let ts = world().token_server();
    run(via_proxy(&url)
        .args([
            "pull",
            "-q",
            "--insecure-allow-http",
            "--jobs",
            "4",
            "--dest",
        ])
        .arg(&dest)
        .args(&refs))
    .expect(0);
    for r in &refs {
        entry(&dest, r);
    }
    assert_store_consistent(&dest);
    for repo in 0..6 {
        let scope = format!("repository:public/many{repo}:");
        assert_eq!(ts.requests_for_scope(&scope), 1, "{scope}");
    }
    // 12 manifests, 12 configs and 13 layers (and the /v2/ probe) over a few connections:
    // at most 2 x --jobs + 4.
    let forwarded = proxy.forwarded().len();
    let connections = proxy.connections() - proxy.connects().len();
    assert!(forwarded >= 37, "{forwarded} requests forwarded");
    assert!(
        connections <= 2 * 4 + 4,
        "{connections} connections for {forwarded} requests"
    );
}

/// Regression: references were resolved one after the other, so on a distant registry 50 of
/// them waited 50 round trips before the first blob moved. Here 12 tags of one image (2
/// blobs) are resolved through a proxy that adds 250 ms to each manifest request: more than
/// 2 requests at once can only be manifests resolved side by side.
#[test]
fn references_are_resolved_side_by_side() {
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![random_layer(9520, 10_000)],
    );
    let plain = world().plain().host();
    for tag in 0..12 {
        push_image(&plain, "many/tags", &tag.to_string(), &img);
    }
    let proxy = support::faults::FaultProxy::start(&plain).unwrap();
    proxy.delay("/manifests/", std::time::Duration::from_millis(250));
    let refs: Vec<String> = (0..12)
        .map(|t| format!("{}/many/tags:{t}", proxy.host()))
        .collect();
    let dest = world().temp_dir().join("store");
    run(imagec()
        .args(["pull", "-q", "--jobs", "4", "--dest"])
        .arg(&dest)
        .args(&refs))
    .expect(0);
    assert_eq!(proxy.requests("GET", "/manifests/"), 12);
    assert!(
        proxy.peak_in_flight() >= 3,
        "at most {} requests at once",
        proxy.peak_in_flight()
    );
}

/// An image of 3 small random layers (4 blobs with its config).
fn three_layers(seed: u64) -> Image {
    let layers = (0..3).map(|i| random_layer(seed + i, 20_000)).collect();
    image(Format::Docker, "linux", "amd64", layers)
}

/// While a slow first manifest is in flight, the connections its blobs will take are opened
/// beside it: the blob requests come on connections accepted before the manifest was
/// answered, so none of them waits a handshake after it. (The proxy closes each connection
/// after one request, so every blob request is on a connection of its own.)
#[test]
fn blob_connections_are_opened_while_a_slow_manifest_is_in_flight() {
    let img = three_layers(9560);
    let plain = world().plain().host();
    push_image(&plain, "many/ahead", "1", &img);
    let proxy = support::faults::FaultProxy::start(&plain).unwrap();
    let held = std::time::Duration::from_millis(400);
    proxy.delay("/manifests/", held);
    let dest = world().temp_dir().join("store");
    run(imagec()
        .args(["pull", "-q", "--jobs", "4", "--dest"])
        .arg(&dest)
        .arg(format!("{}/many/ahead:1", proxy.host())))
    .expect(0);
    let timeline = proxy.timeline();
    let answered = timeline
        .iter()
        .find(|(m, p, _, _)| m == "GET" && p.contains("/manifests/"))
        .map(|(_, _, _, received)| *received + held)
        .expect("the manifest was asked for");
    let blobs: Vec<_> = timeline
        .iter()
        .filter(|(m, p, _, _)| m == "GET" && p.contains("/blobs/"))
        .collect();
    assert_eq!(blobs.len(), 4, "{timeline:?}");
    let ahead = blobs.iter().filter(|(_, _, a, _)| *a < answered).count();
    // --jobs 4: the connections of 3 transfers besides the manifest's, at least.
    assert!(
        ahead >= 3,
        "{ahead} of 4 blob requests came on connections opened before the manifest's answer"
    );
}

/// A TCP relay to `upstream` on a free loopback port that holds back its first connection's
/// answer: that connection's first read from the upstream (the TLS handshake's flight) goes
/// through at once, and what follows it (the first HTTP answer) waits `hold`. A TLS registry
/// far away, for its first request. Records when each connection was accepted. Each relay
/// thread ends with its connection; the accept loop when the relay is dropped (or after
/// [`RELAY_LIFE`]).
struct SlowFirstRelay {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

const RELAY_LIFE: std::time::Duration = std::time::Duration::from_secs(60);

impl SlowFirstRelay {
    fn start(upstream: String, hold: std::time::Duration) -> SlowFirstRelay {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (log, stopped) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let until = std::time::Instant::now() + RELAY_LIFE;
            while std::time::Instant::now() < until && !stopped.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    continue;
                };
                let first = {
                    let mut log = log.lock().unwrap();
                    log.push(std::time::Instant::now());
                    log.len() == 1
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                // `hold_after`: reads to pass before the one held (None: none held).
                let copy = |mut from: TcpStream, mut to: TcpStream, hold_after: Option<usize>| {
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        let _ = from.set_read_timeout(Some(RELAY_LIFE));
                        let mut reads = 0;
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            if hold_after == Some(reads) {
                                std::thread::sleep(hold);
                            }
                            reads += 1;
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    })
                };
                copy(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    None,
                );
                copy(server, client, first.then_some(1));
            }
        });
        SlowFirstRelay {
            addr,
            accepted,
            stop,
        }
    }
}

impl Drop for SlowFirstRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The same over TLS: TLS is set up on the connections opened ahead (they are plain TCP until
/// a transfer takes one), with the private CA, and the pull completes over them.
#[test]
fn tls_is_set_up_on_connections_opened_ahead() {
    let img = three_layers(9570);
    push_image(&world().plain().host(), "many/ahead-tls", "1", &img);
    let held = std::time::Duration::from_millis(400);
    let relay = SlowFirstRelay::start(world().tls().host(), held);
    run(imagec()
        .args(["pull", "-q", "--jobs", "4", "--dest"])
        .arg(world().temp_dir().join("store"))
        .arg("--ca-cert")
        .arg(world().ca_cert_path())
        .arg(format!("{}/many/ahead-tls:1", relay.addr)))
    .expect(0);
    let accepted = relay.accepted.lock().unwrap().clone();
    // The manifest's answer came `held` after its connection at the earliest: the 3 other
    // transfers' connections were opened while it was held, and the 4 blobs (the config and
    // 3 layers) needed no other after it.
    let answered = accepted[0] + held;
    let before = accepted.iter().filter(|a| **a < answered).count();
    assert_eq!(before, 4, "{before} connections before the first answer");
    assert_eq!(accepted.len(), 4, "{} connections", accepted.len());
}

/// Regression: the `/v2/` probe's answer was dropped unread, which closed its connection, so
/// the first manifest request opened another. With one job, one connection carries the
/// probe, the manifest and the blobs.
#[test]
fn one_job_pulls_over_one_connection() {
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![random_layer(9530, 30_000), random_layer(9531, 10_000)],
    );
    push_image(&world().plain().host(), "public/one-connection", "1", &img);
    let (host, map) = world().token().hidden_name();
    let proxy = HttpProxy::start(map, None).unwrap();
    let url = format!("http://{}", proxy.host());
    run(via_proxy(&url)
        .args([
            "pull",
            "-q",
            "--insecure-allow-http",
            "--jobs",
            "1",
            "--dest",
        ])
        .arg(world().temp_dir().join("store"))
        .arg(format!("{host}/public/one-connection:1")))
    .expect(0);
    // The probe (a 401), the manifest, the config and two layers.
    assert_eq!(proxy.forwarded().len(), 5, "{:?}", proxy.forwarded());
    assert_eq!(proxy.connections() - proxy.connects().len(), 1);
}

/// Regression: the connection pool kept 3 idle connections per host (ureq's default), so with
/// `--jobs 8` every pause (between resolving and fetching, between two images) closed all but
/// 3, and the next wave opened them again: a round trip (or three, with TLS) each, for
/// nothing. Connections stay open for every job.
#[test]
fn every_job_keeps_its_connection() {
    let base = random_layer(9540, 40_000);
    let plain = world().plain().host();
    let mut refs = Vec::new();
    let (host, map) = world().token().hidden_name();
    for n in 0..10u64 {
        let img = image(
            Format::Docker,
            "linux",
            "amd64",
            vec![
                base.clone(),
                random_layer(9541 + n * 2, 30_000),
                random_layer(9542 + n * 2, 20_000),
            ],
        );
        push_image(&plain, &format!("public/keep{n}"), "1", &img);
        refs.push(format!("{host}/public/keep{n}:1"));
    }
    let proxy = HttpProxy::start(map, None).unwrap();
    let url = format!("http://{}", proxy.host());
    run(via_proxy(&url)
        .args([
            "pull",
            "-q",
            "--insecure-allow-http",
            "--jobs",
            "8",
            "--dest",
        ])
        .arg(world().temp_dir().join("store"))
        .args(&refs))
    .expect(0);
    // At most 8 requests are in flight at once, each worker's connection back in the pool
    // before its next request: 8 connections, and 1 of slack for a probe racing a worker.
    let forwarded = proxy.forwarded().len();
    let connections = proxy.connections() - proxy.connects().len();
    assert!(forwarded >= 41, "{forwarded} requests forwarded");
    assert!(
        connections <= 8 + 1,
        "{connections} connections for {forwarded} requests"
    );
}
