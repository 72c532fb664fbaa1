//! The top-level error of a command and the one function that maps errors to the documented
//! exit codes (SPEC: Exit codes).

use crate::cli::settings::UsageError;
use crate::manifest::ManifestError;
use crate::pull::resolve::ResolveError;
use crate::pull::transfer::TransferError;
use crate::pull::PullError;
use crate::registry::credentials::CredentialError;
use crate::registry::{http::TlsSetupError, ClientError, RegistryError};
use crate::store::gc::GcError;
use crate::store::StoreError;

pub const SUCCESS: u8 = 0;
pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const AUTH: u8 = 3;
pub const NOT_FOUND: u8 = 4;
/// Interrupted (Ctrl-C): 128 + SIGINT, as shells report it.
pub const INTERRUPTED: u8 = 130;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Files(#[from] crate::pull::files::FilesError),
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    #[error(transparent)]
    Gc(#[from] GcError),
    #[error("{0} is not in the store")]
    NotInStore(String),
    #[error("no store at {0}")]
    NoStore(std::path::PathBuf),
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            // A --ca-cert file that cannot be read or holds no certificate is the user's input,
            // like a missing one.
            Error::Usage(UsageError::Interrupted)
            | Error::Files(crate::pull::files::FilesError::Interrupted)
            | Error::Archive(crate::archive::ArchiveError::Interrupted) => INTERRUPTED,
            Error::Usage(_) | Error::Unsupported(_) | Error::Tls(_) => USAGE,
            Error::Store(_) | Error::Gc(_) | Error::Files(_) | Error::Archive(_) => FAILURE,
            Error::NotInStore(_) | Error::NoStore(_) => NOT_FOUND,
            Error::Interrupted => INTERRUPTED,
            Error::Pull(PullError::Resolve(e)) | Error::Resolve(e) => resolve_code(e),
            Error::Pull(PullError::Transfer(e)) => transfer_code(e),
            Error::Transfer(e) => transfer_code(e),
            Error::Client(e) => client_code(e),
            Error::Pull(
                PullError::Store(_)
                | PullError::BlobMissing { .. }
                | PullError::NoImage { .. }
                | PullError::NoDiffId { .. },
            ) => FAILURE,
        }
    }
}

// Every match below names every variant: a new error must be given its exit code on purpose.

fn resolve_code(e: &ResolveError) -> u8 {
    match e {
        ResolveError::Client(c) => client_code(c),
        ResolveError::Manifest(m) => manifest_code(m),
        ResolveError::Transfer(t) => transfer_code(t),
        ResolveError::NoSuchTag { .. } | ResolveError::ConvertedDigest { .. } => NOT_FOUND,
        ResolveError::Store(_)
        | ResolveError::ChildSize { .. }
        | ResolveError::Nested { .. }
        | ResolveError::Schema1InIndex { .. } => FAILURE,
    }
}

fn manifest_code(e: &ManifestError) -> u8 {
    match e {
        ManifestError::NoPlatform { .. } => NOT_FOUND,
        ManifestError::UnknownType { .. }
        | ManifestError::Schema1 { .. }
        | ManifestError::Malformed { .. }
        | ManifestError::Version { .. }
        | ManifestError::Config { .. } => FAILURE,
    }
}

fn transfer_code(e: &TransferError) -> u8 {
    match e {
        TransferError::Client(c) => client_code(c),
        TransferError::Store(_)
        | TransferError::Ingest(_)
        | TransferError::Layer { .. }
        | TransferError::NotInCache { .. } => FAILURE,
        TransferError::Interrupted { .. } => INTERRUPTED,
    }
}

fn client_code(e: &ClientError) -> u8 {
    match e {
        ClientError::Registry(r) => registry_code(r),
        // A helper that refuses to give credentials is a refusal of access.
        ClientError::Credentials(CredentialError::Helper { .. }) => AUTH,
        ClientError::Credentials(
            CredentialError::Read { .. }
            | CredentialError::Parse { .. }
            | CredentialError::BadAuthField { .. },
        ) => FAILURE,
    }
}

pub fn registry_code(e: &RegistryError) -> u8 {
    match e {
        RegistryError::Unauthorized { .. } | RegistryError::Denied { .. } => AUTH,
        // The token server's 4xx refuses the credentials; its 5xx is its own failure.
        RegistryError::TokenRefused { status, .. } if (400..500).contains(status) => AUTH,
        RegistryError::RefreshTokenRefused { status, .. } if (400..500).contains(status) => AUTH,
        RegistryError::NoOAuth2 { .. } => AUTH,
        RegistryError::RefreshTokenRefused { .. } => FAILURE,
        RegistryError::TokenRefused { .. } => FAILURE,
        RegistryError::NotFound { .. } => NOT_FOUND,
        RegistryError::Blocked { .. } => USAGE,
        RegistryError::Proxy { .. } => FAILURE,
        RegistryError::Retried { source, .. } => registry_code(source),
        RegistryError::Transport { .. }
        | RegistryError::Body { .. }
        | RegistryError::Status { .. }
        | RegistryError::TokenInvalid { .. }
        | RegistryError::NotARegistry { .. }
        | RegistryError::UnsupportedAuth { .. }
        | RegistryError::TooManyRedirects { .. }
        | RegistryError::BadRedirect { .. }
        | RegistryError::ManifestTooLarge { .. }
        | RegistryError::Schema1Payload { .. }
        | RegistryError::ManifestDigest { .. }
        | RegistryError::BlobVerify { .. }
        | RegistryError::BadRange { .. }
        | RegistryError::MissingLength { .. }
        | RegistryError::BadTagList { .. }
        | RegistryError::Deadline { .. } => FAILURE,
    }
}
