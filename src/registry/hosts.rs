//! Which hosts serve a registry, in the order to try them, each with what it may be used for
//! (containerd's host capabilities: `resolve` a tag to a digest, `pull` content by digest).
//! Mirrors and pull-through caches (`--mirror`, registries.conf; SPEC: Networks) come first,
//! the registry itself (or the `location` registries.conf moves it to) last.

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
    /// The repository's name at this host (a mirror may keep it under a prefix).
    pub repository: String,
    /// The name credentials are looked up by (a mirror's own host, never the registry's).
    pub credentials_for: String,
    /// Plain HTTP may be tried when HTTPS fails.
    pub allow_http: bool,
    /// Configured insecure (registries.conf, an `http://` mirror): its certificate is not
    /// checked. Only for this host as this entry reaches it: the same host reached for
    /// another reference, or as a registry rather than a mirror, is verified.
    pub insecure: bool,
    pub capabilities: Capabilities,
    /// For a mirror: how it was configured (what `pull --json` reports), and the registry it
    /// mirrors, sent as containerd's `?ns=` (Spegel needs it to answer tags).
    pub mirror: Option<MirrorOf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorOf {
    pub configured: String,
    pub registry: String,
}

/// Mirrors for references under a prefix, and where the registry itself is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// `registry[/repository prefix]` the rule applies to (the longest match wins).
    pub prefix: String,
    /// registries.conf `location`: the registry (and prefix) that really serves it.
    pub location: Option<String>,
    /// registries.conf `insecure = true`: the registry may answer plain HTTP, or TLS with a
    /// certificate nobody vouches for (containers/image's meaning).
    pub insecure: bool,
    /// registries.conf `blocked = true`: references under it are refused.
    pub blocked: bool,
    pub mirrors: Vec<Mirror>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `host[:port][/prefix]`, as `location` or a `--mirror` URL without its scheme.
    pub location: String,
    /// As the user wrote it.
    pub configured: String,
    /// `insecure = true`, or an `http://` URL: plain HTTP allowed, and TLS not verified (what
    /// containers/image and docker's `insecure-registries` mean).
    pub insecure: bool,
    /// Only digests are fetched from it (`mirror-by-digest-only`, `pull-from-mirror =
    /// "digest-only"`): a tag always comes from the registry.
    pub by_digest_only: bool,
}

/// The rule for a reference: the one whose prefix matches it longest, at a `/` boundary
/// (a `*.example.com` prefix matches subdomains of example.com).
pub fn rule_for<'a>(rules: &'a [Rule], r: &Reference) -> Option<&'a Rule> {
    let full = format!("{}/{}", r.registry(), r.repository());
    rules
        .iter()
        .filter(|rule| prefix_matches(&rule.prefix, &full, r.registry()))
        .max_by_key(|rule| rule.prefix.len())
}

fn prefix_matches(prefix: &str, full: &str, registry: &str) -> bool {
    if let Some(domain) = prefix.strip_prefix("*.") {
        // `a.example.com:5000` is under `*.example.com` too.
        let name = match registry.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => registry,
        };
        return name.ends_with(&format!(".{domain}"));
    }
    full == prefix
        || full
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `host[:port]/a/b` + the part of the reference below the rule's prefix, split into the
/// host and the repository there.
fn relocate(location: &str, prefix: &str, r: &Reference) -> (String, String) {
    let full = format!("{}/{}", r.registry(), r.repository());
    let rest = if prefix.starts_with("*.") {
        // A wildcard rule maps the registry to the location; the repository is kept.
        format!("/{}", r.repository())
    } else {
        full.strip_prefix(prefix).unwrap_or("").to_string()
    };
    let moved = format!("{}{rest}", location.trim_end_matches('/'));
    match moved.split_once('/') {
        Some((host, repo)) => (host.to_string(), repo.to_string()),
        None => (moved, String::new()),
    }
}

