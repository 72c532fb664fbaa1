//! The HTTP client the support code and smoke tests use to talk to the test servers directly
//! (pushing, checking answers): ureq with no proxy, statuses returned rather than turned into
//! errors, and a bounded timeout so a hung server fails a test instead of hanging it.

use std::path::Path;
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::Agent;

const TIMEOUT: Duration = Duration::from_secs(60);

/// An agent for plain-HTTP test servers (and HTTPS ones verified against the public roots).
pub fn agent() -> Agent {
    build(TlsConfig::default())
}

/// An agent that trusts exactly the CA in `ca_pem` (the test CA).
pub fn agent_trusting(ca_pem: &Path) -> Agent {
    let pem = std::fs::read(ca_pem).unwrap_or_else(|e| panic!("reading {}: {e}", ca_pem.display()));
    let ca =
        Certificate::from_pem(&pem).unwrap_or_else(|e| panic!("parsing {}: {e}", ca_pem.display()));
    build(
        TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(&[ca]))
            .build(),
    )
}

/// [`agent_trusting`], presenting a client certificate.
pub fn agent_with_client_cert(ca_pem: &Path, cert: &Path, key: &Path) -> Agent {
    let read =
        |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    let ca = Certificate::from_pem(&read(ca_pem)).expect("the test CA");
    let chain = Certificate::from_pem(&read(cert)).expect("the client certificate");
    let key = ureq::tls::PrivateKey::from_pem(&read(key)).expect("the client key");
    build(
        TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(&[ca]))
            .client_cert(Some(ureq::tls::ClientCert::new_with_certs(&[chain], key)))
            .build(),
    )
}

fn build(tls: TlsConfig) -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(TIMEOUT))
        .tls_config(tls)
        .build()
        .new_agent()
}

/// `Authorization: Basic …` for `user:password`.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}
