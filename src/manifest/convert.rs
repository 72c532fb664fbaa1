//! Conversions for the store (SPEC: The store, `--format oci`): Docker schema2 manifests and
//! lists become their OCI equivalents with the same config and layer blobs, serialised
//! deterministically so that the same input always gives the same digest.

use serde::Serialize;

use super::{media, Descriptor, ImageManifest, Index};

/// Serialise a document the way we store rewritten ones: compact, fields in a fixed order,
/// so that the same input always gives the same bytes and the same digest.
pub fn to_bytes<T: Serialize>(doc: &T) -> Vec<u8> {
    serde_json::to_vec(doc).expect("manifest types always serialise")
}

/// Docker schema2 -> OCI image manifest: same config and layer blobs, OCI media types.
pub fn image_to_oci(m: &ImageManifest) -> ImageManifest {
    let convert = |d: &Descriptor| Descriptor {
        media_type: media::to_oci(&d.media_type).to_string(),
        ..d.clone()
    };
    ImageManifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.to_string()),
        config: convert(&m.config),
        layers: m.layers.iter().map(convert).collect(),
        extra: m.extra.clone(),
    }
}

/// Docker manifest list -> OCI index, given each child's converted descriptor in order.
pub fn index_to_oci(index: &Index, children: Vec<Descriptor>) -> Index {
    Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_string()),
        manifests: children,
        extra: index.extra.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::manifest::{media::Kind, Manifest};

    fn d(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    fn docker_manifest() -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":10}},"layers":[{{"mediaType":"{}","digest":"{}","size":20}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            d(1),
            media::DOCKER_LAYER_GZIP,
            d(2)
        )
        .into_bytes()
    }

    #[test]
    fn converts_docker_to_oci_keeping_blobs() {
        let m = Manifest::parse(media::DOCKER_MANIFEST, &docker_manifest(), &d(0)).unwrap();
        let Manifest::Image(Kind::DockerManifest, m) = m else {
            panic!("{m:?}")
        };
        let oci = image_to_oci(&m);
        assert_eq!(oci.media_type.as_deref(), Some(media::OCI_MANIFEST));
        assert_eq!(oci.config.media_type, media::OCI_CONFIG);
        assert_eq!(oci.config.digest, m.config.digest);
        assert_eq!(oci.layers[0].media_type, media::OCI_LAYER_GZIP);
        assert_eq!(oci.layers[0].digest, d(2));
        // Deterministic bytes: the same input converts to the same digest every time.
        assert_eq!(to_bytes(&oci), to_bytes(&image_to_oci(&m)));
    }
}
