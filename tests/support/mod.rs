//! Support code for imagec's integration tests: real `docker-registry` processes (plain, Basic
//! auth, token auth, TLS) sharing one storage, an in-process token server, deterministic test
//! images and a way to push them, proxies that inject faults in front of a registry, and a
//! clean-environment `imagec` command.
//!
//! Everything is started once per test binary, on first use of [`world`], on free loopback
//! ports. Nothing outlives the test process: each registry runs under a wrapper shell that kills
//! it when the process's end of its stdin pipe closes (at exit, panic or SIGKILL), under a
//! `timeout 900` as a backstop; a similar janitor shell removes the scratch directory. Set
//! `IMAGEC_TEST_KEEP=1` to keep the scratch directory (its path is printed) for debugging: the
//! registries' configs, logs and storage are in its `world/`.
//!
//! Include it from an integration test with `mod support;`.
// Each test binary uses a different part of this module.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod faults;
pub mod http_proxy;
pub mod httpd;
pub mod image;
pub mod mount;
pub mod pki;
pub mod pty;
pub mod push;
pub mod registry;
pub mod run;
pub mod schema1;
pub mod socks_proxy;
pub mod squid;
pub mod tarballs;
pub mod token;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::OnceLock;

pub use image::{
    image, image_with_config, image_with_layers, layer_from_files, layer_from_fixture,
    random_layer, sha256, Blob, Format, Image,
};
pub use push::{push_blob, push_image, push_index, push_manifest_bytes, push_one_layer, push_tars};
pub use registry::Registry;
pub use run::{
    assert_no_secret, assert_store_consistent, blob_path, blobs, entry, index, oracle,
    read_blob_json, run, run_with_stdin, skopeo_inspect, umoci_unpack, Run,
};
pub use tarballs::{gzip, pax_size_smuggler, python_tar};
pub use token::{TokenServer, REFRESH_TOKEN};

/// The one user the Basic-auth registry and the token server accept.
/// A wrapper for [`imagec_via`] that runs imagec as the user nobody (needs root).
pub const AS_NOBODY: [&str; 5] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--",
];

pub const USER: &str = "alice";
pub const PASSWORD: &str = "wonderland-42";

/// The registries and servers every test of one binary shares.
pub struct World {
    plain: Registry,
    basic: Registry,
    token: Registry,
    tls: Registry,
    mtls: Registry,
    token_server: TokenServer,
    ca_cert: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    storage: PathBuf,
}

/// The shared world, started on first call (thread-safe). A failed start panics in every test
/// that asks for it, with the same message.
pub fn world() -> &'static World {
    static WORLD: OnceLock<Result<World, String>> = OnceLock::new();
    let started = WORLD.get_or_init(|| {
        std::panic::catch_unwind(World::start).unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(message.unwrap_or_else(|| "panicked".to_string()))
        })
    });
    match started {
        Ok(world) => world,
        Err(message) => panic!("the test registries could not be started: {message}"),
    }
}

impl World {
    fn start() -> Result<World, String> {
        let dir = scratch_root().join("world");
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let storage = dir.join("storage");
        let pki = pki::Pki::generate(&dir)?;

        // Cost 4 (the minimum): the registry checks the hash on every request.
        let hash = bcrypt::hash(PASSWORD, 4).map_err(|e| format!("bcrypt: {e}"))?;
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, format!("{USER}:{hash}\n"))
            .map_err(|e| format!("writing {}: {e}", htpasswd.display()))?;

        let token_server = TokenServer::start(&pki)?;
        let realm = token_server.realm();
        let token_auth = registry::Auth::Token {
            realm: &realm,
            root_certs: &pki.ca_cert,
        };
        let tls = registry::Tls {
            cert: &pki.server_cert,
            key: &pki.server_key,
            clients: None,
        };
        let mtls = registry::Tls {
            cert: &pki.server_cert,
            key: &pki.server_key,
            clients: Some(registry::ClientTls {
                ca: &pki.ca_cert,
                cert: &pki.client_cert,
                key: &pki.client_key,
            }),
        };
        let start = |name: &str, auth: &registry::Auth, tls: Option<&registry::Tls>| {
            Registry::start(&dir, name, &storage, auth, tls, &pki.ca_cert)
        };
        // Started side by side: each takes a few hundred milliseconds to come up.
        let (plain, basic, token, tls, mtls) = std::thread::scope(|s| {
            let plain = s.spawn(|| start("plain", &registry::Auth::None, None));
            let basic = s.spawn(|| start("basic", &registry::Auth::Htpasswd(&htpasswd), None));
            let token = s.spawn(|| start("token", &token_auth, None));
            let tls = s.spawn(|| start("tls", &registry::Auth::None, Some(&tls)));
            let mtls = s.spawn(|| start("mtls", &registry::Auth::None, Some(&mtls)));
            let join = |h: std::thread::ScopedJoinHandle<'_, Result<Registry, String>>| {
                h.join()
                    .unwrap_or_else(|_| Err("a registry start panicked".to_string()))
            };
            (join(plain), join(basic), join(token), join(tls), join(mtls))
        });
        Ok(World {
            plain: plain?,
            basic: basic?,
            token: token?,
            tls: tls?,
            mtls: mtls?,
            token_server,
            ca_cert: pki.ca_cert.clone(),
            client_cert: pki.client_cert.clone(),
            client_key: pki.client_key.clone(),
            storage,
        })
    }

    /// HTTP, no auth. Push through this one.
    pub fn plain(&self) -> &Registry {
        &self.plain
    }

    /// HTTP with htpasswd Basic auth for USER/PASSWORD.
    pub fn basic(&self) -> &Registry {
        &self.basic
    }

    /// HTTP with bearer tokens from [`World::token_server`].
    pub fn token(&self) -> &Registry {
        &self.token
    }

    /// HTTPS without auth; its certificate (127.0.0.1, localhost) is signed by the test CA.
    pub fn tls(&self) -> &Registry {
        &self.tls
    }

    /// HTTPS that requires a client certificate signed by the test CA.
    pub fn mtls(&self) -> &Registry {
        &self.mtls
    }

    /// The client pair the test CA signed, as PEM files (`client.cert`, `client.key`).
    pub fn client_pair(&self) -> (&Path, &Path) {
        (&self.client_cert, &self.client_key)
    }

    /// PEM of the test CA.
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca_cert
    }

    pub fn token_server(&self) -> &TokenServer {
        &self.token_server
    }

    /// Where the registry keeps blob `digest` on disk (the filesystem driver's layout), so a
    /// test can damage it the way bit rot or a bad disk would.
    pub fn stored_blob(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// A fresh directory that lives as long as the test process.
    pub fn temp_dir(&self) -> PathBuf {
        temp_dir()
    }
}

