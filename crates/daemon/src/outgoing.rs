//! Sealing a message for a contact and queueing it with whatever else must
//! commit with it (a task's new state, a removed contact, ...). Used by
//! every operation that writes to a contact.
//!
//! The message is sealed under the contact's session lock, and the id is
//! made there too: ids are time-ordered and the outbox goes out in id order,
//! so a session's messages go out in the order they were sealed (the
//! recipient's ratchet tolerates only a little reordering). The commit is
//! awaited after letting go of the lock, so a burst of sends shares one
//! commit.

use agentwire_session::{Chain, MessageId, Name, Plaintext};
use agentwire_wire::PublicKey;

use crate::api::{ApiError, ErrorCode, internal};
use crate::core::{Daemon, SessionSlot, now_ms};
use crate::store::Tx;

/// A message sealed in a contact's session, not queued yet. Holds the
/// session's lock until [`Daemon::queue_sealed`].
pub(crate) struct Sealed {
    /// The message as sealed.
    pub(crate) plaintext: Plaintext,
    /// The ciphertext for the relay.
    pub(crate) payload: Vec<u8>,
    peer: PublicKey,
    session_pickle: String,
    slot: SessionSlot,
}

impl Daemon {
    /// The reply chain of a message that answers `reply_to` (see
    /// [`agentwire_session::Chain`]): read before sealing, so that it travels
    /// inside the encryption.
    pub(crate) async fn reply_chain(
        &self,
        name: &Name,
        reply_to: Option<MessageId>,
    ) -> Result<Option<Chain>, ApiError> {
        let Some(parent) = reply_to else {
            return Ok(None);
        };
        let owner = name.clone();
        Ok(self
            .db
            .run(move |tx| tx.reply_chain(&owner, &parent))
            .await?)
    }

    /// Seals the message `make` builds (from a fresh id and the time) in the
    /// session with `peer`.
    pub(crate) async fn seal_for(
        &self,
        name: &Name,
        peer: &PublicKey,
        make: impl FnOnce(MessageId, u64) -> Plaintext,
    ) -> Result<Sealed, ApiError> {
        let mut slot = self.session_slot(name, peer).await;
        let session = self
            .load_session(&mut slot, name, peer)
            .await?
            .ok_or_else(|| internal("no session with this contact", peer.short_id()))?;
        let plaintext = make(MessageId::new_v7(), now_ms());
        let payload = session.seal(&plaintext).map_err(|e| match e {
            agentwire_session::SessionError::Message(m) => {
                ApiError::new(ErrorCode::BodyTooLarge, m.to_string())
            }
            other => internal("cannot encrypt", other),
        })?;
        let session_pickle = session.to_encrypted_pickle(&self.key);
        Ok(Sealed {
            plaintext,
            payload,
            peer: *peer,
            session_pickle,
            slot,
        })
    }

    /// Stores the session's new state and runs `job` (which queues the
    /// payload and anything that goes with it) in one transaction, then
    /// wakes the outbox. A failed job or commit leaves nothing, and the
    /// cached session (ahead of the store) is forgotten.
    pub(crate) async fn queue_sealed<T: Send + 'static>(
        &self,
        name: &Name,
        sealed: Sealed,
        job: impl FnOnce(&Tx<'_>, &Plaintext, &[u8]) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let Sealed {
            plaintext,
            payload,
            peer,
            session_pickle,
            slot,
        } = sealed;
        let owner = name.clone();
        let pending = self
            .db
            .queue(move |tx| {
                tx.save_session(&owner, &peer, &session_pickle)
                    .map_err(ApiError::from)?;
                job(tx, &plaintext, &payload)
            })
            .await;
        let committed = match pending {
            Ok(pending) => {
                drop(slot);
                pending.committed().await
            }
            Err(error) => {
                drop(slot);
                Err(ApiError::from(error))
            }
        };
        match committed {
            Ok(value) => {
                self.outbox_waker(name).notify_one();
                Ok(value)
            }
            Err(error) => {
                *self.session_slot(name, &peer).await = None;
                Err(error)
            }
        }
    }
}
