//! Progress bars on a terminal: one indicatif bar per blob above a total (SPEC: Output).
//!
//! What a terminal user saw before (issue 9): every bar redrawn ~48 times a second, bars
//! wrapping onto two lines at 60 columns, `0 B/s eta 0s` before any byte, a full bar sitting
//! there while the blob was verified, and on Ctrl-C a total at 100% with a duplicated bar. So:
//! - frames are drawn at most [`REDRAW_HZ`] times a second, each in one write, inside the
//!   synchronized-output brackets on terminals known to support them (no tearing);
//! - the figures after a bar are chosen per frame from the terminal's current width (the rate
//!   and ETA go first when it is narrow), and the bar takes what is left, so no line wraps,
//!   also after a resize;
//! - figures use [`human_size`], as the summary line does;
//! - [`BarReporter::freeze`] stops every bar where it is, at once, for Ctrl-C.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{
    MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, TermLike,
};

use super::progress::{eprint_line, human_size, retry_line};
use crate::digest::Digest;
use crate::report::{Reporter, Stage};

/// Frames per second at most: enough to look live, a fifth of indicatif's default.
pub const REDRAW_HZ: u8 = 10;
/// Room kept for the bar itself when choosing which figures fit.
const MIN_BAR: usize = 10;
/// `total` padded to the width of a blob's 12-digit prefix.
const TOTAL_PREFIX: &str = "total       ";

/// One indicatif bar per blob on a terminal.
pub struct BarReporter {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
    total: Mutex<Option<ProgressBar>>,
    /// Blobs shown as done or present, finished with the transfer.
    done: Mutex<Vec<ProgressBar>>,
    /// Set by Ctrl-C: every bar is stopped and later events change nothing on screen.
    frozen: AtomicBool,
    /// What the blob events are for now.
    stage: Mutex<Stage>,
}

impl BarReporter {
    /// Bars on stderr; `synchronized` wraps each frame in DEC mode 2026 (set by the settings
    /// for terminals known to support it).
    pub fn new(synchronized: bool) -> BarReporter {
        let screen = Screen {
            synchronized,
            frame: Mutex::new(String::new()),
        };
        BarReporter::with_target(ProgressDrawTarget::term_like_with_hz(
            Box::new(screen),
            REDRAW_HZ,
        ))
    }

    fn with_target(target: ProgressDrawTarget) -> BarReporter {
        BarReporter {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
            total: Mutex::new(None),
            done: Mutex::new(Vec::new()),
            frozen: AtomicBool::new(false),
            stage: Mutex::new(Stage::Download),
        }
    }

    /// Where other lines (the `-v` log) must go while bars are drawn: above them.
    pub fn lines(&self) -> MultiProgress {
        self.multi.clone()
    }

    /// Stop every bar at its current value and draw it so, once; nothing moves afterwards.
    /// For Ctrl-C: the transfers may take a moment to notice, and the screen must say what
    /// arrived, not jump to the end.
    pub fn freeze(&self) {
        if self.frozen.swap(true, Ordering::SeqCst) {
            return;
        }
        self.abandon_blob_bars();
        if let Some(total) = self
            .total
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            total.abandon();
        }
    }

    /// Stop every blob bar where it is, running or done (the total is the caller's).
    fn abandon_blob_bars(&self) {
        for bar in self.bars.lock().unwrap_or_else(|e| e.into_inner()).values() {
            bar.abandon();
        }
        for bar in self
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            bar.abandon();
        }
    }

    fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }

    fn line(&self, msg: &str) {
        if self.multi.println(msg).is_err() {
            eprint_line(msg);
        }
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
        bar.set_style(done_style());
        bar.set_prefix(digest.short().to_string());
        // Not finished yet: indicatif moves finished bars out of the area it redraws, and a
        // log line printed after that (a retry) overwrote them (seen in tmux: two "done"
        // lines gone). They stay live, drawn as done, until the transfer ends.
        bar.set_message(msg);
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(bar);
    }
}

