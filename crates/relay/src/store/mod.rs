//! The relay's storage boundary: queued envelopes, delivery tombstones,
//! expiry notices, queue depths, the directory and the relay id.
//!
//! The rest of the relay sees [`Store`], a cheap cloneable handle whose async
//! methods each answer only once their effect is committed. Two engines sit
//! behind it, with the same guarantees and the same tests:
//!
//! - [`sqlite`], the default: one file, owned by one relay process;
//! - `postgres` (cargo feature `postgres`): one database shared by the nodes
//!   of a relay cluster, which learn of each other's writes through
//!   `LISTEN`/`NOTIFY`.
//!
//! Only these modules know SQL.

use std::sync::Arc;

use agentwire_wire::{EnvelopeId, PublicKey, RelayId};

use crate::config::Database;
use crate::metrics::Metrics;
use crate::wakers::Wakers;

#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;

/// Expired envelopes moved to notices per sweep transaction, at most.
pub(crate) const SWEEP_BATCH: usize = 1000;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The store thread has stopped.
    #[error("the store is closed")]
    Closed,
    /// The transaction could not be committed.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The store could not be opened or started.
    #[error("{0}")]
    Open(String),
    /// PostgreSQL answered with an error.
    #[error("database error: {0}")]
    Postgres(String),
    /// The database does not answer (PostgreSQL: it is down, unreachable, or
    /// every connection is busy for too long).
    #[error("the database does not answer: {0}")]
    Unavailable(String),
}

/// The result of offering an envelope to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PutOutcome {
    /// Stored now.
    Stored,
    /// The same sender already sent this id to this recipient (queued or
    /// delivered); nothing changed.
    Duplicate,
    /// Another sender already used this id for this recipient.
    IdConflict,
    /// The recipient's queue is full.
    QueueFull,
    /// This sender already holds its whole share of the recipient's queue.
    SenderShareFull,
}

/// The result of offering a directory entry to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListOutcome {
    /// Stored now, replacing the key's older entry if any.
    Stored,
    /// The key already has an entry as new or newer; nothing changed.
    Stale,
    /// The directory holds its limit of keys and this one is not among them.
    Full,
}

/// A directory entry for [`Store::list`], already checked by the caller.
pub(crate) struct NewListing {
    pub(crate) key: PublicKey,
    pub(crate) published_at_ms: u64,
    /// When lookups stop returning it (its publish time for a withdrawal).
    pub(crate) listed_until_ms: u64,
    /// When the store forgets it.
    pub(crate) forget_at_ms: u64,
    pub(crate) capabilities: Vec<String>,
    /// The entry's bytes, returned by lookups as they are.
    pub(crate) entry: Vec<u8>,
}

/// An envelope as it sits in a recipient's queue.
#[derive(Clone, Debug)]
pub(crate) struct Queued {
    pub(crate) seq: i64,
    pub(crate) id: EnvelopeId,
    pub(crate) sender: PublicKey,
    pub(crate) received_at_ms: u64,
    pub(crate) payload: Vec<u8>,
}

/// A notice for a sender that one of its envelopes expired undelivered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ExpiryNotice {
    pub(crate) sender: PublicKey,
    pub(crate) recipient: PublicKey,
    pub(crate) id: EnvelopeId,
    pub(crate) expired_at_ms: u64,
}

/// A new envelope for [`Store::put`].
pub(crate) struct NewEnvelope {
    pub(crate) sender: PublicKey,
    pub(crate) recipient: PublicKey,
    pub(crate) id: EnvelopeId,
    pub(crate) payload: Vec<u8>,
    pub(crate) received_at_ms: u64,
    pub(crate) expires_at_ms: u64,
}

/// Handle to the store. Cloning is cheap; the store's workers end when the
/// last handle is dropped (after finishing what was asked of them).
#[derive(Clone)]
pub(crate) enum Store {
    Sqlite(sqlite::Store),
    #[cfg(feature = "postgres")]
    Postgres(postgres::Store),
}

/// The store's workers, to be awaited after the last [`Store`] handle is
/// gone.
pub(crate) enum StoreWorkers {
    Sqlite(sqlite::StoreThread),
    #[cfg(feature = "postgres")]
    Postgres(postgres::Workers),
}

impl StoreWorkers {
    /// Waits until the last batch is committed and the last read answered.
    pub(crate) async fn finish(self) {
        match self {
            StoreWorkers::Sqlite(thread) => {
                if tokio::task::spawn_blocking(move || thread.join())
                    .await
                    .is_err()
                {
                    tracing::error!("the store thread could not be joined");
                }
            }
            #[cfg(feature = "postgres")]
            StoreWorkers::Postgres(workers) => workers.finish().await,
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $body:expr) => {
        match $self {
            Store::Sqlite($store) => $body,
            #[cfg(feature = "postgres")]
            Store::Postgres($store) => $body,
        }
    };
}

impl Store {
    /// Opens (creating or migrating if needed) the database and starts the
    /// store's workers. `wakers` hears of envelopes and notices that other
    /// relay nodes stored (PostgreSQL only).
    pub(crate) async fn open(
        database: &Database,
        metrics: Arc<Metrics>,
        wakers: Arc<Wakers>,
    ) -> Result<(Store, StoreWorkers, RelayId), StoreError> {
        match database {
            Database::Sqlite(path) => {
                let path = path.clone();
                let (store, thread, relay_id) =
                    tokio::task::spawn_blocking(move || sqlite::Store::open(&path, metrics))
                        .await
                        .map_err(|e| StoreError::Open(format!("cannot open the store: {e}")))??;
                let _ = wakers;
                Ok((Store::Sqlite(store), StoreWorkers::Sqlite(thread), relay_id))
            }
            #[cfg(feature = "postgres")]
            Database::Postgres(config) => {
                let (store, workers, relay_id) =
                    postgres::Store::open(config, metrics, wakers).await?;
                Ok((
                    Store::Postgres(store),
                    StoreWorkers::Postgres(workers),
                    relay_id,
                ))
            }
            #[cfg(not(feature = "postgres"))]
            Database::Postgres(_) => {
                let _ = (metrics, wakers);
                Err(StoreError::Open(
                    "this agentwire was built without PostgreSQL support (cargo feature \
                     `postgres`); use a SQLite file, or a build with that feature"
                        .into(),
                ))
            }
        }
    }

