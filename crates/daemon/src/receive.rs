//! The receive pipeline: what a link hands over for an identity, a burst of
//! envelopes at a time. Envelopes from contacts are opened with their
//! sessions and committed together — messages, the new session states, and
//! one `delivered` receipt per sender for the whole burst — in one store
//! job; receipts move our sent messages forward. A first message from a
//! non-contact is the redemption of one of our invites or is dropped
//! (`redeem.rs`). The caller acknowledges to the relay exactly the envelopes
//! returned, once committed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;

use agentwire_api::{DeliveryState, TaskRole, TaskState};
use agentwire_client::Envelope;
use agentwire_session::{
    Kind, MessageId, Name, PeerSession, Permissions, Plaintext, prekey_one_time_key,
};
use agentwire_wire::{EnvelopeId, PublicKey};

use crate::api::ApiError;
use crate::core::{Daemon, Published, SessionSlot, now_ms};
use crate::pairing::{self, Answer};
use crate::store::{Contact, Direction, StoreError, StoredMessage, Tx};

/// What one envelope from a contact changes, decided before the store job.
enum Effect {
    /// A message for the agent.
    Store(StoredMessage),
    /// A receipt for our sent messages.
    Receipt(MessageId, agentwire_session::Receipt),
    /// A control message with nothing to show; remembered as seen.
    Seen(MessageId, Kind),
    /// The sender removed us from its contacts.
    Unpair(MessageId),
    /// The worker of a task we asked for reports on it.
    Status {
        id: MessageId,
        task: MessageId,
        status: agentwire_session::TaskStatus,
    },
    /// The requester of a task we were given stops it.
    Cancel { id: MessageId, task: MessageId },
    /// The worker of a task we asked for streams a piece of its output.
    Chunk {
        id: MessageId,
        task: MessageId,
        chunk: agentwire_session::TaskChunk,
    },
    /// A message of a kind the sender may not send us (or a file we do not
    /// keep): never stored, and answered `rejected` with the reason (`why`,
    /// or the permission it lacks).
    Refused {
        id: MessageId,
        kind: Kind,
        why: Option<String>,
    },
    /// A part of a file.
    FilePart {
        id: MessageId,
        part: agentwire_session::file::FilePart,
    },
    /// The offer that ends a file's transfer (the message, as stored once
    /// the file is checked and kept).
    FileOffer {
        message: StoredMessage,
        offer: agentwire_session::file::FileOffer,
    },
    /// The contact's card.
    Card {
        id: MessageId,
        card: agentwire_session::Card,
    },
    /// The contact asks whether we are there (and for our card).
    Ping { id: MessageId, want_card: bool },
}

/// The permission a message of `kind` needs from its sender; control
/// messages and results (answers to what we asked) need none.
fn needed_permission(kind: Kind) -> Option<Permissions> {
    match kind {
        Kind::Chat | Kind::Query => Some(Permissions::CHAT),
        Kind::Task => Some(Permissions::TASKS),
        Kind::File | Kind::FilePart => Some(Permissions::FILES),
        Kind::Result
        | Kind::Receipt
        | Kind::Redeem
        | Kind::Unpair
        | Kind::Status
        | Kind::Cancel
        | Kind::Chunk
        | Kind::Card
        | Kind::Ping => None,
    }
}

/// Unread messages one contact may have waiting, at most: beyond, what it
/// sends is refused (it learns why) until the agent reads some.
pub(crate) const MAX_UNREAD_PER_CONTACT: u64 = 10_000;
/// Bytes of unread message bodies one contact may have waiting, at most.
pub(crate) const MAX_UNREAD_BYTES_PER_CONTACT: u64 = 16 * 1024 * 1024;

/// What the sender of a refused message is told.
fn refusal(name: &Name, kind: Kind) -> agentwire_session::TaskStatus {
    let permission = needed_permission(kind)
        .and_then(|p| p.names().first().copied())
        .unwrap_or("chat");
    agentwire_session::TaskStatus {
        state: agentwire_session::TaskState::Rejected,
        detail: format!(
            "{name} does not accept {} messages from you (permission {permission:?} not granted)",
            kind.name()
        ),
    }
}

