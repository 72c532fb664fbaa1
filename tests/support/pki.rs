//! The test PKI: one CA (rcgen) that signs both the TLS registry's server certificate and the
//! token server's signing certificate, written as PEM files the registry configs point at.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Files and key material produced once per test process.
pub struct Pki {
    /// PEM of the CA: what clients pass to `--ca-cert`, and the registry's token `rootcertbundle`.
    pub ca_cert: PathBuf,
    /// PEM certificate (SANs 127.0.0.1, localhost, registry.imagec.test) and PKCS#8 key of the TLS registry.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate (clientAuth) and its key, signed by the CA: for the registry that
    /// requires client TLS, named as certs.d names a pair.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// DER of the token signing certificate, sent in each token's `x5c` header.
    pub signing_cert_der: Vec<u8>,
    /// PKCS#8 DER of the P-256 key that signs tokens (ES256).
    pub signing_key_pkcs8: Vec<u8>,
}

impl Pki {
    /// Generates the CA and both leaf certificates and writes the PEM files into `dir`.
    pub fn generate(dir: &Path) -> Result<Pki, String> {
        let err = |e: rcgen::Error| format!("generating test certificates: {e}");

        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "imagec test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
        let ca = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().map_err(err)?;
        let mut server_params = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            // A name that resolves nowhere: the proxy tests reach it only through a proxy.
            "registry.imagec.test".to_string(),
        ])
        .map_err(err)?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "imagec test registry");
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &ca).map_err(err)?;

        let client_key = KeyPair::generate().map_err(err)?;
        let mut client_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "imagec test client");
        client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &ca).map_err(err)?;

        // The registry verifies the x5c chain against rootcertbundle with ExtKeyUsageAny, so
        // the signing certificate needs nothing beyond being issued by the CA.
        let signing_key = KeyPair::generate().map_err(err)?;
        let mut signing_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        signing_params
            .distinguished_name
            .push(DnType::CommonName, "imagec test token signer");
        signing_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let signing_cert = signing_params.signed_by(&signing_key, &ca).map_err(err)?;

        let pki = Pki {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client.cert"),
            client_key: dir.join("client.key"),
            signing_cert_der: signing_cert.der().to_vec(),
            signing_key_pkcs8: signing_key.serialize_der(),
        };
        let write = |path: &Path, text: String| {
            fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
        };
        write(&pki.ca_cert, ca_cert.pem())?;
        write(&pki.server_cert, server_cert.pem())?;
        write(&pki.server_key, server_key.serialize_pem())?;
        write(&pki.client_cert, client_cert.pem())?;
        write(&pki.client_key, client_key.serialize_pem())?;
        Ok(pki)
    }
}
