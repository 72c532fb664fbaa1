//! Registry credentials: `-u` with a password from stdin or the environment, and docker's
//! `config.json` (`auths`, `credsStore`, `credHelpers`), looked up the way the docker CLI does.
//! Secrets live in [`Secret`], whose `Debug` and `Display` never show the value.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

/// A password or token. Printing it shows `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The value, for the one place that needs it: building a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// The user name docker's credential helpers answer for an identity token (and docker's
/// config writes as `identitytoken`): the secret is then an OAuth2 refresh token.
pub const TOKEN_USER: &str = "<token>";

impl Credentials {
    /// The OAuth2 refresh token these credentials are, if they are one.
    pub fn refresh_token(&self) -> Option<&Secret> {
        (self.username == TOKEN_USER).then_some(&self.password)
    }

    /// The `Authorization` value for HTTP Basic (RFC 7617).
    pub fn basic_header(&self) -> Secret {
        let raw = format!("{}:{}", self.username, self.password.expose());
        Secret(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("reading auth file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("auth file {path} is not valid JSON: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("auth file {path}: entry for {registry} has an invalid \"auth\" field (expected base64 of user:password)")]
    BadAuthField { path: PathBuf, registry: String },
    #[error("credential helper {helper} failed for {registry}: {reason}")]
    Helper {
        helper: String,
        registry: String,
        reason: String,
    },
}

#[derive(Debug, Default, serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// An OAuth2 refresh token (`az acr login`, `docker login` to registries that issue one):
    /// it wins over `auth`, as in docker.
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Where credentials come from, resolved once from flags and environment.
#[derive(Debug, Clone, Default)]
pub struct CredentialSource {
    /// `-u` with `--password-stdin` / `IMAGEC_PASSWORD`, and the one registry (as references
    /// name it) they are for: never sent anywhere else.
    pub explicit: Option<(String, Credentials)>,
    /// The docker config file to consult, when it exists.
    pub auth_file: Option<PathBuf>,
}

impl CredentialSource {
    /// Credentials for `registry` (as the reference names it: `docker.io`, `host:5000`).
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>, CredentialError> {
        if let Some((for_registry, c)) = &self.explicit {
            if key_host(for_registry) == key_host(registry) {
                return Ok(Some(c.clone()));
            }
        }
        let Some(path) = &self.auth_file else {
            return Ok(None);
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CredentialError::Read {
                    path: path.clone(),
                    source,
                })
            }
        };
        let config: ConfigFile =
            serde_json::from_slice(&text).map_err(|source| CredentialError::Parse {
                path: path.clone(),
                source,
            })?;
        lookup_in(&config, path, registry)
    }
}

/// The key docker uses for a registry in `auths` and credential helpers.
fn server_url(registry: &str) -> String {
    if registry == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// `https://index.docker.io/v1/` -> `index.docker.io`; `http://host:5000/v2/` -> `host:5000`.
fn key_host(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

fn lookup_in(
    config: &ConfigFile,
    path: &Path,
    registry: &str,
) -> Result<Option<Credentials>, CredentialError> {
    let wanted = key_host(registry);
    let helper = config
        .cred_helpers
        .iter()
        .find(|(k, _)| key_host(k) == wanted)
        .map(|(_, v)| v)
        .or(config.creds_store.as_ref());
    if let Some(helper) = helper {
        if let Some(c) = run_helper(helper, registry)? {
            return Ok(Some(c));
        }
    }
    let Some((key, entry)) = config.auths.iter().find(|(k, _)| key_host(k) == wanted) else {
        return Ok(None);
    };
    if let Some(token) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials {
            username: TOKEN_USER.to_string(),
            password: Secret::new(token),
        }));
    }
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials {
            username: u.clone(),
            password: Secret::new(p.clone()),
        }));
    }
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let bad = || CredentialError::BadAuthField {
        path: path.to_path_buf(),
        registry: key.clone(),
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (u, p) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Some(Credentials {
        username: u.to_string(),
        password: Secret::new(p),
    }))
}

/// Run `docker-credential-<helper> get` with the server URL on stdin (docker-credential-helpers
/// protocol). "Not found" answers are not errors: the registry is then used anonymously.
fn run_helper(helper: &str, registry: &str) -> Result<Option<Credentials>, CredentialError> {
    let program = format!("docker-credential-{helper}");
    let err = |reason: String| CredentialError::Helper {
        helper: program.clone(),
        registry: registry.to_string(),
        reason,
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server_url(registry).as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        return Err(err(format!(
            "exit status {}: {}",
            out.status,
            stdout.trim()
        )));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let a: Answer = serde_json::from_str(&stdout).map_err(|e| err(e.to_string()))?;
    if a.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: a.username,
        password: Secret::new(a.secret),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ConfigFile {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn secrets_are_redacted() {
        let c = Credentials {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{}", c.basic_header()).contains("aHVudGVy"));
        assert_eq!(c.basic_header().expose(), "Basic dTpodW50ZXIy");
    }

    #[test]
    fn finds_auths_by_any_key_form() {
        let c = config(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},
                "http://127.0.0.1:5000/v2/":{"username":"a","password":"b"}}}"#,
        );
        let p = Path::new("x");
        let hub = lookup_in(&c, p, "docker.io").unwrap().unwrap();
        assert_eq!((hub.username.as_str(), hub.password.expose()), ("u", "p"));
        let local = lookup_in(&c, p, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(local.username, "a");
        assert!(lookup_in(&c, p, "ghcr.io").unwrap().is_none());
    }

    #[test]
    fn explicit_credentials_go_to_their_registry_only() {
        let c = Credentials {
            username: "u".into(),
            password: Secret::new("p"),
        };
        let src = CredentialSource {
            explicit: Some(("127.0.0.1:5000".into(), c.clone())),
            auth_file: None,
        };
        assert_eq!(src.lookup("127.0.0.1:5000").unwrap(), Some(c));
        assert_eq!(src.lookup("127.0.0.1:5001").unwrap(), None);
        assert_eq!(src.lookup("docker.io").unwrap(), None);
    }

    #[test]
    fn an_identitytoken_is_a_refresh_token_and_wins_over_auth() {
        // What `az acr login` writes: the zero GUID as user, no password, and the token.
        let c = config(
            r#"{"auths":{"r.azurecr.io":{"auth":"MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwOg==","identitytoken":"rt"}}}"#,
        );
        let got = lookup_in(&c, Path::new("x"), "r.azurecr.io")
            .unwrap()
            .unwrap();
        assert_eq!(got.refresh_token().map(Secret::expose), Some("rt"));
        let plain = config(r#"{"auths":{"h":{"auth":"dTpw"}}}"#);
        let got = lookup_in(&plain, Path::new("x"), "h").unwrap().unwrap();
        assert!(got.refresh_token().is_none());
    }

    #[test]
    fn bad_auth_field_is_an_error() {
        let c = config(r#"{"auths":{"ghcr.io":{"auth":"!!notbase64"}}}"#);
        assert!(lookup_in(&c, Path::new("x"), "ghcr.io").is_err());
    }

    #[test]
    fn missing_helper_is_an_error_naming_it() {
        let c = config(r#"{"credHelpers":{"ghcr.io":"imagec-test-nonexistent"}}"#);
        let e = lookup_in(&c, Path::new("x"), "ghcr.io").unwrap_err();
        assert!(e
            .to_string()
            .contains("docker-credential-imagec-test-nonexistent"));
    }
}
