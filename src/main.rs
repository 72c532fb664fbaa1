//! The `imagec` binary: parse arguments, run the command, exit with its code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match imagec::cli::args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap's own --help and --version are successes; anything else is a usage error.
            return ExitCode::from(if e.use_stderr() {
                imagec::error::USAGE
            } else {
                0
            });
        }
    };
    ExitCode::from(imagec::cli::run(cli))
}
