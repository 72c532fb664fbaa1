//! `imagec layers --files` against the real registry, on layers made by real tools (GNU tar,
//! Python's tarfile): what each layer adds, changes, deletes and makes opaque, and the bytes a
//! later layer hides (SPEC: layers --files).

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::*;

/// A directory tree from `(path, contents)` (a path ending in `/` is a directory).
fn tree(files: &[(&str, &[u8])]) -> std::path::PathBuf {
    let root = world().temp_dir().join("tree");
    std::fs::create_dir_all(&root).unwrap();
    for (path, data) in files {
        let p = root.join(path);
        if path.ends_with('/') {
            std::fs::create_dir_all(&p).unwrap();
        } else {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
        }
    }
    root
}

/// GNU tar of `dir`, as `docker build` layers look: `./` first, sorted, owner 0, mtime 0.
fn gnu_tar(dir: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "-C",
        ])
        .arg(dir)
        .args(["-cf", "-", "."])
        .output()
        .expect("GNU tar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn files(layer: &Value) -> Vec<(String, String, u64, String)> {
    layer["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["type"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
                f["change"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn entry(path: &str, kind: &str, size: u64, change: &str) -> (String, String, u64, String) {
    (path.into(), kind.into(), size, change.into())
}

#[test]
fn layers_files_lists_changes_whiteouts_opaque_dirs_and_wasted_bytes() {
    let base = gnu_tar(&tree(&[
        ("etc/config", &[b'c'; 100]),
        ("var/cache/big", &[b'b'; 1000]),
        ("opt/app/lib", &[b'l'; 50]),
        ("bin/tool", &[b't'; 10]),
    ]));
    // Whiteouts are plain empty files in a layer, as docker and buildah write them.
    let upper = gnu_tar(&tree(&[
        ("etc/config", &[b'C'; 120]),
        ("var/cache/.wh.big", b""),
        ("opt/app/.wh..wh..opq", b""),
        ("opt/app/new", &[b'n'; 7]),
    ]));
    let top =
        python_tar("add('var/cache/big', data=b'small')\nadd('bin', 'symlink', link='usr/bin')");
    let (name, img) = push_tars("files/three", &[base, upper, top]);
    let dest = world().temp_dir().join("store");

    let out = run(imagec()
        .args(["layers", "--files", "--json", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    let doc = out.json();
    let layers = doc.as_array().unwrap();
    assert_eq!(layers.len(), 3);
    // The layers rows are those of `layers --json`, with files and wasted_bytes added.
    for (l, blob) in layers.iter().zip(&img.layers) {
        assert_eq!(l["digest"], blob.digest.as_str());
        assert_eq!(l["diff_id"].as_str().map(str::len), Some(71));
    }
    assert_eq!(
        files(&layers[0]),
        [
            entry("bin", "dir", 0, "added"),
            entry("bin/tool", "file", 10, "added"),
            entry("etc", "dir", 0, "added"),
            entry("etc/config", "file", 100, "added"),
            entry("opt", "dir", 0, "added"),
            entry("opt/app", "dir", 0, "added"),
            entry("opt/app/lib", "file", 50, "added"),
            entry("var", "dir", 0, "added"),
            entry("var/cache", "dir", 0, "added"),
            entry("var/cache/big", "file", 1000, "added"),
        ]
    );
    // Whiteouts first (they apply to the layers below, wherever the tar has them), each once,
    // under the path it deletes; then the entries.
    assert_eq!(
        files(&layers[1]),
        [
            entry("opt/app", "dir", 0, "opaque"),
            entry("var/cache/big", "file", 0, "deleted"),
            entry("etc", "dir", 0, "modified"),
            entry("etc/config", "file", 120, "modified"),
            entry("opt", "dir", 0, "modified"),
            entry("opt/app", "dir", 0, "modified"),
            entry("opt/app/new", "file", 7, "added"),
            entry("var", "dir", 0, "modified"),
            entry("var/cache", "dir", 0, "modified"),
        ]
    );
    assert_eq!(
        files(&layers[2]),
        [
            // Deleted below, put back here: added (as docker diff and dive show it).
            entry("var/cache/big", "file", 5, "added"),
            // A directory of layer 0 replaced by a symlink.
            entry("bin", "symlink", 0, "modified"),
        ]
    );
    // Layer 0's config (100) replaced, big (1000) deleted, lib (50) under an opaque directory,
    // bin/tool (10) under a directory a symlink replaced.
    let wasted: Vec<u64> = layers
        .iter()
        .map(|l| l["wasted_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(wasted, [1160, 0, 0]);

    // The layers are in the store now: the table needs no blob from the registry.
    let before = world().plain().count("GET", "/files/three/blobs/");
    let out = run(imagec()
        .args(["layers", "--files", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    assert_eq!(world().plain().count("GET", "/files/three/blobs/"), before);
    let text = out.stdout;
    assert!(text.contains("  D  -      var/cache/big"), "{text}");
    assert!(text.contains("  O  -      opt/app/"), "{text}");
    assert!(text.contains("  M  120 B  etc/config"), "{text}");
    assert!(
        text.contains("  (1.2 kB of this layer is hidden by later layers)"),
        "{text}"
    );
    assert!(
        text.lines().last().unwrap()
            == "7 files in 3 layers, 1.3 kB in all, 1.2 kB wasted (shipped but hidden by a later layer)",
        "{text}"
    );
}

/// TARmageddon's shape (CVE-2025-62518): a PAX `size` that disagrees with the header's makes
/// two readers see two different archives. And a PAX header of 2 MiB: bounded, refused.
#[test]
fn hostile_tar_headers_are_refused_naming_the_layer() {
    let smuggler = pax_size_smuggler();
    // Python's tarfile writes a PAX header for a long name.
    let huge = python_tar("add('a' * (2 << 20), data=b'x')");
    for (repo, layer, needle) in [
        (
            "files/smuggler",
            smuggler,
            "PAX size (0) disagrees with its header's (5)",
        ),
        ("files/huge-pax", huge, "an extended header of 2097"),
    ] {
        let (name, img) = push_tars(repo, &[layer]);
        let out = run(imagec()
            .args(["layers", "--files", "--dest"])
            .arg(world().temp_dir().join("store"))
            .arg(&name))
        .expect(1);
        assert!(out.stderr.contains(needle), "{}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("layer {}", img.layers[0].digest)),
            "{}",
            out.stderr
        );
        assert_eq!(out.stdout, "");
    }
}
