//! Platforms (`os/arch[/variant]`): parsing `--platform`, the host's platform, and matching
//! manifest-list / image-index entries.
//!
//! Registries and build tools spell the same platform several ways (`x86_64` and `amd64`,
//! `aarch64` and `arm64`, `armhf` and `arm/v7`, arm64 with or without `v8`), so both sides of a
//! comparison go through [`Platform::normalized`], which follows containerd's `platforms`
//! package. One deliberate difference: containerd drops arm64's `v8` variant, we spell it out
//! (`linux/arm64/v8`, as the host platform is shown), and a missing arm64 variant means `v8`.

use std::fmt;
use std::str::FromStr;

/// An OCI platform (image-index `platform` object); serde names follow the OCI spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// What `--platform` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformChoice {
    /// No `--platform`: the host's. An image made for one platform only is taken whatever it
    /// is (docker pulls it too, and warns when it runs).
    Host(Platform),
    /// `--platform os/arch[/variant]`: an image for another platform is not what was asked for.
    One(Platform),
    All,
}

impl PlatformChoice {
    /// The one platform wanted, if not all.
    pub fn wanted(&self) -> Option<&Platform> {
        match self {
            PlatformChoice::Host(p) | PlatformChoice::One(p) => Some(p),
            PlatformChoice::All => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid platform {input:?}: {reason}")]
pub struct PlatformError {
    pub input: String,
    pub reason: String,
}

impl Platform {
    /// A platform with just os, architecture and an optional variant, as written.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: architecture.to_string(),
            os: os.to_string(),
            os_version: None,
            os_features: None,
            variant: variant.map(str::to_string),
        }
    }

    /// The platform to pull for this machine, normalised (`linux/amd64`, `linux/arm64/v8`):
    /// its architecture, and the OS of the containers it runs. Only Windows runs containers of
    /// its own OS; everywhere else (macOS, the BSDs) containers run in a Linux VM, so the
    /// images to pull are Linux ones, as Docker Desktop pulls them.
    pub fn host() -> Platform {
        let little = cfg!(target_endian = "little");
        // Rust's names (`std::env::consts::ARCH`) to the GOARCH names image indexes use.
        let arch = match std::env::consts::ARCH {
            "x86" => "386",
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "loongarch64" => "loong64",
            "powerpc" => "ppc",
            "powerpc64" if little => "ppc64le",
            "powerpc64" => "ppc64",
            "mips" if little => "mipsle",
            "mips64" if little => "mips64le",
            other => other,
        };
        // 32-bit arm is taken as v7: the armv7 targets are what 32-bit arm Linux distributions
        // ship, and `normalized` gives bare `arm` v7 anyway (containerd does the same).
        let os = match std::env::consts::OS {
            "windows" => "windows",
            _ => "linux",
        };
        Platform::new(os, arch, None).normalized()
    }

    /// containerd's normalisation: x86_64 -> amd64, aarch64 -> arm64 (variant v8), armhf -> arm/v7...
    ///
    /// Everything is lowercased; os.version and os.features are kept as they are.
    pub fn normalized(&self) -> Platform {
        let os = match self.os.to_ascii_lowercase().as_str() {
            // Rust calls it macos, Go and image indexes darwin.
            "macos" => "darwin".to_string(),
            other => other.to_string(),
        };
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self
            .variant
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let (architecture, variant) = match arch.as_str() {
            // containerd drops the variant of i386 (there is no meaningful one).
            "i386" => ("386".to_string(), String::new()),
            "x86_64" | "x86-64" | "amd64" => {
                // v1 is the baseline every amd64 CPU meets, the same as no variant.
                let variant = if variant == "v1" {
                    String::new()
                } else {
                    variant
                };
                ("amd64".to_string(), variant)
            }
            "aarch64" | "arm64" => {
                let variant = match variant.as_str() {
                    "" | "8" | "v8" | "v8.0" => "v8".to_string(),
                    "9" | "9.0" | "v9.0" => "v9".to_string(),
                    _ => variant,
                };
                ("arm64".to_string(), variant)
            }
            // Debian's names for hard-float armv7 and soft-float armv6.
            "armhf" => ("arm".to_string(), "v7".to_string()),
            "armel" => ("arm".to_string(), "v6".to_string()),
            "arm" => {
                let variant = match variant.as_str() {
                    "" | "7" => "v7".to_string(),
                    "5" | "6" | "8" => format!("v{variant}"),
                    _ => variant,
                };
                ("arm".to_string(), variant)
            }
            _ => (arch, variant),
        };
        Platform {
            architecture,
            os,
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
            variant: (!variant.is_empty()).then_some(variant),
        }
    }

    /// Does an index entry with platform `candidate` satisfy this (wanted) platform?
    ///
    /// os, architecture and variant must be equal once both sides are normalised; os.version
    /// and os.features are not compared (a Windows build number is not something `--platform`
    /// can express).
    pub fn matches(&self, candidate: &Platform) -> bool {
        let want = self.normalized();
        let have = candidate.normalized();
        want.os == have.os && want.architecture == have.architecture && want.variant == have.variant
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    /// `os/arch[/variant]`, kept as written (call [`Platform::normalized`] to compare).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| PlatformError {
            input: s.to_string(),
            reason,
        };
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(error(format!(
                "expected os/arch or os/arch/variant (like linux/amd64 or linux/arm/v7), \
                 got {} part(s)",
                parts.len()
            )));
        }
        for (part, what) in parts.iter().zip(["os", "architecture", "variant"]) {
            if part.is_empty() {
                return Err(error(format!("the {what} is empty")));
            }
            // containerd accepts `[A-Za-z0-9_.-]+` for each part.
            if let Some(c) = part
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            {
                return Err(error(format!(
                    "the {what} {part:?} contains {c:?}; only letters, digits, '_', '.' and '-' are allowed"
                )));
            }
        }
        Ok(Platform::new(parts[0], parts[1], parts.get(2).copied()))
    }
}

