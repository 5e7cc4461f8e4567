//! Talking to the home's daemon over its Unix socket, starting it on demand.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentwire_daemon::Home;
use agentwire_daemon::api::{ErrorCode, Request, Response};
use anyhow::{Context, anyhow};

use crate::exit::{
    CONFIG, DAEMON_UNREACHABLE, Failure, INTERNAL, INVITE_EXPIRED, INVITE_INVALID, INVITE_SPENT,
    INVITE_WRONG_RELAY, NOT_INITIALIZED, RELAY_UNREACHABLE, UNKNOWN_PEER, USAGE, WithCode,
};

/// How long a command waits for a daemon it started to come up (it may first
/// wait for a stopping daemon of the same home to exit).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Sends one request and returns the result, starting the daemon if needed.
pub(crate) fn call(
    home: &Home,
    request: &Request,
    extra_wait: Duration,
) -> Result<serde_json::Value, Failure> {
    let stream = match UnixStream::connect(home.socket()) {
        Ok(stream) => stream,
        Err(_) => {
            start(home)?;
            UnixStream::connect(home.socket())
                .with_context(|| format!("cannot reach the daemon at {}", home.socket().display()))
                .code(DAEMON_UNREACHABLE)?
        }
    };
    exchange(stream, request, extra_wait)
}

/// Sends one request to a running daemon; `None` when none runs.
pub(crate) fn call_running(
    home: &Home,
    request: &Request,
) -> Result<Option<serde_json::Value>, Failure> {
    match UnixStream::connect(home.socket()) {
        Ok(stream) => exchange(stream, request, Duration::ZERO).map(Some),
        Err(_) => Ok(None),
    }
}

fn exchange(
    stream: UnixStream,
    request: &Request,
    extra_wait: Duration,
) -> Result<serde_json::Value, Failure> {
    let unreachable = |e: std::io::Error| {
        Failure::new(
            DAEMON_UNREACHABLE,
            anyhow!("the daemon stopped answering: {e}"),
        )
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30) + extra_wait))
        .map_err(unreachable)?;
    let mut line = serde_json::to_vec(request)
        .context("cannot encode the request")
        .code(INTERNAL)?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(unreachable)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(unreachable)?;
    if answer.is_empty() {
        return Err(Failure::new(
            DAEMON_UNREACHABLE,
            anyhow!(
                "the daemon closed the connection without answering; see daemon.log in the home"
            ),
        ));
    }
    let response: Response = serde_json::from_str(&answer)
        .context("the daemon's answer is not valid")
        .code(INTERNAL)?;
    match (response.ok, response.result, response.error) {
        (true, Some(result), _) => Ok(result),
        (_, _, Some(error)) => {
            let code = match error.code {
                ErrorCode::InvalidRequest
                | ErrorCode::BadName
                | ErrorCode::NameTaken
                | ErrorCode::BodyTooLarge => USAGE,
                ErrorCode::NotInitialized => NOT_INITIALIZED,
                ErrorCode::UnknownIdentity
                | ErrorCode::UnknownPeer
                | ErrorCode::AmbiguousPeer
                | ErrorCode::UnknownMessage => UNKNOWN_PEER,
                ErrorCode::RelayUnreachable => RELAY_UNREACHABLE,
                ErrorCode::InviteInvalid => INVITE_INVALID,
                ErrorCode::InviteExpired => INVITE_EXPIRED,
                ErrorCode::InviteSpent => INVITE_SPENT,
                ErrorCode::InviteWrongRelay => INVITE_WRONG_RELAY,
                ErrorCode::Internal => INTERNAL,
            };
            Err(Failure::new(code, anyhow!(error.message)))
        }
        _ => Err(Failure::new(
            INTERNAL,
            anyhow!("the daemon's answer is empty"),
        )),
    }
}

/// Starts `agentwire daemon run` in the background (its own process group,
/// output to daemon.log) and waits for its socket.
pub(crate) fn start(home: &Home) -> Result<(), Failure> {
    home.ensure().code(CONFIG)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(home.log())
        .with_context(|| format!("cannot open {}", home.log().display()))
        .code(CONFIG)?;
    let exe = std::env::current_exe()
        .context("cannot find the agentwire binary")
        .code(DAEMON_UNREACHABLE)?;
    let mut child = Command::new(exe)
        .arg("--home")
        .arg(home.root())
        .args(["daemon", "run"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().code(CONFIG)?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start the daemon")
        .code(DAEMON_UNREACHABLE)?;
    let started = Instant::now();
    while started.elapsed() < START_TIMEOUT {
        if UnixStream::connect(home.socket()).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Failure::new(
                DAEMON_UNREACHABLE,
                anyhow!(
                    "the daemon exited at start ({status}); see {}",
                    home.log().display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(Failure::new(
        DAEMON_UNREACHABLE,
        anyhow!(
            "the daemon did not come up within {START_TIMEOUT:?}; see {}",
            home.log().display()
        ),
    ))
}
