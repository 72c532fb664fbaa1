//! What can go wrong talking to a registry, and the registry's own error body
//! (distribution spec, "Error codes": `{"errors":[{"code","message","detail"}]}`).

use std::fmt;

use crate::digest::{Digest, VerifyError};

/// One entry of a registry error body.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ErrorEntry {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// The parsed error body, or a short excerpt of the body when it was not the standard form.
#[derive(Debug, Clone, Default)]
pub struct ErrorBody {
    pub entries: Vec<ErrorEntry>,
    pub text: String,
}

impl ErrorBody {
    /// Parse a body; never fails (a body that is not JSON is kept as trimmed text).
    pub fn parse(bytes: &[u8]) -> ErrorBody {
        #[derive(serde::Deserialize)]
        struct Wire {
            #[serde(default)]
            errors: Vec<ErrorEntry>,
            /// OAuth2's form (RFC 6749 section 5.2): `{"error":"invalid_grant",...}`.
            #[serde(default)]
            error: Option<String>,
            #[serde(default)]
            error_description: Option<String>,
        }
        if let Ok(w) = serde_json::from_slice::<Wire>(bytes) {
            if !w.errors.is_empty() {
                return ErrorBody {
                    entries: w.errors,
                    text: String::new(),
                };
            }
            if let Some(code) = w.error.filter(|c| !c.is_empty()) {
                return ErrorBody {
                    entries: vec![ErrorEntry {
                        code,
                        message: w.error_description.unwrap_or_default(),
                    }],
                    text: String::new(),
                };
            }
        }
        let text = String::from_utf8_lossy(bytes);
        let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = match text.char_indices().nth(200) {
            Some((i, _)) => format!("{}...", &text[..i]),
            None => text,
        };
        ErrorBody {
            entries: vec![],
            text,
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str(&self.text);
        }
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => write!(f, "{}: {}", e.code, e.message)?,
                (false, true) => f.write_str(&e.code)?,
                _ => f.write_str(&e.message)?,
            }
        }
        Ok(())
    }
}

/// A registry's rate-limit headers on a 429 (Docker Hub: `ratelimit-limit: 100;w=21600`,
/// `ratelimit-remaining: 0;w=21600`, the window in seconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: Option<String>,
    pub remaining: Option<String>,
}

/// `; the registry is rate limiting (...)`, with the figures it sent and what helps.
fn rate_hint(rate: Option<&RateLimit>) -> String {
    let Some(rate) = rate else {
        return String::new();
    };
    let figures: Vec<String> = [
        ("ratelimit-limit", &rate.limit),
        ("ratelimit-remaining", &rate.remaining),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}: {v}")))
    .collect();
    let figures = if figures.is_empty() {
        String::new()
    } else {
        format!(" ({})", figures.join(", "))
    };
    format!(
        "; the registry is rate limiting pulls{figures}: wait, log in (a higher limit), or pull through a mirror"
    )
}

