//! What each layer adds, changes and deletes over the layers below it, and the bytes it ships
//! that a later layer hides (SPEC: layers --files). A pure computation over tar headers, base
//! layer first: no file is read or written.
//!
//! The view of the image after each layer is a map of paths to who put them there. A layer's
//! whiteouts apply to the layers below it only (image-spec `layer.md`), whatever their order in
//! the tar, so they are applied first, then its entries.

use std::collections::BTreeMap;

use serde::Serialize;

use super::tar::{Header, Kind};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Modified,
    Deleted,
    Opaque,
}

impl Change {
    pub fn letter(self) -> char {
        match self {
            Change::Added => 'A',
            Change::Modified => 'M',
            Change::Deleted => 'D',
            Change::Opaque => 'O',
        }
    }
}

/// One line of a layer's listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    pub change: Change,
}

/// What one layer does, and (once every layer is in) what of it is never seen.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LayerChanges {
    pub files: Vec<FileChange>,
    pub wasted_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    kind: Kind,
    size: u64,
    layer: usize,
}

/// Feed the layers base first with [`Changes::layer`]; [`Changes::finish`] gives each layer's
/// listing and wasted bytes.
#[derive(Default)]
pub struct Changes {
    view: BTreeMap<String, Node>,
    layers: Vec<LayerChanges>,
}

/// A path as listed: relative, without `./`, `/`, `.` components or a trailing slash; `..`
/// taken back inside the root (as containerd resolves names). `None` for the root itself.
pub fn clean_path(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut parts: Vec<&str> = Vec::new();
    for c in text.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

impl Changes {
    pub fn new() -> Changes {
        Changes::default()
    }

    /// One layer's headers, in archive order.
    pub fn layer(&mut self, headers: &[Header]) {
        let index = self.layers.len();
        self.layers.push(LayerChanges::default());
        let mut files = Vec::new();
        let mut entries = Vec::new();
        for h in headers {
            let Some(path) = clean_path(&h.path) else {
                continue; // the root directory itself
            };
            let (parent, name) = match path.rsplit_once('/') {
                Some((p, n)) => (Some(p), n),
                None => (None, path.as_str()),
            };
            if name == OPAQUE {
                let dir = parent.unwrap_or("").to_string();
                self.remove_below(&dir, index, false);
                files.push(FileChange {
                    path: dir,
                    kind: Kind::Dir.as_str(),
                    size: 0,
                    change: Change::Opaque,
                });
            } else if let Some(target) = name.strip_prefix(WHITEOUT) {
                let target = match parent {
                    Some(p) => format!("{p}/{target}"),
                    None => target.to_string(),
                };
                let kind = self.view.get(&target).map_or(Kind::File, |n| n.kind);
                self.remove_below(&target, index, true);
                files.push(FileChange {
                    path: target,
                    kind: kind.as_str(),
                    size: 0,
                    change: Change::Deleted,
                });
            } else {
                entries.push((path, h));
            }
        }
        for (path, h) in entries {
            let before = self.view.get(&path).copied();
            // A lower layer "had" the path also when it only made it a parent directory.
            let lower =
                before.is_some_and(|n| n.layer < index) || self.has_lower_below(&path, index);
            let change = if lower {
                Change::Modified
            } else {
                Change::Added
            };
            if let Some(old) = before {
                self.waste(old);
            }
            // A directory replaced by anything else takes what was under it.
            if h.kind != Kind::Dir {
                self.remove_below(&path, index, false);
            }
            self.view.insert(
                path.clone(),
                Node {
                    kind: h.kind,
                    size: h.size,
                    layer: index,
                },
            );
            files.push(FileChange {
                path,
                kind: h.kind.as_str(),
                size: h.size,
                change,
            });
        }
        self.layers[index].files = files;
    }

    /// Remove what lower layers put under `path` (and `path` itself with `itself`), charging
    /// their regular files to the layers that shipped them.
    fn remove_below(&mut self, path: &str, index: usize, itself: bool) {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut gone: Vec<String> = self
            .view
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, n)| n.layer < index)
            .map(|(k, _)| k.clone())
            .collect();
        if itself && self.view.get(path).is_some_and(|n| n.layer < index) {
            gone.push(path.to_string());
        }
        for k in gone {
            if let Some(n) = self.view.remove(&k) {
                self.waste(n);
            }
        }
    }

    fn has_lower_below(&self, path: &str, index: usize) -> bool {
        let prefix = format!("{path}/");
        self.view
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .any(|(_, n)| n.layer < index)
    }

    fn waste(&mut self, n: Node) {
        if n.kind == Kind::File {
            if let Some(l) = self.layers.get_mut(n.layer) {
                l.wasted_bytes += n.size;
            }
        }
    }

    pub fn finish(self) -> Vec<LayerChanges> {
        self.layers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(path: &str, kind: Kind, size: u64) -> Header {
        Header {
            path: path.as_bytes().to_vec(),
            kind,
            size,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            link: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
        }
    }

    fn listing(l: &LayerChanges) -> Vec<(String, char)> {
        l.files
            .iter()
            .map(|f| (f.path.clone(), f.change.letter()))
            .collect()
    }

    #[test]
    fn paths_are_cleaned_and_kept_inside_the_root() {
        assert_eq!(clean_path(b"./etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(clean_path(b"/usr/bin/").as_deref(), Some("usr/bin"));
        assert_eq!(clean_path(b"../../etc/x").as_deref(), Some("etc/x"));
        assert_eq!(clean_path(b"a/./b/../c").as_deref(), Some("a/c"));
        assert_eq!(clean_path(b"./"), None);
    }

    #[test]
    fn added_modified_deleted_opaque_and_the_bytes_nobody_sees() {
        let mut c = Changes::new();
        c.layer(&[
            h("etc/", Kind::Dir, 0),
            h("etc/config", Kind::File, 100),
            h("var/cache/", Kind::Dir, 0),
            h("var/cache/big", Kind::File, 1000),
            h("bin/tool", Kind::File, 10),
            h("opt/app/", Kind::Dir, 0),
            h("opt/app/lib", Kind::File, 50),
        ]);
        c.layer(&[
            h("etc/", Kind::Dir, 0),
            h("etc/config", Kind::File, 120), // replaces 100 bytes of layer 0
            h("var/cache/.wh.big", Kind::File, 0), // deletes 1000 bytes of layer 0
            h("opt/app/.wh..wh..opq", Kind::File, 0), // hides 50 bytes of layer 0
            h("opt/app/new", Kind::File, 7),
        ]);
        c.layer(&[
            h("var/cache/big", Kind::File, 5), // deleted, then put back: added
            h("bin", Kind::Symlink, 0),        // a directory's contents replaced by a link
        ]);
        let layers = c.finish();
        assert_eq!(
            listing(&layers[1]),
            [
                ("var/cache/big".to_string(), 'D'),
                ("opt/app".to_string(), 'O'),
                ("etc".to_string(), 'M'),
                ("etc/config".to_string(), 'M'),
                ("opt/app/new".to_string(), 'A'),
            ]
        );
        assert_eq!(
            listing(&layers[2]),
            [("var/cache/big".to_string(), 'A'), ("bin".to_string(), 'M')]
        );
        // Layer 0: config (100) replaced, big (1000) deleted, lib (50) hidden by the opaque
        // directory, bin/tool (10) gone with the directory a symlink replaced.
        assert_eq!(layers[0].wasted_bytes, 1160);
        assert_eq!(layers[1].wasted_bytes, 0);
        assert_eq!(layers[2].wasted_bytes, 0);
    }
}
