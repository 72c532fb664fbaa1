//! The one HTTP agent: TLS roots, timeouts, User-Agent, and redirects followed by hand so that
//! credentials never reach another origin (SPEC: Registry protocol, last rule).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ureq::http::{Response, StatusCode};
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::Body;

use super::certs::pem_certs;
use super::errors::RegistryError;
pub use super::preconnect::Opening;
use super::preconnect::{Ahead, PreconnectingConnector};
use crate::registry::credentials::Secret;

/// How the agent is built; resolved once from flags.
/// The most parallel requests a run makes (`--jobs`' upper bound): the pool keeps that many
/// connections per host.
pub const MAX_JOBS: usize = 64;

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub ca_certs: Vec<PathBuf>,
    pub insecure_skip_verify: bool,
    /// Whole-run budget (`--timeout`).
    pub timeout: Option<Duration>,
    /// A connect attempt that takes longer than this is a dead host.
    pub connect_timeout: Duration,
    /// A registry that sends nothing for this long on an open connection has stalled.
    pub read_timeout: Duration,
    /// The proxies of the environment, chosen per request (ureq's own lookup is off).
    pub proxy: super::proxy::ProxyRules,
    /// certs.d trees (`--cert-dir`, else [`super::certs::SYSTEM_CERT_DIRS`]), read per host.
    pub cert_dirs: Vec<PathBuf>,
    /// The registries the run talks to (`host[:port]` as references name them): each one with
    /// a certs.d directory gets its own TLS setup.
    pub hosts: Vec<String>,
    /// Hosts whose certificates are not verified (registries.conf `insecure = true`).
    pub unverified_hosts: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("--ca-cert {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--ca-cert {path}: not a PEM certificate file (no BEGIN CERTIFICATE block)")]
    Empty { path: PathBuf },
    #[error("--ca-cert {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("certs.d {path}: {reason}")]
    CertDir { path: PathBuf, reason: String },
    #[error("certs.d: {found} has no {missing} beside it (a client certificate needs its key, and a key its certificate)")]
    UnpairedClientFile { found: PathBuf, missing: PathBuf },
}

/// A connect attempt that takes longer than this is a dead host; with the default attempts
/// this keeps "cannot reach the registry at all" within about a minute (SPEC). The tests
/// shorten it with IMAGEC_CONNECT_TIMEOUT_MS (read by the settings).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A registry that sends nothing for this long on an open connection has stalled: the request
/// is retried (a blob resumes with Range). The tests shorten it with IMAGEC_STALL_TIMEOUT_MS.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_REDIRECTS: usize = 10;

/// The agents of a run. Cloning is cheap (one `Arc`); [`Http::unverified`] gives a handle
/// that sends to an insecure host (registries.conf `insecure = true`) without checking its
/// certificate, and to every other host as usual.
#[derive(Clone)]
pub struct Http {
    inner: std::sync::Arc<Agents>,
    unverified: bool,
}

struct Agents {
    agent: ureq::Agent,
    /// Agents for hosts with a certs.d directory (their CAs, their client certificate), by
    /// the authority URLs name them with (`host[:port]`, lowercase).
    by_host: HashMap<String, ureq::Agent>,
    /// The same, without certificate checks, for the hosts marked insecure: used only by a
    /// handle from [`Http::unverified`] (an endpoint configured insecure), so that another
    /// reference to the same host (a registry under a mirror's host, a prefix the insecure
    /// rule does not cover) is still verified.
    unverified_by_host: HashMap<String, ureq::Agent>,
    proxy: super::proxy::ProxyRules,
    /// Connections opened ahead, which every agent's connector takes before opening its own.
    ahead: std::sync::Arc<Ahead>,
    connect_timeout: Duration,
    /// `--timeout` bounds the whole run: each request gets what is left of it, and ureq keeps
    /// counting while the body is read.
    deadline: Option<(Instant, Duration)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
        }
    }
}

