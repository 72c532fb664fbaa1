//! A cancel token: the command layer sets it (on Ctrl-C), the library checks it between
//! chunks and entries and stops with an `Interrupted` error, keeping what is on disk. The
//! library never installs signal handlers or exits the process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Ask every holder of this token to stop; true when it was already asked.
    pub fn cancel(&self) -> bool {
        self.0.swap(true, Ordering::SeqCst)
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
