//! Early writeback: once a download has written another [`WINDOW`] of a blob, the kernel is
//! asked to start writing that window to disk (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`,
//! which waits for nothing it does not have to). The `fdatasync` before the blob is renamed
//! into place is unchanged, so crash safety is what it was; it only finds less left to write,
//! because the disk worked while the network did.

use std::fs::File;

/// Bytes between two writeback requests for one file.
pub(super) const WINDOW: u64 = 8 << 20;

/// A write covered `[start, end)` of `file`: when it crossed a multiple of [`WINDOW`], ask for
/// the window that ends at the last one crossed. Advice only: a failure changes nothing (the
/// final sync reports real write errors).
pub(super) fn after_write(file: &File, start: u64, end: u64) {
    if let Some(at) = window(start, end) {
        start_writeback(file, at, WINDOW);
    }
}

/// Where the window to write back starts, when a write over `[start, end)` crossed a multiple
/// of [`WINDOW`]: the window that ends at the last multiple crossed.
fn window(start: u64, end: u64) -> Option<u64> {
    let boundary = end / WINDOW * WINDOW;
    // A multiple above `start` is at least one window.
    (boundary > start).then(|| boundary - WINDOW)
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
    fn a_window_is_asked_for_once_its_last_byte_is_written() {
        const W: u64 = WINDOW;
        // Writes that stay inside a window ask for nothing.
        assert_eq!(window(0, 1), None);
        assert_eq!(window(0, W - 1), None);
        assert_eq!(window(W + 1, 2 * W - 1), None);
        // The write that completes a window asks for it, and only that one.
        assert_eq!(window(W - 10, W), Some(0));
        assert_eq!(window(W, W + 10), None);
        assert_eq!(window(3 * W - 1, 3 * W + 5), Some(2 * W));
        // A write over several windows asks for the last one it completed.
        assert_eq!(window(100, 3 * W + 7), Some(2 * W));
        // An empty write, wherever it is, asks for nothing.
        assert_eq!(window(W, W), None);
        assert_eq!(window(5 * W, 5 * W), None);
    }
}
