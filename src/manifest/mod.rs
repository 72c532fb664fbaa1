//! Manifests: the image manifest and index documents (OCI and their Docker schema2 twins),
//! the image config fields we read, and platform selection in an index. `convert` rewrites
//! Docker media types to OCI ones for the store (SPEC: The store, `--format oci`).

pub mod convert;
pub mod media;
pub mod schema1;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::platform::{Platform, PlatformChoice};
use media::Kind;

/// SPEC: "Cap manifest size (4 MiB)": what a registry serves, and what the store reads back.
pub const MAX_MANIFEST: u64 = 4 << 20;

/// A content descriptor (image-spec `descriptor.md`). Fields we do not model are kept in
/// `extra` so a rewritten document loses nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// An image manifest (OCI `image-manifest.md`, Docker `manifest-v2-2.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    Image(Kind, Box<ImageManifest>),
    Index(Kind, Box<Index>),
    Schema1(Box<schema1::Schema1>),
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {digest} has an unknown media type {media_type:?}")]
    UnknownType { digest: Digest, media_type: String },
    #[error("schema1 manifest {digest} is invalid: {source}")]
    Schema1 {
        digest: Digest,
        #[source]
        source: schema1::Schema1Error,
    },
    #[error("manifest {digest} ({media_type}) is malformed: {source}")]
    Malformed {
        digest: Digest,
        media_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("manifest {digest} has schemaVersion {version}, expected 2")]
    Version { digest: Digest, version: u32 },
    #[error("{reference} has no image for platform {wanted}; it has: {}", if available.is_empty() { "no platform entries".to_string() } else { available.join(", ") })]
    NoPlatform {
        reference: String,
        wanted: String,
        available: Vec<String>,
    },
    #[error("image config {digest} is malformed: {source}")]
    Config {
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
}

impl Manifest {
    /// Parse served bytes; `content_type` helps when the body does not name its type.
    pub fn parse(
        content_type: &str,
        bytes: &[u8],
        digest: &Digest,
    ) -> Result<Manifest, ManifestError> {
        let kind =
            media::classify(content_type, bytes).ok_or_else(|| ManifestError::UnknownType {
                digest: digest.clone(),
                media_type: content_type.to_string(),
            })?;
        let malformed = |source| ManifestError::Malformed {
            digest: digest.clone(),
            media_type: kind.media_type().to_string(),
            source,
        };
        let version = |v: u32| {
            if v == 2 {
                Ok(())
            } else {
                Err(ManifestError::Version {
                    digest: digest.clone(),
                    version: v,
                })
            }
        };
        match kind {
            // Only the JWS payload is read: it is what the digest was checked over.
            Kind::Schema1 => schema1::payload(bytes)
                .and_then(|payload| schema1::Schema1::parse(&payload))
                .map(|m| Manifest::Schema1(Box::new(m)))
                .map_err(|source| ManifestError::Schema1 {
                    digest: digest.clone(),
                    source,
                }),
            Kind::OciIndex | Kind::DockerList => {
                let index: Index = serde_json::from_slice(bytes).map_err(malformed)?;
                version(index.schema_version)?;
                Ok(Manifest::Index(kind, Box::new(index)))
            }
            Kind::OciManifest | Kind::DockerManifest => {
                let m: ImageManifest = serde_json::from_slice(bytes).map_err(malformed)?;
                version(m.schema_version)?;
                Ok(Manifest::Image(kind, Box::new(m)))
            }
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Manifest::Image(k, _) | Manifest::Index(k, _) => *k,
            Manifest::Schema1(_) => Kind::Schema1,
        }
    }
}

impl Index {
    /// The entries that satisfy `choice`, in index order: all of them, or the first match
    /// (registries list the preferred variant first, and docker takes the first match too).
    pub fn select(
        &self,
        choice: &PlatformChoice,
        reference: &str,
    ) -> Result<Vec<&Descriptor>, ManifestError> {
        match choice {
            PlatformChoice::All => Ok(self.manifests.iter().collect()),
            PlatformChoice::Host(wanted) | PlatformChoice::One(wanted) => self
                .manifests
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(p)))
                .map(|d| vec![d])
                .ok_or_else(|| ManifestError::NoPlatform {
                    reference: reference.to_string(),
                    wanted: wanted.to_string(),
                    available: self
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                        .collect(),
                }),
        }
    }
}

