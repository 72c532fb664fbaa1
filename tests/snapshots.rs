//! Whole-output snapshots of what people read most: the plain progress lines of a pull in CI,
//! the `--dry-run` plan, and the errors for a missing image, a refused login and a store gc
//! will not touch. Ports, temp paths and timings are filtered out; everything else (digests of
//! the deterministic test images included) is pinned, so a changed message is a reviewed
//! change (`INSTA_UPDATE=always cargo test --test snapshots`, then read the diff).

mod support;

use support::*;

/// Filters for what changes between runs: loopback ports, scratch paths, durations.
fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT");
    s.add_filter(r"/tmp/imagec-test-[^/\s]+/t-[^/\s]+", "[TMP]");
    s.add_filter(r"\d+(\.\d+)? (s|ms)\b", "[TIME]");
    s.add_filter(r"in [\d.]+ s\)", "in [TIME])");
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s
}

fn pushed(repo: &str, seed: u64) -> (String, Image) {
    let reg = world().plain().host();
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![random_layer(seed, 40_000), random_layer(seed + 1, 3_000)],
    );
    push_image(&reg, repo, "1", &img);
    (format!("{reg}/{repo}:1"), img)
}

#[test]
fn pull_in_ci_prints_plain_lines() {
    let (name, _) = pushed("snap/pull", 7000);
    let dest = world().temp_dir().join("store");
    let out = run(imagec().args(["pull", "--dest"]).arg(&dest).arg(&name)).expect(0);
    // The blobs come down in parallel: their lines may interleave, so each blob's lines are
    // pinned in order, and the blobs sorted by digest.
    let mut lines: Vec<&str> = out.stderr.lines().collect();
    let head: Vec<&str> = lines.drain(..2).collect();
    let tail = lines.pop().unwrap_or("");
    lines.sort_by_key(|l| l.split(':').next().unwrap_or("").to_string());
    let shown = format!(
        "{}\n{}\n{}\n--- stdout\n{}",
        head.join("\n"),
        lines.join("\n"),
        tail,
        out.stdout
    );
    settings().bind(|| insta::assert_snapshot!("pull_plain_lines", shown));
}

#[test]
fn dry_run_plan_table() {
    let (name, _) = pushed("snap/dry", 7010);
    let dest = world().temp_dir().join("store");
    let out = run(imagec()
        .args(["pull", "--dry-run", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    settings().bind(|| insta::assert_snapshot!("dry_run_table", out.stdout));
}

#[test]
fn errors_people_meet() {
    let reg = world().plain().host();
    let dest = world().temp_dir().join("store");
    let missing = run(imagec()
        .args(["pull", "--dest"])
        .arg(&dest)
        .arg(format!("{reg}/snap/none:1")))
    .expect(4);
    let refused = run(imagec()
        .args(["pull", "--dest"])
        .arg(&dest)
        .arg(format!("{}/snap/private:1", world().basic().host())))
    .expect(3);
    let usage = run(imagec().args(["pull", "Not/Valid:tag"])).expect(2);
    let shown = format!(
        "missing:\n{}\nrefused:\n{}\nusage:\n{}",
        missing.stderr, refused.stderr, usage.stderr
    );
    settings().bind(|| insta::assert_snapshot!("errors", shown));
}

#[test]
fn gc_refuses_an_entry_it_cannot_read() {
    let (name, img) = pushed("snap/gc", 7020);
    let dest = world().temp_dir().join("store");
    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    let mut idx = index(&dest);
    idx["manifests"][0]["digest"] = img.layers[1].digest.clone().into();
    std::fs::write(dest.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    let out = run(imagec().args(["gc", "--dest"]).arg(&dest)).expect(1);
    let images = run(imagec().args(["images", "--dest"]).arg(&dest)).expect(0);
    // The table pads to the widest cell, and a port's width varies between runs: the
    // columns are compared, not the padding.
    let table: String = images
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" | ") + "\n")
        .collect();
    let shown = format!(
        "gc:\n{}\nimages stderr:\n{}\nimages stdout (columns):\n{}",
        out.stderr, images.stderr, table
    );
    settings().bind(|| insta::assert_snapshot!("gc_refuses", shown));
}