impl Daemon {
    /// Refuses, instead of storing, the messages of a burst that would take
    /// a contact over its share of the inbox ([`MAX_UNREAD_PER_CONTACT`],
    /// [`MAX_UNREAD_BYTES_PER_CONTACT`]): one contact cannot fill the home.
    async fn keep_to_quotas(&self, name: &Name, burst: &mut Burst) -> Result<(), ApiError> {
        let senders: Vec<PublicKey> = burst
            .effects
            .iter()
            .filter(|(_, effect)| matches!(effect, Effect::Store(_)))
            .map(|(from, _)| *from)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if senders.is_empty() {
            return Ok(());
        }
        let owner = name.clone();
        let mut waiting: HashMap<PublicKey, (u64, u64)> = self
            .db
            .run(move |tx| {
                senders
                    .iter()
                    .map(|from| Ok((*from, tx.unread_from(&owner, from)?)))
                    .collect::<Result<_, crate::store::StoreError>>()
            })
            .await?;
        for (from, effect) in &mut burst.effects {
            let Effect::Store(message) = effect else {
                continue;
            };
            let (count, bytes) = waiting.entry(*from).or_default();
            let size = message.body.len() as u64;
            if *count < MAX_UNREAD_PER_CONTACT && *bytes + size <= MAX_UNREAD_BYTES_PER_CONTACT {
                (*count, *bytes) = (*count + 1, *bytes + size);
                continue;
            }
            tracing::info!(identity = %name, from = %from.short_id(), "refused a message over the contact's share of the inbox");
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            *effect = Effect::Refused {
                id: message.id,
                kind: message.kind,
                why: Some(format!(
                    "{name} has {count} unread messages ({bytes} bytes) from you, its limit \
                     ({MAX_UNREAD_PER_CONTACT} messages, {MAX_UNREAD_BYTES_PER_CONTACT} bytes); \
                     send again once it has read some"
                )),
            };
        }
        Ok(())
    }

    /// Handles a burst of envelopes for `name`; returns the ids to
    /// acknowledge (stored, duplicates, or dropped for good). An envelope
    /// whose handling failed is not acknowledged: the relay delivers it again.
    pub(crate) async fn receive(&self, name: &Name, envelopes: Vec<Envelope>) -> Vec<EnvelopeId> {
        match self.receive_burst(name, envelopes).await {
            Ok(acks) => acks,
            Err(error) => {
                tracing::error!(identity = %name, %error, "cannot store what arrived; the relay keeps it");
                Vec::new()
            }
        }
    }

    async fn receive_burst(
        &self,
        name: &Name,
        envelopes: Vec<Envelope>,
    ) -> Result<Vec<EnvelopeId>, ApiError> {
        // A contact that removed us has no session any more: what it sends
        // now is handled as from a stranger (a new pairing, or dropped).
        let contacts: HashMap<PublicKey, Contact> = self
            .contacts
            .get(&self.db, name)
            .await?
            .iter()
            .filter(|c| c.state != agentwire_api::ContactState::Removed)
            .map(|c| (c.address, c.clone()))
            .collect();
        // Pairing answers from contacts are looked up in the store first: one
        // delivered again after it was stored (its ack was lost) is acked,
        // not handled twice. A message delivered again is found out when it
        // does not open (see `open_envelope`), so the common case costs no
        // store round trip here.
        let notices: Vec<[u8; 16]> = envelopes
            .iter()
            .filter(|e| {
                contacts.contains_key(&e.from) && e.payload.first() == Some(&pairing::NOTICE_TAG)
            })
            .map(|e| *e.id.as_bytes())
            .collect();
        let known = if notices.is_empty() {
            HashSet::new()
        } else {
            let owner = name.clone();
            self.db
                .run(move |tx| {
                    let mut known = HashSet::new();
                    for id in notices {
                        if tx.has_message(&owner, &id)? {
                            known.insert(id);
                        }
                    }
                    Ok::<_, StoreError>(known)
                })
                .await?
        };
        let mut acks = Vec::new();
        // Messages from contacts are taken in segments; pairing envelopes
        // (rare, and they change the account) alone, in order between them.
        let mut segment = Vec::new();
        for envelope in envelopes {
            let contact = contacts.get(&envelope.from);
            // Redelivered after it was stored (the ack was lost): ack again,
            // no second copy.
            if contact.is_some() && known.contains(envelope.id.as_bytes()) {
                acks.push(envelope.id);
                continue;
            }
            match contact {
                Some(contact) if envelope.payload.first() != Some(&pairing::NOTICE_TAG) => {
                    segment.push((contact, envelope));
                }
                Some(contact) => {
                    acks.extend(
                        self.segment(name, &contacts, std::mem::take(&mut segment))
                            .await?,
                    );
                    if self.answered(name, contact, &envelope.payload).await {
                        acks.push(envelope.id);
                    }
                }
                None => {
                    acks.extend(
                        self.segment(name, &contacts, std::mem::take(&mut segment))
                            .await?,
                    );
                    if self.redeem(name, &envelope).await {
                        acks.push(envelope.id);
                    }
                }
            }
        }
        acks.extend(self.segment(name, &contacts, segment).await?);
        Ok(acks)
    }

