//! `call` (ask a contact for something and wait for its result), `tasks`,
//! `cancel` and `report` (the worker's side).

use std::time::Duration;

use agentwire_daemon::Home;
use agentwire_daemon::api::{self, SendOutcome, TaskState, TaskView};
use anyhow::anyhow;

use crate::agent_cmd::{Output, read_body_from_stdin, with_progress, write_text};
use crate::daemon_client::call as daemon_call;
use crate::exit::{
    Failure, NOT_YET, TASK_CANCELED, TASK_FAILED, TASK_INPUT_REQUIRED, TASK_REJECTED, USAGE,
};
use crate::untrusted::for_terminal;

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `call PEER TEXT`: sends a task and follows it to its end.
pub(crate) fn call(
    home: &Home,
    out: Output,
    identity: Option<String>,
    peer: String,
    text: String,
    timeout: Duration,
    stream: bool,
) -> Result<(), Failure> {
    let body = if text == "-" {
        read_body_from_stdin()?
    } else {
        crate::agent_cmd::note_argument("task text", out.json);
        text
    };
    let send = api::SendMessage {
        identity: identity.clone(),
        to: peer.clone(),
        body,
        kind: Some(api::Kind::Task),
        ..api::SendMessage::default()
    };
    let id = match daemon_call(home, send, Duration::ZERO)? {
        SendOutcome::Queued(queued) => queued.id,
        SendOutcome::Waited(waited) => waited.sent.id,
    };
    let follow = api::Task {
        identity: identity.clone(),
        id: id.clone(),
        wait_ms: Some(millis(timeout)),
    };
    let (task, streamed) = if stream {
        follow_stream(home, out, identity.clone(), &id, timeout)?
    } else {
        let what = format!("waiting for {peer} to finish task {id}");
        let task = with_progress(out, &what, timeout, || daemon_call(home, follow, timeout))?;
        (task, String::new())
    };
    let detail = task
        .detail
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    let ended = |code, message: String| Err(Failure::new(code, anyhow!(message)));
    match task.state {
        TaskState::Completed => {
            // The result is a message in the inbox: taken, so it is read
            // once, here.
            let result = match &task.result {
                Some(result) => daemon_call(
                    home,
                    api::Recv {
                        identity,
                        ids: vec![result.clone()],
                        ..api::Recv::default()
                    },
                    Duration::ZERO,
                )?
                .messages
                .into_iter()
                .next(),
                None => None,
            };
            let answer = serde_json::json!({ "task": &task, "result": &result });
            match &result {
                // What was streamed is on screen already: only the rest of
                // the result (usually nothing), or all of it if it differs.
                Some(message) if !out.json && !streamed.is_empty() => {
                    match message.body.strip_prefix(streamed.as_str()) {
                        Some("") => Ok(()),
                        Some(rest) => write_text(&for_terminal(rest)),
                        None => crate::agent_cmd::write_line(&format!(
                            "\n{}",
                            for_terminal(&message.body)
                        )),
                    }
                }
                Some(message) => out.print(&answer, |_| for_terminal(&message.body)),
                None => {
                    out.print(&answer, |_| String::new())?;
                    out.tell(&format!(
                        "task {id} is completed; its result was already read (see `agentwire tasks`)"
                    ));
                    Ok(())
                }
            }
        }
        state => {
            out.print(&serde_json::json!({ "task": &task }), |_| task_line(&task))?;
            match state {
                TaskState::Failed => ended(TASK_FAILED, format!("{peer} failed task {id}{detail}")),
                TaskState::Rejected => {
                    ended(TASK_REJECTED, format!("{peer} rejected task {id}{detail}"))
                }
                TaskState::Canceled => ended(TASK_CANCELED, format!("task {id} was canceled")),
                TaskState::InputRequired => ended(
                    TASK_INPUT_REQUIRED,
                    format!(
                        "{peer} needs input for task {id}{detail}; answer with `agentwire send {peer} TEXT --reply-to {id}`"
                    ),
                ),
                _ => ended(
                    NOT_YET,
                    format!(
                        "task {id} is {state} after {}; it goes on (follow it with `agentwire tasks`, stop it with `agentwire cancel {id}`)",
                        humantime::format_duration(timeout)
                    ),
                ),
            }
        }
    }
}

