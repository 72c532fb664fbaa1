//! Applying layers to a directory (SPEC: unpack): entries through [`Root`] only, whiteouts
//! against the layers below, directory modes and times set last, and each layer's uncompressed
//! bytes hashed on the way and checked against its diff_id.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, Timespec, Timestamps};
use serde::Serialize;

use super::changes::clean_path;
use super::root::{remove_children, remove_entry, Root};
use super::tar::{Header, Kind, TarError, TarReader};
use crate::digest::{Digest, Hasher};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("entry {entry}: {reason}")]
    Refused { entry: String, reason: String },
    #[error("entry {entry}: {source}")]
    Io {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Tar(#[from] TarError),
    #[error("its uncompressed bytes are {actual}, but the config says {expected}")]
    DiffId { expected: String, actual: Digest },
}

fn refused(entry: &[u8], reason: impl Into<String>) -> ApplyError {
    ApplyError::Refused {
        entry: String::from_utf8_lossy(entry).into_owned(),
        reason: reason.into(),
    }
}

fn io_at(entry: &str) -> impl FnOnce(io::Error) -> ApplyError + '_ {
    move |source| ApplyError::Io {
        entry: entry.to_string(),
        source,
    }
}

/// An entry not created, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub layer: usize,
    pub path: String,
    pub reason: &'static str,
}

/// What an unpack did, over all layers.
#[derive(Debug, Default, Serialize)]
pub struct Applied {
    pub entries: u64,
    pub bytes: u64,
    pub skipped: Vec<Skipped>,
    /// Directory metadata, set when every layer is in (a later layer may write into a
    /// directory whose mode forbids it; a layer may list a directory before its contents).
    #[serde(skip)]
    dirs: HashMap<String, Header>,
}

/// Counts the tar's bytes into a hasher as they pass: the diff_id.
struct Hashing<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

pub struct Unpacker {
    root: Root,
    as_root: bool,
    pub applied: Applied,
}

impl Unpacker {
    pub fn new(root: Root) -> Unpacker {
        Unpacker {
            root,
            as_root: rustix::process::geteuid().is_root(),
            applied: Applied::default(),
        }
    }

