//! The daemon's local store (SQLite, WAL, `synchronous=FULL`): identities
//! (as encrypted pickles), contacts, session state (encrypted pickles),
//! invites, and messages in both directions. The only module that knows SQL.
//!
//! Changes that must stand or fall together — a decrypted message and the
//! session state that decrypted it; a new contact and the spent invite — are
//! written in one transaction by the caller through [`Store::transaction`].

use std::path::Path;

use agentwire_session::{Kind, MessageId, Name, Priority};
use agentwire_wire::PublicKey;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

/// A stored contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// The contact's address.
    pub address: PublicKey,
    /// Its Curve25519 identity key.
    pub curve25519: [u8; 32],
    /// The local name for it.
    pub petname: Name,
    /// How it became a contact: `sibling`, `invited` (redeemed our invite) or
    /// `accepted` (we accepted its invite).
    pub via: String,
    /// `active`, or `pending` until the inviter confirms our redemption.
    pub state: String,
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
    /// `in` or `out`.
    pub direction: String,
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
    /// For outgoing messages: `queued`, `relayed`, `delivered`, `read`,
    /// `expired` or `failed`; incoming ones are `delivered`.
    pub state: String,
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
            direction: "out".into(),
            peer,
            kind,
            priority: Priority::Normal,
            reply_to: None,
            thread: None,
            sent_at_ms: now_ms,
            stored_at_ms: now_ms,
            body: Vec::new(),
            state: "queued".into(),
        }
    }
}

/// The store.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating, 0600) and migrates the database.
    pub fn open(path: &Path) -> rusqlite::Result<Store> {
        if let Err(error) = crate::home::create_private_file(path) {
            return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(error)));
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        Ok(Store { conn })
    }

    /// Runs `f` in one transaction; commits if it returns `Ok`.
    pub fn transaction<T, E: From<rusqlite::Error>>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self.conn.transaction()?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// The connection, for reads.
    pub fn conn(&self) -> &Connection {
        &self.conn
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

/// Reads a setting.
pub fn setting(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT value FROM settings WHERE key = ?1",
        params![key],
        |row| row.get(0),
    )
    .optional()
}

/// Writes a setting.
pub fn set_setting(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// `(name, pickle)` of every identity, oldest first (the first is the default).
pub fn identities(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    conn.prepare("SELECT name, pickle FROM identities ORDER BY created_at, rowid")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect()
}

/// Stores or replaces an identity's pickle.
pub fn save_identity(
    conn: &Connection,
    name: &Name,
    address: &PublicKey,
    pickle: &str,
    now_ms: u64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO identities (name, address, pickle, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET pickle = excluded.pickle",
        params![name.as_str(), address.as_bytes(), pickle, ms(now_ms)],
    )?;
    Ok(())
}

/// Adds a contact; fails on a duplicate address or petname.
pub fn add_contact(conn: &Connection, identity: &Name, contact: &Contact) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO contacts (identity, address, curve25519, petname, via, state, created_at, invite_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            identity.as_str(),
            contact.address.as_bytes(),
            contact.curve25519,
            contact.petname.as_str(),
            contact.via,
            contact.state,
            ms(contact.created_at_ms),
            contact.invite_key,
        ],
    )?;
    Ok(())
}

/// Every contact of an identity, by petname.
pub fn contacts(conn: &Connection, identity: &Name) -> rusqlite::Result<Vec<Contact>> {
    conn.prepare(
        "SELECT address, curve25519, petname, via, created_at, state, invite_key FROM contacts
         WHERE identity = ?1 ORDER BY petname",
    )?
    .query_map(params![identity.as_str()], contact_row)?
    .collect()
}

/// The contact with this address.
pub fn contact(
    conn: &Connection,
    identity: &Name,
    address: &PublicKey,
) -> rusqlite::Result<Option<Contact>> {
    conn.query_row(
        "SELECT address, curve25519, petname, via, created_at, state, invite_key FROM contacts
         WHERE identity = ?1 AND address = ?2",
        params![identity.as_str(), address.as_bytes()],
        contact_row,
    )
    .optional()
}

fn contact_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Contact> {
    let petname: String = row.get(2)?;
    Ok(Contact {
        address: PublicKey::from_bytes(row.get(0)?),
        curve25519: row.get(1)?,
        petname: Name::new(&petname)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
        via: row.get(3)?,
        created_at_ms: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
        state: row.get(5)?,
        invite_key: row.get(6)?,
    })
}

