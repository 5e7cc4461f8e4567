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

use agentwire_daemon::api::{Event, Request, Subscribe};
use agentwire_daemon::client::ClientError;
use agentwire_daemon::{DaemonClient, Home};
use anyhow::Context;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::daemon_client::{ANSWER_TIME, call_json, exit_code, extra_wait, start};
use crate::exit::{CANNOT_START, CONFIG, DAEMON_UNREACHABLE, Failure, WithCode};

/// Longest input line, in bytes.
pub(crate) const MAX_LINE_BYTES: usize = 256 * 1024;
/// Output lines buffered for stdout.
const OUT_BUFFER: usize = 256;
/// Pause before re-opening a lost subscription.
const RESUBSCRIBE: Duration = Duration::from_millis(500);

/// The operations a streaming agent may send, and the daemon operation each
/// becomes.
const OPS: [(&str, &str); 9] = [
    ("send", "send"),
    ("recv", "recv"),
    ("ack", "ack"),
    ("status", "state"),
    ("sent", "sent"),
    ("inbox", "inbox"),
    ("contacts", "contacts"),
    ("whoami", "whoami"),
    ("invite", "invite"),
];

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
    let (out, mut lines) = mpsc::channel::<Value>(OUT_BUFFER);
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

async fn write(stdout: &mut tokio::io::Stdout, line: &Value) -> std::io::Result<()> {
    let mut bytes = line.to_string().into_bytes();
    bytes.push(b'\n');
    stdout.write_all(&bytes).await?;
    stdout.flush().await
}

/// Follows the daemon's events, re-subscribing when the daemon restarts.
async fn events(home: Home, identity: Option<String>, out: mpsc::Sender<Value>) {
    let client = DaemonClient::socket(home.socket());
    loop {
        let request = Subscribe {
            identity: identity.clone(),
        };
        let ended = match client.subscribe(request).await {
            Ok(mut events) => loop {
                match events.next().await {
                    Ok(Some(event)) => {
                        if out.send(event_line(&event)).await.is_err() {
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
                let _ = out
                    .send(json!({"event": "error", "code": "request_failed", "message": error.message}))
                    .await;
                return;
            }
            lost => {
                json!({"event": "error", "code": "daemon_unreachable", "message": lost.to_string()})
            }
        };
        if out.send(line).await.is_err() {
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

fn event_line(event: &Event) -> Value {
    serde_json::to_value(event).unwrap_or_else(|e| {
        json!({"event": "error", "code": "daemon_unreachable", "message": format!("cannot encode an event: {e}")})
    })
}

/// Reads commands from stdin and answers each, until stdin ends.
async fn commands(
    home: Home,
    identity: Option<String>,
    out: mpsc::Sender<Value>,
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
            error(
                None,
                "too_large",
                &format!("a command line is at most {MAX_LINE_BYTES} bytes"),
            )
        } else {
            let text = String::from_utf8_lossy(&line);
            if text.trim().is_empty() {
                continue;
            }
            answer(&home, identity.as_deref(), text.trim()).await
        };
        if out.send(answer).await.is_err() {
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

fn error(reference: Option<&Value>, code: &str, message: &str) -> Value {
    let mut line = Map::new();
    line.insert("event".into(), json!("error"));
    line.insert("code".into(), json!(code));
    line.insert("message".into(), json!(message));
    if let Some(reference) = reference {
        line.insert("ref".into(), reference.clone());
    }
    Value::Object(line)
}

/// Validates one command line and carries it out.
async fn answer(home: &Home, identity: Option<&str>, line: &str) -> Value {
    let mut command = match serde_json::from_str(line) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return error(
                None,
                "invalid_json",
                "each line must be a JSON object, e.g. {\"op\":\"recv\"}",
            );
        }
        Err(e) => return error(None, "invalid_json", &format!("not valid JSON: {e}")),
    };
    let reference = command.remove("ref");
    let Some(op) = command.get("op").and_then(Value::as_str).map(str::to_owned) else {
        return error(
            reference.as_ref(),
            "missing_field",
            "missing field `op` (one of send, recv, ack, status, sent, inbox, contacts, whoami, invite)",
        );
    };
    let Some((_, daemon_op)) = OPS.iter().find(|(name, _)| *name == op) else {
        let known: Vec<&str> = OPS.iter().map(|(name, _)| *name).collect();
        return error(
            reference.as_ref(),
            "unknown_op",
            &format!("unknown op {op:?}; use one of {}", known.join(", ")),
        );
    };
    command.insert("op".into(), json!(daemon_op));
    if let Some(identity) = identity {
        command.entry("as").or_insert_with(|| json!(identity));
    }
    let request: Request = match serde_json::from_value(Value::Object(command)) {
        Ok(request) => request,
        Err(e) => {
            let text = e.to_string();
            let code = if text.starts_with("missing field") {
                "missing_field"
            } else {
                "invalid_field"
            };
            return error(reference.as_ref(), code, &format!("{op}: {text}"));
        }
    };
    let limit = ANSWER_TIME + extra_wait(&request);
    let answered = tokio::time::timeout(limit, call_json(home, request)).await;
    let failed = |code: u8, message: String| {
        let mut line = error(reference.as_ref(), "request_failed", &message);
        if let Value::Object(map) = &mut line {
            map.insert("exit_code".into(), json!(code));
        }
        line
    };
    match answered {
        Ok(Ok(result)) => {
            let mut line = Map::new();
            line.insert("event".into(), json!("result"));
            line.insert("op".into(), json!(op));
            line.insert("result".into(), result);
            if let Some(reference) = reference {
                line.insert("ref".into(), reference);
            }
            Value::Object(line)
        }
        Ok(Err(ClientError::Refused(error))) => failed(exit_code(error.code), error.message),
        Ok(Err(error)) => failed(DAEMON_UNREACHABLE, error.to_string()),
        Err(_) => failed(
            DAEMON_UNREACHABLE,
            format!("the daemon did not answer within {limit:?}"),
        ),
    }
}
