//! Reporters the binary chooses from: plain lines when stderr is not a terminal (CI logs: one
//! line when a blob starts, one when it is done or skipped, a progress line at most every few
//! seconds), or nothing (`-q`, `--json`); the bars for a terminal are in `bars.rs`. `-v` lines
//! come through the logger (`logging.rs`), above the bars when there are bars.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::digest::Digest;
use crate::report::{Reporter, Stage};

/// Plain lines at most this often per blob while it downloads.
const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `1 layer`, `2 layers`.
pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("{n} {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `[what: ]error; retrying in 1.0 s (attempt 2 failed)`: the error names the request already.
pub(super) fn retry_line(what: &str, attempt: u32, delay: Duration, error: &str) -> String {
    let prefix = if what.is_empty() {
        String::new()
    } else {
        format!("{what}: ")
    };
    format!(
        "{prefix}{error}; retrying in {:.1} s (attempt {attempt} failed)",
        delay.as_secs_f64()
    )
}

pub(crate) fn eprint_line(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Errors and warnings only (`-v` lines still come through the logger).
pub struct QuietReporter;

impl Reporter for QuietReporter {
    fn warning(&self, message: &str) {
        eprint_line(&format!("imagec: warning: {message}"));
    }
}

/// Plain lines for logs.
pub struct PlainReporter {
    state: Mutex<HashMap<Digest, (u64, u64, Instant)>>,
    stage: Mutex<Stage>,
}

impl Default for PlainReporter {
    fn default() -> Self {
        PlainReporter::new()
    }
}

impl PlainReporter {
    pub fn new() -> PlainReporter {
        PlainReporter {
            state: Mutex::new(HashMap::new()),
            stage: Mutex::new(Stage::Download),
        }
    }

    fn stage(&self) -> Stage {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Reporter for PlainReporter {
    fn transfer_planned(&self, stage: Stage, blobs: usize, bytes: u64) {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = stage;
        if blobs > 0 {
            eprint_line(&format!(
                "{} {} ({})",
                stage.verb(),
                plural(blobs, stage.noun()),
                human_size(bytes)
            ));
        }
    }
    fn resolved(&self, reference: &str, digest: &Digest) {
        eprint_line(&format!("{reference}: resolved to {digest}"));
    }
    fn blob_started(&self, digest: &Digest, size: u64, offset: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.insert(digest.clone(), (offset, size, Instant::now()));
        if offset > 0 {
            eprint_line(&format!(
                "{}: resuming at {} of {}",
                digest.short(),
                human_size(offset),
                human_size(size)
            ));
        } else {
            eprint_line(&format!(
                "{}: {} {}",
                digest.short(),
                self.stage().verb(),
                human_size(size)
            ));
        }
    }
    fn blob_progress(&self, digest: &Digest, bytes: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((done, size, last)) = s.get_mut(digest) {
            *done += bytes;
            if last.elapsed() >= PLAIN_INTERVAL {
                *last = Instant::now();
                let pct = (*done * 100).checked_div(*size).unwrap_or(100);
                eprint_line(&format!(
                    "{}: {pct}% ({} of {})",
                    digest.short(),
                    human_size(*done),
                    human_size(*size)
                ));
            }
        }
    }
    fn blob_restarted(&self, digest: &Digest, _discarded: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((done, _, _)) = s.get_mut(digest) {
            *done = 0;
        }
        eprint_line(&format!(
            "{}: the registry ignored the Range request; downloading from the start",
            digest.short()
        ));
    }
    fn blob_rejected(&self, digest: &Digest, _discarded: u64) {
        // The warning line says why; the count starts again.
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((done, _, _)) = s.get_mut(digest) {
            *done = 0;
        }
    }
    fn blob_done(&self, digest: &Digest, size: u64) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(digest);
        eprint_line(&format!("{}: done ({})", digest.short(), human_size(size)));
    }
    fn blob_skipped(&self, digest: &Digest, _size: u64) {
        eprint_line(&format!("{}: already exists", digest.short()));
    }
    fn blob_linked(&self, digest: &Digest, _size: u64, how: &str) {
        eprint_line(&format!("{}: from the cache ({how})", digest.short()));
    }
    fn retrying(&self, what: &str, attempt: u32, delay: Duration, error: &str) {
        eprint_line(&retry_line(what, attempt, delay, error));
    }
    fn warning(&self, message: &str) {
        eprint_line(&format!("imagec: warning: {message}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_blob_never_counts_past_its_size() {
        let d = Digest::sha256_of(b"blob");
        let plain = PlainReporter::new();
        plain.blob_started(&d, 1000, 400);
        plain.blob_progress(&d, 200);
        plain.blob_restarted(&d, 600);
        plain.blob_progress(&d, 1000);
        assert_eq!(plain.state.lock().unwrap()[&d].0, 1000);
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1500), "1.5 kB");
        assert_eq!(human_size(600_000_000), "600.0 MB");
    }
}
