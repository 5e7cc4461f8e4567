//! `recv` (take unread messages), `inbox` (look, take nothing) and `ack`
//! (take the named ones). Taking a message marks it read and queues the
//! read receipt to its sender in the same transaction.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use agentwire_session::{MessageId, Name};
use agentwire_wire::PublicKey;

use crate::api::{Ack, Acked, ApiError, Inbox, Messages, Recv};
use crate::core::{
    Daemon, MAX_MESSAGES_PER_REQUEST, Published, bounded_max, deadline, now_ms, parse_message_id,
};
use crate::ops::Run;
use crate::receive::{insert_receipt, seal_receipt};
use crate::store::{StoreError, StoredMessage};
use crate::views::message_views;

impl Run for Recv {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Messages, ApiError> {
        if self.confirm {
            return Err(ApiError::invalid(
                "recv with confirm holds its messages on its own connection until the confirming ack",
            ));
        }
        Ok(unread(daemon, self.into(), Mode::Take).await?.0)
    }
}

/// Messages a reader holds (`recv` with `confirm`) until it says which it
/// took; dropping it lets go of them all, taking none.
pub(crate) struct Claim {
    daemon: Arc<Daemon>,
    name: Name,
    held: Vec<StoredMessage>,
}

impl Claim {
    /// Takes the held messages with these ids (marks them read, queues the
    /// read receipts); the rest stay unread.
    pub(crate) async fn confirm(mut self, ids: &[String]) -> Result<Acked, ApiError> {
        let wanted = ids
            .iter()
            .map(|id| parse_message_id("id", id))
            .collect::<Result<HashSet<_>, _>>()?;
        let held = std::mem::take(&mut self.held);
        let released: Vec<MessageId> = held.iter().map(|m| m.id).collect();
        let chosen: Vec<StoredMessage> = held
            .into_iter()
            .filter(|m| wanted.contains(&m.id))
            .collect();
        let taken = if chosen.is_empty() {
            Ok(Vec::new())
        } else {
            take(&self.daemon, &self.name, chosen).await
        };
        self.daemon.release(&self.name, &released);
        Ok(Acked {
            acked: taken?.iter().map(|m| m.id.to_string()).collect(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let ids: Vec<MessageId> = self.held.iter().map(|m| m.id).collect();
        if !ids.is_empty() {
            self.daemon.release(&self.name, &ids);
            // Others waiting for messages may take these now.
            self.daemon.arrived.notify_waiters();
        }
    }
}

/// `recv` with `confirm`: the unread messages, held for this reader until
/// [`Claim::confirm`] (or its drop).
pub(crate) async fn claim(daemon: &Arc<Daemon>, recv: Recv) -> Result<(Messages, Claim), ApiError> {
    let (messages, held, name) = unread(daemon, recv.into(), Mode::Hold).await?;
    let claim = Claim {
        daemon: daemon.clone(),
        name,
        held,
    };
    Ok((messages, claim))
}

impl Run for Inbox {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Messages, ApiError> {
        Ok(unread(daemon, self.into(), Mode::Look).await?.0)
    }
}

/// What a read does with the unread messages it finds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Shows them (`inbox`).
    Look,
    /// Takes them (`recv`).
    Take,
    /// Holds them for a confirming ack (`recv` with `confirm`).
    Hold,
}

/// What `recv` and `inbox` look for.
struct Look {
    identity: Option<String>,
    from: Option<String>,
    max: Option<usize>,
    wait_ms: Option<u64>,
    /// Only these messages (none: any).
    ids: Vec<String>,
}

impl From<Recv> for Look {
    fn from(recv: Recv) -> Look {
        let Recv {
            identity,
            from,
            max,
            wait_ms,
            confirm: _,
            ids,
        } = recv;
        Look {
            identity,
            from,
            max,
            wait_ms,
            ids,
        }
    }
}

impl From<Inbox> for Look {
    fn from(inbox: Inbox) -> Look {
        let Inbox {
            identity,
            from,
            max,
            wait_ms,
        } = inbox;
        Look {
            identity,
            from,
            max,
            wait_ms,
            ids: Vec::new(),
        }
    }
}

/// The unread messages (urgent first, then oldest first), shown, taken or
/// held as `mode` says; messages another reader holds are passed by. With
/// `wait_ms`, waits up to that long for a first one. Also the messages
/// themselves (those held, for [`Mode::Hold`]) and the identity.
async fn unread(
    daemon: &Arc<Daemon>,
    look: Look,
    mode: Mode,
) -> Result<(Messages, Vec<StoredMessage>, Name), ApiError> {
    let mut wait = daemon.wait_on(
        &daemon.arrived,
        deadline(look.wait_ms, std::time::Duration::ZERO),
    );
    let max = bounded_max(look.max, MAX_MESSAGES_PER_REQUEST)?;
    bounded_max(Some(look.ids.len().max(1)), MAX_MESSAGES_PER_REQUEST)?;
    let only: Vec<MessageId> = look
        .ids
        .iter()
        .map(|id| parse_message_id("id", id))
        .collect::<Result<_, _>>()?;
    let (name, _) = daemon.pick(look.identity.as_deref())?;
    let from = match &look.from {
        Some(peer) => Some(daemon.resolve_peer(&name, peer).await?.address),
        None => None,
    };
    loop {
        let timed_out = wait.arm();
        let owner = name.clone();
        // Enough to fill `max` past what other readers hold.
        let limit = max.saturating_add(if mode == Mode::Look {
            0
        } else {
            daemon.claimed(&name)
        });
        // Read on the reader: an arrival wakes this wait after its commit.
        let wanted = only.clone();
        let (candidates, unread) = daemon
            .db
            .read(move |tx| {
                let candidates = if wanted.is_empty() {
                    tx.unread(&owner, from.as_ref(), limit)?
                } else {
                    let mut some = Vec::new();
                    for id in &wanted {
                        some.extend(tx.unread_message(&owner, id)?);
                    }
                    some
                };
                let unread = if mode == Mode::Look {
                    Some(tx.unread_count(&owner)?)
                } else {
                    None
                };
                Ok::<_, StoreError>((candidates, unread))
            })
            .await?;
        let contacts = daemon.contacts.get(&daemon.db, &name).await?;
        let messages = match mode {
            Mode::Look => candidates,
            Mode::Take | Mode::Hold => {
                let mut free = daemon.unclaimed(&name, candidates, false);
                free.truncate(max);
                let held = daemon.unclaimed(&name, free, true);
                if mode == Mode::Hold {
                    still_unread(daemon, &name, held).await?
                } else {
                    take_held(daemon, &name, held).await?
                }
            }
        };
        if !messages.is_empty() || timed_out || !only.is_empty() {
            let views = message_views(&messages, &contacts);
            let held = if mode == Mode::Hold {
                messages
            } else {
                Vec::new()
            };
            let views = match views {
                Ok(views) => views,
                Err(error) => {
                    daemon.release(&name, &held.iter().map(|m| m.id).collect::<Vec<_>>());
                    return Err(error);
                }
            };
            return Ok((
                Messages {
                    messages: views,
                    unread,
                },
                held,
                name,
            ));
        }
        if !wait.sleep().await {
            // A stopping daemon ends a wait for messages with none.
            return Ok((
                Messages {
                    messages: Vec::new(),
                    unread: None,
                },
                Vec::new(),
                name,
            ));
        }
    }
}

impl Run for Ack {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Acked, ApiError> {
        bounded_max(Some(self.ids.len().max(1)), MAX_MESSAGES_PER_REQUEST)?;
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
        // Messages another reader holds are not this ack's to take.
        let held = daemon.unclaimed(&name, candidates, true);
        let taken = take_held(daemon, &name, held).await?;
        Ok(Acked {
            acked: taken.iter().map(|m| m.id.to_string()).collect(),
        })
    }
}

/// Claims a reader holds, let go of when this is dropped (also when the
/// future holding it is dropped halfway: a client that hangs up cancels its
/// request).
struct Release<'a> {
    daemon: &'a Daemon,
    name: &'a Name,
    ids: Vec<MessageId>,
}

impl<'a> Release<'a> {
    fn of(daemon: &'a Daemon, name: &'a Name, held: &[StoredMessage]) -> Release<'a> {
        Release {
            daemon,
            name,
            ids: held.iter().map(|m| m.id).collect(),
        }
    }
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.daemon.release(self.name, &self.ids);
    }
}

