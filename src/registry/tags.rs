//! Tag listing: `GET /v2/<name>/tags/list?n=<page>`, following `Link: <...>; rel="next"` as
//! distribution paginates (distribution spec, "Listing Tags"; distribution answers `n` with at
//! most `n` tags and a `Link` to the page after the last one it sent).

use std::io::Read;

use serde::Deserialize;

use super::http::{header, Method};
use super::{ClientError, Registry, RegistryError};
use crate::reference::Reference;

/// Each page's body is read up to this: 1000 tags of the longest kind (128 bytes) and quoting.
const MAX_PAGE: u64 = 4 << 20;
/// A registry whose `Link` never ends is stopped here, with what it sent so far an error.
const MAX_PAGES: usize = 10_000;

#[derive(Deserialize)]
struct TagList {
    // distribution answers `"tags": null` for a repository whose tags were all deleted.
    #[serde(default)]
    tags: Option<Vec<String>>,
}

impl Registry {
    /// Every tag of `r`'s repository, in the registry's order, `page` at a time; with `limit`,
    /// only the first page of at most `limit` tags.
    pub fn list_tags(
        &self,
        r: &Reference,
        page: usize,
        limit: Option<usize>,
    ) -> Result<Vec<String>, ClientError> {
        let mut path = format!("tags/list?n={}", limit.unwrap_or(page));
        let mut tags = Vec::new();
        let mut seen_pages = 0;
        loop {
            self.check_blocked(r)?;
            // Tags come from the registry itself: a mirror's list is its cache, not the tags.
            let host = self.registry_host(r);
            let first = super::auth::First {
                method: Method::Get,
                target: super::target(&host, &path),
                headers: &[],
            };
            let (ep, mut answered) = self.endpoint_of(&host, Some(&first))?;
            let url = format!("{}/v2/{}/{path}", ep.base, host.repository);
            // The body is read inside the retried operation, as a manifest's is.
            let (body, next) = self.retry.run("", self.reporter.as_ref(), || {
                let resp = self.request_once(
                    &ep,
                    &host,
                    r,
                    Method::Get,
                    &path,
                    &[],
                    "tag list of",
                    answered.take(),
                )?;
                let next = header(&resp, "link").and_then(next_link);
                let mut body = Vec::new();
                resp.into_body()
                    .into_reader()
                    .take(MAX_PAGE + 1)
                    .read_to_end(&mut body)
                    .map_err(|source| RegistryError::Body {
                        url: url.clone(),
                        source,
                    })?;
                Ok::<_, RegistryError>((body, next))
            })?;
            if body.len() as u64 > MAX_PAGE {
                return Err(bad(&url, format!("a page is larger than {MAX_PAGE} bytes")));
            }
            let list: TagList = serde_json::from_slice(&body)
                .map_err(|e| bad(&url, format!("not a tag list: {e}")))?;
            tags.extend(list.tags.unwrap_or_default());
            seen_pages += 1;
            if limit.is_some() {
                return Ok(tags);
            }
            let Some(next) = next else { return Ok(tags) };
            // The link is to the same repository's list on the same registry: anything else
            // would send our credentials where the user did not point us.
            let prefix = format!("/v2/{}/", host.repository);
            let rel = strip_origin(&next, &url);
            path = match rel.and_then(|p| p.strip_prefix(&prefix)) {
                Some(p) if p.starts_with("tags/list") => p.to_string(),
                _ => {
                    return Err(bad(
                        &url,
                        format!("its next-page link {next:?} leaves the repository"),
                    ))
                }
            };
            if seen_pages >= MAX_PAGES {
                return Err(bad(&url, format!("more than {MAX_PAGES} pages")));
            }
        }
    }
}

fn bad(url: &str, reason: String) -> ClientError {
    RegistryError::BadTagList {
        url: url.to_string(),
        reason,
    }
    .into()
}

/// The target of the `rel="next"` link of a `Link` header (RFC 8288): `<url>; rel="next"`,
/// possibly among other links.
fn next_link(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let end = start + rest[start..].find('>')?;
        let target = &rest[start + 1..end];
        let params_end = rest[end..].find('<').map_or(rest.len(), |i| end + i);
        let params = &rest[end + 1..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim().trim_matches('"').split(' ').any(|r| r == "next")
            })
        });
        if is_next {
            return Some(target.to_string());
        }
        rest = &rest[params_end..];
    }
    None
}

/// A link as a path on `base`'s origin: a path as is, a full URL only when its origin is
/// `base`'s.
fn strip_origin<'a>(link: &'a str, base: &str) -> Option<&'a str> {
    if link.starts_with('/') {
        return Some(link);
    }
    let origin = super::http::origin_of(base);
    if super::http::origin_of(link) != origin {
        return None;
    }
    let after_scheme = link.split_once("://")?.1;
    after_scheme.find('/').map(|i| &after_scheme[i..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_the_next_link_among_others() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"<https://x/prev>; rel="prev", <https://x/next>; rel=next"#).as_deref(),
            Some("https://x/next")
        );
        assert_eq!(next_link(r#"<https://x/p>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn a_link_to_another_origin_is_not_followed() {
        let base = "https://r.example/v2/a/tags/list?n=2";
        assert_eq!(
            strip_origin("/v2/a/tags/list?last=x", base),
            Some("/v2/a/tags/list?last=x")
        );
        assert_eq!(
            strip_origin("https://r.example:443/v2/a/tags/list", base),
            Some("/v2/a/tags/list")
        );
        assert_eq!(
            strip_origin("https://evil.example/v2/a/tags/list", base),
            None
        );
        assert_eq!(strip_origin("http://r.example/v2/a/tags/list", base), None);
    }

    proptest! {
        #[test]
        fn link_headers_of_any_text_never_panic(h in ".{0,200}") {
            let _ = next_link(&h);
            let _ = strip_origin(&h, "https://r.example/v2/a/tags/list");
        }
    }
}