    /// Opens and commits envelopes from contacts together. The senders'
    /// session locks are taken up front in key order (as everywhere several
    /// are held), so no two holders can wait on each other.
    async fn segment(
        &self,
        name: &Name,
        contacts: &HashMap<PublicKey, Contact>,
        segment: Vec<(&Contact, Envelope)>,
    ) -> Result<Vec<EnvelopeId>, ApiError> {
        if segment.is_empty() {
            return Ok(Vec::new());
        }
        let senders: std::collections::BTreeSet<PublicKey> =
            segment.iter().map(|(_, e)| e.from).collect();
        let mut burst = Burst::default();
        for sender in senders {
            let slot = self.session_slot(name, &sender).await;
            burst.slots.insert(sender, slot);
        }
        let mut acks = Vec::new();
        for (contact, envelope) in segment {
            if self
                .open_envelope(name, &mut burst, contact, &envelope)
                .await?
            {
                burst.acks.push(envelope.id);
            } else {
                acks.push(envelope.id);
            }
        }
        acks.extend(self.commit(name, contacts, burst).await?);
        Ok(acks)
    }

    /// Opens one envelope from `contact` into `burst`; false when it was
    /// dropped (does not open, or refused), which is acknowledged at once.
    async fn open_envelope(
        &self,
        name: &Name,
        burst: &mut Burst,
        contact: &Contact,
        envelope: &Envelope,
    ) -> Result<bool, ApiError> {
        let from = envelope.from;
        let Some(slot) = burst.slots.get_mut(&from) else {
            return Ok(false);
        };
        // The sender is whoever owns the session that opens the payload: only
        // the session set up with this contact is tried. A contact never
        // starts a second session by itself.
        let opened = match self.load_session(slot, name, &from).await? {
            Some(session) => {
                let missing = session.missing();
                let opened = session
                    .open(&envelope.payload)
                    .inspect_err(|error| {
                        tracing::debug!(identity = %name, from = %from.short_id(), %error, "a payload does not open")
                    })
                    .ok();
                if session.missing() > missing {
                    tracing::warn!(
                        identity = %name,
                        from = %from.short_id(),
                        missing = session.missing(),
                        "messages from a contact have not arrived though a later one has (dropped on the way, or still coming)"
                    );
                }
                opened
            }
            None => None,
        };
        let Some(plaintext) = opened else {
            // Delivered again after it was stored (the ack was lost): the
            // session has moved past it. Acked, no second copy.
            let (owner, id) = (name.clone(), *envelope.id.as_bytes());
            if self.db.run(move |tx| tx.has_message(&owner, &id)).await? {
                return Ok(false);
            }
            // A redemption of one of our invites by someone who already is a
            // contact (e.g. both accepted each other's invites): refused, so
            // that no second session replaces the first.
            if let Some(one_time_key) = prekey_one_time_key(&envelope.payload) {
                let owner = name.clone();
                let record = self
                    .db
                    .run(move |tx| tx.invite_by_key(&owner, &one_time_key))
                    .await?;
                if record.is_some_and(|r| r.spent_by.is_none()) {
                    let notice = {
                        let (_, identity) = self.pick(Some(name.as_str()))?;
                        let guard = identity.lock().unwrap_or_else(|e| e.into_inner());
                        pairing::notice(&guard, &one_time_key, &from, Answer::AlreadyContact)
                    };
                    if self.queue_notice(name, from, notice).await {
                        return Ok(false);
                    }
                    return Err(crate::api::internal(
                        "cannot queue a pairing answer",
                        "the store refused it",
                    ));
                }
            }
            tracing::info!(identity = %name, from = %from.short_id(), via = %contact.petname, "dropped an undecryptable message");
            self.counters.undecryptable.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        };
        if plaintext.id.as_bytes() != envelope.id.as_bytes() {
            tracing::info!(identity = %name, from = %from.short_id(), "dropped a message whose id does not match its envelope");
            self.counters.undecryptable.fetch_add(1, Ordering::Relaxed);
            // The session moved on; its new state is kept with the burst.
            burst.touched.insert(from);
            return Ok(false);
        }
        burst.touched.insert(from);
        let now = now_ms();
        self.seen.set((name.clone(), from), now);
        let effect = match plaintext.kind {
            Kind::Receipt => match agentwire_session::Receipt::decode(&plaintext.body) {
                Ok(receipt) => Effect::Receipt(plaintext.id, receipt),
                Err(error) => {
                    tracing::info!(identity = %name, from = %from.short_id(), %error, "a receipt that does not decode");
                    Effect::Seen(plaintext.id, Kind::Receipt)
                }
            },
            // A redemption-kind message from a contact carries nothing to show.
            Kind::Redeem => Effect::Seen(plaintext.id, Kind::Redeem),
            Kind::Unpair => Effect::Unpair(plaintext.id),
            Kind::Status => match (
                plaintext.reply_to,
                agentwire_session::TaskStatus::decode(&plaintext.body),
            ) {
                (Some(task), Ok(status)) => Effect::Status {
                    id: plaintext.id,
                    task,
                    status,
                },
                _ => {
                    tracing::info!(identity = %name, from = %from.short_id(), "a task status that does not decode");
                    Effect::Seen(plaintext.id, Kind::Status)
                }
            },
            Kind::Chunk => match (
                plaintext.reply_to,
                agentwire_session::TaskChunk::decode(&plaintext.body),
            ) {
                (Some(task), Ok(chunk)) => Effect::Chunk {
                    id: plaintext.id,
                    task,
                    chunk,
                },
                _ => {
                    tracing::info!(identity = %name, from = %from.short_id(), "a task chunk that does not decode");
                    Effect::Seen(plaintext.id, Kind::Chunk)
                }
            },
            Kind::Card => match agentwire_session::Card::decode(&plaintext.body) {
                Ok(card) => Effect::Card {
                    id: plaintext.id,
                    card,
                },
                Err(error) => {
                    tracing::info!(identity = %name, from = %from.short_id(), %error, "a card that does not decode");
                    Effect::Seen(plaintext.id, Kind::Card)
                }
            },
            Kind::Ping => Effect::Ping {
                id: plaintext.id,
                want_card: plaintext.body.first() == Some(&1),
            },
            Kind::Cancel => match plaintext.reply_to {
                Some(task) => Effect::Cancel {
                    id: plaintext.id,
                    task,
                },
                None => Effect::Seen(plaintext.id, Kind::Cancel),
            },
            // Parts from a contact that may not send files are dropped; its
            // offer, refused below, tells it why.
            Kind::FilePart if !contact.permissions.contains(Permissions::FILES) => {
                Effect::Seen(plaintext.id, Kind::FilePart)
            }
            Kind::FilePart => match agentwire_session::file::FilePart::decode(&plaintext.body) {
                Ok(part)
                    if u64::from(part.index)
                        < agentwire_session::file::parts_for(crate::ops::files::receive_limit()) =>
                {
                    Effect::FilePart {
                        id: plaintext.id,
                        part,
                    }
                }
                _ => {
                    tracing::info!(identity = %name, from = %from.short_id(), "a file part out of bounds; dropped");
                    Effect::Seen(plaintext.id, Kind::FilePart)
                }
            },
            kind => match needed_permission(kind) {
                Some(needed) if !contact.permissions.contains(needed) => {
                    tracing::info!(identity = %name, contact = %contact.petname, kind = kind.name(), "refused a message the contact may not send");
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    Effect::Refused {
                        id: plaintext.id,
                        kind,
                        why: None,
                    }
                }
                _ if kind == Kind::File => {
                    match agentwire_session::file::FileOffer::decode(&plaintext.body) {
                        Ok(offer) => Effect::FileOffer {
                            message: incoming(from, plaintext, now),
                            offer,
                        },
                        Err(_) => Effect::Refused {
                            id: plaintext.id,
                            kind,
                            why: Some("the file offer does not decode".into()),
                        },
                    }
                }
                _ => Effect::Store(incoming(from, plaintext, now)),
            },
        };
        burst.effects.push((from, effect));
        Ok(true)
    }

