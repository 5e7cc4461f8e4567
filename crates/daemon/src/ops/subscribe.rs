//! `subscribe`: a stream of [`Event`]s for one identity — each unread
//! message once, and each change of a sent message's state — until the
//! subscriber goes away or the daemon stops.

use std::collections::HashSet;
use std::sync::Arc;

use agentwire_session::{MessageId, Name};
use tokio::sync::mpsc;

use crate::api::{ApiError, DeliveryState, Event, Subscribe};
use crate::core::{Daemon, now_ms};
use crate::store::StoreError;
use crate::views::{message_view, sent_view};

/// Unread messages a subscription looks at per wake-up, at most; the rest
/// follow as these are consumed.
const SUBSCRIBE_WINDOW: usize = 1000;
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

/// Sends events until the receiver is gone.
async fn follow(daemon: &Daemon, name: &Name, out: &mpsc::Sender<Event>) -> Result<(), ApiError> {
    let mut shown: HashSet<MessageId> = HashSet::new();
    let mut states_since = now_ms();
    // State changes already sent whose time is exactly `states_since`
    // (several can share a millisecond).
    let mut sent_at_since: HashSet<(MessageId, DeliveryState)> = HashSet::new();
    let send = |event| async { out.send(event).await.map_err(|_| ApiError::invalid("gone")) };
    send(Event::Ready {
        identity: name.as_str().to_owned(),
    })
    .await?;
    loop {
        let arrived = daemon.arrived.notified();
        let changed = daemon.states.notified();
        tokio::pin!(arrived, changed);
        arrived.as_mut().enable();
        changed.as_mut().enable();
        let mut events = Vec::new();
        let (owner, looked_at) = (name.clone(), shown.iter().copied().collect::<Vec<_>>());
        let since = states_since;
        let (contacts, unread, consumed, state_changes) = daemon
            .db
            .run(move |tx| {
                // Forget only what was consumed: a message that merely left
                // the window (urgent ones came first) is not shown twice.
                let mut consumed = Vec::new();
                for id in looked_at {
                    if tx.unread_message(&owner, &id)?.is_none() {
                        consumed.push(id);
                    }
                }
                Ok::<_, StoreError>((
                    tx.contacts(&owner)?,
                    tx.unread(&owner, None, SUBSCRIBE_WINDOW)?,
                    consumed,
                    tx.sent_changed_since(&owner, since)?,
                ))
            })
            .await?;
        for id in consumed {
            shown.remove(&id);
        }
        for message in &unread {
            if shown.insert(message.id) {
                events.push(Event::Message {
                    message: message_view(message, &contacts)?,
                });
            }
        }
        for message in state_changes {
            let key = (message.id, message.state);
            if message.updated_at_ms > states_since {
                states_since = message.updated_at_ms;
                sent_at_since.clear();
            }
            if message.updated_at_ms == states_since && !sent_at_since.insert(key) {
                continue;
            }
            events.push(Event::State(sent_view(&message, &contacts)?));
        }
        for event in events {
            send(event).await?;
        }
        tokio::select! {
            () = arrived => {}
            () = changed => {}
        }
    }
}
