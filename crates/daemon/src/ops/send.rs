//! `send` (seal a message and queue it, optionally waiting for a delivery
//! state), `state` (one sent message, optionally waiting) and `sent`.

use std::sync::Arc;

use agentwire_session::{MessageId, Plaintext};

use crate::api::{
    ApiError, DeliveryState, ErrorCode, Queued, SendMessage, SendOutcome, Sent, SentList, SentView,
    State, TaskRole, TaskState, Waited,
};
use agentwire_session::Name;

use crate::core::{
    DEFAULT_WAIT, Daemon, MAX_SENT_PER_REQUEST, OUTBOX_ROOM_WAIT, bounded_max, deadline,
    parse_message_id, stopping,
};
use crate::ops::Run;
use crate::store::{Direction, StoreError, StoredMessage};
use crate::views::{api_priority, sent_view, session_kind, session_priority};

impl Run for SendMessage {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<SendOutcome, ApiError> {
        if let Some(wanted) = self.wait {
            check_waitable(wanted)?;
        }
        let (identity, wait, wait_ms) = (self.identity.clone(), self.wait, self.wait_ms);
        let queued = queue(daemon, self).await?;
        let Some(wanted) = wait else {
            return Ok(SendOutcome::Queued(queued));
        };
        let id = parse_message_id("id", &queued.id)?;
        let (sent, reached) =
            wait_for_state(daemon, identity.as_deref(), &id, wanted, wait_ms).await?;
        let held_up_by = if reached || sent.state.is_failure() {
            None
        } else {
            held_up_by(daemon, identity.as_deref(), sent.state)
        };
        Ok(SendOutcome::Waited(Waited {
            sent,
            reached,
            wanted,
            held_up_by,
        }))
    }
}

/// Seals the message in the contact's session and stores both in one
/// transaction; the link pushes it from there.
async fn queue(daemon: &Arc<Daemon>, request: SendMessage) -> Result<Queued, ApiError> {
    let reply_to = optional_id("--reply-to", request.reply_to.as_deref())?;
    let thread = optional_id("--thread", request.thread.as_deref())?;
    let priority = request.priority.unwrap_or_default();
    let kind = session_kind(request.kind.unwrap_or_default());
    let (name, _) = daemon.pick(request.identity.as_deref())?;
    let contact = daemon.resolve_peer(&name, &request.to).await?;
    if contact.state == crate::api::ContactState::Removed {
        return Err(ApiError::new(
            ErrorCode::ContactRemoved,
            format!(
                "{peer} removed you from its contacts: nothing more reaches it. A new invite pairs you again: send it yours (`agentwire invite`) or accept one of its own",
                peer = contact.petname
            ),
        ));
    }
    room_in_outbox(daemon, &name).await?;
    let chain = daemon.reply_chain(&name, reply_to).await?;
    let priority = session_priority(priority);
    let body = request.body.into_bytes();
    let sealed = daemon
        .seal_for(&name, &contact.address, |id, now| Plaintext {
            id,
            kind,
            priority,
            sent_at_ms: now,
            reply_to,
            thread,
            chain,
            seq: None,
            body,
        })
        .await?;
    let queued = Queued {
        id: sealed.plaintext.id.to_string(),
        to: contact.petname.as_str().to_owned(),
        state: DeliveryState::Queued,
        priority: api_priority(priority),
    };
    let (owner, peer) = (name.clone(), contact.address);
    let tasks = daemon
        .queue_sealed(&name, sealed, move |tx, plaintext, payload| {
            let message = StoredMessage {
                id: plaintext.id,
                direction: Direction::Out,
                peer,
                kind,
                priority: plaintext.priority,
                reply_to,
                thread,
                sent_at_ms: plaintext.sent_at_ms,
                stored_at_ms: plaintext.sent_at_ms,
                body: plaintext.body.clone(),
                state: DeliveryState::Queued,
                chain,
            };
            tx.insert_message(&owner, &message, Some(payload))?;
            Ok::<_, ApiError>(task_effects(tx, &owner, &message)?)
        })
        .await?;
    daemon.publish_tasks(&name, &tasks).await;
    let depth = daemon.outbox_depth.get(&name).unwrap_or(0);
    daemon.outbox_depth.set(name.clone(), depth + 1);
    daemon.outbox_waker(&name).notify_one();
    Ok(queued)
}

/// What sending `message` does to tasks, in its transaction: a task starts
/// one we asked for; a result to a task we were given completes it. The
/// tasks that changed.
fn task_effects(
    tx: &crate::store::Tx<'_>,
    owner: &Name,
    message: &StoredMessage,
) -> Result<Vec<crate::store::StoredTask>, StoreError> {
    use agentwire_session::Kind;
    let now = message.sent_at_ms;
    let changed = match (message.kind, message.reply_to) {
        (Kind::Task, _) => {
            tx.insert_task(owner, &message.id, TaskRole::Asked, &message.peer, now)?;
            tx.task(owner, &message.id)?
        }
        (Kind::Result, Some(task)) => tx.move_task(
            owner,
            &task,
            TaskRole::Given,
            &message.peer,
            TaskState::Completed,
            None,
            Some(&message.id),
            now,
        )?,
        _ => None,
    };
    Ok(changed.into_iter().collect())
}