    /// Commits a burst in one store job: session states, messages, one
    /// delivered receipt per sender, receipts applied. Returns the ids to
    /// acknowledge once committed.
    async fn commit(
        &self,
        name: &Name,
        contacts: &HashMap<PublicKey, Contact>,
        mut burst: Burst,
    ) -> Result<Vec<EnvelopeId>, ApiError> {
        if burst.touched.is_empty() {
            return Ok(burst.acks);
        }
        let now = now_ms();
        // The sender learns "delivered" by an encrypted receipt, sealed now
        // and queued in the same job as the messages themselves.
        let mut delivered: BTreeMap<PublicKey, Vec<MessageId>> = BTreeMap::new();
        // Senders that removed us: no receipts to them (they could not open
        // them), and their sessions end with this job.
        let mut unpaired = HashSet::new();
        self.settle_files(name, &mut burst).await?;
        self.keep_to_quotas(name, &mut burst).await?;
        let mut refused: BTreeMap<PublicKey, Vec<(MessageId, Kind, Option<String>)>> =
            BTreeMap::new();
        let mut card_wanted = HashSet::new();
        for (from, effect) in &burst.effects {
            match effect {
                Effect::Store(message) => delivered.entry(*from).or_default().push(message.id),
                Effect::Ping { id, want_card } => {
                    delivered.entry(*from).or_default().push(*id);
                    if *want_card {
                        card_wanted.insert(*from);
                    }
                }
                Effect::Unpair(_) => {
                    unpaired.insert(*from);
                }
                Effect::Refused { id, kind, why } => {
                    refused
                        .entry(*from)
                        .or_default()
                        .push((*id, *kind, why.clone()))
                }
                _ => {}
            }
        }
        // Our card, for contacts that asked for it.
        let own_card = if card_wanted.is_empty() {
            None
        } else {
            let owner = name.clone();
            self.db.run(move |tx| tx.own_card(&owner)).await?
        };
        let mut receipts = Vec::new();
        let mut pickles = Vec::new();
        for from in &burst.touched {
            if unpaired.contains(from) {
                continue;
            }
            let Some(session) = burst.slots.get_mut(from).and_then(|slot| slot.as_mut()) else {
                continue;
            };
            let ids = delivered.remove(from).unwrap_or_default();
            for chunk in ids.chunks(agentwire_session::message::MAX_RECEIPT_IDS) {
                let receipt = agentwire_session::ReceiptState::Delivered;
                if let Some(sealed) = seal_receipt(session, receipt, chunk.to_vec(), now) {
                    receipts.push((*from, Kind::Receipt, sealed));
                }
            }
            if let Some(card) = own_card.as_ref().filter(|_| card_wanted.contains(from)) {
                let answer = control(Kind::Card, card.encode(), now);
                match session.seal(&answer) {
                    Ok(payload) => receipts.push((*from, Kind::Card, (answer.id, payload))),
                    Err(error) => tracing::warn!(%error, "cannot seal a card"),
                }
            }
            for (id, kind, why) in refused.remove(from).unwrap_or_default() {
                let status = match why {
                    Some(detail) => agentwire_session::TaskStatus {
                        state: agentwire_session::TaskState::Rejected,
                        detail,
                    },
                    None => refusal(name, kind),
                };
                let mut answer = control(Kind::Status, status.encode(), now);
                answer.reply_to = Some(id);
                match session.seal(&answer) {
                    Ok(payload) => receipts.push((*from, Kind::Status, (answer.id, payload))),
                    Err(error) => tracing::warn!(%error, "cannot seal a refusal"),
                }
            }
            pickles.push((*from, session.to_encrypted_pickle(&self.key)));
        }
        let owner = name.clone();
        let effects = std::mem::take(&mut burst.effects);
        let files_ended = std::mem::take(&mut burst.files_ended);
        let ended = files_ended.clone();
        let queued_receipts = !receipts.is_empty();
        let followers = self.followers();
        let pending = self
            .db
            .queue(move |tx| {
                // Asked here, in the job: a subscription that starts after
                // this reads the store after it, so it sees these messages.
                let followed = followers.any(&owner);
                let mut inserted = 0;
                let mut stored = Vec::new();
                let mut changed = Vec::new();
                let mut tasks = Vec::new();
                let mut chunks = Vec::new();
                for (from, pickle) in &pickles {
                    tx.save_session(&owner, from, pickle)?;
                }
                for (from, file) in &ended {
                    tx.forget_file_parts(&owner, from, file)?;
                }
                for (from, effect) in &effects {
                    match effect {
                        Effect::Store(message) => {
                            if tx.insert_message(&owner, message, None)? {
                                inserted += 1;
                                tasks.extend(task_arrived(tx, &owner, message)?);
                                if followed {
                                    stored.push(message.clone());
                                }
                            }
                        }
                        Effect::Status { id, task, status } => {
                            tx.insert_seen(&owner, id, from, Kind::Status, now)?;
                            let detail = (!status.detail.is_empty()).then_some(&status.detail);
                            let moved = tx.move_task(
                                &owner,
                                task,
                                TaskRole::Asked,
                                from,
                                crate::ops::tasks::api_state(status.state),
                                detail.map(String::as_str),
                                None,
                                now,
                            )?;
                            // A refused message (a task too): it ends
                            // undelivered, for good.
                            if status.state == agentwire_session::TaskState::Rejected
                                && tx.advance(
                                    &owner,
                                    task,
                                    Some(from),
                                    DeliveryState::Failed,
                                    now,
                                )?
                            {
                                if let Some(detail) = detail {
                                    tx.set_reason(&owner, task, detail)?;
                                }
                                changed.push(*task);
                            }
                            tasks.extend(moved);
                        }
                        Effect::Refused { id, kind, .. } => {
                            tx.insert_seen(&owner, id, from, *kind, now)?;
                        }
                        Effect::FilePart { id, part } => {
                            tx.insert_seen(&owner, id, from, Kind::FilePart, now)?;
                            tx.add_file_part(&owner, from, &part.file_id, part.index)?;
                        }
                        // Settled before the job (`settle_files`).
                        Effect::FileOffer { .. } => {}
                        Effect::Card { id, card } => {
                            tx.insert_seen(&owner, id, from, Kind::Card, now)?;
                            tx.set_contact_card(&owner, from, card)?;
                        }
                        Effect::Ping { id, .. } => {
                            tx.insert_seen(&owner, id, from, Kind::Ping, now)?;
                        }
                        Effect::Chunk { id, task, chunk } => {
                            tx.insert_seen(&owner, id, from, Kind::Chunk, now)?;
                            // Only for a task we asked this worker for, while
                            // it runs.
                            let ours = tx.task(&owner, task)?.is_some_and(|t| {
                                t.role == TaskRole::Asked && t.peer == *from && !t.state.is_final()
                            });
                            if ours && tx.add_chunk(&owner, task, chunk.seq, &chunk.text, now)? {
                                chunks.push(crate::api::ChunkView {
                                    task: task.to_string(),
                                    seq: chunk.seq,
                                    text: chunk.text.clone(),
                                });
                            }
                        }
                        Effect::Cancel { id, task } => {
                            tx.insert_seen(&owner, id, from, Kind::Cancel, now)?;
                            tasks.extend(tx.move_task(
                                &owner,
                                task,
                                TaskRole::Given,
                                from,
                                TaskState::Canceled,
                                None,
                                None,
                                now,
                            )?);
                        }
                        Effect::Receipt(id, receipt) => {
                            tx.insert_seen(&owner, id, from, Kind::Receipt, now)?;
                            let state = match receipt.state {
                                agentwire_session::ReceiptState::Delivered => {
                                    DeliveryState::Delivered
                                }
                                agentwire_session::ReceiptState::Read => DeliveryState::Read,
                            };
                            for id in &receipt.ids {
                                if tx.advance(&owner, id, Some(from), state, now)? {
                                    changed.push(*id);
                                }
                            }
                        }
                        Effect::Seen(id, kind) => tx.insert_seen(&owner, id, from, *kind, now)?,
                        Effect::Unpair(id) => {
                            tx.insert_seen(&owner, id, from, Kind::Unpair, now)?;
                            tx.mark_removed(&owner, from)?;
                            // What has not reached it never will: it drops
                            // anything more from us.
                            changed.extend(tx.fail_undelivered_to(&owner, from, now)?);
                        }
                    }
                }
                for (to, kind, (id, payload)) in &receipts {
                    let message = StoredMessage::outgoing_control(*id, *to, *kind, now);
                    tx.insert_message(&owner, &message, Some(payload))?;
                }
                let unread = if inserted == 0 {
                    None
                } else {
                    Some(tx.unread_count(&owner)?)
                };
                let receipt_applied = !changed.is_empty();
                // What subscriptions are shown, read only if one follows.
                let changed = if followed {
                    tx.sent_messages_by_id(&owner, &changed)?
                } else {
                    Vec::new()
                };
                Ok::<_, StoreError>((
                    unread,
                    receipt_applied,
                    stored,
                    changed,
                    followed,
                    tasks,
                    chunks,
                ))
            })
            .await;
        // The session locks are held until the commit: a failed job must not
        // leave a cached session ahead of the store for someone else to use.
        let committed = match pending {
            Ok(pending) => pending.committed().await,
            Err(error) => Err(error),
        };
        match committed {
            Ok((unread, receipt_applied, stored, changed, followed, tasks, chunks)) => {
                for (from, file) in &files_ended {
                    crate::ops::files::drop_partial(&self.home, name, from, file);
                }
                for from in &unpaired {
                    if let Some(slot) = burst.slots.get_mut(from) {
                        **slot = None;
                    }
                    tracing::info!(identity = %name, contact = %from.short_id(), "the contact removed us");
                }
                drop(burst.slots);
                self.publish_tasks(name, &tasks).await;
                if !chunks.is_empty() {
                    self.task_changes.notify_waiters();
                    self.publish(name, chunks.into_iter().map(Published::Chunk));
                }
                if receipt_applied {
                    self.states.notify_waiters();
                }
                if followed {
                    self.publish_changes(name, contacts.values(), &stored, &changed);
                }
                if let Some(unread) = unread {
                    self.arrived.notify_waiters();
                    self.outbox_waker(name).notify_one();
                    self.write_notify_file(name, unread);
                } else if queued_receipts {
                    self.outbox_waker(name).notify_one();
                }
                Ok(burst.acks)
            }
            Err(error) => {
                // Nothing committed: the cached sessions moved on past what
                // is stored, so forget them; the relay delivers again and the
                // stored sessions open it.
                for slot in burst.slots.values_mut() {
                    **slot = None;
                }
                Err(error.into())
            }
        }
    }

