//! Endpoint discovery (the first request to a host, else `GET /v2/`) and authentication:
//! Basic, and Bearer tokens fetched from the realm the registry names, cached per scope for the
//! whole run (distribution `docs/spec/auth/token.md`; SPEC: Registry protocol).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::challenge::{self, Challenge};
use super::errors::{ErrorBody, RegistryError};
use super::http::{drain, header, read_short, Http, Method};
use crate::registry::credentials::{Credentials, Secret};
use ureq::http::Response;
use ureq::Body;

/// How a registry wants to be spoken to, learned from its first answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// One registry host for this run: where it answers and how to authenticate.
pub struct Endpoint {
    /// `https://host[:port]` or `http://host[:port]`.
    pub base: String,
    /// Anonymous may become another scheme once, when a request is refused with a challenge
    /// ([`Endpoint::adopt_challenge`]); a scheme learned from a challenge never changes.
    scheme: RwLock<Scheme>,
    pub credentials: Option<Credentials>,
    /// Token per scope. The lock is held while a token is fetched so that parallel workers
    /// needing the same scope wait for one fetch instead of each making their own.
    /// One token per scope, each behind its own lock: threads that need the same scope at
    /// once wait for one fetch, and fetches for different scopes do not wait for each other.
    tokens: Mutex<HashMap<String, Arc<Mutex<Option<Token>>>>>,
}

struct Token {
    value: Secret,
    expires: Instant,
}

/// Refresh a token this long before the server said it expires: a request sent with a token
/// that expires in flight would be refused.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Token spec: "If omitted, [expires_in] should be assumed to be 60 seconds."
const DEFAULT_TOKEN_LIFETIME: u64 = 60;
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

impl Endpoint {
    /// Learn how `base` wants to be spoken to. With `first` (the request the caller is about
    /// to make), that request is sent without credentials and is itself the probe, as
    /// containerd does: a 2xx means no authentication, and its answer is returned for the
    /// caller to use (a round trip saved on every registry that needs no login); a 401 names
    /// the scheme in `WWW-Authenticate`. Any other answer says nothing of the scheme, so
    /// `GET /v2/` is asked as without `first`; that answer is returned too when `/v2/` says no
    /// authentication (it is what the caller's request would get). Without `first`: `GET
    /// /v2/`, where 200 means no auth and 401 names the scheme.
    pub fn probe(
        http: &Http,
        host: &str,
        base: String,
        credentials: Option<Credentials>,
        first: Option<&First<'_>>,
    ) -> Result<(Endpoint, Option<Response<Body>>), RegistryError> {
        let Some(first) = first else {
            return Ok((Self::probe_v2(http, host, base, credentials)?, None));
        };
        let url = format!("{base}{}", first.target);
        let mut resp = http.send(first.method, &url, first.headers, None)?;
        let kept = match resp.status().as_u16() {
            200..=299 => {
                let ep = Endpoint::new(base, Scheme::Anonymous, credentials);
                return Ok((ep, Some(resp)));
            }
            401 => {
                drain(&mut resp);
                if let Ok(scheme) = scheme_from(&challenges(&resp), host) {
                    return Ok((Endpoint::new(base, scheme, credentials), None));
                }
                None
            }
            // A server failing right now (a 503 while it starts, a 429) says nothing of the
            // scheme, and `/v2/` would most likely fail too: the probe failed, as a `/v2/`
            // answering so would have.
            // The error is the one the request itself would have met (its body, a rate
            // limit's figures).
            s if crate::registry::retry::status_is_transient(s) => {
                super::log_rate_limit(&resp);
                let body = if first.method == Method::Head {
                    ErrorBody::default()
                } else {
                    ErrorBody::parse(&read_short(&mut resp))
                };
                return Err(super::status_error(first.method, url, body, &resp));
            }
            _ => Some(buffered(resp)),
        };
        let ep = Self::probe_v2(http, host, base, credentials)?;
        let anonymous = ep.scheme() == Scheme::Anonymous;
        Ok((ep, kept.filter(|_| anonymous)))
    }

    /// `GET base/v2/`: 200 means no auth; 401 names the scheme in `WWW-Authenticate`.
    fn probe_v2(
        http: &Http,
        host: &str,
        base: String,
        credentials: Option<Credentials>,
    ) -> Result<Endpoint, RegistryError> {
        let url = format!("{base}/v2/");
        let mut resp = http.send(Method::Get, &url, &[], None)?;
        let status = resp.status().as_u16();
        drain(&mut resp);
        let scheme = match status {
            200..=299 => Scheme::Anonymous,
            401 => scheme_from(&challenges(&resp), host)?,
            s if crate::registry::retry::status_is_transient(s) => {
                return Err(super::status_error(
                    Method::Get,
                    url,
                    ErrorBody::default(),
                    &resp,
                ))
            }
            _ => {
                return Err(RegistryError::NotARegistry {
                    host: host.to_string(),
                    url,
                    status,
                })
            }
        };
        Ok(Endpoint::new(base, scheme, credentials))
    }