fn done_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// `PREFIX [=====>     ] FIGURES`, laid out for the terminal's width at each frame: the
/// figures that fit (see [`figures`]), the bar in what is left, one column to spare.
/// indicatif pads every line to the full width and lets the terminal wrap to the next line,
/// so a line of exactly the width would be drawn over by the next one.
fn bar_style(prefix: &str, with_eta: bool, verifies: bool) -> ProgressStyle {
    let prefix = prefix.to_string();
    ProgressStyle::with_template("{line}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "line",
            move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let line = bar_line(&prefix, state, with_eta, verifies, terminal_width());
                let _ = w.write_str(&line);
            },
        )
}

fn bar_line(
    prefix: &str,
    state: &ProgressState,
    with_eta: bool,
    verifies: bool,
    width: usize,
) -> String {
    let usable = width.saturating_sub(1);
    let fixed = prefix.chars().count() + 1 + 2;
    let room = usable.saturating_sub(fixed + 1 + MIN_BAR);
    let figures = figures(state, with_eta, verifies, room);
    let tail = if figures.is_empty() {
        0
    } else {
        1 + figures.chars().count()
    };
    let bar_width = usable.saturating_sub(fixed + tail);
    let len = state.len().unwrap_or(0);
    let filled = if len == 0 {
        0
    } else {
        ((state.pos().min(len) as u128 * bar_width as u128) / len as u128) as usize
    };
    let mut bar = "=".repeat(filled);
    if filled < bar_width {
        bar.push('>');
        bar.push_str(&" ".repeat(bar_width - filled - 1));
    }
    let mut line = format!("{prefix} [{bar}]");
    if !figures.is_empty() {
        line.push(' ');
        line.push_str(&figures);
    }
    line
}

/// The figures after a bar that fit in `room` columns: sizes, rate and ETA when there is room,
/// then without the ETA, without the rate, and a percentage at the narrowest. No rate or ETA
/// before a second of data (a first frame's "0 B/s eta 0s" says nothing); "verifying" once
/// every byte is in, for a stage that `verifies` (the digest is checked and the file synced
/// before "done"; an unpack's diff_id).
fn figures(state: &ProgressState, with_eta: bool, verifies: bool, room: usize) -> String {
    let pos = state.pos();
    let len = state.len().unwrap_or(0);
    if verifies && len > 0 && pos >= len {
        return "verifying".to_string();
    }
    let sizes = format!("{}/{}", human_size(pos), human_size(len));
    let measured = pos > 0 && state.elapsed() >= Duration::from_secs(1);
    let mut candidates = Vec::new();
    if measured {
        let rate = format!("{}/s", human_size(state.per_sec() as u64));
        if with_eta && state.eta() >= Duration::from_secs(1) {
            candidates.push(format!("{sizes} {rate} eta {}", eta(state.eta())));
        }
        candidates.push(format!("{sizes} {rate}"));
    }
    candidates.push(sizes);
    let pct = (pos * 100).checked_div(len).unwrap_or(0);
    candidates.push(format!("{pct}%"));
    candidates
        .into_iter()
        .find(|c| c.chars().count() <= room)
        .unwrap_or_default()
}

