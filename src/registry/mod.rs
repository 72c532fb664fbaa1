//! The registry client (distribution spec v2): endpoint discovery, auth, retries, and the
//! manifest and blob requests the pull pipeline makes. This file owns the `Registry` value and
//! the one request path (endpoint, auth, status mapping, retries); submodules own one thing
//! each: `http` the agent and redirects, `hosts` which hosts serve a registry, `auth`
//! endpoints and tokens, `challenge` the header grammar, `credentials` where credentials come
//! from, `retry` when to try again, `manifests` and `blobs` the requests, `errors` what can
//! fail. Nothing here knows about the store.

pub mod auth;
mod blobs;
pub use blobs::Chunk;
pub mod certs;
pub mod challenge;
pub mod credentials;
pub mod errors;
pub mod hosts;
pub mod http;
mod manifests;
mod preconnect;
pub mod proxy;
pub mod registries_conf;
pub mod retry;
mod tags;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::http::Response;
use ureq::Body;

use self::auth::Endpoint;
pub use self::errors::{ErrorBody, RegistryError};
use self::http::{header, Http, Method};
pub use self::manifests::{manifest_accept, ManifestHead, RawManifest};
use self::retry::RetryPolicy;
use crate::digest::Digest;
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
    /// Mirrors and registry locations (`--mirror`, registries.conf).
    pub mirrors: Vec<hosts::Rule>,
    /// Connections a pull's transfers will use per host (its `--jobs`; 0 for a command that
    /// fetches no blobs): opened while the first manifest `GET` to the host is in flight.
    pub preconnect: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
}

pub struct Registry {
    http: Http,
    settings: RegistrySettings,
    /// Each endpoint behind its own lock: threads that need one wait for its one probe, and a
    /// probe of one (retrying an unreachable host) holds up no other.
    endpoints: Mutex<HashMap<String, EndpointCell>>,
    reporter: Arc<dyn Reporter>,
    retry: RetryPolicy,
    /// Mirrors that could not be connected to: skipped for the rest of the run.
    dead_mirrors: Mutex<HashSet<String>>,
    /// Mirrors whose `/v2/` probe failed otherwise (a 5xx, a refused login), by endpoint key,
    /// and when: skipped without a request for [`PROBE_AGAIN_AFTER`], then probed again.
    failed_probes: Mutex<HashMap<String, Instant>>,
    /// (mirror, digest) pairs whose bytes did not match the digest: never asked again.
    lying_mirrors: Mutex<HashSet<(String, Digest)>>,
    /// Registries that answered a chunk request with something other than that exact 206.
    no_chunks: Mutex<HashSet<String>>,
    /// Where a blob's chunk request was redirected to (a CDN's signed URL), so that its other
    /// chunks go there directly while the URL is fresh.
    blob_locations: Mutex<HashMap<Digest, blobs::Location>>,
}

/// One endpoint, probed once: empty until its probe succeeds.
type EndpointCell = Arc<Mutex<Option<Arc<Endpoint>>>>;

/// Which host served an answer: a mirror's configured name, or None for the registry.
pub type ServedBy = Option<String>;