    /// Files of a burst: each part written at its place in its partial file
    /// (durably) and recorded; each offer checked against what arrived, and
    /// turned into a stored message (the file kept under a safe name) or a
    /// refusal with the reason. Parts and records are idempotent, so a
    /// burst delivered again after a failure redoes them harmlessly.
    async fn settle_files(&self, name: &Name, burst: &mut Burst) -> Result<(), ApiError> {
        let parts: Vec<(PublicKey, agentwire_session::file::FilePart)> = burst
            .effects
            .iter()
            .filter_map(|(from, effect)| match effect {
                Effect::FilePart { part, .. } => Some((*from, part.clone())),
                _ => None,
            })
            .collect();
        let offers = burst
            .effects
            .iter()
            .any(|(_, effect)| matches!(effect, Effect::FileOffer { .. }));
        if parts.is_empty() && !offers {
            return Ok(());
        }
        if !parts.is_empty() {
            let (home, owner) = (self.home.clone(), name.clone());
            let written = parts.clone();
            tokio::task::spawn_blocking(move || {
                for (from, part) in &written {
                    crate::ops::files::write_part(&home, &owner, from, part)?;
                }
                Ok::<_, std::io::Error>(())
            })
            .await
            .map_err(|e| crate::api::internal("cannot store a file part", e))?
            .map_err(|e| crate::api::internal("cannot store a file part", e))?;
            let owner = name.clone();
            self.db
                .run(move |tx| {
                    for (from, part) in &parts {
                        tx.add_file_part(&owner, from, &part.file_id, part.index)?;
                    }
                    Ok::<_, StoreError>(())
                })
                .await?;
        }
        for (from, effect) in &mut burst.effects {
            let Effect::FileOffer { message, offer } = effect else {
                continue;
            };
            let (owner, peer, file_id) = (name.clone(), *from, offer.file_id);
            let arrived = self
                .db
                .run(move |tx| tx.file_part_count(&owner, &peer, &file_id))
                .await?;
            let (home, owner, peer, checked) =
                (self.home.clone(), name.clone(), *from, offer.clone());
            let kept = tokio::task::spawn_blocking(move || {
                crate::ops::files::finish_file(&home, &owner, &peer, &checked, arrived)
            })
            .await
            .map_err(|e| crate::api::internal("cannot check a file", e))?;
            burst.files_ended.push((*from, file_id));
            *effect = match kept {
                Ok(path) => {
                    tracing::info!(identity = %name, from = %from.short_id(), size = offer.size, path = %path.display(), "file received");
                    let mut stored = message.clone();
                    stored.body = crate::ops::files::received_body(offer, &path);
                    Effect::Store(stored)
                }
                Err(why) => {
                    tracing::info!(identity = %name, from = %from.short_id(), %why, "file refused");
                    Effect::Refused {
                        id: message.id,
                        kind: Kind::File,
                        why: Some(format!("{name} did not keep the file: {why}")),
                    }
                }
            };
        }
        Ok(())
    }