impl Http {
    pub fn new(settings: &HttpSettings) -> Result<Http, TlsSetupError> {
        let tls = || TlsConfig::builder().disable_verification(settings.insecure_skip_verify);
        let roots = if settings.ca_certs.is_empty() {
            None
        } else {
            Some(root_certs_with(&settings.ca_certs)?)
        };
        let ahead = std::sync::Arc::new(Ahead::default());
        let mut by_host = HashMap::new();
        let mut unverified_by_host = HashMap::new();
        let mut hosts: Vec<String> = settings
            .hosts
            .iter()
            .chain(&settings.unverified_hosts)
            .map(|h| h.to_ascii_lowercase())
            .collect();
        hosts.sort();
        hosts.dedup();
        let unverified: Vec<String> = settings
            .unverified_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        for host in &hosts {
            let found = super::certs::for_host(&settings.cert_dirs, host)?;
            let insecure = unverified.contains(host);
            if found.is_none() && !insecure {
                continue;
            }
            let key = crate::reference::api_host_of(host).to_ascii_lowercase();
            let mut own: Option<(Vec<Certificate<'static>>, _)> = None;
            if let Some(found) = found {
                let mut certs = match &roots {
                    Some(r) => r.clone(),
                    None => root_certs_with(&[])?,
                };
                let n = found.cas.len();
                certs.extend(found.cas);
                let (client, pair) = found.client.unzip();
                log::info!(
                    "{host}: TLS from {} ({n} CA certificate{}{})",
                    found.dir.display(),
                    if n == 1 { "" } else { "s" },
                    client
                        .map(|p| format!(", client certificate {}", p.display()))
                        .unwrap_or_default()
                );
                own = Some((certs, pair));
            }
            let host_tls = |off: bool| {
                let mut t = tls();
                if let Some((certs, pair)) = &own {
                    t = t
                        .root_certs(RootCerts::new_with_certs(certs))
                        .client_cert(pair.clone());
                } else if let Some(r) = &roots {
                    t = t.root_certs(RootCerts::new_with_certs(r));
                }
                if off {
                    t = t.disable_verification(true);
                }
                t.build()
            };
            if insecure {
                log::info!("{host}: TLS not verified where it is configured insecure");
                unverified_by_host
                    .insert(key.clone(), agent_with(settings, host_tls(true), &ahead));
            }
            by_host.insert(key, agent_with(settings, host_tls(false), &ahead));
        }
        let mut tls = tls();
        if let Some(r) = roots {
            tls = tls.root_certs(RootCerts::new_with_certs(&r));
        }
        Ok(Http {
            inner: std::sync::Arc::new(Agents {
                agent: agent_with(settings, tls.build(), &ahead),
                ahead,
                by_host,
                unverified_by_host,
                proxy: settings.proxy.clone(),
                connect_timeout: settings.connect_timeout,
                deadline: settings
                    .timeout
                    .and_then(|t| Some((Instant::now().checked_add(t)?, t))),
            }),
            unverified: false,
        })
    }

    /// A handle for an endpoint configured insecure (`yes`): requests to its host skip the
    /// certificate check; requests elsewhere (a redirect to a CDN) are verified as usual.
    pub fn unverified(&self, yes: bool) -> Http {
        Http {
            inner: self.inner.clone(),
            unverified: yes,
        }
    }

    /// Open `n` connections to `authority` in the background, for the requests that will
    /// follow the one about to be sent, unless its answer comes soon after its connection is
    /// made (drop the guard when it has); nothing when a proxy would carry them (see
    /// [`super::preconnect`]).
    pub fn preconnect(&self, authority: &str, n: usize) -> Opening {
        let proxied = ["https", "http"].iter().any(|s| {
            self.inner
                .proxy
                .for_url(&format!("{s}://{authority}/v2/"))
                .is_some()
        });
        let n = if proxied { 0 } else { n };
        self.inner
            .ahead
            .want(authority, n, self.inner.connect_timeout)
    }

    /// The agent for a URL: its host's own, when it has a certs.d directory (or, for an
    /// insecure endpoint's handle, is marked insecure).
    fn agent_for(&self, url: &str) -> &ureq::Agent {
        let authority = url
            .split_once("://")
            .map_or(url, |(_, rest)| rest)
            .split(['/', '?', '#'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if self.unverified {
            if let Some(a) = self.inner.unverified_by_host.get(&authority) {
                return a;
            }
        }
        self.inner
            .by_host
            .get(&authority)
            .unwrap_or(&self.inner.agent)
    }

    /// What is left of `--timeout` for a request about to be sent (None without one); an
    /// error once it is spent.
    fn time_left(&self, method: &str, url: &str) -> Result<Option<Duration>, RegistryError> {
        let Some((deadline, total)) = self.inner.deadline else {
            return Ok(None);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RegistryError::Deadline {
                seconds: total.as_secs(),
                last: format!("{method} {} not sent", loggable(url)),
            });
        }
        Ok(Some(left))
    }

    /// POST an `application/x-www-form-urlencoded` body (already encoded), for an OAuth2 token
    /// endpoint. Not redirected: a token endpoint that redirects is answered as it stands. The
    /// body holds a secret (a refresh token) and is never logged.
    pub fn post_form(&self, url: &str, form: &Secret) -> Result<Response<Body>, RegistryError> {
        let start = Instant::now();
        let mut req = self
            .agent_for(url)
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded");
        let left = self.time_left("POST", url)?;
        let tunnel = self.inner.proxy.tunnel_for(url).cloned();
        req = req.config().timeout_global(left).proxy(tunnel).build();
        let via = self.inner.proxy.via(url);
        let via_shown = via.as_ref().map(|v| v.shown.clone());
        let shown = loggable(url);
        let resp = req.send(form.expose().as_bytes()).map_err(|e| {
            if let Some(err) = via
                .as_ref()
                .and_then(|v| proxy_failure(&e, v, "POST", &shown))
            {
                log::info!("POST {shown} -> error through proxy: {e}");
                return err;
            }
            log::info!("POST {shown} -> error: {e}");
            RegistryError::Transport {
                method: "POST",
                url: shown.clone(),
                source: Box::new(e),
            }
        })?;
        log::info!(
            "POST {shown} -> {} ({} ms, with a refresh token{})",
            resp.status().as_u16(),
            start.elapsed().as_millis(),
            via_shown
                .as_deref()
                .map(|p| format!(", via proxy {p}"))
                .unwrap_or_default()
        );
        self.refused_by_proxy(&resp, url, "POST", &shown)?;
        Ok(resp)
    }

    /// Send a request, following redirects. `auth` goes only to the origin of `url`: a redirect
    /// to another scheme, host or port (S3, a CDN) is followed without it, as docker does.
    pub fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        auth: Option<&Secret>,
    ) -> Result<Response<Body>, RegistryError> {
        let origin = origin_of(url);
        let mut current = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let same_origin = origin_of(&current) == origin;
            let start = Instant::now();
            let mut req = match method {
                Method::Get => self.agent_for(&current).get(&current),
                Method::Head => self.agent_for(&current).head(&current),
            };
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let left = self.time_left(method.as_str(), &current)?;
            req = req
                .config()
                .timeout_global(left)
                .proxy(self.inner.proxy.tunnel_for(&current).cloned())
                .build();
            let via = self.inner.proxy.via(&current);
            let via_shown = via.as_ref().map(|v| v.shown.clone());
            if let (Some(a), true) = (auth, same_origin) {
                req = req.header("Authorization", a.expose());
            }
            let shown = loggable(&current);
            let resp = req.call().map_err(|e| {
                if let Some(via) = &via {
                    if let Some(err) = proxy_failure(&e, via, method.as_str(), &shown) {
                        log::info!(
                            "{} {shown} -> error through proxy {}: {e}",
                            method.as_str(),
                            via.shown
                        );
                        return err;
                    }
                }
                match tls_problem(&e) {
                    Some(TlsProblem::NotTls) => {
                        log::info!(
                            "{} {shown} -> not TLS (a plain HTTP server?)",
                            method.as_str()
                        )
                    }
                    _ => log::info!("{} {shown} -> error: {e}", method.as_str()),
                }
                RegistryError::Transport {
                    method: method.as_str(),
                    url: shown.clone(),
                    source: Box::new(e),
                }
            })?;
            let status = resp.status();
            log::info!(
                "{} {shown} -> {} ({} ms{}{})",
                method.as_str(),
                status.as_u16(),
                start.elapsed().as_millis(),
                if auth.is_some() && same_origin {
                    ", with credentials"
                } else {
                    ""
                },
                via_shown
                    .as_deref()
                    .map(|p| format!(", via proxy {p}"))
                    .unwrap_or_default()
            );
            self.refused_by_proxy(&resp, &current, method.as_str(), &shown)?;
            if !is_redirect(status) {
                let mut resp = resp;
                // Only another origin is a CDN's signed URL; a redirect within the registry's
                // origin may want the credentials a direct request would not carry.
                if origin_of(&current) != origin {
                    resp.extensions_mut().insert(RedirectedTo(current));
                }
                return Ok(resp);
            }
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .and_then(|l| resolve(&current, l))
                .ok_or_else(|| RegistryError::BadRedirect { url: shown.clone() })?;
            if auth.is_some() && origin_of(&location) != origin {
                log::info!(
                    "redirect to another origin ({}): not sending credentials",
                    origin_of(&location)
                );
            }
            current = location;
        }
        Err(RegistryError::TooManyRedirects {
            url: url.to_string(),
        })
    }
}