    /// Apply one layer's tar (already decompressed), checking its diff_id when known.
    pub fn layer(
        &mut self,
        index: usize,
        tar: impl Read,
        diff_id: Option<&str>,
    ) -> Result<(), ApplyError> {
        let mut reader = TarReader::new(Hashing {
            inner: tar,
            hasher: Hasher::new(),
        });
        // Paths this layer wrote: its own whiteouts and opaque markers do not remove them.
        let mut written: HashSet<String> = HashSet::new();
        while let Some(h) = reader.next_header()? {
            self.entry(index, &mut reader, &h, &mut written)?;
        }
        let mut rest = reader.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(TarError::from)?;
        let actual = rest.hasher.finish();
        if let Some(expected) = diff_id {
            if actual.to_string() != expected {
                return Err(ApplyError::DiffId {
                    expected: expected.to_string(),
                    actual,
                });
            }
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        index: usize,
        reader: &mut TarReader<R>,
        h: &Header,
        written: &mut HashSet<String>,
    ) -> Result<(), ApplyError> {
        let Some(path) = clean_path(&h.path) else {
            // The root itself (`./`): a directory, or an attack (umoci CVE-2021-29136).
            if h.kind != Kind::Dir {
                return Err(refused(&h.path, "the root of the image is not a directory"));
            }
            self.applied.dirs.insert(String::new(), h.clone());
            return Ok(());
        };
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if name == OPAQUE {
            let dir = self.root.dir(parent, true).map_err(io_at(&path))?;
            let prefix = if parent.is_empty() {
                String::new()
            } else {
                format!("{parent}/")
            };
            remove_children(&dir, |child| !written.contains(&format!("{prefix}{child}")))
                .map_err(io_at(&path))?;
            return Ok(());
        }
        if let Some(target) = name.strip_prefix(WHITEOUT) {
            // `.wh..` and `.wh...` would name the directory itself or its parent.
            if target.is_empty() || target == "." || target == ".." {
                return Err(refused(
                    &h.path,
                    "a whiteout that names no file in its directory",
                ));
            }
            let full = if parent.is_empty() {
                target.to_string()
            } else {
                format!("{parent}/{target}")
            };
            if !written.contains(&full) {
                // Resolved inside the root: a whiteout under a symlink removes inside DIR only.
                if let Ok(dir) = self.root.dir(parent, false) {
                    remove_entry(&dir, target).map_err(io_at(&path))?;
                }
            }
            return Ok(());
        }
        // The path and its parents (made for it if the layer did not list them).
        let mut at = path.as_str();
        while written.insert(at.to_string()) {
            match at.rsplit_once('/') {
                Some((p, _)) => at = p,
                None => break,
            }
        }
        self.applied.entries += 1;
        let (dir, name) = self.root.parent(&path).map_err(io_at(&path))?;
        match h.kind {
            Kind::Dir => {
                if Root::kind_at(&dir, name).map_err(io_at(&path))? != Some(FileType::Directory) {
                    remove_entry(&dir, name).map_err(io_at(&path))?;
                    rfs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| io_at(&path)(e.into()))?;
                }
                self.applied.dirs.insert(path.clone(), h.clone());
            }
            Kind::File => {
                let mut file = Root::create_file(&dir, name).map_err(io_at(&path))?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = reader.read_body(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n]).map_err(io_at(&path))?;
                    self.applied.bytes += n as u64;
                }
                self.owner_and_mode(&file, h).map_err(io_at(&path))?;
                rfs::futimens(&file, &times(h.mtime)).map_err(|e| io_at(&path)(e.into()))?;
            }
            Kind::Symlink => {
                remove_entry(&dir, name).map_err(io_at(&path))?;
                rfs::symlinkat(h.link.as_slice(), &dir, name)
                    .map_err(|e| io_at(&path)(e.into()))?;
                self.owner_and_time_at(&dir, name, h);
            }
            Kind::Hardlink => {
                // The target is a path in the image, resolved inside the root; its last
                // component is linked as it is (a symlink stays a symlink: CVE-2021-32760).
                let target = clean_path(&h.link)
                    .ok_or_else(|| refused(&h.path, "a hardlink to the root directory"))?;
                let (tparent, tname) = target.rsplit_once('/').unwrap_or(("", target.as_str()));
                let tdir = self.root.dir(tparent, false).map_err(|_| {
                    refused(
                        &h.path,
                        format!("its hardlink target {target} is not in the image"),
                    )
                })?;
                match Root::kind_at(&tdir, tname).map_err(io_at(&path))? {
                    None => {
                        return Err(refused(
                            &h.path,
                            format!("its hardlink target {target} is not in the image"),
                        ))
                    }
                    Some(FileType::Directory) => {
                        return Err(refused(&h.path, "a hardlink to a directory"))
                    }
                    Some(_) => {}
                }
                if target != path {
                    remove_entry(&dir, name).map_err(io_at(&path))?;
                    rfs::linkat(&tdir, tname, &dir, name, AtFlags::empty())
                        .map_err(|e| io_at(&path)(e.into()))?;
                }
            }
            Kind::Fifo | Kind::Char | Kind::Block => {
                if h.kind != Kind::Fifo && !self.as_root {
                    self.applied.entries -= 1;
                    self.applied.skipped.push(Skipped {
                        layer: index,
                        path,
                        reason: "a device node needs root",
                    });
                    return Ok(());
                }
                remove_entry(&dir, name).map_err(io_at(&path))?;
                let ft = match h.kind {
                    Kind::Fifo => FileType::Fifo,
                    Kind::Char => FileType::CharacterDevice,
                    _ => FileType::BlockDevice,
                };
                let dev = rustix::fs::makedev(h.dev_major, h.dev_minor);
                rfs::mknodat(&dir, name, ft, Mode::from_raw_mode(h.mode & 0o777), dev)
                    .map_err(|e| io_at(&path)(e.into()))?;
                self.owner_and_time_at(&dir, name, h);
                // mknod applies the umask (a 0666 /dev/null became 0644); the node was just
                // made here, by this name, so the mode is set on it by name, after the owner.
                rfs::chmodat(
                    &dir,
                    name,
                    Mode::from_raw_mode(h.mode & 0o7777),
                    AtFlags::empty(),
                )
                .map_err(|e| io_at(&path)(e.into()))?;
            }
        }
        Ok(())
    }

    /// Owner (as root) and time of `name` in `dir`, not following it (symlinks, device nodes,
    /// FIFOs: nothing is opened for them). Best effort, as tar's: the entry exists either way.
    fn owner_and_time_at(&self, dir: &std::os::fd::OwnedFd, name: &str, h: &Header) {
        if self.as_root {
            let _ = rfs::chownat(
                dir,
                name,
                Some(uid(h.uid)),
                Some(gid(h.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            );
        }
        let _ = rfs::utimensat(dir, name, &times(h.mtime), AtFlags::SYMLINK_NOFOLLOW);
    }

    /// Owner (as root), then the mode: chown clears setuid/setgid, so the mode comes last.
    fn owner_and_mode(&self, f: &impl std::os::fd::AsFd, h: &Header) -> io::Result<()> {
        if self.as_root {
            rfs::fchown(f, Some(uid(h.uid)), Some(gid(h.gid))).map_err(io::Error::from)?;
            for (k, v) in &h.xattrs {
                if let Ok(name) = std::str::from_utf8(k) {
                    let _ = rfs::fsetxattr(f, name, v, rfs::XattrFlags::empty());
                }
            }
        }
        rfs::fchmod(f, Mode::from_raw_mode(h.mode)).map_err(io::Error::from)
    }

    /// Set every directory's owner, mode and times, deepest first (a directory's mtime
    /// changes when something is made in it).
    pub fn finish(mut self) -> Result<Applied, ApplyError> {
        let mut dirs: Vec<(String, Header)> = self.applied.dirs.drain().collect();
        dirs.sort_by_key(|(p, _)| {
            std::cmp::Reverse(p.matches('/').count() + usize::from(!p.is_empty()))
        });
        for (path, h) in dirs {
            // A later layer may have removed it, or put something else there.
            let fd = match self.root.existing_dir(&path) {
                Ok(fd) => fd,
                // ELOOP: a symlink now stands where the directory was.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) || e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) =>
                {
                    continue
                }
                Err(e) => return Err(io_at(&path)(e)),
            };
            self.owner_and_mode(&fd, &h).map_err(io_at(&path))?;
            rfs::futimens(&fd, &times(h.mtime)).map_err(|e| io_at(&path)(e.into()))?;
        }
        Ok(self.applied)
    }
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn uid(n: u64) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(n.min(u32::MAX as u64) as u32)
}

fn gid(n: u64) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(n.min(u32::MAX as u64) as u32)
}