    /// Writes the unread count to the identity's notify file (atomically:
    /// written aside, then renamed), so that file watchers see each arrival.
    fn write_notify_file(&self, name: &Name, unread: u64) {
        let path = self.home.notify_file(name);
        let written = (|| -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            let dir = path.parent().unwrap_or(self.home.root());
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            let aside = dir.join(format!(".{}.tmp", name.as_str()));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&aside)?;
            file.write_all(format!("{unread}\n").as_bytes())?;
            std::fs::rename(&aside, &path)
        })();
        if let Err(error) = written {
            tracing::warn!(%error, "cannot update the notify file");
        }
    }
}

/// Envelopes of one burst, opened and waiting for their store job.
#[derive(Default)]
struct Burst {
    /// The session of each sender met, locked until the job is queued.
    slots: HashMap<PublicKey, SessionSlot>,
    /// Senders whose session changed.
    touched: HashSet<PublicKey>,
    effects: Vec<(PublicKey, Effect)>,
    /// Envelopes to acknowledge once the job commits.
    acks: Vec<EnvelopeId>,
    /// Transfers ended by an offer in this burst (sender, file id): their
    /// parts are forgotten in the job, their partial files after it.
    files_ended: Vec<(PublicKey, [u8; 16])>,
}

/// What a stored message does to tasks: a task arrives; a result to a task
/// we asked its sender for completes it. The tasks that changed.
fn task_arrived(
    tx: &Tx<'_>,
    owner: &Name,
    message: &StoredMessage,
) -> Result<Option<crate::store::StoredTask>, StoreError> {
    match (message.kind, message.reply_to) {
        (Kind::Task, _) => {
            tx.insert_task(
                owner,
                &message.id,
                TaskRole::Given,
                &message.peer,
                message.stored_at_ms,
            )?;
            tx.task(owner, &message.id)
        }
        (Kind::Result, Some(task)) => tx.move_task(
            owner,
            &task,
            TaskRole::Asked,
            &message.peer,
            TaskState::Completed,
            None,
            Some(&message.id),
            message.stored_at_ms,
        ),
        _ => Ok(None),
    }
}

