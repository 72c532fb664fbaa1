//! Running the real `imagec` and reading what a user sees: exit code, stdout, stderr, and the
//! store it wrote.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::image::sha256;

/// What one run of imagec showed.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with everything the run printed unless it exited with `code`.
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// stdout parsed as one JSON document per line.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", self.stdout))
    }
}

/// Run `cmd` to completion (stdin closed unless the command set it).
pub fn run(cmd: &mut Command) -> Run {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("running imagec");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run imagec with `args` and `password` on stdin.
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> Run {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running imagec");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("writing stdin");
    let out = child.wait_with_output().expect("waiting for imagec");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The store's `index.json`.
pub fn index(dest: &Path) -> serde_json::Value {
    let p = dest.join("index.json");
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_slice(&bytes).expect("index.json is JSON")
}

/// The entry of `index.json` named `name` (exactly one must exist).
#[track_caller]
pub fn entry(dest: &Path, name: &str) -> serde_json::Value {
    let idx = index(dest);
    let found: Vec<_> = idx["manifests"]
        .as_array()
        .expect("manifests array")
        .iter()
        .filter(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .cloned()
        .collect();
    assert_eq!(found.len(), 1, "entries named {name}: {idx:#}");
    found[0].clone()
}

pub fn blob_path(dest: &Path, digest: &str) -> PathBuf {
    dest.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

pub fn read_blob_json(dest: &Path, digest: &str) -> serde_json::Value {
    let p = blob_path(dest, digest);
    serde_json::from_slice(
        &std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display())),
    )
    .expect("blob is JSON")
}

/// Every file under `blobs/`, as digests.
pub fn blobs(dest: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dest.join("blobs/sha256"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Run an oracle tool (skopeo, umoci) and return stdout; panics with its stderr on failure.
#[track_caller]
pub fn oracle(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is needed by the tests (install it: see .ci/run): {e}")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `skopeo inspect oci:DEST:NAME` (with extra global flags first), parsed.
#[track_caller]
pub fn skopeo_inspect(dest: &Path, name: &str, flags: &[&str]) -> serde_json::Value {
    let target = format!("oci:{}:{name}", dest.display());
    let mut args: Vec<&str> = flags.to_vec();
    args.extend(["inspect", target.as_str()]);
    serde_json::from_str(&oracle("skopeo", &args)).expect("skopeo inspect prints JSON")
}

/// `umoci unpack --image DEST:NAME` into a fresh bundle; returns the bundle's rootfs.
#[track_caller]
pub fn umoci_unpack(dest: &Path, name: &str) -> PathBuf {
    let bundle = super::temp_dir().join("bundle");
    let image = format!("{}:{name}", dest.display());
    let bundle_arg = bundle.to_str().expect("a UTF-8 temp path");
    oracle(
        "umoci",
        &["unpack", "--rootless", "--image", &image, bundle_arg],
    );
    bundle.join("rootfs")
}

/// What a reader sees: index.json is valid and names only references whose blobs are all there.
pub fn assert_store_consistent(dest: &Path) {
    for e in index(dest)["manifests"].as_array().unwrap() {
        let m = read_blob_json(dest, e["digest"].as_str().unwrap());
        for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap()) {
            assert!(
                blob_path(dest, d["digest"].as_str().unwrap()).exists(),
                "{e} lacks {d}"
            );
        }
    }
    for d in blobs(dest) {
        assert_eq!(
            sha256(&std::fs::read(blob_path(dest, &d)).unwrap()),
            d,
            "unverified blob"
        );
    }
}

/// `secret` is in none of `outputs` and in no file under `dest`.
pub fn assert_no_secret(secret: &str, outputs: &[&str], dest: &std::path::Path) {
    for o in outputs {
        assert!(!o.contains(secret), "the secret is in the output:\n{o}");
    }
    let mut todo = vec![dest.to_path_buf()];
    while let Some(p) = todo.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        } else {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the secret is in {}",
                p.display()
            );
        }
    }
}
