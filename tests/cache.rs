//! The shared blob cache (SPEC: Shared cache and speed): stores that share one cache get each
//! blob over the wire once, as hardlinks on one filesystem, reflinks on XFS when a hardlink is
//! refused, copies on another filesystem; a partial download in the cache is resumed by a pull
//! into another store; `gc` of a store never touches the cache, and the cache's own gc keeps
//! what a store links or what was used lately.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use support::faults::FaultProxy;
use support::mount::Mount;
use support::*;

const MIB: usize = 1 << 20;

fn pushed(repo: &str, seed: u64, large: usize) -> Image {
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![random_layer(seed, large), random_layer(seed + 1, 300_000)],
    );
    push_image(&world().plain().host(), repo, "1", &img);
    img
}

/// The config and layers: what goes through the cache.
fn cached_blobs(img: &Image) -> Vec<&Blob> {
    std::iter::once(&img.config).chain(&img.layers).collect()
}

fn wire_size(img: &Image) -> u64 {
    cached_blobs(img).iter().map(|b| b.data.len() as u64).sum()
}

fn links(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .nlink()
}

fn pull(cache: &Path, dest: &Path, name: &str) -> Run {
    run(imagec()
        .args(["pull", "--json", "--cache-dir"])
        .arg(cache)
        .arg("--dest")
        .arg(dest)
        .arg(name))
}

/// How each layer came into the store, as `pull --json` says.
fn from_cache(out: &Run) -> Vec<serde_json::Value> {
    out.json_lines()[0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["from_cache"].clone())
        .collect()
}

fn gc(args: &[&str]) -> serde_json::Value {
    run(imagec().args(["gc", "--json"]).args(args))
        .expect(0)
        .json()
}

fn freed(report: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = report["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn two_stores_share_one_cache_and_each_blob_crosses_the_wire_once() {
    let img = pushed("cache/shared", 9400, 2 * MIB);
    let proxy = FaultProxy::start(&world().plain().host()).unwrap();
    let name = format!("{}/cache/shared:1", proxy.host());
    let dir = world().temp_dir();
    let (cache, a, b) = (dir.join("cache"), dir.join("a"), dir.join("b"));

    // The environment variable names the cache as well as the flag.
    let out = run(imagec()
        .env("IMAGEC_CACHE_DIR", &cache)
        .args(["pull", "--json", "--dest"])
        .arg(&a)
        .arg(&name))
    .expect(0);
    assert_eq!(from_cache(&out), vec![serde_json::Value::Null; 2]);
    assert_eq!(proxy.body_bytes("/blobs/"), wire_size(&img));
    let gets = proxy.requests("GET", "/blobs/");

    let out = pull(&cache, &b, &name).expect(0);
    assert_eq!(from_cache(&out), vec![serde_json::json!("hardlink"); 2]);
    assert_eq!(out.json_lines()[0]["bytes_downloaded"], 0);
    assert_eq!(
        proxy.requests("GET", "/blobs/"),
        gets,
        "no blob fetched again"
    );
    assert_eq!(proxy.body_bytes("/blobs/"), wire_size(&img));
    let human = run(imagec()
        .args(["pull", "--cache-dir"])
        .arg(&cache)
        .arg("--dest")
        .arg(dir.join("c"))
        .arg(&name))
    .expect(0);
    assert!(
        human.stderr.contains("2 from the cache") && human.stderr.contains("(hardlink)"),
        "{}",
        human.stderr
    );

    // Each store is a complete layout that other tools read; the cache is none.
    for store in [&a, &b] {
        assert_store_consistent(store);
        let inspected = skopeo_inspect(store, &name, &[]);
        assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2);
        for blob in cached_blobs(&img) {
            assert_eq!(links(&blob_path(store, &blob.digest)), 4, "{}", blob.digest);
        }
    }
    assert!(!cache.join("index.json").exists() && !cache.join("oci-layout").exists());
    let rootfs = umoci_unpack(&b, &name);
    assert!(rootfs.is_dir());

    // gc of a store unlinks its blobs and leaves the cache's, whatever IMAGEC_CACHE_DIR says.
    run(imagec().args(["rm", "--dest"]).arg(&a).arg(&name)).expect(0);
    let report = run(imagec()
        .env("IMAGEC_CACHE_DIR", &cache)
        .args(["gc", "--json", "--dest"])
        .arg(&a))
    .expect(0)
    .json();
    for blob in cached_blobs(&img) {
        assert!(freed(&report).contains(&blob.digest), "{report}");
        assert_eq!(links(&blob_path(&cache, &blob.digest)), 3);
        assert!(!blob_path(&a, &blob.digest).exists());
    }

    // The cache's gc keeps what a store still links, even at --keep-days 0.
    let cache_arg = cache.to_str().unwrap();
    let report = gc(&["--cache-dir", cache_arg, "--keep-days", "0"]);
    assert_eq!(freed(&report), Vec::<String>::new());
    // Unlinked but used today: kept for the default 7 days.
    std::fs::remove_dir_all(&b).unwrap();
    std::fs::remove_dir_all(dir.join("c")).unwrap();
    assert_eq!(
        freed(&gc(&["--cache-dir", cache_arg])),
        Vec::<String>::new()
    );
    // Unused for 10 days: collected (a dry run first, which deletes nothing).
    let ten_days_ago = SystemTime::now() - Duration::from_secs(10 * 86400);
    for blob in cached_blobs(&img) {
        std::fs::File::options()
            .write(true)
            .open(blob_path(&cache, &blob.digest))
            .unwrap()
            .set_modified(ten_days_ago)
            .unwrap();
    }
    let mut want: Vec<String> = cached_blobs(&img)
        .iter()
        .map(|b| b.digest.clone())
        .collect();
    want.sort();
    assert_eq!(freed(&gc(&["--cache-dir", cache_arg, "--dry-run"])), want);
    assert_eq!(blobs(&cache).len(), 3);
    assert_eq!(freed(&gc(&["--cache-dir", cache_arg])), want);
    assert_eq!(blobs(&cache), Vec::<String>::new());
}

