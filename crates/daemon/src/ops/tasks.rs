//! `tasks` (both ways), `task` (one, optionally waiting until it ends),
//! `update_task` (the worker reports) and `cancel` (the requester stops it).
//! A task is a message of kind `task`; its id is the task's. The worker's
//! reports travel as `status` messages and its result as a `result` message
//! answering the task; a cancel as a `cancel` message. Each is sealed and
//! queued in the transaction that moves the task on. While it runs, the
//! worker may `stream` pieces of its output (`chunk` messages, numbered
//! from 0), which the requester reads with `chunks`.

use std::sync::Arc;

use agentwire_session::{
    Kind, MAX_CHUNK_BYTES, MessageId, Name, Plaintext, Priority, TaskChunk, TaskStatus,
};

use crate::api::{
    ApiError, Cancel, ChunkList, ChunkView, Chunks, ContactState, DeliveryState, ErrorCode, Stream,
    Streamed, Task, TaskList, TaskRole, TaskState, TaskView, Tasks, UpdateTask,
};
use crate::core::{
    DEFAULT_WAIT, Daemon, MAX_SENT_PER_REQUEST, bounded_max, deadline, parse_message_id, stopping,
};
use crate::ops::Run;
use crate::receive::control_with;
use crate::store::{Direction, StoredMessage, StoredTask};
use crate::views::task_view;

impl Run for Tasks {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<TaskList, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let max = bounded_max(self.max, MAX_SENT_PER_REQUEST)?;
        let owner = name.clone();
        let tasks = daemon.db.run(move |tx| tx.tasks(&owner, max)).await?;
        let contacts = daemon.contacts.get(&daemon.db, &name).await?;
        Ok(TaskList {
            tasks: tasks.iter().map(|t| task_view(t, &contacts)).collect(),
        })
    }
}

impl Run for Task {
    /// With `wait_ms`, answers once the task ends or needs input, or when
    /// the time is up (then as it is).
    async fn run(self, daemon: &Arc<Daemon>) -> Result<TaskView, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let id = parse_message_id("id", &self.id)?;
        let waits = self.wait_ms.is_some_and(|ms| ms > 0);
        let mut wait = daemon.wait_on(&daemon.task_changes, deadline(self.wait_ms, DEFAULT_WAIT));
        loop {
            let timed_out = wait.arm();
            let task = find(daemon, &name, &id).await?;
            let settled = task.state.is_final() || task.state == TaskState::InputRequired;
            if !waits || settled || timed_out {
                let contacts = daemon.contacts.get(&daemon.db, &name).await?;
                return Ok(task_view(&task, &contacts));
            }
            if !wait.sleep().await {
                return Err(stopping());
            }
        }
    }
}

impl Run for UpdateTask {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<TaskView, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let id = parse_message_id("id", &self.id)?;
        let next = self.state;
        let task = find(daemon, &name, &id).await?;
        if task.role != TaskRole::Given {
            return Err(ApiError::invalid(format!(
                "task {id} is one you asked for; only its worker reports on it (you can `cancel` it)"
            )));
        }
        match next {
            TaskState::Submitted | TaskState::Canceled => {
                return Err(ApiError::invalid(format!(
                    "a worker reports working, input-required, completed, failed or rejected, not {next}"
                )));
            }
            TaskState::Completed if self.result.is_none() => {
                return Err(ApiError::invalid(
                    "a completed task needs its result (the text to send back)",
                ));
            }
            _ => {}
        }
        if !task.state.may_become(next) {
            return Err(already(&task, next));
        }
        let detail = self.detail.unwrap_or_default();
        let (kind, body) = match next {
            TaskState::Completed => (Kind::Result, self.result.unwrap_or_default().into_bytes()),
            _ => {
                let state = wire_state(next);
                let status = TaskStatus {
                    state,
                    detail: detail.clone(),
                };
                (Kind::Status, status.encode())
            }
        };
        let detail = (!detail.is_empty()).then_some(detail);
        report(daemon, &name, &task, kind, body, next, detail).await
    }
}

