//! Image references: parsing and normalisation the way the docker CLI does it (SPEC: References).
//!
//! This module owns the grammar `[registry[:port]/]repository[:tag][@digest]` (docker/distribution's
//! `reference` package) and the docker CLI's normalisation on top of it: the default registry
//! `docker.io`, the `library/` prefix for official images, `index.docker.io` as an alias, the
//! `latest` default tag, and where docker.io's API is actually served. Everything after parsing
//! (endpoints, auth, the store's `ref.name` annotation) works from the normalised [`Reference`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::digest::Digest;

/// The registry a reference without a registry part means (SPEC: References).
const DOCKER_HUB: &str = "docker.io";
/// The legacy name of Docker Hub that the docker CLI still accepts as an alias.
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// Where Docker Hub serves the distribution API: `docker.io` itself only redirects to the website.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// distribution `reference`: `NameTotalLengthMax`, counted on the normalised `registry/repository`.
const NAME_MAX: usize = 255;
/// distribution `reference`: a tag is `[\w][\w.-]{0,127}`.
const TAG_MAX: usize = 128;

/// A normalised image reference: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference {input:?}: {reason}")]
    Invalid { input: String, reason: String },
}

impl Reference {
    /// Normalised registry name as users write it: `docker.io`, `127.0.0.1:5000`, `ghcr.io`.
    pub fn registry(&self) -> &str {
        &self.registry
    }
    /// Host[:port] the registry API is served at (`registry-1.docker.io` for docker.io).
    pub fn api_host(&self) -> &str {
        api_host_of(&self.registry)
    }
    /// `library/alpine`, `team/app`.
    pub fn repository(&self) -> &str {
        &self.repository
    }
    /// The tag; `latest` when neither tag nor digest was given; None for a digest-only reference.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
    /// What goes after `/manifests/`: the digest when there is one, else the tag.
    pub fn manifest_reference(&self) -> String {
        // SPEC: `name:tag@digest` pulls by digest; the tag is informative only.
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            // Unreachable by construction (parsing defaults the tag), but a sensible answer.
            (None, None) => "latest".to_string(),
        }
    }
    /// True for 127.0.0.0/8, ::1 and localhost (with any port).
    pub fn is_loopback(&self) -> bool {
        let (host, _after_host) = split_host_port(&self.registry);
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return v6.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
        }
        host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// `registry/repository`, the part the 255-character limit applies to.
    fn name_len(&self) -> usize {
        self.registry.len() + 1 + self.repository.len()
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).map_err(|reason| ReferenceError::Invalid {
            input: s.to_string(),
            reason,
        })
    }
}