/// Two pulls at once into two stores with one cache: the second waits for the first's
/// download of each blob (the cache's per-blob lock) and links it; nothing comes twice.
#[test]
fn two_processes_into_two_stores_fetch_each_blob_once() {
    let img = pushed("cache/concurrent", 9410, 3 * MIB);
    let proxy = FaultProxy::start(&world().plain().host()).unwrap();
    // A second and a half for the large layer: the two runs overlap.
    proxy.throttle(&format!("/blobs/{}", img.layers[0].digest), 2 * MIB as u64);
    let name = format!("{}/cache/concurrent:1", proxy.host());
    let dir = world().temp_dir();
    let cache = dir.join("cache");
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|store| {
            imagec()
                .args(["pull", "-q", "--cache-dir"])
                .arg(&cache)
                .arg("--dest")
                .arg(dir.join(store))
                .arg(&name)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(proxy.body_bytes("/blobs/"), wire_size(&img));
    for store in ["a", "b"] {
        let store = dir.join(store);
        entry(&store, &name);
        assert_store_consistent(&store);
        assert_eq!(links(&blob_path(&store, &img.layers[0].digest)), 3);
    }
}

/// A CI retry runs in a new workspace: a download killed halfway into the cache is resumed
/// by a pull into another store, and the blob crosses the wire about once.
#[test]
fn a_partial_download_in_the_cache_is_resumed_by_a_pull_into_another_store() {
    let img = pushed("cache/resumed", 9420, 8 * MIB);
    let big = &img.layers[0];
    let path = format!("/blobs/{}", big.digest);
    let slow = FaultProxy::start(&world().plain().host()).unwrap();
    slow.throttle(&path, 2 * MIB as u64);
    let dir = world().temp_dir();
    let cache = dir.join("cache");
    let partial = cache.join(".imagec/partial").join(&big.digest[7..]);
    let mut child = imagec()
        .args(["pull", "-q", "--cache-dir"])
        .arg(&cache)
        .arg("--dest")
        .arg(dir.join("first"))
        .arg(format!("{}/cache/resumed:1", slow.host()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 2 * MIB as u64 {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the download never reached 2 MiB in {}", partial.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!blob_path(&cache, &big.digest).exists());
    assert!(!blob_path(&dir.join("first"), &big.digest).exists());

    let fast = FaultProxy::start(&world().plain().host()).unwrap();
    let name = format!("{}/cache/resumed:1", fast.host());
    let second = dir.join("second");
    pull(&cache, &second, &name).expect(0);
    entry(&second, &name);
    assert_store_consistent(&second);
    assert!(fast.ranges(&path)[0].is_some(), "resumed with Range");
    let moved = slow.body_bytes(&path) + fast.body_bytes(&path);
    let size = big.data.len() as u64;
    assert!(moved * 10 <= size * 11, "{moved} bytes for {size}");
    assert!(!partial.exists());
}

/// A store on another filesystem than the cache (a tmpfs): the blobs are copied, complete
/// and verified, and each stays its own file.
#[test]
fn a_store_on_another_filesystem_gets_copies() {
    let img = pushed("cache/tmpfs", 9430, MIB);
    let host = world().plain().host();
    let name = format!("{host}/cache/tmpfs:1");
    let dir = world().temp_dir();
    let cache = dir.join("cache");
    let mnt = Mount::tmpfs(&dir.join("tmpfs"), 64);
    // Downloaded into the cache, then copied into the store.
    let first = mnt.path().join("first");
    let out = pull(&cache, &first, &name).expect(0);
    assert_eq!(from_cache(&out), vec![serde_json::Value::Null; 2]);
    // From the cache alone.
    let second = mnt.path().join("second");
    let out = pull(&cache, &second, &name).expect(0);
    assert_eq!(from_cache(&out), vec![serde_json::json!("copy"); 2]);
    for store in [&first, &second] {
        assert_store_consistent(store);
        skopeo_inspect(store, &name, &[]);
        for blob in cached_blobs(&img) {
            assert_eq!(links(&blob_path(store, &blob.digest)), 1);
        }
    }
    for blob in cached_blobs(&img) {
        assert_eq!(links(&blob_path(&cache, &blob.digest)), 1);
    }
    // Copies hold no link: the cache's gc can take them once unused (keep-days 0 here).
    let cache_arg = cache.to_str().unwrap();
    assert_eq!(
        freed(&gc(&["--cache-dir", cache_arg, "--keep-days", "0"])).len(),
        3
    );
    // The stores keep their copies.
    assert_store_consistent(&second);
}

/// A cache filled by root and used by another user, on XFS: the kernel refuses a hardlink to
/// root's file (fs.protected_hardlinks), so the blob is reflinked (shared extents, no bytes
/// copied); the cache is not writable by that user, so what it lacks is downloaded into the
/// user's store alone.
#[test]
fn another_user_reflinks_from_a_read_only_cache_on_xfs() {
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test mounts XFS and switches to the user nobody: run the suite as root (CI does)"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/fs/protected_hardlinks")
            .unwrap()
            .trim(),
        "1",
        "the test relies on fs.protected_hardlinks=1 (Debian's default)"
    );
    let base = random_layer(9440, MIB);
    let img = image(Format::Docker, "linux", "amd64", vec![base.clone()]);
    let host = world().plain().host();
    push_image(&host, "cache/base", "1", &img);
    let app = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![base.clone(), random_layer(9441, 200_000)],
    );
    push_image(&host, "cache/app", "1", &app);

    let dir = world().temp_dir();
    for d in dir.ancestors().skip(1).take(2) {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mnt = Mount::xfs(&dir.join("xfs"), 320);
    let cache = mnt.path().join("cache");
    pull(
        &cache,
        &mnt.path().join("root"),
        &format!("{host}/cache/base:1"),
    )
    .expect(0);

    let home = mnt.path().join("nobody");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let store = home.join("store");
    let name = format!("{host}/cache/app:1");
    let out = run(imagec_via(&AS_NOBODY)
        .args(["pull", "--json", "--cache-dir"])
        .arg(&cache)
        .arg("--dest")
        .arg(&store)
        .arg(&name))
    .expect(0);
    assert_eq!(
        from_cache(&out),
        vec![serde_json::json!("reflink"), serde_json::Value::Null]
    );
    assert!(
        out.stderr.contains("is not writable by this user"),
        "{}",
        out.stderr
    );
    let base_in_store = blob_path(&store, &base.digest);
    assert_eq!(links(&base_in_store), 1);
    assert_eq!(
        std::fs::metadata(&base_in_store).unwrap().uid(),
        65534,
        "the user's own file"
    );
    let extents = std::process::Command::new("filefrag")
        .arg("-v")
        .arg(&base_in_store)
        .output()
        .unwrap();
    let extents = String::from_utf8_lossy(&extents.stdout);
    assert!(extents.contains("shared"), "not a reflink:\n{extents}");
    // The new layer went to the user's store only.
    assert!(blob_path(&store, &app.layers[1].digest).exists());
    assert!(!blob_path(&cache, &app.layers[1].digest).exists());
    assert_store_consistent(&store);
    skopeo_inspect(&store, &name, &[]);
}

#[test]
fn a_cache_is_never_made_in_a_directory_holding_something_else() {
    let img = pushed("cache/misuse", 9450, 1000);
    let name = format!("{}/cache/misuse:1", world().plain().host());
    let dir = world().temp_dir();
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("notes.txt"), "mine").unwrap();
    let out = pull(&home, &dir.join("store"), &name).expect(1);
    assert!(
        out.stderr.contains("is not an imagec blob cache"),
        "{}",
        out.stderr
    );
    assert!(!home.join("blobs").exists());
    // A store and its own cache in one directory: refused either way round.
    let store = dir.join("store2");
    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(&store)
        .arg(&name))
    .expect(0);
    let out = pull(&store, &store, &name).expect(2);
    assert!(out.stderr.contains("is the store itself"), "{}", out.stderr);
    // Also when neither exists yet: nothing is made.
    let new = dir.join("new");
    pull(&new, &new, &name).expect(2);
    assert!(!new.exists());
    // A layout given as another store's cache is refused, and left as it was.
    let out = pull(&store, &dir.join("store4"), &name).expect(1);
    assert!(
        out.stderr
            .contains("is an OCI image layout, not a blob cache"),
        "{}",
        out.stderr
    );
    assert!(!store.join("imagec-cache").exists());
    let cache = dir.join("cache");
    pull(&cache, &dir.join("store3"), &name).expect(0);
    let out = run(imagec().args(["gc", "--dest"]).arg(&cache)).expect(1);
    assert!(
        out.stderr.contains("is an imagec blob cache, not a store"),
        "{}",
        out.stderr
    );
    assert_eq!(
        blobs(&cache).len(),
        cached_blobs(&img).len(),
        "nothing collected"
    );
}

