//! A real squid (Debian's) for the proxy tests: the forward proxy corporate networks run, with
//! its default rule that `CONNECT` goes to port 443 only (plus the ports a test opens), Basic
//! proxy credentials checked by squid's own `basic_ncsa_auth`, and a hosts file, so that a
//! name that resolves nowhere (`registry.imagec.test`) reaches the test registries only
//! through it. Listens on 127.0.0.1; nothing is cached. Like the registries, it runs under a
//! wrapper shell that stops it when the test process exits, whatever the reason.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub struct Squid {
    host: String,
    dir: PathBuf,
    _lifeline: ChildStdin,
    _wrapper: Child,
}

/// One access-log line: what a client asked squid for and what came of it.
#[derive(Debug, Clone)]
pub struct Access {
    /// squid's result code and the status sent, e.g. `TCP_MISS/200`, `TCP_DENIED/403`.
    pub result: String,
    pub method: String,
    /// As the client sent it: `http://host:port/path` or, for `CONNECT`, `host:port`.
    pub url: String,
    /// The proxy user, or `-`.
    pub user: String,
}

impl Squid {
    /// Starts squid in a fresh scratch directory (its config, hosts file, password file and
    /// logs go there). `names` resolve to 127.0.0.1 for it; `credentials` (`user`,
    /// `password`) are required of every client when given; `CONNECT` is allowed to port 443
    /// and to `connect_ports`.
    pub fn start(
        names: &[&str],
        credentials: Option<(&str, &str)>,
        connect_ports: &[u16],
    ) -> Result<Squid, String> {
        let dir = super::temp_dir();
        let dir = dir.as_path();
        // squid started as root runs as the user `proxy`: it must reach and write its files.
        // The process's scratch directory stays unlistable (0711); squid's own is open.
        if let Some(scratch) = dir.parent() {
            fs::set_permissions(scratch, fs::Permissions::from_mode(0o711))
                .map_err(|e| format!("{}: {e}", scratch.display()))?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
            Ok::<PathBuf, String>(path)
        };
        let hosts: String = names.iter().map(|n| format!("127.0.0.1 {n}\n")).collect();
        let hosts_path = write("hosts", &hosts)?;
        let mut auth = String::new();
        let mut access = String::from("http_access allow all\n");
        if let Some((user, password)) = credentials {
            let out = Command::new("openssl")
                .args(["passwd", "-apr1", password])
                .output()
                .map_err(|e| format!("openssl passwd (is openssl installed?): {e}"))?;
            let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let passwd = write("passwd", &format!("{user}:{hash}\n"))?;
            auth = format!(
                "auth_param basic program /usr/lib/squid/basic_ncsa_auth {}\n\
                 auth_param basic realm imagec-test\n\
                 acl authed proxy_auth REQUIRED\n",
                passwd.display()
            );
            access = "http_access allow authed\nhttp_access deny all\n".to_string();
        }
        let ports: String = connect_ports.iter().map(|p| format!(" {p}")).collect();
        let mut last_error = String::new();
        // The port is found free and then handed to squid (it cannot take port 0): another
        // process may take it in between, so a failed start is tried again on another one.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("finding a free port: {e}"))?
                .port();
            let config = format!(
                "http_port 127.0.0.1:{port}\n\
                 pid_filename {dir}/squid.pid\n\
                 cache_log {dir}/cache.log\n\
                 access_log stdio:{dir}/access.log squid\n\
                 cache_effective_user proxy\n\
                 cache deny all\n\
                 cache_mem 8 MB\n\
                 hosts_file {hosts}\n\
                 dns_nameservers 127.0.0.1\n\
                 pinger_enable off\n\
                 shutdown_lifetime 0 seconds\n\
                 {auth}\
                 acl SSL_ports port 443{ports}\n\
                 http_access deny CONNECT !SSL_ports\n\
                 {access}",
                dir = dir.display(),
                hosts = hosts_path.display(),
            );
            let config_path = write("squid.conf", &config)?;
            let _ = fs::remove_file(dir.join("cache.log"));
            let log = fs::File::create(dir.join("squid.out"))
                .map_err(|e| format!("creating squid.out: {e}"))?;
            let log_err = log.try_clone().map_err(|e| e.to_string())?;
            // `read` returns when this process exits and closes the pipe; `timeout` bounds
            // squid's life even if the wrapper is left behind, and passes the TERM on.
            let mut wrapper = Command::new("sh")
                .arg("-c")
                .arg(r#"timeout 600 squid -N -n "$1" -f "$0" & p=$!; read _; kill $p"#)
                .arg(&config_path)
                .arg(service_name(port))
                .stdin(Stdio::piped())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .map_err(|e| format!("starting squid: {e}"))?;
            let lifeline = wrapper.stdin.take().ok_or("no stdin pipe for squid")?;
            let host = format!("127.0.0.1:{port}");
            match wait_until_accepting(dir, &mut wrapper) {
                Ok(()) => {
                    return Ok(Squid {
                        host,
                        dir: dir.to_path_buf(),
                        _lifeline: lifeline,
                        _wrapper: wrapper,
                    })
                }
                Err(e) => {
                    last_error = e;
                    drop(lifeline);
                    let _ = wrapper.wait();
                }
            }
        }
        Err(last_error)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.host.clone()
    }

    /// The access log once `done` holds for it (squid writes a line when an answer is sent,
    /// and a tunnel's when it closes: both may come just after the client is gone), or as it
    /// is after 10 s.
    pub fn accesses_once(&self, done: impl Fn(&[Access]) -> bool) -> Vec<Access> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.accesses();
            if done(&log) || Instant::now() > deadline {
                return log;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every request in squid's access log so far, in order.
    pub fn accesses(&self) -> Vec<Access> {
        let text = fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                Some(Access {
                    result: f.get(3)?.to_string(),
                    method: f.get(5)?.to_string(),
                    url: f.get(6)?.to_string(),
                    user: f.get(7)?.to_string(),
                })
            })
            .collect()
    }
}

/// squid names its shared-memory segments after the service (`-n`): one of its own per
/// instance, so that squids of parallel tests (or one left by a killed run) never meet.
fn service_name(port: u16) -> String {
    format!("imagectest{}p{port}", std::process::id())
}

/// Wait (bounded) for squid's log to say it accepts connections, or for it to give up.
fn wait_until_accepting(dir: &Path, wrapper: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = || {
        let mut text = fs::read_to_string(dir.join("cache.log")).unwrap_or_default();
        text.push_str(&fs::read_to_string(dir.join("squid.out")).unwrap_or_default());
        text
    };
    while Instant::now() < deadline {
        let text = log();
        if text.contains("Accepting HTTP Socket connections") {
            return Ok(());
        }
        if text.contains("FATAL") || matches!(wrapper.try_wait(), Ok(Some(_))) {
            return Err(format!("squid did not start; log:\n{text}"));
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!("squid did not start within 30 s; log:\n{}", log()))
}
