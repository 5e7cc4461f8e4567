//! The daemon's local store (SQLite, WAL, `synchronous=FULL`): identities
//! (as encrypted pickles), contacts, session state (encrypted pickles),
//! invites, and messages in both directions. The only module that knows SQL
//! or rusqlite: the rest of the daemon sees [`Store`], [`Tx`] and
//! [`StoreError`].
//!
//! Changes that must stand or fall together — a decrypted message and the
//! session state that decrypted it; a new contact and the spent invite — are
//! written in one transaction by the caller through [`Store::write`]. Every
//! statement is prepared once per connection and cached.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use agentwire_api::{ContactState, DeliveryState, Via};
use agentwire_session::{Chain, Kind, MessageId, Name, Permissions, Priority};
use agentwire_wire::PublicKey;
use rusqlite::Connection;

/// Statements kept prepared per connection.
const STATEMENT_CACHE: usize = 64;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The transaction this change was part of did not commit.
    #[error("the local store could not commit: {0}")]
    Commit(std::sync::Arc<StoreError>),
    /// The store thread is gone (the daemon is stopping).
    #[error("the local store is closed (the daemon is stopping)")]
    Closed,
    /// The store thread could not start.
    #[error("cannot start the store thread: {0}")]
    Thread(std::io::Error),
}

impl StoreError {
    /// Whether a uniqueness rule refused the change (a name already taken).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Sqlite(rusqlite::Error::SqliteFailure(failure, _))
            if failure.code == rusqlite::ErrorCode::ConstraintViolation)
    }

    /// A stored value that does not read back as its type.
    fn corrupt(what: &str, value: impl std::fmt::Display) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("stored {what} \"{value}\" is not valid").into(),
        )
    }
}

/// `Result` of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which way a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received.
    In,
    /// Sent.
    Out,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// A stored contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// The contact's address.
    pub address: PublicKey,
    /// Its Curve25519 identity key.
    pub curve25519: [u8; 32],
    /// The local name for it.
    pub petname: Name,
    /// How it became a contact.
    pub via: Via,
    /// `active`, or `pending` until the inviter confirms our redemption.
    pub state: ContactState,
    /// For a contact we accepted an invite from: the invite's one-time key,
    /// which the inviter's answer names.
    pub invite_key: Option<[u8; 32]>,
    /// What it may send to us; the receive path refuses the rest.
    pub permissions: Permissions,
    /// Unix milliseconds.
    pub created_at_ms: u64,
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its id.
    pub id: MessageId,
    /// Which way it went.
    pub direction: Direction,
    /// The other side.
    pub peer: PublicKey,
    /// Its kind.
    pub kind: Kind,
    /// How soon it should be seen.
    pub priority: Priority,
    /// What it answers.
    pub reply_to: Option<MessageId>,
    /// Its thread.
    pub thread: Option<MessageId>,
    /// The sender's clock, Unix ms.
    pub sent_at_ms: u64,
    /// When this daemon stored it, Unix ms.
    pub stored_at_ms: u64,
    /// The content.
    pub body: Vec<u8>,
    /// For outgoing messages, where it is; incoming ones are `delivered`.
    pub state: DeliveryState,
    /// The chain of replies it belongs to.
    pub chain: Option<Chain>,
}

impl StoredMessage {
    /// An outgoing message of `kind` to `peer` with an empty local body: what
    /// the outbox keeps for pairing messages and receipts (their content is
    /// only in the sealed payload).
    pub fn outgoing_control(
        id: MessageId,
        peer: PublicKey,
        kind: Kind,
        now_ms: u64,
    ) -> StoredMessage {
        StoredMessage {
            id,
            direction: Direction::Out,
            peer,
            kind,
            priority: Priority::Normal,
            reply_to: None,
            thread: None,
            sent_at_ms: now_ms,
            stored_at_ms: now_ms,
            body: Vec::new(),
            state: DeliveryState::Queued,
            chain: None,
        }
    }
}

/// An invite this daemon made. `Debug` leaves out the secret.
#[derive(Clone)]
pub struct InviteRecord {
    /// The invite's secret.
    pub secret: [u8; 32],
    /// Expiry, Unix ms.
    pub expires_at_ms: u64,
    /// Who redeemed it, if anyone.
    pub spent_by: Option<PublicKey>,
    /// What the new contact may send.
    pub permissions: Permissions,
    /// The petname the inviter chose for whoever redeems it.
    pub for_name: Option<Name>,
}