/// Sets a contact's state.
pub fn set_contact_state(
    conn: &Connection,
    identity: &Name,
    address: &PublicKey,
    state: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE contacts SET state = ?3 WHERE identity = ?1 AND address = ?2",
        params![identity.as_str(), address.as_bytes(), state],
    )?;
    Ok(())
}

/// A petname not yet used by `identity`'s contacts: `wanted`, or `wanted-2`, …
pub fn free_petname(conn: &Connection, identity: &Name, wanted: &Name) -> rusqlite::Result<Name> {
    let taken = |candidate: &str| -> rusqlite::Result<bool> {
        Ok(conn
            .query_row(
                "SELECT 1 FROM contacts WHERE identity = ?1 AND petname = ?2",
                params![identity.as_str(), candidate],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    };
    if !taken(wanted.as_str())? {
        return Ok(wanted.clone());
    }
    for n in 2.. {
        let base: String = wanted
            .as_str()
            .chars()
            .take(agentwire_session::names::MAX_NAME_LEN - 6)
            .collect();
        let candidate = format!("{base}-{n}");
        if !taken(&candidate)?
            && let Ok(name) = Name::new(&candidate)
        {
            return Ok(name);
        }
    }
    Ok(wanted.clone())
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

/// Remembers an invite (for a day past its expiry, then forgets it).
pub fn add_invite(
    conn: &Connection,
    identity: &Name,
    one_time_key: &[u8; 32],
    secret: &[u8; 32],
    expires_at_ms: u64,
    permissions: u8,
    now_ms: u64,
) -> rusqlite::Result<()> {
    conn.execute(
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
pub fn prune_invites(conn: &Connection, now_ms: u64) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM invites WHERE expires_at < ?1",
        params![ms(now_ms.saturating_sub(24 * 3600 * 1000))],
    )
}

/// The invite whose one-time key is `one_time_key`.
pub fn invite_by_key(
    conn: &Connection,
    identity: &Name,
    one_time_key: &[u8; 32],
) -> rusqlite::Result<Option<InviteRecord>> {
    conn.query_row(
        "SELECT secret, expires_at, spent_by FROM invites WHERE identity = ?1 AND one_time_key = ?2",
        params![identity.as_str(), one_time_key],
        |row| {
            Ok(InviteRecord {
                secret: row.get(0)?,
                expires_at_ms: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                spent_by: row.get::<_, Option<[u8; 32]>>(2)?.map(PublicKey::from_bytes),
            })
        },
    )
    .optional()
}

/// Marks an invite redeemed.
pub fn spend_invite(
    conn: &Connection,
    identity: &Name,
    one_time_key: &[u8; 32],
    by: &PublicKey,
    now_ms: u64,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE invites SET spent_at = ?3, spent_by = ?4 WHERE identity = ?1 AND one_time_key = ?2",
        params![identity.as_str(), one_time_key, ms(now_ms), by.as_bytes()],
    )?;
    Ok(())
}

/// Renames a contact; returns whether it existed.
pub fn rename_contact(
    conn: &Connection,
    identity: &Name,
    address: &PublicKey,
    petname: &Name,
) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "UPDATE contacts SET petname = ?3 WHERE identity = ?1 AND address = ?2",
        params![identity.as_str(), address.as_bytes(), petname.as_str()],
    )? > 0)
}

/// Removes a contact and its session.
pub fn remove_contact(
    conn: &Connection,
    identity: &Name,
    address: &PublicKey,
) -> rusqlite::Result<bool> {
    conn.execute(
        "DELETE FROM sessions WHERE identity = ?1 AND address = ?2",
        params![identity.as_str(), address.as_bytes()],
    )?;
    Ok(conn.execute(
        "DELETE FROM contacts WHERE identity = ?1 AND address = ?2",
        params![identity.as_str(), address.as_bytes()],
    )? > 0)
}

/// The pickled session with a contact.
pub fn session(
    conn: &Connection,
    identity: &Name,
    address: &PublicKey,
) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT pickle FROM sessions WHERE identity = ?1 AND address = ?2",
        params![identity.as_str(), address.as_bytes()],
        |row| row.get(0),
    )
    .optional()
}

/// Stores a session's pickle.
pub fn save_session(
    conn: &Connection,
    identity: &Name,
    address: &PublicKey,
    pickle: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO sessions (identity, address, pickle) VALUES (?1, ?2, ?3)
         ON CONFLICT (identity, address) DO UPDATE SET pickle = excluded.pickle",
        params![identity.as_str(), address.as_bytes(), pickle],
    )?;
    Ok(())
}

