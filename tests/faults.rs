//! Faults a real registry cannot be made to produce, injected by the fault proxy in front of
//! it: a blob stream that stalls halfway; and a registry that accepts no connection.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
fn a_stalled_blob_resumes_with_range_and_moves_no_byte_twice() {
    // Regression: ureq reports a read timeout inside an io::Error of kind Other, which was
    // judged final: a stalled stream failed the pull instead of resuming.
    let reg = world().plain().host();
    let layer = random_layer(700, 2_000_000);
    let img = image(Format::Docker, "linux", "amd64", vec![layer.clone()]);
    push_image(&reg, "faults/stall", "1", &img);
    let proxy = support::faults::stall_halfway(&reg, &layer);
    let dest = world().temp_dir().join("store");
    let start = Instant::now();
    let out = run(imagec()
        .env("IMAGEC_STALL_TIMEOUT_MS", "1000")
        .args(["pull", "--dest"])
        .arg(&dest)
        .arg(format!("{}/faults/stall:1", proxy.host())))
    .expect(0);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert!(out.stderr.contains("retrying"), "{}", out.stderr);
    assert!(blob_path(&dest, &layer.digest).exists());
    let total = (img.config.data.len() + layer.data.len()) as u64;
    let moved = proxy.body_bytes("/");
    assert!(
        moved <= total + 1024,
        "{moved} bytes moved for {total}: a restart from zero"
    );
}

#[test]
fn a_registry_that_accepts_no_connection_fails_within_the_attempts() {
    // Regression: for loopback registries each attempt waited out the connect timeout on
    // HTTPS and then again on HTTP, doubling the time to give up (106 s instead of ~50 s).
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill the accept queue; nobody accepts, so later connection attempts get no answer.
    let _held: Vec<_> = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        })
        .collect();
    let start = Instant::now();
    let out = run(imagec()
        .env("IMAGEC_CONNECT_TIMEOUT_MS", "1000")
        .args(["pull", "-q", "--retries", "3", "--dest"])
        .arg(world().temp_dir())
        .arg(format!("{addr}/x/y:1")))
    .expect(1);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "{took:?}: fewer attempts than asked"
    );
    assert!(
        took < Duration::from_millis(5000),
        "{took:?}: the HTTP fallback doubled the wait"
    );
    assert!(out.stderr.contains(&addr.to_string()), "{}", out.stderr);
    assert!(out.stderr.contains("timeout"), "{}", out.stderr);
}
