//! The token server: an in-process Docker-style auth endpoint (realm `http://127.0.0.1:PORT/token`)
//! issuing ES256 JWTs that the `token` registry trusts through the `x5c` certificate chain.
//!
//! Rules: Basic auth with USER/PASSWORD is granted every requested action; wrong credentials get
//! 401; anonymous requests get `pull` on `public/*` repositories only and an empty access list
//! otherwise (like Docker Hub, the registry then answers 401 `insufficient_scope`).
//!
//! OAuth2 (distribution's `oauth.md`): a POST of `grant_type=refresh_token` with
//! [`REFRESH_TOKEN`] is granted like USER; other refresh tokens are refused with 400
//! `invalid_grant`, except `answer-404-html`, `answer-405` and `answer-200-html`, which get what
//! realms that take no OAuth2 POST answer (an HTML 404 page, a 405, an HTML page with 200).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use super::client;
use super::httpd::{self, error_response, Request, Response};
use super::pki::Pki;
use super::{PASSWORD, USER};

/// The `service` the token registry announces and tokens are issued for (`aud`).
pub const SERVICE: &str = "imagec-test";
/// The `iss` of every token; the registry trusts only this issuer.
pub const ISSUER: &str = "imagec-test-issuer";
/// The refresh token (an `identitytoken`) the token server grants like USER's password.
pub const REFRESH_TOKEN: &str = "imagec-test-refresh-7f3a9c";

/// Lifetime of a normal token, in seconds.
const EXPIRES_IN: u64 = 300;
/// How far in the past an "expired" token's `exp` lies: beyond the registry's 60 s leeway.
const EXPIRED_AGO: u64 = 120;

pub struct TokenServer {
    addr: SocketAddr,
    state: &'static State,
}

struct State {
    signer: EcdsaKeyPair,
    rng: SystemRandom,
    /// Standard base64 of the signing certificate's DER, the token header's `x5c` entry.
    x5c: String,
    /// The scopes of every request to the realm, one entry per request (whatever its outcome).
    requests: Mutex<Vec<Vec<String>>>,
    /// Pending "issue this many tokens already expired" orders, each for tokens whose scopes
    /// contain a string (or for any token).
    expire: Mutex<Vec<(Option<String>, usize)>>,
    only_access_token: AtomicBool,
    next_jti: AtomicU64,
    /// The form of every POST, and the Basic user name of every GET that carried one.
    posts: Mutex<Vec<Vec<(String, String)>>>,
    basic_users: Mutex<Vec<String>>,
}

