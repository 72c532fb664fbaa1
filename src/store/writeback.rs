//! Early writeback: once a download has written another [`WINDOW`] of a blob, the kernel is
//! asked to start writing that window to disk (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`,
//! which waits for nothing it does not have to). The `fdatasync` before the blob is renamed
//! into place is unchanged, so crash safety is what it was; it only finds less left to write,
//! because the disk worked while the network did.

use std::fs::File;

/// Bytes between two writeback requests for one file.
pub(super) const WINDOW: u64 = 8 << 20;

/// A write covered `[start, end)` of `file`: when it completed one or more windows (crossed a
/// multiple of [`WINDOW`]), ask for them. Advice only: a failure changes nothing (the final
/// sync reports real write errors).
pub(super) fn after_write(file: &File, start: u64, end: u64) {
    if let Some((at, len)) = completed(start, end) {
        start_writeback(file, at, len);
    }
}

/// The windows a write over `[start, end)` completed, as one range: from the window `start`
/// is in to the last multiple of [`WINDOW`] at or below `end`.
fn completed(start: u64, end: u64) -> Option<(u64, u64)> {
    let from = start / WINDOW * WINDOW;
    let to = end / WINDOW * WINDOW;
    (to > start).then(|| (from, to - from))
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &File, at: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(at), Ok(len)) = (i64::try_from(at), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for as long as `file` is borrowed, and the call reads
    // and writes no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), at, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _at: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_windows_a_write_completes_are_asked_for() {
        const W: u64 = WINDOW;
        // Writes that stay inside a window ask for nothing.
        assert_eq!(completed(0, 1), None);
        assert_eq!(completed(0, W - 1), None);
        assert_eq!(completed(W + 1, 2 * W - 1), None);
        // The write that completes a window asks for it, and only that one.
        assert_eq!(completed(W - 10, W), Some((0, W)));
        assert_eq!(completed(W, W + 10), None);
        assert_eq!(completed(3 * W - 1, 3 * W + 5), Some((2 * W, W)));
        // A write over several windows asks for every one it completed.
        assert_eq!(completed(100, 3 * W + 7), Some((0, 3 * W)));
        assert_eq!(completed(W + 5, 3 * W), Some((W, 2 * W)));
        // An empty write, wherever it is, asks for nothing.
        assert_eq!(completed(W, W), None);
        assert_eq!(completed(5 * W, 5 * W), None);
    }
}
