//! Docker image manifest v2, schema 1 (distribution `docs/spec/manifest-v2-1.md`): the JWS
//! payload that its digest covers, structural validation, and conversion to an OCI config and
//! manifest that modern tools read.
//!
//! Signatures are parsed (they locate the payload) but not verified: schema1 keys are
//! per-registry or per-client self-generated keys that carry no trust, and the content is
//! protected by the digest we check instead (the requested one, or the registry's).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::media;
use crate::digest::Digest;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Schema1Error {
    #[error("schema1 manifest is not JSON: {0}")]
    Json(String),
    #[error("schema1 signature block is malformed: {0}")]
    Signature(String),
    #[error("schema1 manifest has {fs_layers} fsLayers but {history} history entries")]
    Length { fs_layers: usize, history: usize },
    #[error("schema1 manifest has no layers")]
    Empty,
    #[error("schema1 history entry {index} is invalid: {reason}")]
    History { index: usize, reason: String },
    #[error("schema1 fsLayers entry {index} has an invalid blobSum: {reason}")]
    BlobSum { index: usize, reason: String },
}

/// The bytes a schema1 manifest's digest covers: for a signed (`prettyjws`) manifest, the JWS
/// payload, rebuilt as libtrust does from the protected header's `formatLength` and
/// `formatTail`; for an unsigned one, the bytes themselves.
pub fn payload(bytes: &[u8]) -> Result<Vec<u8>, Schema1Error> {
    let top: Map<String, Value> =
        serde_json::from_slice(bytes).map_err(|e| Schema1Error::Json(e.to_string()))?;
    let Some(signatures) = top.get("signatures") else {
        return Ok(bytes.to_vec());
    };
    let signatures = signatures
        .as_array()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Schema1Error::Signature("\"signatures\" is not a non-empty array".into()))?;
    let mut format: Option<(usize, Vec<u8>)> = None;
    for (i, sig) in signatures.iter().enumerate() {
        let bad = |why: &str| Schema1Error::Signature(format!("signature {i}: {why}"));
        let protected = sig["protected"]
            .as_str()
            .ok_or_else(|| bad("no \"protected\" header"))?;
        let protected = b64url(protected).ok_or_else(|| bad("\"protected\" is not base64url"))?;
        let header: Value =
            serde_json::from_slice(&protected).map_err(|_| bad("\"protected\" is not JSON"))?;
        let length = header["formatLength"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad("no numeric formatLength"))?;
        let tail = header["formatTail"]
            .as_str()
            .and_then(b64url)
            .ok_or_else(|| bad("no base64url formatTail"))?;
        if length > bytes.len() {
            return Err(bad("formatLength is past the end of the manifest"));
        }
        match &format {
            None => format = Some((length, tail)),
            Some((l, t)) if *l == length && *t == tail => {}
            Some(_) => return Err(bad("signatures disagree on the payload format")),
        }
    }
    let (length, tail) = format.expect("at least one signature");
    let mut out = bytes[..length].to_vec();
    out.extend_from_slice(&tail);
    Ok(out)
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// One history entry: the `v1Compatibility` JSON and what we read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct V1Entry {
    pub raw: Map<String, Value>,
    pub throwaway: bool,
}

