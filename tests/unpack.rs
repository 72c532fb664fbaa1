//! `imagec unpack` against the real registry, with umoci (Debian's) as the oracle: the same
//! root filesystem, file by file; and hostile layers that must not touch anything outside the
//! directory (SPEC: unpack).

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

fn push_layers(repo: &str, tars: &[Vec<u8>]) -> String {
    push_tars(repo, tars).0
}

/// Every path under `root`: type, permission bits, owner, size, content hash or link target,
/// mtime (not for symlinks), and which paths share an inode.
fn describe(root: &Path) -> (BTreeMap<String, String>, Vec<Vec<String>>) {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let what = if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("symlink -> {}", std::fs::read_link(&p).unwrap().display())
        } else if ft.is_file() {
            inodes.entry(m.ino()).or_default().push(rel.clone());
            format!("file {} {}", m.len(), sha256(&std::fs::read(&p).unwrap()))
        } else {
            use std::os::unix::fs::FileTypeExt;
            let dev = || {
                let r = m.rdev();
                format!("{}:{}", rustix::fs::major(r), rustix::fs::minor(r))
            };
            if ft.is_fifo() {
                "fifo".to_string()
            } else if ft.is_char_device() {
                format!("char {}", dev())
            } else if ft.is_block_device() {
                format!("block {}", dev())
            } else {
                "other".to_string()
            }
        };
        let what = format!("{what}{}", xattrs(&p));
        let mtime = if ft.is_symlink() {
            String::new()
        } else {
            format!(" mtime {}", m.mtime())
        };
        if !rel.is_empty() {
            out.insert(
                rel,
                format!(
                    "{what} mode {:o} owner {}:{}{mtime}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid()
                ),
            );
        }
    }
    let mut links: Vec<Vec<String>> = inodes
        .into_values()
        .filter(|v| v.len() > 1)
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    links.sort();
    (out, links)
}

/// ` xattrs k=v,...` for the extended attributes of `p` (not following a symlink), or nothing.
fn xattrs(p: &Path) -> String {
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(p, &mut names).unwrap_or(0);
    let mut out: Vec<String> = names[..n]
        .split(|b| *b == 0)
        .filter(|k| !k.is_empty())
        .map(|k| {
            let k = std::str::from_utf8(k).unwrap();
            let mut v = vec![0u8; 4096];
            let len = rustix::fs::lgetxattr(p, k, &mut v).unwrap();
            format!("{k}={:02x?}", &v[..len])
        })
        .collect();
    if out.is_empty() {
        return String::new();
    }
    out.sort();
    format!(" xattrs {}", out.join(","))
}

fn umoci_rootfs(dest: &Path, name: &str) -> PathBuf {
    let bundle = world().temp_dir().join("bundle");
    let image = format!("{}:{name}", dest.display());
    oracle(
        "umoci",
        &["unpack", "--image", &image, bundle.to_str().unwrap()],
    );
    bundle.join("rootfs")
}

