//! One walk over the store: from each entry of `index.json`, read as raw JSON so that an entry
//! another tool wrote in a form we do not model (a sha512 digest, which the image spec
//! registers; a `platform` without `architecture`) is still seen, through indexes and
//! manifests to configs and layers. What the walk cannot read is a [`Problem`] of that entry,
//! never a silent skip: `gc`, the destructive user, stops on any (it fails closed), and
//! `images` lists the entry with a warning (SPEC: Commands).
//!
//! The walk follows every JSON field that holds descriptors (`manifests`, `config`, `layers`,
//! `blobs`, `subject`; schema1's `fsLayers`), whatever the media type says, so that no blob an
//! entry names can be taken for garbage because its manifest is of a kind we do not pull.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::str::FromStr;

use serde_json::Value;

use super::{io_err, Store, StoreError, REF_NAME, SOURCE_DIGEST};
use crate::digest::Digest;
use crate::manifest::MAX_MANIFEST;

/// A blob's name in the layout, `<algorithm>:<encoded>`, checked against the image spec's
/// digest grammar (`descriptor.md`): algorithm components `[a-z0-9]+` joined by `+._-`, encoded
/// `[a-zA-Z0-9=_-]+`. Neither part can hold `/` or be `..`, so it is always safe as a path
/// under `blobs/`. Unlike [`Digest`] it names algorithms we cannot verify: the store may hold
/// what another tool wrote, and the walk must see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobName {
    algorithm: String,
    encoded: String,
}

impl BlobName {
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    pub fn encoded(&self) -> &str {
        &self.encoded
    }

    /// The digest, when it is one we can verify.
    pub fn digest(&self) -> Option<Digest> {
        self.to_string().parse().ok()
    }

    /// Is this the form the image spec registers for its algorithm (sha256: 64, sha512: 128
    /// lowercase hex digits)? gc deletes only files of such names: anything else under
    /// `blobs/` is not known to be a blob, and is left alone.
    pub fn is_registered_form(&self) -> bool {
        let hex_len = match self.algorithm.as_str() {
            "sha256" => 64,
            "sha512" => 128,
            _ => return false,
        };
        self.encoded.len() == hex_len
            && self
                .encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// Is `s` a valid algorithm part (a directory name under `blobs/`)?
    pub fn valid_algorithm(s: &str) -> bool {
        !s.is_empty()
            && s.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
    }

    /// Is `s` a valid encoded part (a file name under `blobs/<algorithm>/`)?
    pub fn valid_encoded(s: &str) -> bool {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
    }
}

impl FromStr for BlobName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algorithm, encoded) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not <algorithm>:<encoded>"))?;
        if !BlobName::valid_algorithm(algorithm) || !BlobName::valid_encoded(encoded) {
            return Err(format!("{s:?} is not a valid digest"));
        }
        Ok(BlobName {
            algorithm: algorithm.to_string(),
            encoded: encoded.to_string(),
        })
    }
}

impl From<&Digest> for BlobName {
    fn from(d: &Digest) -> Self {
        BlobName {
            algorithm: d.algorithm().as_str().to_string(),
            encoded: d.hex().to_string(),
        }
    }
}

impl fmt::Display for BlobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.encoded)
    }
}

impl serde::Serialize for BlobName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One entry of `index.json`, as written.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// Its place in the `manifests` array, from 0.
    pub position: usize,
    pub value: Value,
}

impl RawEntry {
    /// `org.opencontainers.image.ref.name`, when the entry has one.
    pub fn name(&self) -> Option<&str> {
        self.value["annotations"][REF_NAME].as_str()
    }

    /// How messages name the entry: its reference name, else its place in the index.
    pub fn label(&self) -> String {
        match self.name() {
            Some(n) => n.to_string(),
            None => format!("#{} (no name)", self.position),
        }
    }

    pub fn media_type(&self) -> Option<&str> {
        self.value["mediaType"].as_str()
    }

    pub fn digest(&self) -> Result<BlobName, String> {
        match self.value["digest"].as_str() {
            Some(d) => d.parse(),
            None => Err("no digest".to_string()),
        }
    }

    pub fn size(&self) -> Option<u64> {
        self.value["size"].as_u64()
    }
}

/// Something an entry names that the walk could not read. The entry is still listed, and
/// everything it could reach is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The blob concerned, when the problem is with a blob rather than the entry itself.
    pub blob: Option<String>,
    pub kind: Unreadable,
}

