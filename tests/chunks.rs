//! Parallel Range chunks (SPEC: Shared cache and speed): a large blob comes down over several
//! connections through a proxy that caps each one, as a CDN does; a registry that ignores
//! `Range` or answers a wrong `Content-Range` gets one stream (and no Range again); a pull
//! killed with SIGKILL mid-blob resumes without fetching its chunks again.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::faults::FaultProxy;
use support::*;

const MIB: usize = 1 << 20;

/// An image of one large layer and one small one, pushed to the plain registry.
fn pushed(repo: &str, seed: u64, large: usize) -> Image {
    let img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![random_layer(seed, large), random_layer(seed + 1, 100_000)],
    );
    push_image(&world().plain().host(), repo, "1", &img);
    img
}

fn assert_blobs_verified(dest: &Path, img: &Image) {
    for l in &img.layers {
        assert_eq!(
            sha256(&std::fs::read(blob_path(dest, &l.digest)).unwrap()),
            l.digest
        );
    }
    assert_store_consistent(dest);
    let partial = dest.join(".imagec/partial");
    let left: Vec<_> = std::fs::read_dir(&partial)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", partial.display());
}

#[test]
fn a_large_blob_comes_down_in_parallel_chunks() {
    let img = pushed("chunks/parallel", 9300, 6 * MIB);
    let big = &img.layers[0];
    let path = format!("/blobs/{}", big.digest);
    let proxy = FaultProxy::start(&world().plain().host()).unwrap();
    // 1 MiB per connection takes half a second: the chunks overlap or the pull is slow.
    proxy.throttle(&path, 2 * MIB as u64);
    let name = format!("{}/chunks/parallel:1", proxy.host());
    let dest = world().temp_dir().join("store");
    run(imagec()
        .args(["pull", "-q", "--jobs", "4", "--chunk-size", "1M", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    entry(&dest, &name);
    assert_blobs_verified(&dest, &img);
    let mut ranges: Vec<String> = proxy.ranges(&path).into_iter().flatten().collect();
    ranges.sort_by_key(|r| {
        r.trim_start_matches("bytes=")
            .split('-')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
    });
    // A gzipped layer is a little over its data's size: a short last chunk.
    let size = big.data.len();
    let want: Vec<String> = (0..size.div_ceil(MIB))
        .map(|i| format!("bytes={}-{}", i * MIB, ((i + 1) * MIB).min(size) - 1))
        .collect();
    assert_eq!(ranges, want);
    assert_eq!(
        proxy.requests("GET", &path),
        want.len(),
        "one request per chunk"
    );
    assert!(
        proxy.peak_in_flight() >= 3,
        "at most {} requests at once",
        proxy.peak_in_flight()
    );
    // The bytes crossed once.
    assert_eq!(proxy.body_bytes(&path), big.data.len() as u64);
    // The small layer is below the chunk size: one plain GET.
    assert_eq!(
        proxy.ranges(&format!("/blobs/{}", img.layers[1].digest)),
        vec![None]
    );
}

/// A registry that answers a chunk's `Range` with the whole blob (200) or with another range
/// than asked: that blob comes as one stream, and no later blob of the registry is asked for
/// a chunk (containerd#11998, #12291).
#[test]
fn a_registry_ignoring_range_or_answering_another_range_gets_one_stream() {
    for (repo, seed, ignore) in [
        ("chunks/ignored", 9310, true),
        ("chunks/shifted", 9320, false),
    ] {
        let img = image(
            Format::Docker,
            "linux",
            "amd64",
            vec![
                random_layer(seed, 3 * MIB),
                random_layer(seed + 1, 2 * MIB + 5),
            ],
        );
        push_image(&world().plain().host(), repo, "1", &img);
        let proxy = FaultProxy::start(&world().plain().host()).unwrap();
        if ignore {
            proxy.ignore_range("/blobs/");
        } else {
            proxy.bad_content_range("/blobs/", 1);
        }
        let name = format!("{}/{repo}:1", proxy.host());
        let dest = world().temp_dir().join("store");
        // One blob at a time, largest first: the first one meets the refusal.
        run(imagec()
            .args(["pull", "-q", "--jobs", "1", "--chunk-size", "1M", "--dest"])
            .arg(&dest)
            .arg(&name))
        .expect(0);
        entry(&dest, &name);
        assert_blobs_verified(&dest, &img);
        let first = proxy.ranges(&format!("/blobs/{}", img.layers[0].digest));
        assert_eq!(
            first,
            vec![Some(format!("bytes=0-{}", MIB - 1)), None],
            "{repo}: the refused chunk, then one stream"
        );
        let second = proxy.ranges(&format!("/blobs/{}", img.layers[1].digest));
        assert_eq!(second, vec![None], "{repo}: no Range asked again");
    }
}

/// SIGKILL in the middle of a chunked blob: the next run fetches only what no chunk had
/// listed, and the bytes on the wire for the blob stay within 1.1x its size.
#[test]
fn killed_mid_chunks_then_rerun_fetches_only_the_missing_parts() {
    // 12 MiB: a kill can lose up to a listing step, a read buffer and what sits in the socket
    // per connection (about 4 x 200 KiB here); the 1.1x bound leaves 1.2 MiB for that.
    let img = pushed("chunks/killed", 9330, 12 * MIB);
    let big = &img.layers[0];
    let path = format!("/blobs/{}", big.digest);
    let slow = FaultProxy::start(&world().plain().host()).unwrap();
    slow.throttle(&path, MIB as u64);
    let dest = world().temp_dir().join("store");
    let pull = |proxy: &FaultProxy| {
        let mut cmd = imagec();
        cmd.args(["pull", "-q", "--jobs", "4", "--chunk-size", "1M", "--dest"])
            .arg(&dest)
            .arg(format!("{}/chunks/killed:1", proxy.host()));
        cmd
    };
    let mut child = pull(&slow)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the bookkeeping lists at least 2 MiB, then kill.
    let chunks = dest
        .join(".imagec/partial")
        .join(format!("{}.chunks", &big.digest[7..]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed: u64 = std::fs::read_to_string(&chunks)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(a, b)| Some(b.parse::<u64>().ok()? - a.parse::<u64>().ok()?))
            .sum();
        if listed >= 2 * MIB as u64 {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the chunks never got to 2 MiB ({listed} bytes listed)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !blob_path(&dest, &big.digest).exists(),
        "a partial blob landed"
    );
    assert_store_consistent(&dest);
    let listed: Vec<(u64, u64)> = std::fs::read_to_string(&chunks)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()))
        .collect();

    let fast = FaultProxy::start(&world().plain().host()).unwrap();
    run(&mut pull(&fast)).expect(0);
    entry(&dest, &format!("{}/chunks/killed:1", fast.host()));
    assert_blobs_verified(&dest, &img);
    let moved = slow.body_bytes(&path) + fast.body_bytes(&path);
    let size = big.data.len() as u64;
    assert!(
        moved * 10 <= size * 11,
        "{moved} bytes moved for a {size}-byte blob"
    );
    // The rerun asked for none of the bytes listed before the kill.
    for range in fast.ranges(&path) {
        let range = range.expect("the rerun fetched chunks, with Range");
        let (a, b) = range
            .trim_start_matches("bytes=")
            .split_once('-')
            .map(|(a, b)| (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap() + 1))
            .unwrap();
        assert!(
            listed.iter().all(|&(s, e)| b <= s || a >= e),
            "{range} overlaps what was listed: {listed:?}"
        );
    }
}

/// A registry that redirects blob GETs to a CDN (another origin, as S3- or CDN-backed
/// registries do): the redirect is followed for the first chunk only, the other chunks go to
/// the CDN's URL directly; when the CDN refuses one (its signature expired), the registry is
/// asked again and the new URL used from there.
#[test]
fn chunks_follow_a_cdn_redirect_once_per_blob() {
    for (repo, seed, expires) in [("chunks/cdn", 9340, false), ("chunks/expired", 9350, true)] {
        let img = pushed(repo, seed, 6 * MIB);
        let big = &img.layers[0];
        let path = format!("/blobs/{}", big.digest);
        let cdn = FaultProxy::start(&world().plain().host()).unwrap();
        let front = FaultProxy::start(&world().plain().host()).unwrap();
        let location = format!("http://{}/v2/{repo}{path}", cdn.host());
        front.serve(&path, 307, &[("Location", &location)], vec![]);
        if expires {
            // The third chunk request the CDN gets is refused.
            cdn.fail_after(&path, 403, 2, 1);
        }
        let name = format!("{}/{repo}:1", front.host());
        let dest = world().temp_dir().join("store");
        // One connection: chunks in order, so the count of each kind is exact.
        run(imagec()
            .args(["pull", "-q", "--jobs", "1", "--chunk-size", "1M", "--dest"])
            .arg(&dest)
            .arg(&name))
        .expect(0);
        entry(&dest, &name);
        assert_blobs_verified(&dest, &img);
        let chunks = big.data.len().div_ceil(MIB);
        let (redirects, at_cdn) = if expires {
            (2, chunks + 1)
        } else {
            (1, chunks)
        };
        assert_eq!(front.requests("GET", &path), redirects, "{repo}");
        assert_eq!(cdn.requests("GET", &path), at_cdn, "{repo}");
        assert!(
            cdn.ranges(&path).iter().all(Option::is_some),
            "{repo}: every CDN request is a chunk"
        );
        // Each byte crossed once (the refusal's small error body aside).
        let moved = cdn.body_bytes(&path) - big.data.len() as u64;
        assert!(
            moved < if expires { 200 } else { 1 },
            "{repo}: {moved} bytes more"
        );
    }
}

/// Found in review: a mirror that redirects its chunks to a CDN, which sends wrong bytes. The
/// mirror is distrusted for that blob, and its redirect target with it: the blob comes again
/// from the registry, not from the CDN URL the mirror gave (before the fix, every retry went
/// back to that URL while it was fresh).
#[test]
fn a_lying_mirrors_redirect_target_is_not_used_again() {
    let img = pushed("chunks/lying-cdn", 9360, 3 * MIB);
    let big = &img.layers[0];
    let path = format!("/blobs/{}", big.digest);
    let reg = world().plain().host();
    let cdn = FaultProxy::start(&reg).unwrap();
    cdn.flip_byte(&path, 1000);
    let mirror = FaultProxy::start(&reg).unwrap();
    let location = format!("http://{}/v2/chunks/lying-cdn{path}", cdn.host());
    mirror.serve(&path, 307, &[("Location", &location)], vec![]);
    let name = format!("{reg}/chunks/lying-cdn:1");
    let dest = world().temp_dir().join("store");
    let out = run(imagec()
        .args([
            "pull",
            "-q",
            "--jobs",
            "1",
            "--chunk-size",
            "1M",
            "--mirror",
        ])
        .arg(format!("{reg}=http://{}", mirror.host()))
        .arg("--dest")
        .arg(&dest)
        .arg(&name))
    .expect(0);
    assert!(
        out.stderr.contains("served bytes that are not"),
        "{}",
        out.stderr
    );
    entry(&dest, &name);
    assert_blobs_verified(&dest, &img);
    // One redirect, each chunk of the blob once at the CDN, then nothing more from either.
    assert_eq!(mirror.requests("GET", &path), 1);
    assert_eq!(cdn.requests("GET", &path), big.data.len().div_ceil(MIB));
}
