//! The `agentwire` binary: parses the command line and hands off to the
//! library crates. Everything of substance lives in those crates.

mod cli;
mod exit;
mod home;
mod logging;
mod relay_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            // Printing help to a closed pipe is not an error worth reporting.
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    logging::init(cli.global.log_format);
    let result = match cli.command {
        cli::Command::Relay(args) => relay_cmd::run(&cli.global, args),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(failure) => {
            eprintln!("agentwire: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}