fn eta(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The terminal's width now (it may have been resized since the last frame); 80 when stderr
/// cannot say.
fn terminal_width() -> usize {
    rustix::termios::tcgetwinsize(io::stderr())
        .ok()
        .map(|w| w.ws_col as usize)
        .filter(|&c| c > 0)
        .unwrap_or(80)
}

/// indicatif's view of stderr: each frame is collected and written at `flush` in one write,
/// inside `ESC[?2026h` ... `ESC[?2026l` where the terminal supports synchronized output.
#[derive(Debug)]
struct Screen {
    synchronized: bool,
    frame: Mutex<String>,
}

impl Screen {
    fn push(&self, s: &str) -> io::Result<()> {
        self.frame
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_str(s);
        Ok(())
    }

    /// `ESC [ n A` and its kin: move the cursor `n` rows or columns (nothing for 0).
    fn cursor(&self, n: usize, direction: char) -> io::Result<()> {
        if n > 0 {
            let _ = write!(
                self.frame.lock().unwrap_or_else(|e| e.into_inner()),
                "\x1b[{n}{direction}"
            );
        }
        Ok(())
    }
}

impl TermLike for Screen {
    fn width(&self) -> u16 {
        terminal_width().min(u16::MAX as usize) as u16
    }
    fn height(&self) -> u16 {
        rustix::termios::tcgetwinsize(io::stderr())
            .ok()
            .map(|w| w.ws_row)
            .filter(|&r| r > 0)
            .unwrap_or(24)
    }
    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.cursor(n, 'A')
    }
    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.cursor(n, 'B')
    }
    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.cursor(n, 'C')
    }
    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        self.cursor(n, 'D')
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        self.push(s)?;
        self.push("\n")
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        self.push(s)
    }
    fn clear_line(&self) -> io::Result<()> {
        self.push("\r\x1b[2K")
    }
    fn flush(&self) -> io::Result<()> {
        let frame = std::mem::take(&mut *self.frame.lock().unwrap_or_else(|e| e.into_inner()));
        if frame.is_empty() {
            return Ok(());
        }
        let mut err = io::stderr().lock();
        if self.synchronized {
            err.write_all(format!("\x1b[?2026h{frame}\x1b[?2026l").as_bytes())?;
        } else {
            err.write_all(frame.as_bytes())?;
        }
        err.flush()
    }
}