/// `os/arch[/variant]`.
impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match self.variant.as_deref() {
            Some(variant) if !variant.is_empty() => write!(f, "/{variant}"),
            _ => Ok(()),
        }
    }
}

impl FromStr for PlatformChoice {
    type Err = PlatformError;
    /// `all` (any case) or one platform.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("all") {
            Ok(PlatformChoice::All)
        } else {
            s.parse().map(PlatformChoice::One)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_displays() {
        assert_eq!(p("linux/amd64"), Platform::new("linux", "amd64", None));
        assert_eq!(p("linux/arm/v7"), Platform::new("linux", "arm", Some("v7")));
        for s in [
            "linux/amd64",
            "linux/arm64/v8",
            "windows/amd64",
            "Linux/X86_64",
        ] {
            assert_eq!(p(s).to_string(), s, "kept as written");
        }
        assert_eq!("all".parse::<PlatformChoice>(), Ok(PlatformChoice::All));
        assert_eq!("ALL".parse::<PlatformChoice>(), Ok(PlatformChoice::All));
        assert_eq!(
            "linux/386".parse::<PlatformChoice>(),
            Ok(PlatformChoice::One(Platform::new("linux", "386", None)))
        );
    }

    #[test]
    fn rejects_malformed_platforms() {
        for (bad, needle) in [
            ("", "got 1 part"),
            ("linux", "got 1 part"),
            ("amd64", "got 1 part"),
            ("linux/arm/v7/x", "got 4 part"),
            ("/amd64", "os is empty"),
            ("linux/", "architecture is empty"),
            ("linux//v7", "architecture is empty"),
            ("linux/arm/", "variant is empty"),
            ("linux/amd 64", "contains ' '"),
            ("linux:amd64", "got 1 part"),
            ("linux/amd64,linux/arm64", "contains ','"),
        ] {
            let err = bad.parse::<Platform>().unwrap_err();
            assert_eq!(err.input, bad);
            assert!(err.reason.contains(needle), "{bad:?}: {}", err.reason);
            assert!(bad.parse::<PlatformChoice>().is_err());
        }
    }

    #[test]
    fn normalises_like_containerd() {
        for (input, want) in [
            ("linux/x86_64", "linux/amd64"),
            ("linux/x86-64", "linux/amd64"),
            ("linux/AMD64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("linux/aarch64", "linux/arm64/v8"),
            ("linux/arm64", "linux/arm64/v8"),
            ("linux/arm64/8", "linux/arm64/v8"),
            ("linux/arm64/v8.0", "linux/arm64/v8"),
            ("linux/arm64/9", "linux/arm64/v9"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/7", "linux/arm/v7"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/arm/v5", "linux/arm/v5"),
            ("linux/i386", "linux/386"),
            ("linux/386", "linux/386"),
            ("Linux/amd64", "linux/amd64"),
            ("macos/arm64", "darwin/arm64/v8"),
            ("linux/s390x", "linux/s390x"),
            ("linux/ppc64le", "linux/ppc64le"),
        ] {
            assert_eq!(p(input).normalized().to_string(), want, "{input}");
        }
    }

    #[test]
    fn normalisation_keeps_os_version_and_features() {
        let mut win = Platform::new("Windows", "AMD64", None);
        win.os_version = Some("10.0.17763.5820".into());
        win.os_features = Some(vec!["win32k".into()]);
        let n = win.normalized();
        assert_eq!(n.os, "windows");
        assert_eq!(n.os_version.as_deref(), Some("10.0.17763.5820"));
        assert_eq!(n.os_features, Some(vec!["win32k".to_string()]));
    }

    #[test]
    fn matching() {
        let yes = [
            ("linux/amd64", "linux/amd64"),
            ("linux/amd64", "linux/x86_64"),
            ("linux/arm64", "linux/arm64/v8"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/arm64/v8", "linux/aarch64"),
            ("linux/arm/v7", "linux/arm"),
            ("linux/arm/v7", "linux/armhf"),
            ("linux/arm/v6", "linux/armel"),
            ("linux/386", "linux/i386"),
        ];
        for (want, have) in yes {
            assert!(p(want).matches(&p(have)), "{want} should match {have}");
        }
        let no = [
            ("linux/amd64", "linux/arm64"),
            ("linux/amd64", "windows/amd64"),
            ("linux/arm/v7", "linux/arm/v6"),
            ("linux/arm64", "linux/arm64/v9"),
            ("linux/arm", "linux/arm64"),
            ("linux/amd64", "linux/amd64/v3"),
        ];
        for (want, have) in no {
            assert!(!p(want).matches(&p(have)), "{want} should not match {have}");
        }
        // os.version / os.features play no part.
        let mut win = Platform::new("windows", "amd64", None);
        win.os_version = Some("10.0.20348.2527".into());
        win.os_features = Some(vec!["win32k".into()]);
        assert!(p("windows/amd64").matches(&win));
    }

    #[test]
    fn host_is_normalised() {
        let host = Platform::host();
        assert_eq!(host, host.normalized());
        assert!(host.matches(&host));
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        assert_eq!(host.to_string(), "linux/amd64");
        #[cfg(all(target_os = "linux", target_arch = "aarch64"))]
        assert_eq!(host.to_string(), "linux/arm64/v8");
    }

    #[test]
    fn serde_uses_oci_field_names() {
        let json = r#"{"architecture":"amd64","os":"windows","os.version":"10.0.17763","os.features":["win32k"]}"#;
        let p: Platform = serde_json::from_str(json).unwrap();
        assert_eq!(p.os_version.as_deref(), Some("10.0.17763"));
        assert_eq!(serde_json::to_string(&p).unwrap(), json);
        let arm: Platform =
            serde_json::from_str(r#"{"architecture":"arm","os":"linux","variant":"v7"}"#).unwrap();
        assert_eq!(arm.to_string(), "linux/arm/v7");
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            if let Ok(p) = s.parse::<Platform>() {
                prop_assert_eq!(p.to_string().parse::<Platform>(), Ok(p.clone()));
                let n = p.normalized();
                prop_assert_eq!(n.normalized(), n.clone(), "normalisation is idempotent");
                prop_assert!(p.matches(&n) && n.matches(&p));
            }
            let _ = s.parse::<PlatformChoice>();
        }

        #[test]
        fn platform_like_strings_round_trip(s in "[a-zA-Z0-9_.-]{1,8}/[a-zA-Z0-9_.-]{1,8}(/[a-zA-Z0-9_.-]{1,4})?") {
            let p: Platform = s.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(p.to_string(), s);
            let n = p.normalized();
            prop_assert_eq!(n.normalized(), n);
        }
    }
}