impl TokenServer {
    /// Starts serving on a free loopback port, signing with the key and certificate in `pki`.
    pub fn start(pki: &Pki) -> Result<TokenServer, String> {
        let rng = SystemRandom::new();
        let signer = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pki.signing_key_pkcs8,
            &rng,
        )
        .map_err(|e| format!("loading the token signing key: {e}"))?;
        // The server thread outlives any borrow: the state lives for the rest of the process.
        let state: &'static State = Box::leak(Box::new(State {
            signer,
            rng,
            x5c: STANDARD.encode(&pki.signing_cert_der),
            requests: Mutex::new(Vec::new()),
            expire: Mutex::new(Vec::new()),
            only_access_token: AtomicBool::new(false),
            next_jti: AtomicU64::new(1),
            posts: Mutex::new(Vec::new()),
            basic_users: Mutex::new(Vec::new()),
        }));
        let addr = httpd::serve(move |request| state.handle(request))
            .map_err(|e| format!("starting the token server: {e}"))?;
        Ok(TokenServer { addr, state })
    }

    /// `http://127.0.0.1:PORT/token`, the realm the token registry's challenge names.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Requests to the realm so far, whatever their outcome (granted, refused, malformed).
    pub fn requests(&self) -> usize {
        lock(&self.state.requests).len()
    }

    /// Requests so far with at least one `scope` containing `scope_part`
    /// (e.g. `"repository:t/app:"`).
    pub fn requests_for_scope(&self, scope_part: &str) -> usize {
        lock(&self.state.requests)
            .iter()
            .filter(|scopes| scopes.iter().any(|s| s.contains(scope_part)))
            .count()
    }

    /// The next `n` tokens issued, to anyone, are already expired (`exp` = now - 120 s) so the
    /// registry refuses them. Tests running in parallel share this server: prefer
    /// [`TokenServer::expire_next_for`], which only hits the test's own repository.
    pub fn expire_next(&self, n: usize) {
        lock(&self.state.expire).push((None, n));
    }

    /// Like [`TokenServer::expire_next`], for tokens requested with a scope containing
    /// `scope_part` only.
    pub fn expire_next_for(&self, scope_part: &str, n: usize) {
        lock(&self.state.expire).push((Some(scope_part.to_string()), n));
    }

    /// The forms of the OAuth2 POSTs so far whose `refresh_token` is `refresh`.
    pub fn posts_with(&self, refresh: &str) -> Vec<Vec<(String, String)>> {
        lock(&self.state.posts)
            .iter()
            .filter(|form| {
                form.iter()
                    .any(|(k, v)| k == "refresh_token" && v == refresh)
            })
            .cloned()
            .collect()
    }

    /// The Basic user names GET requests have carried so far.
    pub fn basic_users(&self) -> Vec<String> {
        lock(&self.state.basic_users).clone()
    }

    /// Answer `{"access_token": …}` (the OAuth2 spelling) instead of `{"token": …}`.
    pub fn set_only_access_token(&self, on: bool) {
        self.state.only_access_token.store(on, Ordering::SeqCst);
    }

    /// Fetches a token over HTTP as a client would, with optional Basic credentials.
    /// `Err` carries the status and body of a refusal.
    pub fn fetch(
        &self,
        credentials: Option<(&str, &str)>,
        scopes: &[&str],
    ) -> Result<String, String> {
        let mut url = format!("{}?service={SERVICE}", self.realm());
        for scope in scopes {
            url.push_str("&scope=");
            url.push_str(
                &scope
                    .replace('/', "%2F")
                    .replace(':', "%3A")
                    .replace(',', "%2C"),
            );
        }
        let mut request = client::agent().get(&url);
        if let Some((user, password)) = credentials {
            request = request.header("Authorization", client::basic_auth(user, password));
        }
        let mut response = request.call().map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("GET {url}: {status} {body}"));
        }
        let value: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        value["token"]
            .as_str()
            .or(value["access_token"].as_str())
            .map(str::to_string)
            .ok_or(format!("no token in {body}"))
    }
}

