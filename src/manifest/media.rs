//! Media types (image-spec `media-types.md`, distribution `manifest-v2-2.md`) and how a
//! served manifest is classified.

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER_NONDIST_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_LAYOUT_VERSION: &str = "1.0.0";

pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_FOREIGN_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// The gzip of an empty tar that schema1 (and some schema2) images use for history entries
/// that changed no file.
pub const EMPTY_GZIP_LAYER: &str =
    "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";

/// What kind of document a manifest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OciIndex,
    OciManifest,
    DockerList,
    DockerManifest,
    Schema1,
}

impl Kind {
    pub fn media_type(self) -> &'static str {
        match self {
            Kind::OciIndex => OCI_INDEX,
            Kind::OciManifest => OCI_MANIFEST,
            Kind::DockerList => DOCKER_LIST,
            Kind::DockerManifest => DOCKER_MANIFEST,
            Kind::Schema1 => DOCKER_SCHEMA1_SIGNED,
        }
    }

    pub fn from_media_type(t: &str) -> Option<Kind> {
        Some(match t {
            OCI_INDEX => Kind::OciIndex,
            OCI_MANIFEST => Kind::OciManifest,
            DOCKER_LIST => Kind::DockerList,
            DOCKER_MANIFEST => Kind::DockerManifest,
            DOCKER_SCHEMA1_SIGNED | DOCKER_SCHEMA1 => Kind::Schema1,
            _ => return None,
        })
    }
}

/// Classify a served manifest: the body's own `mediaType` when it names a known type, else the
/// `Content-Type`, else its shape (some registries serve `application/json` or nothing).
pub fn classify(content_type: &str, bytes: &[u8]) -> Option<Kind> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default, rename = "schemaVersion")]
        schema_version: Option<u64>,
        #[serde(default, rename = "mediaType")]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        config: Option<serde::de::IgnoredAny>,
        #[serde(default, rename = "fsLayers")]
        fs_layers: Option<serde::de::IgnoredAny>,
    }
    let probe: Option<Probe> = serde_json::from_slice(bytes).ok();
    if let Some(k) = probe
        .as_ref()
        .and_then(|p| p.media_type.as_deref())
        .and_then(Kind::from_media_type)
    {
        return Some(k);
    }
    if let Some(k) = Kind::from_media_type(content_type) {
        return Some(k);
    }
    let p = probe?;
    if p.schema_version == Some(1) || p.fs_layers.is_some() {
        Some(Kind::Schema1)
    } else if p.manifests.is_some() {
        Some(Kind::OciIndex)
    } else if p.config.is_some() {
        Some(Kind::OciManifest)
    } else {
        None
    }
}

/// Schema1 answers are digested differently (over the JWS payload), so the client checks.
pub fn is_schema1(content_type: &str, bytes: &[u8]) -> bool {
    classify(content_type, bytes) == Some(Kind::Schema1)
}

/// The OCI type for a Docker config or layer type; other types are kept.
pub fn to_oci(t: &str) -> &str {
    match t {
        DOCKER_CONFIG => OCI_CONFIG,
        DOCKER_LAYER_GZIP => OCI_LAYER_GZIP,
        DOCKER_LAYER => OCI_LAYER,
        DOCKER_FOREIGN_GZIP => OCI_LAYER_NONDIST_GZIP,
        DOCKER_MANIFEST => OCI_MANIFEST,
        DOCKER_LIST => OCI_INDEX,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_body_then_header_then_shape() {
        let oci = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert_eq!(classify("application/json", oci), Some(Kind::OciIndex));
        assert_eq!(
            classify(DOCKER_MANIFEST, br#"{"schemaVersion":2,"config":{}}"#),
            Some(Kind::DockerManifest)
        );
        assert_eq!(
            classify("", br#"{"schemaVersion":2,"config":{}}"#),
            Some(Kind::OciManifest)
        );
        assert_eq!(
            classify("application/json", br#"{"schemaVersion":1,"fsLayers":[]}"#),
            Some(Kind::Schema1)
        );
        assert_eq!(classify("text/plain", b"not json"), None);
    }
}