/// The full normalised form: `docker.io/library/alpine:3.20`, `host:5000/a/b@sha256:...`,
/// `host/a:tag@sha256:...`.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Parses and normalises; the error is the human-readable reason.
fn parse(input: &str) -> Result<Reference, String> {
    if input.is_empty() {
        return Err("the reference is empty".to_string());
    }
    if let Some(c) = input.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("it contains the character {c:?}"));
    }
    // Copied from a browser or a registry's docs: the scheme is not part of a reference, and
    // plain HTTP is chosen by the client (automatic on loopback, else --insecure-allow-http).
    if let Some((scheme, rest)) = input.split_once("://") {
        return Err(format!(
            "a reference has no scheme: drop \"{scheme}://\" and write {rest:?}"
        ));
    }
    // The docker CLI refuses a bare 64-hex string: it looks like an image ID, not a name.
    if input.len() == 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            "a 64-character hex string is an image ID, not a repository name \
             (to pull by digest, write name@sha256:<hex>)"
                .to_string(),
        );
    }

    // Neither names nor tags may contain '@', so the first '@' starts the digest.
    let (name_and_tag, digest) = match input.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (input, None),
    };
    // A ':' after the last '/' starts the tag; an earlier one is the registry's port.
    let last_slash = name_and_tag.rfind('/');
    let (name, tag) = match name_and_tag.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..]))
        }
        _ => (name_and_tag, None),
    };
    if name.is_empty() {
        return Err("the repository name is missing".to_string());
    }

    let (registry, repository) = split_registry(name);
    let registry = match registry {
        Some(registry) => {
            check_registry(registry)?;
            // Host names are case-insensitive (RFC 4343): `GHCR.io` and `ghcr.io` are one
            // registry, and must give one store entry name and one credentials lookup.
            let registry = registry.to_ascii_lowercase();
            if registry == DOCKER_HUB_LEGACY {
                DOCKER_HUB.to_string()
            } else {
                registry
            }
        }
        None => DOCKER_HUB.to_string(),
    };
    check_repository(repository)?;
    // Official images live under `library/` on Docker Hub, and only there.
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository.to_string()
    };

    let tag = tag.map(check_tag).transpose()?;
    let digest = digest
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| format!("bad digest after '@': {e}"))
        })
        .transpose()?;
    let tag = match (tag, &digest) {
        (None, None) => Some("latest".to_string()),
        (tag, _) => tag.map(str::to_string),
    };

    let reference = Reference {
        registry,
        repository,
        tag,
        digest,
    };
    if reference.name_len() > NAME_MAX {
        return Err(format!(
            "the name {}/{} is {} characters long; at most {NAME_MAX} are allowed",
            reference.registry,
            reference.repository,
            reference.name_len()
        ));
    }
    Ok(reference)
}

/// The docker CLI's rule (SPEC: References): the first component names a registry only when it
/// contains `.` or `:` or is `localhost`; otherwise the whole name is a Docker Hub repository.
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// Splits `host[:port]`, where host may be a bracketed IPv6 address. The second part is what
/// follows the host: empty, or `:port` in a valid registry.
fn split_host_port(registry: &str) -> (&str, &str) {
    let host_end = if registry.starts_with('[') {
        registry.find(']').map_or(registry.len(), |i| i + 1)
    } else {
        registry.find(':').unwrap_or(registry.len())
    };
    registry.split_at(host_end)
}

