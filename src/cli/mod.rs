//! The command layer, the only place that prints or exits: `args` (clap), `settings` (flags
//! and environment resolved once), `commands` (one function per command), `render` (tables
//! and JSON), `progress` (event reporters), `logging` (the `-v` log), `interrupt` (Ctrl-C).
//! Errors are printed here, once, with the reference they concern (STYLE: Errors and exit
//! codes).

pub mod args;
mod bars;
mod commands;
pub mod interrupt;
pub mod logging;
mod password;
pub mod progress;
pub mod render;
pub mod settings;

use std::io::{self, IsTerminal, Write};
use std::sync::Arc;

use crate::cli::args::{Cli, Command};
use crate::cli::bars::BarReporter;
use crate::cli::progress::{PlainReporter, QuietReporter};
use crate::cli::settings::{OutputMode, Settings};
use crate::error::{self, Error};
use crate::report::Reporter;

/// Run a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> u8 {
    let result = match cli.command {
        Command::Pull(a) => commands::cmd_pull(a),
        Command::Layers(a) => commands::cmd_layers(a),
        Command::Inspect(a) => commands::cmd_inspect(a),
        Command::Images(a) => commands::cmd_images(a),
        Command::Rm(a) => commands::cmd_rm(a),
        Command::Gc(a) => commands::cmd_gc(a),
        Command::Tags(a) => commands::cmd_tags(a),
        Command::Unpack(a) => commands::cmd_unpack(a),
        Command::Save(a) => commands::cmd_save(a),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Quiet) => error::SUCCESS,
        Err(Failure::Error(context, e)) => {
            report_error(context.as_deref(), &e);
            e.exit_code()
        }
    }
}

enum Failure {
    /// stdout was closed (`imagec images | head -1`): stop without a word.
    Quiet,
    Error(Option<String>, Box<Error>),
}

impl<E: Into<Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Error(None, Box::new(e.into()))
    }
}

fn with_context<T, E: Into<Error>>(
    r: Result<T, E>,
    context: impl FnOnce() -> String,
) -> Result<T, Failure> {
    r.map_err(|e| Failure::Error(Some(context()), Box::new(e.into())))
}

fn report_error(context: Option<&str>, e: &Error) {
    let mut err = io::stderr().lock();
    let _ = match context {
        Some(c) => writeln!(err, "imagec: {c}: {e}"),
        None => writeln!(err, "imagec: {e}"),
    };
}

/// Write to stdout; a closed pipe ends the command quietly.
fn emit(out: &mut impl Write, text: &str) -> Result<(), Failure> {
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(Failure::Quiet),
        Err(e) => Err(stdout_error(e)),
    }
}

fn stdout_error(e: io::Error) -> Failure {
    Failure::Error(
        None,
        Box::new(Error::Store(crate::store::StoreError::Io {
            action: "writing",
            path: "<stdout>".into(),
            source: e,
        })),
    )
}

/// The reporter for a command's events, and the `-v` logger to go with it.
fn reporter_for(settings: &Settings, progress: bool) -> Arc<dyn Reporter> {
    pull_reporter(settings, progress).0
}

/// What Ctrl-C does to the screen before the command stops: freeze the bars.
type OnInterrupt = Box<dyn Fn() + Send + Sync>;

/// [`reporter_for`], with what Ctrl-C must do to the screen at once.
fn pull_reporter(settings: &Settings, progress: bool) -> (Arc<dyn Reporter>, OnInterrupt) {
    let nothing: OnInterrupt = Box::new(|| {});
    if !progress || settings.output != OutputMode::Human {
        logging::install(settings.verbose, None);
        return (Arc::new(QuietReporter), nothing);
    }
    // TERM=dumb is not a terminal for bars (SPEC: Output).
    if io::stderr().is_terminal() && !settings.dumb_terminal {
        let bars = Arc::new(BarReporter::new(settings.synchronized_output));
        logging::install(settings.verbose, Some(bars.lines()));
        let frozen = bars.clone();
        (bars, Box::new(move || frozen.freeze()))
    } else {
        logging::install(settings.verbose, None);
        (Arc::new(PlainReporter::new()), nothing)
    }
}
