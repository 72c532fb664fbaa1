//! Settings resolved once from flags, environment and files: the only thing the commands see
//! (STYLE: Settings resolved once).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::args::{FormatArg, ImageArgs, RegistryArgs};
use crate::platform::{Platform, PlatformChoice, PlatformError};
use crate::pull::Format;
use crate::reference::{Reference, ReferenceError};
use crate::registry::credentials::{CredentialSource, Credentials, Secret};
use crate::registry::http::{self, HttpSettings};
use crate::registry::{retry, RegistrySettings};

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("--username {0} needs a password: pipe it to --password-stdin or set IMAGEC_PASSWORD")]
    NoPassword(String),
    #[error("a password was given (--password-stdin or IMAGEC_PASSWORD) but no --username")]
    NoUsername,
    #[error("--password-stdin: interrupted at the password prompt")]
    Interrupted,
    #[error("--password-stdin: standard input is empty")]
    EmptyPassword,
    #[error("--password-stdin: reading standard input: {0}")]
    Stdin(std::io::Error),
    #[error("save -o -: standard output is a terminal; redirect it to a file or a pipe")]
    ArchiveToTerminal,
    #[error("unpack needs an absent or empty directory, and {0} is neither")]
    UnpackTarget(PathBuf),
    #[error("tags lists a repository: drop {0:?} from the name")]
    TagsOfATag(String),
    #[error("--auth-file {0}: no such file")]
    NoAuthFile(PathBuf),
    #[error("--ca-cert {0}: no such file")]
    NoCaCert(PathBuf),
    #[error("--cert-dir {0}: no such directory")]
    NoCertDir(PathBuf),
    #[error("--cache-dir {0} is the store itself: give the cache its own directory")]
    CacheIsDest(PathBuf),
    #[error("{0}")]
    Mirror(String),
    #[error("{0}")]
    Proxy(String),
    #[error(transparent)]
    RegistriesConf(#[from] crate::registry::registries_conf::ConfError),
    #[error("-u/--password-stdin is for one registry, but the references name several ({0}); put their credentials in an auth file (--auth-file)")]
    CredentialsForSeveral(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    Human,
    Quiet,
    Json,
}

impl OutputMode {
    /// clap refuses `--json` with `--quiet` where a command has both.
    pub fn of(json: bool, quiet: bool) -> OutputMode {
        if json {
            OutputMode::Json
        } else if quiet {
            OutputMode::Quiet
        } else {
            OutputMode::Human
        }
    }
}

/// What every command that talks to a registry shares.
#[derive(Debug, Clone)]
pub struct Settings {
    pub output: OutputMode,
    pub verbose: bool,
    /// `TERM=dumb`: no bars, plain lines (SPEC: Output).
    pub dumb_terminal: bool,
    /// The terminal draws a frame at once between DEC mode 2026's brackets.
    pub synchronized_output: bool,
    /// Tags asked for per `tags/list` page (test-only override: IMAGEC_TAGS_PAGE).
    pub tags_page: usize,
    pub registry: RegistrySettings,
}

/// Tags per page: what crane asks for; distribution and Docker Hub send at most what is asked.
pub const TAGS_PAGE: usize = 1000;

/// Which image, in which store: `pull`, `layers`, `inspect`.
#[derive(Debug, Clone)]
pub struct ImageSettings {
    pub dest: PathBuf,
    pub platform: PlatformChoice,
    /// `--cache-dir` / `IMAGEC_CACHE_DIR` (an empty value: none).
    pub cache_dir: Option<PathBuf>,
}

impl Settings {
    /// `registries`: the registries the command's references name (`-u` credentials are for
    /// exactly one of them).
    pub fn from_args(
        a: &RegistryArgs,
        registries: &[&str],
        output: OutputMode,
    ) -> Result<Settings, UsageError> {
        let env = Env::read();
        for ca in &a.ca_cert {
            if !ca.exists() {
                return Err(UsageError::NoCaCert(ca.clone()));
            }
        }
        if let Some(d) = &a.cert_dir {
            if !d.is_dir() {
                return Err(UsageError::NoCertDir(d.clone()));
            }
        }
        if let Some(e) = &env.proxy_error {
            return Err(UsageError::Proxy(e.clone()));
        }
        let mirrors = mirror_rules(a, &env)?;
        Ok(Settings {
            output,
            verbose: a.verbose,
            dumb_terminal: env.term.as_deref() == Some("dumb"),
            synchronized_output: synchronized_output(&env),
            tags_page: env.tags_page.unwrap_or(TAGS_PAGE),
            registry: RegistrySettings {
                http: HttpSettings {
                    ca_certs: a.ca_cert.clone(),
                    insecure_skip_verify: a.insecure_skip_verify,
                    timeout: Some(Duration::from_secs(a.timeout)),
                    connect_timeout: env.connect_timeout.unwrap_or(http::CONNECT_TIMEOUT),
                    read_timeout: env.stall_timeout.unwrap_or(http::READ_TIMEOUT),
                    proxy: env.proxy.clone(),
                    cert_dirs: match &a.cert_dir {
                        Some(d) => vec![d.clone()],
                        None => crate::registry::certs::SYSTEM_CERT_DIRS
                            .iter()
                            .map(PathBuf::from)
                            .collect(),
                    },
                    hosts: {
                        // The references' registries, their mirrors and relocations.
                        let mut hosts: Vec<String> =
                            registries.iter().map(|r| r.to_string()).collect();
                        for rule in &mirrors {
                            let places = rule.mirrors.iter().map(|m| m.location.as_str());
                            for place in places.chain(rule.location.as_deref()) {
                                hosts.push(place.split('/').next().unwrap_or(place).to_string());
                            }
                        }
                        hosts.sort();
                        hosts.dedup();
                        hosts
                    },
                    unverified_hosts: crate::registry::hosts::unverified_hosts(
                        &mirrors, registries,
                    ),
                },
                credentials: credentials(a, registries, &env)?,
                allow_http: a.insecure_allow_http,
                attempts: a.retries,
                retry_base: env.retry_base.unwrap_or(retry::DEFAULT_BASE),
                mirrors,
                preconnect: 0,
            },
        })
    }
}

/// The registries.conf files to read: `--registries-conf`, else `$CONTAINERS_REGISTRIES_CONF`,
/// else `/etc/containers/registries.conf` and `registries.conf.d/*.conf` (in name order) when
/// present, as containers/image reads them.
fn registries_conf_files(a: &RegistryArgs, env: &Env) -> Result<Vec<PathBuf>, UsageError> {
    if let Some(f) = a.registries_conf.as_ref().or(env.registries_conf.as_ref()) {
        if !f.is_file() {
            return Err(UsageError::RegistriesConf(
                crate::registry::registries_conf::ConfError {
                    path: f.clone(),
                    reason: "no such file".into(),
                },
            ));
        }
        return Ok(vec![f.clone()]);
    }
    let main = PathBuf::from("/etc/containers/registries.conf");
    let mut files: Vec<PathBuf> = Vec::new();
    if main.is_file() {
        files.push(main);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/containers/registries.conf.d") {
        let mut dropins: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        dropins.sort();
        files.extend(dropins);
    }
    Ok(files)
}

/// registries.conf's rules, with `--mirror` flags' mirrors ahead of a rule's own for the
/// same registry.
fn mirror_rules(
    a: &RegistryArgs,
    env: &Env,
) -> Result<Vec<crate::registry::hosts::Rule>, UsageError> {
    use crate::registry::hosts::{parse_mirror_flag, Rule};
    let mut rules = crate::registry::registries_conf::load(&registries_conf_files(a, env)?)?;
    for flag in a.mirror.iter().rev() {
        let (registry, mirror) = parse_mirror_flag(flag).map_err(UsageError::Mirror)?;
        match rules.iter_mut().find(|r| r.prefix == registry) {
            Some(rule) => rule.mirrors.insert(0, mirror),
            None => rules.push(Rule {
                prefix: registry,
                mirrors: vec![mirror],
                ..Default::default()
            }),
        }
    }
    Ok(rules)
}

impl ImageSettings {
    pub fn from_args(a: &ImageArgs) -> Result<ImageSettings, UsageError> {
        let cache_dir = a.cache_dir.clone().filter(|d| !d.as_os_str().is_empty());
        if let Some(c) = &cache_dir {
            // The same directory by any spelling (`./images` and `images`, a symlink).
            let real = |p: &std::path::Path| {
                std::fs::canonicalize(p)
                    .or_else(|_| std::path::absolute(p))
                    .unwrap_or_else(|_| p.to_path_buf())
            };
            if real(c) == real(&a.store.dest) {
                return Err(UsageError::CacheIsDest(c.clone()));
            }
        }
        Ok(ImageSettings {
            dest: a.store.dest.clone(),
            cache_dir,
            platform: match &a.platform {
                Some(p) => p.parse()?,
                None => PlatformChoice::Host(Platform::host()),
            },
        })
    }
}

pub fn format_of(f: FormatArg) -> Format {
    match f {
        FormatArg::Oci => Format::Oci,
        FormatArg::Preserve => Format::Preserve,
    }
}

pub fn parse_references(refs: &[String]) -> Result<Vec<Reference>, UsageError> {
    refs.iter()
        .map(|r| r.parse().map_err(UsageError::from))
        .collect()
}

/// Every environment variable imagec reads, read here and nowhere else (clap reads the ones
/// that stand in for flags: IMAGEC_DEST, IMAGEC_USERNAME).
#[derive(Default)]
pub struct Env {
    password: Option<String>,
    docker_config: Option<PathBuf>,
    home: Option<PathBuf>,
    term: Option<String>,
    term_program: Option<String>,
    tmux: bool,
    /// `ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY` (either case) and `NO_PROXY`, as ureq reads
    /// them (SPEC: Networks asks for more, in a later issue).
    /// A proxy variable that does not parse is the error text.
    proxy: crate::registry::proxy::ProxyRules,
    proxy_error: Option<String>,
    /// Test-only: backoff base, connect timeout and stall timeout in milliseconds, and the
    /// tags page size.
    retry_base: Option<Duration>,
    connect_timeout: Option<Duration>,
    stall_timeout: Option<Duration>,
    tags_page: Option<usize>,
    registries_conf: Option<PathBuf>,
}

impl Env {
    pub fn read() -> Env {
        let millis = |name| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis)
        };
        let path = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let (proxy, proxy_error) =
            match crate::registry::proxy::ProxyRules::from_env(|k| std::env::var(k).ok()) {
                Ok(p) => (p, None),
                Err(e) => (Default::default(), Some(e)),
            };
        Env {
            password: std::env::var("IMAGEC_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty()),
            docker_config: path("DOCKER_CONFIG"),
            home: path("HOME"),
            term: std::env::var("TERM").ok(),
            term_program: std::env::var("TERM_PROGRAM").ok(),
            tmux: std::env::var_os("TMUX").is_some(),
            proxy,
            proxy_error,
            retry_base: millis("IMAGEC_RETRY_BASE_MS"),
            connect_timeout: millis("IMAGEC_CONNECT_TIMEOUT_MS"),
            stall_timeout: millis("IMAGEC_STALL_TIMEOUT_MS"),
            registries_conf: path("CONTAINERS_REGISTRIES_CONF"),
            tags_page: std::env::var("IMAGEC_TAGS_PAGE")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0),
        }
    }
}

