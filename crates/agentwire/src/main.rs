//! The `agentwire` binary: parses the command line and hands off to the
//! library crates. Everything of substance lives in those crates.

mod agent_cmd;
mod bridge_cmd;
mod cli;
mod connect_cmd;
mod daemon_client;
mod exit;
mod hook_cmd;
mod logging;
mod mcp_args;
mod mcp_cmd;
mod relay_cmd;
mod sandbox;
mod serve_cmd;
mod setup_cmd;
mod task_cmd;
mod untrusted;

use std::process::ExitCode;

/// The async runtime a long-running command serves on (`workers` threads,
/// or one per core).
pub(crate) fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, exit::Failure> {
    use anyhow::Context;
    use exit::WithCode;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .code(exit::CANNOT_START)
}

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(error) => {
            if !error.use_stderr() {
                // Printing help to a closed pipe is not an error worth reporting.
                let _ = error.print();
                return ExitCode::from(exit::OK);
            }
            if std::env::args_os().any(|arg| arg == "--json") {
                let message = error.render().to_string();
                exit::report(true, exit::USAGE, message.trim_end());
            } else {
                let _ = error.print();
            }
            return ExitCode::from(exit::USAGE);
        }
    };
    logging::init(
        cli.global.log_format,
        matches!(cli.command, cli::Command::Mcp { .. }),
    );
    let json = cli.global.json;
    let result = match cli.command {
        cli::Command::Relay(args) => relay_cmd::run(&cli.global, args),
        cli::Command::Watch { exec } => hook_cmd::watch(
            cli.global.home.as_deref(),
            cli.global.identity.clone(),
            &exec,
        ),
        cli::Command::Hook {
            client: cli::HookClient::Claude { max_continues },
        } => hook_cmd::claude(
            cli.global.home.as_deref(),
            cli.global.identity.clone(),
            max_continues,
        )
        // Exit 2 would block the agent in Claude Code; a hook must never.
        .map_err(|failure| exit::Failure { code: 1, ..failure }),
        cli::Command::Connect if !cli.global.json => Err(exit::Failure::new(
            exit::USAGE,
            anyhow::anyhow!("connect speaks JSON lines only: run `agentwire connect --json`"),
        )),
        cli::Command::Bridge {
            listen,
            allow_remote,
        } => bridge_cmd::run(
            cli.global.home.as_deref(),
            cli.global.identity.clone(),
            listen,
            allow_remote,
            cli.global.json,
        ),
        cli::Command::Mcp { push } => mcp_cmd::run(
            cli.global.home.as_deref(),
            cli.global.identity.clone(),
            push,
        ),
        cli::Command::Setup(args) => setup_cmd::run(&cli.global, &args),
        cli::Command::Serve(args) => serve_cmd::run(
            cli.global.home.as_deref(),
            cli.global.identity.clone(),
            args,
        ),
        cli::Command::SandboxExec {
            dir,
            allow_write,
            uid,
            gid,
            command,
        } => Err(sandbox::setup_and_exec(
            &dir,
            &allow_write,
            uid,
            gid,
            &command,
        )),
        cli::Command::Connect => {
            connect_cmd::run(cli.global.home.as_deref(), cli.global.identity.clone())
        }
        command => agent_cmd::run(&cli.global, command),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(failure) => {
            if let Some(error) = &failure.error {
                exit::report(json, failure.code, &exit::sentence(error));
            }
            ExitCode::from(failure.code)
        }
    }
}
