//! Which hosts serve a registry, in the order to try them, each with what it may be used for
//! (containerd's host capabilities: `resolve` a tag to a digest, `pull` content by digest).
//! Today a registry is served by itself alone; mirrors and pull-through caches (SPEC: Networks)
//! become entries ahead of it in this list, so that they are an entry, not a special case.

use super::RegistrySettings;
use crate::reference::Reference;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// May answer a tag with its manifest (a mirror configured `mirror-by-digest-only` may not).
    pub resolve: bool,
    /// May serve manifests and blobs by digest.
    pub pull: bool,
}

/// One host that serves a registry's repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `host[:port]` that answers `/v2/`.
    pub api_host: String,
    /// The name credentials are looked up by (a mirror's own host, never the registry's).
    pub credentials_for: String,
    /// Plain HTTP may be tried when HTTPS fails.
    pub allow_http: bool,
    pub capabilities: Capabilities,
}

/// The hosts for a reference's registry, in the order to try them.
pub fn hosts_for(r: &Reference, settings: &RegistrySettings) -> Vec<Host> {
    vec![Host {
        api_host: r.api_host().to_string(),
        credentials_for: r.registry().to_string(),
        allow_http: settings.allow_http || r.is_loopback(),
        capabilities: Capabilities {
            resolve: true,
            pull: true,
        },
    }]
}