/// Terminals known to support synchronized output (DEC private mode 2026), by what they put
/// in the environment; elsewhere frames are still written in one write each. Terminals ignore
/// private modes they do not know, but a short list of known ones keeps old consoles out of it.
fn synchronized_output(env: &Env) -> bool {
    const PROGRAMS: [&str; 6] = [
        "WezTerm",
        "iTerm.app",
        "vscode",
        "ghostty",
        "contour",
        "WarpTerminal",
    ];
    const TERMS: [&str; 5] = [
        "xterm-kitty",
        "foot",
        "alacritty",
        "xterm-ghostty",
        "contour",
    ];
    let term = env.term.as_deref().unwrap_or("");
    env.tmux
        || env
            .term_program
            .as_deref()
            .is_some_and(|p| PROGRAMS.contains(&p))
        || TERMS.iter().any(|t| term.starts_with(t))
}

fn credentials(
    a: &RegistryArgs,
    registries: &[&str],
    env: &Env,
) -> Result<CredentialSource, UsageError> {
    let password = if a.password_stdin && std::io::stdin().is_terminal() {
        // On a terminal: a prompt and one line without echo (reading to the end of input
        // would look like a hang), for the one registry the credentials are for.
        let user = a
            .username
            .as_deref()
            .filter(|u| !u.is_empty())
            .ok_or(UsageError::NoUsername)?;
        let prompt = format!(
            "Password for {user}@{}: ",
            registries.first().unwrap_or(&"")
        );
        let s = super::password::read_from_terminal(&prompt).map_err(|e| match e {
            super::password::PromptError::Interrupted => UsageError::Interrupted,
            super::password::PromptError::Io(e) => UsageError::Stdin(e),
        })?;
        if s.is_empty() {
            return Err(UsageError::EmptyPassword);
        }
        Some(s)
    } else if a.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(UsageError::Stdin)?;
        // Like `docker login --password-stdin`: the trailing newline is not part of it.
        let s = s.trim_end_matches(['\n', '\r']).to_string();
        if s.is_empty() {
            return Err(UsageError::EmptyPassword);
        }
        Some(s)
    } else {
        env.password.clone()
    };
    let username = a.username.clone().filter(|u| !u.is_empty());
    let explicit = match (username, password) {
        (Some(username), Some(p)) => {
            let mut distinct: Vec<&str> = registries.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() > 1 {
                return Err(UsageError::CredentialsForSeveral(distinct.join(", ")));
            }
            distinct.first().map(|r| {
                (
                    r.to_string(),
                    Credentials {
                        username,
                        password: Secret::new(p),
                    },
                )
            })
        }
        (Some(u), None) => return Err(UsageError::NoPassword(u)),
        (None, Some(_)) if a.password_stdin => return Err(UsageError::NoUsername),
        // IMAGEC_PASSWORD alone in the environment is not an error: it may be meant for
        // another tool run; without a user it is simply not used.
        (None, _) => None,
    };
    let auth_file = match &a.auth_file {
        Some(f) if !f.exists() => return Err(UsageError::NoAuthFile(f.clone())),
        Some(f) => Some(f.clone()),
        None => default_auth_file(env),
    };
    Ok(CredentialSource {
        explicit,
        auth_file,
    })
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (docker CLI's lookup).
fn default_auth_file(env: &Env) -> Option<PathBuf> {
    if let Some(dir) = &env.docker_config {
        return Some(dir.join("config.json"));
    }
    env.home
        .as_ref()
        .map(|h| h.join(".docker").join("config.json"))
}
