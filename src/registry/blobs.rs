//! Blob requests: a small blob (a config) read whole and verified, a blob stream opened at an
//! offset with `Range` (and the server's answer to it checked), one chunk of a blob (a
//! bounded `Range`, taken only as an exact 206), and a blob's size from `HEAD`.

use std::io::Read;
use std::time::{Duration, Instant};

use ureq::http::Response;
use ureq::Body;

use super::http::{header, Method, RedirectedTo};
use super::{ClientError, Registry, RegistryError, ServedBy, MAX_MANIFEST};
use crate::digest::{Digest, Hasher, HashingReader};
use crate::reference::Reference;

impl Registry {
    /// Read the small blob `d` (a config) into memory, verified, retrying the request and the
    /// read together.
    pub fn get_small_blob(
        &self,
        r: &Reference,
        d: &Digest,
        size: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let path = format!("blobs/{d}");
        let get = Some((Method::Get, &[][..]));
        let (bytes, _) = self.with_sources(r, &path, Some(d), get, |ep, h, answered| {
            let url = format!("{}/v2/{}/{path}", ep.base, h.repository);
            let resp = self.request_once(ep, h, r, Method::Get, &path, &[], "blob", answered)?;
            let mut reader =
                HashingReader::new(resp.into_body().into_reader(), Hasher::new(), size);
            let mut bytes = Vec::with_capacity(size.min(MAX_MANIFEST) as usize);
            reader
                .read_to_end(&mut bytes)
                .map_err(|source| RegistryError::Body {
                    url: url.clone(),
                    source,
                })?;
            reader
                .finish(d)
                .map_err(|source| RegistryError::Body {
                    url: url.clone(),
                    source,
                })?
                .map_err(|source| RegistryError::BlobVerify {
                    digest: d.clone(),
                    url: url.clone(),
                    source,
                })?;
            Ok::<_, RegistryError>(bytes)
        })?;
        Ok(bytes)
    }

    /// Open a blob stream at `offset` (0 for the whole blob). Returns the reader, the offset
    /// it actually starts at (0 when the server ignored the Range and sent everything), and
    /// the mirror that serves it (None: the registry).
    pub fn open_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<(Box<dyn Read + Send>, u64, ServedBy), ClientError> {
        let path = format!("blobs/{digest}");
        let mut headers = Vec::new();
        if offset > 0 {
            headers.push(("Range", format!("bytes={offset}-")));
        }
        let (resp, served_by) =
            self.request(r, Method::Get, &path, &headers, "blob", Some(digest))?;
        let status = resp.status().as_u16();
        let start = if offset > 0 && status == 206 {
            let range = header(&resp, "content-range").unwrap_or("");
            if parse_content_range_start(range) != Some(offset) {
                return Err(RegistryError::BadRange {
                    url: self.url_of(r, &path)?,
                    status,
                    offset,
                    content_range: range.to_string(),
                }
                .into());
            }
            offset
        } else {
            0
        };
        Ok((Box::new(resp.into_body().into_reader()), start, served_by))
    }

