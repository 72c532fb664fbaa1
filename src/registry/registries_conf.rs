//! containers' `registries.conf` (v2, what containers/image reads): `[[registry]]` tables with
//! `prefix`, `location`, `insecure`, `blocked`, `mirror-by-digest-only`, and their `[[registry.mirror]]`
//! entries (`location`, `insecure`, `pull-from-mirror`). Other tables (`[aliases]`,
//! `unqualified-search-registries`) are not imagec's business and are left alone.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::hosts::{Mirror, Rule};

#[derive(Debug, thiserror::Error)]
#[error("registries.conf {path}: {reason}")]
pub struct ConfError {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Deserialize, Default)]
struct File {
    #[serde(default)]
    registry: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Entry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<MirrorEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct MirrorEntry {
    location: String,
    #[serde(default)]
    insecure: bool,
    pull_from_mirror: Option<String>,
}

/// The rules of one file's text.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Rule>, ConfError> {
    let bad = |reason: String| ConfError {
        path: path.to_path_buf(),
        reason,
    };
    let file: File = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
    let mut rules = Vec::new();
    for e in file.registry {
        let prefix = e
            .prefix
            .clone()
            .or_else(|| e.location.clone())
            .ok_or_else(|| bad("a [[registry]] has neither prefix nor location".into()))?;
        let prefix = prefix.trim_end_matches('/').to_string();
        let place = |what: &str, v: &str| -> Result<(), ConfError> {
            if v.is_empty() || v.contains("://") || v.starts_with('/') {
                return Err(bad(format!(
                    "{what} {v:?} is not HOST[:PORT][/PATH] (no scheme: use insecure = true for plain HTTP)"
                )));
            }
            Ok(())
        };
        place("prefix", &prefix)?;
        if let Some(l) = &e.location {
            place("location", l)?;
        }
        let location = e
            .location
            .map(|l| l.trim_end_matches('/').to_string())
            .filter(|l| *l != prefix);
        let mut mirrors = Vec::new();
        for m in e.mirror {
            place("mirror location", &m.location)?;
            let by_digest_only = match m.pull_from_mirror.as_deref() {
                None | Some("all") => e.mirror_by_digest_only,
                Some("digest-only") => true,
                // A tag-only mirror would also be asked for digests here: imagec has no such
                // split, and serving tags only from it would be a surprise; refuse it clearly.
                Some(other) => {
                    return Err(bad(format!(
                    "mirror {}: pull-from-mirror = {other:?} is not supported (all or digest-only)",
                    m.location
                )))
                }
            };
            mirrors.push(Mirror {
                configured: m.location.clone(),
                location: m.location.trim_end_matches('/').to_string(),
                insecure: m.insecure,
                by_digest_only,
            });
        }
        rules.push(Rule {
            prefix,
            location,
            insecure: e.insecure,
            blocked: e.blocked,
            mirrors,
        });
    }
    Ok(rules)
}

/// The rules from `files` in order; a later file's rule for the same prefix replaces an
/// earlier one (registries.conf.d drop-ins override the main file).
pub fn load(files: &[PathBuf]) -> Result<Vec<Rule>, ConfError> {
    let mut rules: Vec<Rule> = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|e| ConfError {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        for rule in parse(path, &text)? {
            rules.retain(|r| r.prefix != rule.prefix);
            rules.push(rule);
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_podman_users_write() {
        let text = r#"
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "mirror.corp:5000"
insecure = true

[[registry.mirror]]
location = "spegel.local:30020"
pull-from-mirror = "digest-only"

[[registry]]
location = "quay.io/team"
mirror-by-digest-only = true
[[registry.mirror]]
location = "cache.corp/quay/team"

[[registry]]
prefix = "evil.example"
blocked = true

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
"#;
        let rules = parse(Path::new("r.conf"), text).unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].prefix, "docker.io");
        assert_eq!(rules[0].location, None);
        assert!(rules[0].mirrors[0].insecure && !rules[0].mirrors[0].by_digest_only);
        assert!(rules[0].mirrors[1].by_digest_only);
        assert_eq!(rules[1].prefix, "quay.io/team");
        assert!(rules[1].mirrors[0].by_digest_only);
        assert!(rules[2].blocked);
    }

    #[test]
    fn a_broken_file_is_an_error_naming_it() {
        let e = parse(Path::new("/etc/x.conf"), "[[registry]\n").unwrap_err();
        assert!(
            e.to_string().starts_with("registries.conf /etc/x.conf:"),
            "{e}"
        );
        let e = parse(Path::new("x"), "[[registry]]\nblocked = true\n").unwrap_err();
        assert!(e.to_string().contains("neither prefix nor location"), "{e}");
        let e = parse(
            Path::new("x"),
            "[[registry]]\nprefix = \"a.example\"\n[[registry.mirror]]\nlocation = \"https://m.example\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("no scheme"), "{e}");
    }
}
