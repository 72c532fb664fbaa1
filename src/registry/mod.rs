//! The registry client (distribution spec v2): endpoint discovery, auth, retries, and the
//! manifest and blob requests the pull pipeline makes. Submodules own one thing each:
//! `http` the agent and redirects, `auth` endpoints and tokens, `challenge` the header
//! grammar, `errors` what can fail.

pub mod auth;
pub mod challenge;
pub mod credentials;
pub mod errors;
pub mod http;
pub mod retry;

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ureq::http::Response;
use ureq::Body;

use self::auth::Endpoint;
pub use self::errors::{ErrorBody, RegistryError};
use self::http::{header, Http, Method};
use self::retry::RetryPolicy;
use crate::digest::{Digest, Hasher, HashingReader};
use crate::manifest::{media, schema1};
use crate::reference::Reference;
use crate::registry::credentials::{CredentialError, CredentialSource};
use crate::report::Reporter;

pub use crate::manifest::MAX_MANIFEST;

/// Everything the client needs, resolved once from flags and environment.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub http: http::HttpSettings,
    pub credentials: CredentialSource,
    /// `--insecure-allow-http`: try plain HTTP when HTTPS fails, for every registry.
    pub allow_http: bool,
    /// Attempts for a transient failure (at least 1).
    pub attempts: u32,
    /// First backoff step (the tests make it zero).
    pub retry_base: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
}

/// A manifest as the registry served it, verified against the digest it was asked for or
/// the one the registry announced.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub bytes: Vec<u8>,
    /// `Content-Type`, without parameters.
    pub media_type: String,
    pub digest: Digest,
}

/// What a `HEAD` of a manifest says.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: String,
}

pub struct Registry {
    http: Http,
    settings: RegistrySettings,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    reporter: Arc<dyn Reporter>,
    retry: RetryPolicy,
}

/// The `Accept` list: every manifest type we understand, schema1 last (a registry given no
/// Accept, or only schema1, converts schema2 to schema1 on the fly).
pub fn manifest_accept() -> String {
    [
        media::OCI_INDEX,
        media::OCI_MANIFEST,
        media::DOCKER_LIST,
        media::DOCKER_MANIFEST,
        media::DOCKER_SCHEMA1_SIGNED,
        media::DOCKER_SCHEMA1,
    ]
    .join(", ")
}

