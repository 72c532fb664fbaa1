//! The `-v` log: the library writes lines through the `log` facade, this logger puts them on
//! stderr, above the progress bars while bars are drawn (indicatif would draw over them
//! otherwise). Nothing is logged without `-v`; a line never holds a secret (the library logs
//! URLs without their query and never an Authorization value).

use std::sync::{Mutex, OnceLock};

use indicatif::MultiProgress;

struct StderrLogger {
    bars: Mutex<Option<MultiProgress>>,
}

static LOGGER: OnceLock<StderrLogger> = OnceLock::new();

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        // Only imagec's own lines: a dependency's log would not be written for our users.
        if !self.enabled(record.metadata()) || !record.target().starts_with("imagec") {
            return;
        }
        let line = record.args().to_string();
        let bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        match bars.as_ref() {
            Some(m) if m.println(&line).is_ok() => {}
            _ => super::progress::eprint_line(&line),
        }
    }

    fn flush(&self) {}
}

/// Install the logger (once per process): `verbose` turns `-v` lines on; `bars`, when progress
/// bars are drawn, is where the lines must go.
pub fn install(verbose: bool, bars: Option<MultiProgress>) {
    let logger = LOGGER.get_or_init(|| StderrLogger {
        bars: Mutex::new(None),
    });
    *logger.bars.lock().unwrap_or_else(|e| e.into_inner()) = bars;
    let _ = log::set_logger(logger);
    log::set_max_level(if verbose {
        log::LevelFilter::Info
    } else {
        log::LevelFilter::Off
    });
}