/// The hosts for a reference's registry, in the order to try them: its mirrors, then the
/// registry (at its `location` when registries.conf moves it).
pub fn hosts_for(r: &Reference, settings: &RegistrySettings) -> Vec<Host> {
    let rule = rule_for(&settings.mirrors, r);
    let mut hosts = Vec::new();
    if let Some(rule) = rule {
        for m in &rule.mirrors {
            let (host, repository) = relocate(&m.location, &rule.prefix, r);
            hosts.push(Host {
                credentials_for: host.clone(),
                allow_http: m.insecure || settings.allow_http || is_loopback(&host),
                insecure: m.insecure,
                api_host: host,
                repository,
                capabilities: Capabilities {
                    resolve: !m.by_digest_only,
                    pull: true,
                },
                mirror: Some(MirrorOf {
                    configured: m.configured.clone(),
                    registry: r.registry().to_string(),
                }),
            });
        }
    }
    let (api_host, repository, credentials_for) = match rule.and_then(|x| x.location.as_ref()) {
        Some(location) => {
            let prefix = &rule.map(|x| x.prefix.clone()).unwrap_or_default();
            let (host, repo) = relocate(location, prefix, r);
            let api = crate::reference::api_host_of(&host).to_string();
            (api, repo, host)
        }
        None => (
            r.api_host().to_string(),
            r.repository().to_string(),
            r.registry().to_string(),
        ),
    };
    let insecure = rule.is_some_and(|x| x.insecure);
    hosts.push(Host {
        allow_http: insecure || settings.allow_http || r.is_loopback() || is_loopback(&api_host),
        insecure,
        api_host,
        repository,
        credentials_for,
        capabilities: Capabilities {
            resolve: true,
            pull: true,
        },
        mirror: None,
    });
    hosts
}