    /// Open bytes `[start, end)` of a blob of `size` bytes, for a parallel chunk. Only a 206
    /// whose `Content-Range` is exactly that range (and that size) is taken; any other answer
    /// (a 200 with the whole blob from a registry that ignores `Range`, a shifted range) is
    /// [`Chunk::Refused`], and no chunk is asked of this registry again in this run
    /// (containerd#11998, #12291: Range sent where it was ignored, a size check that broke).
    pub fn open_blob_chunk(
        &self,
        r: &Reference,
        digest: &Digest,
        start: u64,
        end: u64,
        size: u64,
    ) -> Result<Chunk, ClientError> {
        let path = format!("blobs/{digest}");
        let headers = [("Range", format!("bytes={start}-{}", end - 1))];
        let exact = |resp: &Response<Body>| {
            resp.status().as_u16() == 206
                && parse_content_range(header(resp, "content-range").unwrap_or(""))
                    == Some((start, end - 1, Some(size)))
        };
        // Where an earlier chunk of this blob was redirected (a CDN): straight there, while
        // the signed URL is fresh. Any other answer than the exact chunk (an expired
        // signature's 403, say) forgets it, and the registry is asked again.
        if let Some(at) = self.blob_location(digest) {
            let shown = super::http::loggable(&at.url);
            match self.http.send(Method::Get, &at.url, &headers, None) {
                Ok(resp) if exact(&resp) => {
                    return Ok(Chunk::Bytes(
                        Box::new(resp.into_body().into_reader()),
                        at.served_by,
                    ))
                }
                Ok(resp) => log::info!(
                    "{shown} answered {} to a chunk of {digest}: asking the registry again",
                    resp.status().as_u16()
                ),
                Err(e) => log::info!("{shown}: {e}: asking the registry again"),
            }
            self.forget_blob_location(digest);
        }
        let (resp, served_by) =
            self.request(r, Method::Get, &path, &headers, "blob", Some(digest))?;
        let status = resp.status().as_u16();
        let range = header(&resp, "content-range").unwrap_or("");
        if exact(&resp) {
            if let Some(RedirectedTo(url)) = resp.extensions().get::<RedirectedTo>() {
                self.blob_locations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        digest.clone(),
                        Location {
                            url: url.clone(),
                            since: Instant::now(),
                            served_by: served_by.clone(),
                        },
                    );
            }
            return Ok(Chunk::Bytes(
                Box::new(resp.into_body().into_reader()),
                served_by,
            ));
        }
        log::info!(
            "{}: a chunk of {digest} was answered {status} {range:?}, not 206 bytes {start}-{}/{size}: one stream per blob from here",
            r.registry(),
            end - 1
        );
        self.no_chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(r.registry().to_string());
        Ok(Chunk::Refused)
    }

    /// The fresh redirect target of a blob's chunks, if one is known.
    fn blob_location(&self, digest: &Digest) -> Option<Location> {
        let locations = self
            .blob_locations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        locations
            .get(digest)
            .filter(|l| l.since.elapsed() < LOCATION_FRESH)
            .cloned()
    }

    pub(super) fn forget_blob_location(&self, digest: &Digest) {
        self.blob_locations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(digest);
    }

    /// Whether blobs of `r`'s registry may be fetched in chunks (no answer refused one yet).
    pub fn takes_chunks(&self, r: &Reference) -> bool {
        !self
            .no_chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(r.registry())
    }

    /// The size of a blob, from a `HEAD` (schema1 manifests do not carry layer sizes).
    pub fn blob_size(&self, r: &Reference, digest: &Digest) -> Result<u64, ClientError> {
        let path = format!("blobs/{digest}");
        let (resp, _) = self.request(r, Method::Head, &path, &[], "blob", Some(digest))?;
        header(&resp, "content-length")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                ClientError::from(RegistryError::MissingLength {
                    url: self.url_of(r, &path).unwrap_or_default(),
                    status: resp.status().as_u16(),
                })
            })
    }
}

/// `bytes 100-199/200` -> 100.
fn parse_content_range_start(v: &str) -> Option<u64> {
    parse_content_range(v).map(|(start, _, _)| start)
}

/// How long a blob's redirect target is used without asking the registry again. Signed URLs
/// usually live longer (distribution's S3 driver signs them for 20 minutes); a target that
/// stops answering sooner is forgotten on its first refusal anyway.
const LOCATION_FRESH: Duration = Duration::from_secs(300);

/// Where a blob's chunk requests were redirected to, when, and who redirected them.
#[derive(Debug, Clone)]
pub struct Location {
    url: String,
    since: Instant,
    served_by: ServedBy,
}

/// The answer to a chunk request.
pub enum Chunk {
    /// Exactly the bytes asked for, and the mirror sending them (None: the registry).
    Bytes(Box<dyn Read + Send>, ServedBy),
    /// Not a 206 with exactly that range: this registry gets one stream per blob.
    Refused,
}

/// `bytes 100-199/200` -> (100, 199, Some(200)); a `*` total is None.
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (end >= start).then_some((start, end, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(parse_content_range_start("bytes 100-199/*"), Some(100));
        assert_eq!(parse_content_range_start("bytes 200-100/300"), None);
        assert_eq!(parse_content_range_start("items 1-2/3"), None);
        assert_eq!(parse_content_range_start(""), None);
        assert_eq!(
            parse_content_range("bytes 0-99/300"),
            Some((0, 99, Some(300)))
        );
        assert_eq!(parse_content_range("bytes 0-99/*"), Some((0, 99, None)));
        assert_eq!(parse_content_range("bytes 0-99/x"), None);
    }

    proptest::proptest! {
        #[test]
        fn content_range_never_panics(v in "\\PC{0,40}") {
            let _ = parse_content_range_start(&v);
        }

        #[test]
        fn content_range_round_trips(start in 0u64..u64::MAX / 2, len in 0u64..1 << 40) {
            let v = format!("bytes {start}-{}/{}", start + len, start + len + 1);
            proptest::prop_assert_eq!(parse_content_range_start(&v), Some(start));
        }
    }
}
