//! certs.d trees (SPEC: Networks, Certificates): `DIR/HOST[:PORT]/` holds that registry's
//! `*.crt` CA certificates and client pairs `NAME.cert` + `NAME.key`, the layout docker and
//! podman read from `/etc/docker/certs.d` and `/etc/containers/certs.d`. Read once per host at
//! start, so a broken tree is a usage error before anything is sent.

use std::path::{Path, PathBuf};

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey};

use super::http::TlsSetupError;

/// The system's certs.d trees, in the order podman reads them: the first that has a
/// directory for the host is the one used.
pub const SYSTEM_CERT_DIRS: [&str; 2] = ["/etc/containers/certs.d", "/etc/docker/certs.d"];

/// What a host's certs.d directory holds.
pub struct HostCerts {
    pub dir: PathBuf,
    /// Extra CAs for this host only.
    pub cas: Vec<Certificate<'static>>,
    /// The first client pair (by file name), for registries that ask for client TLS.
    pub client: Option<(PathBuf, ClientCert)>,
}

/// The certs.d directory for `host` (`host[:port]` as references name it) in the first of
/// `trees` that has one, read; None when no tree has one.
pub fn for_host(trees: &[PathBuf], host: &str) -> Result<Option<HostCerts>, TlsSetupError> {
    // A name with a path separator would leave the tree.
    if host.is_empty() || host.contains('/') || host == ".." || host == "." {
        return Ok(None);
    }
    let Some(dir) = trees.iter().map(|t| t.join(host)).find(|d| d.is_dir()) else {
        return Ok(None);
    };
    read_dir(&dir).map(Some)
}

fn read_dir(dir: &Path) -> Result<HostCerts, TlsSetupError> {
    let bad = |path: &Path, reason: String| TlsSetupError::CertDir {
        path: path.to_path_buf(),
        reason,
    };
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| bad(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let ext = |p: &Path, e: &str| p.extension().is_some_and(|x| x == e);
    let mut cas = Vec::new();
    let mut client = None;
    for path in &names {
        if ext(path, "crt") {
            let pem = std::fs::read(path).map_err(|e| bad(path, e.to_string()))?;
            let certs = pem_certs(&pem).map_err(|e| bad(path, e))?;
            if certs.is_empty() {
                return Err(bad(path, "no PEM certificate in it".into()));
            }
            cas.extend(certs);
        } else if ext(path, "cert") {
            let key = path.with_extension("key");
            if !key.exists() {
                return Err(TlsSetupError::UnpairedClientFile {
                    found: path.clone(),
                    missing: key,
                });
            }
            if client.is_none() {
                client = Some((path.clone(), client_pair(path, &key)?));
            }
        } else if ext(path, "key") {
            let cert = path.with_extension("cert");
            if !cert.exists() {
                return Err(TlsSetupError::UnpairedClientFile {
                    found: path.clone(),
                    missing: cert,
                });
            }
        }
    }
    Ok(HostCerts {
        dir: dir.to_path_buf(),
        cas,
        client,
    })
}

fn client_pair(cert: &Path, key: &Path) -> Result<ClientCert, TlsSetupError> {
    let bad = |path: &Path, reason: String| TlsSetupError::CertDir {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(cert).map_err(|e| bad(cert, e.to_string()))?;
    let chain = pem_certs(&pem).map_err(|e| bad(cert, e))?;
    if chain.is_empty() {
        return Err(bad(cert, "no PEM certificate in it".into()));
    }
    let pem = std::fs::read(key).map_err(|e| bad(key, e.to_string()))?;
    // The reason only: ureq's error text never carries key bytes, but say nothing more.
    let key_der = PrivateKey::from_pem(&pem)
        .map_err(|_| bad(key, "not a PEM private key (PKCS#8, PKCS#1 or SEC1)".into()))?;
    Ok(ClientCert::new_with_certs(&chain, key_der))
}

/// The certificates in a PEM file (other items, such as keys, are skipped).
pub fn pem_certs(pem: &[u8]) -> Result<Vec<Certificate<'static>>, String> {
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        if let PemItem::Certificate(c) = item.map_err(|e| format!("not a PEM file: {e}"))? {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cert_without_its_key_names_both_files() {
        let tree = tempfile::tempdir().unwrap();
        let dir = tree.path().join("reg.example:5000");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("client.cert"), "x").unwrap();
        let e = for_host(&[tree.path().to_path_buf()], "reg.example:5000")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("client.cert") && e.contains("client.key"), "{e}");
    }

    #[test]
    fn the_first_tree_with_the_host_wins_and_others_are_not_read() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::create_dir(b.path().join("h")).unwrap();
        // A broken directory in a tree that comes later is never read.
        std::fs::create_dir(a.path().join("other")).unwrap();
        let found = for_host(&[a.path().to_path_buf(), b.path().to_path_buf()], "h")
            .unwrap()
            .unwrap();
        assert_eq!(found.dir, b.path().join("h"));
        assert!(found.cas.is_empty() && found.client.is_none());
        assert!(for_host(&[a.path().to_path_buf()], "../etc")
            .unwrap()
            .is_none());
        assert!(for_host(&[a.path().to_path_buf()], "nowhere")
            .unwrap()
            .is_none());
    }
}
