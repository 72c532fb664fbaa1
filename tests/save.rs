//! `imagec save` against the real registry, read back by the tools users load archives with:
//! skopeo (`docker-archive:`, `oci-archive:`), podman (`load`, vfs storage) and docker (`load`,
//! a private dockerd), with two images sharing a base layer (SPEC: save).

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

fn two_images_sharing_a_base(repo: &str) -> (String, String, Image, Image) {
    let base = layer_from_fixture("rootfs");
    let a = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![base.clone(), random_layer(8100, 20_000)],
    );
    let b = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![base, random_layer(8101, 30_000)],
    );
    let reg = world().plain().host();
    push_image(&reg, repo, "a", &a);
    push_image(&reg, repo, "b", &b);
    (format!("{reg}/{repo}:a"), format!("{reg}/{repo}:b"), a, b)
}

fn tar_names(file: &Path) -> Vec<String> {
    let out = Command::new("tar").arg("-tf").arg(file).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn save_writes_one_archive_that_skopeo_and_podman_load() {
    let (na, nb, a, b) = two_images_sharing_a_base("save/two");
    let dest = world().temp_dir().join("store");
    let file = world().temp_dir().join("images.tar");
    let out = run(imagec()
        .args(["save", "--dest"])
        .arg(&dest)
        .arg("-o")
        .arg(&file)
        .arg(&na)
        .arg(&nb))
    .expect(0);
    assert!(out.stderr.contains("Saved 2 images to"), "{}", out.stderr);

    // Every blob once: the shared base layer is written one time.
    let names = tar_names(&file);
    let base = format!("blobs/sha256/{}", &a.layers[0].digest["sha256:".len()..]);
    assert_eq!(names.iter().filter(|n| **n == base).count(), 1, "{names:?}");
    for n in ["oci-layout", "index.json", "manifest.json", "repositories"] {
        assert!(names.iter().any(|x| x == n), "{n} missing: {names:?}");
    }
    // The log says so too: one stage line over every blob, one line per blob as it starts.
    let blobs = names
        .iter()
        .filter(|n| n.starts_with("blobs/sha256/") && n.len() > "blobs/sha256/".len())
        .count();
    assert!(
        out.stderr.contains(&format!("\nsaving {blobs} blobs (")),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr.matches(": saving ").count(),
        blobs,
        "{}",
        out.stderr
    );

    // skopeo reads it as a docker archive (by name) and as an OCI archive (by reference).
    let archive = file.display().to_string();
    for (name, img) in [(&na, &a), (&nb, &b)] {
        let docker: serde_json::Value = serde_json::from_str(&oracle(
            "skopeo",
            &["inspect", &format!("docker-archive:{archive}:{name}")],
        ))
        .unwrap();
        let layers: Vec<&str> = docker["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        // skopeo names docker-archive layers by their diff_ids.
        let want: Vec<&str> = img.diff_ids.iter().map(String::as_str).collect();
        assert_eq!(layers, want, "{name}");
        let oci: serde_json::Value = serde_json::from_str(&oracle(
            "skopeo",
            &["inspect", &format!("oci-archive:{archive}:{name}")],
        ))
        .unwrap();
        let want: Vec<&str> = img.layers.iter().map(|l| l.digest.as_str()).collect();
        let layers: Vec<&str> = oci["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(layers, want, "{name}");
    }
    // A round trip: skopeo copies the docker archive into a layout (checking the layers
    // against the diff_ids as it goes).
    let layout = world().temp_dir().join("copied");
    oracle(
        "skopeo",
        &[
            "copy",
            &format!("docker-archive:{archive}:{na}"),
            &format!("oci:{}:x", layout.display()),
        ],
    );

    // podman loads both images, tagged.
    let storage = world().temp_dir();
    let podman = |args: &[&str]| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(storage.join("root"))
            .arg("--runroot")
            .arg(storage.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--events-backend",
                "none",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .args(args)
            .env("HOME", &storage);
        let out = c
            .output()
            .expect("podman is needed by the tests (see .ci/run)");
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let loaded = podman(&["load", "-i", &archive]);
    assert!(loaded.contains(&format!("Loaded image: {na}")), "{loaded}");
    assert!(loaded.contains(&format!("Loaded image: {nb}")), "{loaded}");
    let listed = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort();
    assert_eq!(listed, [na.as_str(), nb.as_str()]);
}

#[test]
fn save_to_a_pipe_and_what_a_failure_leaves() {
    let (na, _, _, _) = two_images_sharing_a_base("save/pipe");
    let dest = world().temp_dir().join("store");
    let file = world().temp_dir().join("a.tar");
    run(imagec()
        .args(["save", "-q", "--dest"])
        .arg(&dest)
        .arg("-o")
        .arg(&file)
        .arg(&na))
    .expect(0);
    // `-o -`: the same bytes on stdout.
    let out = imagec()
        .args(["save", "-q", "--dest"])
        .arg(&dest)
        .args(["-o", "-"])
        .arg(&na)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, std::fs::read(&file).unwrap());

    // A reference that cannot be saved: exit 4, the existing file untouched, no temp file left.
    let before = std::fs::read(&file).unwrap();
    let missing = format!("{}/save/none-such:1", world().plain().host());
    run(imagec()
        .args(["save", "--dest"])
        .arg(&dest)
        .arg("-o")
        .arg(&file)
        .arg(&na)
        .arg(&missing))
    .expect(4);
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let dir = file.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["a.tar"], "{left:?}");
}

/// Ctrl-C stops a save at its next chunk with exit 130 (not at the forced exit two seconds
/// later): here while the archive goes to a pipe that is read slowly.
#[test]
fn ctrl_c_stops_a_save_at_the_next_chunk() {
    use std::io::Read;
    push_one_layer("save/interrupted", 4100, 40_000_000);
    let name = format!("{}/save/interrupted:1", world().plain().host());
    let dest = world().temp_dir().join("store");
    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    let mut child = imagec()
        .args(["save", "--dest"])
        .arg(&dest)
        .args(["-o", "-"])
        .arg(&name)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Into the layer's bytes (the manifest and config come first).
    let mut first = vec![0u8; 1 << 20];
    stdout.read_exact(&mut first).unwrap();
    let kill = std::process::Command::new("sh")
        .args(["-c", "kill -INT \"$0\"", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // Give the handler its moment, then let the writer go on to its next chunk.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        start.elapsed() < std::time::Duration::from_millis(1500),
        "{:?}: {stderr}",
        start.elapsed()
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        first.len() + rest.len() < 30_000_000,
        "the whole archive was written: {} bytes",
        first.len() + rest.len()
    );
}

/// A private Docker daemon for one test: its own data root, exec root and socket, vfs storage,
/// no networking. Stopped (SIGTERM, then SIGKILL) when dropped.
struct Dockerd {
    child: std::process::Child,
    socket: String,
    made_run_docker: bool,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dockerd = ["/usr/sbin/dockerd", "/usr/bin/dockerd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("dockerd is needed by the tests (Debian's docker.io; see .ci/run)");
        let root = world().temp_dir();
        let socket = format!("unix://{}", root.join("d.sock").display());
        // dockerd makes /run/docker/plugins whatever --exec-root says: removed again if new.
        let made_run_docker = !Path::new("/run/docker").exists();
        let child = Command::new(dockerd)
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("docker.pid"))
            .args(["-H", &socket])
            .args([
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(root.join("dockerd.log")).unwrap())
            .spawn()
            .expect("starting dockerd");
        let d = Dockerd {
            child,
            socket,
            made_run_docker,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !d.docker(&["info"]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "dockerd did not answer: {}",
                std::fs::read_to_string(root.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        d
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .args(["-H", &self.socket])
            .args(args)
            .env("DOCKER_CONFIG", world().temp_dir())
            .output()
            .expect("docker (the client) is needed by the tests; see .ci/run")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.made_run_docker {
            let _ = std::fs::remove_dir_all("/run/docker");
        }
    }
}

/// `docker load` (a real daemon, started by the test) reads what save wrote: both tags, the
/// layers checked against the config's diff_ids by the daemon itself.
#[test]
fn docker_load_reads_the_archive() {
    let (na, nb, a, b) = two_images_sharing_a_base("save/docker");
    let file = world().temp_dir().join("images.tar");
    run(imagec()
        .args(["save", "-q", "--dest"])
        .arg(world().temp_dir().join("store"))
        .arg("-o")
        .arg(&file)
        .arg(&na)
        .arg(&nb))
    .expect(0);
    let docker = Dockerd::start();
    let out = docker.docker(&["load", "-i", file.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, img) in [(&na, &a), (&nb, &b)] {
        assert!(said.contains(&format!("Loaded image: {name}")), "{said}");
        let out = docker.docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            name,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let layers: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(layers, img.diff_ids, "{name}");
    }
}