/// Waits (up to [`OUTBOX_ROOM_WAIT`]) until `name`'s outbox is under its
/// limit: a sender faster than the relay takes its messages is slowed down,
/// and one whose relay is out of reach is told so at once rather than
/// queueing without end.
async fn room_in_outbox(daemon: &Daemon, name: &Name) -> Result<(), ApiError> {
    let mut wait = daemon.wait_on(
        &daemon.states,
        tokio::time::Instant::now() + OUTBOX_ROOM_WAIT,
    );
    loop {
        let timed_out = wait.arm();
        let depth = daemon.outbox_depth.get(name).unwrap_or(0);
        if depth < daemon.outbox_limit {
            return Ok(());
        }
        // No room will come soon while the relay is out of reach.
        let unreachable = daemon.link_errors.get(name).is_some();
        if timed_out || unreachable {
            let why = daemon
                .link_errors
                .get(name)
                .map(|error| format!(" ({name} is not connected to its relay: {error})"))
                .unwrap_or_default();
            return Err(ApiError::new(
                ErrorCode::OutboxFull,
                format!(
                    "the outbox of {name} holds {depth} messages the relay has not taken yet{why}; nothing was queued: try again later, and see `agentwire daemon status`"
                ),
            ));
        }
        if !wait.sleep().await {
            return Err(stopping());
        }
    }
}

/// Why a message of `identity` in `state` may not move on: its relay link
/// is down, or the relay declined a message for now.
fn held_up_by(daemon: &Daemon, identity: Option<&str>, state: DeliveryState) -> Option<String> {
    let (name, _) = daemon.pick(identity).ok()?;
    if let Some(error) = daemon.link_errors.get(&name) {
        return Some(format!("{name} is not connected to its relay ({error})"));
    }
    if state == DeliveryState::Queued {
        return daemon
            .outbox_errors
            .get(&name)
            .map(|error| format!("the relay declined it for now ({error}); it is retried"));
    }
    None
}

fn optional_id(field: &str, text: Option<&str>) -> Result<Option<MessageId>, ApiError> {
    text.map(|text| parse_message_id(field, text)).transpose()
}

fn check_waitable(wanted: DeliveryState) -> Result<(), ApiError> {
    if DeliveryState::WAITABLE.contains(&wanted) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "cannot wait for {wanted:?}; wait for relayed, delivered or read",
            wanted = wanted.name()
        )))
    }
}

impl Run for State {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<SentView, ApiError> {
        let id = parse_message_id("id", &self.id)?;
        match self.wait {
            Some(wanted) => {
                check_waitable(wanted)?;
                let (sent, _) =
                    wait_for_state(daemon, self.identity.as_deref(), &id, wanted, self.wait_ms)
                        .await?;
                Ok(sent)
            }
            None => {
                let (name, _) = daemon.pick(self.identity.as_deref())?;
                let owner = name.clone();
                let (message, contacts) = daemon
                    .db
                    .run(move |tx| {
                        Ok::<_, StoreError>((tx.sent_message(&owner, &id)?, tx.contacts(&owner)?))
                    })
                    .await?;
                match message {
                    Some(message) => sent_view(&message, &contacts, daemon.relay_ttls.get(&name)),
                    None => Err(ApiError::new(
                        ErrorCode::UnknownMessage,
                        format!(
                            "no message {id} was sent by {name}; the ids are those `send` returned \
                             (`agentwire sent` lists them, as does the MCP tool `sent`)"
                        ),
                    )),
                }
            }
        }
    }
}

/// Waits until a sent message reaches `wanted` (or a later state), fails for
/// good, or the time is up; its state then, and whether it reached `wanted`.
async fn wait_for_state(
    daemon: &Daemon,
    identity: Option<&str>,
    id: &MessageId,
    wanted: DeliveryState,
    wait_ms: Option<u64>,
) -> Result<(SentView, bool), ApiError> {
    let mut wait = daemon.wait_on(&daemon.states, deadline(wait_ms, DEFAULT_WAIT));
    loop {
        let timed_out = wait.arm();
        let (name, _) = daemon.pick(identity)?;
        let relay_ttl = daemon.relay_ttls.get(&name);
        let id = *id;
        let (message, contacts) = daemon
            .db
            .run(move |tx| Ok::<_, StoreError>((tx.sent_message(&name, &id)?, tx.contacts(&name)?)))
            .await?;
        let Some(message) = message else {
            return Err(ApiError::new(
                ErrorCode::UnknownMessage,
                format!("no sent message {id}"),
            ));
        };
        let reached = message.state.has_reached(wanted);
        if reached || message.state.is_failure() || timed_out {
            return Ok((sent_view(&message, &contacts, relay_ttl)?, reached));
        }
        if !wait.sleep().await {
            return Err(stopping());
        }
    }
}

impl Run for Sent {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<SentList, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let relay_ttl = daemon.relay_ttls.get(&name);
        let max = bounded_max(self.max, MAX_SENT_PER_REQUEST)?;
        let (contacts, sent) = daemon
            .db
            .run(move |tx| {
                Ok::<_, StoreError>((tx.contacts(&name)?, tx.sent_messages(&name, max)?))
            })
            .await?;
        Ok(SentList {
            messages: sent
                .iter()
                .map(|m| sent_view(m, &contacts, relay_ttl))
                .collect::<Result<_, _>>()?,
        })
    }
}