/// Why the walk could not read something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("the entry's digest: {0}")]
    EntryDigest(String),
    #[error("annotation {SOURCE_DIGEST}: {0}")]
    SourceDigest(String),
    #[error("larger than {MAX_MANIFEST} bytes, too large for a manifest")]
    TooLarge,
    #[error("the file does not match its digest (damaged)")]
    Damaged,
    #[error("not a JSON object")]
    NotObject,
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("\"{field}\": {reason}")]
    BadDescriptors { field: &'static str, reason: String },
    #[error("neither a manifest nor an index (nothing in it names a blob)")]
    NamesNothing,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.blob {
            Some(b) => write!(f, "{b}: {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl serde::Serialize for Problem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Problem", 2)?;
        st.serialize_field("blob", &self.blob)?;
        st.serialize_field("reason", &self.kind.to_string())?;
        st.end()
    }
}

/// An image manifest the walk met, with the platform its parent index (or the entry) gave it.
#[derive(Debug, Clone)]
pub struct ImageNode {
    pub manifest: BlobName,
    pub config: Option<BlobName>,
    /// The layers, base first, as the manifest lists them (descriptors as written).
    pub layers: Vec<Value>,
    pub platform: Option<Value>,
}

/// Everything one entry reaches.
#[derive(Debug, Default)]
pub struct Reach {
    /// Every blob named on the way (present or not), with the size its descriptor gave; `None`
    /// for what only the served manifest (`dev.imagec.source.digest`) names, which is kept but
    /// not counted as the entry's.
    pub blobs: BTreeMap<BlobName, Option<u64>>,
    /// Manifests and indexes named but absent from the store (a sparse layout, or another
    /// platform of a list): there is nothing of them to keep, so they are no problem for gc.
    pub missing: BTreeSet<BlobName>,
    pub images: Vec<ImageNode>,
    pub problems: Vec<Problem>,
}

impl Reach {
    /// A blob named on the way, with the size its descriptor gives when it gives one (schema1's
    /// `fsLayers` do not; a descriptor met later fills it in).
    fn learn(&mut self, blob: &BlobName, size: Option<u64>) {
        let known = self.blobs.entry(blob.clone()).or_insert(None);
        if known.is_none() {
            *known = size;
        }
    }
}

/// How far to follow a blob.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Follow {
    /// A manifest or index an entry uses: follow it to everything it names.
    All,
    /// The manifest the registry served for an entry (`dev.imagec.source.digest`): keep it,
    /// and for a list or index keep the child manifests it names (the served bytes of the
    /// platform pulled), but not their layers: the entry's own manifest reaches the layers it
    /// uses, and a list's other platforms are not part of a single-platform pull.
    Source,
    /// Keep the blob; do not open it.
    Blob,
}

