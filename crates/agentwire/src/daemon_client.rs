//! Talking to the home's daemon over its Unix socket, starting it on demand.

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentwire_daemon::api::{ErrorCode, Operation, Request};
use agentwire_daemon::client::{ClientError, blocking};
use agentwire_daemon::{DaemonClient, Home, Run};
use anyhow::{Context, anyhow};

use crate::exit::{
    CONFIG, CONTACT_REMOVED, DAEMON_UNREACHABLE, Failure, INTERNAL, INVITE_EXPIRED, INVITE_INVALID,
    INVITE_SPENT, INVITE_WRONG_RELAY, NOT_INITIALIZED, OUTBOX_FULL, RELAY_UNREACHABLE,
    UNKNOWN_PEER, USAGE, WithCode,
};

/// How long a command waits for a daemon it started to come up (it may first
/// wait for a stopping daemon of the same home to exit).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Carries out one operation, starting the daemon if none runs; `extra_wait`
/// is added to the usual answer time for an operation that waits.
pub(crate) fn call<O: Operation>(
    home: &Home,
    op: O,
    extra_wait: Duration,
) -> Result<O::Output, Failure> {
    let socket = home.socket();
    let stream = connect_or_start(home, &socket)?;
    blocking::call_on(stream, &socket, op, ANSWER_TIME + extra_wait).map_err(failure)
}

/// A connection to the home's daemon, starting it if none runs. When one
/// runs (the usual case) this is the connection the request goes on: no
/// probe first.
fn connect_or_start(home: &Home, socket: &std::path::Path) -> Result<UnixStream, Failure> {
    match blocking::connect(socket) {
        Ok(stream) => Ok(stream),
        Err(ClientError::NotRunning { .. }) => {
            start(home)?;
            blocking::connect(socket).map_err(failure)
        }
        Err(error) => Err(failure(error)),
    }
}

/// `recv` with `confirm`, starting the daemon if none runs: the messages,
/// held until [`blocking::Held::confirm`] names those written out.
pub(crate) fn call_held(
    home: &Home,
    recv: agentwire_daemon::api::Recv,
    extra_wait: Duration,
) -> Result<(agentwire_daemon::api::Messages, blocking::Held), Failure> {
    let socket = home.socket();
    let stream = connect_or_start(home, &socket)?;
    blocking::recv_held_on(stream, &socket, recv, ANSWER_TIME + extra_wait).map_err(failure)
}

/// Carries out one operation on a running daemon; `None` when none runs.
pub(crate) fn call_running<O: Operation>(home: &Home, op: O) -> Result<Option<O::Output>, Failure> {
    match blocking::call(&home.socket(), op, ANSWER_TIME) {
        Ok(answer) => Ok(Some(answer)),
        Err(ClientError::NotRunning { .. }) => Ok(None),
        Err(error) => Err(failure(error)),
    }
}

/// How long a command waits for an answer that involves no waiting.
pub(crate) const ANSWER_TIME: Duration = Duration::from_secs(30);

/// The exit code of a daemon error code.
pub(crate) fn exit_code(code: ErrorCode) -> u8 {
    match code {
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
        ErrorCode::OutboxFull => OUTBOX_FULL,
        ErrorCode::ContactRemoved => CONTACT_REMOVED,
        ErrorCode::Internal => INTERNAL,
    }
}

/// A client error as the CLI reports it.
pub(crate) fn failure(error: ClientError) -> Failure {
    match error {
        ClientError::Refused(error) => Failure::new(exit_code(error.code), anyhow!(error.message)),
        other => Failure::new(DAEMON_UNREACHABLE, anyhow!(other)),
    }
}

/// Starts the daemon of an existing home: one made by `agentwire init`. No
/// other command creates a home, so a mistyped `--home` is an error, not a
/// new empty home with a daemon in it.
pub(crate) fn start(home: &Home) -> Result<(), Failure> {
    if home.root().exists() && !home.root().is_dir() {
        return Err(Failure::new(
            CONFIG,
            anyhow!(
                "the agentwire home {} is not a directory; check --home and AGENTWIRE_HOME",
                home.root().display()
            ),
        ));
    }
    if !home.is_initialized() {
        return Err(Failure::new(
            NOT_INITIALIZED,
            anyhow!(
                "no agentwire home at {}: create it with `agentwire init`, or check --home and AGENTWIRE_HOME",
                home.root().display()
            ),
        ));
    }
    spawn_daemon(home)
}

/// Starts `agentwire daemon run` in the background (its own process group,
/// output to daemon.log), creating the home if needed (for `init`), and
/// waits for its socket.
pub(crate) fn spawn_daemon(home: &Home) -> Result<(), Failure> {
    home.ensure().code(CONFIG)?;
    let log = agentwire_daemon::home::open_private_append(&home.log())
        .with_context(|| format!("cannot open {}", home.log().display()))
        .code(CONFIG)?;
    let exe = std::env::current_exe()
        .context("cannot find the agentwire binary")
        .code(DAEMON_UNREACHABLE)?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
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
            let reason = start_failure(&home.log(), log_start)
                .unwrap_or_else(|| format!("it exited ({status}); see {}", home.log().display()));
            return Err(Failure::new(
                DAEMON_UNREACHABLE,
                anyhow!("the daemon could not start: {reason}"),
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

/// Why a daemon that just exited could not start: the error it printed to
/// daemon.log (after `from`), which names the fix.
fn start_failure(log: &std::path::Path, from: u64) -> Option<String> {
    use std::io::{Read, Seek};
    let mut file = std::fs::File::open(log).ok()?;
    file.seek(std::io::SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    file.take(64 * 1024).read_to_string(&mut text).ok()?;
    text.lines()
        .rev()
        .find_map(|line| line.strip_prefix("agentwire: "))
        .map(str::to_owned)
}

/// Carries out one operation from async code, starting the daemon (once) if
/// none listens. A request is sent at most once: one that may have been
/// carried out is never repeated.
pub(crate) async fn call_async<O: Run + Clone>(
    home: &Home,
    op: O,
) -> Result<O::Output, ClientError> {
    let client = DaemonClient::socket(home.socket());
    match client.call(op.clone()).await {
        // Nothing was sent: start the daemon and send it now.
        Err(ClientError::NotRunning { .. }) => {
            let starting = home.clone();
            let started = tokio::task::spawn_blocking(move || start(&starting))
                .await
                .map_err(|e| format!("{e}"))
                .and_then(|started| {
                    started.map_err(|failure| {
                        failure
                            .error
                            .map(|e| format!("{e:#}"))
                            .unwrap_or_else(|| "it did not start".into())
                    })
                });
            if let Err(reason) = started {
                return Err(ClientError::NotRunning {
                    path: home.socket().display().to_string(),
                    source: std::io::Error::other(format!("cannot start the daemon: {reason}")),
                });
            }
            client.call(op).await
        }
        answer => answer,
    }
}

/// How much longer than usual a request may take: what it waits for.
pub(crate) fn extra_wait(request: &Request) -> Duration {
    let millis = match request {
        Request::Recv(recv) => recv.wait_ms.unwrap_or(0),
        Request::Inbox(inbox) => inbox.wait_ms.unwrap_or(0),
        Request::Send(send) if send.wait.is_some() => send.wait_ms.unwrap_or(30_000),
        Request::State(state) if state.wait.is_some() => state.wait_ms.unwrap_or(30_000),
        Request::Accept(accept) => accept.wait_ms.unwrap_or(30_000),
        _ => 0,
    };
    Duration::from_millis(millis).min(agentwire_daemon::MAX_WAIT)
}