    /// Whether the database answers now (always, for SQLite: it is a file
    /// this process holds open).
    pub(crate) async fn check(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => Ok(()),
            #[cfg(feature = "postgres")]
            Store::Postgres(store) => store.check().await,
        }
    }

    /// The engine's name, as `/health` reports it.
    pub(crate) fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Store::Postgres(_) => "postgres",
        }
    }

    /// Envelopes queued across all recipients, as of the last commit (on a
    /// cluster, as of this node's last check).
    pub(crate) fn queued(&self) -> u64 {
        dispatch!(self, s => s.queued())
    }

    /// Stores an envelope unless its id is a duplicate, conflicts, or the
    /// recipient's queue holds `max_queue` already, or this sender
    /// `max_per_sender` of them.
    pub(crate) async fn put(
        &self,
        envelope: NewEnvelope,
        max_queue: u32,
        max_per_sender: u32,
    ) -> Result<PutOutcome, StoreError> {
        dispatch!(self, s => s.put(envelope, max_queue, max_per_sender).await)
    }

    /// Up to `limit` unexpired envelopes for `recipient` after `after_seq`,
    /// oldest first.
    pub(crate) async fn fetch(
        &self,
        recipient: PublicKey,
        after_seq: i64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        dispatch!(self, s => s.fetch(recipient, after_seq, now_ms, limit).await)
    }

    /// How many envelopes wait for `recipient`.
    pub(crate) async fn depth(&self, recipient: PublicKey) -> Result<u64, StoreError> {
        dispatch!(self, s => s.depth(recipient).await)
    }

    /// The recipient acknowledges `id`: delete it, keeping a tombstone until
    /// it would have expired so that a resend of the same id is recognised.
    /// Returns whether an envelope was removed. Only the recipient's own
    /// queue is touched, so anyone else's ack has no effect.
    pub(crate) async fn ack(
        &self,
        recipient: PublicKey,
        id: EnvelopeId,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.ack(recipient, id).await)
    }

    /// [`Store::ack`] for a batch of ids, in one store job; returns how many
    /// envelopes were removed.
    pub(crate) async fn ack_batch(
        &self,
        recipient: PublicKey,
        ids: Vec<EnvelopeId>,
    ) -> Result<usize, StoreError> {
        dispatch!(self, s => s.ack_batch(recipient, ids).await)
    }

    /// Moves envelopes whose time is up into expiry notices (kept for one
    /// more TTL, or until the sender dismisses them), forgets old tombstones
    /// and notices, and returns the new notices (at most [`SWEEP_BATCH`]).
    pub(crate) async fn sweep(
        &self,
        now_ms: u64,
        notice_ttl_ms: u64,
    ) -> Result<Vec<ExpiryNotice>, StoreError> {
        dispatch!(self, s => s.sweep(now_ms, notice_ttl_ms).await)
    }

    /// Up to `limit` undismissed expiry notices for `sender`.
    pub(crate) async fn notices(
        &self,
        sender: PublicKey,
        limit: usize,
    ) -> Result<Vec<ExpiryNotice>, StoreError> {
        dispatch!(self, s => s.notices(sender, limit).await)
    }

    /// Stores a directory entry for its key unless the key has one as new
    /// or newer, or the directory already lists `max_entries` other keys.
    pub(crate) async fn list(
        &self,
        listing: NewListing,
        max_entries: u32,
    ) -> Result<ListOutcome, StoreError> {
        dispatch!(self, s => s.list(listing, max_entries).await)
    }

    /// Up to `limit` listed entries with `capability` (any, when empty),
    /// newest first.
    pub(crate) async fn lookup(
        &self,
        capability: String,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        dispatch!(self, s => s.lookup(capability, now_ms, limit).await)
    }

    /// The sender has seen the notice for `id` to `recipient`; forget it.
    pub(crate) async fn dismiss(
        &self,
        sender: PublicKey,
        recipient: PublicKey,
        id: EnvelopeId,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.dismiss(sender, recipient, id).await)
    }
}

/// Milliseconds as the stores keep them (SQL integers are signed).
fn to_sql_time(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn from_sql_time(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Key and id columns are always written from fixed-size arrays; a row that
/// somehow holds another length reads as zeros.
fn to_array<const N: usize>(bytes: Vec<u8>) -> [u8; N] {
    <[u8; N]>::try_from(bytes.as_slice()).unwrap_or([0; N])
}