impl Registry {
    pub fn new(
        settings: RegistrySettings,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Registry, http::TlsSetupError> {
        let http = Http::new(&settings.http)?;
        Ok(Registry {
            http,
            retry: RetryPolicy {
                attempts: settings.attempts.max(1),
                base: settings.retry_base,
                deadline: settings
                    .http
                    .timeout
                    .and_then(|t| Some((Instant::now().checked_add(t)?, t))),
            },
            settings,
            endpoints: Mutex::new(HashMap::new()),
            reporter,
        })
    }

    /// HEAD a manifest: its digest without its bytes. `None` when the registry does not say
    /// (no `Docker-Content-Digest`), or answers an error a GET would explain better.
    pub fn head_manifest(&self, r: &Reference) -> Result<Option<ManifestHead>, ClientError> {
        let path = format!("manifests/{}", r.manifest_reference());
        let accept = manifest_accept();
        let resp = match self.request(r, Method::Head, &path, &[("Accept", accept)], "manifest") {
            Ok(resp) => resp,
            Err(ClientError::Registry(
                RegistryError::NotFound { .. } | RegistryError::Status { .. },
            )) => return Ok(None),
            Err(e) => return Err(e),
        };
        let digest = header(&resp, "docker-content-digest").and_then(|d| d.parse().ok());
        let media_type = content_type(&resp);
        Ok(digest.map(|digest| ManifestHead { digest, media_type }))
    }

    /// GET a manifest by tag or digest (`reference` is what goes after `/manifests/`), reading
    /// at most `max` bytes (4 MiB, or the size an index gives) and verified: against `expected`
    /// when given, and against the registry's `Docker-Content-Digest`.
    pub fn get_manifest(
        &self,
        r: &Reference,
        reference: &str,
        expected: Option<&Digest>,
        max: u64,
    ) -> Result<RawManifest, ClientError> {
        let max = max.min(MAX_MANIFEST);
        let path = format!("manifests/{reference}");
        let headers = [("Accept", manifest_accept())];
        let ep = self.endpoint(r)?;
        let url = format!("{}/v2/{}/{path}", ep.base, r.repository());
        // The body is read inside the retried operation: a connection cut mid-manifest is as
        // transient as one cut before the answer (SPEC: truncated bodies).
        let raw = self.retry.run("", self.reporter.as_ref(), || {
            let resp = self.request_once(&ep, r, Method::Get, &path, &headers, "manifest")?;
            read_manifest(resp, url.clone(), expected, max)
        })?;
        Ok(raw)
    }

    /// Read the small blob `d` (a config) into memory, verified, retrying the request and the
    /// read together.
    pub fn get_small_blob(
        &self,
        r: &Reference,
        d: &Digest,
        size: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let path = format!("blobs/{d}");
        let ep = self.endpoint(r)?;
        let url = format!("{}/v2/{}/{path}", ep.base, r.repository());
        let bytes = self.retry.run("", self.reporter.as_ref(), || {
            let resp = self.request_once(&ep, r, Method::Get, &path, &[], "blob")?;
            let mut reader =
                HashingReader::new(resp.into_body().into_reader(), Hasher::new(), size);
            let mut bytes = Vec::with_capacity(size.min(MAX_MANIFEST) as usize);
            reader
                .read_to_end(&mut bytes)
                .map_err(|source| RegistryError::Body {
                    url: url.clone(),
                    source,
                })?;
            reader
                .finish(d)
                .map_err(|source| RegistryError::Body {
                    url: url.clone(),
                    source,
                })?
                .map_err(|source| RegistryError::BlobVerify {
                    digest: d.clone(),
                    url: url.clone(),
                    source,
                })?;
            Ok::<_, RegistryError>(bytes)
        })?;
        Ok(bytes)
    }

    /// Open a blob stream at `offset` (0 for the whole blob). Returns the reader and the offset
    /// it actually starts at: 0 when the server ignored the Range and sent everything.
    pub fn open_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<(Box<dyn Read + Send>, u64), ClientError> {
        let path = format!("blobs/{digest}");
        let mut headers = Vec::new();
        if offset > 0 {
            headers.push(("Range", format!("bytes={offset}-")));
        }
        let resp = self.request(r, Method::Get, &path, &headers, "blob")?;
        let status = resp.status().as_u16();
        let start = if offset > 0 && status == 206 {
            let range = header(&resp, "content-range").unwrap_or("");
            if parse_content_range_start(range) != Some(offset) {
                return Err(RegistryError::BadRange {
                    url: self.url_of(r, &path)?,
                    status,
                    offset,
                    content_range: range.to_string(),
                }
                .into());
            }
            offset
        } else {
            0
        };
        Ok((Box::new(resp.into_body().into_reader()), start))
    }

    /// The size of a blob, from a `HEAD` (schema1 manifests do not carry layer sizes).
    pub fn blob_size(&self, r: &Reference, digest: &Digest) -> Result<u64, ClientError> {
        let path = format!("blobs/{digest}");
        let resp = self.request(r, Method::Head, &path, &[], "blob")?;
        header(&resp, "content-length")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                ClientError::from(RegistryError::MissingLength {
                    url: self.url_of(r, &path).unwrap_or_default(),
                    status: resp.status().as_u16(),
                })
            })
    }

    /// A full URL for a repository path, once the endpoint is known (for messages).
    pub fn url_of(&self, r: &Reference, path: &str) -> Result<String, ClientError> {
        let ep = self.endpoint(r)?;
        Ok(format!("{}/v2/{}/{path}", ep.base, r.repository()))
    }

    /// The endpoint for a reference's registry, probed once per run.
    fn endpoint(&self, r: &Reference) -> Result<Arc<Endpoint>, ClientError> {
        let host = r.api_host().to_string();
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ep) = endpoints.get(&host) {
            return Ok(ep.clone());
        }
        let credentials = self.settings.credentials.lookup(r.registry())?;
        let allow_http = self.settings.allow_http || r.is_loopback();
        let ep = self.retry.run("", self.reporter.as_ref(), || {
            probe(&self.http, &host, allow_http, credentials.clone())
        })?;
        if log::log_enabled!(log::Level::Info) {
            log::info!(
                "registry {host}: {} ({})",
                ep.base,
                match &ep.scheme {
                    auth::Scheme::Anonymous => "no authentication".to_string(),
                    auth::Scheme::Basic => "basic authentication".to_string(),
                    auth::Scheme::Bearer { realm, .. } => format!("bearer tokens from {realm}"),
                },
            );
        }
        let ep = Arc::new(ep);
        endpoints.insert(host, ep.clone());
        Ok(ep)
    }

    /// One request to `/v2/<repository>/<path>` with auth, renewal of a refused token, status
    /// mapping and retries of transient failures. Returns only 2xx responses.
    fn request(
        &self,
        r: &Reference,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        what: &str,
    ) -> Result<Response<Body>, ClientError> {
        let ep = self.endpoint(r)?;
        self.retry
            .run("", self.reporter.as_ref(), || {
                self.request_once(&ep, r, method, path, headers, what)
            })
            .map_err(ClientError::from)
    }

    /// One attempt of [`Registry::request`] (a refused token is still renewed once).
    fn request_once(
        &self,
        ep: &Endpoint,
        r: &Reference,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        what: &str,
    ) -> Result<Response<Body>, RegistryError> {
        let url = format!("{}/v2/{}/{path}", ep.base, r.repository());
        let scope = format!("repository:{}:pull", r.repository());
        let what = format!("{what} {}", describe(r, path));
        let mut renewed = false;
        loop {
            let auth = ep.authorization(&self.http, &scope)?;
            let mut resp = self.http.send(method, &url, headers, auth.as_ref())?;
            let status = resp.status().as_u16();
            if (200..300).contains(&status) {
                return Ok(resp);
            }
            let body = if method == Method::Head {
                ErrorBody::default()
            } else {
                let bytes = resp
                    .body_mut()
                    .with_config()
                    .limit(64 << 10)
                    .read_to_vec()
                    .unwrap_or_default();
                ErrorBody::parse(&bytes)
            };
            match status {
                // A token that the registry refuses although we thought it live has expired
                // or been revoked mid-pull: fetch a new one once and send again.
                401 if ep.uses_tokens() && !renewed && !insufficient_scope(&resp) => {
                    ep.invalidate(&scope);
                    renewed = true;
                    log::info!("token refused: fetching a new one and retrying");
                    continue;
                }
                401 => {
                    return Err(RegistryError::Unauthorized {
                        url: url.clone(),
                        body,
                        has_credentials: ep.credentials.is_some(),
                    })
                }
                403 => {
                    return Err(RegistryError::Denied {
                        url: url.clone(),
                        body,
                    })
                }
                404 => {
                    return Err(RegistryError::NotFound {
                        what: what.clone(),
                        url: url.clone(),
                        body,
                    })
                }
                _ => {
                    return Err(RegistryError::Status {
                        method: method.as_str(),
                        url: url.clone(),
                        status,
                        body,
                        retry_after: header(&resp, "retry-after")
                            .and_then(crate::registry::retry::parse_retry_after),
                    })
                }
            }
        }
    }

    /// The retry policy every request of this run follows (blob streams use it too).
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    pub fn reporter(&self) -> &Arc<dyn Reporter> {
        &self.reporter
    }
}

