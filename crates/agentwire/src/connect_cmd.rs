//! `agentwire connect --json`: JSON lines for streaming agents.
//!
//! Commands come in on stdin, one JSON object a line; everything goes out on
//! stdout, one JSON object a line: the answer to each command
//! (`{"event":"result",...}` or `{"event":"error",...}`, echoing the
//! command's `ref` if it had one) and, as they happen, `{"event":"message",...}`
//! for each unread message and `{"event":"state",...}` for each change of a
//! sent message's state. PROTOCOL.md ("JSON lines") has the schema.
//!
//! Three tasks share the session: commands (stdin, one at a time), events
//! (the daemon subscription, re-opened when the daemon restarts) and the
//! writer (stdout), which owns the other two: it ends the session when stdin
//! ends or stdout closes, and cancels them.

use std::time::Duration;

use agentwire_daemon::api::connect::{Command, Line, LineError, MAX_LINE_BYTES, Outcome, Reply};
use agentwire_daemon::api::{Request, Subscribe};
use agentwire_daemon::client::ClientError;
use agentwire_daemon::{DaemonClient, Home};
use anyhow::Context;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::daemon_client::{ANSWER_TIME, call_async, exit_code, extra_wait, start};
use crate::exit::{CANNOT_START, CONFIG, DAEMON_UNREACHABLE, Failure, WithCode};

/// Output lines buffered for stdout.
const OUT_BUFFER: usize = 256;
/// Pause before re-opening a lost subscription.
const RESUBSCRIBE: Duration = Duration::from_millis(500);