/// A fresh directory under this process's scratch directory, removed when the process exits.
/// Needs no registry, unlike [`World::temp_dir`].
pub fn temp_dir() -> PathBuf {
    tempfile::Builder::new()
        .prefix("t-")
        .tempdir_in(scratch_root())
        .unwrap_or_else(|e| {
            panic!(
                "creating a temp dir under {}: {e}",
                scratch_root().display()
            )
        })
        .keep()
}

/// The process's scratch directory, created on first use together with its janitor.
fn scratch_root() -> &'static Path {
    static ROOT: OnceLock<(PathBuf, Option<ChildStdin>)> = OnceLock::new();
    let (root, _janitor) = ROOT.get_or_init(|| {
        let root = tempfile::Builder::new()
            .prefix("imagec-test-")
            .tempdir()
            .expect("creating the test scratch directory")
            .keep();
        if std::env::var_os("IMAGEC_TEST_KEEP").is_some() {
            // Straight to stderr: the test harness captures `eprintln!`.
            let _ = writeln!(
                std::io::stderr(),
                "imagec tests: keeping {}",
                root.display()
            );
            return (root, None);
        }
        // `read` returns when this process exits and closes the pipe; the pause lets the
        // registries (killed at the same moment) stop writing their logs first.
        let janitor = Command::new("sh")
            .arg("-c")
            .arg(r#"read _; sleep 1; rm -rf "$0""#)
            .arg(&root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut child| {
                child
                    .stdin
                    .take()
                    .ok_or(std::io::ErrorKind::BrokenPipe.into())
            })
            .expect("starting the scratch directory's janitor");
        (root, Some(janitor))
    });
    root
}

/// The binary cargo built for the integration tests; from an example (the demo), the one
/// beside the examples directory.
/// `IMAGEC_TEST_BINARY` runs the suite against another build (an older commit's, to show that
/// a regression test fails without its fix).
fn imagec_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("IMAGEC_TEST_BINARY") {
        return PathBuf::from(path);
    }
    match option_env!("CARGO_BIN_EXE_imagec") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("imagec")))
            .unwrap_or_else(|| PathBuf::from("imagec")),
    }
}

/// The `imagec` binary under test with a clean environment: only PATH (and TMPDIR,
/// RUST_BACKTRACE, LLVM_PROFILE_FILE if set) is inherited; HOME is a fresh empty directory that
/// is also the working directory (so the default `./images` lands there); DOCKER_CONFIG is a
/// separate empty directory `$HOME/docker-config`; no proxy; `IMAGEC_RETRY_BASE_MS=0` so that
/// retries do not sleep. Tests read the paths back with `get_envs()` / `get_current_dir()`.
pub fn imagec() -> Command {
    imagec_via(&[])
}

/// [`imagec`] started through `wrapper` (a command that ends by executing its arguments):
/// `["setpriv", "--reuid=65534", ...]` to run as another user, `["sh", "-c", "umask 077 && exec
/// \"$@\"", "sh"]` to run under a given umask.
pub fn imagec_via(wrapper: &[&str]) -> Command {
    let home = temp_dir();
    let docker_config = home.join("docker-config");
    std::fs::create_dir(&docker_config)
        .unwrap_or_else(|e| panic!("creating {}: {e}", docker_config.display()));
    let mut command = match wrapper.split_first() {
        None => Command::new(imagec_binary()),
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(imagec_binary());
            c
        }
    };
    command.env_clear();
    for name in ["PATH", "TMPDIR", "RUST_BACKTRACE", "LLVM_PROFILE_FILE"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
        .env("HOME", &home)
        .env("DOCKER_CONFIG", &docker_config)
        .env("IMAGEC_RETRY_BASE_MS", "0")
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .current_dir(&home)
        .stdin(Stdio::null());
    command
}
