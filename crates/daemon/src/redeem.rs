//! Pairing as it arrives: a first message from a non-contact (the redemption
//! of one of our invites, or dropped and counted — never shown to an agent),
//! and the inviter's answer to one of our redemptions. Both change the
//! account or the contacts, so they run one at a time under the daemon's
//! account lock.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex as StdMutex};

use agentwire_api::{ContactState, Via};
use agentwire_client::Envelope;
use agentwire_session::{Identity, Kind, Name, Redeem, prekey_identity_key, prekey_one_time_key};
use agentwire_wire::PublicKey;

use crate::core::{Daemon, Published, now_ms, petname_hint};
use crate::pairing::{self, Answer};
use crate::receive::insert_notice;
use crate::store::{Contact, StoreError};

/// How long after its expiry an invite is still answered `expired` (and
/// kept): after that a redemption of it is dropped like any stranger's.
pub(crate) const INVITE_KEPT_AFTER_EXPIRY_MS: u64 = 24 * 3600 * 1000;

/// Refusals of redemptions (of spent or expired invites) per identity and
/// minute, at most.
const REFUSALS_PER_MINUTE: u32 = 20;

/// Which refusals of redemptions may still be sent: one per identity,
/// invite and sender, and [`REFUSALS_PER_MINUTE`] per identity.
#[derive(Default)]
pub(crate) struct RefusalLimiter {
    sent: std::collections::HashSet<(Name, [u8; 32], PublicKey)>,
    minute: HashMap<Name, (std::time::Instant, u32)>,
}

impl RefusalLimiter {
    /// Most (identity, invite, sender) triples remembered; forgotten all at
    /// once beyond (a sender then gets at most one more refusal).
    const REMEMBERED: usize = 4096;

    pub(crate) fn allow(&mut self, name: &Name, invite: &[u8; 32], from: &PublicKey) -> bool {
        let now = std::time::Instant::now();
        let (started, count) = self.minute.entry(name.clone()).or_insert((now, 0));
        if now.duration_since(*started) >= std::time::Duration::from_secs(60) {
            (*started, *count) = (now, 0);
        }
        if *count >= REFUSALS_PER_MINUTE {
            return false;
        }
        if self.sent.len() >= Self::REMEMBERED {
            self.sent.clear();
        }
        if !self.sent.insert((name.clone(), *invite, *from)) {
            return false;
        }
        *count += 1;
        true
    }
}

impl Daemon {
    /// A first message from a non-contact. Returns whether to acknowledge it.
    pub(crate) async fn redeem(&self, name: &Name, envelope: &Envelope) -> bool {
        let from = envelope.from;
        let drop_it = |why: &str| {
            tracing::info!(identity = %name, from = %from.short_id(), why, "dropped a message from a non-contact");
            self.counters.non_contact.fetch_add(1, Ordering::Relaxed);
            true
        };
        let payload = &envelope.payload;
        let (Some(one_time_key), Some(their_curve)) =
            (prekey_one_time_key(payload), prekey_identity_key(payload))
        else {
            return drop_it("not a first message");
        };
        let Ok((_, identity)) = self.pick(Some(name.as_str())) else {
            return false;
        };
        let _account = self.accounts.lock().await;
        let owner = name.clone();
        let record = match self
            .db
            .run(move |tx| tx.invite_by_key(&owner, &one_time_key))
            .await
        {
            Ok(Some(record)) => record,
            Ok(None) => return drop_it("no invite of ours"),
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
            // Anyone who ever saw the link can send redemptions of a spent or
            // expired invite: each is dropped and counted, and only a few
            // get a refusal (one per sender and invite, a bounded number a
            // minute), so they cannot make this daemon write without end.
            self.counters.non_contact.fetch_add(1, Ordering::Relaxed);
            let long_expired = now_ms()
                >= record
                    .expires_at_ms
                    .saturating_add(INVITE_KEPT_AFTER_EXPIRY_MS);
            if long_expired
                || !self
                    .refusals_allowed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .allow(name, &one_time_key, &from)
            {
                tracing::debug!(identity = %name, from = %from.short_id(), ?answer, "dropped a redemption without a refusal");
                return true;
            }
            let notice = {
                let guard = identity.lock().unwrap_or_else(|e| e.into_inner());
                pairing::notice(&guard, &one_time_key, &from, answer)
            };
            tracing::info!(identity = %name, from = %from.short_id(), ?answer, "refused a redemption");
            return self.queue_notice(name, from, notice).await;
        }
        let accepted = {
            let mut guard = identity.lock().unwrap_or_else(|e| e.into_inner());
            let opened = guard.accept_session(their_curve, payload);
            match opened {
                Err(_) => Err("redemption does not decrypt"),
                Ok((session, first)) => match (first.kind, Redeem::decode(&first.body)) {
                    (Kind::Redeem, Ok(redeem))
                        if redeem.acceptor == from
                            && redeem.verify(&guard.address(), &their_curve)
                            && redeem.secret.as_bytes() == &record.secret =>
                    {
                        let notice =
                            pairing::notice(&guard, &one_time_key, &from, Answer::Accepted);
                        Ok((
                            session.to_encrypted_pickle(&self.key),
                            redeem,
                            notice,
                            guard.to_encrypted_pickle(&self.key),
                            guard.address(),
                        ))
                    }
                    (Kind::Redeem, Ok(_)) => Err("redemption does not prove the invite"),
                    _ => Err("first message is not a redemption"),
                },
            }
        };
        let (session_pickle, redeem, notice, identity_pickle, address) = match accepted {
            Ok(accepted) => accepted,
            Err(why) => {
                // The one-time key stays for the real redemption.
                self.reload_identity(name, &identity).await;
                return drop_it(why);
            }
        };
        let now = now_ms();
        let owner = name.clone();
        let mut slot = self.session_slot(name, &from).await;
        let stored = self
            .db
            .run(move |tx| {
                // A contact that had removed us pairs again: the old entry
                // gives way, and the name we gave it stays.
                let petname = match tx.contact(&owner, &from)? {
                    Some(old) if old.state == ContactState::Removed => {
                        tx.remove_contact(&owner, &from)?;
                        old.petname
                    }
                    // The name the inviter chose wins over the one the
                    // redeemer suggests, which is only a hint.
                    _ => match &record.for_name {
                        Some(chosen) => tx.free_petname(&owner, chosen)?,
                        None => tx.free_petname(&owner, &petname_hint(&redeem.acceptor_name))?,
                    },
                };
                tx.add_contact(
                    &owner,
                    &Contact {
                        address: from,
                        curve25519: their_curve,
                        petname,
                        via: Via::Invited,
                        state: ContactState::Active,
                        invite_key: None,
                        permissions: record.permissions,
                        created_at_ms: now,
                    },
                )?;
                tx.save_session(&owner, &from, &session_pickle)?;
                tx.save_identity(&owner, &address, &identity_pickle, now)?;
                tx.spend_invite(&owner, &one_time_key, &from, now)?;
                insert_notice(tx, &owner, from, &notice, now)?;
                Ok::<_, StoreError>(())
            })
            .await;
        *slot = None;
        drop(slot);
        match stored {
            Ok(()) => {
                self.counters.redeemed.fetch_add(1, Ordering::Relaxed);
                self.outbox_waker(name).notify_one();
                match self.contact(name, &from).await {
                    Ok(Some(contact)) => {
                        tracing::info!(identity = %name, contact = %contact.petname, key = %from.short_id(), permissions = ?contact.permissions.names(), "invite redeemed: new contact");
                        self.publish(
                            name,
                            [Published::Contact(crate::views::contact_view(&contact))],
                        );
                        crate::ops::cards::send_card_to(self, name, &from).await;
                        // A listed invite is spent: list a fresh one.
                        let owner = name.clone();
                        self.spawn(move |daemon| async move {
                            crate::ops::directory::refresh(&daemon, &owner, Some(one_time_key))
                                .await;
                        });
                    }
                    _ => {
                        tracing::info!(identity = %name, contact = %from.short_id(), "invite redeemed: new contact")
                    }
                }
                true
            }
            Err(error) => {
                // The account in memory consumed the one-time key; reload it
                // from the store so memory matches what is committed.
                tracing::error!(%error, "cannot store a new contact");
                self.reload_identity(name, &identity).await;
                false
            }
        }
    }