/// The hosts (`host[:port]`) that may be reached without checking their certificates (each
/// one only where an entry configured insecure leads to it, see [`Host::insecure`]):
/// insecure mirrors, and the registries of insecure rules (at their `location`, or, for a
/// `*.domain` rule, those of `registries` under it).
pub fn unverified_hosts(rules: &[Rule], registries: &[&str]) -> Vec<String> {
    let host_of = |place: &str| place.split('/').next().unwrap_or(place).to_string();
    let mut hosts = Vec::new();
    for rule in rules {
        hosts.extend(
            rule.mirrors
                .iter()
                .filter(|m| m.insecure)
                .map(|m| host_of(&m.location)),
        );
        if !rule.insecure {
            continue;
        }
        match (&rule.location, rule.prefix.strip_prefix("*.")) {
            (Some(location), _) => hosts.push(host_of(location)),
            (None, Some(_)) => hosts.extend(
                registries
                    .iter()
                    .filter(|r| prefix_matches(&rule.prefix, &format!("{r}/"), r))
                    .map(|r| r.to_string()),
            ),
            (None, None) => hosts.push(host_of(&rule.prefix)),
        }
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `--mirror REGISTRY=URL`: a rule for the whole of REGISTRY with one mirror. `http://` allows
/// plain HTTP; a path is a repository prefix at the mirror.
pub fn parse_mirror_flag(flag: &str) -> Result<(String, Mirror), String> {
    let (registry, url) = flag
        .split_once('=')
        .ok_or_else(|| format!("--mirror {flag}: expected REGISTRY=URL"))?;
    let registry = registry.trim().to_ascii_lowercase();
    let registry = match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => registry,
    };
    let (insecure, location) = if let Some(l) = url.strip_prefix("http://") {
        (true, l)
    } else {
        (false, url.strip_prefix("https://").unwrap_or(url))
    };
    let location = location.trim_end_matches('/');
    if registry.is_empty() || location.is_empty() || location.starts_with('/') {
        return Err(format!("--mirror {flag}: expected REGISTRY=URL"));
    }
    Ok((
        registry,
        Mirror {
            location: location.to_string(),
            configured: url.to_string(),
            insecure,
            by_digest_only: false,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rules: Vec<Rule>) -> RegistrySettings {
        RegistrySettings {
            http: crate::registry::http::HttpSettings {
                ca_certs: vec![],
                insecure_skip_verify: false,
                timeout: None,
                connect_timeout: std::time::Duration::from_secs(1),
                read_timeout: std::time::Duration::from_secs(1),
                proxy: Default::default(),
                cert_dirs: vec![],
                hosts: vec![],
                unverified_hosts: vec![],
            },
            credentials: Default::default(),
            allow_http: false,
            attempts: 1,
            retry_base: std::time::Duration::ZERO,
            mirrors: rules,
            preconnect: 0,
        }
    }

    fn mirror(location: &str) -> Mirror {
        Mirror {
            location: location.into(),
            configured: location.into(),
            insecure: false,
            by_digest_only: false,
        }
    }

    #[test]
    fn mirrors_come_first_and_keep_the_name_under_their_prefix() {
        let s = settings(vec![Rule {
            prefix: "docker.io".into(),
            mirrors: vec![mirror("m1.example:5000"), mirror("m2.example/hub")],
            ..Default::default()
        }]);
        let r: Reference = "alpine:3.20".parse().unwrap();
        let h = hosts_for(&r, &s);
        assert_eq!(h.len(), 3);
        assert_eq!(
            (h[0].api_host.as_str(), h[0].repository.as_str()),
            ("m1.example:5000", "library/alpine")
        );
        assert_eq!(
            (h[1].api_host.as_str(), h[1].repository.as_str()),
            ("m2.example", "hub/library/alpine")
        );
        assert_eq!(h[1].credentials_for, "m2.example");
        assert_eq!(h[2].api_host, "registry-1.docker.io");
        assert!(h[2].mirror.is_none());
        assert_eq!(h[0].mirror.as_ref().unwrap().registry, "docker.io");
    }

    #[test]
    fn the_longest_prefix_wins_at_a_path_boundary() {
        let rules = vec![
            Rule {
                prefix: "reg.example".into(),
                mirrors: vec![mirror("a.example")],
                ..Default::default()
            },
            Rule {
                prefix: "reg.example/team".into(),
                location: Some("internal.example/mirrored/team".into()),
                ..Default::default()
            },
        ];
        let team: Reference = "reg.example/team/app:1".parse().unwrap();
        let teamx: Reference = "reg.example/teamx/app:1".parse().unwrap();
        assert_eq!(rule_for(&rules, &team).unwrap().prefix, "reg.example/team");
        assert_eq!(rule_for(&rules, &teamx).unwrap().prefix, "reg.example");
        let h = hosts_for(&team, &settings(rules));
        assert_eq!(h.len(), 1);
        assert_eq!(
            (h[0].api_host.as_str(), h[0].repository.as_str()),
            ("internal.example", "mirrored/team/app")
        );
    }

    #[test]
    fn a_wildcard_prefix_covers_subdomains_with_a_port() {
        let rules = vec![Rule {
            prefix: "*.example.com".into(),
            blocked: true,
            ..Default::default()
        }];
        let r: Reference = "a.example.com:5000/team/app:1".parse().unwrap();
        assert!(rule_for(&rules, &r).is_some());
        let other: Reference = "example.com.evil:5000/x:1".parse().unwrap();
        assert!(rule_for(&rules, &other).is_none());
    }

    #[test]
    fn mirror_flags() {
        let (reg, m) = parse_mirror_flag("docker.io=http://127.0.0.1:5000").unwrap();
        assert_eq!(
            (reg.as_str(), m.location.as_str(), m.insecure),
            ("docker.io", "127.0.0.1:5000", true)
        );
        let (_, m) = parse_mirror_flag("quay.io=https://m.example/quay/").unwrap();
        assert_eq!((m.location.as_str(), m.insecure), ("m.example/quay", false));
        assert!(parse_mirror_flag("nothing").is_err());
        assert!(parse_mirror_flag("docker.io=").is_err());
    }

    #[test]
    fn insecure_rules_and_mirrors_name_their_hosts() {
        let rules = vec![
            Rule {
                prefix: "lab.corp:5000/team".into(),
                insecure: true,
                ..Default::default()
            },
            Rule {
                prefix: "old.corp".into(),
                location: Some("new.corp:8443/moved".into()),
                insecure: true,
                ..Default::default()
            },
            Rule {
                prefix: "*.dev.corp".into(),
                insecure: true,
                ..Default::default()
            },
            Rule {
                prefix: "docker.io".into(),
                mirrors: vec![
                    Mirror {
                        insecure: true,
                        ..mirror("cache.corp:5000/hub")
                    },
                    mirror("safe.corp"),
                ],
                ..Default::default()
            },
        ];
        assert_eq!(
            unverified_hosts(&rules, &["a.dev.corp:5000", "dev.corp", "docker.io"]),
            [
                "a.dev.corp:5000",
                "cache.corp:5000",
                "lab.corp:5000",
                "new.corp:8443"
            ]
        );
        let r: Reference = "lab.corp:5000/team/app:1".parse().unwrap();
        let hosts = hosts_for(&r, &settings(rules.clone()));
        assert!(hosts.last().unwrap().allow_http);
        let r: Reference = "lab.corp:5000/other/app:1".parse().unwrap();
        assert!(!hosts_for(&r, &settings(rules)).last().unwrap().allow_http);
    }
}