#[test]
fn unpack_makes_the_root_filesystem_umoci_makes() {
    let base = python_tar(
        "add('etc', 'dir', mode=0o755)\n\
         add('etc/passwd', data=b'root:x:0:0::/root:/bin/sh\\n')\n\
         add('bin', 'dir', mode=0o755)\n\
         add('bin/su', data=b'#!/bin/sh\\n', mode=0o4755)\n\
         add('run', 'dir', mode=0o755)\n\
         add('run/fifo', 'fifo', mode=0o640)\n\
         add('data', 'dir', mode=0o755)\n\
         add('lib', 'dir', mode=0o755)\n\
         add('opt', 'dir', mode=0o755)\n\
         add('opt/app', 'dir', mode=0o755)\n\
         add('var', 'dir', mode=0o755)\n\
         add('data/a', data=b'shared bytes')\n\
         add('data/a-link', 'hardlink', link='data/a')\n\
         add('lib/keep', data=b'kept')\n\
         add('opt/app/old', data=b'old')\n\
         add('var/gone', data=b'bye')\n\
         add('secret/inner', data=b'x', mode=0o600)\n\
         add('secret', 'dir', mode=0o700, mtime=1600000000)\n\
         add('tmp', 'dir', mode=0o1777)",
    );
    // Whiteouts as GNU tar packs them from a directory: empty files.
    let upper_dir = world().temp_dir().join("upper");
    for (p, data) in [
        ("var/.wh.gone", &b""[..]),
        ("opt/app/.wh..wh..opq", b""),
        ("opt/app/new", b"new"),
        ("etc/motd", b"hello"),
    ] {
        let path = upper_dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
    }
    let out = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@1650000000",
            "-C",
        ])
        .arg(&upper_dir)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(out.status.success());
    let upper = out.stdout;
    let top = python_tar(
        "add('lib/keep-link', 'hardlink', link='lib/keep')\n\
         add('usr', 'dir', mode=0o755)\n\
         add('usr/bin', 'dir', mode=0o755)\n\
         add('usr/bin/sh', 'symlink', link='/bin/su')\n\
         add('opt/app/deep', 'dir', mode=0o755)\n\
         add('etc/.wh.motd')\n\
         add('opt/app/deep/file', data=b'd')\n\
         add('opt/app/.wh..wh..opq')\n\
         add('secret', 'symlink', link='etc')",
    );
    let name = push_layers("unpack/oracle", &[base, upper, top]);
    let dest = world().temp_dir().join("store");
    let dir = world().temp_dir().join("rootfs");
    let out = run(imagec()
        .args(["unpack", "--json", "--dest"])
        .arg(&dest)
        .arg(&name)
        .arg(&dir))
    .expect(0);
    let doc = out.json();
    assert_eq!(doc["layers"], 3);
    assert_eq!(doc["skipped"], serde_json::json!([]));

    let ours = describe(&dir);
    let mut theirs = describe(&umoci_rootfs(&dest, &name));
    // opt/app is changed by the top layer (its opaque marker) without being listed there:
    // umoci leaves the time of its own unpack on it, imagec the time the image gives it (a
    // deliberate difference: the same image unpacks to the same tree, whenever).
    // Every time in the tree comes from the image (a directory only implied would get the
    // time of the unpack, and two unpacks a second apart would differ).
    for (path, what) in &ours.0 {
        if let Some(t) = what.split(" mtime ").nth(1) {
            assert!(t.parse::<i64>().unwrap() <= 1_700_000_000, "{path}: {what}");
        }
    }
    let ours_app = ours.0["opt/app"].clone();
    theirs.0.insert("opt/app".into(), ours_app.clone());
    assert!(ours_app.ends_with("mtime 1650000000"), "{ours_app}");
    let diff: Vec<String> = ours
        .0
        .iter()
        .filter(|(k, v)| theirs.0.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: ours {v}, umoci {:?}", theirs.0.get(k)))
        .chain(
            theirs
                .0
                .keys()
                .filter(|k| !ours.0.contains_key(*k))
                .map(|k| format!("{k}: only in umoci's")),
        )
        .collect();
    assert!(diff.is_empty(), "differences:\n{}", diff.join("\n"));
    assert_eq!(ours.1, theirs.1, "hardlink groups");
    // The facts the comparison rests on, said directly.
    assert!(!dir.join("var/gone").exists() && !dir.join("opt/app/old").exists());
    assert!(!dir.join("etc/motd").exists());
    // An opaque marker listed after this layer's own entries keeps them (and the parent it
    // made for them); it removes what the layers below put there.
    assert!(dir.join("opt/app/deep/file").exists());
    assert!(!dir.join("opt/app/new").exists());
    // A directory replaced by a symlink: its mode is not set on the symlink's target.
    assert!(ours.0["etc"].contains("mode 755"), "{}", ours.0["etc"]);
    assert_eq!(
        ours.1,
        [
            vec!["data/a", "data/a-link"],
            vec!["lib/keep", "lib/keep-link"]
        ]
    );
    assert!(
        ours.0["bin/su"].contains("mode 4755"),
        "{}",
        ours.0["bin/su"]
    );
    assert!(
        ours.0["secret"].starts_with("symlink -> etc"),
        "{}",
        ours.0["secret"]
    );
}