/// Stores a message unless one with its id exists; returns whether it was new.
pub fn insert_message(
    conn: &Connection,
    identity: &Name,
    message: &StoredMessage,
    payload: Option<&[u8]>,
) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "INSERT OR IGNORE INTO messages
             (identity, id, direction, peer, kind, reply_to, thread, sent_at, stored_at, body, payload, state, priority, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?9)",
        params![
            identity.as_str(),
            message.id.as_bytes(),
            message.direction,
            message.peer.as_bytes(),
            message.kind.name(),
            message.reply_to.map(|id| *id.as_bytes()),
            message.thread.map(|id| *id.as_bytes()),
            ms(message.sent_at_ms),
            ms(message.stored_at_ms),
            message.body,
            payload,
            message.state,
            message.priority.to_u8(),
        ],
    )? > 0)
}

/// Whether a message with this id is stored for `identity`.
pub fn has_message(conn: &Connection, identity: &Name, id: &[u8; 16]) -> rusqlite::Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM messages WHERE identity = ?1 AND id = ?2",
            params![identity.as_str(), id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
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

/// `identity`'s outgoing messages not yet accepted by the relay, oldest first.
pub fn outbox(
    conn: &Connection,
    identity: &Name,
    after: Option<&MessageId>,
    limit: usize,
) -> rusqlite::Result<Vec<Outgoing>> {
    conn.prepare(
        "SELECT id, peer, payload FROM messages
         WHERE identity = ?1 AND state = 'queued' AND direction = 'out' AND (?2 IS NULL OR id > ?2)
         ORDER BY id LIMIT ?3",
    )?
    .query_map(
        params![
            identity.as_str(),
            after.map(|id| *id.as_bytes()),
            limit as i64
        ],
        |row| {
            Ok(Outgoing {
                id: MessageId::from_bytes(row.get(0)?),
                peer: PublicKey::from_bytes(row.get(1)?),
                payload: row.get(2)?,
            })
        },
    )?
    .collect()
}

/// `identity`'s messages (not receipts or pairing messages) waiting for the
/// relay.
pub fn outbox_count(conn: &Connection, identity: &Name) -> rusqlite::Result<u64> {
    let count: i64 = conn.query_row(
        "SELECT COUNT(*) FROM messages WHERE identity = ?1 AND state = 'queued' AND direction = 'out'
         AND kind NOT IN ('receipt', 'redeem')",
        params![identity.as_str()],
        |row| row.get(0),
    )?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Records that an incoming control message (receipt, pairing) was handled,
/// so that a redelivery of it is recognised; never shown.
pub fn insert_seen(
    conn: &Connection,
    identity: &Name,
    id: &MessageId,
    peer: &PublicKey,
    kind: Kind,
    now_ms: u64,
) -> rusqlite::Result<()> {
    conn.execute(
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

/// Forgets outgoing messages to `peer` that the relay has not accepted yet.
pub fn drop_queued_to(
    conn: &Connection,
    identity: &Name,
    peer: &PublicKey,
) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM messages WHERE identity = ?1 AND peer = ?2 AND direction = 'out' AND state = 'queued'",
        params![identity.as_str(), peer.as_bytes()],
    )?;
    Ok(())
}

/// Rank of an outgoing state: a message only moves forward
/// (`queued` → `relayed` → `delivered` → `read`); `expired` and `failed`
/// only replace states before delivery, and are final (`STATE_RANK` ranks a
/// current `expired`/`failed` above everything).
const STATE_RANK: &str = "CASE state WHEN 'queued' THEN 0 WHEN 'relayed' THEN 1
     WHEN 'delivered' THEN 2 WHEN 'read' THEN 3 ELSE 4 END";

fn rank(state: &str) -> i64 {
    match state {
        "queued" => 0,
        "relayed" => 1,
        "expired" | "failed" => 2,
        "delivered" => 2,
        "read" => 3,
        _ => 4,
    }
}

/// Moves an outgoing message forward to `state`, dropping its sealed
/// payload once the relay has it. Returns whether it changed.
pub fn set_outgoing_state(
    conn: &Connection,
    identity: &Name,
    id: &MessageId,
    state: &str,
    now_ms: u64,
) -> rusqlite::Result<bool> {
    let sql = format!(
        "UPDATE messages SET state = ?3, payload = NULL, updated_at = ?5
         WHERE identity = ?1 AND id = ?2 AND direction = 'out' AND ({STATE_RANK}) < ?4"
    );
    Ok(conn.execute(
        &sql,
        params![
            identity.as_str(),
            id.as_bytes(),
            state,
            rank(state),
            ms(now_ms)
        ],
    )? > 0)
}

/// Applies a receipt from `peer`: its messages move forward to `state`.
/// Only messages sent to that peer are touched.
pub fn apply_receipt(
    conn: &Connection,
    identity: &Name,
    peer: &PublicKey,
    ids: &[MessageId],
    state: &str,
    now_ms: u64,
) -> rusqlite::Result<usize> {
    let sql = format!(
        "UPDATE messages SET state = ?4, payload = NULL, updated_at = ?6
         WHERE identity = ?1 AND id = ?2 AND peer = ?3 AND direction = 'out' AND ({STATE_RANK}) < ?5"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let mut changed = 0;
    for id in ids {
        changed += statement.execute(params![
            identity.as_str(),
            id.as_bytes(),
            peer.as_bytes(),
            state,
            rank(state),
            ms(now_ms)
        ])?;
    }
    Ok(changed)
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
    pub state: String,
    /// When it was sent, Unix ms.
    pub sent_at_ms: u64,
    /// When its state last changed, Unix ms.
    pub updated_at_ms: u64,
}

const SENT_COLUMNS: &str = "id, peer, kind, state, sent_at, COALESCE(updated_at, stored_at)";

fn sent_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SentMessage> {
    let kind: String = row.get(2)?;
    Ok(SentMessage {
        id: MessageId::from_bytes(row.get(0)?),
        peer: PublicKey::from_bytes(row.get(1)?),
        kind: Kind::from_name(&kind).unwrap_or(Kind::Chat),
        state: row.get(3)?,
        sent_at_ms: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
        updated_at_ms: u64::try_from(row.get::<_, i64>(5)?).unwrap_or(0),
    })
}

/// One outgoing message (not receipts or pairing messages).
pub fn sent_message(
    conn: &Connection,
    identity: &Name,
    id: &MessageId,
) -> rusqlite::Result<Option<SentMessage>> {
    conn.query_row(
        &format!(
            "SELECT {SENT_COLUMNS} FROM messages
             WHERE identity = ?1 AND id = ?2 AND direction = 'out' AND kind NOT IN ('receipt', 'redeem')"
        ),
        params![identity.as_str(), id.as_bytes()],
        sent_row,
    )
    .optional()
}

/// The most recent outgoing messages, newest first.
pub fn sent_messages(
    conn: &Connection,
    identity: &Name,
    limit: usize,
) -> rusqlite::Result<Vec<SentMessage>> {
    conn.prepare(&format!(
        "SELECT {SENT_COLUMNS} FROM messages
         WHERE identity = ?1 AND direction = 'out' AND kind NOT IN ('receipt', 'redeem')
         ORDER BY id DESC LIMIT ?2"
    ))?
    .query_map(params![identity.as_str(), limit as i64], sent_row)?
    .collect()
}

/// Unread incoming messages, oldest first (optionally from one peer).
pub fn unread(
    conn: &Connection,
    identity: &Name,
    from: Option<&PublicKey>,
    limit: usize,
) -> rusqlite::Result<Vec<StoredMessage>> {
    conn.prepare(
        "SELECT id, direction, peer, kind, reply_to, thread, sent_at, stored_at, body, state, priority
         FROM messages
         WHERE identity = ?1 AND direction = 'in' AND consumed_at IS NULL
           AND (?2 IS NULL OR peer = ?2)
           AND peer IN (SELECT address FROM contacts WHERE identity = ?1)
         ORDER BY priority, id LIMIT ?3",
    )?
    .query_map(
        params![identity.as_str(), from.map(|k| *k.as_bytes()), limit as i64],
        message_row,
    )?
    .collect()
}

/// One unread incoming message from a current contact.
pub fn unread_message(
    conn: &Connection,
    identity: &Name,
    id: &MessageId,
) -> rusqlite::Result<Option<StoredMessage>> {
    conn.query_row(
        "SELECT id, direction, peer, kind, reply_to, thread, sent_at, stored_at, body, state, priority
         FROM messages
         WHERE identity = ?1 AND id = ?2 AND direction = 'in' AND consumed_at IS NULL
           AND peer IN (SELECT address FROM contacts WHERE identity = ?1)",
        params![identity.as_str(), id.as_bytes()],
        message_row,
    )
    .optional()
}

/// Sent messages whose state changed at or after `since_ms`, oldest change
/// first.
pub fn sent_changed_since(
    conn: &Connection,
    identity: &Name,
    since_ms: u64,
) -> rusqlite::Result<Vec<SentMessage>> {
    conn.prepare(&format!(
        "SELECT {SENT_COLUMNS} FROM messages
         WHERE identity = ?1 AND direction = 'out' AND kind NOT IN ('receipt', 'redeem')
           AND updated_at >= ?2
         ORDER BY updated_at LIMIT 1000"
    ))?
    .query_map(params![identity.as_str(), ms(since_ms)], sent_row)?
    .collect()
}

/// Counts unread incoming messages.
pub fn unread_count(conn: &Connection, identity: &Name) -> rusqlite::Result<u64> {
    let count: i64 = conn.query_row(
        "SELECT COUNT(*) FROM messages WHERE identity = ?1 AND direction = 'in' AND consumed_at IS NULL
         AND peer IN (SELECT address FROM contacts WHERE identity = ?1)",
        params![identity.as_str()],
        |row| row.get(0),
    )?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Marks messages consumed; returns how many were still unread (a message
/// claimed by another reader in between is not returned twice).
pub fn consume(
    conn: &Connection,
    identity: &Name,
    id: &MessageId,
    now_ms: u64,
) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "UPDATE messages SET consumed_at = ?3
         WHERE identity = ?1 AND id = ?2 AND consumed_at IS NULL",
        params![identity.as_str(), id.as_bytes(), ms(now_ms)],
    )? > 0)
}

fn message_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let kind: String = row.get(3)?;
    let optional_id = |value: Option<[u8; 16]>| value.map(MessageId::from_bytes);
    Ok(StoredMessage {
        id: MessageId::from_bytes(row.get(0)?),
        direction: row.get(1)?,
        peer: PublicKey::from_bytes(row.get(2)?),
        kind: Kind::from_name(&kind).unwrap_or(Kind::Chat),
        reply_to: optional_id(row.get(4)?),
        thread: optional_id(row.get(5)?),
        sent_at_ms: u64::try_from(row.get::<_, i64>(6)?).unwrap_or(0),
        stored_at_ms: u64::try_from(row.get::<_, i64>(7)?).unwrap_or(0),
        body: row.get(8)?,
        state: row.get(9)?,
        priority: Priority::from_u8(row.get(10)?).unwrap_or_default(),
    })
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn outgoing_states_only_move_forward_and_expired_is_final() {
        let (_dir, store) = store();
        let conn = store.conn();
        let me = Name::new("me").unwrap();
        let peer = PublicKey::from_bytes([7; 32]);
        let check = |id: &MessageId, expected: &str| {
            let state: String = conn
                .query_row(
                    "SELECT state FROM messages WHERE id = ?1",
                    params![id.as_bytes()],
                    |row| row.get(0),
                )
                .unwrap();
            assert_eq!(state, expected);
        };
        let message = |id| StoredMessage::outgoing_control(id, peer, Kind::Chat, 1);

        let a = MessageId::new_v7();
        insert_message(conn, &me, &message(a), Some(b"sealed")).unwrap();
        apply_receipt(conn, &me, &peer, &[a], "read", 2).unwrap();
        // A late "relayed" or "delivered" does not move it back.
        set_outgoing_state(conn, &me, &a, "relayed", 3).unwrap();
        apply_receipt(conn, &me, &peer, &[a], "delivered", 4).unwrap();
        set_outgoing_state(conn, &me, &a, "expired", 5).unwrap();
        check(&a, "read");

        let b = MessageId::new_v7();
        insert_message(conn, &me, &message(b), Some(b"sealed")).unwrap();
        set_outgoing_state(conn, &me, &b, "expired", 2).unwrap();
        apply_receipt(conn, &me, &peer, &[b], "delivered", 3).unwrap();
        set_outgoing_state(conn, &me, &b, "failed", 4).unwrap();
        check(&b, "expired");

        // A receipt from someone else changes nothing.
        let c = MessageId::new_v7();
        insert_message(conn, &me, &message(c), Some(b"sealed")).unwrap();
        apply_receipt(conn, &me, &PublicKey::from_bytes([9; 32]), &[c], "read", 2).unwrap();
        check(&c, "queued");
    }
}
