//! Pulls through a fault-injecting proxy in front of the real registry (SPEC: Registry protocol,
//! transient and final failures; issue 5): a reset mid-blob resumes with Range, 503/429 are
//! retried within `--retries`, a flipped byte or a bad `Content-Range` fails without landing
//! anything, a server that ignores Range gets the blob again from zero, a 404 is final.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::faults::FaultProxy;
use support::*;

/// An image of `layers` pushed as `REPO:1`, a proxy in front of the registry, and a fresh DEST.
/// Returns the proxy, the name to pull through it, and DEST.
fn setup(repo: &str, img: &Image) -> (FaultProxy, String, PathBuf) {
    let reg = world().plain().host();
    push_image(&reg, repo, "1", img);
    let proxy = FaultProxy::start(&reg).expect("starting the fault proxy");
    let name = format!("{}/{repo}:1", proxy.host());
    (proxy, name, world().temp_dir().join("store"))
}

fn pull(dest: &Path, name: &str, args: &[&str]) -> Run {
    run(imagec()
        .args(["pull", "--dest"])
        .arg(dest)
        .args(args)
        .arg(name))
}

/// The path part that matches requests for this blob only.
fn blob(layer: &Blob) -> String {
    format!("/blobs/{}", layer.digest)
}

#[track_caller]
fn assert_landed_intact(dest: &Path, layer: &Blob) {
    let data = std::fs::read(blob_path(dest, &layer.digest)).expect("the blob is in the store");
    assert_eq!(data.len(), layer.data.len());
    assert_eq!(
        sha256(&data),
        layer.digest,
        "the stored blob is not the layer"
    );
}

/// Nothing of a failed pull is visible: no blob for `digest`, no `index.json` entry for
/// `name`, no temp file left behind.
#[track_caller]
fn assert_nothing_landed(dest: &Path, digest: &str, name: &str) {
    assert!(
        !blob_path(dest, digest).exists(),
        "{digest} landed under blobs/"
    );
    if dest.join("index.json").exists() {
        let idx = index(dest);
        let named = idx["manifests"].as_array().is_some_and(|entries| {
            entries
                .iter()
                .any(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        });
        assert!(!named, "index.json names {name}: {idx:#}");
    }
    let tmp = dest.join(".imagec/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
}

fn retry_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("retrying")).collect()
}

/// As one stream (`--chunk-size 0`) the blob resumes at the byte it reached; in 64 MiB
/// chunks (the default), the chunk that broke resumes where it stopped, and the other
/// is untouched.
#[test]
fn a_reset_at_60_percent_of_100_mb_resumes_with_range() {
    let layer = random_layer(5101, 100_000_000);
    let img = image(Format::Docker, "linux", "amd64", vec![layer.clone()]);
    let (proxy, name, dest) = setup("resilience/reset", &img);
    let size = layer.data.len() as u64;
    for (args, gets) in [(&["--chunk-size", "0"][..], 2), (&[][..], 3)] {
        let dest = dest.join(format!("{}", args.len()));
        let before_gets = proxy.requests("GET", &blob(&layer));
        let before = proxy.body_bytes(&blob(&layer));
        proxy.reset_after(&blob(&layer), size * 6 / 10, 1);

        let out = pull(&dest, &name, args).expect(0);
        assert_eq!(retry_lines(&out.stderr).len(), 1, "{}", out.stderr);
        assert_landed_intact(&dest, &layer);
        assert_eq!(
            proxy.requests("GET", &blob(&layer)) - before_gets,
            gets,
            "{args:?}"
        );
        let moved = proxy.body_bytes(&blob(&layer)) - before;
        let ratio = moved as f64 / size as f64;
        eprintln!(
            "reset at 60% ({args:?}): {moved} body bytes for a {size}-byte blob, ratio {ratio:.4}"
        );
        assert!(
            ratio <= 1.1,
            "{moved} bytes sent for {size}: restarted instead of resuming"
        );
    }
}