fn suffix(body: &ErrorBody) -> String {
    let s = body.to_string();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{method} {url}: {source}{}", transport_hint(source))]
    Transport {
        method: &'static str,
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("reading {url}: {source}")]
    Body {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{method} {url}: HTTP {status}{}{}", suffix(body), rate_hint(rate_limit.as_deref()))]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: ErrorBody,
        retry_after: Option<std::time::Duration>,
        /// For a 429: the limit headers the registry sent (Docker Hub's `ratelimit-*`).
        rate_limit: Option<Box<RateLimit>>,
    },
    #[error("{url}: authentication required (HTTP 401{}){}", suffix(body), hint(*has_credentials))]
    Unauthorized {
        url: String,
        body: ErrorBody,
        has_credentials: bool,
    },
    #[error("{url}: access denied (HTTP 403{})", suffix(body))]
    Denied { url: String, body: ErrorBody },
    #[error("{what} not found at {url}{}", suffix(body))]
    NotFound {
        what: String,
        url: String,
        body: ErrorBody,
    },
    #[error(
        "token server {realm} refused the credentials (HTTP {status}{})",
        suffix(body)
    )]
    TokenRefused {
        realm: String,
        status: u16,
        body: ErrorBody,
    },
    #[error("token server {realm}: {reason}")]
    TokenInvalid { realm: String, reason: String },
    #[error(
        "token server {realm} refused the refresh token (identitytoken) (HTTP {status}{}); log in again",
        suffix(body)
    )]
    RefreshTokenRefused {
        realm: String,
        status: u16,
        body: ErrorBody,
    },
    #[error(
        "token server {realm} takes no OAuth2 refresh token (POST answered HTTP {status}{}); the identitytoken cannot be used there: log in with a user name and password",
        if *html { " with an HTML page" } else { "" }
    )]
    NoOAuth2 {
        realm: String,
        status: u16,
        html: bool,
    },
    #[error("{host} is not a registry: GET {url} answered HTTP {status}")]
    NotARegistry {
        host: String,
        url: String,
        status: u16,
    },
    #[error("registry {host} asks for unsupported authentication {scheme:?}")]
    UnsupportedAuth { host: String, scheme: String },
    #[error("proxy {proxy} failed for {method} {url}: {reason}")]
    Proxy {
        proxy: String,
        method: &'static str,
        url: String,
        reason: String,
        /// The proxy answered and refused (a 407, a 403 to `CONNECT`); false when it could
        /// not be reached at all.
        refused: bool,
    },
    #[error("{reference} is blocked by registries.conf (blocked = true)")]
    Blocked { reference: String },
    #[error("too many redirects from {url}")]
    TooManyRedirects { url: String },
    #[error("redirect from {url} has no usable Location")]
    BadRedirect { url: String },
    #[error(
        "manifest {url} is larger than {limit} bytes (the size its index gives, or the 4 MiB cap)"
    )]
    ManifestTooLarge { url: String, limit: u64 },
    #[error("manifest from {url} is not a valid signed schema1 manifest: {reason}")]
    Schema1Payload { url: String, reason: String },
    #[error("manifest from {url} does not match {expected}: got {actual}")]
    ManifestDigest {
        url: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("blob {digest} from {url}: {source}")]
    BlobVerify {
        digest: Digest,
        url: String,
        #[source]
        source: VerifyError,
    },
    #[error("{url}: server answered {status} to a Range request with Content-Range {content_range:?}, expected bytes {offset}-")]
    BadRange {
        url: String,
        status: u16,
        offset: u64,
        content_range: String,
    },
    #[error("tag list from {url}: {reason}")]
    BadTagList { url: String, reason: String },
    #[error("HEAD {url} answered HTTP {status} without a Content-Length for the blob")]
    MissingLength { url: String, status: u16 },
    #[error("gave up after {seconds} s (--timeout): {last}")]
    Deadline { seconds: u64, last: String },
    #[error("after {attempts} attempts in {:.1} s: {source}", elapsed.as_secs_f64())]
    Retried {
        attempts: u32,
        elapsed: std::time::Duration,
        #[source]
        source: Box<RegistryError>,
    },
}

impl crate::registry::retry::Retryable for RegistryError {
    fn is_transient(&self) -> bool {
        RegistryError::is_transient(self)
    }
    fn retry_after(&self) -> Option<std::time::Duration> {
        RegistryError::retry_after(self)
    }
    fn retried(self, attempts: u32, elapsed: std::time::Duration) -> Self {
        RegistryError::Retried {
            attempts,
            elapsed,
            source: Box::new(self),
        }
    }
    fn deadline(seconds: u64, last: String) -> Self {
        RegistryError::Deadline { seconds, last }
    }
}

/// The next step for a TLS failure the user can fix (issue: hints where the next step is not
/// obvious).
fn transport_hint(e: &ureq::Error) -> &'static str {
    use super::http::TlsProblem;
    match super::http::tls_problem(e) {
        Some(TlsProblem::UnknownIssuer) => {
            "; the certificate is signed by an authority this machine does not trust: \
             pass that CA with --ca-cert FILE (or put it in a certs.d directory: --cert-dir DIR, \
             DIR/HOST[:PORT]/ca.crt), or skip verification with --insecure-skip-verify"
        }
        Some(TlsProblem::ClientCertRequired) => {
            "; the registry asks for a client certificate: put NAME.cert and NAME.key in a \
             certs.d directory for it (--cert-dir DIR: DIR/HOST[:PORT]/, or \
             /etc/containers/certs.d/HOST[:PORT]/)"
        }
        Some(TlsProblem::ClientCertRefused) => {
            "; the registry refused the client certificate (not signed by a CA it trusts)"
        }
        Some(TlsProblem::BadCertificate) => {
            "; to pull anyway, skip verification with --insecure-skip-verify"
        }
        Some(TlsProblem::NotTls) => {
            "; the server speaks plain HTTP: allow it with --insecure-allow-http"
        }
        None => "",
    }
}

