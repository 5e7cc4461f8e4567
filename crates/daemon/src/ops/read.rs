//! `recv` (take unread messages), `inbox` (look, take nothing) and `ack`
//! (take the named ones). Taking a message marks it read and queues the
//! read receipt to its sender in the same transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use agentwire_session::{MessageId, Name};
use agentwire_wire::PublicKey;

use crate::api::{Ack, Acked, ApiError, Inbox, Messages, Recv};
use crate::core::{DEFAULT_MAX_MESSAGES, Daemon, Published, deadline, now_ms, parse_message_id};
use crate::ops::Run;
use crate::receive::{insert_receipt, seal_receipt};
use crate::store::{StoreError, StoredMessage};
use crate::views::message_views;

impl Run for Recv {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Messages, ApiError> {
        let look = Look {
            identity: self.identity,
            from: self.from,
            max: self.max,
            wait_ms: self.wait_ms,
        };
        unread(daemon, look, true).await
    }
}

impl Run for Inbox {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Messages, ApiError> {
        let look = Look {
            identity: self.identity,
            from: self.from,
            max: self.max,
            wait_ms: self.wait_ms,
        };
        unread(daemon, look, false).await
    }
}

/// What `recv` and `inbox` look for.
struct Look {
    identity: Option<String>,
    from: Option<String>,
    max: Option<usize>,
    wait_ms: Option<u64>,
}

/// The unread messages (urgent first, then oldest first): taken (`consume`:
/// marked read, receipts queued, in one transaction) or only shown. With
/// `wait_ms`, waits up to that long for a first one.
async fn unread(daemon: &Arc<Daemon>, look: Look, consume: bool) -> Result<Messages, ApiError> {
    let mut wait = daemon.wait_on(
        &daemon.arrived,
        deadline(look.wait_ms, std::time::Duration::ZERO),
    );
    let max = look.max.unwrap_or(DEFAULT_MAX_MESSAGES);
    let (name, _) = daemon.pick(look.identity.as_deref())?;
    let from = match &look.from {
        Some(peer) => Some(daemon.resolve_peer(&name, peer).await?.address),
        None => None,
    };
    loop {
        let timed_out = wait.arm();
        let owner = name.clone();
        let (contacts, candidates, unread) = daemon
            .db
            .run(move |tx| {
                let candidates = tx.unread(&owner, from.as_ref(), max)?;
                let unread = if consume {
                    None
                } else {
                    Some(tx.unread_count(&owner)?)
                };
                Ok::<_, StoreError>((tx.contacts(&owner)?, candidates, unread))
            })
            .await?;
        let messages = if consume && !candidates.is_empty() {
            take(daemon, &name, candidates).await?
        } else {
            candidates
        };
        if !messages.is_empty() || timed_out {
            return Ok(Messages {
                messages: message_views(&messages, &contacts)?,
                unread,
            });
        }
        if !wait.sleep().await {
            // A stopping daemon ends a wait for messages with none.
            return Ok(Messages {
                messages: Vec::new(),
                unread: None,
            });
        }
    }
}

impl Run for Ack {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Acked, ApiError> {
        let ids = self
            .ids
            .iter()
            .map(|id| parse_message_id("id", id))
            .collect::<Result<Vec<_>, _>>()?;
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let owner = name.clone();
        let candidates = daemon
            .db
            .run(move |tx| {
                let mut candidates = Vec::new();
                for id in &ids {
                    if let Some(message) = tx.unread_message(&owner, id)? {
                        candidates.push(message);
                    }
                }
                Ok::<_, StoreError>(candidates)
            })
            .await?;
        let taken = if candidates.is_empty() {
            candidates
        } else {
            take(daemon, &name, candidates).await?
        };
        Ok(Acked {
            acked: taken.iter().map(|m| m.id.to_string()).collect(),
        })
    }
}

/// Takes `candidates`: marks them consumed (those another reader has not
/// claimed in the meantime) and queues a read receipt to each sender, in one
/// store job: the sender learns "read" exactly when it commits. The
/// receipts are sealed before the job, under the senders' session locks
/// (taken in key order), and name every candidate: one that another reader
/// took in between is read as well.
async fn take(
    daemon: &Daemon,
    name: &Name,
    candidates: Vec<StoredMessage>,
) -> Result<Vec<StoredMessage>, ApiError> {
    let mut by_peer: BTreeMap<PublicKey, Vec<MessageId>> = BTreeMap::new();
    for message in &candidates {
        by_peer.entry(message.peer).or_default().push(message.id);
    }
    let now = now_ms();
    let mut slots = Vec::new();
    let mut receipts = Vec::new();
    let mut pickles = Vec::new();
    for (peer, ids) in &by_peer {
        let mut slot = daemon.session_slot(name, peer).await;
        if let Some(session) = daemon.load_session(&mut slot, name, peer).await? {
            for chunk in ids.chunks(agentwire_session::message::MAX_RECEIPT_IDS) {
                let read = agentwire_session::ReceiptState::Read;
                if let Some(sealed) = seal_receipt(session, read, chunk.to_vec(), now) {
                    receipts.push((*peer, sealed));
                }
            }
            pickles.push((*peer, session.to_encrypted_pickle(&daemon.key)));
        }
        slots.push(slot);
    }
    let owner = name.clone();
    let taken = daemon
        .db
        .run(move |tx| {
            let mut taken = Vec::new();
            for message in candidates {
                if tx.consume(&owner, &message.id, now)? {
                    taken.push(message);
                }
            }
            for (peer, pickle) in &pickles {
                tx.save_session(&owner, peer, pickle)?;
            }
            for (peer, (id, payload)) in &receipts {
                insert_receipt(tx, &owner, *peer, *id, payload, now)?;
            }
            Ok::<_, StoreError>(taken)
        })
        .await;
    match taken {
        Ok(taken) => {
            drop(slots);
            daemon.outbox_waker(name).notify_one();
            daemon.arrived.notify_waiters();
            // Subscriptions may now show messages beyond their window.
            daemon.publish(name, [Published::Consumed]);
            Ok(taken)
        }
        Err(error) => {
            // The cached sessions are ahead of the store: forget them.
            for slot in &mut slots {
                **slot = None;
            }
            Err(error.into())
        }
    }
}
