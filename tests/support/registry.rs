//! One `docker-registry` (CNCF distribution 2.8) process: its config file, its start-up on a
//! free loopback port, its lifetime bound to the test process, and reading its access log.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::client;

/// How long a registry may take to start listening and answer `GET /v2/`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How a registry authenticates clients.
pub enum Auth<'a> {
    None,
    /// An htpasswd file (bcrypt entries).
    Htpasswd(&'a Path),
    /// Bearer tokens from `realm`, verified against the CA bundle `root_certs`.
    Token {
        realm: &'a str,
        root_certs: &'a Path,
    },
}

/// Serve HTTPS with this PEM certificate and key.
pub struct Tls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    /// Require client certificates signed by this CA (`http.tls.clientcas`), and the pair
    /// the readiness check presents.
    pub clients: Option<ClientTls<'a>>,
}

pub struct ClientTls<'a> {
    pub ca: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
}

pub struct Registry {
    host: String,
    scheme: &'static str,
    log_path: PathBuf,
    /// The write end of the wrapper shell's stdin: when this process dies the pipe closes and
    /// the wrapper kills the registry. Never written to; kept open for the life of the process.
    _lifeline: ChildStdin,
    _wrapper: Child,
}

impl Registry {
    /// Starts `docker-registry` named `name` (its config and log go to `dir/NAME.yml`,
    /// `dir/NAME.log`) on storage `storage`, and waits until `GET /v2/` answers.
    /// `ca` is the PEM that verifies its certificate when `tls` is given.
    pub fn start(
        dir: &Path,
        name: &str,
        storage: &Path,
        auth: &Auth,
        tls: Option<&Tls>,
        ca: &Path,
    ) -> Result<Registry, String> {
        Registry::start_config(dir, name, ca, tls, config(storage, auth, tls))
    }

    /// A plain-HTTP registry of its own (storage in `dir`), with no auth: for a test that
    /// stops it (dropping it stops the process) or fills it alone.
    pub fn start_own(dir: &Path, ca: &Path) -> Result<Registry, String> {
        let text = config(&dir.join("storage"), &Auth::None, None);
        Registry::start_config(dir, "own", ca, None, text)
    }

    /// distribution's pull-through cache (`proxy: remoteurl:`) of `upstream` (a URL), with its
    /// own storage in `dir`: what a registry mirror in front of Docker Hub is.
    pub fn start_pull_through(dir: &Path, ca: &Path, upstream: &str) -> Result<Registry, String> {
        let mut text = config(&dir.join("storage"), &Auth::None, None);
        text.push_str(&format!(
            "proxy:\n  remoteurl: {}\n",
            serde_json::Value::from(upstream)
        ));
        Registry::start_config(dir, "cache", ca, None, text)
    }

    fn start_config(
        dir: &Path,
        name: &str,
        ca: &Path,
        tls: Option<&Tls>,
        text: String,
    ) -> Result<Registry, String> {
        let config_path = dir.join(format!("{name}.yml"));
        let log_path = dir.join(format!("{name}.log"));
        fs::write(&config_path, text)
            .map_err(|e| format!("writing {}: {e}", config_path.display()))?;
        let log =
            File::create(&log_path).map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cloning {}: {e}", log_path.display()))?;

        // `timeout` bounds the registry's life even if the wrapper is somehow left behind;
        // `read` returns when our end of the stdin pipe closes, i.e. when this process exits
        // for any reason (including a panic or SIGKILL), and then the registry is killed
        // (`timeout` passes the TERM on to it).
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(r#"timeout 900 docker-registry serve "$0" & p=$!; read _; kill $p"#)
            .arg(&config_path)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("starting docker-registry for {name}: {e}"))?;
        let lifeline = wrapper
            .stdin
            .take()
            .ok_or("no stdin pipe for the registry wrapper")?;

        let scheme = if tls.is_some() { "https" } else { "http" };
        // Dropping `lifeline` on an error path stops the registry again.
        let host = wait_until_listening(&log_path, &mut wrapper)?;
        let registry = Registry {
            host,
            scheme,
            log_path,
            _lifeline: lifeline,
            _wrapper: wrapper,
        };
        registry.wait_until_answering(ca, tls.and_then(|t| t.clients.as_ref()))?;
        Ok(registry)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.host.clone()
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.host
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a registry host is 127.0.0.1:PORT")
    }