#[test]
fn a_503_with_retry_after_and_429s_are_retried_until_the_pull_succeeds() {
    let layer = random_layer(5102, 200_000);
    let img = image(Format::Docker, "linux", "amd64", vec![layer.clone()]);
    let (proxy, name, dest) = setup("resilience/busy", &img);
    proxy.fail_first("/manifests/", 503, Some("1"), 2);
    proxy.fail_first(&blob(&layer), 429, None, 2);

    // A non-zero base: with 0 the test setting skips every wait, Retry-After included.
    let start = Instant::now();
    let out = run(imagec()
        .env("IMAGEC_RETRY_BASE_MS", "1")
        .args(["pull", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    let took = start.elapsed();
    let retries = retry_lines(&out.stderr);
    assert_eq!(retries.len(), 4, "{}", out.stderr);
    assert_eq!(
        // "HTTP 503", not "503": the proxy's port can hold those digits (45035 did).
        retries.iter().filter(|l| l.contains("HTTP 503")).count(),
        2,
        "{}",
        out.stderr
    );
    assert_eq!(
        retries.iter().filter(|l| l.contains("HTTP 429")).count(),
        2,
        "{}",
        out.stderr
    );
    assert!(
        took >= Duration::from_secs(2),
        "{took:?}: Retry-After: 1 was not honoured twice"
    );
    assert_eq!(proxy.requests("GET", &blob(&layer)), 3);
    assert_landed_intact(&dest, &layer);
    entry(&dest, &name);
}

#[test]
fn retries_stop_after_the_attempts_asked_for() {
    let layer = random_layer(5103, 200_000);
    let img = image(Format::Docker, "linux", "amd64", vec![layer.clone()]);
    let (proxy, name, dest) = setup("resilience/down", &img);
    proxy.fail_first(&blob(&layer), 503, None, 3);

    let out = pull(&dest, &name, &["--retries", "2"]).expect(1);
    assert_eq!(proxy.requests("GET", &blob(&layer)), 2, "--retries 2");
    let error = out.stderr.trim_end().lines().last().unwrap_or("");
    assert!(error.contains("HTTP 503"), "{}", out.stderr);
    assert!(error.contains(&layer.digest), "{}", out.stderr);
    assert_nothing_landed(&dest, &layer.digest, &name);
}

#[test]
fn a_flipped_byte_fails_naming_the_digest_and_lands_nothing() {
    let layer = random_layer(5104, 1_000_000);
    let good = random_layer(5105, 100_000);
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![layer.clone(), good.clone()],
    );
    let (proxy, name, dest) = setup("resilience/flip", &img);
    proxy.flip_byte(&blob(&layer), 500_000);

    let out = pull(&dest, &name, &[]).expect(1);
    assert!(out.stderr.contains(&layer.digest), "{}", out.stderr);
    assert!(out.stderr.contains("digest mismatch"), "{}", out.stderr);
    // Final, not retried (the flip fires once: a retry would have succeeded).
    assert_eq!(proxy.requests("GET", &blob(&layer)), 1, "{}", out.stderr);
    assert!(retry_lines(&out.stderr).is_empty(), "{}", out.stderr);
    assert_nothing_landed(&dest, &layer.digest, &name);
}

#[test]
fn a_server_that_ignores_range_after_a_reset_sends_the_blob_again_from_zero() {
    let layer = random_layer(5106, 4_000_000);
    let img = image(Format::Docker, "linux", "amd64", vec![layer.clone()]);
    let (proxy, name, dest) = setup("resilience/norange", &img);
    let cut = 1_500_000;
    proxy.reset_after(&blob(&layer), cut, 1);
    proxy.ignore_range(&blob(&layer));

    let out = pull(&dest, &name, &[]).expect(0);
    // Said once in the log; the bars and the plain counters start again from zero.
    assert_eq!(
        out.stderr.matches("ignored the Range request").count(),
        1,
        "{}",
        out.stderr
    );
    assert_eq!(retry_lines(&out.stderr).len(), 1, "{}", out.stderr);
    assert_landed_intact(&dest, &layer);
    assert_eq!(proxy.requests("GET", &blob(&layer)), 2);
    // Said once in the log; the bars and the plain counters start again from zero.
    assert_eq!(
        out.stderr.matches("ignored the Range request").count(),
        1,
        "{}",
        out.stderr
    );
    // The cut part, then the whole blob once more.
    assert_eq!(
        proxy.body_bytes(&blob(&layer)),
        cut + layer.data.len() as u64
    );
    entry(&dest, &name);
}

#[test]
fn a_206_with_the_wrong_content_range_fails_and_lands_nothing() {
    let layer = random_layer(5107, 4_000_000);
    let img = image(Format::Docker, "linux", "amd64", vec![layer.clone()]);
    let (proxy, name, dest) = setup("resilience/badrange", &img);
    proxy.reset_after(&blob(&layer), 1_500_000, 1);
    proxy.bad_content_range(&blob(&layer), 10);

    let out = pull(&dest, &name, &[]).expect(1);
    let error = out.stderr.trim_end().lines().last().unwrap_or("");
    assert!(error.contains("Content-Range"), "{}", out.stderr);
    assert!(error.contains(&layer.digest), "{}", out.stderr);
    assert_nothing_landed(&dest, &layer.digest, &name);
}

#[test]
fn a_404_on_a_blob_is_final() {
    let layer = random_layer(5108, 200_000);
    let img = image(Format::Docker, "linux", "amd64", vec![layer.clone()]);
    let (proxy, name, dest) = setup("resilience/gone", &img);
    proxy.fail_first(&blob(&layer), 404, None, 10);

    let out = pull(&dest, &name, &[]).expect(4);
    assert_eq!(proxy.requests("GET", &blob(&layer)), 1, "{}", out.stderr);
    assert!(retry_lines(&out.stderr).is_empty(), "{}", out.stderr);
    assert!(out.stderr.contains(&layer.digest), "{}", out.stderr);
    assert_nothing_landed(&dest, &layer.digest, &name);
}

#[test]
fn a_reset_mid_manifest_is_retried() {
    // SPEC: connection resets and truncated bodies are transient. Regression: the manifest's
    // body used to be read after the retry loop had returned the response, so a reset in the
    // middle of it was final.
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![random_layer(5109, 1000)],
    );
    let (proxy, name, dest) = setup("resilience/manifest-reset", &img);
    proxy.reset_after("/manifests/", 10, 1);

    let out = pull(&dest, &name, &[]).expect(0);
    assert_eq!(retry_lines(&out.stderr).len(), 1, "{}", out.stderr);
    assert_eq!(proxy.requests("GET", "/manifests/"), 2);
}

#[test]
fn a_503_on_the_probe_is_retried() {
    // SPEC: 5xx is transient. Regression: the HTTP probe's 503 used to be dropped in favour of
    // the HTTPS probe's TLS error ("received corrupt message"), which is final. The probe is
    // the first request (the manifest), and `/v2/` where that says nothing of the login.
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![random_layer(5110, 1000)],
    );
    let (proxy, name, dest) = setup("resilience/probe-503", &img);
    proxy.fail_first("/v2/", 503, None, 1);

    let out = pull(&dest, &name, &[]).expect(0);
    assert_eq!(retry_lines(&out.stderr).len(), 1, "{}", out.stderr);
}

