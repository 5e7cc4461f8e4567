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

use agentwire_api::{ContactState, DeliveryState, Via};
use agentwire_session::{Kind, MessageId, Name, Priority};
use agentwire_wire::PublicKey;
use rusqlite::{Connection, OptionalExtension, Params, params};

/// Statements kept prepared per connection.
const STATEMENT_CACHE: usize = 64;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[error("the local store failed: {0}")]
pub struct StoreError(#[from] rusqlite::Error);

impl StoreError {
    /// Whether a uniqueness rule refused the change (a name already taken).
    pub fn is_conflict(&self) -> bool {
        matches!(&self.0, rusqlite::Error::SqliteFailure(failure, _)
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
}

impl std::fmt::Debug for InviteRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteRecord")
            .field("secret", &"<redacted>")
            .field("expires_at_ms", &self.expires_at_ms)
            .field("spent_by", &self.spent_by)
            .finish()
    }
}

/// An outgoing message waiting for the relay to accept it.
#[derive(Clone, Debug)]
pub struct Outgoing {
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
}

/// The store.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating, 0600) and migrates the database.
    pub fn open(path: &Path) -> Result<Store> {
        if let Err(error) = crate::home::create_private_file(path) {
            return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(error)).into());
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&conn)?;
        Ok(Store { conn })
    }

    /// Runs `f` in one transaction; commits if it returns `Ok`.
    pub fn write<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let tx = self.conn.transaction().map_err(StoreError::from)?;
        let value = f(&Tx { conn: &tx })?;
        tx.commit().map_err(StoreError::from)?;
        Ok(value)
    }

    /// Reads (and single-statement writes) outside a transaction.
    pub fn read(&self) -> Tx<'_> {
        Tx { conn: &self.conn }
    }
}

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
    Ok(())
}

/// Access to the store: inside a transaction ([`Store::write`]) or not
/// ([`Store::read`]).
pub struct Tx<'a> {
    conn: &'a Connection,
}

const CONTACT_COLUMNS: &str = "address, curve25519, petname, via, created_at, state, invite_key";
const SENT_COLUMNS: &str = "id, peer, kind, state, sent_at, COALESCE(updated_at, stored_at)";
const MESSAGE_COLUMNS: &str =
    "id, direction, peer, kind, reply_to, thread, sent_at, stored_at, body, state, priority";
/// Messages a sender tracks: not receipts or pairing messages.
const TRACKED: &str = "direction = 'out' AND kind NOT IN ('receipt', 'redeem')";