impl Run for Stream {
    /// Numbers the piece after the last one sent, keeps it, and sends it as
    /// a `chunk` message, in one transaction.
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Streamed, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let id = parse_message_id("id", &self.id)?;
        if self.text.is_empty() || self.text.len() > MAX_CHUNK_BYTES {
            return Err(ApiError::invalid(format!(
                "a piece of output is 1 byte to {MAX_CHUNK_BYTES} bytes (16 KiB); this one is {}; send longer output as several",
                self.text.len()
            )));
        }
        let task = find(daemon, &name, &id).await?;
        if task.role != TaskRole::Given {
            return Err(ApiError::invalid(format!(
                "task {id} is one you asked for; only its worker streams its output"
            )));
        }
        if task.state.is_final() {
            return Err(ApiError::invalid(format!(
                "task {id} is {}; nothing more streams",
                task.state
            )));
        }
        peer_still_there(daemon, &name, &task).await?;
        let (owner, task_id, peer, text) = (name.clone(), task.id, task.peer, self.text);
        let seq = {
            let owner = owner.clone();
            daemon
                .db
                .run(move |tx| tx.next_chunk(&owner, &task_id))
                .await?
        };
        let body = TaskChunk {
            seq,
            text: text.clone(),
        }
        .encode();
        let sealed = daemon
            .seal_for(&name, &peer, move |id, now| {
                let mut chunk = control_with(id, Kind::Chunk, body, now);
                chunk.reply_to = Some(task_id);
                chunk
            })
            .await?;
        // Two streams of one task at once could pick the same place: the
        // second finds it taken and nothing of it is kept or sent.
        daemon
            .queue_sealed(&name, sealed, move |tx, plaintext, payload| {
                if !tx.add_chunk(&owner, &task_id, seq, &text, plaintext.sent_at_ms)? {
                    return Err(ApiError::invalid(format!(
                        "task {task_id} streamed meanwhile from elsewhere; send again"
                    )));
                }
                let message = StoredMessage::outgoing_control(
                    plaintext.id,
                    peer,
                    Kind::Chunk,
                    plaintext.sent_at_ms,
                );
                tx.insert_message(&owner, &message, Some(payload))?;
                Ok(())
            })
            .await?;
        Ok(Streamed {
            task: task_id.to_string(),
            seq,
        })
    }
}

impl Run for Chunks {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<ChunkList, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let id = parse_message_id("id", &self.id)?;
        let waits = self.wait_ms.is_some_and(|ms| ms > 0);
        let mut wait = daemon.wait_on(&daemon.task_changes, deadline(self.wait_ms, DEFAULT_WAIT));
        loop {
            let timed_out = wait.arm();
            let task = find(daemon, &name, &id).await?;
            let (owner, after) = (name.clone(), self.after);
            let chunks = daemon
                .db
                .run(move |tx| tx.chunks(&owner, &id, after, MAX_CHUNKS_PER_REQUEST))
                .await?;
            let settled = task.state.is_final() || task.state == TaskState::InputRequired;
            if !waits || !chunks.is_empty() || settled || timed_out {
                let contacts = daemon.contacts.get(&daemon.db, &name).await?;
                return Ok(ChunkList {
                    task: task_view(&task, &contacts),
                    chunks: chunks
                        .into_iter()
                        .map(|(seq, text)| ChunkView {
                            task: id.to_string(),
                            seq,
                            text,
                        })
                        .collect(),
                });
            }
            if !wait.sleep().await {
                return Err(stopping());
            }
        }
    }
}

/// Most pieces of output one `chunks` answer holds (16 KiB each at most).
const MAX_CHUNKS_PER_REQUEST: usize = 64;

impl Run for Cancel {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<TaskView, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let id = parse_message_id("id", &self.id)?;
        let task = find(daemon, &name, &id).await?;
        if task.role != TaskRole::Asked {
            return Err(ApiError::invalid(format!(
                "task {id} was given to you; report on it instead (`rejected` or `failed`)"
            )));
        }
        if !task.state.may_become(TaskState::Canceled) {
            return Err(already(&task, TaskState::Canceled));
        }
        report(
            daemon,
            &name,
            &task,
            Kind::Cancel,
            Vec::new(),
            TaskState::Canceled,
            None,
        )
        .await
    }
}