/// A received message as stored.
fn incoming(from: PublicKey, plaintext: Plaintext, now: u64) -> StoredMessage {
    StoredMessage {
        id: plaintext.id,
        direction: Direction::In,
        peer: from,
        kind: plaintext.kind,
        priority: plaintext.priority,
        reply_to: plaintext.reply_to,
        thread: plaintext.thread,
        sent_at_ms: plaintext.sent_at_ms,
        stored_at_ms: now,
        body: plaintext.body,
        state: DeliveryState::Delivered,
        chain: plaintext.chain,
    }
}

/// Seals a receipt for `ids` in `session`: `(receipt id, payload)`, or `None`
/// if it cannot be sealed (then the sender just never sees that state; the
/// cause is logged).
pub(crate) fn seal_receipt(
    session: &mut PeerSession,
    state: agentwire_session::ReceiptState,
    ids: Vec<MessageId>,
    now: u64,
) -> Option<(MessageId, Vec<u8>)> {
    let receipt = control(
        Kind::Receipt,
        agentwire_session::Receipt { state, ids }.encode(),
        now,
    );
    match session.seal(&receipt) {
        Ok(payload) => Some((receipt.id, payload)),
        Err(error) => {
            tracing::warn!(%error, "cannot seal a receipt");
            None
        }
    }
}