impl Tx<'_> {
    fn exec(&self, sql: &str, params: impl Params) -> Result<usize> {
        Ok(self.conn.prepare_cached(sql)?.execute(params)?)
    }

    fn row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row(params, f)
            .optional()?)
    }

    fn rows<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut statement = self.conn.prepare_cached(sql)?;
        let rows = statement.query_map(params, f)?;
        Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
    }

    fn count(&self, sql: &str, params: impl Params) -> Result<u64> {
        let count: i64 = self.row(sql, params, |row| row.get(0))?.unwrap_or(0);
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Reads a setting.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.row(
            "SELECT value FROM settings WHERE key = ?1",
            params![key],
            |row| row.get(0),
        )
    }

    /// Writes a setting.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.exec(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// `(name, pickle)` of every identity, oldest first (the first is the
    /// default).
    pub fn identities(&self) -> Result<Vec<(String, String)>> {
        self.rows(
            "SELECT name, pickle FROM identities ORDER BY created_at, rowid",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
    }

    /// Stores or replaces an identity's pickle.
    pub fn save_identity(
        &self,
        name: &Name,
        address: &PublicKey,
        pickle: &str,
        now_ms: u64,
    ) -> Result<()> {
        self.exec(
            "INSERT INTO identities (name, address, pickle, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET pickle = excluded.pickle",
            params![name.as_str(), address.as_bytes(), pickle, ms(now_ms)],
        )?;
        Ok(())
    }

    /// Adds a contact; fails (a conflict) on a duplicate address or petname.
    pub fn add_contact(&self, identity: &Name, contact: &Contact) -> Result<()> {
        self.exec(
            "INSERT INTO contacts (identity, address, curve25519, petname, via, state, created_at, invite_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                identity.as_str(),
                contact.address.as_bytes(),
                contact.curve25519,
                contact.petname.as_str(),
                contact.via.name(),
                contact.state.name(),
                ms(contact.created_at_ms),
                contact.invite_key,
            ],
        )?;
        Ok(())
    }

    /// Every contact of an identity, by petname.
    pub fn contacts(&self, identity: &Name) -> Result<Vec<Contact>> {
        self.rows(
            &format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE identity = ?1 ORDER BY petname"),
            params![identity.as_str()],
            contact_row,
        )
    }

    /// The contact with this address.
    pub fn contact(&self, identity: &Name, address: &PublicKey) -> Result<Option<Contact>> {
        self.row(
            &format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE identity = ?1 AND address = ?2"),
            params![identity.as_str(), address.as_bytes()],
            contact_row,
        )
    }

    /// Sets a contact's state.
    pub fn set_contact_state(
        &self,
        identity: &Name,
        address: &PublicKey,
        state: ContactState,
    ) -> Result<()> {
        self.exec(
            "UPDATE contacts SET state = ?3 WHERE identity = ?1 AND address = ?2",
            params![identity.as_str(), address.as_bytes(), state.name()],
        )?;
        Ok(())
    }

    /// A petname not yet used by `identity`'s contacts: `wanted`, or
    /// `wanted-2`, …
    pub fn free_petname(&self, identity: &Name, wanted: &Name) -> Result<Name> {
        let taken = |candidate: &str| -> Result<bool> {
            Ok(self
                .row(
                    "SELECT 1 FROM contacts WHERE identity = ?1 AND petname = ?2",
                    params![identity.as_str(), candidate],
                    |_| Ok(()),
                )?
                .is_some())
        };
        if !taken(wanted.as_str())? {
            return Ok(wanted.clone());
        }
        let base: String = wanted
            .as_str()
            .chars()
            .take(agentwire_session::names::MAX_NAME_LEN - 6)
            .collect();
        for n in 2..100_000 {
            let candidate = format!("{base}-{n}");
            if !taken(&candidate)?
                && let Ok(name) = Name::new(&candidate)
            {
                return Ok(name);
            }
        }
        Err(StoreError(StoreError::corrupt("petnames", "all taken")))
    }

    /// Remembers an invite (for a day past its expiry, then forgets it).
    pub fn add_invite(
        &self,
        identity: &Name,
        one_time_key: &[u8; 32],
        secret: &[u8; 32],
        expires_at_ms: u64,
        permissions: u8,
        now_ms: u64,
    ) -> Result<()> {
        self.exec(
            "INSERT INTO invites (identity, one_time_key, secret, expires_at, permissions, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                identity.as_str(),
                one_time_key,
                secret,
                ms(expires_at_ms),
                permissions,
                ms(now_ms)
            ],
        )?;
        Ok(())
    }

    /// Forgets invites that expired more than a day ago.
    pub fn prune_invites(&self, now_ms: u64) -> Result<usize> {
        self.exec(
            "DELETE FROM invites WHERE expires_at < ?1",
            params![ms(now_ms.saturating_sub(24 * 3600 * 1000))],
        )
    }

    /// The invite whose one-time key is `one_time_key`.
    pub fn invite_by_key(
        &self,
        identity: &Name,
        one_time_key: &[u8; 32],
    ) -> Result<Option<InviteRecord>> {
        self.row(
            "SELECT secret, expires_at, spent_by FROM invites WHERE identity = ?1 AND one_time_key = ?2",
            params![identity.as_str(), one_time_key],
            |row| {
                Ok(InviteRecord {
                    secret: row.get(0)?,
                    expires_at_ms: get_ms(row, 1)?,
                    spent_by: row.get::<_, Option<[u8; 32]>>(2)?.map(PublicKey::from_bytes),
                })
            },
        )
    }

    /// Marks an invite redeemed.
    pub fn spend_invite(
        &self,
        identity: &Name,
        one_time_key: &[u8; 32],
        by: &PublicKey,
        now_ms: u64,
    ) -> Result<()> {
        self.exec(
            "UPDATE invites SET spent_at = ?3, spent_by = ?4 WHERE identity = ?1 AND one_time_key = ?2",
            params![identity.as_str(), one_time_key, ms(now_ms), by.as_bytes()],
        )?;
        Ok(())
    }

    /// Renames a contact; returns whether it existed.
    pub fn rename_contact(
        &self,
        identity: &Name,
        address: &PublicKey,
        petname: &Name,
    ) -> Result<bool> {
        Ok(self.exec(
            "UPDATE contacts SET petname = ?3 WHERE identity = ?1 AND address = ?2",
            params![identity.as_str(), address.as_bytes(), petname.as_str()],
        )? > 0)
    }

    /// Removes a contact and its session.
    pub fn remove_contact(&self, identity: &Name, address: &PublicKey) -> Result<bool> {
        self.exec(
            "DELETE FROM sessions WHERE identity = ?1 AND address = ?2",
            params![identity.as_str(), address.as_bytes()],
        )?;
        Ok(self.exec(
            "DELETE FROM contacts WHERE identity = ?1 AND address = ?2",
            params![identity.as_str(), address.as_bytes()],
        )? > 0)
    }

    /// The pickled session with a contact.
    pub fn session(&self, identity: &Name, address: &PublicKey) -> Result<Option<String>> {
        self.row(
            "SELECT pickle FROM sessions WHERE identity = ?1 AND address = ?2",
            params![identity.as_str(), address.as_bytes()],
            |row| row.get(0),
        )
    }

    /// Stores a session's pickle.
    pub fn save_session(&self, identity: &Name, address: &PublicKey, pickle: &str) -> Result<()> {
        self.exec(
            "INSERT INTO sessions (identity, address, pickle) VALUES (?1, ?2, ?3)
             ON CONFLICT (identity, address) DO UPDATE SET pickle = excluded.pickle",
            params![identity.as_str(), address.as_bytes(), pickle],
        )?;
        Ok(())
    }

    /// Stores a message unless one with its id exists; returns whether it was
    /// new.
    pub fn insert_message(
        &self,
        identity: &Name,
        message: &StoredMessage,
        payload: Option<&[u8]>,
    ) -> Result<bool> {
        Ok(self.exec(
            "INSERT OR IGNORE INTO messages
                 (identity, id, direction, peer, kind, reply_to, thread, sent_at, stored_at, body, payload, state, priority, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?9)",
            params![
                identity.as_str(),
                message.id.as_bytes(),
                message.direction.name(),
                message.peer.as_bytes(),
                message.kind.name(),
                message.reply_to.map(|id| *id.as_bytes()),
                message.thread.map(|id| *id.as_bytes()),
                ms(message.sent_at_ms),
                ms(message.stored_at_ms),
                message.body,
                payload,
                message.state.name(),
                message.priority.to_u8(),
            ],
        )? > 0)
    }

    /// Whether a message with this id is stored for `identity`.
    pub fn has_message(&self, identity: &Name, id: &[u8; 16]) -> Result<bool> {
        Ok(self
            .row(
                "SELECT 1 FROM messages WHERE identity = ?1 AND id = ?2",
                params![identity.as_str(), id],
                |_| Ok(()),
            )?
            .is_some())
    }

    /// `identity`'s outgoing messages not yet accepted by the relay, oldest
    /// first, after `after`.
    pub fn outbox(
        &self,
        identity: &Name,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<Outgoing>> {
        self.rows(
            "SELECT id, peer, payload FROM messages
             WHERE identity = ?1 AND state = 'queued' AND direction = 'out' AND (?2 IS NULL OR id > ?2)
             ORDER BY id LIMIT ?3",
            params![
                identity.as_str(),
                after.map(|id| *id.as_bytes()),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |row| {
                Ok(Outgoing {
                    id: MessageId::from_bytes(row.get(0)?),
                    peer: PublicKey::from_bytes(row.get(1)?),
                    payload: row.get(2)?,
                })
            },
        )
    }

    /// `identity`'s messages (not receipts or pairing messages) waiting for
    /// the relay.
    pub fn outbox_count(&self, identity: &Name) -> Result<u64> {
        self.count(
            &format!(
                "SELECT COUNT(*) FROM messages WHERE identity = ?1 AND state = 'queued' AND {TRACKED}"
            ),
            params![identity.as_str()],
        )
    }

    /// Records that an incoming control message (receipt, pairing) was
    /// handled, so that a redelivery of it is recognised; never shown.
    pub fn insert_seen(
        &self,
        identity: &Name,
        id: &MessageId,
        peer: &PublicKey,
        kind: Kind,
        now_ms: u64,
    ) -> Result<()> {
        self.exec(
            "INSERT OR IGNORE INTO messages
                 (identity, id, direction, peer, kind, sent_at, stored_at, body, state, consumed_at)
             VALUES (?1, ?2, 'in', ?3, ?4, ?5, ?5, x'', 'seen', ?5)",
            params![
                identity.as_str(),
                id.as_bytes(),
                peer.as_bytes(),
                kind.name(),
                ms(now_ms)
            ],
        )?;
        Ok(())
    }

    /// Forgets outgoing messages to `peer` that the relay has not accepted
    /// yet.
    pub fn drop_queued_to(&self, identity: &Name, peer: &PublicKey) -> Result<()> {
        self.exec(
            "DELETE FROM messages WHERE identity = ?1 AND peer = ?2 AND direction = 'out' AND state = 'queued'",
            params![identity.as_str(), peer.as_bytes()],
        )?;
        Ok(())
    }

    /// Moves an outgoing message to `state` if [`DeliveryState::may_become`]
    /// allows it (from `peer` only, when given: a receipt speaks only for
    /// messages sent to its sender), dropping its sealed payload. Returns
    /// whether it changed.
    pub fn advance(
        &self,
        identity: &Name,
        id: &MessageId,
        peer: Option<&PublicKey>,
        state: DeliveryState,
        now_ms: u64,
    ) -> Result<bool> {
        let sql = format!(
            "UPDATE messages SET state = ?3, payload = NULL, updated_at = ?5
             WHERE identity = ?1 AND id = ?2 AND direction = 'out' AND (?4 IS NULL OR peer = ?4)
               AND state IN ({})",
            replaceable_by(state)
        );
        Ok(self.exec(
            &sql,
            params![
                identity.as_str(),
                id.as_bytes(),
                state.name(),
                peer.map(|p| *p.as_bytes()),
                ms(now_ms)
            ],
        )? > 0)
    }

    /// One outgoing message (not receipts or pairing messages).
    pub fn sent_message(&self, identity: &Name, id: &MessageId) -> Result<Option<SentMessage>> {
        self.row(
            &format!(
                "SELECT {SENT_COLUMNS} FROM messages WHERE identity = ?1 AND id = ?2 AND {TRACKED}"
            ),
            params![identity.as_str(), id.as_bytes()],
            sent_row,
        )
    }

    /// The most recent outgoing messages, newest first.
    pub fn sent_messages(&self, identity: &Name, limit: usize) -> Result<Vec<SentMessage>> {
        self.rows(
            &format!(
                "SELECT {SENT_COLUMNS} FROM messages WHERE identity = ?1 AND {TRACKED}
                 ORDER BY id DESC LIMIT ?2"
            ),
            params![identity.as_str(), i64::try_from(limit).unwrap_or(i64::MAX)],
            sent_row,
        )
    }

    /// Unread incoming messages, urgent first, then oldest first (optionally
    /// from one peer).
    pub fn unread(
        &self,
        identity: &Name,
        from: Option<&PublicKey>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>> {
        self.rows(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages
                 WHERE identity = ?1 AND direction = 'in' AND consumed_at IS NULL
                   AND (?2 IS NULL OR peer = ?2)
                   AND peer IN (SELECT address FROM contacts WHERE identity = ?1)
                 ORDER BY priority, id LIMIT ?3"
            ),
            params![
                identity.as_str(),
                from.map(|k| *k.as_bytes()),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            message_row,
        )
    }

    /// One unread incoming message from a current contact.
    pub fn unread_message(&self, identity: &Name, id: &MessageId) -> Result<Option<StoredMessage>> {
        self.row(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages
                 WHERE identity = ?1 AND id = ?2 AND direction = 'in' AND consumed_at IS NULL
                   AND peer IN (SELECT address FROM contacts WHERE identity = ?1)"
            ),
            params![identity.as_str(), id.as_bytes()],
            message_row,
        )
    }

    /// Sent messages whose state changed at or after `since_ms`, oldest
    /// change first.
    pub fn sent_changed_since(&self, identity: &Name, since_ms: u64) -> Result<Vec<SentMessage>> {
        self.rows(
            &format!(
                "SELECT {SENT_COLUMNS} FROM messages
                 WHERE identity = ?1 AND {TRACKED} AND updated_at >= ?2
                 ORDER BY updated_at LIMIT 1000"
            ),
            params![identity.as_str(), ms(since_ms)],
            sent_row,
        )
    }

    /// Counts unread incoming messages.
    pub fn unread_count(&self, identity: &Name) -> Result<u64> {
        self.count(
            "SELECT COUNT(*) FROM messages WHERE identity = ?1 AND direction = 'in' AND consumed_at IS NULL
             AND peer IN (SELECT address FROM contacts WHERE identity = ?1)",
            params![identity.as_str()],
        )
    }

    /// Marks a message consumed; returns whether it was still unread (a
    /// message claimed by another reader in between is not returned twice).
    pub fn consume(&self, identity: &Name, id: &MessageId, now_ms: u64) -> Result<bool> {
        Ok(self.exec(
            "UPDATE messages SET consumed_at = ?3
             WHERE identity = ?1 AND id = ?2 AND consumed_at IS NULL",
            params![identity.as_str(), id.as_bytes(), ms(now_ms)],
        )? > 0)
    }
}

/// The states that `next` may replace, as an SQL list (from
/// [`DeliveryState::may_become`], the one definition of the order).
fn replaceable_by(next: DeliveryState) -> String {
    DeliveryState::ALL
        .iter()
        .filter(|state| state.may_become(next))
        .map(|state| format!("'{}'", state.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn contact_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Contact> {
    let petname: String = row.get(2)?;
    Ok(Contact {
        address: PublicKey::from_bytes(row.get(0)?),
        curve25519: row.get(1)?,
        petname: Name::new(&petname).map_err(|_| StoreError::corrupt("petname", &petname))?,
        via: parse(row, 3, "contact origin")?,
        created_at_ms: get_ms(row, 4)?,
        state: parse(row, 5, "contact state")?,
        invite_key: row.get(6)?,
    })
}

fn sent_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SentMessage> {
    Ok(SentMessage {
        id: MessageId::from_bytes(row.get(0)?),
        peer: PublicKey::from_bytes(row.get(1)?),
        kind: kind(row, 2)?,
        state: parse(row, 3, "delivery state")?,
        sent_at_ms: get_ms(row, 4)?,
        updated_at_ms: get_ms(row, 5)?,
    })
}

fn message_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let optional_id = |value: Option<[u8; 16]>| value.map(MessageId::from_bytes);
    let direction: String = row.get(1)?;
    let priority: u8 = row.get(10)?;
    Ok(StoredMessage {
        id: MessageId::from_bytes(row.get(0)?),
        direction: match direction.as_str() {
            "in" => Direction::In,
            "out" => Direction::Out,
            other => return Err(StoreError::corrupt("direction", other)),
        },
        peer: PublicKey::from_bytes(row.get(2)?),
        kind: kind(row, 3)?,
        reply_to: optional_id(row.get(4)?),
        thread: optional_id(row.get(5)?),
        sent_at_ms: get_ms(row, 6)?,
        stored_at_ms: get_ms(row, 7)?,
        body: row.get(8)?,
        state: parse(row, 9, "delivery state")?,
        priority: Priority::from_u8(priority)
            .ok_or_else(|| StoreError::corrupt("priority", priority))?,
    })
}

fn kind(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Kind> {
    let name: String = row.get(column)?;
    Kind::from_name(&name).ok_or_else(|| StoreError::corrupt("kind", &name))
}

fn parse<T: std::str::FromStr>(
    row: &rusqlite::Row<'_>,
    column: usize,
    what: &str,
) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    text.parse().map_err(|_| StoreError::corrupt(what, &text))
}

fn get_ms(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|_| StoreError::corrupt("time", value))
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryState::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn outgoing_states_only_move_forward_and_expired_is_final() {
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
        tx.advance(&me, &b, Some(&peer), Delivered, 3).unwrap();
        tx.advance(&me, &b, None, Failed, 4).unwrap();
        check(&b, Expired);

        // A receipt from someone else changes nothing.
        let c = MessageId::new_v7();
        tx.insert_message(&me, &message(c), Some(b"sealed"))
            .unwrap();
        tx.advance(&me, &c, Some(&PublicKey::from_bytes([9; 32])), Read, 2)
            .unwrap();
        check(&c, Queued);
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
