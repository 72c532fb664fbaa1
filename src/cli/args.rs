//! Command-line arguments (clap derive; the doc comments are the help text).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The exit codes (SPEC: Exit codes), at the end of every help page.
macro_rules! exit_codes {
    () => {
        "Exit codes:\n  0 success, 1 failure, 2 usage error, 3 authentication refused,\n  4 not found, 130 interrupted (Ctrl-C)"
    };
}

/// A command's help footer: a few examples, then the exit codes.
macro_rules! examples {
    ($($line:literal),+ $(,)?) => {
        concat!("Examples:\n", $("  ", $line, "\n",)+ "\n", exit_codes!())
    };
}

#[derive(Debug, Parser)]
#[command(
    name = "imagec",
    version,
    about = "Pull container images from registries into a verified OCI image layout",
    long_about = None,
    after_help = exit_codes!(),
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull one or more images into the store
    #[command(after_help = examples!(
        "imagec pull alpine:3.20",
        "imagec pull --platform linux/arm64 --dest ./store ghcr.io/org/app:1.2 alpine",
        "imagec pull --dry-run --json registry.example.com/team/app:2",
    ))]
    Pull(PullArgs),
    /// List an image's layers without downloading them
    #[command(after_help = examples!(
        "imagec layers alpine:3.20",
        "imagec layers --json --platform linux/arm64 ghcr.io/org/app:1.2",
        "imagec layers --files alpine:3.20",
    ))]
    Layers(LayersArgs),
    /// Show an image's summary, manifest and config
    #[command(after_help = examples!(
        "imagec inspect alpine:3.20",
        "imagec inspect --json ghcr.io/org/app:1.2 | jq .config",
        "imagec inspect --raw alpine:3.20 | sha256sum",
    ))]
    Inspect(InspectArgs),
    /// List a repository's tags
    #[command(after_help = examples!(
        "imagec tags alpine",
        "imagec tags --json registry.example.com/team/app | jq -r '.tags[]'",
    ))]
    Tags(TagsArgs),
    /// Pull an image if needed, then apply its layers into a directory
    #[command(after_help = examples!(
        "imagec unpack alpine:3.20 ./rootfs",
        "imagec unpack --platform linux/arm64 --json ghcr.io/org/app:1.2 /tmp/app",
    ))]
    Unpack(UnpackArgs),
    /// Write images into one archive for docker load, podman load and skopeo
    #[command(after_help = examples!(
        "imagec save alpine:3.20 -o alpine.tar",
        "imagec save app:1 app:2 -o - | docker load",
    ))]
    Save(SaveArgs),
    /// List what the store holds
    #[command(after_help = examples!(
        "imagec images",
        "imagec images --dest ./store --json",
    ))]
    Images(ImagesArgs),
    /// Remove references from the store's index (their blobs stay until `gc`)
    #[command(after_help = examples!(
        "imagec rm docker.io/library/alpine:3.20",
        "imagec rm alpine:3.20 && imagec gc",
    ))]
    Rm(RmArgs),
    /// Delete blobs no reference reaches, and stale partial downloads
    #[command(after_help = examples!(
        "imagec gc --dry-run",
        "imagec gc --dest ./store --json",
        "imagec gc --cache-dir /var/cache/imagec --keep-days 14",
    ))]
    Gc(GcArgs),
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// References to remove, as pulled: [registry[:port]/]repository[:tag][@digest]
    #[arg(required = true, value_name = "REFERENCE")]
    pub references: Vec<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// List what would be deleted, delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Collect even when an entry cannot be fully read (everything it reaches is kept)
    #[arg(long)]
    pub force: bool,
    /// Collect this blob cache instead of a store: blobs no store hardlinks that were not used
    /// for --keep-days, and stale partial downloads (IMAGEC_CACHE_DIR is not read here)
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// With --cache-dir: keep blobs used in the last N days
    #[arg(long, value_name = "N", default_value_t = 7, requires = "cache_dir")]
    pub keep_days: u32,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Images to pull: [registry[:port]/]repository[:tag][@digest]
    #[arg(required = true, value_name = "REFERENCE")]
    pub references: Vec<String>,
    /// Resolve the references and print what would be downloaded; download and create nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Parallel blob downloads (connections)
    #[arg(short = 'j', long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=crate::registry::http::MAX_JOBS as i64))]
    pub jobs: u16,
    /// Blobs of at least this size come as parallel Range chunks of this size, over the
    /// connections --jobs leaves free (bytes, or with K, M, G: 64M, 1G; 0: never)
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    pub chunk_size: u64,
    /// How manifests are stored: `oci` rewrites Docker media types to OCI ones, `preserve` keeps them as served
    #[arg(long, value_enum, default_value_t = FormatArg::Oci)]
    pub format: FormatArg,
    /// No progress output; print only the manifest digest of each reference
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,
    #[command(flatten)]
    pub image: ImageArgs,
}

