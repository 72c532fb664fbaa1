//! Certificates per registry (SPEC: Networks, Certificates): a certs.d tree with the registry's
//! CA and a client pair, against the real registry requiring client TLS (`http.tls.clientcas`),
//! given with `--cert-dir` and found in the system's `/etc/docker/certs.d`.

mod support;

use std::path::{Path, PathBuf};

use support::*;

/// A certs.d tree for the client-TLS registry: `TREE/127.0.0.1:PORT/{ca.crt,client.cert,client.key}`.
fn cert_tree(tree: &Path) -> PathBuf {
    let dir = tree.join(world().mtls().host());
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = world().client_pair();
    std::fs::copy(world().ca_cert_path(), dir.join("ca.crt")).unwrap();
    std::fs::copy(cert, dir.join("client.cert")).unwrap();
    std::fs::copy(key, dir.join("client.key")).unwrap();
    dir
}

fn pushed(repo: &str, seed: u64) -> String {
    push_one_layer(repo, seed, 30_000);
    format!("{}/{repo}:1", world().mtls().host())
}

/// Without a client certificate the registry refuses the handshake: exit 1, and the message
/// says what to put where. With `--cert-dir` (its CA and a pair) the pull works, no
/// `--ca-cert` needed; `-v` names the directory; the key is in no output and no stored file.
#[test]
fn a_registry_requiring_client_tls_is_pulled_with_a_cert_dir() {
    let name = pushed("certs/cert-dir", 9001);
    let out = run(imagec()
        .args(["pull", "--ca-cert"])
        .arg(world().ca_cert_path())
        .arg("--dest")
        .arg(world().temp_dir().join("store"))
        .arg(&name))
    .expect(1);
    assert!(
        out.stderr
            .contains("the registry asks for a client certificate")
            && out.stderr.contains("--cert-dir DIR"),
        "{}",
        out.stderr
    );

    let tree = world().temp_dir();
    let dir = cert_tree(&tree);
    let dest = world().temp_dir().join("store");
    let out = run(imagec()
        .args(["pull", "-v", "--cert-dir"])
        .arg(&tree)
        .arg("--dest")
        .arg(&dest)
        .arg(&name))
    .expect(0);
    entry(&dest, &name);
    assert!(
        out.stderr.contains(&format!(
            "TLS from {} (1 CA certificate, client certificate {})",
            dir.display(),
            dir.join("client.cert").display()
        )),
        "{}",
        out.stderr
    );
    // The key's base64 body, a line of it: in no output and no file of the store.
    let key = std::fs::read_to_string(dir.join("client.key")).unwrap();
    let line = key.lines().find(|l| !l.starts_with("-----")).unwrap();
    assert_no_secret(line, &[&out.stdout, &out.stderr], &dest);
}

/// Without `--cert-dir`, the system's trees are read: here `/etc/docker/certs.d/HOST:PORT/`
/// (needs root; CI runs as root). The directory the test makes is removed again.
#[test]
fn the_systems_docker_certs_d_is_read_without_a_flag() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test writes /etc/docker/certs.d (CI runs as root)"
    );
    let name = pushed("certs/system", 9002);
    let tree = Path::new("/etc/docker/certs.d");
    let dir = cert_tree(tree);
    let dest = world().temp_dir().join("store");
    let out = run(imagec()
        .args(["pull", "-q", "--dest"])
        .arg(&dest)
        .arg(&name));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    entry(&dest, &name);
}

/// A client certificate without its key (or a key without its certificate) is a usage error
/// naming both files, before anything is sent; so is a `--cert-dir` that does not exist.
#[test]
fn an_unpaired_client_file_names_both_files() {
    let name = pushed("certs/unpaired", 9003);
    for (keep, missing) in [("client.cert", "client.key"), ("client.key", "client.cert")] {
        let tree = world().temp_dir();
        let dir = cert_tree(&tree);
        std::fs::remove_file(dir.join(missing)).unwrap();
        let out = run(imagec()
            .args(["pull", "--cert-dir"])
            .arg(&tree)
            .arg("--dest")
            .arg(world().temp_dir().join("store"))
            .arg(&name))
        .expect(2);
        assert!(
            out.stderr.contains(&dir.join(keep).display().to_string())
                && out
                    .stderr
                    .contains(&dir.join(missing).display().to_string()),
            "{}",
            out.stderr
        );
    }
    let out = run(imagec()
        .args(["pull", "--cert-dir", "/nonexistent/certs.d"])
        .arg(&name))
    .expect(2);
    assert!(out.stderr.contains("no such directory"), "{}", out.stderr);
}