/// On a response that came after redirects to another origin: the URL that answered (a
/// CDN's signed URL).
#[derive(Debug, Clone)]
pub struct RedirectedTo(pub String);

impl Http {
    /// A 407 answered by a proxy that had the request in absolute form (plain HTTP): the
    /// proxy's failure, as a refused `CONNECT` is.
    fn refused_by_proxy(
        &self,
        resp: &Response<Body>,
        url: &str,
        method: &'static str,
        shown: &str,
    ) -> Result<(), RegistryError> {
        if resp.status() != StatusCode::PROXY_AUTHENTICATION_REQUIRED
            || self.inner.proxy.forwards(url).is_none()
        {
            return Ok(());
        }
        let Some(via) = self.inner.proxy.via(url) else {
            return Ok(());
        };
        Err(RegistryError::Proxy {
            refused: true,
            reason: proxy_auth_reason("HTTP 407 Proxy Authentication Required", via.credentials),
            proxy: via.shown,
            method,
            url: shown.to_string(),
        })
    }
}

/// Why a proxy answered 407, and what to do about it.
fn proxy_auth_reason(status: &str, sent_credentials: bool) -> String {
    if sent_credentials {
        format!("{status}: it refused the credentials in the proxy URL")
    } else {
        format!("{status}: it wants credentials (write them in the proxy URL: http://USER:PASSWORD@HOST:PORT)")
    }
}

