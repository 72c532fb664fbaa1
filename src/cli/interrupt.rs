//! Ctrl-C. The first one cancels the command's token: every transfer stops at its next chunk,
//! keeping partial downloads for the next run to resume, and the command exits 130, as shells
//! report SIGINT. A second Ctrl-C exits at once.

use crate::cancel::Cancel;
use crate::error::INTERRUPTED;

/// How long a clean stop may take before the process exits anyway.
const GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Install the handler for `cancel` (once per process; a second call is harmless).
/// `first` runs on the first Ctrl-C before anything else: the bars freeze at their true values
/// before any message is printed below them.
pub fn install(cancel: Cancel, first: Box<dyn Fn() + Send + Sync>) {
    let _ = ctrlc::set_handler(move || {
        if cancel.is_cancelled() {
            std::process::exit(INTERRUPTED.into());
        }
        first();
        if cancel.cancel() {
            std::process::exit(INTERRUPTED.into());
        }
        // A transfer blocked on a stalled connection sees the request only when its read
        // returns; do not make the user wait for that. Exiting is safe at any moment: partial
        // files are written in order, so what is on disk is always a prefix the next run
        // re-hashes, and nothing unverified is ever under blobs/.
        std::thread::spawn(|| {
            std::thread::sleep(GRACE);
            eprintln!("imagec: interrupted");
            std::process::exit(INTERRUPTED.into());
        });
    });
}