/// A control message (receipt, pairing) with a fresh id: normal priority,
/// no thread.
pub(crate) fn control(kind: Kind, body: Vec<u8>, now: u64) -> Plaintext {
    control_with(MessageId::new_v7(), kind, body, now)
}

/// A control message with the id `id` (made under a session lock, see
/// `outgoing.rs`): normal priority, no reply, no thread, no chain.
pub(crate) fn control_with(id: MessageId, kind: Kind, body: Vec<u8>, now: u64) -> Plaintext {
    Plaintext {
        id,
        kind,
        priority: agentwire_session::Priority::Normal,
        sent_at_ms: now,
        reply_to: None,
        thread: None,
        chain: None,
        seq: None,
        body,
    }
}

/// Queues a sealed receipt in the outbox.
pub(crate) fn insert_receipt(
    tx: &Tx<'_>,
    name: &Name,
    to: PublicKey,
    id: MessageId,
    payload: &[u8],
    now: u64,
) -> Result<(), StoreError> {
    let message = StoredMessage::outgoing_control(id, to, Kind::Receipt, now);
    tx.insert_message(name, &message, Some(payload)).map(|_| ())
}

/// Stores a pairing notice in the outbox.
pub(crate) fn insert_notice(
    tx: &Tx<'_>,
    name: &Name,
    to: PublicKey,
    notice: &[u8],
    now: u64,
) -> Result<(), StoreError> {
    let message = StoredMessage::outgoing_control(MessageId::new_v7(), to, Kind::Redeem, now);
    tx.insert_message(name, &message, Some(notice)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Init, SendMessage};

    /// The relay delivers again what the daemon already stored when the ack
    /// was lost (a restart, a dropped connection). The session has moved
    /// past it, so it does not open; it must be acked, not stored twice and
    /// not counted as undecryptable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_delivered_again_after_it_was_stored_is_acked_once_stored() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::Home::resolve(Some(&dir.path().join("h"))).unwrap();
        let handle = crate::DaemonHandle::spawn(home).await.unwrap();
        let client = handle.client();
        // A relay that is not there: what `a` sends stays queued, sealed.
        for name in ["a", "b"] {
            client
                .call(Init {
                    name: Some(name.into()),
                    relay: Some("ws://127.0.0.1:9".into()),
                    no_check: true,
                    ..Init::default()
                })
                .await
                .unwrap();
        }
        // Identities of one home are contacts of each other.
        let sent = client
            .call(SendMessage {
                identity: Some("a".into()),
                to: "b".into(),
                body: "once".into(),
                ..SendMessage::default()
            })
            .await
            .unwrap();
        let daemon = &handle.daemon;
        let (a, b) = (Name::new("a").unwrap(), Name::new("b").unwrap());
        let from = daemon.pick(Some("a")).unwrap().1.lock().unwrap().address();
        let outbox = {
            let a = a.clone();
            daemon
                .db
                .run(move |tx| tx.outbox(&a, None, 10))
                .await
                .unwrap()
        };
        let outgoing = outbox.first().expect("the message is queued");
        assert_eq!(outgoing.id.to_string(), sent.id());
        let envelope = Envelope {
            id: EnvelopeId::from_bytes(*outgoing.id.as_bytes()),
            from,
            received_at_ms: now_ms(),
            payload: outgoing.payload.clone(),
        };

        for round in 0..3 {
            let acks = daemon.receive(&b, vec![envelope.clone()]).await;
            assert_eq!(acks, vec![envelope.id], "round {round}");
        }
        let unread = {
            let b = b.clone();
            daemon.db.run(move |tx| tx.unread_count(&b)).await.unwrap()
        };
        assert_eq!(unread, 1, "stored exactly once");
        assert_eq!(daemon.counters.undecryptable.load(Ordering::Relaxed), 0);
    }
}