impl Store {
    /// The entries of `index.json` as written, every one of them.
    pub fn raw_entries(&self) -> Result<Vec<RawEntry>, StoreError> {
        let index = self.read_index()?;
        Ok(match &index["manifests"] {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(position, v)| RawEntry {
                    position,
                    value: v.clone(),
                })
                .collect(),
            _ => vec![],
        })
    }

    /// The path of a blob named by the layout's digest grammar.
    pub fn blob_path_of(&self, b: &BlobName) -> PathBuf {
        self.root
            .join("blobs")
            .join(b.algorithm())
            .join(b.encoded())
    }

    /// Every blob file under `blobs/<algorithm>/`, for every algorithm directory, with its size
    /// (files whose names are not digests in a registered form are not known to be blobs and
    /// are left alone).
    pub fn all_blob_files(&self) -> Result<Vec<(BlobName, u64)>, StoreError> {
        let dir = self.root.join("blobs");
        let mut out = Vec::new();
        for alg in std::fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let alg = alg.map_err(io_err("listing", &dir))?;
            let alg_name = alg.file_name().to_string_lossy().to_string();
            if !BlobName::valid_algorithm(&alg_name) || !alg.path().is_dir() {
                continue;
            }
            let sub = alg.path();
            for e in std::fs::read_dir(&sub).map_err(io_err("listing", &sub))? {
                let e = e.map_err(io_err("listing", &sub))?;
                let Ok(name) =
                    format!("{alg_name}:{}", e.file_name().to_string_lossy()).parse::<BlobName>()
                else {
                    continue;
                };
                if !name.is_registered_form() {
                    continue;
                }
                let meta = e.metadata().map_err(io_err("reading", &e.path()))?;
                if meta.is_file() {
                    out.push((name, meta.len()));
                }
            }
        }
        Ok(out)
    }

    /// Walk one entry. Reading errors of the filesystem (other than a missing blob) stop the
    /// walk; what is wrong with the content is a [`Problem`] of the entry.
    pub fn reach(&self, entry: &RawEntry) -> Result<Reach, StoreError> {
        let mut reach = Reach::default();
        // Breadth first, in the order documents name things: platforms come out as listed.
        let mut todo: VecDeque<(BlobName, Follow, Option<Value>)> = VecDeque::new();
        match entry.digest() {
            Ok(d) => {
                reach.learn(&d, entry.size());
                todo.push_back((d, Follow::All, entry.value.get("platform").cloned()));
            }
            Err(reason) => reach.problems.push(Problem {
                blob: None,
                kind: Unreadable::EntryDigest(reason),
            }),
        }
        if let Some(source) = entry.value["annotations"][SOURCE_DIGEST].as_str() {
            match source.parse::<BlobName>() {
                Ok(d) => {
                    reach.learn(&d, None);
                    todo.push_back((d, Follow::Source, None));
                }
                Err(reason) => reach.problems.push(Problem {
                    blob: None,
                    kind: Unreadable::SourceDigest(reason),
                }),
            }
        }
        let mut opened = BTreeSet::new();
        while let Some((blob, follow, platform)) = todo.pop_front() {
            if follow == Follow::Blob || !opened.insert((blob.clone(), follow)) {
                continue;
            }
            let doc = match self.read_document(&blob)? {
                Document::Json(v) => v,
                Document::Missing => {
                    reach.missing.insert(blob);
                    continue;
                }
                Document::Bad(kind) => {
                    reach.problems.push(Problem {
                        blob: Some(blob.to_string()),
                        kind,
                    });
                    continue;
                }
            };
            let mut named = 0;
            let mut bad = Vec::new();
            let follow_from = follow;
            // Children of an index: manifests (with their platform).
            let child_follow = if follow == Follow::All {
                Follow::All
            } else {
                Follow::Blob
            };
            for (field, follow) in [
                ("manifests", child_follow),
                ("config", Follow::Blob),
                ("layers", Follow::Blob),
                ("blobs", Follow::Blob),
                ("subject", Follow::Blob),
            ] {
                let descriptors: Vec<&Value> = match &doc[field] {
                    Value::Null => continue,
                    Value::Array(a) => a.iter().collect(),
                    v @ Value::Object(_) => vec![v],
                    _ => {
                        bad.push(Unreadable::BadDescriptors {
                            field,
                            reason: "neither a descriptor nor a list".into(),
                        });
                        continue;
                    }
                };
                named += 1;
                for d in descriptors {
                    match d["digest"].as_str().map(str::parse::<BlobName>) {
                        Some(Ok(name)) => {
                            // What only the served manifest names is kept, not counted:
                            // `images` counts what the entry itself uses.
                            let size = d["size"].as_u64().filter(|_| follow_from == Follow::All);
                            reach.learn(&name, size);
                            todo.push_back((name, follow, d.get("platform").cloned()));
                        }
                        Some(Err(reason)) => bad.push(Unreadable::BadDescriptors { field, reason }),
                        None => bad.push(Unreadable::BadDescriptors {
                            field,
                            reason: "a descriptor without digest".into(),
                        }),
                    }
                }
            }
            if let Value::Array(fs_layers) = &doc["fsLayers"] {
                named += 1;
                for l in fs_layers {
                    match l["blobSum"].as_str().map(str::parse::<BlobName>) {
                        Some(Ok(name)) => {
                            reach.learn(&name, None);
                        }
                        _ => bad.push(Unreadable::BadDescriptors {
                            field: "fsLayers",
                            reason: "an entry without a valid blobSum".into(),
                        }),
                    }
                }
            }
            if named == 0 {
                bad.push(Unreadable::NamesNothing);
            }
            if !doc["config"].is_null() && follow == Follow::All {
                reach.images.push(ImageNode {
                    manifest: blob.clone(),
                    config: doc["config"]["digest"]
                        .as_str()
                        .and_then(|d| d.parse().ok()),
                    layers: doc["layers"].as_array().cloned().unwrap_or_default(),
                    platform,
                });
            }
            reach.problems.extend(bad.into_iter().map(|kind| Problem {
                blob: Some(blob.to_string()),
                kind,
            }));
        }
        Ok(reach)
    }

    /// A manifest-sized JSON document, verified when its algorithm is one we can check.
    pub(crate) fn read_json(&self, blob: &BlobName) -> Result<Option<Value>, StoreError> {
        match self.read_document(blob)? {
            Document::Json(v) => Ok(Some(v)),
            _ => Ok(None),
        }
    }

    fn read_document(&self, blob: &BlobName) -> Result<Document, StoreError> {
        let path = self.blob_path_of(blob);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Document::Missing),
            Err(e) => return Err(io_err("opening", &path)(e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err("reading", &path))?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Ok(Document::Bad(Unreadable::TooLarge));
        }
        if let Some(d) = blob.digest() {
            if Digest::sha256_of(&bytes) != d {
                return Ok(Document::Bad(Unreadable::Damaged));
            }
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v @ Value::Object(_)) => Ok(Document::Json(v)),
            Ok(_) => Ok(Document::Bad(Unreadable::NotObject)),
            Err(e) => Ok(Document::Bad(Unreadable::NotJson(e.to_string()))),
        }
    }
}