/// The parts of an image config (OCI `config.md`) that imagec reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
    #[serde(default)]
    pub history: Vec<History>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct History {
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub empty_layer: bool,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8], digest: &Digest) -> Result<ImageConfig, ManifestError> {
        serde_json::from_slice(bytes).map_err(|source| ManifestError::Config {
            digest: digest.clone(),
            source,
        })
    }

    pub fn platform(&self) -> Option<Platform> {
        if self.os.is_empty() || self.architecture.is_empty() {
            return None;
        }
        Some(Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            os_version: None,
            os_features: None,
            variant: self.variant.clone().filter(|v| !v.is_empty()),
        })
    }

    /// `created_by` of the history entry that made each layer, base first: history entries
    /// with `empty_layer` made no layer and are skipped.
    pub fn layer_history(&self) -> Vec<Option<String>> {
        self.history
            .iter()
            .filter(|h| !h.empty_layer)
            .map(|h| h.created_by.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    #[test]
    fn selects_platforms_and_lists_them_when_missing() {
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[
              {{"mediaType":"{m}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
              {{"mediaType":"{m}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            d(1),
            d(2),
            m = media::OCI_MANIFEST
        );
        let Manifest::Index(_, idx) =
            Manifest::parse(media::OCI_INDEX, idx.as_bytes(), &d(0)).unwrap()
        else {
            panic!()
        };
        let arm: Platform = "linux/arm64".parse().unwrap();
        let got = idx.select(&PlatformChoice::One(arm), "r").unwrap();
        assert_eq!(got[0].digest, d(2));
        assert_eq!(idx.select(&PlatformChoice::All, "r").unwrap().len(), 2);
        let s390: Platform = "linux/s390x".parse().unwrap();
        let e = idx
            .select(&PlatformChoice::One(s390), "r")
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux/amd64, linux/arm64/v8"), "{e}");
    }

    #[test]
    fn refuses_schema1_and_bad_versions() {
        let e = Manifest::parse(
            "application/json",
            br#"{"schemaVersion":1,"fsLayers":[]}"#,
            &d(0),
        );
        assert!(matches!(e, Err(ManifestError::Schema1 { .. })));
        let e = Manifest::parse(media::OCI_MANIFEST, br#"{"schemaVersion":3,"config":{"mediaType":"x","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1}}"#, &d(0));
        assert!(matches!(e, Err(ManifestError::Version { .. })));
        let e = Manifest::parse(
            media::OCI_MANIFEST,
            br#"{"schemaVersion":2,"config":{"size":-1}}"#,
            &d(0),
        );
        assert!(matches!(e, Err(ManifestError::Malformed { .. })));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// JSON-shaped strings built from manifest field names, so the parser gets past the
        /// first byte more often than with random bytes alone.
        fn jsonish() -> impl Strategy<Value = String> {
            let atom = prop_oneof![
                Just("\"schemaVersion\"".to_string()),
                Just("\"mediaType\"".to_string()),
                Just("\"manifests\"".to_string()),
                Just("\"config\"".to_string()),
                Just("\"layers\"".to_string()),
                Just("\"digest\"".to_string()),
                Just("\"size\"".to_string()),
                Just("\"platform\"".to_string()),
                Just(format!("\"{}\"", media::OCI_INDEX)),
                Just(format!("\"{}\"", media::DOCKER_MANIFEST)),
                Just(
                    "\"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\""
                        .to_string()
                ),
                Just("1".to_string()),
                Just("2".to_string()),
                Just("-1".to_string()),
                Just("18446744073709551616".to_string()),
                Just("null".to_string()),
                Just("{".to_string()),
                Just("}".to_string()),
                Just("[".to_string()),
                Just("]".to_string()),
                Just(":".to_string()),
                Just(",".to_string()),
                "[a-z0-9\\\"]{0,4}",
            ];
            proptest::collection::vec(atom, 0..40).prop_map(|v| v.concat())
        }

        proptest! {
            #[test]
            fn manifest_parsing_never_panics(ct in "[a-z./+0-9-]{0,60}", body in jsonish()) {
                let d = Digest::sha256_of(body.as_bytes());
                let _ = media::classify(&ct, body.as_bytes());
                if let Ok(Manifest::Index(_, idx)) = Manifest::parse(&ct, body.as_bytes(), &d) {
                    let _ = idx.select(&PlatformChoice::All, "r");
                    let _ = idx.select(&PlatformChoice::One(Platform::host()), "r");
                }
                let _ = ImageConfig::parse(body.as_bytes(), &d).map(|c| (c.platform(), c.layer_history()));
            }

            #[test]
            fn manifest_parsing_of_random_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
                let d = Digest::sha256_of(&body);
                let _ = Manifest::parse("", &body, &d);
                let _ = Manifest::parse(media::OCI_INDEX, &body, &d);
            }
        }
    }
}