impl V1Entry {
    fn str_field(&self, name: &str) -> Option<String> {
        self.raw
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// `created_by` as docker reconstructs it: the build container's command, joined.
    pub fn created_by(&self) -> Option<String> {
        let cmd = self.raw.get("container_config")?.get("Cmd")?.as_array()?;
        let parts: Vec<&str> = cmd.iter().filter_map(Value::as_str).collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    /// The image-spec history entry for this step.
    fn history(&self) -> Value {
        let mut h = Map::new();
        for (key, field) in [
            ("created", "created"),
            ("author", "author"),
            ("comment", "comment"),
        ] {
            if let Some(v) = self.str_field(field).filter(|v| !v.is_empty()) {
                h.insert(key.into(), Value::String(v));
            }
        }
        if let Some(c) = self.created_by() {
            h.insert("created_by".into(), Value::String(c));
        }
        if self.throwaway {
            h.insert("empty_layer".into(), Value::Bool(true));
        }
        Value::Object(h)
    }
}

/// A validated schema1 manifest. `fs_layers` and `history` are top (newest) first, as served.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema1 {
    pub fs_layers: Vec<Digest>,
    pub history: Vec<V1Entry>,
}

impl Schema1 {
    /// Parse and validate: `fsLayers` and `history` have the same, non-zero length; every
    /// `v1Compatibility` is a JSON object with a non-empty string `id`.
    pub fn parse(bytes: &[u8]) -> Result<Schema1, Schema1Error> {
        #[derive(serde::Deserialize)]
        struct Wire {
            #[serde(default, rename = "fsLayers")]
            fs_layers: Vec<FsLayer>,
            #[serde(default)]
            history: Vec<HistoryWire>,
        }
        #[derive(serde::Deserialize)]
        struct FsLayer {
            #[serde(rename = "blobSum")]
            blob_sum: String,
        }
        #[derive(serde::Deserialize)]
        struct HistoryWire {
            #[serde(rename = "v1Compatibility")]
            v1_compatibility: String,
        }
        let w: Wire =
            serde_json::from_slice(bytes).map_err(|e| Schema1Error::Json(e.to_string()))?;
        if w.fs_layers.len() != w.history.len() {
            return Err(Schema1Error::Length {
                fs_layers: w.fs_layers.len(),
                history: w.history.len(),
            });
        }
        if w.fs_layers.is_empty() {
            return Err(Schema1Error::Empty);
        }
        let fs_layers = w
            .fs_layers
            .iter()
            .enumerate()
            .map(|(index, l)| {
                l.blob_sum
                    .parse::<Digest>()
                    .map_err(|e| Schema1Error::BlobSum {
                        index,
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let history = w
            .history
            .iter()
            .enumerate()
            .map(|(index, h)| {
                let bad = |reason: &str| Schema1Error::History {
                    index,
                    reason: reason.to_string(),
                };
                let raw: Map<String, Value> = serde_json::from_str(&h.v1_compatibility)
                    .map_err(|_| bad("v1Compatibility is not a JSON object"))?;
                match raw.get("id").and_then(Value::as_str) {
                    Some(id) if !id.is_empty() => {}
                    _ => return Err(bad("v1Compatibility has no \"id\"")),
                }
                let throwaway = raw
                    .get("throwaway")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                Ok(V1Entry { raw, throwaway })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schema1 { fs_layers, history })
    }

    /// The platform the top `v1Compatibility` names (schema1 images are single-platform).
    pub fn platform(&self) -> Option<crate::platform::Platform> {
        let top = &self.history[0];
        let os = top.str_field("os").unwrap_or_else(|| "linux".to_string());
        let arch = top.str_field("architecture")?;
        Some(crate::platform::Platform {
            architecture: arch,
            os,
            os_version: None,
            os_features: None,
            variant: top.str_field("variant"),
        })
    }

    /// The layers that carry a filesystem change, base first, each with its history entry:
    /// `throwaway` entries made none and are not layers (docker's rule).
    pub fn layers(&self) -> Vec<(&Digest, &V1Entry)> {
        self.fs_layers
            .iter()
            .zip(&self.history)
            .rev()
            .filter(|(_, h)| !h.throwaway)
            .collect()
    }

    /// The image config, as docker builds it from the top `v1Compatibility`: its fields minus
    /// the v1 bookkeeping ones, plus `rootfs.diff_ids` (base first) and a `history` made of every
    /// entry, throwaways marked `empty_layer`.
    pub fn config(&self, diff_ids: &[Option<Digest>]) -> Vec<u8> {
        let mut c = self.history[0].raw.clone();
        for k in ["id", "parent", "Size", "parent_id", "layer_id", "throwaway"] {
            c.remove(k);
        }
        let diff_ids: Vec<Value> = diff_ids
            .iter()
            .map(|d| {
                d.as_ref()
                    .map_or(Value::Null, |d| Value::String(d.to_string()))
            })
            .collect();
        c.insert(
            "rootfs".into(),
            serde_json::json!({ "type": "layers", "diff_ids": diff_ids }),
        );
        c.insert(
            "history".into(),
            Value::Array(self.history.iter().rev().map(V1Entry::history).collect()),
        );
        // A BTreeMap orders keys: the same manifest always converts to the same bytes.
        let ordered: BTreeMap<String, Value> = c.into_iter().collect();
        serde_json::to_vec(&ordered).expect("JSON values serialise")
    }
}

/// The media type a schema1 layer gets in the converted OCI manifest: schema1 layers are
/// gzip tars in practice, but an uncompressed one is recognised by its first bytes.
pub fn layer_media_type(gzip: bool) -> &'static str {
    if gzip {
        media::OCI_LAYER_GZIP
    } else {
        media::OCI_LAYER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    /// A manifest signed the way libtrust's PrettySignature lays it out.
    fn signed(payload: &str, tails: &[(usize, &str)]) -> Vec<u8> {
        let close = payload.trim_end().len() - 1;
        let body = &payload[..close].trim_end();
        let sigs: Vec<String> = tails
            .iter()
            .map(|(len, tail)| {
                let p = format!(
                    r#"{{"formatLength":{len},"formatTail":"{}","time":"2016-01-01T00:00:00Z"}}"#,
                    b64(tail.as_bytes())
                );
                format!(
                    r#"{{"header":{{"alg":"ES256"}},"signature":"c2ln","protected":"{}"}}"#,
                    b64(p.as_bytes())
                )
            })
            .collect();
        format!("{body},\n   \"signatures\": [{}]\n}}", sigs.join(",")).into_bytes()
    }

    const PAYLOAD: &str = "{\n   \"schemaVersion\": 1,\n   \"fsLayers\": [\n      {\n         \"blobSum\": \"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4\"\n      }\n   ],\n   \"history\": [\n      {\n         \"v1Compatibility\": \"{\\\"id\\\":\\\"abc\\\",\\\"throwaway\\\":true}\"\n      }\n   ]\n}";

    fn format_length() -> usize {
        PAYLOAD.trim_end()[..PAYLOAD.trim_end().len() - 1]
            .trim_end()
            .len()
    }

    #[test]
    fn payload_is_rebuilt_from_format_length_and_tail() {
        let tail = &PAYLOAD[format_length()..];
        let m = signed(PAYLOAD, &[(format_length(), tail), (format_length(), tail)]);
        assert_ne!(m, PAYLOAD.as_bytes());
        assert_eq!(payload(&m).unwrap(), PAYLOAD.as_bytes());
        // Unsigned: the bytes are the payload.
        assert_eq!(payload(PAYLOAD.as_bytes()).unwrap(), PAYLOAD.as_bytes());
    }

    #[test]
    fn inconsistent_or_out_of_range_signatures_are_refused() {
        let tail = &PAYLOAD[format_length()..];
        let m = signed(
            PAYLOAD,
            &[(format_length(), tail), (format_length() - 1, tail)],
        );
        assert!(payload(&m).is_err());
        let m = signed(PAYLOAD, &[(100_000, tail)]);
        assert!(payload(&m).is_err());
        assert!(payload(br#"{"signatures":[]}"#).is_err());
        assert!(payload(br#"{"signatures":[{"protected":"!!"}]}"#).is_err());
    }

    #[test]
    fn structure_is_validated() {
        let ok = Schema1::parse(PAYLOAD.as_bytes()).unwrap();
        assert_eq!(ok.fs_layers.len(), 1);
        assert!(ok.layers().is_empty(), "a throwaway entry is not a layer");
        let two_one = r#"{"schemaVersion":1,"fsLayers":[{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"},{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],"history":[{"v1Compatibility":"{\"id\":\"a\"}"}]}"#;
        assert!(matches!(
            Schema1::parse(two_one.as_bytes()),
            Err(Schema1Error::Length {
                fs_layers: 2,
                history: 1
            })
        ));
        let no_id = r#"{"schemaVersion":1,"fsLayers":[{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],"history":[{"v1Compatibility":"{\"parent\":\"x\"}"}]}"#;
        assert!(matches!(
            Schema1::parse(no_id.as_bytes()),
            Err(Schema1Error::History { index: 0, .. })
        ));
        let not_json = r#"{"schemaVersion":1,"fsLayers":[{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],"history":[{"v1Compatibility":"nope"}]}"#;
        assert!(Schema1::parse(not_json.as_bytes()).is_err());
        let bad_sum = r#"{"schemaVersion":1,"fsLayers":[{"blobSum":"md5:00"}],"history":[{"v1Compatibility":"{\"id\":\"a\"}"}]}"#;
        assert!(matches!(
            Schema1::parse(bad_sum.as_bytes()),
            Err(Schema1Error::BlobSum { .. })
        ));
        assert!(matches!(
            Schema1::parse(br#"{"schemaVersion":1}"#),
            Err(Schema1Error::Empty)
        ));
    }

    #[test]
    fn converts_to_a_config_with_history_and_diff_ids() {
        let m = r##"{"schemaVersion":1,"fsLayers":[
            {"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"},
            {"blobSum":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}],
            "history":[
            {"v1Compatibility":"{\"id\":\"top\",\"parent\":\"base\",\"throwaway\":true,\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":\"2016-01-02T00:00:00Z\",\"config\":{\"Cmd\":[\"sh\"]},\"container_config\":{\"Cmd\":[\"/bin/sh\",\"-c\",\"#(nop) CMD [\\\"sh\\\"]\"]},\"Size\":0}"},
            {"v1Compatibility":"{\"id\":\"base\",\"created\":\"2016-01-01T00:00:00Z\",\"container_config\":{\"Cmd\":[\"/bin/sh\",\"-c\",\"#(nop) ADD file:x in /\"]}}"}]}"##;
        let s = Schema1::parse(m.as_bytes()).unwrap();
        let layers = s.layers();
        assert_eq!(layers.len(), 1);
        assert_eq!(
            layers[0].0.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let d = Digest::sha256_of(b"tar");
        let c: Value = serde_json::from_slice(&s.config(&[Some(d.clone())])).unwrap();
        assert_eq!(c["architecture"], "amd64");
        assert_eq!(c["config"]["Cmd"][0], "sh");
        assert!(c.get("id").is_none() && c.get("parent").is_none() && c.get("Size").is_none());
        assert_eq!(c["rootfs"]["diff_ids"][0], d.to_string());
        assert_eq!(
            c["history"][0]["created_by"],
            "/bin/sh -c #(nop) ADD file:x in /"
        );
        assert!(c["history"][0].get("empty_layer").is_none());
        assert_eq!(c["history"][1]["empty_layer"], true);
        assert_eq!(c["history"][1]["created"], "2016-01-02T00:00:00Z");
        assert_eq!(
            s.config(&[Some(d.clone())]),
            s.config(&[Some(d)]),
            "deterministic"
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(body in "\\PC{0,200}") {
            let _ = payload(body.as_bytes());
            let _ = Schema1::parse(body.as_bytes()).map(|s| s.config(&[]));
        }

        #[test]
        fn signature_headers_never_panic(len in proptest::prelude::any::<u64>(), tail in "\\PC{0,10}", body in "\\PC{0,40}") {
            let p = format!(r#"{{"formatLength":{len},"formatTail":"{}"}}"#, b64(tail.as_bytes()));
            let m = format!(r#"{{"x":"{}","signatures":[{{"protected":"{}"}}]}}"#, body.replace('"', ""), b64(p.as_bytes()));
            let _ = payload(m.as_bytes());
        }
    }
}
