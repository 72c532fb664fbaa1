//! Interruptions and sharing: a pull killed with SIGKILL or stopped with Ctrl-C halfway through
//! a blob leaves a store that is still valid and a partial download the next run resumes; and
//! several imagec processes pulling into one store fetch each blob once and lose no entry.

mod support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Start a pull that will stall halfway through a blob (behind the stalling proxy).
fn spawn_pull(dest: &Path, name: &str) -> Child {
    imagec()
        .env("IMAGEC_STALL_TIMEOUT_MS", "60000")
        .args(["pull", "--dest"])
        .arg(dest)
        .arg(name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting imagec")
}

/// Wait until at least 40% of `layer` is in its partial file (killing the pull if it never is).
fn wait_for_partial(child: &mut Child, dest: &Path, layer: &Blob) {
    let partial = dest.join(".imagec/partial").join(&layer.digest[7..]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if have * 10 >= layer.data.len() as u64 * 4 {
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the partial file did not grow ({have} bytes)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_mid_blob_then_rerun_resumes_and_moves_the_image_about_once() {
    let reg = world().plain().host();
    let layer = random_layer(800, 8_000_000);
    let img = image(Format::Docker, "linux", "amd64", vec![layer.clone()]);
    push_image(&reg, "crash/kill", "1", &img);
    let proxy = support::faults::stall_halfway(&reg, &layer);
    let dest = world().temp_dir().join("store");
    let name = format!("{}/crash/kill:1", proxy.host());

    let mut child = spawn_pull(&dest, &name);
    wait_for_partial(&mut child, &dest, &layer);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !blob_path(&dest, &layer.digest).exists(),
        "a partial blob landed"
    );
    assert!(index(&dest)["manifests"].as_array().unwrap().is_empty());
    assert_store_consistent(&dest);

    let out = run(imagec().args(["pull", "--dest"]).arg(&dest).arg(&name)).expect(0);
    assert!(out.stderr.contains("resuming"), "{}", out.stderr);
    assert_store_consistent(&dest);
    entry(&dest, &name);
    let total = (img.config.data.len() + layer.data.len()) as u64;
    let moved = proxy.body_bytes("/");
    assert!(
        moved * 100 <= total * 125,
        "{moved} bytes moved for a {total}-byte image"
    );
    assert!(!dest
        .join(".imagec/partial")
        .join(&layer.digest[7..])
        .exists());
}

#[test]
fn ctrl_c_stops_with_130_and_keeps_the_partial() {
    let reg = world().plain().host();
    let layer = random_layer(801, 8_000_000);
    let img = image(Format::Docker, "linux", "amd64", vec![layer.clone()]);
    push_image(&reg, "crash/sigint", "1", &img);
    let proxy = support::faults::stall_halfway(&reg, &layer);
    let dest = world().temp_dir().join("store");
    let name = format!("{}/crash/sigint:1", proxy.host());

    let mut child = spawn_pull(&dest, &name);
    wait_for_partial(&mut child, &dest, &layer);
    let start = Instant::now();
    // The shell's builtin kill: no dependency on procps being installed.
    let kill = std::process::Command::new("sh")
        .args(["-c", "kill -INT \"$0\"", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    let partial = dest.join(".imagec/partial").join(&layer.digest[7..]);
    assert!(
        std::fs::metadata(&partial).unwrap().len() > 0,
        "the partial was kept"
    );
    assert!(!blob_path(&dest, &layer.digest).exists());
    assert_store_consistent(&dest);
    // The next pull finishes it.
    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    assert_store_consistent(&dest);
}

#[test]
fn processes_racing_on_one_store_fetch_each_blob_once_and_lose_no_entry() {
    let plain = world().plain();
    let reg = plain.host();
    for round in 0..4u64 {
        let repo = format!("crash/race-{round}");
        let layers: Vec<Blob> = (0..3)
            .map(|i| random_layer(900 + round * 10 + i, 1_500_000))
            .collect();
        let img = image(Format::Docker, "linux", "amd64", layers.clone());
        for tag in ["a", "b", "c"] {
            push_image(&reg, &repo, tag, &img);
        }
        let dest = world().temp_dir().join("store");
        let children: Vec<Child> = ["a", "b", "c"]
            .iter()
            .map(|tag| {
                imagec()
                    .args(["pull", "-q", "--dest"])
                    .arg(&dest)
                    .arg(format!("{reg}/{repo}:{tag}"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for b in std::iter::once(&img.config).chain(&layers) {
            let gets = plain.count("GET", &format!("/{repo}/blobs/{}", b.digest));
            assert_eq!(gets, 1, "round {round}: {} fetched {gets} times", b.digest);
        }
        for tag in ["a", "b", "c"] {
            entry(&dest, &format!("{reg}/{repo}:{tag}"));
        }
        assert_store_consistent(&dest);
    }
}