/// An agent with imagec's settings and this TLS setup. Its connections follow the proxy
/// rules: plain HTTP through an `http://` proxy in absolute form (see
/// [`super::proxy::absolute_form`]), HTTPS through the `CONNECT` proxy each request names.
fn agent_with(
    settings: &HttpSettings,
    tls: TlsConfig,
    ahead: &std::sync::Arc<Ahead>,
) -> ureq::Agent {
    use super::proxy::absolute_form::{ProxyConnector, ProxyResolver};
    use ureq::unversioned::transport::Connector as _;
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .user_agent(format!("imagec/{}", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(settings.connect_timeout))
        .timeout_per_read(Some(settings.read_timeout))
        .tls_config(tls)
        .proxy(None)
        // Every job keeps its connection between waves (ureq keeps 3 per host by default, so
        // `--jobs 8` reopened 5 after each pause: a round trip, or three with TLS, each).
        .max_idle_connections(256)
        .max_idle_connections_per_host(MAX_JOBS)
        .build();
    let connector = PreconnectingConnector::new(ahead.clone())
        .chain(ProxyConnector::new(settings.proxy.clone()));
    ureq::Agent::with_parts(
        config,
        connector,
        ProxyResolver::new(settings.proxy.clone()),
    )
}

/// The system's trusted roots (Debian's bundle), Mozilla's, and the user's `--ca-cert` files.
fn root_certs_with(extra: &[PathBuf]) -> Result<Vec<Certificate<'static>>, TlsSetupError> {
    let mut certs: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    if let Ok(pem) = std::fs::read("/etc/ssl/certs/ca-certificates.crt") {
        certs.extend(pem_certs(&pem).into_iter().flatten());
    }
    for path in extra {
        let pem = std::fs::read(path).map_err(|source| TlsSetupError::Read {
            path: path.clone(),
            source,
        })?;
        let found = pem_certs(&pem).map_err(|reason| TlsSetupError::Parse {
            path: path.clone(),
            reason,
        })?;
        if found.is_empty() {
            return Err(TlsSetupError::Empty { path: path.clone() });
        }
        certs.extend(found);
    }
    Ok(certs)
}

/// A request that failed at its proxy: the CONNECT refused (a 407 wants credentials), or the
/// proxy itself out of reach. Named as the proxy's failure, not the registry's.
fn proxy_failure(
    e: &ureq::Error,
    via: &super::proxy::Via,
    method: &'static str,
    url: &str,
) -> Option<RegistryError> {
    let reason = match e {
        ureq::Error::ConnectProxyFailed(reason) => {
            if reason.contains(" 407") {
                proxy_auth_reason(reason, via.credentials)
            } else if reason.contains(" 403") {
                format!("{reason}: it refuses a tunnel to this host or port (squid allows CONNECT to port 443 only, by default)")
            } else {
                reason.clone()
            }
        }
        e if super::retry::never_connected(e) => format!("cannot connect to it ({e})"),
        _ => return None,
    };
    Some(RegistryError::Proxy {
        refused: matches!(e, ureq::Error::ConnectProxyFailed(_)),
        proxy: via.shown.clone(),
        method,
        url: url.to_string(),
        reason,
    })
}

/// What went wrong in a TLS handshake, where the user can do something about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProblem {
    /// The certificate chains to no CA this machine trusts (a private CA).
    UnknownIssuer,
    /// Any other refusal of the certificate: expired, for another name, ...
    BadCertificate,
    /// The server answered the ClientHello with something that is not TLS: it speaks plain
    /// HTTP on this port (rustls: "received corrupt message of type InvalidContentType").
    NotTls,
    /// The server wants a client certificate and got none (TLS 1.3's certificate_required
    /// alert; a bad_certificate one for an empty certificate under TLS 1.2).
    ClientCertRequired,
    /// The server does not trust the client certificate sent (unknown_ca).
    ClientCertRefused,
}