/// Of messages this reader just claimed, those still unread; it lets go of
/// the others. The list was read before the claim: another reader may have
/// taken one in between (a taker lets go of its claim only after its commit,
/// so a read after this claim sees that commit). Taking needs no such check,
/// as the commit itself takes only unread messages.
async fn still_unread(
    daemon: &Daemon,
    name: &Name,
    held: Vec<StoredMessage>,
) -> Result<Vec<StoredMessage>, ApiError> {
    let mut release = Release::of(daemon, name, &held);
    let (owner, ids) = (name.clone(), release.ids.clone());
    let unread = daemon
        .db
        .read(move |tx| {
            let mut unread = HashSet::new();
            for id in &ids {
                if tx.unread_message(&owner, id)?.is_some() {
                    unread.insert(*id);
                }
            }
            Ok::<_, StoreError>(unread)
        })
        .await?;
    // Kept: held on; the rest are let go of.
    release.ids.retain(|id| !unread.contains(id));
    Ok(held
        .into_iter()
        .filter(|m| unread.contains(&m.id))
        .collect())
}

/// Takes messages this reader claimed ([`Daemon::unclaimed`] with `claim`),
/// then lets go of the claims: while they are held, no other reader (a
/// `recv` with `confirm`, an MCP push) can hand the same messages out.
async fn take_held(
    daemon: &Daemon,
    name: &Name,
    held: Vec<StoredMessage>,
) -> Result<Vec<StoredMessage>, ApiError> {
    if held.is_empty() {
        return Ok(held);
    }
    let _release = Release::of(daemon, name, &held);
    take(daemon, name, held).await
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