fn hint(has_credentials: bool) -> &'static str {
    if has_credentials {
        "; the credentials were not accepted"
    } else {
        "; the repository may not exist, or needs credentials (-u/--password-stdin or an auth file)"
    }
}

impl RegistryError {
    /// Worth another attempt? (SPEC: transient failures; each rule lives in `crate::retry`.)
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { source, .. } => {
                crate::registry::retry::ureq_is_transient(source)
            }
            RegistryError::Body { source, .. } => {
                crate::registry::retry::body_error_is_transient(source)
            }
            RegistryError::Status { status, .. } => {
                crate::registry::retry::status_is_transient(*status)
            }
            // The token server's 5xx is transient like the registry's.
            RegistryError::TokenRefused { status, .. }
            | RegistryError::RefreshTokenRefused { status, .. } => {
                crate::registry::retry::status_is_transient(*status)
            }
            // Already retried as often as allowed.
            RegistryError::Retried { .. } => false,
            RegistryError::TokenInvalid { .. }
            | RegistryError::NoOAuth2 { .. }
            | RegistryError::Unauthorized { .. }
            | RegistryError::Denied { .. }
            | RegistryError::NotFound { .. }
            | RegistryError::NotARegistry { .. }
            | RegistryError::UnsupportedAuth { .. }
            | RegistryError::TooManyRedirects { .. }
            | RegistryError::Blocked { .. }
            | RegistryError::Proxy { .. }
            | RegistryError::BadRedirect { .. }
            | RegistryError::ManifestTooLarge { .. }
            | RegistryError::Schema1Payload { .. }
            | RegistryError::ManifestDigest { .. }
            | RegistryError::BlobVerify { .. }
            | RegistryError::BadRange { .. }
            | RegistryError::MissingLength { .. }
            | RegistryError::BadTagList { .. }
            | RegistryError::Deadline { .. } => false,
        }
    }

    /// The server's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            RegistryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth2_error_bodies_read_as_code_and_description() {
        let b = ErrorBody::parse(br#"{"error":"invalid_grant","error_description":"expired"}"#);
        assert_eq!(b.to_string(), "invalid_grant: expired");
        let b = ErrorBody::parse(br#"{"error":"invalid_client"}"#);
        assert_eq!(b.to_string(), "invalid_client");
    }

    #[test]
    fn tls_failures_the_user_can_fix_name_the_next_step() {
        let transport = |e: ureq::Error| RegistryError::Transport {
            method: "GET",
            url: "https://r.example/v2/".into(),
            source: Box::new(e),
        };
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        // ureq hands the same rustls error over directly or inside an io::Error.
        for e in [
            ureq::Error::Rustls(unknown.clone()),
            ureq::Error::Io(std::io::Error::other(unknown)),
        ] {
            let msg = transport(e).to_string();
            assert!(msg.contains("--ca-cert FILE"), "{msg}");
            assert!(msg.contains("--insecure-skip-verify"), "{msg}");
        }
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        let msg = transport(ureq::Error::Rustls(expired)).to_string();
        assert!(
            msg.ends_with("skip verification with --insecure-skip-verify"),
            "{msg}"
        );
        let plain = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        let msg = transport(ureq::Error::Io(std::io::Error::other(plain))).to_string();
        assert!(
            msg.ends_with("allow it with --insecure-allow-http"),
            "{msg}"
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let msg = transport(ureq::Error::Io(refused)).to_string();
        assert!(!msg.contains("--insecure"), "{msg}");
    }

    #[test]
    fn parses_standard_error_body() {
        let b = ErrorBody::parse(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#,
        );
        assert_eq!(b.entries[0].code, "MANIFEST_UNKNOWN");
        assert_eq!(b.to_string(), "MANIFEST_UNKNOWN: manifest unknown");
    }

    #[test]
    fn keeps_other_bodies_short() {
        let b = ErrorBody::parse(&b"<html>\n  oops  </html>".repeat(50));
        assert!(b.entries.is_empty());
        assert!(b.to_string().len() <= 203);
        assert!(b.to_string().starts_with("<html> oops </html>"));
        assert_eq!(ErrorBody::parse(b"").to_string(), "");
    }

    proptest::proptest! {
        #[test]
        fn error_bodies_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let b = ErrorBody::parse(&body);
            proptest::prop_assert!(b.to_string().chars().count() <= 203 || !b.entries.is_empty());
        }
    }
}
