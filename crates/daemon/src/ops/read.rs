//! `recv` (take unread messages), `inbox` (look, take nothing) and `ack`
//! (take the named ones). Taking a message marks it read and queues the
//! read receipt to its sender in the same transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use agentwire_session::{MessageId, Name, PeerSession};
use agentwire_wire::PublicKey;

use crate::api::{Ack, Acked, ApiError, Inbox, Messages, Recv};
use crate::core::{DEFAULT_MAX_MESSAGES, Daemon, deadline, now_ms, parse_message_id};
use crate::ops::Run;
use crate::receive::{insert_receipt, seal_receipt};
use crate::store::{StoreError, StoredMessage, Tx};
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
    loop {
        let timed_out = wait.arm();
        {
            let mut state = daemon.state.lock().await;
            let (name, _) = state.pick(look.identity.as_deref())?;
            let from = look
                .from
                .as_ref()
                .map(|peer| state.resolve_peer(&name, peer))
                .transpose()?
                .map(|contact| contact.address);
            let contacts = state.store.read().contacts(&name)?;
            let now = now_ms();
            let messages = if consume {
                let taken = state.store.write(|tx| {
                    let candidates = tx.unread(&name, from.as_ref(), max)?;
                    take(daemon, tx, &name, candidates, now)
                })?;
                if !taken.is_empty() {
                    daemon.outbox_waker(&name).notify_one();
                    // Subscriptions may now show messages beyond their window.
                    daemon.arrived.notify_waiters();
                }
                taken
            } else {
                state.store.read().unread(&name, from.as_ref(), max)?
            };
            if !messages.is_empty() || timed_out {
                let unread = if consume {
                    None
                } else {
                    Some(state.store.read().unread_count(&name)?)
                };
                return Ok(Messages {
                    messages: message_views(&messages, &contacts)?,
                    unread,
                });
            }
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
        let mut state = daemon.state.lock().await;
        let (name, _) = state.pick(self.identity.as_deref())?;
        let now = now_ms();
        let taken = state.store.write(|tx| {
            let mut candidates = Vec::new();
            for id in &ids {
                if let Some(message) = tx.unread_message(&name, id)? {
                    candidates.push(message);
                }
            }
            take(daemon, tx, &name, candidates, now)
        })?;
        drop(state);
        if !taken.is_empty() {
            daemon.outbox_waker(&name).notify_one();
            daemon.arrived.notify_waiters();
        }
        Ok(Acked {
            acked: taken.iter().map(|m| m.id.to_string()).collect(),
        })
    }
}

/// Marks `candidates` consumed (those another reader has not claimed in the
/// meantime) and queues the read receipts, one per sender, in the caller's
/// transaction: the sender learns "read" exactly when this commits.
fn take(
    daemon: &Daemon,
    tx: &Tx<'_>,
    name: &Name,
    candidates: Vec<StoredMessage>,
    now: u64,
) -> Result<Vec<StoredMessage>, StoreError> {
    let mut taken = Vec::new();
    for message in candidates {
        if tx.consume(name, &message.id, now)? {
            taken.push(message);
        }
    }
    let mut by_peer: BTreeMap<PublicKey, Vec<MessageId>> = BTreeMap::new();
    for message in &taken {
        by_peer.entry(message.peer).or_default().push(message.id);
    }
    for (peer, ids) in by_peer {
        let Some(pickle) = tx.session(name, &peer)? else {
            continue;
        };
        let mut session = match PeerSession::from_encrypted_pickle(&pickle, &daemon.key) {
            Ok(session) => session,
            Err(error) => {
                tracing::error!(identity = %name, %error, "a stored session does not load; no read receipt");
                continue;
            }
        };
        for chunk in ids.chunks(agentwire_session::message::MAX_RECEIPT_IDS) {
            if let Some((receipt_id, payload)) = seal_receipt(
                &mut session,
                agentwire_session::ReceiptState::Read,
                chunk.to_vec(),
                now,
            ) {
                insert_receipt(tx, name, peer, receipt_id, &payload, now)?;
            }
        }
        tx.save_session(name, &peer, &session.to_encrypted_pickle(&daemon.key))?;
    }
    Ok(taken)
}