    fn new(base: String, scheme: Scheme, credentials: Option<Credentials>) -> Endpoint {
        Endpoint {
            base,
            scheme: RwLock::new(scheme),
            credentials,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A request to an endpoint that needed no authentication so far was refused with a
    /// challenge (a registry whose first answer was a public manifest, or whose `/v2/` is open
    /// while a repository is not): take the scheme it names, once. Returns whether the scheme
    /// changed, so that the request is worth sending again.
    pub fn adopt_challenge(&self, resp: &Response<Body>, host: &str) -> bool {
        let mut scheme = self.scheme.write().unwrap_or_else(|e| e.into_inner());
        if *scheme != Scheme::Anonymous {
            return false;
        }
        match scheme_from(&challenges(resp), host) {
            Ok(learned) => {
                *scheme = learned;
                true
            }
            Err(_) => false,
        }
    }

    /// The `Authorization` value for a request that needs `scope`, fetching a token if needed.
    pub fn authorization(&self, http: &Http, scope: &str) -> Result<Option<Secret>, RegistryError> {
        match self.scheme() {
            Scheme::Anonymous => Ok(None),
            // A refresh token is for a token realm, never a Basic password.
            Scheme::Basic => Ok(self
                .credentials
                .as_ref()
                .filter(|c| c.refresh_token().is_none())
                .map(Credentials::basic_header)),
            Scheme::Bearer { realm, service } => {
                let cell = self
                    .tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(scope.to_string())
                    .or_default()
                    .clone();
                let mut held = cell.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(t) = held.as_ref() {
                    if Instant::now() + EXPIRY_MARGIN < t.expires {
                        return Ok(Some(bearer(&t.value)));
                    }
                }
                let token = fetch_token(
                    http,
                    &realm,
                    service.as_deref(),
                    scope,
                    self.credentials.as_ref(),
                )?;
                let value = bearer(&token.value);
                *held = Some(token);
                Ok(Some(value))
            }
        }
    }

    /// Forget the token for `scope` (the registry refused it: expired or revoked mid-pull).
    pub fn invalidate(&self, scope: &str) -> bool {
        let cell = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(scope)
            .cloned();
        cell.is_some_and(|c| c.lock().unwrap_or_else(|e| e.into_inner()).take().is_some())
    }

    pub fn uses_tokens(&self) -> bool {
        matches!(self.scheme(), Scheme::Bearer { .. })
    }
}

/// The request a caller is about to make to a host not probed yet, which can be the probe:
/// `target` is its path and query (`/v2/...`), sent after whichever base is tried.
pub struct First<'a> {
    pub method: Method,
    pub target: String,
    pub headers: &'a [(&'a str, String)],
}

/// An answer with its (short, error) body read into memory: its connection is free for the
/// `/v2/` probe that follows, and the answer can still be handed to the caller.
fn buffered(mut resp: Response<Body>) -> Response<Body> {
    let bytes = read_short(&mut resp);
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, Body::builder().data(bytes))
}

fn bearer(token: &Secret) -> Secret {
    Secret::new(format!("Bearer {}", token.expose()))
}

/// Every challenge in every `WWW-Authenticate` header of a response.
pub fn challenges(resp: &ureq::http::Response<ureq::Body>) -> Vec<Challenge> {
    resp.headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(challenge::parse)
        .collect()
}

/// Bearer when offered (it is what registries that offer both prefer), else Basic.
fn scheme_from(challenges: &[Challenge], host: &str) -> Result<Scheme, RegistryError> {
    if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
        if let Some(realm) = c.param("realm").filter(|r| !r.is_empty()) {
            return Ok(Scheme::Bearer {
                realm: realm.to_string(),
                service: c.param("service").map(str::to_string),
            });
        }
    }
    if challenges.iter().any(|c| c.scheme == "basic") {
        return Ok(Scheme::Basic);
    }
    Err(RegistryError::UnsupportedAuth {
        host: host.to_string(),
        scheme: challenges
            .first()
            .map(|c| c.scheme.clone())
            .unwrap_or_else(|| "401 without WWW-Authenticate".to_string()),
    })
}

fn fetch_token(
    http: &Http,
    realm: &str,
    service: Option<&str>,
    scope: &str,
    credentials: Option<&Credentials>,
) -> Result<Token, RegistryError> {
    let mut url = realm.to_string();
    let mut sep = if realm.contains('?') { '&' } else { '?' };
    for (k, v) in [("service", service), ("scope", Some(scope))] {
        if let Some(v) = v {
            url.push(sep);
            url.push_str(k);
            url.push('=');
            url.push_str(&encode_query(v));
            sep = '&';
        }
    }
    if let Some(refresh) = credentials.and_then(Credentials::refresh_token) {
        return fetch_oauth2(http, realm, service, scope, refresh);
    }
    let auth = credentials.map(Credentials::basic_header);
    let mut resp = http.send(Method::Get, &url, &[], auth.as_ref())?;
    let status = resp.status().as_u16();
    let body = token_body(&mut resp, "GET", realm)?;
    if !(200..300).contains(&status) {
        return Err(RegistryError::TokenRefused {
            realm: realm.to_string(),
            status,
            body: ErrorBody::parse(&body),
        });
    }
    parse_token(&body).map_err(|reason| RegistryError::TokenInvalid {
        realm: realm.to_string(),
        reason,
    })
}