    /// `registry.imagec.test:PORT`, a name that resolves nowhere (its TLS certificate names
    /// it too), and the host map that sends it here: reachable only through a test proxy.
    pub fn hidden_name(&self) -> (String, Vec<(String, String)>) {
        let name = format!("registry.imagec.test:{}", self.port());
        let map = vec![(name.clone(), self.host())];
        (name, map)
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// `SCHEME://HOST` followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.host, path)
    }

    /// The registry's log (its own log and the access log) so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log_path.display()))
    }

    /// Every request in the access log so far, in order: (method, request URI, status).
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        self.log().lines().filter_map(parse_access_line).collect()
    }

    /// Requests this registry logged with `method` whose URI contains `path_part`, e.g.
    /// `("GET", "/v2/t/app/blobs/")`.
    ///
    /// The access log line is written when the registry's handler returns, before the last
    /// buffered bytes of the response are flushed, so a request whose response a client has
    /// read completely is already counted.
    pub fn count(&self, method: &str, path_part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(m, uri, _)| m == method && uri.contains(path_part))
            .count()
    }

    fn wait_until_answering(&self, ca: &Path, clients: Option<&ClientTls>) -> Result<(), String> {
        let agent = match clients {
            Some(c) => client::agent_with_client_cert(ca, c.cert, c.key),
            None => client::agent_trusting(ca),
        };
        let url = self.url("/v2/");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let error = match agent.get(&url).call() {
                Ok(response)
                    if response
                        .headers()
                        .contains_key("docker-distribution-api-version") =>
                {
                    return Ok(())
                }
                Ok(response) => format!(
                    "{} without Docker-Distribution-Api-Version",
                    response.status()
                ),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "GET {url} never answered ({error}); log:\n{}",
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits for distribution's `listening on 127.0.0.1:PORT` line (it was given port 0 and logs the
/// port the kernel chose, so there is no race for a free port) and returns `127.0.0.1:PORT`.
fn wait_until_listening(log_path: &Path, wrapper: &mut Child) -> Result<String, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let log = fs::read_to_string(log_path).unwrap_or_default();
        if let Some(host) = log.lines().find_map(listening_host) {
            return Ok(host);
        }
        let exited = matches!(wrapper.try_wait(), Ok(Some(_)));
        let fatal = log.contains("level=fatal") || log.contains("level=panic");
        if exited || fatal || Instant::now() > deadline {
            return Err(format!("docker-registry did not start; log:\n{log}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn listening_host(line: &str) -> Option<String> {
    let rest = &line[line.find("msg=\"listening on ")? + "msg=\"listening on ".len()..];
    let host: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    host.starts_with("127.0.0.1:").then_some(host)
}

/// Parses a combined-log-format line: `… "GET /v2/ HTTP/1.1" 200 2 "" "agent"`.
fn parse_access_line(line: &str) -> Option<(String, String, u16)> {
    let start = line.find(" \"")? + 2;
    let (request, rest) = line[start..].split_once("\" ")?;
    let mut parts = request.split(' ');
    let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/") {
        return None;
    }
    let status = rest.split(' ').next()?.parse().ok()?;
    Some((method.to_string(), uri.to_string(), status))
}

/// The registry's YAML config. Paths are written as JSON strings, which YAML reads as
/// double-quoted scalars.
fn config(storage: &Path, auth: &Auth, tls: Option<&Tls>) -> String {
    let quote = |path: &Path| serde_json::Value::from(path.to_string_lossy()).to_string();
    // No `storage.cache`: several registries share the rootdirectory, and only without a cache
    // does each see the others' writes at once. Upload purging is off so that nothing but the
    // tests changes the storage. The shared http.secret keeps upload state valid across them.
    // Schema1 pushes are accepted (distribution refuses them with a 500 otherwise) so that the
    // tests can serve legacy images.
    let mut text = format!(
        "version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:0
  secret: imagec-test-http-secret
",
        storage = quote(storage)
    );
    if let Some(tls) = tls {
        text.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            quote(tls.cert),
            quote(tls.key)
        ));
        if let Some(c) = &tls.clients {
            text.push_str(&format!("    clientcas:\n      - {}\n", quote(c.ca)));
        }
    }
    match auth {
        Auth::None => {}
        Auth::Htpasswd(path) => text.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: imagec-basic\n    path: {}\n",
            quote(path)
        )),
        Auth::Token { realm, root_certs } => text.push_str(&format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            super::token::SERVICE,
            super::token::ISSUER,
            quote(root_certs)
        )),
    }
    text.push_str("compatibility:\n  schema1:\n    enabled: true\n");
    text
}
