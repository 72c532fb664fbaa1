//! Pushing test images to a registry over the distribution API (plain HTTP, no auth: tests push
//! through `world().plain()` and pull through the others, which share its storage).
//! Failures panic with the request, status and body: these are test set-up steps.

use serde_json::json;

use super::client;
use super::image::{platform, sha256, Blob, Format, Image, DOCKER_MANIFEST_LIST, OCI_INDEX};

/// Pushes the image's blobs (skipping those the registry has) and then its manifest under
/// `tag` (a tag or a digest). Returns the manifest digest the registry reports.
pub fn push_image(host: &str, repo: &str, tag: &str, image: &Image) -> String {
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        push_blob(host, repo, blob);
    }
    push_manifest_bytes(host, repo, tag, &image.media_type, &image.manifest)
}

/// Pushes every child by digest, then a Docker manifest list (`Format::Docker`) or an OCI index
/// (`Format::Oci`) naming each child with its platform. Returns the list's digest.
pub fn push_index(
    host: &str,
    repo: &str,
    tag: &str,
    children: &[&Image],
    format: Format,
) -> String {
    let manifests: Vec<_> = children
        .iter()
        .map(|child| {
            push_image(host, repo, &child.digest, child);
            json!({
                "mediaType": child.media_type,
                "size": child.manifest.len(),
                "digest": child.digest,
                "platform": platform(child),
            })
        })
        .collect();
    let media_type = match format {
        Format::Docker => DOCKER_MANIFEST_LIST,
        Format::Oci => OCI_INDEX,
    };
    let index = json!({ "schemaVersion": 2, "mediaType": media_type, "manifests": manifests });
    let bytes = serde_json::to_vec_pretty(&index).expect("serializing JSON");
    push_manifest_bytes(host, repo, tag, media_type, &bytes)
}

/// PUTs `bytes` as a manifest of `media_type` under `reference`; returns the digest the registry
/// reports (`Docker-Content-Digest`), which must equal the bytes' sha256 (for a signed schema1
/// manifest, its JWS payload's).
pub fn push_manifest_bytes(
    host: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> String {
    let url = format!("http://{host}/v2/{repo}/manifests/{reference}");
    let mut response = client::agent()
        .put(&url)
        .header("Content-Type", media_type)
        .send(bytes)
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let status = response.status().as_u16();
    let digest = header(&response, "docker-content-digest");
    let body = response.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(status, 201, "PUT {url}: {body}");
    let expected = if media_type == super::schema1::SIGNED {
        sha256(&super::schema1::unsign(bytes))
    } else {
        sha256(bytes)
    };
    let digest = digest.unwrap_or_else(|| expected.clone());
    assert_eq!(
        digest, expected,
        "PUT {url}: the registry digested the manifest differently"
    );
    digest
}

/// Uploads `blob` unless the repository already has it: POST an upload, PUT it whole with
/// `?digest=`.
pub fn push_blob(host: &str, repo: &str, blob: &Blob) {
    let agent = client::agent();
    let url = format!("http://{host}/v2/{repo}/blobs/{}", blob.digest);
    let response = agent
        .head(&url)
        .call()
        .unwrap_or_else(|e| panic!("HEAD {url}: {e}"));
    if response.status() == 200 {
        return;
    }
    let url = format!("http://{host}/v2/{repo}/blobs/uploads/");
    let mut response = agent
        .post(&url)
        .send_empty()
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let location = header(&response, "location");
    let body = response.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(status, 202, "POST {url}: {body}");
    let location = location.unwrap_or_else(|| panic!("POST {url}: no Location"));
    // Distribution answers with an absolute URL; the spec allows a relative one.
    let location = if location.starts_with('/') {
        format!("http://{host}{location}")
    } else {
        location
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let url = format!("{location}{separator}digest={}", blob.digest);
    let mut response = agent
        .put(&url)
        .header("Content-Type", "application/octet-stream")
        .send(&blob.data[..])
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(status, 201, "PUT {url}: {body}");
}

fn header(response: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A one-layer Docker image of `size` random bytes (`seed`), pushed as `REPO:1` through the
/// plain registry (every test registry shares its storage): what most tests pull.
pub fn push_one_layer(repo: &str, seed: u64, size: usize) -> super::Image {
    let img = super::image(
        super::Format::Docker,
        "linux",
        "amd64",
        vec![super::random_layer(seed, size)],
    );
    push_image(&super::world().plain().host(), repo, "1", &img);
    img
}

/// An image of these tars, each gzipped, pushed as `REPO:1` through the plain registry: its
/// name to pull and the image.
pub fn push_tars(repo: &str, tars: &[Vec<u8>]) -> (String, super::Image) {
    let img = super::image(
        super::Format::Docker,
        "linux",
        "amd64",
        tars.iter()
            .map(|t| super::Blob::new("", super::gzip(t)))
            .collect(),
    );
    let reg = super::world().plain().host();
    push_image(&reg, repo, "1", &img);
    (format!("{reg}/{repo}:1"), img)
}