/// Read and verify a manifest answer: at most `max` bytes, checked against the requested
/// digest and the registry's `Docker-Content-Digest`.
fn read_manifest(
    resp: Response<Body>,
    url: String,
    expected: Option<&Digest>,
    max: u64,
) -> Result<RawManifest, RegistryError> {
    let announced = header(&resp, "docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
    let media_type = content_type(&resp);
    if resp.body().content_length().is_some_and(|n| n > max) {
        return Err(RegistryError::ManifestTooLarge { url, limit: max });
    }
    let mut bytes = Vec::new();
    resp.into_body()
        .into_reader()
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| RegistryError::Body {
            url: url.clone(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(RegistryError::ManifestTooLarge { url, limit: max });
    }
    // A signed schema1 manifest's digest covers its JWS payload, not the bytes served; the
    // payload is also all that is parsed later (`Manifest::parse`), so whatever a server
    // appends outside it is never used. The payload route is taken only when the payload
    // is itself schema1: otherwise a body dressed as schema1 could carry the bytes of
    // another manifest as its "payload" and pass that manifest's digest.
    let actual = if media::is_schema1(&media_type, &bytes) {
        let payload = schema1::payload(&bytes).map_err(|e| RegistryError::Schema1Payload {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        if media::classify("", &payload) != Some(media::Kind::Schema1) {
            return Err(RegistryError::Schema1Payload {
                url,
                reason: "its payload is not a schema1 manifest".into(),
            });
        }
        Digest::sha256_of(&payload)
    } else {
        Digest::sha256_of(&bytes)
    };
    let digest = verify_manifest(actual, expected, announced.as_ref(), &url)?;
    Ok(RawManifest {
        bytes,
        media_type,
        digest,
    })
}

/// SPEC: verify every manifest against the requested digest, and against
/// `Docker-Content-Digest` when present. Either one disagreeing with the bytes is an error.
fn verify_manifest(
    actual: Digest,
    expected: Option<&Digest>,
    announced: Option<&Digest>,
    url: &str,
) -> Result<Digest, RegistryError> {
    for want in expected.into_iter().chain(announced) {
        if want != &actual {
            return Err(RegistryError::ManifestDigest {
                url: url.to_string(),
                expected: want.clone(),
                actual,
            });
        }
    }
    Ok(actual)
}

/// HTTPS first; plain HTTP only where allowed, and only if the HTTP answer is a registry's
/// (200 or 401 on `/v2/`). When both fail, the HTTPS failure is the one reported: it is the
/// one the user can act on (an untrusted certificate, say) (SPEC: --insecure-allow-http).
fn probe(
    http: &Http,
    host: &str,
    allow_http: bool,
    credentials: Option<crate::registry::credentials::Credentials>,
) -> Result<Endpoint, RegistryError> {
    let https = Endpoint::probe(http, host, format!("https://{host}"), credentials.clone());
    match https {
        Ok(ep) => Ok(ep),
        // Only a connection that was made and then failed (a TLS handshake with a plain HTTP
        // server, say) is worth trying as HTTP: when nothing answered at this host and port,
        // HTTP would wait out the same connect timeout again.
        Err(RegistryError::Transport { ref source, .. })
            if crate::registry::retry::never_connected(source) =>
        {
            https
        }
        Err(e) if allow_http && matches!(e, RegistryError::Transport { .. }) => {
            match Endpoint::probe(http, host, format!("http://{host}"), credentials) {
                Ok(ep) => Ok(ep),
                // The server speaks plain HTTP and answered with a status of its own (a 503
                // while it starts, say): that answer is the one to retry and to report.
                Err(status @ RegistryError::Status { .. }) => Err(status),
                // Otherwise (nothing answered, or a TLS server refused plain HTTP) the HTTPS
                // failure is what the user can act on: an untrusted certificate, say.
                Err(_) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// A 401 whose challenge says `error="insufficient_scope"` refuses a token that is valid but
/// does not grant this repository (RFC 6750 section 3.1): fetching the same token again cannot
/// help, unlike `invalid_token` (expired or revoked), which a renewal fixes.
fn insufficient_scope(resp: &Response<Body>) -> bool {
    auth::challenges(resp)
        .iter()
        .any(|c| c.param("error") == Some("insufficient_scope"))
}

fn content_type(resp: &Response<Body>) -> String {
    header(resp, "content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// `bytes 100-199/200` -> 100.
fn parse_content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, _total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    (end >= start).then_some(start)
}

fn describe(r: &Reference, path: &str) -> String {
    match path.strip_prefix("manifests/") {
        Some(m) if m.contains(':') && m.parse::<Digest>().is_ok() => {
            format!("{}/{}@{m}", r.registry(), r.repository())
        }
        Some(m) => format!("{}/{}:{m}", r.registry(), r.repository()),
        None => path.strip_prefix("blobs/").unwrap_or(path).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range_start("bytes 100-199/*"), Some(100));
        assert_eq!(parse_content_range_start("bytes 200-100/300"), None);
        assert_eq!(parse_content_range_start("items 1-2/3"), None);
        assert_eq!(parse_content_range_start(""), None);
    }

    #[test]
    fn manifests_are_checked_against_both_digests() {
        let good = Digest::sha256_of(b"{}");
        let bad = Digest::sha256_of(b"other");
        let v = |e, a| verify_manifest(good.clone(), e, a, "u");
        assert_eq!(v(Some(&good), Some(&good)).unwrap(), good);
        assert!(v(None, None).is_ok());
        assert!(v(Some(&good), Some(&bad)).is_err());
        assert!(v(Some(&bad), Some(&good)).is_err());
        assert!(v(None, Some(&bad)).is_err());
    }

    #[test]
    fn accept_lists_schema1_last() {
        let a = manifest_accept();
        assert!(a.starts_with(media::OCI_INDEX));
        assert!(a.ends_with(media::DOCKER_SCHEMA1));
    }

    proptest::proptest! {
        #[test]
        fn content_range_never_panics(v in "\\PC{0,40}") {
            let _ = parse_content_range_start(&v);
        }

        #[test]
        fn content_range_round_trips(start in 0u64..u64::MAX / 2, len in 0u64..1 << 40) {
            let v = format!("bytes {start}-{}/{}", start + len, start + len + 1);
            proptest::prop_assert_eq!(parse_content_range_start(&v), Some(start));
        }
    }
}
