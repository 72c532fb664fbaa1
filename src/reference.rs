//! Image references: parsing and normalisation the way the docker CLI does it (SPEC: References).
//! STUB: to be implemented.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// A normalised image reference: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference {input:?}: {reason}")]
    Invalid { input: String, reason: String },
}

impl Reference {
    /// Normalised registry name as users write it: `docker.io`, `127.0.0.1:5000`, `ghcr.io`.
    pub fn registry(&self) -> &str {
        &self.registry
    }
    /// Host[:port] the registry API is served at (`registry-1.docker.io` for docker.io).
    pub fn api_host(&self) -> &str {
        todo!()
    }
    /// `library/alpine`, `team/app`.
    pub fn repository(&self) -> &str {
        &self.repository
    }
    /// The tag; `latest` when neither tag nor digest was given; None for a digest-only reference.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
    /// What goes after `/manifests/`: the digest when there is one, else the tag.
    pub fn manifest_reference(&self) -> String {
        todo!()
    }
    /// True for 127.0.0.0/8, ::1 and localhost (with any port).
    pub fn is_loopback(&self) -> bool {
        todo!()
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(_s: &str) -> Result<Self, Self::Err> {
        todo!()
    }
}

/// The full normalised form: `docker.io/library/alpine:3.20`, `host:5000/a/b@sha256:...`,
/// `host/a:tag@sha256:...`.
impl fmt::Display for Reference {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}