/// A mirror whose `/v2/` answered with a failure is not asked again for this long: probing
/// it before each request would add a round trip to every one.
const PROBE_AGAIN_AFTER: Duration = Duration::from_secs(30);

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
            dead_mirrors: Mutex::new(HashSet::new()),
            failed_probes: Mutex::new(HashMap::new()),
            lying_mirrors: Mutex::new(HashSet::new()),
            no_chunks: Mutex::new(HashSet::new()),
            blob_locations: Mutex::new(HashMap::new()),
        })
    }

    /// A URL for a repository path at the registry itself, for messages: never a request
    /// (with mirrors serving, the registry may be out of reach), so its scheme is the one
    /// already learned, else https.
    pub fn url_of(&self, r: &Reference, path: &str) -> Result<String, ClientError> {
        let host = self.registry_host(r);
        let cell = self
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&endpoint_key(&host))
            .cloned();
        // Being probed right now: not known yet (a message never waits for a probe).
        let known = cell.and_then(|c| Some(c.try_lock().ok()?.as_ref()?.base.clone()));
        let base = known.unwrap_or_else(|| format!("https://{}", host.api_host));
        Ok(format!("{base}/v2/{}/{path}", host.repository))
    }

    /// registries.conf's `blocked = true` for `r`'s registry: refused before anything is sent.
    fn check_blocked(&self, r: &Reference) -> Result<(), ClientError> {
        if hosts::rule_for(&self.settings.mirrors, r).is_some_and(|rule| rule.blocked) {
            return Err(RegistryError::Blocked {
                reference: format!("{}/{}", r.registry(), r.repository()),
            }
            .into());
        }
        Ok(())
    }

    /// The registry's own host (last in its list), where registries.conf may have moved it.
    fn registry_host(&self, r: &Reference) -> hosts::Host {
        let mut all = hosts::hosts_for(r, &self.settings);
        all.pop()
            .expect("a registry is always one of its own hosts")
    }

    /// The endpoint of one host, probed once per run (with retries for the registry; one
    /// attempt for a mirror). The thread that probes sends `first`, the request it is about to
    /// make, as the probe ([`Endpoint::probe`]), and gets its answer back when that answer is
    /// the one the request would get; every other caller gets None.
    fn endpoint_of(
        &self,
        h: &hosts::Host,
        first: Option<&auth::First<'_>>,
    ) -> Result<(Arc<Endpoint>, Option<Response<Body>>), ClientError> {
        let host = h.api_host.clone();
        // A mirror and a registry on one host may differ in what they allow (plain HTTP) and
        // whose credentials they take: each gets its own endpoint.
        let key = endpoint_key(h);
        let cell = self
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let mut held = cell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ep) = held.as_ref() {
            return Ok((ep.clone(), None));
        }
        let credentials = self.settings.credentials.lookup(&h.credentials_for)?;
        let http = self.http.unverified(h.insecure);
        // A manifest GET (not a re-pull's HEAD) is followed by blobs: the connections of the
        // other transfers are opened beside it when it is slow to come back.
        let _opening = (self.settings.preconnect > 1
            && first.is_some_and(|f| f.method == Method::Get))
        .then(|| http.preconnect(&host, self.settings.preconnect - 1));
        let (ep, answered) = if h.mirror.is_some() {
            probe(&http, &host, h.allow_http, credentials, first)?
        } else {
            self.retry.run("", self.reporter.as_ref(), || {
                probe(&http, &host, h.allow_http, credentials.clone(), first)
            })?
        };
        if log::log_enabled!(log::Level::Info) {
            log::info!(
                "registry {host}: {} ({})",
                ep.base,
                match &ep.scheme() {
                    auth::Scheme::Anonymous => "no authentication".to_string(),
                    auth::Scheme::Basic => "basic authentication".to_string(),
                    auth::Scheme::Bearer { realm, .. } => format!("bearer tokens from {realm}"),
                },
            );
        }
        let ep = Arc::new(ep);
        *held = Some(ep.clone());
        Ok((ep, answered))
    }

    /// Run `op` against each source of `r` in turn (SPEC: Networks): each mirror once, without
    /// backoff, skipping one that failed, could not be reached (then for the whole run) or
    /// served wrong bytes for `digest`; then the registry under the full retry policy. A tag
    /// (`digest` None on a manifest path) is not asked of a digest-only mirror.
    ///
    /// `first`, the method and headers of the request `op` makes to `path`, lets a host not
    /// probed yet be probed with that very request; `op` is then handed its answer (None
    /// otherwise) and must use it rather than send the request again.
    fn with_sources<T>(
        &self,
        r: &Reference,
        path: &str,
        digest: Option<&Digest>,
        first: Option<(Method, &[(&str, String)])>,
        op: impl Fn(&Endpoint, &hosts::Host, Option<Response<Body>>) -> Result<T, RegistryError>,
    ) -> Result<(T, ServedBy), ClientError> {
        let first_for = |h: &hosts::Host| {
            first.map(|(method, headers)| auth::First {
                method,
                target: target(h, path),
                headers,
            })
        };
        self.check_blocked(r)?;
        let mut all = hosts::hosts_for(r, &self.settings);
        let registry = all
            .pop()
            .expect("a registry is always one of its own hosts");
        let by_tag = path.starts_with("manifests/") && digest.is_none();
        for h in &all {
            let Some(m) = &h.mirror else { continue };
            if by_tag && !h.capabilities.resolve {
                continue;
            }
            if self.is_dead(&h.api_host) {
                continue;
            }
            if let Some(d) = digest {
                let lying = self.lying_mirrors.lock().unwrap_or_else(|e| e.into_inner());
                if lying.contains(&(m.configured.clone(), d.clone())) {
                    continue;
                }
            }
            if self.probe_failed_lately(h) {
                continue;
            }
            let answer = match self.endpoint_of(h, first_for(h).as_ref()) {
                Ok((ep, answered)) => op(&ep, h, answered).map_err(ClientError::from),
                Err(e) => {
                    if !unreachable(&e) {
                        self.failed_probes
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(endpoint_key(h), Instant::now());
                    }
                    Err(e)
                }
            };
            match answer {
                Ok(v) => return Ok((v, Some(m.configured.clone()))),
                Err(e) => {
                    if unreachable(&e) {
                        self.dead_mirrors
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(h.api_host.clone());
                        self.reporter.warning(&format!(
                            "mirror {} cannot be reached ({e}); not using it for the rest of this run",
                            m.configured
                        ));
                    } else {
                        log::info!("mirror {}: {e}; trying the next source", m.configured);
                    }
                }
            }
        }
        let (ep, mut answered) = self.endpoint_of(&registry, first_for(&registry).as_ref())?;
        let v = self.retry.run("", self.reporter.as_ref(), || {
            op(&ep, &registry, answered.take())
        })?;
        Ok((v, None))
    }

    fn probe_failed_lately(&self, h: &hosts::Host) -> bool {
        self.failed_probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&endpoint_key(h))
            .is_some_and(|at| at.elapsed() < PROBE_AGAIN_AFTER)
    }

    fn is_dead(&self, host: &str) -> bool {
        self.dead_mirrors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(host)
    }

    /// The mirror `served_by` sent bytes that are not `digest`: the next request for it
    /// goes to the next source.
    pub fn distrust(&self, served_by: &str, digest: &Digest) {
        self.reporter.warning(&format!(
            "mirror {served_by} served bytes that are not {digest}; fetching it from the next source"
        ));
        self.lying_mirrors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((served_by.to_string(), digest.clone()));
        // Where its chunks were redirected is that mirror's word too.
        self.forget_blob_location(digest);
    }

    /// One request to `/v2/<repository>/<path>` with auth, renewal of a refused token, status
    /// mapping and retries of transient failures, from the first source that answers. Returns
    /// only 2xx responses.
    fn request(
        &self,
        r: &Reference,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        what: &str,
        digest: Option<&Digest>,
    ) -> Result<(Response<Body>, ServedBy), ClientError> {
        self.with_sources(
            r,
            path,
            digest,
            Some((method, headers)),
            |ep, h, answered| self.request_once(ep, h, r, method, path, headers, what, answered),
        )
    }

    /// One attempt of [`Registry::request`] (a refused token is still renewed once).
    /// `answered`: the answer the endpoint's probe got to this very request, used in place of
    /// sending it.
    #[allow(clippy::too_many_arguments)]
    fn request_once(
        &self,
        ep: &Endpoint,
        h: &hosts::Host,
        r: &Reference,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        what: &str,
        mut answered: Option<Response<Body>>,
    ) -> Result<Response<Body>, RegistryError> {
        let url = format!("{}{}", ep.base, target(h, path));
        let scope = format!("repository:{}:pull", h.repository);
        let what = format!("{what} {}", describe(r, path));
        let mut renewed = false;
        let http = self.http.unverified(h.insecure);
        loop {
            let mut resp = match answered.take() {
                Some(resp) => resp,
                None => {
                    let auth = ep.authorization(&http, &scope)?;
                    http.send(method, &url, headers, auth.as_ref())?
                }
            };
            let status = resp.status().as_u16();
            if path.starts_with("manifests/") {
                log_rate_limit(&resp);
            }
            if (200..300).contains(&status) {
                return Ok(resp);
            }
            let body = if method == Method::Head {
                ErrorBody::default()
            } else {
                ErrorBody::parse(&http::read_short(&mut resp))
            };
            match status {
                // A token that the registry refuses although we thought it live has expired
                // or been revoked mid-pull: fetch a new one once and send again.
                // An endpoint that needed no authentication so far now asks for it: learn
                // how, once, and send again.
                401 if !renewed && ep.adopt_challenge(&resp, &h.api_host) => {
                    renewed = true;
                    log::info!("{}: asks for authentication now; sending again", h.api_host);
                    continue;
                }
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
                _ => return Err(status_error(method, url.clone(), body, &resp)),
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

/// HTTPS first; plain HTTP only where allowed, and only if the HTTP answer is a registry's
/// (200 or 401 on `/v2/`). When both fail, the HTTPS failure is the one reported: it is the
/// one the user can act on (an untrusted certificate, say) (SPEC: --insecure-allow-http).
fn probe(
    http: &Http,
    host: &str,
    allow_http: bool,
    credentials: Option<crate::registry::credentials::Credentials>,
    first: Option<&auth::First<'_>>,
) -> Result<(Endpoint, Option<Response<Body>>), RegistryError> {
    let https = Endpoint::probe(
        http,
        host,
        format!("https://{host}"),
        credentials.clone(),
        first,
    );
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
        // A proxy that refused the CONNECT for HTTPS (squid allows it to port 443 only, by
        // default) says nothing of the registry: plain HTTP goes through it another way.
        Err(e)
            if allow_http
                && matches!(
                    e,
                    RegistryError::Transport { .. } | RegistryError::Proxy { refused: true, .. }
                ) =>
        {
            let not_tls = matches!(&e, RegistryError::Transport { source, .. }
                if matches!(http::tls_problem(source), Some(http::TlsProblem::NotTls)));
            match &e {
                _ if not_tls => log::info!("{host}: not TLS, trying HTTP"),
                RegistryError::Transport { .. } => log::info!("{host}: HTTPS failed, trying HTTP"),
                _ => log::info!("{host}: the proxy refused HTTPS, trying HTTP"),
            }
            match Endpoint::probe(http, host, format!("http://{host}"), credentials, first) {
                Ok(ep) => Ok(ep),
                // The server speaks plain HTTP and answered with a status of its own (a 503
                // while it starts, say): that answer is the one to retry and to report.
                Err(status @ RegistryError::Status { .. }) => Err(status),
                // A proxy refused the plain-HTTP request (a 407, say): the proxy is what the
                // user has to fix.
                Err(proxy @ RegistryError::Proxy { .. }) => Err(proxy),
                // The server answered HTTPS in plain HTTP, so it speaks HTTP: what went wrong
                // over HTTP (no answer before `--timeout`, a connection cut) is the story.
                Err(plain @ RegistryError::Transport { .. }) if not_tls => Err(plain),
                // Otherwise (nothing answered, or a TLS server refused plain HTTP) the HTTPS
                // failure is what the user can act on: an untrusted certificate, say.
                Err(_) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// What Docker Hub counts, a manifest GET, with its figures when the registry sends them
/// (SPEC: Networks, `-v`).
fn log_rate_limit(resp: &Response<Body>) {
    let limit = header(resp, "ratelimit-limit");
    let remaining = header(resp, "ratelimit-remaining");
    if limit.is_some() || remaining.is_some() {
        log::info!(
            "rate limit: ratelimit-limit {}, ratelimit-remaining {}",
            limit.unwrap_or("-"),
            remaining.unwrap_or("-")
        );
    }
}

/// The error of an answer whose status has no meaning of its own (a 5xx, a 429 with the
/// registry's rate-limit figures, ...), retried where the status is transient.
fn status_error(
    method: Method,
    url: String,
    body: ErrorBody,
    resp: &Response<Body>,
) -> RegistryError {
    let status = resp.status().as_u16();
    let rate_limit = (status == 429).then(|| {
        Box::new(errors::RateLimit {
            limit: header(resp, "ratelimit-limit").map(str::to_string),
            remaining: header(resp, "ratelimit-remaining").map(str::to_string),
        })
    });
    RegistryError::Status {
        method: method.as_str(),
        url,
        status,
        body,
        retry_after: header(resp, "retry-after")
            .and_then(crate::registry::retry::parse_retry_after),
        rate_limit,
    }
}

/// The path and query of a request to `path` in `h`'s repository: `/v2/<repository>/<path>`,
/// and for a mirror the registry it is asked on behalf of (containerd's `ns=` dialect).
fn target(h: &hosts::Host, path: &str) -> String {
    let mut t = format!("/v2/{}/{path}", h.repository);
    if let Some(m) = &h.mirror {
        t.push(if t.contains('?') { '&' } else { '?' });
        t.push_str(&format!("ns={}", m.registry));
    }
    t
}

/// The endpoint cache's key for a host: where, whether plain HTTP may be tried, and whose
/// credentials it takes.
fn endpoint_key(h: &hosts::Host) -> String {
    format!(
        "{} {} {} {}",
        h.api_host, h.allow_http, h.insecure, h.credentials_for
    )
}

/// A mirror that could not be connected to at all (refused, unresolvable, connect timeout).
fn unreachable(e: &ClientError) -> bool {
    let ClientError::Registry(e) = e else {
        return false;
    };
    let e = match e {
        RegistryError::Retried { source, .. } => source.as_ref(),
        e => e,
    };
    matches!(e, RegistryError::Transport { source, .. } if retry::never_connected(source))
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

fn describe(r: &Reference, path: &str) -> String {
    match path.strip_prefix("manifests/") {
        Some(m) if m.contains(':') && m.parse::<Digest>().is_ok() => {
            format!("{}/{}@{m}", r.registry(), r.repository())
        }
        Some(m) => format!("{}/{}:{m}", r.registry(), r.repository()),
        None if path.starts_with("tags/list") => format!("{}/{}", r.registry(), r.repository()),
        None => path.strip_prefix("blobs/").unwrap_or(path).to_string(),
    }
}
