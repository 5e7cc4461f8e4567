//! `subscribe`: a stream of [`Event`]s for one identity — each unread
//! message once, and each change of a sent message's state — until the
//! subscriber goes away or the daemon stops.

use std::sync::Arc;

use agentwire_session::Name;
use tokio::sync::{broadcast, mpsc};

use crate::api::{ApiError, Event, Subscribe};
use crate::core::{Daemon, Published};
use crate::store::StoreError;
use crate::views::message_view;

/// Unread messages a subscription reads from the store at once, at most;
/// the rest follow as these are taken.
const SUBSCRIBE_WINDOW: usize = 1000;
/// Message ids a subscription remembers as shown (a message is shown once
/// per subscription even if both the backlog and the stream carry it).
const SHOWN_MEMORY: usize = 10_000;
/// Events buffered for a subscriber that reads slowly.
const EVENT_BUFFER: usize = 256;

/// The events of one subscription. Dropping it ends the subscription.
pub(crate) struct Subscription {
    events: mpsc::Receiver<Event>,
}

impl Subscription {
    /// The next event; `None` once the daemon stops.
    pub(crate) async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// An event already waiting, if any (to write a burst at once).
    pub(crate) fn try_next(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}

/// Starts a subscription (its task is one of the daemon's).
pub(crate) async fn subscribe(
    daemon: &Arc<Daemon>,
    request: Subscribe,
) -> Result<Subscription, ApiError> {
    let name = daemon.pick(request.identity.as_deref())?.0;
    let (sender, events) = mpsc::channel(EVENT_BUFFER);
    let task = daemon.clone();
    daemon.tasks.spawn(async move {
        tokio::select! {
            () = task.shutdown.cancelled() => {}
            () = sender.closed() => {}
            result = follow(&task, &name, &sender) => {
                if let Err(error) = result {
                    tracing::warn!(identity = %name, %error, "a subscription ended");
                }
            }
        }
    });
    Ok(Subscription { events })
}

/// Sends events until the receiver is gone: the unread backlog first (up to
/// [`SUBSCRIBE_WINDOW`]), then what is published as it happens. The store is
/// read again only when the backlog did not fit (as messages are taken) or
/// the subscription fell behind the published stream; a subscriber that
/// never takes anything costs nothing per message.
async fn follow(daemon: &Daemon, name: &Name, out: &mpsc::Sender<Event>) -> Result<(), ApiError> {
    let send = |event| async { out.send(event).await.map_err(|_| ApiError::invalid("gone")) };
    // Follow first, then read: nothing published in between is missed
    // (and what both show is shown once).
    let mut published = daemon.follow(name);
    send(Event::Ready {
        identity: name.as_str().to_owned(),
    })
    .await?;
    let mut shown = crate::RecentIds::new(SHOWN_MEMORY);
    let mut truncated = backlog(daemon, name, &mut shown, out).await?;
    loop {
        match published.recv().await {
            Ok(Published::Message(message)) => {
                if shown.insert(&message.id) {
                    send(Event::Message { message: *message }).await?;
                }
            }
            Ok(Published::State(sent)) => send(Event::State(sent)).await?,
            Ok(Published::Task(task)) => send(Event::Task(task)).await?,
            Ok(Published::Contact(contact)) => send(Event::Contact(contact)).await?,
            Ok(Published::Chunk(chunk)) => send(Event::Chunk(chunk)).await?,
            Ok(Published::Consumed) if truncated => {
                truncated = backlog(daemon, name, &mut shown, out).await?;
            }
            Ok(Published::Consumed) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(identity = %name, missed, "a subscription fell behind; reading the store");
                truncated = backlog(daemon, name, &mut shown, out).await?;
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

/// Sends the unread messages not shown yet (at most [`SUBSCRIBE_WINDOW`]);
/// whether there were more.
async fn backlog(
    daemon: &Daemon,
    name: &Name,
    shown: &mut crate::RecentIds,
    out: &mpsc::Sender<Event>,
) -> Result<bool, ApiError> {
    let owner = name.clone();
    let (contacts, unread) = daemon
        .db
        .run(move |tx| {
            Ok::<_, StoreError>((
                tx.contacts(&owner)?,
                tx.unread(&owner, None, SUBSCRIBE_WINDOW)?,
            ))
        })
        .await?;
    for message in &unread {
        let view = message_view(message, &contacts)?;
        if shown.insert(&view.id) {
            out.send(Event::Message { message: view })
                .await
                .map_err(|_| ApiError::invalid("gone"))?;
        }
    }
    Ok(unread.len() >= SUBSCRIBE_WINDOW)
}