/// OAuth2's refresh-token grant (RFC 6749 section 6, distribution's `oauth.md`), what docker
/// and containerd send for an `identitytoken`: a POST of the form, never the token as a
/// password on a GET. A 404 or 405 is a realm that takes no OAuth2 POST; a 400 or 401 (an
/// `invalid_grant`) is a refresh token that is expired or revoked.
fn fetch_oauth2(
    http: &Http,
    realm: &str,
    service: Option<&str>,
    scope: &str,
    refresh: &Secret,
) -> Result<Token, RegistryError> {
    let mut form = format!(
        "grant_type=refresh_token&client_id=imagec&refresh_token={}",
        encode_query(refresh.expose())
    );
    if let Some(service) = service {
        form.push_str(&format!("&service={}", encode_query(service)));
    }
    if !scope.is_empty() {
        form.push_str(&format!("&scope={}", encode_query(scope)));
    }
    let mut resp = http.post_form(realm, &Secret::new(form))?;
    let status = resp.status().as_u16();
    let html = header(&resp, "content-type").is_some_and(|t| t.contains("html"));
    let body = token_body(&mut resp, "POST", realm)?;
    match status {
        200..=299 => {}
        404 | 405 => {
            return Err(RegistryError::NoOAuth2 {
                realm: realm.to_string(),
                status,
                html: html || body.trim_ascii_start().starts_with(b"<"),
            })
        }
        _ => {
            return Err(RegistryError::RefreshTokenRefused {
                realm: realm.to_string(),
                status,
                body: ErrorBody::parse(&body),
            })
        }
    }
    parse_token(&body).map_err(|reason| RegistryError::TokenInvalid {
        realm: realm.to_string(),
        reason,
    })
}

/// A token endpoint's answer, at most [`MAX_TOKEN_RESPONSE`] bytes.
fn token_body(
    resp: &mut ureq::http::Response<ureq::Body>,
    method: &'static str,
    realm: &str,
) -> Result<Vec<u8>, RegistryError> {
    resp.body_mut()
        .with_config()
        .limit(MAX_TOKEN_RESPONSE)
        .read_to_vec()
        .map_err(|e| RegistryError::Transport {
            method,
            url: realm.to_string(),
            source: Box::new(e),
        })
}

fn parse_token(body: &[u8]) -> Result<Token, String> {
    #[derive(serde::Deserialize)]
    struct Wire {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    if body.trim_ascii_start().starts_with(b"<") {
        return Err(
            "answered an HTML page, not a JSON token (is the realm a token server?)".into(),
        );
    }
    let w: Wire = serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
    // Docker Hub sends both; OAuth2-style servers only `access_token`.
    let value = w
        .token
        .filter(|t| !t.is_empty())
        .or(w.access_token.filter(|t| !t.is_empty()))
        .ok_or("answer has neither \"token\" nor \"access_token\"")?;
    let lifetime = w
        .expires_in
        .unwrap_or(DEFAULT_TOKEN_LIFETIME)
        .clamp(1, 86400 * 365);
    Ok(Token {
        value: Secret::new(value),
        expires: Instant::now() + Duration::from_secs(lifetime),
    })
}

/// Percent-encode a query component (RFC 3986 unreserved characters pass through).
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_forms() {
        let t = parse_token(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(t.value.expose(), "abc");
        let t = parse_token(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.value.expose(), "xyz");
        assert!(t.expires > Instant::now() + Duration::from_secs(50));
        assert!(parse_token(br#"{"token":""}"#).is_err());
        assert!(parse_token(b"<html>").is_err());
    }

    #[test]
    fn prefers_bearer() {
        let c = challenge::parse(r#"Basic realm="r", Bearer realm="https://auth/t",service="s""#);
        assert_eq!(
            scheme_from(&c, "h").unwrap(),
            Scheme::Bearer {
                realm: "https://auth/t".into(),
                service: Some("s".into())
            }
        );
        let c = challenge::parse(r#"Basic realm="r""#);
        assert_eq!(scheme_from(&c, "h").unwrap(), Scheme::Basic);
        assert!(scheme_from(&challenge::parse("Negotiate"), "h").is_err());
    }

    #[test]
    fn encodes_scopes() {
        assert_eq!(
            encode_query("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }

    proptest::proptest! {
        #[test]
        fn token_answers_never_panic(body in "\\PC{0,80}", n in proptest::prelude::any::<i64>()) {
            let _ = parse_token(body.as_bytes());
            let _ = parse_token(format!(r#"{{"token":"t","expires_in":{n}}}"#).as_bytes());
        }
    }
}