/// What `images` shows of one entry: what could be read, and what could not.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EntrySummary {
    pub reference: Option<String>,
    pub digest: Option<String>,
    pub media_type: Option<String>,
    pub source_digest: Option<String>,
    pub platforms: Vec<String>,
    /// Bytes of the manifests, configs and layers the entry reaches, each counted once.
    pub size: u64,
    pub warnings: Vec<String>,
}

impl Store {
    /// Summarise one entry from the walk.
    pub fn summary(&self, entry: &RawEntry) -> Result<EntrySummary, StoreError> {
        let reach = self.reach(entry)?;
        let mut warnings: Vec<String> = reach.problems.iter().map(|p| p.to_string()).collect();
        if let Ok(d) = entry.digest() {
            if reach.missing.contains(&d) {
                warnings.push(format!("{d}: the entry's manifest is not in the store"));
            }
        }
        let source = entry.value["annotations"][SOURCE_DIGEST]
            .as_str()
            .map(str::to_string);
        let size = reach
            .blobs
            .iter()
            .filter(|(b, _)| !reach.missing.contains(*b))
            .filter_map(|(_, size)| *size)
            .fold(0u64, u64::saturating_add);
        let mut platforms = Vec::new();
        for img in &reach.images {
            let given = img.platform.as_ref().and_then(platform_label);
            let complete = given.as_deref().is_some_and(|p| !p.contains('?'));
            let from_config = if complete {
                None
            } else {
                match &img.config {
                    Some(c) => self.read_json(c)?.as_ref().and_then(platform_label),
                    None => None,
                }
            };
            platforms.extend(from_config.or(given));
        }
        Ok(EntrySummary {
            reference: entry.name().map(str::to_string),
            digest: entry.value["digest"].as_str().map(str::to_string),
            media_type: entry.media_type().map(str::to_string),
            source_digest: source,
            platforms,
            size,
            warnings,
        })
    }
}

enum Document {
    Json(Value),
    Missing,
    Bad(Unreadable),
}

/// `os/architecture[/variant]` from a raw platform object, with `?` for a missing part.
pub fn platform_label(p: &Value) -> Option<String> {
    let os = p["os"].as_str();
    let arch = p["architecture"].as_str();
    if os.is_none() && arch.is_none() {
        return None;
    }
    let mut s = format!("{}/{}", os.unwrap_or("?"), arch.unwrap_or("?"));
    if let Some(v) = p["variant"].as_str().filter(|v| !v.is_empty()) {
        s.push('/');
        s.push_str(v);
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_names_follow_the_digest_grammar() {
        for ok in [
            "sha256:abc",
            "sha512:0123abcdef",
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
            "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
        ] {
            assert!(ok.parse::<BlobName>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "sha256",
            ":abc",
            "sha256:",
            "SHA256:abc",
            "sha256:a/b",
            "../x:abc",
            "sha256:..",
            "sha256:.",
            "a..b:c",
            "+a:b",
            "a:b c",
        ] {
            assert!(bad.parse::<BlobName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn gc_takes_only_registered_digest_forms_for_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path()).unwrap();
        let d = Digest::sha256_of(b"x");
        std::fs::write(s.blob_path(&d), b"x").unwrap();
        std::fs::write(dir.path().join("blobs/sha256/README"), b"not a blob").unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha512")).unwrap();
        std::fs::write(dir.path().join("blobs/sha512").join("ab".repeat(64)), b"y").unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/blake9")).unwrap();
        std::fs::write(dir.path().join("blobs/blake9/abcd"), b"z").unwrap();
        let mut names: Vec<String> = s
            .all_blob_files()
            .unwrap()
            .into_iter()
            .map(|(b, _)| b.to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![d.to_string(), format!("sha512:{}", "ab".repeat(64))]
        );
    }

    proptest::proptest! {
        #[test]
        fn a_blob_name_never_leaves_blobs_dir(s in "\\PC{0,40}") {
            if let Ok(b) = s.parse::<BlobName>() {
                let p = std::path::Path::new("blobs").join(b.algorithm()).join(b.encoded());
                proptest::prop_assert_eq!(p.components().count(), 3);
                proptest::prop_assert!(p.components().all(|c| matches!(c, std::path::Component::Normal(_))));
                proptest::prop_assert!(!b.encoded().contains('.') && !b.encoded().contains('/'));
            }
        }
    }
}