pub(crate) fn run(
    home_flag: Option<&std::path::Path>,
    identity: Option<String>,
) -> Result<(), Failure> {
    let home = Home::resolve(home_flag).code(CONFIG)?;
    if std::os::unix::net::UnixStream::connect(home.socket()).is_err() {
        start(&home)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .code(CANNOT_START)?;
    runtime.block_on(session(home, identity));
    // A read of stdin may still be blocked in its thread: do not wait for it.
    runtime.shutdown_background();
    Ok(())
}

/// Runs the session until stdin ends or stdout closes; owns the events and
/// commands tasks and ends them then.
async fn session(home: Home, identity: Option<String>) {
    let (out, mut lines) = mpsc::channel::<Line>(OUT_BUFFER);
    let done = CancellationToken::new();
    let events = tokio::spawn(events(home.clone(), identity.clone(), out.clone()));
    let commands = tokio::spawn(commands(home, identity, out, done.clone()));
    let mut stdout = tokio::io::stdout();
    loop {
        let line = tokio::select! {
            biased;
            line = lines.recv() => line,
            () = done.cancelled() => {
                // Stdin ended: write the answers still queued, then stop.
                while let Ok(line) = lines.try_recv() {
                    if write(&mut stdout, &line).await.is_err() {
                        break;
                    }
                }
                None
            }
        };
        let Some(line) = line else { break };
        if write(&mut stdout, &line).await.is_err() {
            // A closed stdout ends the session.
            break;
        }
    }
    // A command still waiting is abandoned: its connection closes, and the
    // daemon takes nothing for a reader that is gone.
    events.abort();
    commands.abort();
}

async fn write(stdout: &mut tokio::io::Stdout, line: &Line) -> std::io::Result<()> {
    let text = serde_json::to_string(line).map_err(std::io::Error::other)?;
    let mut bytes = crate::untrusted::json_safe(text).into_bytes();
    bytes.push(b'\n');
    stdout.write_all(&bytes).await?;
    stdout.flush().await
}

/// Follows the daemon's events, re-subscribing when the daemon restarts.
async fn events(home: Home, identity: Option<String>, out: mpsc::Sender<Line>) {
    let client = DaemonClient::socket(home.socket());
    loop {
        let request = Subscribe {
            identity: identity.clone(),
        };
        let ended = match client.subscribe(request).await {
            Ok(mut events) => loop {
                match events.next().await {
                    Ok(Some(event)) => {
                        if out.send(Line::Event(event)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        break ClientError::Lost {
                            path: home.socket().display().to_string(),
                            reason: "the daemon closed the event stream; reconnecting".into(),
                        };
                    }
                    Err(error) => break error,
                }
            },
            Err(error) => error,
        };
        let line = match &ended {
            // Retrying cannot help (no such identity): say so once.
            ClientError::Refused(error) => {
                let line = Reply::error(LineError::RequestFailed, error.message.clone(), None);
                let _ = out.send(Line::Reply(line)).await;
                return;
            }
            lost => Reply::error(LineError::DaemonUnreachable, lost.to_string(), None),
        };
        if out.send(Line::Reply(line)).await.is_err() {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE).await;
        if std::os::unix::net::UnixStream::connect(home.socket()).is_err() {
            let home = home.clone();
            if let Ok(Err(failure)) = tokio::task::spawn_blocking(move || start(&home)).await {
                tracing::debug!(code = failure.code, "the daemon did not start again yet");
            }
        }
    }
}

/// Reads commands from stdin and answers each, until stdin ends.
async fn commands(
    home: Home,
    identity: Option<String>,
    out: mpsc::Sender<Line>,
    done: CancellationToken,
) {
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    loop {
        let mut line = Vec::new();
        let read = (&mut stdin)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .unwrap_or(0);
        if read == 0 {
            break;
        }
        let answer = if line.len() > MAX_LINE_BYTES && !line.ends_with(b"\n") {
            skip_rest_of_line(&mut stdin).await;
            Reply::error(
                LineError::TooLarge,
                format!("a command line is at most {MAX_LINE_BYTES} bytes"),
                None,
            )
        } else {
            let text = String::from_utf8_lossy(&line);
            if text.trim().is_empty() {
                continue;
            }
            answer(&home, identity.as_deref(), text.trim()).await
        };
        if out.send(Line::Reply(answer)).await.is_err() {
            break;
        }
    }
    done.cancel();
}

/// Skips the rest of an over-long line without keeping it.
async fn skip_rest_of_line(stdin: &mut tokio::io::BufReader<tokio::io::Stdin>) {
    while let Ok(buffer) = stdin.fill_buf().await {
        if buffer.is_empty() {
            return;
        }
        match buffer.iter().position(|b| *b == b'\n') {
            Some(end) => {
                stdin.consume(end + 1);
                return;
            }
            None => {
                let len = buffer.len();
                stdin.consume(len);
            }
        }
    }
}

/// Validates one command line and carries it out.
async fn answer(home: &Home, identity: Option<&str>, line: &str) -> Reply {
    let mut fields = match serde_json::from_str(line) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Reply::error(
                LineError::InvalidJson,
                "each line must be a JSON object, e.g. {\"op\":\"recv\"}",
                None,
            );
        }
        Err(e) => {
            return Reply::error(LineError::InvalidJson, format!("not valid JSON: {e}"), None);
        }
    };
    let reference = fields.remove("ref");
    let mut command = match command(fields) {
        Ok(command) => command,
        Err((code, message)) => return Reply::error(code, message, reference),
    };
    if let (Some(identity), slot @ None) = (identity, command.identity_mut()) {
        *slot = Some(identity.to_owned());
    }
    let request = Request::from(command.clone());
    let limit = ANSWER_TIME + extra_wait(&request);
    let answered = tokio::time::timeout(limit, carry_out(home, command)).await;
    let failed = |code: u8, message: String| Reply::Error {
        code: LineError::RequestFailed,
        message,
        reference: reference.clone(),
        exit_code: Some(code),
    };
    match answered {
        Ok(Ok(outcome)) => Reply::Result {
            outcome,
            reference: reference.clone(),
        },
        Ok(Err(ClientError::Refused(error))) => failed(exit_code(error.code), error.message),
        Ok(Err(error)) => failed(DAEMON_UNREACHABLE, error.to_string()),
        Err(_) => failed(
            DAEMON_UNREACHABLE,
            format!("the daemon did not answer within {limit:?}"),
        ),
    }
}

/// Reads a command from a line's fields (without `ref`), saying which
/// field is wrong when it does not fit.
fn command(fields: Map<String, Value>) -> Result<Command, (LineError, String)> {
    let Some(op) = fields.get("op").and_then(Value::as_str).map(str::to_owned) else {
        return Err((
            LineError::MissingField,
            format!("missing field `op` (one of {})", Command::NAMES.join(", ")),
        ));
    };
    if !Command::NAMES.contains(&op.as_str()) {
        return Err((
            LineError::UnknownOp,
            format!(
                "unknown op {op:?}; use one of {}",
                Command::NAMES.join(", ")
            ),
        ));
    }
    serde_json::from_value(Value::Object(fields)).map_err(|e| {
        let text = e.to_string();
        let code = if text.starts_with("missing field") {
            LineError::MissingField
        } else {
            LineError::InvalidField
        };
        (code, format!("{op}: {text}"))
    })
}

macro_rules! dispatch {
    ($($variant:ident),+) => {
        /// Sends a command to the daemon and returns its typed answer.
        async fn carry_out(home: &Home, command: Command) -> Result<Outcome, ClientError> {
            Ok(match command {
                $( Command::$variant(op) => Outcome::$variant(call_async(home, op).await?), )+
            })
        }
    };
}
agentwire_api::each_command!(dispatch);