impl std::fmt::Debug for InviteRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteRecord")
            .field("secret", &"<redacted>")
            .field("expires_at_ms", &self.expires_at_ms)
            .field("spent_by", &self.spent_by)
            .field("permissions", &self.permissions)
            .field("for_name", &self.for_name)
            .finish()
    }
}

/// An outgoing message waiting for the relay to accept it.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// Its place in the outbox: the order it was queued in (which, for one
    /// contact, is the order its session sealed them in).
    pub seq: i64,
    /// Its id (also the envelope id).
    pub id: MessageId,
    /// The recipient.
    pub peer: PublicKey,
    /// The sealed payload, exactly as it will be sent (and resent).
    pub payload: Vec<u8>,
}

/// An outgoing message as `status` and `sent` show it.
#[derive(Clone, Debug)]
pub struct SentMessage {
    /// Its id.
    pub id: MessageId,
    /// Its recipient.
    pub peer: PublicKey,
    /// Its kind.
    pub kind: Kind,
    /// Its state.
    pub state: DeliveryState,
    /// When it was sent, Unix ms.
    pub sent_at_ms: u64,
    /// When its state last changed, Unix ms.
    pub updated_at_ms: u64,
    /// When it was seen to reach `relayed`, `delivered` and `read`, Unix ms.
    /// A state learnt late fills the earlier ones it implies with the same
    /// time: a message read was delivered and relayed by then.
    pub reached_at_ms: Reached,
    /// Why the recipient refused it, when it did.
    pub reason: Option<String>,
}

/// When a sent message reached each state of its progress, Unix ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reached {
    /// Stored by the relay.
    pub relayed: Option<u64>,
    /// Stored by the recipient's daemon.
    pub delivered: Option<u64>,
    /// Taken by the recipient's agent.
    pub read: Option<u64>,
}

/// The store.
pub struct Store {
    conn: Connection,
    /// Moves on whenever the contacts may have changed (see
    /// [`Store::contacts_version`]).
    contacts_version: Arc<AtomicU64>,
}

impl Store {
    /// Opens (creating, 0600) and migrates the database.
    pub fn open(path: &Path) -> Result<Store> {
        if let Err(error) = crate::home::create_private_file(path) {
            return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(error)).into());
        }
        let conn = connection(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&conn)?;
        Ok(Store {
            conn,
            contacts_version: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Opens the same database for reading only, for a second thread: in WAL
    /// mode it reads the last commit while the writer is in its `fsync`.
    pub fn open_reader(path: &Path, contacts_version: Arc<AtomicU64>) -> Result<Store> {
        let conn = connection(path)?;
        conn.pragma_update(None, "query_only", "ON")?;
        Ok(Store {
            conn,
            contacts_version,
        })
    }

    /// A counter that moves on whenever a job changes an identity's
    /// contacts, and when a transaction that might have done so is rolled
    /// back. A copy of the contacts read in a job together with
    /// [`Tx::contacts_version`] is current while the counter still says so.
    pub fn contacts_version(&self) -> Arc<AtomicU64> {
        self.contacts_version.clone()
    }

    /// Runs `f` in one transaction; commits if it returns `Ok`.
    pub fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let version = &self.contacts_version;
        let tx = self.conn.transaction().map_err(StoreError::from)?;
        let value = f(&Tx {
            conn: &tx,
            contacts_version: version,
        });
        let outcome = match value {
            Ok(value) => tx
                .commit()
                .map(|()| value)
                .map_err(|e| StoreError::from(e).into()),
            Err(error) => Err(error),
        };
        if outcome.is_err() {
            // Whatever the jobs read of the contacts may not have been kept.
            version.fetch_add(1, Ordering::Release);
        }
        outcome
    }

    /// Reads (and single-statement writes) outside a transaction.
    pub fn read(&self) -> Tx<'_> {
        Tx {
            conn: &self.conn,
            contacts_version: &self.contacts_version,
        }
    }
}

/// A connection to the database with what the writer and the reader share.
fn connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // The planner must not look at bound values: where it does, SQLite
    // prepares the statement again each time a value changes, which made
    // the statement cache useless on the hot paths.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(conn)
}