/// Follows a task's streamed output to the task's end (or to `timeout`),
/// printing each piece as it comes; the task as it ended, and the text
/// streamed.
fn follow_stream(
    home: &Home,
    out: Output,
    identity: Option<String>,
    id: &str,
    timeout: Duration,
) -> Result<(TaskView, String), Failure> {
    let deadline = std::time::Instant::now() + timeout;
    let mut after = None;
    let mut streamed = String::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let list = daemon_call(
            home,
            api::Chunks {
                identity: identity.clone(),
                id: id.to_owned(),
                after,
                wait_ms: Some(millis(left).max(1)),
            },
            left,
        )?;
        for chunk in &list.chunks {
            // Pieces come in order from the daemon; one seen twice (never
            // expected) is not printed twice.
            if after.is_some_and(|seen| chunk.seq <= seen) {
                continue;
            }
            after = Some(chunk.seq);
            streamed.push_str(&chunk.text);
            if out.json {
                crate::agent_cmd::write_line(&crate::untrusted::json_safe(
                    serde_json::json!({ "chunk": chunk }).to_string(),
                ))?;
            } else {
                write_text(&for_terminal(&chunk.text))?;
            }
        }
        let task = list.task;
        let settled = task.state.is_final() || task.state == TaskState::InputRequired;
        if (settled && list.chunks.is_empty()) || left.is_zero() {
            return Ok((task, streamed));
        }
    }
}

/// `send-file`.
pub(crate) fn send_file(
    home: &Home,
    out: Output,
    identity: Option<String>,
    (peer, path, name): (String, std::path::PathBuf, Option<String>),
    max_size: u64,
    wait: Option<Duration>,
) -> Result<(), Failure> {
    let absolute = std::fs::canonicalize(&path)
        .map_err(|e| Failure::new(USAGE, anyhow!("cannot read {}: {e}", path.display())))?;
    let request = api::SendFile {
        identity: identity.clone(),
        to: peer.clone(),
        path: absolute.display().to_string(),
        max_bytes: Some(max_size),
        name,
    };
    let what = format!("encrypting and queueing {} for {peer}", path.display());
    let sent = with_progress(out, &what, Duration::from_secs(600), || {
        daemon_call(home, request, Duration::from_secs(600))
    })?;
    let line = |sent: &api::FileSent| {
        format!(
            "{} {} ({} bytes, {} parts) to {}",
            sent.id, sent.name, sent.size, sent.parts, sent.to
        )
    };
    let Some(timeout) = wait else {
        return out.print(&sent, line);
    };
    let follow = api::State {
        identity,
        id: sent.id.clone(),
        wait: Some(api::DeliveryState::Delivered),
        wait_ms: Some(millis(timeout)),
    };
    let what = format!("waiting for {peer} to check and keep the file");
    let state = with_progress(out, &what, timeout, || daemon_call(home, follow, timeout))?;
    out.print(
        &serde_json::json!({ "file": &sent, "state": &state }),
        |_| format!("{} · {}", line(&sent), state.state),
    )?;
    match state.state {
        api::DeliveryState::Delivered | api::DeliveryState::Read => Ok(()),
        s if s.is_failure() => Err(Failure::new(
            crate::exit::UNDELIVERABLE,
            anyhow!(
                "{peer} did not keep the file ({s}): {}",
                state.reason.as_deref().map_or_else(
                    || "the relay gave it up".to_owned(),
                    |r| r.escape_debug().to_string()
                )
            ),
        )),
        s => Err(Failure::new(
            NOT_YET,
            anyhow!(
                "the file is {s} after {}; it goes on",
                humantime::format_duration(timeout)
            ),
        )),
    }
}