impl Reporter for BarReporter {
    fn transfer_planned(&self, stage: Stage, blobs: usize, bytes: u64) {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = stage;
        if blobs == 0 || self.is_frozen() {
            return;
        }
        // The total stays at the bottom; blob bars are inserted above it. It says what the
        // stage does when it is not the download.
        let prefix = match stage {
            Stage::Download => TOTAL_PREFIX.to_string(),
            _ => format!("{:<w$}", stage.verb(), w = TOTAL_PREFIX.len()),
        };
        let bar = self.multi.add(ProgressBar::new(bytes));
        bar.set_style(bar_style(&prefix, true, stage.verifies()));
        bar.set_prefix(prefix);
        // indicatif draws only when something changes, and drops changes that come too soon
        // after a frame: without a tick, a change just before a stall (a blob done, the last
        // bytes before a connection hangs) stayed off the screen for as long as it lasted.
        bar.enable_steady_tick(Duration::from_millis(1000 / REDRAW_HZ as u64));
        *self.total.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }
    fn transfer_finished(&self) {
        if self.is_frozen() {
            return;
        }
        // Finished bars are left as they are; until then indicatif owns those screen lines and
        // would redraw over whatever is printed after them. A transfer that ended short (a
        // failure) leaves the total where it truly is.
        if let Some(total) = self.total.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let len = total.length().unwrap_or(0);
            if total.position() >= len {
                total.set_style(done_style());
                total.finish_with_message(format!("done ({})", human_size(len)));
            } else {
                total.abandon();
            }
        }
        self.abandon_blob_bars();
    }
    fn resolved(&self, reference: &str, digest: &Digest) {
        if !self.is_frozen() {
            self.line(&format!("{reference}: resolved to {digest}"));
        }
    }
    fn blob_started(&self, digest: &Digest, size: u64, offset: u64) {
        if self.is_frozen() {
            return;
        }
        if let Some(total) = self
            .total
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            // A resumed blob's first bytes count as done.
            total.inc(offset);
        }
        // A blob started again (after a source that sent wrong bytes) keeps its line.
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
        {
            bar.set_position(offset);
            return;
        }
        let bar = self.new_bar(size);
        let verifies = self
            .stage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .verifies();
        bar.set_style(bar_style(digest.short(), false, verifies));
        bar.set_prefix(digest.short().to_string());
        bar.set_position(offset);
        self.bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.clone(), bar);
    }
    fn blob_progress(&self, digest: &Digest, bytes: u64) {
        if self.is_frozen() {
            return;
        }
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
        if self.is_frozen() {
            return;
        }
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
    fn blob_rejected(&self, digest: &Digest, discarded: u64) {
        // As a restart: the bar back to zero, the total without the discarded bytes.
        self.blob_restarted(digest, discarded);
    }
    fn blob_done(&self, digest: &Digest, size: u64) {
        if !self.is_frozen() {
            self.finish(digest, format!("done ({})", human_size(size)), size);
        }
    }
    fn blob_skipped(&self, digest: &Digest, size: u64) {
        if !self.is_frozen() {
            self.finish(digest, "already exists".to_string(), size);
        }
    }
    fn blob_linked(&self, digest: &Digest, size: u64, how: &str) {
        if !self.is_frozen() {
            self.finish(digest, format!("from the cache ({how})"), size);
        }
    }
    fn retrying(&self, what: &str, attempt: u32, delay: Duration, error: &str) {
        if !self.is_frozen() {
            self.line(&retry_line(what, attempt, delay, error));
        }
    }
    fn warning(&self, message: &str) {
        self.line(&format!("imagec: warning: {message}"));
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
        bars.transfer_planned(Stage::Download, 1, 1000);
        bars.blob_started(&d, 1000, 0);
        bars.blob_progress(&d, 600);
        bars.blob_restarted(&d, 600);
        bars.blob_progress(&d, 1000);
        let bar = bars.bars.lock().unwrap().get(&d).unwrap().position();
        assert_eq!(bar, 1000);
        let total = bars.total.lock().unwrap().as_ref().unwrap().position();
        assert_eq!(total, 1000);
    }

    #[test]
    fn a_blob_rejected_and_fetched_again_keeps_one_bar_and_a_true_total() {
        // After a mirror sent wrong bytes, the blob comes again from the next source.
        let d = Digest::sha256_of(b"blob");
        let bars = BarReporter::with_target(ProgressDrawTarget::hidden());
        bars.transfer_planned(Stage::Download, 1, 1000);
        bars.blob_started(&d, 1000, 0);
        bars.blob_progress(&d, 1000);
        bars.blob_rejected(&d, 1000);
        bars.blob_started(&d, 1000, 0);
        bars.blob_progress(&d, 1000);
        assert_eq!(bars.bars.lock().unwrap().len(), 1);
        assert_eq!(bars.bars.lock().unwrap().get(&d).unwrap().position(), 1000);
        let total = bars.total.lock().unwrap().as_ref().unwrap().position();
        assert_eq!(total, 1000);
    }

    #[test]
    fn frozen_bars_stay_where_they_were() {
        let d = Digest::sha256_of(b"blob");
        let bars = BarReporter::with_target(ProgressDrawTarget::hidden());
        bars.transfer_planned(Stage::Download, 1, 1000);
        bars.blob_started(&d, 1000, 0);
        bars.blob_progress(&d, 300);
        bars.freeze();
        bars.blob_progress(&d, 700);
        bars.blob_done(&d, 1000);
        bars.transfer_finished();
        let total = bars.total.lock().unwrap().as_ref().unwrap().position();
        assert_eq!(total, 300);
        assert_eq!(bars.bars.lock().unwrap().get(&d).unwrap().position(), 300);
    }

    #[test]
    fn etas_read_as_time() {
        assert_eq!(eta(Duration::from_secs(5)), "5s");
        assert_eq!(eta(Duration::from_secs(65)), "1m05s");
        assert_eq!(eta(Duration::from_secs(3725)), "1h02m");
    }
}
