//! Filesystems the tests mount (as root) for what one filesystem cannot show: a tmpfs, where
//! no hardlink or reflink from the scratch filesystem can reach, and an XFS image on a loop
//! device, where `FICLONE` reflinks work. Unmounted when the guard drops (a panic included);
//! the test fails, never skips, where mounting does not work.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Mount {
    dir: PathBuf,
    image: Option<PathBuf>,
}

impl Mount {
    /// A tmpfs of `mib` MiB at `dir` (created).
    pub fn tmpfs(dir: &Path, mib: u32) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        must(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(dir),
        );
        Mount {
            dir: dir.to_path_buf(),
            image: None,
        }
    }

    /// An XFS filesystem (reflinks on, as mkfs.xfs makes it by default) of `mib` MiB in an
    /// image file beside `dir`, mounted through a loop device at `dir` (created).
    pub fn xfs(dir: &Path, mib: u32) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let image = dir.with_extension("xfs.img");
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(u64::from(mib) << 20).unwrap();
        must(
            Command::new("mkfs.xfs")
                .args(["-q", "-m", "reflink=1"])
                .arg(&image),
        );
        must(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(dir),
        );
        Mount {
            dir: dir.to_path_buf(),
            image: Some(image),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazy: a process of the test still holding a file must not keep the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        if let Some(image) = &self.image {
            let _ = std::fs::remove_file(image);
        }
    }
}

#[track_caller]
fn must(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (CI installs xfsprogs; run as root)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed (these tests mount filesystems: run them as root on a machine with loop devices): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