#[test]
fn a_wrong_diff_id_is_exit_1_naming_the_layer() {
    let tar = python_tar("add('f', data=b'content')");
    let mut img = image(
        Format::Docker,
        "linux",
        "amd64",
        vec![Blob::new("", gzip(&tar))],
    );
    // The config claims other uncompressed bytes.
    let mut config: serde_json::Value = serde_json::from_slice(&img.config.data).unwrap();
    config["rootfs"]["diff_ids"][0] = serde_json::json!(format!("sha256:{}", "0".repeat(64)));
    img = image_with_config(img, config);
    let reg = world().plain().host();
    push_image(&reg, "unpack/bad-diffid", "1", &img);
    let dir = world().temp_dir().join("rootfs");
    let out = run(imagec()
        .args(["unpack", "--dest"])
        .arg(world().temp_dir().join("store"))
        .arg(format!("{reg}/unpack/bad-diffid:1"))
        .arg(&dir))
    .expect(1);
    assert!(
        out.stderr.contains(&format!(
            "layer {}: its uncompressed bytes are",
            img.layers[0].digest
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn unpack_needs_an_absent_or_empty_directory() {
    let dir = world().temp_dir();
    std::fs::write(dir.join("mine"), "keep me").unwrap();
    let out = run(imagec().args(["unpack", "127.0.0.1:1/x/y:1"]).arg(&dir)).expect(2);
    assert!(
        out.stderr.contains("absent or empty directory"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("mine")).unwrap(),
        "keep me"
    );
}

/// containerd's TestBreakouts shapes and the CVEs of issue 10, one attack per image, each
/// judged alone: nothing outside DIR changes, whether the entry is clamped inside or refused.
#[test]
fn hostile_layers_never_touch_anything_outside_the_directory() {
    let outside = world().temp_dir();
    let victim = outside.join("victim");
    std::fs::write(&victim, "original").unwrap();
    let v = victim.display().to_string();
    let mut cases: Vec<(&str, String, Option<&str>)> = vec![
        // An absolute symlink, then a write through it: resolved inside DIR (clamped).
        ("abs-symlink", format!("add('evil', 'symlink', link='{outside}')\nadd('evil/victim', data=b'pwned')", outside = outside.display()), None),
        // Up and out with `..`.
        ("dotdot-symlink", "add('up', 'symlink', link='../../../../../../../..')\nadd('up/tmp/x', data=b'pwned')".to_string(), None),
        // A name with `..` in it: clamped inside.
        ("dotdot-name", format!("add('../../../../../..{v}', data=b'pwned')"), None),
        // An absolute name: inside DIR.
        ("abs-name", format!("add('{v}', data=b'pwned')"), None),
        // A chain of symlinks leading out.
        ("chain", format!("add('a', 'symlink', link='b')\nadd('b', 'symlink', link='{outside}')\nadd('a/victim', data=b'pwned')", outside = outside.display()), None),
        // A hardlink to a file outside: its target is a path in the image, not there.
        ("hardlink-out", format!("add('h', 'hardlink', link='{v}')"), Some("is not in the image")),
        // Hardlink to a symlink, then write through the name (CVE-2021-32760's shape).
        ("hardlink-symlink", format!("add('s', 'symlink', link='{v}')\nadd('h', 'hardlink', link='s')\nadd('h', data=b'pwned', mode=0o777)"), None),
        // CVE-2021-32760 itself: the hardlink entry's own mode, applied through the symlink
        // it links to, would chmod the file outside.
        ("hardlink-symlink-chmod", format!("add('s', 'symlink', link='{v}')\nadd('h', 'hardlink', link='s', mode=0o777)"), None),
        // The root as a symlink (umoci CVE-2021-29136).
        ("root-symlink", format!("add('.', 'symlink', link='{outside}')\nadd('victim', data=b'pwned')", outside = outside.display()), Some("the root of the image is not a directory")),
        // Whiteouts that name the directory or its parent.
        ("wh-dot", "add('d', 'dir')\nadd('d/.wh..')".to_string(), Some("a whiteout that names no file")),
        ("wh-dotdot", "add('d', 'dir')\nadd('d/.wh...')".to_string(), Some("a whiteout that names no file")),
        // A whiteout through a symlink to the outside.
        ("wh-through-symlink", format!("add('l', 'symlink', link='{outside}')\nadd('l/.wh.victim')", outside = outside.display()), None),
        // A symlink, then a directory of the same name, then a file in it (tar-rs RUSTSEC-2021-0080).
        ("symlink-then-dir", format!("add('x', 'symlink', link='{outside}')\nadd('x', 'dir')\nadd('x/victim', data=b'pwned')", outside = outside.display()), None),
    ];
    let listing = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = listing(&outside);
    let mut layers: Vec<(&str, Vec<u8>, Option<&str>)> = cases
        .drain(..)
        .map(|(repo, script, refused)| (repo, python_tar(&script), refused))
        .collect();
    // A 2 MiB PAX path (Python's tarfile writes one for a long name): refused at the bound,
    // not read into memory.
    let huge = python_tar("add('a' * (2 << 20), data=b'pwned')");
    layers.push(("huge-pax", huge, Some("an extended header of 2097")));
    for (repo, layer, refused) in layers {
        let name = push_layers(&format!("unpack/attack-{repo}"), &[layer]);
        let dir = world().temp_dir().join("rootfs");
        let out = run(imagec()
            .args(["unpack", "--dest"])
            .arg(world().temp_dir().join("store"))
            .arg(&name)
            .arg(&dir));
        match refused {
            Some(needle) => {
                assert_eq!(out.code, 1, "{repo}: {}", out.stderr);
                assert!(out.stderr.contains(needle), "{repo}: {}", out.stderr);
            }
            None => assert_eq!(out.code, 0, "{repo}: {}", out.stderr),
        }
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "original",
            "{repo}"
        );
        assert_eq!(
            std::fs::metadata(&victim).unwrap().nlink(),
            1,
            "{repo}: the victim was hardlinked"
        );
        assert_eq!(
            std::fs::metadata(&victim).unwrap().mode() & 0o777,
            0o644,
            "{repo}: chmod outside"
        );
        assert_eq!(listing(&outside), before, "{repo}: something new outside");
    }
}

/// A zstd layer (made by Debian's `zstd`) over a gzip one, then an uncompressed one: each read
/// through the decompressor its media type names, each checked against its diff_id.
#[test]
fn zstd_and_uncompressed_layers_unpack_and_are_verified() {
    // Every directory listed: one a layer only implies gets the time of the unpack, which
    // differs between two unpacks a second apart.
    let base = python_tar(
        "add('etc', 'dir')\nadd('etc/os-release', data=b'ID=test\\n')\nadd('z', 'dir')\nadd('z/keep', data=b'k')",
    );
    let mid = python_tar("add('z/from-zstd', data=b'zstd bytes' * 1000)");
    let top = python_tar("add('plain', 'dir')\nadd('plain/file', data=b'not compressed')");
    let zstd = {
        let mut child = Command::new("zstd")
            .args(["-q", "-c", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("zstd is needed by the tests (see .ci/run)");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&mid).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        out.stdout
    };
    let img = image(
        Format::Oci,
        "linux",
        "amd64",
        vec![
            Blob::new("", gzip(&base)),
            Blob::new("", gzip(&mid)),
            Blob::new("", gzip(&top)),
        ],
    );
    // The same tars, all gzip: what umoci 0.4 (no zstd support) unpacks for comparison.
    let reg = world().plain().host();
    push_image(&reg, "unpack/zstd-as-gzip", "1", &img);
    let gzip_name = format!("{reg}/unpack/zstd-as-gzip:1");
    let gz = img.layers[0].data.clone();
    let img = image_with_layers(
        img,
        vec![
            ("application/vnd.oci.image.layer.v1.tar+gzip", gz),
            ("application/vnd.oci.image.layer.v1.tar+zstd", zstd),
            ("application/vnd.oci.image.layer.v1.tar", top),
        ],
    );
    push_image(&reg, "unpack/zstd", "1", &img);
    let name = format!("{reg}/unpack/zstd:1");
    let dest = world().temp_dir().join("store");
    let dir = world().temp_dir().join("rootfs");
    run(imagec()
        .args(["unpack", "--dest"])
        .arg(&dest)
        .arg(&name)
        .arg(&dir))
    .expect(0);
    assert_eq!(
        std::fs::read(dir.join("z/from-zstd")).unwrap(),
        b"zstd bytes".repeat(1000)
    );
    assert_eq!(
        std::fs::read(dir.join("plain/file")).unwrap(),
        b"not compressed"
    );
    // The tree umoci makes from the same tars gzipped.
    run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(&dest)
        .arg(&gzip_name))
    .expect(0);
    let theirs = describe(&umoci_rootfs(&dest, &gzip_name));
    assert_eq!(describe(&dir), theirs);
    // layers --files reads the same three encodings.
    let out = run(imagec()
        .args(["layers", "--files", "--json", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    let files = &out.json()[1]["files"];
    assert_eq!(files[0]["path"], "z/from-zstd", "{files}");
    assert_eq!(files[0]["size"], 10_000);
}

/// As root (CI runs as root, and says so otherwise): owners, device nodes and xattrs, the
/// same as umoci's unpack, file by file. The capability is what a real image's `ping` carries
/// (`security.capability`, which a chown clears: it must be set after the owner).
#[test]
fn as_root_owners_device_nodes_and_xattrs_are_what_umoci_makes() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (CI runs as root)"
    );
    // CAP_NET_BIND_SERVICE, as `setcap cap_net_bind_service+ep` writes it (VFS_CAP v2).
    let cap = "'\\x01\\x00\\x00\\x02\\x00\\x04' + '\\x00' * 14";
    let name = push_layers(
        "unpack/as-root",
        &[python_tar(&format!(
            "def node(name, kind, major=0, minor=0, mode=0o644, uid=0, gid=0, xattrs={{}}, data=b'', link=''):\n\
             \x20   i = tarfile.TarInfo(name); i.type = kind; i.devmajor = major; i.devminor = minor\n\
             \x20   i.mode = mode; i.uid = uid; i.gid = gid; i.mtime = 1700000000; i.size = len(data); i.linkname = link\n\
             \x20   i.pax_headers = {{'SCHILY.xattr.' + k: v for k, v in xattrs.items()}}\n\
             \x20   t.addfile(i, io.BytesIO(data))\n\
             node('dev', tarfile.DIRTYPE, mode=0o755)\n\
             node('dev/null', tarfile.CHRTYPE, 1, 3, mode=0o666)\n\
             node('dev/loop0', tarfile.BLKTYPE, 7, 0, mode=0o660, gid=6)\n\
             node('home', tarfile.DIRTYPE, mode=0o755)\n\
             node('home/user', tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1000)\n\
             node('home/user/notes', tarfile.REGTYPE, mode=0o600, uid=1000, gid=1000, data=b'mine', xattrs={{'user.comment': 'kept', 'trusted.origin': 'layer'}})\n\
             node('home/user/link', tarfile.SYMTYPE, uid=1000, gid=1000, link='notes')\n\
             node('bin', tarfile.DIRTYPE, mode=0o755)\n\
             node('bin/ping', tarfile.REGTYPE, mode=0o755, gid=33, data=b'#!/bin/sh\\n', xattrs={{'security.capability': {cap}}})\n\
             node('srv', tarfile.DIRTYPE, mode=0o2775, uid=33, gid=33, xattrs={{'user.dir': 'yes'}})",
        ))],
    );
    let dest = world().temp_dir().join("store");
    let dir = world().temp_dir().join("rootfs");
    let out = run(imagec()
        .args(["unpack", "--json", "--dest"])
        .arg(&dest)
        .arg(&name)
        .arg(&dir))
    .expect(0);
    assert_eq!(out.json()["skipped"], serde_json::json!([]));
    let ours = describe(&dir);
    let theirs = describe(&umoci_rootfs(&dest, &name));
    assert_eq!(ours, theirs);
    // What the comparison rests on, said directly.
    let d = &ours.0;
    assert!(
        d["dev/null"].starts_with("char 1:3 mode 666 owner 0:0"),
        "{d:?}"
    );
    assert!(
        d["dev/loop0"].starts_with("block 7:0 mode 660 owner 0:6"),
        "{d:?}"
    );
    assert!(d["home/user/notes"].contains("owner 1000:1000"), "{d:?}");
    assert!(
        d["home/user/notes"].contains("user.comment=[6b, 65, 70, 74]"),
        "{d:?}"
    );
    assert!(d["home/user/notes"].contains("trusted.origin="), "{d:?}");
    assert!(d["home/user/link"].contains("owner 1000:1000"), "{d:?}");
    assert!(
        d["bin/ping"].contains("security.capability=[01, 00, 00, 02, 00, 04"),
        "{d:?}"
    );
    assert!(d["srv"].contains("mode 2775 owner 33:33"), "{d:?}");
    assert!(d["srv"].contains("user.dir="), "{d:?}");
}

/// As another user (no root), device nodes cannot be made: they are skipped and counted, the
/// rest is unpacked and owned by that user (as umoci's rootless mode does).
#[test]
fn unpack_as_another_user_skips_device_nodes() {
    let name = push_layers(
        "unpack/devices",
        &[python_tar(
            "add('dev', 'dir', mode=0o755)\nadd('etc/hostname', data=b'box')\n\
             i = tarfile.TarInfo('dev/null'); i.type = tarfile.CHRTYPE; i.devmajor = 1; i.devminor = 3; t.addfile(i)\n\
             add('run/fifo', 'fifo')",
        )],
    );
    // A place the user nobody owns, for the store and the root filesystem.
    let home = world().temp_dir();
    for d in home.ancestors().skip(1).take(2) {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let out = run(imagec_via(&AS_NOBODY)
        .args(["unpack", "--json", "--dest"])
        .arg(home.join("store"))
        .arg(&name)
        .arg(home.join("rootfs")))
    .expect(0);
    let doc = out.json();
    assert_eq!(
        doc["skipped"],
        serde_json::json!([{ "layer": 0, "path": "dev/null", "reason": "a device node needs root" }])
    );
    let rootfs = home.join("rootfs");
    assert_eq!(std::fs::read(rootfs.join("etc/hostname")).unwrap(), b"box");
    assert_eq!(
        std::fs::metadata(rootfs.join("etc/hostname"))
            .unwrap()
            .uid(),
        65534
    );
    assert!(!rootfs.join("dev/null").exists());
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(rootfs.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    // Human output says it too.
    let out = run(imagec_via(&AS_NOBODY)
        .args(["unpack", "--dest"])
        .arg(home.join("store"))
        .arg(&name)
        .arg(home.join("rootfs2")))
    .expect(0);
    assert!(
        out.stderr.contains("1 skipped (device nodes need root)"),
        "{}",
        out.stderr
    );
}

/// The bounds of the tar reader hold for unpack too (the shape of TARmageddon: a PAX size that
/// disagrees with the header's), and nothing of the refused entry is written.
#[test]
fn a_pax_size_mismatch_is_refused_by_unpack_too() {
    let layer = pax_size_smuggler();
    let name = push_layers("unpack/pax-smuggler", &[layer]);
    let dir = world().temp_dir().join("rootfs");
    let out = run(imagec()
        .args(["unpack", "--dest"])
        .arg(world().temp_dir().join("store"))
        .arg(&name)
        .arg(&dir))
    .expect(1);
    assert!(
        out.stderr
            .contains("its PAX size (0) disagrees with its header's (5)"),
        "{}",
        out.stderr
    );
    assert!(!dir.join("smuggled").exists() && !dir.join("visible").exists());
}

/// Progress like `pull`'s (SPEC: Output): in a log, one line for the stage and one when each
/// layer starts and is done, after the pull's lines; with `-q` or `--json`, none.
#[test]
fn unpack_reports_each_layer_in_a_log_and_nothing_with_q() {
    let name = push_layers(
        "unpack/progress",
        &[
            python_tar("add('a', data=b'a' * 5000)"),
            python_tar("add('b', data=b'b' * 7000)"),
        ],
    );
    let digests: Vec<String> = {
        let dest = world().temp_dir().join("store");
        let out = run(imagec()
            .args(["layers", "--json", "--dest"])
            .arg(&dest)
            .arg(&name))
        .expect(0);
        let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        doc.as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap()[7..19].to_string())
            .collect()
    };
    let dest = world().temp_dir().join("store");
    let out = run(imagec()
        .args(["unpack", "--dest"])
        .arg(&dest)
        .arg(&name)
        .arg(world().temp_dir().join("rootfs")))
    .expect(0);
    let lines: Vec<&str> = out.stderr.lines().collect();
    let stage = lines
        .iter()
        .position(|l| l.starts_with("unpacking 2 layers ("))
        .unwrap_or_else(|| panic!("{}", out.stderr));
    // The pull's lines come first: each layer downloaded before anything is unpacked.
    for d in &digests {
        let downloaded = lines
            .iter()
            .position(|l| l.starts_with(&format!("{d}: done")))
            .unwrap_or_else(|| panic!("{}", out.stderr));
        assert!(downloaded < stage, "{}", out.stderr);
    }
    let after: Vec<&str> = lines[stage + 1..].to_vec();
    let mut want = Vec::new();
    for d in &digests {
        want.push(format!("{d}: unpacking "));
        want.push(format!("{d}: done ("));
    }
    want.push("Unpacked ".to_string());
    assert_eq!(after.len(), want.len(), "{}", out.stderr);
    for (line, prefix) in after.iter().zip(&want) {
        assert!(line.starts_with(prefix.as_str()), "{}", out.stderr);
    }

    for flag in ["-q", "--json"] {
        let out = run(imagec()
            .args(["unpack", flag, "--dest"])
            .arg(&dest)
            .arg(&name)
            .arg(world().temp_dir().join("rootfs")))
        .expect(0);
        assert_eq!(out.stderr, "", "{flag}");
    }
}

/// Ctrl-C while a large file is written: exit 130 at the next chunk, well before the grace
/// period's forced exit, DIR partial, the store untouched, and the next unpack starts over.
#[test]
fn ctrl_c_stops_an_unpack_in_the_middle_of_a_layer() {
    // One 1 GiB file of zeros, through GNU tar and zstd: a small blob that takes seconds to
    // write out.
    let src = world().temp_dir();
    std::fs::File::create(src.join("big"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let sh = |script: &str| {
        let out = Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(&src)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let zstd = sh("tar -C \"$1\" --mtime=@1700000000 -cf - big | zstd -q -1 -c");
    let sum = sh("tar -C \"$1\" --mtime=@1700000000 -cf - big | sha256sum");
    let diff_id = format!("sha256:{}", &String::from_utf8_lossy(&sum)[..64]);
    let img = image(
        Format::Oci,
        "linux",
        "amd64",
        vec![Blob::new("", gzip(b""))],
    );
    let mut config: serde_json::Value = serde_json::from_slice(&img.config.data).unwrap();
    config["rootfs"]["diff_ids"][0] = serde_json::json!(diff_id);
    let img = image_with_config(img, config);
    let img = image_with_layers(
        img,
        vec![("application/vnd.oci.image.layer.v1.tar+zstd", zstd)],
    );
    let reg = world().plain().host();
    push_image(&reg, "unpack/interrupted", "1", &img);
    let name = format!("{reg}/unpack/interrupted:1");
    let dest = world().temp_dir().join("store");
    let dir = world().temp_dir().join("rootfs");

    let mut child = imagec()
        .args(["unpack", "--dest"])
        .arg(&dest)
        .arg(&name)
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the layer has started, and some of the file is on disk.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        use std::io::BufRead;
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
        if line.contains(": unpacking ") {
            break;
        }
    }
    let begun = std::time::Instant::now();
    while std::fs::metadata(dir.join("big")).map_or(0, |m| m.len()) == 0 {
        assert!(
            begun.elapsed() < std::time::Duration::from_secs(20),
            "{seen}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let start = std::time::Instant::now();
    let kill = Command::new("sh")
        .args(["-c", "kill -INT \"$0\"", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    use std::io::Read;
    stderr.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    seen.push_str(&rest);
    assert_eq!(status.code(), Some(130), "{seen}");
    // Stopped by the unpack itself, not by the forced exit two seconds later.
    assert!(
        start.elapsed() < std::time::Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert!(
        rest.contains("interrupted; the directory holds part of the image"),
        "{seen}"
    );
    let written = std::fs::metadata(dir.join("big")).unwrap().len();
    assert!(written < 1 << 30, "{written}");
    assert_store_consistent(&dest);
    // The store still has the image: the next unpack needs no registry.
    let out = run(imagec()
        .args(["layers", "--files", "--json", "--dest"])
        .arg(&dest)
        .arg(&name))
    .expect(0);
    assert!(out.stdout.contains("\"big\""), "{}", out.stdout);
}