/// The store's schema version once migrated.
const SCHEMA_VERSION: i64 = 9;

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version < 1 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS identities (
                 name TEXT PRIMARY KEY,
                 address BLOB NOT NULL UNIQUE,
                 pickle TEXT NOT NULL,
                 created_at INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS contacts (
                 identity TEXT NOT NULL,
                 address BLOB NOT NULL,
                 curve25519 BLOB NOT NULL,
                 petname TEXT NOT NULL,
                 via TEXT NOT NULL,
                 state TEXT NOT NULL,
                 invite_key BLOB,
                 created_at INTEGER NOT NULL,
                 PRIMARY KEY (identity, address),
                 UNIQUE (identity, petname)
             );
             CREATE TABLE IF NOT EXISTS sessions (
                 identity TEXT NOT NULL,
                 address BLOB NOT NULL,
                 pickle TEXT NOT NULL,
                 PRIMARY KEY (identity, address)
             );
             CREATE TABLE IF NOT EXISTS messages (
                 identity TEXT NOT NULL,
                 id BLOB NOT NULL,
                 direction TEXT NOT NULL,
                 peer BLOB NOT NULL,
                 kind TEXT NOT NULL,
                 priority INTEGER NOT NULL DEFAULT 1,
                 reply_to BLOB,
                 thread BLOB,
                 sent_at INTEGER NOT NULL,
                 stored_at INTEGER NOT NULL,
                 body BLOB NOT NULL,
                 payload BLOB,
                 state TEXT NOT NULL,
                 updated_at INTEGER,
                 consumed_at INTEGER,
                 PRIMARY KEY (identity, id)
             );
             CREATE INDEX IF NOT EXISTS messages_unread
                 ON messages (identity, direction, consumed_at, priority, id);
             CREATE INDEX IF NOT EXISTS messages_outbox ON messages (state, identity);
             CREATE TABLE IF NOT EXISTS invites (
                 identity TEXT NOT NULL,
                 one_time_key BLOB NOT NULL,
                 secret BLOB NOT NULL,
                 expires_at INTEGER NOT NULL,
                 permissions INTEGER NOT NULL,
                 created_at INTEGER NOT NULL,
                 spent_at INTEGER,
                 spent_by BLOB,
                 PRIMARY KEY (identity, one_time_key)
             );
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    if version < 2 {
        // The outbox is read on every push: a partial index holds just the
        // queued outgoing messages, in id order, instead of a walk through
        // every message the identity ever had.
        conn.execute_batch(
            "BEGIN;
             CREATE INDEX IF NOT EXISTS messages_queued ON messages (identity, id)
                 WHERE state = 'queued' AND direction = 'out';
             DROP INDEX IF EXISTS messages_outbox;
             PRAGMA user_version = 2;
             COMMIT;",
        )?;
    }
    if version < 3 {
        // When a sent message was seen to reach each state, for `sent` and
        // `status`: NULL until then (and for messages sent before this).
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE messages ADD COLUMN relayed_at INTEGER;
             ALTER TABLE messages ADD COLUMN delivered_at INTEGER;
             ALTER TABLE messages ADD COLUMN read_at INTEGER;
             PRAGMA user_version = 3;
             COMMIT;",
        )?;
    }
    if version < 4 {
        // Tasks both ways: the task message's id, which side we are on, and
        // where the task is (the text stays in `messages`).
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS tasks (
                 identity TEXT NOT NULL,
                 id BLOB NOT NULL,
                 role TEXT NOT NULL,
                 peer BLOB NOT NULL,
                 state TEXT NOT NULL,
                 detail TEXT,
                 result BLOB,
                 created_at INTEGER NOT NULL,
                 updated_at INTEGER NOT NULL,
                 PRIMARY KEY (identity, id)
             );
             PRAGMA user_version = 4;
             COMMIT;",
        )?;
    }
    if version < 5 {
        // What each contact may send us (bits as in invites: 1 chat, 2 task,
        // 4 file; contacts from before had everything), the petname an
        // invite gives whoever redeems it, and each message's reply chain.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE contacts ADD COLUMN permissions INTEGER NOT NULL DEFAULT 7;
             ALTER TABLE invites ADD COLUMN for_name TEXT;
             ALTER TABLE messages ADD COLUMN chain BLOB;
             ALTER TABLE messages ADD COLUMN hops INTEGER;
             ALTER TABLE messages ADD COLUMN reason TEXT;
             ALTER TABLE contacts ADD COLUMN card BLOB;
             CREATE TABLE IF NOT EXISTS own_cards (
                 identity TEXT PRIMARY KEY,
                 card BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS file_parts (
                 identity TEXT NOT NULL,
                 peer BLOB NOT NULL,
                 file BLOB NOT NULL,
                 idx INTEGER NOT NULL,
                 PRIMARY KEY (identity, peer, file, idx)
             );
             CREATE TABLE IF NOT EXISTS outgoing_files (
                 identity TEXT NOT NULL,
                 file BLOB NOT NULL,
                 transfer BLOB NOT NULL,
                 peer BLOB NOT NULL,
                 parts_queued INTEGER NOT NULL,
                 offer BLOB,
                 PRIMARY KEY (identity, file)
             );
             CREATE TABLE IF NOT EXISTS task_chunks (
                 identity TEXT NOT NULL,
                 task BLOB NOT NULL,
                 seq INTEGER NOT NULL,
                 body TEXT NOT NULL,
                 stored_at INTEGER NOT NULL,
                 PRIMARY KEY (identity, task, seq)
             );
             PRAGMA user_version = 5;
             COMMIT;",
        )?;
    }
    if version < 6 {
        // Each identity's listing in its relay's directory: the invite it
        // carries (replaced after each redemption) and what it offers.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS listings (
                 identity TEXT PRIMARY KEY,
                 invite_key BLOB NOT NULL,
                 permissions INTEGER NOT NULL
             );
             PRAGMA user_version = 6;
             COMMIT;",
        )?;
    }
    if version < 7 {
        // The outbox is pushed in the order messages were queued (rowid),
        // not by id: ids of messages to different contacts are made in one
        // order and may be queued in another, and paging by id skipped a
        // message queued late with an early id until after later messages
        // of its own session, which the recipient then could not decrypt.
        conn.execute_batch(
            "BEGIN;
             DROP INDEX IF EXISTS messages_queued;
             CREATE INDEX IF NOT EXISTS messages_queued ON messages (identity)
                 WHERE state = 'queued' AND direction = 'out';
             PRAGMA user_version = 7;
             COMMIT;",
        )?;
    }
    if version < 8 {
        // Fair reading: an unread message's lane (its priority, except a
        // contact's urgent messages beyond its share, which queue as
        // normal) and its turn among its sender's unread messages in that
        // lane; unread messages are handed out by lane, then turn, so that
        // one contact's flood cannot keep everyone else's waiting.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE messages ADD COLUMN lane INTEGER NOT NULL DEFAULT 1;
             ALTER TABLE messages ADD COLUMN turn INTEGER NOT NULL DEFAULT 0;
             UPDATE messages SET lane = priority;
             DROP INDEX IF EXISTS messages_unread;
             CREATE INDEX IF NOT EXISTS messages_unread
                 ON messages (identity, direction, consumed_at, lane, turn, id);
             CREATE INDEX IF NOT EXISTS messages_waiting ON messages (identity, peer, lane, turn)
                 WHERE direction = 'in' AND consumed_at IS NULL;
             PRAGMA user_version = 8;
             COMMIT;",
        )?;
    }
    if version < 9 {
        // The unread index holds only what is unread: outgoing messages
        // never enter it, and a message leaves it when it is taken.
        conn.execute_batch(
            "BEGIN;
             DROP INDEX IF EXISTS messages_unread;
             CREATE INDEX IF NOT EXISTS messages_unread ON messages (identity, lane, turn, id)
                 WHERE direction = 'in' AND consumed_at IS NULL;
             PRAGMA user_version = 9;
             COMMIT;",
        )?;
    }
    debug_assert_eq!(
        conn.pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))?,
        SCHEMA_VERSION
    );
    Ok(())
}

