//! A local playground: starts the registries the integration tests use (plain HTTP, Basic
//! auth, bearer tokens from a token server, TLS with a private CA) on loopback ports, pushes a
//! demo image to them, prints how to pull it in each setup, and runs until its standard input
//! closes. `scripts/demo` drives it; run it by hand with
//! `cargo run --example demo_registry` to try imagec against every auth setup.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, Write};

use support::*;

fn main() {
    let world = world();
    let plain = world.plain().host();
    let amd = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![layer_from_fixture("rootfs"), random_layer(1, 8_000_000)],
    );
    let arm = image(
        Format::Docker,
        "linux",
        "arm64/v8",
        vec![layer_from_fixture("rootfs"), random_layer(2, 8_000_000)],
    );
    for repo in ["demo/hello", "public/hello"] {
        push_index(&plain, repo, "1", &[&amd, &arm], Format::Docker);
    }
    // The amd64 image's content again as a legacy signed schema1 manifest, with a throwaway
    // step on top as old `docker build`s made them.
    let empty = support::schema1::empty_layer();
    for b in [&amd.layers[0], &amd.layers[1], &empty] {
        push_blob(&plain, "demo/legacy", b);
    }
    let steps = [
        support::schema1::Step {
            layer: &amd.layers[0],
            created_by: "#(nop) ADD file:rootfs in /",
            throwaway: false,
        },
        support::schema1::Step {
            layer: &amd.layers[1],
            created_by: "#(nop) ADD file:data in /",
            throwaway: false,
        },
        support::schema1::Step {
            layer: &empty,
            created_by: "#(nop) CMD [\"/bin/sh\"]",
            throwaway: true,
        },
    ];
    let payload = support::schema1::payload("demo/legacy", "1", "amd64", &steps);
    push_manifest_bytes(
        &plain,
        "demo/legacy",
        "1",
        support::schema1::SIGNED,
        &support::schema1::sign(&payload),
    );
    let ca = world.ca_cert_path().display().to_string();
    let lines = [
        format!("IMAGEC_DEMO_PLAIN={plain}/demo/hello:1"),
        format!("IMAGEC_DEMO_SCHEMA1={plain}/demo/legacy:1"),
        format!("IMAGEC_DEMO_BASIC={}/demo/hello:1", world.basic().host()),
        format!("IMAGEC_DEMO_TOKEN={}/demo/hello:1", world.token().host()),
        format!(
            "IMAGEC_DEMO_TOKEN_PUBLIC={}/public/hello:1",
            world.token().host()
        ),
        format!("IMAGEC_DEMO_TLS={}/demo/hello:1", world.tls().host()),
        format!("IMAGEC_DEMO_CA={ca}"),
        format!("IMAGEC_DEMO_USER={USER}"),
        format!("IMAGEC_DEMO_PASSWORD={PASSWORD}"),
    ];
    let mut out = std::io::stdout().lock();
    for l in &lines {
        let _ = writeln!(out, "{l}");
    }
    let _ = writeln!(out, "IMAGEC_DEMO_READY=1");
    let _ = out.flush();
    drop(out);
    // Serve until whoever started us closes our stdin (or we are killed).
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
}
