//! The receive pipeline: what a link hands over for an identity. An envelope
//! from a contact is opened with that contact's session and stored together
//! with the new session state and a `delivered` receipt, in one transaction;
//! receipts move our sent messages forward; a first message from a
//! non-contact is either the redemption of one of our invites or dropped.
//! The relay's envelope is acknowledged only once what it carried is
//! committed (or is dropped for good).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex as StdMutex};

use agentwire_api::{ContactState, DeliveryState, Via};
use agentwire_session::{
    Identity, Kind, MessageId, Name, PeerSession, Plaintext, Redeem, prekey_identity_key,
    prekey_one_time_key,
};
use agentwire_wire::PublicKey;

use crate::core::{Daemon, State, now_ms};
use crate::pairing::{self, Answer};
use crate::store::{Contact, Direction, StoreError, StoredMessage, Tx};

impl Daemon {
    /// Handles one envelope for `name`. Returns whether to acknowledge it
    /// (it is stored, a duplicate, or dropped for good).
    pub(crate) async fn receive(
        &self,
        name: &Name,
        from: PublicKey,
        id: agentwire_wire::EnvelopeId,
        payload: &[u8],
    ) -> bool {
        let mut state = self.state.lock().await;
        let Some(identity) = state.identity(name) else {
            return false;
        };
        let contact = match state.store.read().contact(name, &from) {
            Ok(contact) => contact,
            Err(error) => {
                tracing::error!(%error, "cannot read contacts");
                return false;
            }
        };
        // Redelivered after it was stored (the ack was lost): ack again, no
        // second copy.
        if contact.is_some() && has_message(&state, name, &id) {
            return true;
        }
        let Some(contact) = contact else {
            return self.redeem(&mut state, name, &identity, from, payload);
        };
        if payload.first() == Some(&pairing::NOTICE_TAG) {
            return self.answered(&mut state, name, &identity, &contact, payload);
        }
        let stored_session = match state.store.read().session(name, &from) {
            Ok(session) => session,
            Err(error) => {
                tracing::error!(%error, "cannot read a session");
                return false;
            }
        };
        let session = stored_session.and_then(|pickle| {
            PeerSession::from_encrypted_pickle(&pickle, &self.key)
                .inspect_err(|error| tracing::error!(identity = %name, %error, "a stored session does not load"))
                .ok()
        });
        // The sender is whoever owns the session that opens the payload: only
        // the session set up with this contact is tried. A contact never
        // starts a second session by itself.
        let opened = session.map(|mut session| session.open(payload).map(|p| (session, p)));
        let (session, plaintext) = match opened {
            Some(Ok(opened)) => opened,
            _ => {
                // A redemption of one of our invites by someone who already
                // is a contact (e.g. both sides accepted each other's
                // invites): refused, so that no second session replaces the
                // first.
                if let Some(one_time_key) = prekey_one_time_key(payload)
                    && let Ok(Some(record)) = state.store.read().invite_by_key(name, &one_time_key)
                    && record.spent_by.is_none()
                {
                    let notice = {
                        let guard = identity.lock().unwrap_or_else(|e| e.into_inner());
                        pairing::notice(&guard, &one_time_key, &from, Answer::AlreadyContact)
                    };
                    return self.queue_notice(&mut state, name, from, notice);
                }
                tracing::info!(identity = %name, from = %from.short_id(), "dropped an undecryptable message");
                self.counters.undecryptable.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        };
        if plaintext.id.as_bytes() != id.as_bytes() {
            tracing::info!(identity = %name, from = %from.short_id(), "dropped a message whose id does not match its envelope");
            self.counters.undecryptable.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let mut session = session;
        let now = now_ms();
        let (plaintext_id, plaintext_kind) = (plaintext.id, plaintext.kind);
        // What this message changes, decided before the transaction.
        enum Effect {
            Store(StoredMessage, Option<(MessageId, Vec<u8>)>),
            Receipt(agentwire_session::Receipt),
            Nothing,
        }
        let effect = match plaintext.kind {
            Kind::Receipt => match agentwire_session::Receipt::decode(&plaintext.body) {
                Ok(receipt) => Effect::Receipt(receipt),
                Err(_) => Effect::Nothing,
            },
            // A redemption-kind message from a contact carries nothing to show.
            Kind::Redeem => Effect::Nothing,
            _ => {
                // The sender learns "delivered" by an encrypted receipt,
                // queued in the same transaction as the message itself.
                let receipt = seal_receipt(
                    &mut session,
                    agentwire_session::ReceiptState::Delivered,
                    vec![plaintext.id],
                    now,
                );
                Effect::Store(
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
                    },
                    receipt,
                )
            }
        };
        let session_pickle = session.to_encrypted_pickle(&self.key);
        let stored = state.store.write(|tx| {
            tx.save_session(name, &from, &session_pickle)?;
            match &effect {
                Effect::Store(message, receipt) => {
                    if tx.insert_message(name, message, None)?
                        && let Some((receipt_id, payload)) = receipt
                    {
                        insert_receipt(tx, name, from, *receipt_id, payload, now)?;
                    }
                }
                Effect::Receipt(receipt) => {
                    tx.insert_seen(name, &plaintext_id, &from, Kind::Receipt, now)?;
                    let state = match receipt.state {
                        agentwire_session::ReceiptState::Delivered => DeliveryState::Delivered,
                        agentwire_session::ReceiptState::Read => DeliveryState::Read,
                    };
                    for id in &receipt.ids {
                        tx.advance(name, id, Some(&from), state, now)?;
                    }
                }
                Effect::Nothing => {
                    tx.insert_seen(name, &plaintext_id, &from, plaintext_kind, now)?;
                }
            }
            Ok::<_, StoreError>(())
        });
        drop(state);
        match stored {
            Ok(()) => {
                match effect {
                    Effect::Store(..) => {
                        self.arrived.notify_waiters();
                        self.outbox_waker(name).notify_one();
                        self.touch_notify_file(name).await;
                    }
                    Effect::Receipt(_) => self.states.notify_waiters(),
                    Effect::Nothing => {}
                }
                true
            }
            Err(error) => {
                // Nothing committed; the stored session is still the one
                // before this message, so the redelivery decrypts.
                tracing::error!(%error, "cannot store a message; it stays at the relay");
                false
            }
        }
    }

    /// Writes the unread count to the identity's notify file (atomically:
    /// written aside, then renamed), so that file watchers see each arrival.
    async fn touch_notify_file(&self, name: &Name) {
        let unread = {
            let state = self.state.lock().await;
            state.store.read().unread_count(name)
        };
        let unread = match unread {
            Ok(unread) => unread,
            Err(error) => {
                tracing::warn!(%error, "cannot count unread messages for the notify file");
                return;
            }
        };
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
            writeln!(file, "{unread}")?;
            std::fs::rename(&aside, &path)
        })();
        if let Err(error) = written {
            tracing::warn!(%error, "cannot update the notify file");
        }
    }

    /// Replaces the in-memory account with the stored one, after a change to
    /// it (a one-time key consumed) was not committed.
    fn reload_identity(&self, state: &State, name: &Name, identity: &Arc<StdMutex<Identity>>) {
        let stored = state.store.read().identities().map(|all| {
            all.into_iter()
                .find(|(n, _)| n == name.as_str())
                .map(|(_, pickle)| pickle)
        });
        let restored = match stored {
            Ok(Some(pickle)) => Identity::from_encrypted_pickle(name.clone(), &pickle, &self.key)
                .map_err(|e| e.to_string()),
            Ok(None) => Err("it is not in the store".to_owned()),
            Err(error) => Err(error.to_string()),
        };
        match restored {
            Ok(restored) => *identity.lock().unwrap_or_else(|e| e.into_inner()) = restored,
            Err(error) => {
                tracing::error!(identity = %name, %error, "cannot reload an identity from the store")
            }
        }
    }

    /// A first message from a non-contact: the redemption of one of our
    /// invites, or dropped (and counted) — never shown to an agent.
    fn redeem(
        &self,
        state: &mut State,
        name: &Name,
        identity: &Arc<StdMutex<Identity>>,
        from: PublicKey,
        payload: &[u8],
    ) -> bool {
        let drop_it = |_: &mut State, why: &str| {
            tracing::info!(identity = %name, from = %from.short_id(), why, "dropped a message from a non-contact");
            self.counters.non_contact.fetch_add(1, Ordering::Relaxed);
            true
        };
        let (Some(one_time_key), Some(their_curve)) =
            (prekey_one_time_key(payload), prekey_identity_key(payload))
        else {
            return drop_it(state, "not a first message");
        };
        let record = match state.store.read().invite_by_key(name, &one_time_key) {
            Ok(Some(record)) => record,
            Ok(None) => return drop_it(state, "no invite of ours"),
            Err(error) => {
                tracing::error!(%error, "cannot read invites");
                return false;
            }
        };
        if record.spent_by == Some(from) {
            // A redelivery of the redemption we accepted; our answer is queued.
            return true;
        }
        let refusal = if record.spent_by.is_some() {
            Some(Answer::Spent)
        } else if now_ms() >= record.expires_at_ms {
            Some(Answer::Expired)
        } else {
            None
        };
        if let Some(answer) = refusal {
            let notice = {
                let guard = identity.lock().unwrap_or_else(|e| e.into_inner());
                pairing::notice(&guard, &one_time_key, &from, answer)
            };
            tracing::info!(identity = %name, from = %from.short_id(), ?answer, "refused a redemption");
            return self.queue_notice(state, name, from, notice);
        }
        let mut guard = identity.lock().unwrap_or_else(|e| e.into_inner());
        let Ok((session, first)) = guard.accept_session(their_curve, payload) else {
            drop(guard);
            return drop_it(state, "redemption does not decrypt");
        };
        let redeem = match (first.kind, Redeem::decode(&first.body)) {
            (Kind::Redeem, Ok(redeem)) => redeem,
            _ => {
                drop(guard);
                // The one-time key stays for the real redemption.
                self.reload_identity(state, name, identity);
                return drop_it(state, "first message is not a redemption");
            }
        };
        if redeem.acceptor != from
            || !redeem.verify(&guard.address(), &their_curve)
            || redeem.secret.as_bytes() != &record.secret
        {
            drop(guard);
            self.reload_identity(state, name, identity);
            return drop_it(state, "redemption does not prove the invite");
        }
        let notice = pairing::notice(&guard, &one_time_key, &from, Answer::Accepted);
        let identity_pickle = guard.to_encrypted_pickle(&self.key);
        let address = guard.address();
        drop(guard);
        let now = now_ms();
        let session_pickle = session.to_encrypted_pickle(&self.key);
        let stored = state.store.write(|tx| {
            let petname = tx.free_petname(name, &redeem.acceptor_name)?;
            tx.add_contact(
                name,
                &Contact {
                    address: from,
                    curve25519: their_curve,
                    petname,
                    via: Via::Invited,
                    state: ContactState::Active,
                    invite_key: None,
                    created_at_ms: now,
                },
            )?;
            tx.save_session(name, &from, &session_pickle)?;
            tx.save_identity(name, &address, &identity_pickle, now)?;
            tx.spend_invite(name, &one_time_key, &from, now)?;
            insert_notice(tx, name, from, &notice, now)?;
            Ok::<_, StoreError>(())
        });
        match stored {
            Ok(()) => {
                tracing::info!(identity = %name, contact = %from.short_id(), "invite redeemed: new contact");
                self.outbox_waker(name).notify_one();
                true
            }
            Err(error) => {
                // The account in memory consumed the one-time key; reload it
                // from the store so memory matches what is committed.
                tracing::error!(%error, "cannot store a new contact");
                self.reload_identity(state, name, identity);
                false
            }
        }
    }

    fn queue_notice(&self, state: &mut State, name: &Name, to: PublicKey, notice: Vec<u8>) -> bool {
        let now = now_ms();
        match state
            .store
            .write(|tx| insert_notice(tx, name, to, &notice, now))
        {
            Ok(()) => {
                self.outbox_waker(name).notify_one();
                true
            }
            Err(error) => {
                tracing::error!(%error, "cannot queue a pairing answer");
                false
            }
        }
    }

    /// The inviter's answer to our redemption.
    fn answered(
        &self,
        state: &mut State,
        name: &Name,
        identity: &Arc<StdMutex<Identity>>,
        contact: &Contact,
        payload: &[u8],
    ) -> bool {
        let me = identity.lock().unwrap_or_else(|e| e.into_inner()).address();
        let answer = contact
            .invite_key
            .and_then(|key| pairing::read_notice(payload, &contact.address, &me, &key));
        let Some(answer) = answer else {
            self.counters.undecryptable.fetch_add(1, Ordering::Relaxed);
            return true;
        };
        let result = match answer {
            Answer::Accepted => {
                state
                    .store
                    .read()
                    .set_contact_state(name, &contact.address, ContactState::Active)
            }
            refused => {
                self.refusals.set((name.clone(), contact.address), refused);
                if contact.state == ContactState::Pending {
                    state
                        .store
                        .read()
                        .remove_contact(name, &contact.address)
                        .map(|_| ())
                } else {
                    Ok(())
                }
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "cannot record a pairing answer");
            return false;
        }
        tracing::info!(identity = %name, inviter = %contact.address.short_id(), ?answer, "pairing answered");
        self.pairing.notify_waiters();
        true
    }
}

/// Whether the envelope `id` was stored already (a redelivery after a lost
/// ack). A store that cannot tell counts as "not yet": the message is then
/// opened again, which fails harmlessly for a real duplicate.
fn has_message(state: &State, name: &Name, id: &agentwire_wire::EnvelopeId) -> bool {
    match state.store.read().has_message(name, id.as_bytes()) {
        Ok(known) => known,
        Err(error) => {
            tracing::error!(%error, "cannot look up a message id");
            false
        }
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
    let receipt = Plaintext {
        id: MessageId::new_v7(),
        kind: Kind::Receipt,
        priority: agentwire_session::Priority::Normal,
        sent_at_ms: now,
        reply_to: None,
        thread: None,
        body: agentwire_session::Receipt { state, ids }.encode(),
    };
    match session.seal(&receipt) {
        Ok(payload) => Some((receipt.id, payload)),
        Err(error) => {
            tracing::warn!(%error, "cannot seal a receipt");
            None
        }
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