/// `card` and `card set`.
pub(crate) fn card(
    home: &Home,
    out: Output,
    identity: Option<String>,
    action: Option<crate::cli::CardAction>,
) -> Result<(), Failure> {
    let show = |card: &api::CardView| {
        let mut text = format!(
            "{}\n  capabilities: {}\n  takes tasks: {}",
            if card.name.is_empty() {
                "(no name)"
            } else {
                &card.name
            },
            if card.capabilities.is_empty() {
                "none".to_owned()
            } else {
                card.capabilities.join(", ")
            },
            if card.takes_tasks { "yes" } else { "no" }
        );
        if !card.description.is_empty() {
            text.push_str(&format!("\n  {}", card.description.replace('\n', "\n  ")));
        }
        text
    };
    match action {
        None => {
            let card = daemon_call(home, api::GetCard { identity }, Duration::ZERO)?;
            out.print(&card, show)
        }
        Some(crate::cli::CardAction::Set {
            name,
            description,
            capabilities,
            takes_tasks,
            no_tasks,
        }) => {
            let capabilities = capabilities.map(|tags| {
                tags.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            });
            let takes_tasks = match (takes_tasks, no_tasks) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let set = daemon_call(
                home,
                api::SetCard {
                    identity,
                    name,
                    description,
                    capabilities,
                    takes_tasks,
                },
                Duration::ZERO,
            )?;
            out.print(&set, |set| {
                let told = if set.sent_to.is_empty() {
                    "no contacts to send it to yet".to_owned()
                } else {
                    format!("sent to {}", set.sent_to.join(", "))
                };
                format!("{}\n{told}", show(&set.card))
            })
        }
        Some(crate::cli::CardAction::Publish { allow }) => {
            let listing = daemon_call(
                home,
                api::PublishCard {
                    identity,
                    allow: Some(allow),
                    withdraw: false,
                },
                Duration::ZERO,
            )?;
            out.print(&listing, |l| {
                format!(
                    "listed on {} under {} until {}; whoever pairs may send: {}",
                    l.relay,
                    if l.capabilities.is_empty() {
                        "no capability (only an unfiltered `discover --relay` finds it)".to_owned()
                    } else {
                        l.capabilities.join(", ")
                    },
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_millis(l.expires_at_ms)
                    ),
                    l.permissions.join(", ")
                )
            })
        }
        Some(crate::cli::CardAction::Unpublish) => {
            let listing = daemon_call(
                home,
                api::PublishCard {
                    identity,
                    allow: None,
                    withdraw: true,
                },
                Duration::ZERO,
            )?;
            out.print(&listing, |l| {
                format!("withdrawn from the directory of {}", l.relay)
            })
        }
    }
}

/// `discover`.
pub(crate) fn discover(
    home: &Home,
    out: Output,
    identity: Option<String>,
    capability: Option<String>,
    wait: Option<Duration>,
) -> Result<(), Failure> {
    let Some(wait) = wait else {
        return discover_relay(home, out, identity, capability);
    };
    let found = daemon_call(
        home,
        api::Discover {
            identity,
            capability: capability.clone(),
            wait_ms: Some(millis(wait)),
            relay: false,
        },
        wait,
    )?;
    out.print_lines(&found, &found.contacts, |c| {
        let state = if c.online { "online" } else { "offline" };
        match &c.card {
            Some(card) => format!(
                "{} {} {state} {}{} · {}",
                c.name,
                c.short_id,
                if card.takes_tasks {
                    "takes tasks · "
                } else {
                    ""
                },
                card.capabilities.join(","),
                card.name
            ),
            None => format!("{} {} {state} (no card)", c.name, c.short_id),
        }
    })?;
    if found.contacts.is_empty() {
        out.tell(&match capability {
            Some(tag) => format!("no contact's card lists {tag:?}"),
            None => "no contacts yet".to_owned(),
        });
    }
    Ok(())
}