/// Access to the store: inside a transaction ([`Store::write`]) or not
/// ([`Store::read`]).
pub struct Tx<'a> {
    conn: &'a Connection,
    contacts_version: &'a AtomicU64,
}

mod messages;
mod queries;
mod tasks;

pub use tasks::StoredTask;

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryState::*;
    use rusqlite::params;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        (dir, store)
    }

    /// Messages to different contacts get their ids in one order and may be
    /// queued in another; the outbox gives them in the order queued, and
    /// paging past a message never skips one queued after it with an
    /// earlier id (that skip sent it after later messages of its own
    /// session, which the recipient could not decrypt).
    #[test]
    fn the_outbox_pages_in_the_order_messages_were_queued() {
        let (_dir, store) = store();
        let tx = store.read();
        let me = Name::new("me").unwrap();
        let (x, y) = (
            PublicKey::from_bytes([1; 32]),
            PublicKey::from_bytes([2; 32]),
        );
        let early = MessageId::new_v7();
        let late = MessageId::new_v7();
        assert!(early.as_bytes() < late.as_bytes());
        // The message with the later id is queued first.
        tx.insert_message(
            &me,
            &StoredMessage::outgoing_control(late, y, Kind::Chat, 1),
            Some(b"y"),
        )
        .unwrap();
        let first = tx.outbox(&me, None, 10).unwrap();
        assert_eq!(first.iter().map(|o| o.id).collect::<Vec<_>>(), [late]);
        tx.insert_message(
            &me,
            &StoredMessage::outgoing_control(early, x, Kind::Chat, 1),
            Some(b"x"),
        )
        .unwrap();
        // Paging on from the first page still finds it.
        let next = tx.outbox(&me, Some(first[0].seq), 10).unwrap();
        assert_eq!(next.iter().map(|o| o.id).collect::<Vec<_>>(), [early]);
        let all = tx.outbox(&me, None, 10).unwrap();
        assert_eq!(all.iter().map(|o| o.id).collect::<Vec<_>>(), [late, early]);
    }

    /// The replaced tools' bug class "acting on someone else's task by its
    /// id": a status or cancel naming a task moves it only when it comes
    /// from the task's other side, in its role.
    #[test]
    fn a_third_contact_cannot_move_a_task_it_is_not_part_of() {
        use agentwire_api::{TaskRole, TaskState};
        let (_dir, store) = store();
        let tx = store.read();
        let me = Name::new("me").unwrap();
        let (worker, stranger) = (
            PublicKey::from_bytes([7; 32]),
            PublicKey::from_bytes([8; 32]),
        );
        let id = MessageId::new_v7();
        tx.insert_task(&me, &id, TaskRole::Asked, &worker, 1)
            .unwrap();
        let state = || tx.task(&me, &id).unwrap().unwrap().state;
        // Another contact reports on it, or cancels it: nothing moves.
        for next in [
            TaskState::Working,
            TaskState::Completed,
            TaskState::Canceled,
        ] {
            let moved = tx
                .move_task(
                    &me,
                    &id,
                    TaskRole::Asked,
                    &stranger,
                    next,
                    Some("forged"),
                    None,
                    2,
                )
                .unwrap();
            assert!(moved.is_none(), "{next:?} from a stranger moved the task");
            assert_eq!(state(), TaskState::Submitted);
        }
        // Nor does the worker acting as if it were the requester.
        let moved = tx
            .move_task(
                &me,
                &id,
                TaskRole::Given,
                &worker,
                TaskState::Canceled,
                None,
                None,
                2,
            )
            .unwrap();
        assert!(moved.is_none());
        // The worker, in its role, does.
        let moved = tx
            .move_task(
                &me,
                &id,
                TaskRole::Asked,
                &worker,
                TaskState::Working,
                None,
                None,
                3,
            )
            .unwrap();
        assert_eq!(moved.map(|t| t.state), Some(TaskState::Working));
    }

    #[test]
    fn outgoing_states_only_move_forward_and_a_receipt_beats_the_relays_expired() {
        let (_dir, store) = store();
        let tx = store.read();
        let me = Name::new("me").unwrap();
        let peer = PublicKey::from_bytes([7; 32]);
        let check = |id: &MessageId, expected: DeliveryState| {
            let state: String = tx
                .row(
                    "SELECT state FROM messages WHERE id = ?1",
                    params![id.as_bytes()],
                    |row| row.get(0),
                )
                .unwrap()
                .unwrap();
            assert_eq!(state, expected.name());
        };
        let message = |id| StoredMessage::outgoing_control(id, peer, Kind::Chat, 1);

        let a = MessageId::new_v7();
        tx.insert_message(&me, &message(a), Some(b"sealed"))
            .unwrap();
        tx.advance(&me, &a, Some(&peer), Read, 2).unwrap();
        // A late "relayed" or "delivered" does not move it back.
        tx.advance(&me, &a, None, Relayed, 3).unwrap();
        tx.advance(&me, &a, Some(&peer), Delivered, 4).unwrap();
        tx.advance(&me, &a, None, Expired, 5).unwrap();
        check(&a, Read);

        let b = MessageId::new_v7();
        tx.insert_message(&me, &message(b), Some(b"sealed"))
            .unwrap();
        tx.advance(&me, &b, None, Expired, 2).unwrap();
        check(&b, Expired);
        // The relay said expired; the recipient's receipt says otherwise.
        tx.advance(&me, &b, Some(&peer), Delivered, 3).unwrap();
        check(&b, Delivered);
        tx.advance(&me, &b, None, Failed, 4).unwrap();
        tx.advance(&me, &b, None, Expired, 5).unwrap();
        check(&b, Delivered);

        // A receipt from someone else changes nothing.
        let c = MessageId::new_v7();
        tx.insert_message(&me, &message(c), Some(b"sealed"))
            .unwrap();
        tx.advance(&me, &c, Some(&PublicKey::from_bytes([9; 32])), Read, 2)
            .unwrap();
        check(&c, Queued);
    }

    #[test]
    fn each_progress_state_keeps_the_time_it_was_reached() {
        let (_dir, store) = store();
        let tx = store.read();
        let me = Name::new("me").unwrap();
        let peer = PublicKey::from_bytes([7; 32]);
        let message = |id| StoredMessage::outgoing_control(id, peer, Kind::Chat, 1);
        let reached = |id: &MessageId| tx.sent_message(&me, id).unwrap().unwrap().reached_at_ms;

        let a = MessageId::new_v7();
        tx.insert_message(&me, &message(a), Some(b"sealed"))
            .unwrap();
        assert_eq!(reached(&a), Reached::default());
        tx.advance(&me, &a, None, Relayed, 10).unwrap();
        tx.advance(&me, &a, Some(&peer), Delivered, 20).unwrap();
        tx.advance(&me, &a, Some(&peer), Read, 30).unwrap();
        // Late and repeated news changes no time already kept.
        tx.advance(&me, &a, None, Relayed, 40).unwrap();
        let expected = Reached {
            relayed: Some(10),
            delivered: Some(20),
            read: Some(30),
        };
        assert_eq!(reached(&a), expected);

        // `read` learnt first: relayed and delivered by then too.
        let b = MessageId::new_v7();
        tx.insert_message(&me, &message(b), Some(b"sealed"))
            .unwrap();
        tx.advance(&me, &b, Some(&peer), Read, 50).unwrap();
        let all_at_50 = Reached {
            relayed: Some(50),
            delivered: Some(50),
            read: Some(50),
        };
        assert_eq!(reached(&b), all_at_50);

        // A message that expires keeps the progress it made, and the end is
        // its last change.
        let c = MessageId::new_v7();
        tx.insert_message(&me, &message(c), Some(b"sealed"))
            .unwrap();
        tx.advance(&me, &c, None, Relayed, 60).unwrap();
        tx.advance(&me, &c, None, Expired, 70).unwrap();
        let expired = tx.sent_message(&me, &c).unwrap().unwrap();
        assert_eq!(expired.reached_at_ms.relayed, Some(60));
        assert_eq!(expired.reached_at_ms.delivered, None);
        assert_eq!(expired.updated_at_ms, 70);
    }

    #[test]
    fn a_version_2_store_gains_the_progress_times_tasks_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(Store::open(&path).unwrap());
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "ALTER TABLE messages DROP COLUMN relayed_at;
             ALTER TABLE messages DROP COLUMN delivered_at;
             ALTER TABLE messages DROP COLUMN read_at;
             DROP TABLE tasks;
             ALTER TABLE contacts DROP COLUMN permissions;
             ALTER TABLE invites DROP COLUMN for_name;
             ALTER TABLE messages DROP COLUMN chain;
             ALTER TABLE messages DROP COLUMN hops;
             ALTER TABLE messages DROP COLUMN reason;
             DROP TABLE task_chunks;
             DROP TABLE own_cards;
             DROP TABLE file_parts;
             DROP TABLE outgoing_files;
             ALTER TABLE contacts DROP COLUMN card;
             DROP INDEX messages_waiting;
             DROP INDEX messages_unread;
             ALTER TABLE messages DROP COLUMN lane;
             ALTER TABLE messages DROP COLUMN turn;
             CREATE INDEX messages_unread ON messages (identity, direction, consumed_at, priority, id);
             INSERT INTO contacts (identity, address, curve25519, petname, via, state, created_at)
                 VALUES ('me', x'0707070707070707070707070707070707070707070707070707070707070707',
                         zeroblob(32), 'old', 'invited', 'active', 1);
             PRAGMA user_version = 2;",
        )
        .unwrap();
        drop(old);
        let store = Store::open(&path).unwrap();
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let tx = store.read();
        let me = Name::new("me").unwrap();
        let peer = PublicKey::from_bytes([7; 32]);
        let id = MessageId::new_v7();
        let message = StoredMessage::outgoing_control(id, peer, Kind::Chat, 1);
        tx.insert_message(&me, &message, Some(b"sealed")).unwrap();
        tx.advance(&me, &id, None, Delivered, 5).unwrap();
        let sent = tx.sent_message(&me, &id).unwrap().unwrap();
        assert_eq!(sent.reached_at_ms.delivered, Some(5));
        // A contact from before may send everything, as it could then.
        let old = tx.contact(&me, &peer).unwrap().unwrap();
        assert_eq!(old.permissions, Permissions::DEFAULT);
        assert!(tx.tasks(&me, 10).unwrap().is_empty());
    }

    /// The plan of `sql`, one line per step.
    fn plan(store: &Store, sql: &str) -> String {
        let mut statement = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let count = statement.parameter_count();
        let params: Vec<rusqlite::types::Value> = vec![rusqlite::types::Value::Null; count];
        statement
            .query_map(rusqlite::params_from_iter(params), |row| {
                row.get::<_, String>(3)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn hot_queries_use_their_indexes() {
        let (_dir, store) = store();
        let check = |sql: &str, index: &str| {
            let plan = plan(&store, sql);
            assert!(plan.contains(index), "{plan}\nfor {sql}");
            assert!(!plan.contains("SCAN messages"), "{plan}\nfor {sql}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}\nfor {sql}");
        };
        check(messages::OUTBOX, "messages_queued");
        check(messages::OUTBOX_COUNT, "messages_queued");
        check(messages::UNREAD, "messages_unread");
        check(messages::UNREAD_COUNT, "messages_waiting");
        check(messages::LAST_TURN, "messages_waiting");
        check(messages::WAITING_UP_TO, "messages_waiting");
    }

    #[test]
    fn cached_statements_are_not_prepared_again_when_their_values_change() {
        let (_dir, store) = store();
        let tx = store.read();
        let peer = PublicKey::from_bytes([7; 32]);
        for name in ["me", "you", "them"] {
            let me = Name::new(name).unwrap();
            tx.contacts(&me).unwrap();
            tx.outbox(&me, None, 10).unwrap();
            tx.outbox(&me, Some(3), 10).unwrap();
            tx.unread(&me, Some(&peer), 10).unwrap();
            tx.unread(&me, None, 10).unwrap();
            tx.outbox_count(&me).unwrap();
        }
        for sql in [
            messages::OUTBOX,
            messages::OUTBOX_COUNT,
            messages::UNREAD,
            queries::CONTACTS,
        ] {
            let statement = store.conn.prepare_cached(sql).unwrap();
            let again = statement.get_status(rusqlite::StatementStatus::RePrepare);
            assert_eq!(again, 0, "prepared again {again} times: {sql}");
        }
    }

    #[test]
    fn a_damaged_value_is_an_error_not_a_default() {
        let (_dir, store) = store();
        let tx = store.read();
        let me = Name::new("me").unwrap();
        let peer = PublicKey::from_bytes([7; 32]);
        let id = MessageId::new_v7();
        let mut message = StoredMessage::outgoing_control(id, peer, Kind::Chat, 1);
        message.body = b"hi".to_vec();
        tx.insert_message(&me, &message, Some(b"sealed")).unwrap();
        tx.exec("UPDATE messages SET kind = 'gossip'", []).unwrap();
        assert!(tx.sent_message(&me, &id).is_err());
        tx.exec("UPDATE messages SET kind = 'chat', state = 'lost'", [])
            .unwrap();
        assert!(tx.sent_message(&me, &id).is_err());
    }
}