#[test]
fn a_stream_that_keeps_moving_forward_is_not_given_up_on() {
    // Regression (issue 5: finish whenever finishing is possible): the attempt count was not
    // reset by progress, so six resets in a row, each 300 kB further on, failed a pull that
    // was getting there with the default 5 attempts.
    let layer = random_layer(5109, 3_000_000);
    let img = image(Format::Docker, "linux", "amd64", vec![layer.clone()]);
    let (proxy, name, dest) = setup("resilience/flaky", &img);
    proxy.reset_after(&blob(&layer), 300_000, 6);
    let out = pull(&dest, &name, &[]).expect(0);
    assert_eq!(retry_lines(&out.stderr).len(), 6, "{}", out.stderr);
    assert_landed_intact(&dest, &layer);
}

/// Every reference in `names` has its own error line on stderr, saying each of `words`.
#[track_caller]
fn each_says(out: &Run, names: &[&str], words: &[&str]) {
    for n in names {
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(&format!("pulling {n}:")))
            .unwrap_or_else(|| panic!("no error for {n}: {}", out.stderr));
        for w in words {
            assert!(line.contains(w), "{line}");
        }
    }
}

#[test]
fn a_shared_blob_that_fails_gives_every_reference_its_cause() {
    // Regression: the first reference got the blob's error and the second an invented "blob was
    // not downloaded" (exit 1), where a 404 is exit 4 and a digest mismatch must be named.
    let shared = random_layer(5120, 150_000);
    let a = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![shared.clone(), random_layer(5121, 1000)],
    );
    let b = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![shared.clone(), random_layer(5122, 1000)],
    );
    let (proxy, na, dest) = setup("resilience/shared-a", &a);
    push_image(&world().plain().host(), "resilience/shared-b", "1", &b);
    let nb = format!("{}/resilience/shared-b:1", proxy.host());

    proxy.fail_first(&blob(&shared), 404, None, 1);
    let out = pull(&dest, &na, &[&nb]).expect(4);
    each_says(&out, &[&na, &nb], &["not found", &shared.digest]);
    assert_eq!(proxy.requests("GET", &blob(&shared)), 1, "{}", out.stderr);
    assert_nothing_landed(&dest, &shared.digest, &nb);

    let dest = world().temp_dir().join("store");
    proxy.flip_byte(&blob(&shared), 100_000);
    let out = pull(&dest, &na, &[&nb]).expect(1);
    each_says(&out, &[&na, &nb], &["digest mismatch", &shared.digest]);
}

