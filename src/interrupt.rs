//! Ctrl-C. The first one asks every transfer to stop at its next chunk, keeping partial
//! downloads for the next run to resume; the command then exits 130, as shells report SIGINT.
//! A second Ctrl-C exits at once.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The exit code of an interrupted command (128 + SIGINT).
pub const EXIT_CODE: u8 = 130;

/// Install the handler (once per process; a second call is harmless).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            std::process::exit(EXIT_CODE.into());
        }
        // A transfer blocked on a stalled connection sees the request only when its read
        // returns; do not make the user wait for that. Exiting is safe at any moment: partial
        // files are written in order, so what is on disk is always a prefix the next run
        // re-hashes, and nothing unverified is ever under blobs/.
        std::thread::spawn(|| {
            std::thread::sleep(GRACE);
            eprintln!("imagec: interrupted");
            std::process::exit(EXIT_CODE.into());
        });
    });
}

/// How long a clean stop may take before the process exits anyway.
const GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Has the user asked to stop?
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