/// Classify a ureq error as a TLS problem. ureq hands rustls's errors over either as its
/// own `Rustls` variant or wrapped in an `io::Error`, depending on where the handshake failed.
pub fn tls_problem(e: &ureq::Error) -> Option<TlsProblem> {
    let rustls_error = match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    }?;
    match rustls_error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            Some(TlsProblem::UnknownIssuer)
        }
        rustls::Error::InvalidCertificate(_) => Some(TlsProblem::BadCertificate),
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            Some(TlsProblem::NotTls)
        }
        rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired
            | rustls::AlertDescription::BadCertificate,
        ) => Some(TlsProblem::ClientCertRequired),
        rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA) => {
            Some(TlsProblem::ClientCertRefused)
        }
        _ => None,
    }
}

fn is_redirect(s: StatusCode) -> bool {
    matches!(s.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// `scheme://host:port`, lowercased, with the default port made explicit, so that
/// `https://h` and `https://h:443` are one origin (RFC 6454).
pub fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority
        .rsplit('@')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port {
        format!("{scheme}://{authority}")
    } else {
        let port = if scheme == "http" { 80 } else { 443 };
        format!("{scheme}://{authority}:{port}")
    }
}

/// Resolve a `Location` header against the URL it came from (RFC 3986 section 5.2, the forms
/// registries and object stores use: absolute, scheme-relative, absolute-path, relative-path).
fn resolve(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if location.is_empty() {
        return None;
    }
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_string());
    }
    let (scheme, rest) = base.split_once("://")?;
    if let Some(r) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{r}"));
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    let path = &rest[authority.len()..];
    let path = path.split(['?', '#']).next().unwrap_or("");
    let dir = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    };
    Some(format!("{scheme}://{authority}{dir}{location}"))
}

/// A URL as it may be shown in logs and errors: without its query, which for object-store
/// redirects (S3, CDNs) holds a presigned signature that works as a credential.
pub fn loggable(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?..."),
        None => url.to_string(),
    }
}

/// A header as a string, when present and valid.
pub fn header<'a>(resp: &'a Response<Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Read a small answer to its end (`{}`, or a short error), so that its connection goes back
/// to the pool: dropped unread, it was closed, and the next request paid for a new one (a
/// round trip more on a distant registry).
pub fn drain(resp: &mut Response<Body>) {
    let _ = std::io::copy(
        &mut std::io::Read::take(resp.body_mut().as_reader(), 64 << 10),
        &mut std::io::sink(),
    );
}

/// A short (error) answer's body, at most 64 KiB of it.
pub fn read_short(resp: &mut Response<Body>) -> Vec<u8> {
    resp.body_mut()
        .with_config()
        .limit(64 << 10)
        .read_to_vec()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(origin_of("https://Reg.io/v2/x"), "https://reg.io:443");
        assert_eq!(origin_of("https://reg.io:443/v2/"), "https://reg.io:443");
        assert_eq!(
            origin_of("http://127.0.0.1:5000/v2/"),
            "http://127.0.0.1:5000"
        );
        assert_ne!(origin_of("http://reg.io/"), origin_of("https://reg.io/"));
        assert_eq!(origin_of("http://[::1]/x"), "http://[::1]:80");
        assert_eq!(origin_of("http://[::1]:5000/x"), "http://[::1]:5000");
        assert_eq!(origin_of("https://u:p@evil.io/x"), "https://evil.io:443");
    }

    #[test]
    fn logged_urls_lose_their_query() {
        assert_eq!(
            loggable("https://s3/bucket/blob?X-Amz-Signature=secret&X-Amz-Credential=k"),
            "https://s3/bucket/blob?..."
        );
        assert_eq!(loggable("https://reg/v2/"), "https://reg/v2/");
    }

    #[test]
    fn resolves_locations() {
        let b = "https://reg.io/v2/a/blobs/sha256:1?x=y";
        assert_eq!(resolve(b, "https://s3/x").unwrap(), "https://s3/x");
        assert_eq!(resolve(b, "//cdn/x").unwrap(), "https://cdn/x");
        assert_eq!(resolve(b, "/other").unwrap(), "https://reg.io/other");
        assert_eq!(resolve(b, "c").unwrap(), "https://reg.io/v2/a/blobs/c");
        assert_eq!(resolve(b, " "), None);
    }
}
