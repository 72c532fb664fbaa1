//! Manifest requests: the `Accept` list, `HEAD` for a digest, `GET` with the size cap, and the
//! verification of what was served against the requested digest and `Docker-Content-Digest`
//! (signed schema1 over its JWS payload) (SPEC: Registry protocol).

use std::io::Read;

use ureq::http::Response;
use ureq::Body;

use super::http::{header, Method};
use super::{content_type, ClientError, Registry, RegistryError, MAX_MANIFEST};
use crate::digest::Digest;
use crate::manifest::{media, schema1};
use crate::reference::Reference;

/// A manifest as the registry served it, verified against the digest it was asked for or
/// the one the registry announced.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub bytes: Vec<u8>,
    /// `Content-Type`, without parameters.
    pub media_type: String,
    pub digest: Digest,
    /// The mirror that served it (None: the registry).
    pub served_by: super::ServedBy,
}

/// What a `HEAD` of a manifest says.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: String,
}

/// The `Accept` list: every manifest type we understand, schema1 last (a registry given no
/// Accept, or only schema1, converts schema2 to schema1 on the fly).
pub fn manifest_accept() -> String {
    [
        media::OCI_INDEX,
        media::OCI_MANIFEST,
        media::DOCKER_LIST,
        media::DOCKER_MANIFEST,
        media::DOCKER_SCHEMA1_SIGNED,
        media::DOCKER_SCHEMA1,
    ]
    .join(", ")
}

impl Registry {
    /// HEAD a manifest: its digest without its bytes. `None` when the registry does not say
    /// (no `Docker-Content-Digest`), or answers an error a GET would explain better.
    pub fn head_manifest(&self, r: &Reference) -> Result<Option<ManifestHead>, ClientError> {
        let path = format!("manifests/{}", r.manifest_reference());
        let accept = manifest_accept();
        let digest = r.digest();
        let head = self.request(
            r,
            Method::Head,
            &path,
            &[("Accept", accept)],
            "manifest",
            digest,
        );
        let resp = match head {
            Ok((resp, _)) => resp,
            Err(ClientError::Registry(
                RegistryError::NotFound { .. } | RegistryError::Status { .. },
            )) => return Ok(None),
            Err(e) => return Err(e),
        };
        let digest = header(&resp, "docker-content-digest").and_then(|d| d.parse().ok());
        let media_type = content_type(&resp);
        Ok(digest.map(|digest| ManifestHead { digest, media_type }))
    }

    /// GET a manifest by tag or digest (`reference` is what goes after `/manifests/`), reading
    /// at most `max` bytes (4 MiB, or the size an index gives) and verified: against `expected`
    /// when given, and against the registry's `Docker-Content-Digest`.
    pub fn get_manifest(
        &self,
        r: &Reference,
        reference: &str,
        expected: Option<&Digest>,
        max: u64,
    ) -> Result<RawManifest, ClientError> {
        let max = max.min(MAX_MANIFEST);
        let path = format!("manifests/{reference}");
        let headers = [("Accept", manifest_accept())];
        // The body is read inside the retried operation: a connection cut mid-manifest is as
        // transient as one cut before the answer (SPEC: truncated bodies). A mirror whose
        // manifest is not the digest asked for is passed over for the next source.
        let by_digest = expected.cloned().or_else(|| reference.parse().ok());
        let get = Some((Method::Get, &headers[..]));
        let (mut raw, served_by) =
            self.with_sources(r, &path, by_digest.as_ref(), get, |ep, h, answered| {
                let url = format!("{}/v2/{}/{path}", ep.base, h.repository);
                let resp = self.request_once(
                    ep,
                    h,
                    r,
                    Method::Get,
                    &path,
                    &headers,
                    "manifest",
                    answered,
                )?;
                read_manifest(resp, url, expected, max)
            })?;
        raw.served_by = served_by;
        Ok(raw)
    }
}

/// Read and verify a manifest answer: at most `max` bytes, checked against the requested
/// digest and the registry's `Docker-Content-Digest`.
fn read_manifest(
    resp: Response<Body>,
    url: String,
    expected: Option<&Digest>,
    max: u64,
) -> Result<RawManifest, RegistryError> {
    let announced = header(&resp, "docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
    let media_type = content_type(&resp);
    if resp.body().content_length().is_some_and(|n| n > max) {
        return Err(RegistryError::ManifestTooLarge { url, limit: max });
    }
    let mut bytes = Vec::new();
    resp.into_body()
        .into_reader()
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| RegistryError::Body {
            url: url.clone(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(RegistryError::ManifestTooLarge { url, limit: max });
    }
    // A signed schema1 manifest's digest covers its JWS payload, not the bytes served; the
    // payload is also all that is parsed later (`Manifest::parse`), so whatever a server
    // appends outside it is never used. The payload route is taken only when the payload
    // is itself schema1: otherwise a body dressed as schema1 could carry the bytes of
    // another manifest as its "payload" and pass that manifest's digest.
    let actual = if media::is_schema1(&media_type, &bytes) {
        let payload = schema1::payload(&bytes).map_err(|e| RegistryError::Schema1Payload {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        if media::classify("", &payload) != Some(media::Kind::Schema1) {
            return Err(RegistryError::Schema1Payload {
                url,
                reason: "its payload is not a schema1 manifest".into(),
            });
        }
        Digest::sha256_of(&payload)
    } else {
        Digest::sha256_of(&bytes)
    };
    let digest = verify_manifest(actual, expected, announced.as_ref(), &url)?;
    Ok(RawManifest {
        bytes,
        media_type,
        digest,
        served_by: None,
    })
}

/// SPEC: verify every manifest against the requested digest, and against
/// `Docker-Content-Digest` when present. Either one disagreeing with the bytes is an error.
fn verify_manifest(
    actual: Digest,
    expected: Option<&Digest>,
    announced: Option<&Digest>,
    url: &str,
) -> Result<Digest, RegistryError> {
    for want in expected.into_iter().chain(announced) {
        if want != &actual {
            return Err(RegistryError::ManifestDigest {
                url: url.to_string(),
                expected: want.clone(),
                actual,
            });
        }
    }
    Ok(actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_checked_against_both_digests() {
        let good = Digest::sha256_of(b"{}");
        let bad = Digest::sha256_of(b"other");
        let v = |e, a| verify_manifest(good.clone(), e, a, "u");
        assert_eq!(v(Some(&good), Some(&good)).unwrap(), good);
        assert!(v(None, None).is_ok());
        assert!(v(Some(&good), Some(&bad)).is_err());
        assert!(v(Some(&bad), Some(&good)).is_err());
        assert!(v(None, Some(&bad)).is_err());
    }

    #[test]
    fn accept_lists_schema1_last() {
        let a = manifest_accept();
        assert!(a.starts_with(media::OCI_INDEX));
        assert!(a.ends_with(media::DOCKER_SCHEMA1));
    }
}