/// distribution `reference`: `host[:port]`, host being a DNS name, an IPv4 address (which the DNS
/// grammar covers) or a bracketed IPv6 address.
fn check_registry(registry: &str) -> Result<(), String> {
    let (host, after_host) = split_host_port(registry);
    if host.is_empty() {
        return Err(format!("registry {registry:?} has no host name"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let valid = inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok());
        if !valid {
            return Err(format!(
                "registry host {host:?} is not a valid IPv6 address"
            ));
        }
    } else if let Some(component) = host.split('.').find(|c| !is_domain_component(c)) {
        return Err(format!(
            "registry host {host:?} is not a valid host name: component {component:?} must be \
             letters, digits and inner '-'"
        ));
    }
    if !after_host.is_empty() {
        let Some(port) = after_host.strip_prefix(':') else {
            return Err(format!(
                "registry {registry:?}: expected ':' and a port after {host:?}"
            ));
        };
        // The grammar allows any digits; a port outside 1..=65535 can never be connected to,
        // so say so now rather than as a confusing network error later.
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !valid {
            return Err(format!(
                "registry port {port:?} is not a number between 1 and 65535"
            ));
        }
    }
    Ok(())
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]` (distribution `reference`: domain-component).
fn is_domain_component(c: &str) -> bool {
    !c.is_empty()
        && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !c.starts_with('-')
        && !c.ends_with('-')
}

/// distribution `reference`: path-component `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`, joined by `/`.
fn check_repository(repository: &str) -> Result<(), String> {
    // Checked first and reported on its own: it is the commonest mistake (`MyApp`).
    if repository.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("repository name {repository:?} must be lowercase"));
    }
    for component in repository.split('/') {
        if component.is_empty() {
            return Err(format!(
                "repository {repository:?} has an empty path component (leading, trailing or doubled '/')"
            ));
        }
        if !is_path_component(component) {
            return Err(format!(
                "path component {component:?} must be lowercase letters and digits, separated by \
                 one '.', one or two '_', or dashes (and not start or end with a separator)"
            ));
        }
    }
    Ok(())
}

fn is_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        // An alphanumeric run...
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // ...then one separator, which must be followed by another run.
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        match &c[sep_start..i] {
            "." | "_" | "__" => {}
            sep if sep.bytes().all(|b| b == b'-') => {}
            _ => return false,
        }
    }
}

/// distribution `reference`: tag `[\w][\w.-]{0,127}`.
fn check_tag(tag: &str) -> Result<&str, String> {
    if tag.is_empty() {
        return Err("the tag after ':' is empty".to_string());
    }
    if tag.len() > TAG_MAX {
        return Err(format!(
            "the tag is {} characters long; at most {TAG_MAX} are allowed",
            tag.len()
        ));
    }
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let valid = word(tag.as_bytes()[0]) && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if !valid {
        return Err(format!(
            "tag {tag:?} may hold only letters, digits, '_', '.' and '-', and must not start \
             with '.' or '-'"
        ));
    }
    Ok(tag)
}

/// The host that answers `/v2/` for a registry as references name it (Docker Hub's is
/// `registry-1.docker.io`).
pub fn api_host_of(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parse(s: &str) -> Reference {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    #[test]
    #[rustfmt::skip]
    fn normalises_real_world_references() {
        // input, registry, api host, repository, tag, has digest, display; "@D" stands for @{D}.
        type Case = (&'static str, &'static str, &'static str, &'static str, Option<&'static str>, bool, &'static str);
        let cases: Vec<Case> = vec![
            ("alpine", "docker.io", "registry-1.docker.io", "library/alpine", Some("latest"), false, "docker.io/library/alpine:latest"),
            ("alpine:3.20", "docker.io", "registry-1.docker.io", "library/alpine", Some("3.20"), false, "docker.io/library/alpine:3.20"),
            ("library/alpine", "docker.io", "registry-1.docker.io", "library/alpine", Some("latest"), false, "docker.io/library/alpine:latest"),
            ("docker.io/alpine", "docker.io", "registry-1.docker.io", "library/alpine", Some("latest"), false, "docker.io/library/alpine:latest"),
            ("docker.io/library/alpine:edge", "docker.io", "registry-1.docker.io", "library/alpine", Some("edge"), false, "docker.io/library/alpine:edge"),
            ("index.docker.io/library/alpine", "docker.io", "registry-1.docker.io", "library/alpine", Some("latest"), false, "docker.io/library/alpine:latest"),
            ("index.docker.io/alpine:3", "docker.io", "registry-1.docker.io", "library/alpine", Some("3"), false, "docker.io/library/alpine:3"),
            ("registry-1.docker.io/alpine", "registry-1.docker.io", "registry-1.docker.io", "alpine", Some("latest"), false, "registry-1.docker.io/alpine:latest"),
            ("user/repo", "docker.io", "registry-1.docker.io", "user/repo", Some("latest"), false, "docker.io/user/repo:latest"),
            ("bitnami/postgresql:16.3.0-debian-12-r14", "docker.io", "registry-1.docker.io", "bitnami/postgresql", Some("16.3.0-debian-12-r14"), false, "docker.io/bitnami/postgresql:16.3.0-debian-12-r14"),
            ("a/b/c", "docker.io", "registry-1.docker.io", "a/b/c", Some("latest"), false, "docker.io/a/b/c:latest"),
            ("ubuntu:22.04", "docker.io", "registry-1.docker.io", "library/ubuntu", Some("22.04"), false, "docker.io/library/ubuntu:22.04"),
            ("python:3.12-slim-bookworm", "docker.io", "registry-1.docker.io", "library/python", Some("3.12-slim-bookworm"), false, "docker.io/library/python:3.12-slim-bookworm"),
            ("ghcr.io/owner/repo:tag", "ghcr.io", "ghcr.io", "owner/repo", Some("tag"), false, "ghcr.io/owner/repo:tag"),
            ("ghcr.io/owner/repo", "ghcr.io", "ghcr.io", "owner/repo", Some("latest"), false, "ghcr.io/owner/repo:latest"),
            ("GHCR.io/owner/repo", "ghcr.io", "ghcr.io", "owner/repo", Some("latest"), false, "ghcr.io/owner/repo:latest"),
            ("quay.io/a/b/c", "quay.io", "quay.io", "a/b/c", Some("latest"), false, "quay.io/a/b/c:latest"),
            ("gcr.io/distroless/static-debian12:nonroot", "gcr.io", "gcr.io", "distroless/static-debian12", Some("nonroot"), false, "gcr.io/distroless/static-debian12:nonroot"),
            ("registry.k8s.io/pause:3.9", "registry.k8s.io", "registry.k8s.io", "pause", Some("3.9"), false, "registry.k8s.io/pause:3.9"),
            ("mcr.microsoft.com/dotnet/runtime:8.0", "mcr.microsoft.com", "mcr.microsoft.com", "dotnet/runtime", Some("8.0"), false, "mcr.microsoft.com/dotnet/runtime:8.0"),
            ("public.ecr.aws/docker/library/alpine:3.20", "public.ecr.aws", "public.ecr.aws", "docker/library/alpine", Some("3.20"), false, "public.ecr.aws/docker/library/alpine:3.20"),
            ("localhost/x", "localhost", "localhost", "x", Some("latest"), false, "localhost/x:latest"),
            ("localhost:5000/x", "localhost:5000", "localhost:5000", "x", Some("latest"), false, "localhost:5000/x:latest"),
            ("localhost:5000/x:v1", "localhost:5000", "localhost:5000", "x", Some("v1"), false, "localhost:5000/x:v1"),
            ("127.0.0.1:5000/team/app:1.4", "127.0.0.1:5000", "127.0.0.1:5000", "team/app", Some("1.4"), false, "127.0.0.1:5000/team/app:1.4"),
            ("[::1]:5000/a", "[::1]:5000", "[::1]:5000", "a", Some("latest"), false, "[::1]:5000/a:latest"),
            ("[2001:db8::1]/a/b:t", "[2001:db8::1]", "[2001:db8::1]", "a/b", Some("t"), false, "[2001:db8::1]/a/b:t"),
            ("myhost:5000/repo", "myhost:5000", "myhost:5000", "repo", Some("latest"), false, "myhost:5000/repo:latest"),
            ("registry.example.com:443/a@D", "registry.example.com:443", "registry.example.com:443", "a", None, true, "registry.example.com:443/a@D"),
            ("alpine:3.20@D", "docker.io", "registry-1.docker.io", "library/alpine", Some("3.20"), true, "docker.io/library/alpine:3.20@D"),
            ("alpine@D", "docker.io", "registry-1.docker.io", "library/alpine", None, true, "docker.io/library/alpine@D"),
            ("ghcr.io/a/b@D", "ghcr.io", "ghcr.io", "a/b", None, true, "ghcr.io/a/b@D"),
            ("localhost:5000/x:1@D", "localhost:5000", "localhost:5000", "x", Some("1"), true, "localhost:5000/x:1@D"),
            ("my_org/my__app", "docker.io", "registry-1.docker.io", "my_org/my__app", Some("latest"), false, "docker.io/my_org/my__app:latest"),
            ("a---b.c_d:_Tag-1.x", "docker.io", "registry-1.docker.io", "library/a---b.c_d", Some("_Tag-1.x"), false, "docker.io/library/a---b.c_d:_Tag-1.x"),
            // No '.'/':' and not localhost: a Docker Hub namespace, not a registry.
            ("myregistry/app", "docker.io", "registry-1.docker.io", "myregistry/app", Some("latest"), false, "docker.io/myregistry/app:latest"),
            // A ':' with no '/' after it is a tag (docker parses this the same way).
            ("localhost:5000", "docker.io", "registry-1.docker.io", "library/localhost", Some("5000"), false, "docker.io/library/localhost:5000"),
        ];
        assert!(cases.len() >= 30);
        let at_d = format!("@{D}");
        for (input, registry, api, repo, tag, has_digest, display) in cases {
            let (input, display) = (input.replace("@D", &at_d), display.replace("@D", &at_d));
            let r = parse(&input);
            assert_eq!(r.registry(), registry, "{input}");
            assert_eq!(r.api_host(), api, "{input}");
            assert_eq!(r.repository(), repo, "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            assert_eq!(r.digest().is_some(), has_digest, "{input}");
            assert_eq!(r.to_string(), display, "{input}");
            assert_eq!(parse(&display), r, "{input}: display must re-parse");
        }
    }

    #[test]
    fn manifest_reference_prefers_the_digest() {
        assert_eq!(parse("alpine").manifest_reference(), "latest");
        assert_eq!(parse("alpine:3.20").manifest_reference(), "3.20");
        assert_eq!(parse(&format!("alpine:3.20@{D}")).manifest_reference(), D);
        assert_eq!(parse(&format!("alpine@{D}")).manifest_reference(), D);
    }

    #[test]
    fn loopback_registries() {
        for yes in [
            "localhost/a",
            "localhost:5000/a",
            "127.0.0.1/a",
            "127.0.0.1:5000/a",
            "127.8.9.10:1/a",
            "[::1]/a",
            "[::1]:5000/a",
        ] {
            assert!(parse(yes).is_loopback(), "{yes}");
        }
        for no in [
            "alpine",
            "ghcr.io/a",
            "128.0.0.1/a",
            "10.0.0.1:5000/a",
            "[::2]:5000/a",
            "localhost.example.com/a",
            "mylocalhost:5000/a",
        ] {
            assert!(!parse(no).is_loopback(), "{no}");
        }
    }

    #[test]
    fn rejects_invalid_references_with_a_reason() {
        let long_tag = format!("alpine:{}", "a".repeat(129));
        let long_name = format!("ghcr.io/{}", "a".repeat(250));
        let cases: Vec<(&str, &str)> = vec![
            ("", "empty"),
            (
                "http://127.0.0.1:5000/team/app:1",
                "drop \"http://\" and write \"127.0.0.1:5000/team/app:1\"",
            ),
            ("https://ghcr.io/org/app", "no scheme"),
            ("Alpine", "lowercase"),
            ("docker.io/Library/alpine", "lowercase"),
            ("ghcr.io/Owner/repo", "lowercase"),
            ("alpine:", "tag after ':' is empty"),
            ("alpine:.x", "must not start"),
            ("alpine:-x", "must not start"),
            ("alpine:a+b", "may hold only"),
            (&long_tag, "at most 128"),
            ("alpine@", "bad digest"),
            ("alpine@sha256:abc", "bad digest"),
            ("alpine@sha512:abc", "only sha256"),
            (
                "alpine@sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                "bad digest",
            ),
            (
                "alpine@@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "bad digest",
            ),
            ("localhost:/a", "port"),
            ("localhost:abc/a", "port"),
            ("localhost:65536/a", "port"),
            ("localhost:0/a", "port"),
            ("[::1/a", "IPv6"),
            ("[zz::1]:5000/a", "IPv6"),
            ("[::1]x/a", "expected ':'"),
            ("[::1]:5000:1/a", "port"),
            ("-bad.io/a", "host name"),
            ("bad_host.io/a", "host name"),
            ("a..io/a", "host name"),
            (":5000/a", "no host"),
            ("ghcr.io/", "empty path component"),
            ("ghcr.io//a", "empty path component"),
            ("a//b", "empty path component"),
            ("a/", "empty path component"),
            ("/a", "empty path component"),
            ("ghcr.io/a/", "empty path component"),
            ("-a", "path component"),
            ("a-", "path component"),
            ("a..b", "path component"),
            ("a___b", "path component"),
            ("a._b", "path component"),
            ("a$b", "path component"),
            ("alpine :3", "character"),
            (
                "@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "missing",
            ),
            (":tag", "missing"),
            (
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "image ID",
            ),
            (&long_name, "at most 255"),
        ];
        for (input, needle) in cases {
            match input.parse::<Reference>() {
                Ok(r) => panic!("{input:?} was accepted as {r}"),
                Err(ReferenceError::Invalid { input: got, reason }) => {
                    assert_eq!(got, input);
                    assert!(
                        reason.contains(needle),
                        "{input:?}: reason {reason:?} should mention {needle:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn name_length_counts_the_normalised_name() {
        // "docker.io/" + "library/" + 237 = 255 characters: the limit exactly.
        let ok = "a".repeat(237);
        assert_eq!(parse(&ok).name_len(), 255);
        assert!(format!("{ok}a").parse::<Reference>().is_err());
    }

    /// Strings that look like references, so that many of them parse.
    fn plausible() -> impl Strategy<Value = String> {
        let host = prop_oneof![
            Just(String::new()),
            "(localhost|[a-zA-Z0-9.-]{1,12}|\\[::1\\]|127\\.0\\.0\\.1)(:[0-9]{0,6})?/",
            Just("docker.io/".to_string()),
            Just("index.docker.io/".to_string()),
        ];
        let path = "[a-z0-9._-]{1,10}(/[a-z0-9._-]{1,10}){0,2}";
        let tag = prop_oneof![Just(String::new()), ":[A-Za-z0-9_.-]{0,12}"];
        let digest = prop_oneof![
            Just(String::new()),
            "@sha256:[0-9a-f]{64}",
            "@[a-z0-9]{0,7}:[0-9a-fA-F]{0,66}",
        ];
        (host, path, tag, digest).prop_map(|(h, p, t, d)| format!("{h}{p}{t}{d}"))
    }

    /// References built from the grammar, which must all parse.
    fn valid() -> impl Strategy<Value = String> {
        let component = "[a-z0-9]{1,5}(([._]|__|-{1,3})[a-z0-9]{1,5}){0,2}";
        // Without '.' so that, with no registry given, it is not taken for one.
        let first = "[a-z0-9]{1,5}((_|__|-{1,3})[a-z0-9]{1,5}){0,2}";
        let host = prop_oneof![
            Just(String::new()),
            "[a-z0-9]{1,8}\\.[a-z]{2,4}(:[1-9][0-9]{0,3})?/",
            "localhost(:[1-9][0-9]{0,3})?/",
            "\\[::1\\]:[1-9][0-9]{0,3}/",
        ];
        let tag = prop_oneof![Just(String::new()), ":[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"];
        let digest = prop_oneof![Just(String::new()), "@sha256:[0-9a-f]{64}"];
        let rest = prop::collection::vec(component, 0..3);
        (host, first, rest, tag, digest).prop_map(|(h, f, r, t, d)| {
            let path: Vec<String> = std::iter::once(f).chain(r).collect();
            format!("{h}{}{t}{d}", path.join("/"))
        })
    }

    fn assert_round_trips(r: &Reference) {
        let shown = r.to_string();
        let again: Reference = shown
            .parse()
            .unwrap_or_else(|e| panic!("display {shown:?} does not re-parse: {e}"));
        assert_eq!(&again, r);
        assert_eq!(again.to_string(), shown);
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,80}") {
            if let Ok(r) = s.parse::<Reference>() {
                assert_round_trips(&r);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(s in any::<String>()) {
            if let Ok(r) = s.parse::<Reference>() {
                assert_round_trips(&r);
            }
        }

        #[test]
        fn plausible_references_round_trip(s in plausible()) {
            if let Ok(r) = s.parse::<Reference>() {
                assert_round_trips(&r);
            }
        }

        #[test]
        fn grammatical_references_parse_and_round_trip(s in valid()) {
            let r: Reference = s.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
            assert_round_trips(&r);
        }
    }
}
