//! Progress bars on a terminal: one indicatif bar per blob above a total.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::progress::{eprint_line, human_size, retry_line};
use crate::digest::Digest;
use crate::report::Reporter;

/// One indicatif bar per blob on a terminal.
pub struct BarReporter {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
    total: Mutex<Option<ProgressBar>>,
}

impl Default for BarReporter {
    fn default() -> Self {
        BarReporter::new()
    }
}

impl BarReporter {
    pub fn new() -> BarReporter {
        BarReporter::with_target(ProgressDrawTarget::stderr())
    }

    fn with_target(target: ProgressDrawTarget) -> BarReporter {
        BarReporter {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
            total: Mutex::new(None),
        }
    }

    fn line(&self, msg: &str) {
        if self.multi.println(msg).is_err() {
            eprint_line(msg);
        }
    }

    /// Where other lines (the `-v` log) must go while bars are drawn: above them.
    pub fn lines(&self) -> MultiProgress {
        self.multi.clone()
    }

    /// A bar above the total (which stays the last line), or at the end when there is none.
    fn new_bar(&self, len: u64) -> ProgressBar {
        match self
            .total
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            Some(total) => self.multi.insert_before(total, ProgressBar::new(len)),
            None => self.multi.add(ProgressBar::new(len)),
        }
    }

    fn finish(&self, digest: &Digest, msg: String, size: u64) {
        let bar = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(digest);
        let bar = bar.unwrap_or_else(|| self.new_bar(size));
        bar.set_style(
            ProgressStyle::with_template("{prefix} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(digest.short().to_string());
        bar.finish_with_message(msg);
    }
}

impl Reporter for BarReporter {
    fn transfer_planned(&self, blobs: usize, bytes: u64) {
        if blobs == 0 {
            return;
        }
        // The total stays at the bottom; blob bars are inserted above it.
        let bar = self.multi.add(ProgressBar::new(bytes));
        bar.set_style(
            ProgressStyle::with_template(
                "total        [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(format!("{blobs} blobs"));
        *self.total.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }
    fn transfer_finished(&self) {
        // Finished bars are left as they are; until then indicatif owns those screen lines and
        // would redraw over whatever is printed after them.
        if let Some(total) = self.total.lock().unwrap_or_else(|e| e.into_inner()).take() {
            total.finish();
        }
        for (_, bar) in self.bars.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            bar.abandon();
        }
    }
    fn resolved(&self, reference: &str, digest: &Digest) {
        self.line(&format!("{reference}: resolved to {digest}"));
    }
    fn blob_started(&self, digest: &Digest, size: u64, offset: u64) {
        if let Some(total) = self
            .total
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            // A resumed blob's first bytes count as done.
            total.inc(offset);
        }
        let bar = self.new_bar(size);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(digest.short().to_string());
        bar.set_position(offset);
        self.bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.clone(), bar);
    }
    fn blob_progress(&self, digest: &Digest, bytes: u64) {
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
        {
            bar.inc(bytes);
        }
        if let Some(total) = self
            .total
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            total.inc(bytes);
        }
    }
    fn blob_restarted(&self, digest: &Digest, discarded: u64) {
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
        {
            bar.set_position(0);
        }
        if let Some(total) = self
            .total
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            total.set_position(total.position().saturating_sub(discarded));
        }
    }
    fn blob_done(&self, digest: &Digest, size: u64) {
        self.finish(digest, format!("done ({})", human_size(size)), size);
    }
    fn blob_skipped(&self, digest: &Digest, size: u64) {
        self.finish(digest, "already exists".to_string(), size);
    }
    fn retrying(&self, what: &str, attempt: u32, delay: Duration, error: &str) {
        self.line(&retry_line(what, attempt, delay, error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_blob_never_counts_past_its_size() {
        // Regression: after a registry ignored Range and the blob came again from zero, the
        // bars kept the discarded bytes and went past 100%.
        let d = Digest::sha256_of(b"blob");
        let bars = BarReporter::with_target(ProgressDrawTarget::hidden());
        bars.transfer_planned(1, 1000);
        bars.blob_started(&d, 1000, 0);
        bars.blob_progress(&d, 600);
        bars.blob_restarted(&d, 600);
        bars.blob_progress(&d, 1000);
        let bar = bars.bars.lock().unwrap().get(&d).unwrap().position();
        assert_eq!(bar, 1000);
        let total = bars.total.lock().unwrap().as_ref().unwrap().position();
        assert_eq!(total, 1000);
    }
}