#[test]
fn a_final_error_after_retries_says_how_many_attempts_and_how_long() {
    // Regression: after `--retries 3` of 503s the message was the last 503 alone.
    let layer = random_layer(5123, 200_000);
    let img = image(Format::Docker, "linux", "amd64", vec![layer.clone()]);
    let (proxy, name, dest) = setup("resilience/attempts", &img);
    let said = |out: &Run| {
        let error = out
            .stderr
            .trim_end()
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        let after = error
            .split("after 3 attempts in ")
            .nth(1)
            .unwrap_or_else(|| panic!("no attempt count: {}", out.stderr));
        let secs = after.split(" s: ").next().unwrap();
        assert!(secs.parse::<f64>().is_ok(), "{error}");
        error
    };
    // The manifest request,
    proxy.fail_first("/manifests/", 503, None, 3);
    let out = pull(&dest, &name, &["--retries", "3"]).expect(1);
    assert!(said(&out).contains("HTTP 503"), "{}", out.stderr);
    // a blob request,
    proxy.fail_first(&blob(&layer), 503, None, 3);
    let out = pull(&dest, &name, &["--retries", "3"]).expect(1);
    let error = said(&out);
    assert!(
        error.contains("HTTP 503") && error.contains(&layer.digest),
        "{error}"
    );
    // and a blob stream that breaks before any byte arrives, every time.
    proxy.reset_after(&blob(&layer), 0, 3);
    let out = pull(&dest, &name, &["--retries", "3"]).expect(1);
    assert!(said(&out).contains(&layer.digest), "{}", out.stderr);
    assert_nothing_landed(&dest, &layer.digest, &name);
    // One attempt is no retry: the error is said as it is.
    proxy.fail_first(&blob(&layer), 503, None, 1);
    let out = pull(&dest, &name, &["--retries", "1"]).expect(1);
    assert!(!out.stderr.contains("attempts in"), "{}", out.stderr);
}

#[test]
fn a_body_that_ends_early_without_an_error_is_resumed() {
    // A body delimited by the connection's close (no Content-Length) that stops short looks
    // like a whole one to the HTTP client; only its length tells. Regression: it failed the
    // pull as a size mismatch instead of being resumed with Range as a truncated body.
    let layer = random_layer(5124, 3_000_000);
    let img = image(Format::Docker, "linux", "amd64", vec![layer.clone()]);
    let (proxy, name, dest) = setup("resilience/short", &img);
    proxy.cut_short(&blob(&layer), 1_000_000, 1);

    let out = pull(&dest, &name, &[]).expect(0);
    assert_eq!(retry_lines(&out.stderr).len(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("ended at byte 1000000"),
        "{}",
        out.stderr
    );
    assert_landed_intact(&dest, &layer);
    assert_eq!(proxy.requests("GET", &blob(&layer)), 2);
    assert_eq!(proxy.body_bytes(&blob(&layer)), layer.data.len() as u64);
}

/// Docker Hub's rate limit: a 429 `TOOMANYREQUESTS` with `ratelimit-*` headers is retried, and
/// when the attempts run out the message says the registry is rate limiting, with its figures
/// and what helps; `-v` shows the headers on each manifest answer.
#[test]
fn a_rate_limit_says_so_with_the_registrys_figures() {
    let layer = random_layer(5110, 20_000);
    let img = image(Format::Docker, "linux", "amd64", vec![layer]);
    let (proxy, name, dest) = setup("resilience/rate-limited", &img);
    proxy.serve(
        "/manifests/",
        429,
        &[
            ("Content-Type", "application/json"),
            ("RateLimit-Limit", "100;w=21600"),
            ("RateLimit-Remaining", "0;w=21600"),
        ],
        br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#
            .to_vec(),
    );
    let out = run(imagec()
        .env("IMAGEC_RETRY_BASE_MS", "0")
        .args(["pull", "-v", "--retries", "2", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(1);
    let last = out.stderr.lines().last().unwrap_or_default();
    for needle in [
        "after 2 attempts",
        "HTTP 429: TOOMANYREQUESTS: You have reached your pull rate limit.",
        "the registry is rate limiting pulls (ratelimit-limit: 100;w=21600, ratelimit-remaining: 0;w=21600)",
        "log in (a higher limit), or pull through a mirror",
    ] {
        assert!(last.contains(needle), "{needle}: {}", out.stderr);
    }
    assert!(
        out.stderr
            .contains("rate limit: ratelimit-limit 100;w=21600, ratelimit-remaining 0;w=21600"),
        "{}",
        out.stderr
    );
}