#[derive(Debug, Args)]
pub struct LayersArgs {
    /// The image: [registry[:port]/]repository[:tag][@digest]
    #[arg(value_name = "REFERENCE")]
    pub reference: String,
    /// Also list every file each layer adds (A), changes (M), deletes (D) or makes opaque (O),
    /// and the bytes later layers hide; pulls the layers into the store first
    #[arg(long)]
    pub files: bool,
    #[command(flatten)]
    pub image: ImageArgs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image: [registry[:port]/]repository[:tag][@digest]
    #[arg(value_name = "REFERENCE")]
    pub reference: String,
    /// Print the manifest bytes exactly as the registry served them
    #[arg(long, conflicts_with_all = ["full", "json"])]
    pub raw: bool,
    /// Add the whole manifest and config to the summary
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub image: ImageArgs,
}

#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// The image: [registry[:port]/]repository[:tag][@digest]
    #[arg(value_name = "REFERENCE")]
    pub reference: String,
    /// Where the root filesystem goes: absent or an empty directory
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// No progress output and no summary line
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,
    #[command(flatten)]
    pub image: ImageArgs,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Images to save: [registry[:port]/]repository[:tag][@digest]
    #[arg(required = true, value_name = "REFERENCE")]
    pub references: Vec<String>,
    /// The archive to write (`-` for standard output)
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// No progress output and no summary line
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,
    #[command(flatten)]
    pub image: ImageArgs,
}

#[derive(Debug, Args)]
pub struct TagsArgs {
    /// The repository: [registry[:port]/]repository (a tag or digest is ignored)
    #[arg(value_name = "REPOSITORY")]
    pub repository: String,
    /// Machine-readable output on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Where the store is and whether to answer in JSON: every command that reads the store.
#[derive(Debug, Args, Clone)]
pub struct StoreArgs {
    /// The store: an OCI image layout directory
    #[arg(
        long,
        env = "IMAGEC_DEST",
        default_value = "./images",
        value_name = "DIR"
    )]
    pub dest: PathBuf,
    /// Machine-readable output on stdout
    #[arg(long)]
    pub json: bool,
}

/// What names one image in the store and at the registry: `pull`, `layers`, `inspect`.
#[derive(Debug, Args, Clone)]
pub struct ImageArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Platform to take from a multi-platform image: os/arch[/variant], or `all` (pull only) [default: the host's]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// A blob cache shared by many stores: configs and layers are downloaded into it once and
    /// linked into the store (hardlink, else reflink, else copy) [pull, unpack, save, layers --files]
    #[arg(long, env = "IMAGEC_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// How to reach and authenticate to a registry: every command that talks to one.
#[derive(Debug, Args, Clone)]
pub struct RegistryArgs {
    /// Registry user name
    #[arg(short = 'u', long, env = "IMAGEC_USERNAME", value_name = "USER")]
    pub username: Option<String>,
    /// Read the password or token from standard input (IMAGEC_PASSWORD also works); on a terminal, prompts
    #[arg(long)]
    pub password_stdin: bool,
    /// Docker config.json to read credentials from [default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json]
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    /// Extra trusted CA certificate (PEM); may be repeated
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Vec<PathBuf>,
    /// Try this mirror first for references on REGISTRY (REGISTRY=URL; repeatable, in order; http:// allows plain HTTP, a path is a repository prefix)
    #[arg(long, value_name = "REGISTRY=URL")]
    pub mirror: Vec<String>,
    /// containers' registries.conf for mirrors and locations [default: $CONTAINERS_REGISTRIES_CONF, else /etc/containers/registries.conf and registries.conf.d/]
    #[arg(long, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    /// A certs.d tree: DIR/HOST[:PORT]/ holds *.crt CAs and NAME.cert + NAME.key client pairs [default: /etc/containers/certs.d, then /etc/docker/certs.d]
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Do not verify the registry's TLS certificate
    #[arg(long)]
    pub insecure_skip_verify: bool,
    /// Allow plain HTTP when HTTPS fails (automatic for registries on loopback)
    #[arg(long)]
    pub insecure_allow_http: bool,
    /// Give up after this many seconds (at most a week)
    #[arg(long, default_value_t = 3600, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub timeout: u64,
    /// Attempts for a transient failure (connection reset, 5xx, 429, timeouts)
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub retries: u32,
    /// Log each HTTP request and decision to stderr (never a secret)
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Oci,
    Preserve,
}

/// `65536`, `64K`, `64M`, `1G` (also `64MiB`, `64MB`: powers of 1024 either way).
pub fn parse_size(v: &str) -> Result<u64, String> {
    let t = v.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{v:?} is not a size (bytes, or with K, M, G)"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("{v:?} is not a size (bytes, or with K, M, G)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{v:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
