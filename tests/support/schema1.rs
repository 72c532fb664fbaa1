//! Docker schema1 manifests for the tests, signed the way libtrust signs them (ES256 JWS in the
//! "pretty" layout distribution verifies on push), and the gzip of an empty tar that schema1
//! images use for steps that changed no file.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use super::image::{sha256, Blob};

pub const SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const UNSIGNED: &str = "application/vnd.docker.distribution.manifest.v1+json";

/// The exact 32 bytes whose digest is `sha256:a3ed95ca…`: docker's "empty layer".
pub fn empty_layer() -> Blob {
    let data = vec![
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x09, 0x6e, 0x88, 0x00, 0xff, 0x62, 0x18, 0x05, 0xa3, 0x60,
        0x14, 0x8c, 0x58, 0x00, 0x08, 0x00, 0x00, 0xff, 0xff, 0x2e, 0xaf, 0xb5, 0xef, 0x00, 0x04,
        0x00, 0x00,
    ];
    let blob = Blob::new(super::image::DOCKER_LAYER, data);
    assert_eq!(
        blob.digest, "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4",
        "the empty layer's bytes"
    );
    blob
}

/// One step of a schema1 image, base first: its layer and the command that made it;
/// `throwaway` steps changed no file (their layer is the empty layer).
pub struct Step<'a> {
    pub layer: &'a Blob,
    pub created_by: &'a str,
    pub throwaway: bool,
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The JWS payload (what the digest covers) of a schema1 manifest for these steps.
pub fn payload(name: &str, tag: &str, arch: &str, steps: &[Step]) -> Vec<u8> {
    let n = steps.len();
    // schema1 lists the newest step first.
    let mut fs_layers = Vec::new();
    let mut history = Vec::new();
    for (i, step) in steps.iter().enumerate().rev() {
        let id = sha256(format!("{name}-{i}").as_bytes())[7..].to_string();
        let parent =
            (i > 0).then(|| sha256(format!("{name}-{}", i - 1).as_bytes())[7..].to_string());
        let mut v1 = json!({
            "id": id,
            "created": format!("2016-01-01T00:00:{i:02}Z"),
            "container_config": { "Cmd": ["/bin/sh", "-c", step.created_by] },
        });
        if let Some(p) = parent {
            v1["parent"] = json!(p);
        }
        if step.throwaway {
            v1["throwaway"] = json!(true);
        }
        if i == n - 1 {
            v1["architecture"] = json!(arch);
            v1["os"] = json!("linux");
            v1["config"] = json!({ "Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"] });
        }
        fs_layers.push(json!({ "blobSum": step.layer.digest }));
        history.push(json!({ "v1Compatibility": v1.to_string() }));
    }
    let m = json!({
        "schemaVersion": 1,
        "name": name,
        "tag": tag,
        "architecture": arch,
        "fsLayers": fs_layers,
        "history": history,
    });
    serde_json::to_vec_pretty(&m).expect("serializing JSON")
}

/// `payload` signed with a fresh P-256 key, laid out as libtrust's PrettySignature does: the
/// payload up to its closing brace, a `signatures` member, then the payload's tail.
pub fn sign(payload: &[u8]) -> Vec<u8> {
    let rng = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("a key");
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("the key just made");
    let point = key.public_key().as_ref();
    let jwk = json!({ "crv": "P-256", "kty": "EC", "x": b64url(&point[1..33]), "y": b64url(&point[33..65]) });

    let close = payload
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .expect("JSON");
    assert_eq!(payload[close], b'}');
    let format_length = payload[..close]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .expect("JSON")
        + 1;
    let tail = &payload[format_length..];
    let protected = b64url(
        json!({ "formatLength": format_length, "formatTail": b64url(tail), "time": "2016-01-01T00:00:00Z" })
            .to_string()
            .as_bytes(),
    );
    let signing_input = format!("{protected}.{}", b64url(payload));
    let signature = key.sign(&rng, signing_input.as_bytes()).expect("signing");
    let signatures: Value = json!([{
        "header": { "jwk": jwk, "alg": "ES256" },
        "signature": b64url(signature.as_ref()),
        "protected": protected,
    }]);
    let mut out = payload[..format_length].to_vec();
    out.extend_from_slice(b",\n   \"signatures\": ");
    out.extend_from_slice(
        serde_json::to_string_pretty(&signatures)
            .expect("JSON")
            .as_bytes(),
    );
    out.extend_from_slice(tail);
    out
}

/// The payload of a signed manifest (its digest's bytes), as a registry that serves schema1
/// unsigned would send it.
pub fn unsign(signed: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(signed).expect("JSON");
    let protected = v["signatures"][0]["protected"]
        .as_str()
        .expect("a protected header");
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(protected)
            .expect("base64url"),
    )
    .expect("JSON");
    let length = header["formatLength"].as_u64().expect("formatLength") as usize;
    let tail = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header["formatTail"].as_str().expect("formatTail"))
        .expect("base64url");
    let mut out = signed[..length].to_vec();
    out.extend_from_slice(&tail);
    out
}