/// A cache shared by a group (its directories open to all) where one pull ran as root: the
/// lock files root made are not the next user's to write. Found in review: that user's pull
/// failed with "permission denied" on the lock. Such a blob now goes to the user's store alone.
#[test]
fn a_lock_another_user_made_sends_the_blob_to_the_store_alone() {
    use std::os::unix::fs::PermissionsExt;
    let img = pushed("cache/sudo-once", 9460, 200_000);
    let name = format!("{}/cache/sudo-once:1", world().plain().host());
    let dir = world().temp_dir();
    for d in dir.ancestors().skip(1).take(2) {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let cache = dir.join("cache");
    // Root made the cache (a pull once run with sudo), every lock stripe included; an admin
    // then opened its directories to everyone.
    pushed("cache/sudo-root", 9465, 1000);
    let root_name = format!("{}/cache/sudo-root:1", world().plain().host());
    pull(&cache, &dir.join("root-store"), &root_name).expect(0);
    let locks = cache.join(".imagec/locks");
    std::fs::create_dir_all(&locks).unwrap();
    for i in 0..4096 {
        let f = locks.join(format!("{i:03x}"));
        std::fs::write(&f, "").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    for d in [
        "",
        "blobs",
        "blobs/sha256",
        ".imagec",
        ".imagec/tmp",
        ".imagec/partial",
        ".imagec/locks",
    ] {
        std::fs::set_permissions(cache.join(d), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let store = dir.join("nobody-store");
    run(imagec_via(&AS_NOBODY)
        .args(["pull", "-q", "--cache-dir"])
        .arg(&cache)
        .arg("--dest")
        .arg(&store)
        .arg(&name))
    .expect(0);
    entry(&store, &name);
    assert_store_consistent(&store);
    for blob in cached_blobs(&img) {
        assert!(!blob_path(&cache, &blob.digest).exists());
    }
}

/// `gc --cache-dir` while a pull is downloading into the cache: it waits for the pull (the
/// cache's activity lock), so the download's partial is not taken for stale, even with
/// `--keep-days 0`, and what the pull linked is kept.
#[test]
fn cache_gc_waits_for_a_running_pull() {
    let img = pushed("cache/gc-waits", 9470, 2 * MIB);
    let big = &img.layers[0];
    let proxy = FaultProxy::start(&world().plain().host()).unwrap();
    // About two seconds for the large layer.
    proxy.throttle(&format!("/blobs/{}", big.digest), MIB as u64);
    let name = format!("{}/cache/gc-waits:1", proxy.host());
    let dir = world().temp_dir();
    let cache = dir.join("cache");
    let store = dir.join("store");
    let mut child = imagec()
        .args(["pull", "-q", "--cache-dir"])
        .arg(&cache)
        .arg("--dest")
        .arg(&store)
        .arg(&name)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let partial = cache.join(".imagec/partial").join(&big.digest[7..]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) == 0 {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the download never started in {}", partial.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = gc(&["--cache-dir", cache.to_str().unwrap(), "--keep-days", "0"]);
    // The pull lets go of the cache after writing its index (not when its process exits,
    // which a loaded machine may delay past gc's return): the entry is there the moment gc
    // returns.
    let index = std::fs::read_to_string(store.join("index.json")).unwrap_or_default();
    assert!(
        index.contains(&name),
        "gc returned while the pull was still running"
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(freed(&report), Vec::<String>::new(), "{report}");
    assert!(report["files"].as_array().unwrap().is_empty(), "{report}");
    entry(&store, &name);
    assert_store_consistent(&store);
    for blob in cached_blobs(&img) {
        assert_eq!(links(&blob_path(&cache, &blob.digest)), 2);
    }
}