    /// Replaces the in-memory account with the stored one, after a change to
    /// it (a one-time key consumed) was not committed.
    async fn reload_identity(&self, name: &Name, identity: &Arc<StdMutex<Identity>>) {
        let stored = self.db.run(|tx| tx.identities()).await;
        let restored = match stored {
            Ok(all) => match all.into_iter().find(|(n, _)| n == name.as_str()) {
                Some((_, pickle)) => {
                    Identity::from_encrypted_pickle(name.clone(), &pickle, &self.key)
                        .map_err(|e| e.to_string())
                }
                None => Err("it is not in the store".to_owned()),
            },
            Err(error) => Err(error.to_string()),
        };
        match restored {
            Ok(restored) => *identity.lock().unwrap_or_else(|e| e.into_inner()) = restored,
            Err(error) => {
                tracing::error!(identity = %name, %error, "cannot reload an identity from the store")
            }
        }
    }

    /// Queues a pairing notice; whether it is stored (then the envelope it
    /// answers is acknowledged).
    pub(crate) async fn queue_notice(&self, name: &Name, to: PublicKey, notice: Vec<u8>) -> bool {
        let now = now_ms();
        let owner = name.clone();
        match self
            .db
            .run(move |tx| insert_notice(tx, &owner, to, &notice, now))
            .await
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

    /// The inviter's answer to our redemption. Returns whether to
    /// acknowledge it.
    pub(crate) async fn answered(&self, name: &Name, contact: &Contact, payload: &[u8]) -> bool {
        let Ok((_, identity)) = self.pick(Some(name.as_str())) else {
            return false;
        };
        let me = identity.lock().unwrap_or_else(|e| e.into_inner()).address();
        let answer = contact
            .invite_key
            .and_then(|key| pairing::read_notice(payload, &contact.address, &me, &key));
        let Some(answer) = answer else {
            self.counters.undecryptable.fetch_add(1, Ordering::Relaxed);
            return true;
        };
        let (owner, address) = (name.clone(), contact.address);
        let result = match answer {
            Answer::Accepted => {
                let activated = self
                    .db
                    .run(move |tx| tx.set_contact_state(&owner, &address, ContactState::Active))
                    .await;
                if activated.is_ok() {
                    crate::ops::cards::send_card_to(self, name, &contact.address).await;
                }
                activated
            }
            refused => {
                self.refusals.set((name.clone(), contact.address), refused);
                if contact.state == ContactState::Pending {
                    let mut slot = self.session_slot(name, &address).await;
                    let removed = self
                        .db
                        .run(move |tx| tx.remove_contact(&owner, &address).map(|_| ()))
                        .await;
                    *slot = None;
                    removed
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