impl State {
    fn handle(&self, request: &Request) -> Response {
        if request.path() != "/token" {
            return error_response(404, "NOT_FOUND", "the realm is /token");
        }
        let query = request.query();
        // A client may send several `scope` parameters or several scopes in one, space-separated.
        let scopes: Vec<String> = query
            .iter()
            .filter(|(name, _)| name == "scope")
            .flat_map(|(_, value)| value.split_whitespace().map(str::to_string))
            .collect();
        if request.method == "POST" {
            return self.oauth2(request);
        }
        lock(&self.requests).push(scopes.clone());
        if request.method != "GET" {
            return error_response(405, "UNSUPPORTED", "only GET and POST are served");
        }
        let service = query.iter().find(|(name, _)| name == "service");
        if service.map(|(_, v)| v.as_str()) != Some(SERVICE) {
            return error_response(400, "INVALID_REQUEST", "service must be imagec-test");
        }
        if let Some(user) = request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|raw| {
                let raw = String::from_utf8_lossy(&raw).into_owned();
                raw.split_once(':').map(|(u, _)| u.to_string())
            })
        {
            lock(&self.basic_users).push(user);
        }
        let subject = match request.header("authorization") {
            None => None,
            Some(value) if value == client::basic_auth(USER, PASSWORD) => Some(USER),
            Some(_) => {
                return error_response(401, "UNAUTHORIZED", "incorrect username or password")
            }
        };
        self.issue(&scopes, subject, "token")
    }

    /// OAuth2's refresh-token grant: the form's fields, the refresh token checked.
    fn oauth2(&self, request: &Request) -> Response {
        let form = request.form();
        lock(&self.posts).push(form.clone());
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let scopes: Vec<String> = form
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split_whitespace().map(str::to_string))
            .collect();
        lock(&self.requests).push(scopes.clone());
        let html = |status: u16| Response {
            status,
            headers: vec![("Content-Type".into(), "text/html".into())],
            body: b"<html><body><h1>Not Found</h1></body></html>".to_vec(),
        };
        match field("refresh_token") {
            Some("answer-404-html") => return html(404),
            Some("answer-200-html") => return html(200),
            Some("answer-405") => return error_response(405, "UNSUPPORTED", "no POST here"),
            _ => {}
        }
        let oauth_error = |status: u16, error: &str, description: &str| {
            Response::json(
                status,
                &json!({ "error": error, "error_description": description }),
            )
        };
        if field("grant_type") != Some("refresh_token") {
            return oauth_error(
                400,
                "unsupported_grant_type",
                "only refresh_token is granted",
            );
        }
        if field("service") != Some(SERVICE) {
            return oauth_error(400, "invalid_request", "service must be imagec-test");
        }
        if field("client_id").is_none_or(str::is_empty) {
            return oauth_error(400, "invalid_request", "client_id is required");
        }
        if field("refresh_token") != Some(REFRESH_TOKEN) {
            return oauth_error(400, "invalid_grant", "the refresh token has expired");
        }
        self.issue(&scopes, Some(USER), "access_token")
    }

    /// A signed token granting `scopes` to `subject` (anonymous: public pulls only), in a
    /// JSON answer under `key` (`token`, or OAuth2's `access_token`).
    fn issue(&self, scopes: &[String], subject: Option<&str>, key: &str) -> Response {
        let mut access = Vec::new();
        for scope in scopes {
            let Some(grant) = grant(scope, subject.is_some()) else {
                return error_response(400, "INVALID_SCOPE", &format!("malformed scope {scope:?}"));
            };
            access.extend(grant);
        }

        let expired = self.take_expiry(scopes);
        let now = unix_now();
        let exp = if expired {
            now - EXPIRED_AGO
        } else {
            now + EXPIRES_IN
        };
        let claims = json!({
            "iss": ISSUER,
            "sub": subject.unwrap_or(""),
            "aud": SERVICE,
            "exp": exp,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("imagec-test-{}", self.next_jti.fetch_add(1, Ordering::SeqCst)),
            "access": access,
        });
        let token = match self.sign(&claims) {
            Ok(token) => token,
            Err(message) => return error_response(500, "SIGNING", &message),
        };
        let key = if self.only_access_token.load(Ordering::SeqCst) {
            "access_token"
        } else {
            key
        };
        Response::json(
            200,
            &json!({ key: token, "expires_in": EXPIRES_IN, "issued_at": rfc3339(now) }),
        )
    }

    /// Consumes one pending expiry order that applies to a token with these scopes.
    fn take_expiry(&self, scopes: &[String]) -> bool {
        let mut orders = lock(&self.expire);
        let applies = |part: &Option<String>| match part {
            None => true,
            Some(part) => scopes.iter().any(|s| s.contains(part.as_str())),
        };
        let Some(order) = orders.iter_mut().find(|(part, n)| *n > 0 && applies(part)) else {
            return false;
        };
        order.1 -= 1;
        orders.retain(|(_, n)| *n > 0);
        true
    }

    fn sign(&self, claims: &Value) -> Result<String, String> {
        let header = json!({ "typ": "JWT", "alg": "ES256", "x5c": [self.x5c] });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .signer
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|e| format!("signing a token: {e}"))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// The access entry granted for one `type:name:actions` scope, or `None` if it is malformed.
fn grant(scope: &str, authenticated: bool) -> Option<Option<Value>> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    if kind.is_empty() || name.is_empty() {
        return None;
    }
    let actions: Vec<&str> = actions
        .split(',')
        .filter(|action| {
            authenticated
                || (kind == "repository" && name.starts_with("public/") && *action == "pull")
        })
        .collect();
    if actions.is_empty() {
        return Some(None);
    }
    Some(Some(
        json!({ "type": kind, "name": name, "actions": actions }),
    ))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A test that panicked while holding the lock must not break every later test.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (days-to-civil from Howard Hinnant's algorithm).
fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
