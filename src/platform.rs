//! Platforms (`os/arch[/variant]`): parsing, the host's platform, and matching manifest-list
//! entries the way containerd normalises them. STUB: to be implemented.

use std::fmt;
use std::str::FromStr;

/// An OCI platform (image-index `platform` object); serde names follow the OCI spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Option::is_none")]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// What `--platform` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformChoice {
    One(Platform),
    All,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid platform {input:?}: {reason}")]
pub struct PlatformError {
    pub input: String,
    pub reason: String,
}

impl Platform {
    /// The platform this binary runs on, normalised (`linux/amd64`, `linux/arm64/v8`).
    pub fn host() -> Platform {
        todo!()
    }
    /// containerd's normalisation: x86_64 -> amd64, aarch64 -> arm64 (variant v8), armhf -> arm/v7...
    pub fn normalized(&self) -> Platform {
        todo!()
    }
    /// Does an index entry with platform `candidate` satisfy this (wanted) platform?
    pub fn matches(&self, _candidate: &Platform) -> bool {
        todo!()
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(_s: &str) -> Result<Self, Self::Err> {
        todo!()
    }
}

/// `os/arch[/variant]`.
impl fmt::Display for Platform {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}

impl FromStr for PlatformChoice {
    type Err = PlatformError;
    fn from_str(_s: &str) -> Result<Self, Self::Err> {
        todo!()
    }
}