/// The task `id` of `name`, or a refusal that says so.
async fn find(daemon: &Daemon, name: &Name, id: &MessageId) -> Result<StoredTask, ApiError> {
    let (owner, id) = (name.clone(), *id);
    daemon
        .db
        .run(move |tx| tx.task(&owner, &id))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownMessage,
                format!("{name} has no task {id}; `agentwire tasks` lists them"),
            )
        })
}

fn already(task: &StoredTask, next: TaskState) -> ApiError {
    ApiError::invalid(format!(
        "task {} is {}; it cannot become {next}",
        task.id, task.state
    ))
}

/// Sends the message that tells the other side (`kind`, answering the
/// task) and moves the task to `next`, in one transaction.
async fn report(
    daemon: &Daemon,
    name: &Name,
    task: &StoredTask,
    kind: Kind,
    body: Vec<u8>,
    next: TaskState,
    detail: Option<String>,
) -> Result<TaskView, ApiError> {
    peer_still_there(daemon, name, task).await?;
    let task_id = task.id;
    let chain = if kind == Kind::Result {
        daemon.reply_chain(name, Some(task_id)).await?
    } else {
        None
    };
    let sealed = daemon
        .seal_for(name, &task.peer, |id, now| Plaintext {
            id,
            kind,
            priority: Priority::Normal,
            sent_at_ms: now,
            reply_to: Some(task_id),
            thread: None,
            chain,
            seq: None,
            body,
        })
        .await?;
    let (owner, peer, role) = (name.clone(), task.peer, task.role);
    let moved = daemon
        .queue_sealed(name, sealed, move |tx, plaintext, payload| {
            let message = StoredMessage {
                id: plaintext.id,
                direction: Direction::Out,
                peer,
                kind,
                priority: plaintext.priority,
                reply_to: Some(task_id),
                thread: None,
                sent_at_ms: plaintext.sent_at_ms,
                stored_at_ms: plaintext.sent_at_ms,
                body: if kind == Kind::Result {
                    plaintext.body.clone()
                } else {
                    Vec::new()
                },
                state: DeliveryState::Queued,
                chain,
            };
            tx.insert_message(&owner, &message, Some(payload))?;
            let result = (kind == Kind::Result).then_some(plaintext.id);
            let now = plaintext.sent_at_ms;
            tx.move_task(
                &owner,
                &task_id,
                role,
                &peer,
                next,
                detail.as_deref(),
                result.as_ref(),
                now,
            )?
            .ok_or_else(|| {
                // Moved meanwhile (a cancel arrived): nothing is sent.
                ApiError::invalid(format!("task {task_id} changed meanwhile; look again"))
            })
        })
        .await?;
    daemon
        .publish_tasks(name, std::slice::from_ref(&moved))
        .await;
    let contacts = daemon.contacts.get(&daemon.db, name).await?;
    Ok(task_view(&moved, &contacts))
}

/// Refuses to write about a task whose other side is no longer a contact.
async fn peer_still_there(daemon: &Daemon, name: &Name, task: &StoredTask) -> Result<(), ApiError> {
    match daemon.contact(name, &task.peer).await? {
        Some(contact) if contact.state != ContactState::Removed => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::UnknownPeer,
            format!(
                "task {} is with a contact you no longer have ({}); nothing was sent",
                task.id,
                task.peer.short_id()
            ),
        )),
    }
}

/// The wire's state for a reported state (never `submitted`).
pub(crate) fn wire_state(state: TaskState) -> agentwire_session::TaskState {
    use agentwire_session::TaskState as W;
    match state {
        TaskState::Working | TaskState::Submitted => W::Working,
        TaskState::InputRequired => W::InputRequired,
        TaskState::Completed => W::Completed,
        TaskState::Failed => W::Failed,
        TaskState::Canceled => W::Canceled,
        TaskState::Rejected => W::Rejected,
    }
}

/// The API's state for a state on the wire.
pub(crate) fn api_state(state: agentwire_session::TaskState) -> TaskState {
    use agentwire_session::TaskState as W;
    match state {
        W::Working => TaskState::Working,
        W::InputRequired => TaskState::InputRequired,
        W::Completed => TaskState::Completed,
        W::Failed => TaskState::Failed,
        W::Canceled => TaskState::Canceled,
        W::Rejected => TaskState::Rejected,
    }
}
