//! A directory that nothing can be walked out of (SPEC: unpack, Safety). Every operation takes a
//! cleaned relative path (see `changes::clean_path`: no `..`, no leading `/`), resolves its
//! parent from the root's descriptor with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`,
//! so that a symlink on the way, absolute or `..`-laden, is resolved as if DIR were `/` (as
//! containerd and `chroot` resolve it) and never leads outside, and acts on the last component
//! through that parent's descriptor without following it (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`,
//! `linkat` without `AT_SYMLINK_FOLLOW`). Nothing is cached between calls: each operation
//! resolves its parent afresh (a cache of resolved parents was containerd's CVE-2025-47290).
//!
//! Why rustix and `openat2` rather than cap-std: the kernel's `RESOLVE_IN_ROOT` gives the
//! clamping semantics containerd has (cap-std refuses such paths instead), in one syscall per
//! parent; rustix is already a dependency. Linux 5.6 or later is needed; on an older kernel
//! `unpack` says so instead of falling back to something weaker.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};

pub struct Root {
    fd: OwnedFd,
}

fn resolve() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

fn err(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

impl Root {
    pub fn open(dir: &Path) -> io::Result<Root> {
        let fd = rfs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)?;
        // Probe openat2 once, for a clear message on kernels without it.
        match rfs::openat2(
            &fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            resolve(),
        ) {
            Ok(_) => Ok(Root { fd }),
            Err(rustix::io::Errno::NOSYS) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "unpack needs Linux 5.6 or later (openat2 with RESOLVE_IN_ROOT)",
            )),
            Err(e) => Err(err(e)),
        }
    }

    /// The directory at `rel` ("" for the root), opened inside the root; with `create`, missing
    /// directories are made (0755, as tar does for parents a layer does not list) and a
    /// non-directory in the way is replaced.
    pub fn dir(&self, rel: &str, create: bool) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let target = if rel.is_empty() { "." } else { rel };
        match rfs::openat2(&self.fd, target, flags, Mode::empty(), resolve()) {
            Ok(fd) => return Ok(fd),
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) if create => {}
            Err(e) => return Err(err(e)),
        }
        // Walk from the root, one component at a time, making what is missing.
        let mut current =
            rfs::openat2(&self.fd, ".", flags, Mode::empty(), resolve()).map_err(err)?;
        let mut walked = String::new();
        for comp in rel.split('/') {
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(comp);
            match rfs::openat2(&self.fd, walked.as_str(), flags, Mode::empty(), resolve()) {
                Ok(fd) => current = fd,
                Err(rustix::io::Errno::NOENT) => {
                    // A dangling symlink here would be followed by mkdirat: remove it first.
                    let _ = rfs::unlinkat(&current, comp, AtFlags::empty());
                    rfs::mkdirat(&current, comp, Mode::from_raw_mode(0o755)).map_err(err)?;
                    current =
                        rfs::openat2(&self.fd, walked.as_str(), flags, Mode::empty(), resolve())
                            .map_err(err)?;
                }
                Err(rustix::io::Errno::NOTDIR) => {
                    remove_entry(&current, comp)?;
                    rfs::mkdirat(&current, comp, Mode::from_raw_mode(0o755)).map_err(err)?;
                    current =
                        rfs::openat2(&self.fd, walked.as_str(), flags, Mode::empty(), resolve())
                            .map_err(err)?;
                }
                Err(e) => return Err(err(e)),
            }
        }
        Ok(current)
    }

    /// The directory at `rel` as an entry would name it: its parents resolved inside the
    /// root, its last component not followed (a symlink there is not a directory).
    pub fn existing_dir(&self, rel: &str) -> io::Result<OwnedFd> {
        if rel.is_empty() {
            return self.dir("", false);
        }
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let parent = self.dir(parent, false)?;
        rfs::openat(
            &parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)
    }

    /// The parent directory of `rel` (made when missing) and the last component.
    pub fn parent<'a>(&self, rel: &'a str) -> io::Result<(OwnedFd, &'a str)> {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        Ok((self.dir(parent, true)?, name))
    }

    /// What is at `name` in `dir`, not following a symlink.
    pub fn kind_at(dir: &OwnedFd, name: &str) -> io::Result<Option<FileType>> {
        match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    /// Create a regular file (replacing what is there), opened for writing.
    pub fn create_file(dir: &OwnedFd, name: &str) -> io::Result<File> {
        remove_entry(dir, name)?;
        let fd = rfs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(err)?;
        Ok(File::from(fd))
    }

    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Remove `name` from `dir` whatever it is (a directory with everything in it), never following
/// a symlink; nothing there is not an error.
pub fn remove_entry(dir: &OwnedFd, name: &str) -> io::Result<()> {
    match Root::kind_at(dir, name)? {
        None => Ok(()),
        Some(FileType::Directory) => {
            let sub = rfs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(err)?;
            remove_children(&sub, |_| true)?;
            rfs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(err)
        }
        Some(_) => rfs::unlinkat(dir, name, AtFlags::empty()).map_err(err),
    }
}

/// Remove every child of `dir` for which `keep_not` says so (by name).
pub fn remove_children(dir: &OwnedFd, mut remove: impl FnMut(&str) -> bool) -> io::Result<()> {
    let mut names = Vec::new();
    {
        let listing = rfs::openat(
            dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)?;
        let mut entries = rfs::Dir::read_from(&listing).map_err(err)?;
        while let Some(e) = entries.read() {
            let e = e.map_err(err)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
    }
    for name in names {
        if remove(&name) {
            remove_entry(dir, &name)?;
        }
    }
    Ok(())
}
