//! `agentwire connect --json`: JSON lines for streaming agents.
//!
//! Commands come in on stdin, one JSON object a line; everything goes out on
//! stdout, one JSON object a line: the answer to each command
//! (`{"event":"result",...}` or `{"event":"error",...}`, echoing the
//! command's `ref` if it had one) and, as they happen, `{"event":"message",...}`
//! for each unread message and `{"event":"state",...}` for each change of a
//! sent message's state. PROTOCOL.md ("JSON lines") has the schema.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentwire_daemon::Home;
use agentwire_daemon::api::Request;
use serde_json::{Value, json};

use crate::daemon_client::{call, start};
use crate::exit::{CONFIG, Failure, WithCode};

/// Longest input line, in bytes.
pub(crate) const MAX_LINE_BYTES: usize = 256 * 1024;

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
    if UnixStream::connect(home.socket()).is_err() {
        start(&home)?;
    }
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    let emit = {
        let stdout = stdout.clone();
        move |value: &Value| {
            let mut out = stdout.lock().unwrap_or_else(|e| e.into_inner());
            // A closed stdout ends the session.
            if writeln!(out, "{value}").and_then(|()| out.flush()).is_err() {
                std::process::exit(0);
            }
        }
    };

    // Events: one subscription connection, re-opened if the daemon restarts.
    {
        let home = home.clone();
        let identity = identity.clone();
        let emit = emit.clone();
        std::thread::spawn(move || {
            loop {
                match stream_events(&home, identity.as_deref(), &emit) {
                    Err(Ended::Refused(message)) => {
                        // Retrying cannot help (no such identity): say so once.
                        emit(
                            &json!({"event": "error", "code": "request_failed", "message": message}),
                        );
                        return;
                    }
                    Err(Ended::Lost(message)) => {
                        emit(
                            &json!({"event": "error", "code": "daemon_unreachable", "message": message}),
                        );
                    }
                    Ok(()) => {}
                }
                std::thread::sleep(Duration::from_millis(500));
                if UnixStream::connect(home.socket()).is_err() {
                    let _ = start(&home);
                }
            }
        });
    }

    // Commands: one line in, one answer out.
    let stdin = std::io::stdin();
    let mut reader = BufReader::new(stdin.lock());
    loop {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .unwrap_or(0);
        if read == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE_BYTES && !line.ends_with(b"\n") {
            // Skip the rest of the over-long line without keeping it.
            while let Ok(buffer) = reader.fill_buf() {
                if buffer.is_empty() {
                    break;
                }
                match buffer.iter().position(|b| *b == b'\n') {
                    Some(end) => {
                        reader.consume(end + 1);
                        break;
                    }
                    None => {
                        let len = buffer.len();
                        reader.consume(len);
                    }
                }
            }
            emit(&error(
                None,
                "too_large",
                &format!("a command line is at most {MAX_LINE_BYTES} bytes"),
            ));
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        emit(&answer(&home, identity.as_deref(), text.trim()));
    }
}

fn error(reference: Option<&Value>, code: &str, message: &str) -> Value {
    let mut value = json!({"event": "error", "code": code, "message": message});
    if let Some(reference) = reference {
        value["ref"] = reference.clone();
    }
    value
}

/// Validates one command line and carries it out.
fn answer(home: &Home, identity: Option<&str>, line: &str) -> Value {
    let mut command: Value = match serde_json::from_str(line) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) => {
            return error(
                None,
                "invalid_json",
                "each line must be a JSON object, e.g. {\"op\":\"recv\"}",
            );
        }
        Err(e) => return error(None, "invalid_json", &format!("not valid JSON: {e}")),
    };
    let reference = command.as_object_mut().and_then(|map| map.remove("ref"));
    let Some(op) = command["op"].as_str().map(str::to_owned) else {
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
    command["op"] = json!(daemon_op);
    if let (Some(identity), None) = (identity, command.get("as")) {
        command["as"] = json!(identity);
    }
    // A command that waits (recv with wait_ms, send with wait) gets that long
    // on top of the usual answer time; a send's wait defaults to 30 s.
    let default_wait = if command.get("wait").is_some_and(|w| !w.is_null()) {
        30_000
    } else {
        0
    };
    let waits = Duration::from_millis(command["wait_ms"].as_u64().unwrap_or(default_wait));
    let request: Request = match serde_json::from_value(command) {
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
    match call(home, &request, waits) {
        Ok(result) => {
            let mut value = json!({"event": "result", "op": op, "result": result});
            if let Some(reference) = reference {
                value["ref"] = reference;
            }
            value
        }
        Err(failure) => {
            let message = failure
                .error
                .map(|e| format!("{e:#}"))
                .unwrap_or_else(|| "failed".into());
            let mut value = error(reference.as_ref(), "request_failed", &message);
            value["exit_code"] = json!(failure.code);
            value
        }
    }
}

/// Copies the daemon's event stream to stdout until it ends.
fn stream_events(home: &Home, identity: Option<&str>, emit: &impl Fn(&Value)) -> Result<(), Ended> {
    let lost = |e: std::io::Error| Ended::Lost(format!("cannot reach the daemon: {e}"));
    let stream = UnixStream::connect(home.socket()).map_err(lost)?;
    let request = json!({"op": "subscribe", "as": identity});
    (&stream)
        .write_all(format!("{request}\n").as_bytes())
        .map_err(lost)?;
    for line in BufReader::new(&stream).lines() {
        let line = line.map_err(lost)?;
        match serde_json::from_str::<Value>(&line) {
            Ok(value) if value.get("event").is_some() => emit(&value),
            Ok(value) => {
                let message = value["error"]["message"]
                    .as_str()
                    .unwrap_or("subscription refused")
                    .to_owned();
                return Err(Ended::Refused(message));
            }
            Err(_) => {}
        }
    }
    Err(Ended::Lost(
        "the daemon closed the event stream; reconnecting".into(),
    ))
}

/// Why an event stream ended.
enum Ended {
    /// The daemon refused the subscription.
    Refused(String),
    /// The connection was lost (the daemon stopped or restarted).
    Lost(String),
}
