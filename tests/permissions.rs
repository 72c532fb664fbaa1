//! Who may read the store: its files and directories follow the umask, as skopeo's and `cp`'s
//! do (SPEC: Commands), so a store pulled as root in CI is readable by the user who reads it
//! next, and a strict umask keeps it private.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

fn under_umask(mask: &'static str) -> [&'static str; 4] {
    let script: &'static str = match mask {
        "022" => r#"umask 022 && exec "$@""#,
        "077" => r#"umask 077 && exec "$@""#,
        _ => unreachable!("a umask this file uses"),
    };
    ["sh", "-c", script, "sh"]
}

/// Every path under `root` with its permission bits, directories included.
fn modes(root: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.clone(), meta.permissions().mode() & 0o777, meta.is_dir()));
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    out
}

fn pull_under(mask: &'static str, repo: &str, seed: u64) -> (PathBuf, String) {
    let reg = world().plain().host();
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![layer_from_fixture("rootfs"), random_layer(seed, 50_000)],
    );
    push_image(&reg, repo, "1", &img);
    let dest = world().temp_dir().join("store");
    let name = format!("{reg}/{repo}:1");
    run(imagec_via(&under_umask(mask))
        .args(["pull", "-q", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    (dest, name)
}

#[track_caller]
fn assert_root() {
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    assert_eq!(
        uid.trim(),
        "0",
        "this test switches to the user nobody to read a root-made store: run the suite as root (CI does)"
    );
}

/// index.json, oci-layout and the manifest and config blobs were written 0600 (tempfile's
/// default) while layers were 0644: `imagec images` and `skopeo inspect` as another user failed
/// with permission denied.
#[test]
fn store_pulled_by_root_is_readable_by_another_user() {
    assert_root();
    let (dest, name) = pull_under("022", "perm/shared", 91);
    for (path, mode, is_dir) in modes(&dest) {
        let want = if is_dir { 0o755 } else { 0o644 };
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
    // The test's own scratch directories are 0700; open the way to the store (not the store).
    for dir in dest.ancestors().skip(1).take(2) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let out = run(imagec_via(&AS_NOBODY)
        .args(["images", "--json", "--dest"])
        .arg(&dest))
    .expect(0);
    let rows = out.json();
    assert_eq!(rows[0]["reference"], name.as_str(), "{}", out.stderr);
    assert_eq!(out.stderr, "");

    let mut skopeo = Command::new("setpriv");
    skopeo
        .args(&AS_NOBODY[1..])
        .args(["skopeo", "inspect"])
        .arg(format!("oci:{}:{name}", dest.display()))
        .env("HOME", "/tmp");
    let out = run(&mut skopeo).expect(0);
    assert!(out.stdout.contains("\"Layers\""), "{}", out.stdout);
}

#[test]
fn a_strict_umask_keeps_every_store_file_private() {
    let (dest, _) = pull_under("077", "perm/private", 92);
    for (path, mode, is_dir) in modes(&dest) {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
}