/// `discover --relay`: the relay directory's listings, each with the
/// command that pairs with it.
fn discover_relay(
    home: &Home,
    out: Output,
    identity: Option<String>,
    capability: Option<String>,
) -> Result<(), Failure> {
    let found = daemon_call(
        home,
        api::Discover {
            identity,
            capability: capability.clone(),
            wait_ms: None,
            relay: true,
        },
        Duration::ZERO,
    )?;
    out.print_lines(&found, &found.listed, |l| {
        let card = &l.card;
        let mut line = format!(
            "{} {} · {}{} · offers {}",
            l.short_id,
            if card.name.is_empty() {
                "(no name)"
            } else {
                &card.name
            },
            if card.takes_tasks {
                "takes tasks · "
            } else {
                ""
            },
            card.capabilities.join(","),
            l.permissions.join(",")
        );
        match &l.contact {
            Some(petname) => line.push_str(&format!("\n  already your contact {petname}")),
            None => line.push_str(&format!("\n  agentwire accept {}", l.invite)),
        }
        line
    })?;
    if found.listed.is_empty() {
        out.tell(&match capability {
            Some(tag) => format!("nobody on the relay's directory lists {tag:?}"),
            None => "nobody is listed on the relay's directory".to_owned(),
        });
    }
    Ok(())
}

/// `tasks`.
pub(crate) fn list(
    home: &Home,
    out: Output,
    identity: Option<String>,
    max: usize,
) -> Result<(), Failure> {
    let list = daemon_call(
        home,
        api::Tasks {
            identity,
            max: Some(max),
        },
        Duration::ZERO,
    )?;
    out.print_lines(&list, &list.tasks, task_line)?;
    if list.tasks.is_empty() {
        out.tell("no tasks yet: ask a contact with `agentwire call PEER TEXT`");
    }
    Ok(())
}

/// `cancel TASK`.
pub(crate) fn cancel(
    home: &Home,
    out: Output,
    identity: Option<String>,
    task: String,
) -> Result<(), Failure> {
    let task = daemon_call(home, api::Cancel { identity, id: task }, Duration::ZERO)?;
    out.print(&task, task_line)
}

/// `report TASK STATE [TEXT]`.
pub(crate) fn report(
    home: &Home,
    out: Output,
    identity: Option<String>,
    task: String,
    state: TaskState,
    text: Option<String>,
) -> Result<(), Failure> {
    let text = match text.as_deref() {
        Some("-") => Some(read_body_from_stdin()?),
        Some(_) => {
            crate::agent_cmd::note_argument("report text", out.json);
            text
        }
        None => None,
    };
    let (detail, result) = if state == TaskState::Completed {
        let Some(result) = text else {
            return Err(Failure::new(
                USAGE,
                anyhow!(
                    "`report TASK completed` needs the result: `report TASK completed TEXT` (or `-` for stdin)"
                ),
            ));
        };
        (None, Some(result))
    } else {
        (text, None)
    };
    let update = api::UpdateTask {
        identity,
        id: task,
        state,
        detail,
        result,
    };
    let task = daemon_call(home, update, Duration::ZERO)?;
    out.print(&task, task_line)
}

/// A task on one line: id, state, side and contact, then its start.
fn task_line(task: &TaskView) -> String {
    let side = match task.role {
        api::TaskRole::Asked => "asked",
        api::TaskRole::Given => "given by",
    };
    let summary: String = task.summary.chars().take(60).collect();
    let summary = summary.replace(['\n', '\r'], " ");
    let detail = task
        .detail
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    format!(
        "{} {}{detail} {side} {}({}) · {summary}",
        task.id,
        task.state,
        task.peer.name.as_deref().unwrap_or("?"),
        task.peer.short_id,
    )
}
