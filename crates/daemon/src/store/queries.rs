//! The queries: one method of [`Tx`] per thing the daemon reads or writes,
//! and the conversions of rows to typed values (a stored value that does not
//! read back as its type is an error, never a default).

use agentwire_api::{ContactState, DeliveryState};
use agentwire_session::{Kind, MessageId, Name, Priority};
use agentwire_wire::PublicKey;
use rusqlite::{OptionalExtension, Params, params};

use super::{
    Contact, Direction, InviteRecord, Outgoing, Result, SentMessage, StoreError, StoredMessage, Tx,
};

// The SQL is made at compile time: no statement text is built per call on
// the hot paths (the statement cache looks statements up by their text).
macro_rules! contact_columns {
    () => {
        "address, curve25519, petname, via, created_at, state, invite_key"
    };
}
macro_rules! sent_columns {
    () => {
        "id, peer, kind, state, sent_at, COALESCE(updated_at, stored_at)"
    };
}
/// Messages a sender tracks: not receipts or pairing messages.
macro_rules! tracked {
    () => {
        "direction = 'out' AND kind NOT IN ('receipt', 'redeem')"
    };
}

// The hot queries, as constants so that a test can check their plans.
/// An identity's queued outgoing messages, oldest first (the partial index
/// `messages_queued` holds exactly these).
pub(super) const OUTBOX: &str = "SELECT id, peer, payload FROM messages INDEXED BY messages_queued
     WHERE identity = ?1 AND state = 'queued' AND direction = 'out' AND (?2 IS NULL OR id > ?2)
     ORDER BY id LIMIT ?3";
/// Every contact of an identity, by petname.
pub(super) const CONTACTS: &str = concat!(
    "SELECT ",
    contact_columns!(),
    " FROM contacts WHERE identity = ?1 ORDER BY petname"
);
/// How many of them are messages the sender tracks.
pub(super) const OUTBOX_COUNT: &str = "SELECT COUNT(*) FROM messages INDEXED BY messages_queued
     WHERE identity = ?1 AND state = 'queued' AND direction = 'out'
       AND kind NOT IN ('receipt', 'redeem')";
/// Unread messages from current contacts, urgent first, then oldest first.
pub(super) const UNREAD: &str =
    "SELECT id, direction, peer, kind, reply_to, thread, sent_at, stored_at, body, state, priority
     FROM messages
     WHERE identity = ?1 AND direction = 'in' AND consumed_at IS NULL
       AND (?2 IS NULL OR peer = ?2)
       AND peer IN (SELECT address FROM contacts WHERE identity = ?1)
     ORDER BY priority, id LIMIT ?3";
/// How many unread messages from current contacts.
pub(super) const UNREAD_COUNT: &str = "SELECT COUNT(*) FROM messages
     WHERE identity = ?1 AND direction = 'in' AND consumed_at IS NULL
       AND peer IN (SELECT address FROM contacts WHERE identity = ?1)";

impl Tx<'_> {
    /// The contacts' version as this job sees it (see
    /// [`super::Store::contacts_version`]).
    pub fn contacts_version(&self) -> u64 {
        self.contacts_version
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn contacts_changed(&self) {
        self.contacts_version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Opens the savepoint of one store job (a transaction inside the
    /// batch's transaction).
    pub(crate) fn begin_job(&self) -> Result<()> {
        self.exec("SAVEPOINT job", [])?;
        Ok(())
    }

    /// Keeps the job's changes.
    pub(crate) fn keep_job(&self) -> Result<()> {
        self.exec("RELEASE job", [])?;
        Ok(())
    }

    /// Undoes the job's changes.
    pub(crate) fn undo_job(&self) -> Result<()> {
        self.exec("ROLLBACK TO job", [])?;
        self.exec("RELEASE job", [])?;
        Ok(())
    }

    pub(super) fn exec(&self, sql: &str, params: impl Params) -> Result<usize> {
        Ok(self.conn.prepare_cached(sql)?.execute(params)?)
    }

    pub(super) fn row<T>(
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
        self.contacts_changed();
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
        self.rows(CONTACTS, params![identity.as_str()], contact_row)
    }

    /// The contact with this address.
    pub fn contact(&self, identity: &Name, address: &PublicKey) -> Result<Option<Contact>> {
        self.row(
            concat!(
                "SELECT ",
                contact_columns!(),
                " FROM contacts WHERE identity = ?1 AND address = ?2"
            ),
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
        self.contacts_changed();
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
        Err(StoreError::Sqlite(StoreError::corrupt(
            "petnames",
            "all taken",
        )))
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
        self.contacts_changed();
        Ok(self.exec(
            "UPDATE contacts SET petname = ?3 WHERE identity = ?1 AND address = ?2",
            params![identity.as_str(), address.as_bytes(), petname.as_str()],
        )? > 0)
    }

    /// Removes a contact and its session.
    pub fn remove_contact(&self, identity: &Name, address: &PublicKey) -> Result<bool> {
        self.contacts_changed();
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
            OUTBOX,
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
        self.count(OUTBOX_COUNT, params![identity.as_str()])
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
        // The states `state` may replace, from [`DeliveryState::may_become`]
        // (the one definition of the order), bound as parameters; the others
        // are NULL, which matches nothing.
        let replaceable: [Option<&str>; 6] = std::array::from_fn(|i| {
            DeliveryState::ALL
                .get(i)
                .filter(|old| old.may_become(state))
                .map(|old| old.name())
        });
        const _: () = assert!(DeliveryState::ALL.len() == 6, "bind every state");
        let [a, b, c, d, e, f] = replaceable;
        Ok(self.exec(
            "UPDATE messages SET state = ?3, payload = NULL, updated_at = ?5
             WHERE identity = ?1 AND id = ?2 AND direction = 'out' AND (?4 IS NULL OR peer = ?4)
               AND state IN (?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                identity.as_str(),
                id.as_bytes(),
                state.name(),
                peer.map(|p| *p.as_bytes()),
                ms(now_ms),
                a,
                b,
                c,
                d,
                e,
                f
            ],
        )? > 0)
    }

    /// One outgoing message (not receipts or pairing messages).
    pub fn sent_message(&self, identity: &Name, id: &MessageId) -> Result<Option<SentMessage>> {
        self.row(
            concat!(
                "SELECT ",
                sent_columns!(),
                " FROM messages WHERE identity = ?1 AND id = ?2 AND ",
                tracked!()
            ),
            params![identity.as_str(), id.as_bytes()],
            sent_row,
        )
    }

    /// The outgoing messages with these ids (those that exist).
    pub fn sent_messages_by_id(
        &self,
        identity: &Name,
        ids: &[MessageId],
    ) -> Result<Vec<SentMessage>> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.extend(self.sent_message(identity, id)?);
        }
        Ok(found)
    }

    /// The most recent outgoing messages, newest first.
    pub fn sent_messages(&self, identity: &Name, limit: usize) -> Result<Vec<SentMessage>> {
        self.rows(
            concat!(
                "SELECT ",
                sent_columns!(),
                " FROM messages WHERE identity = ?1 AND ",
                tracked!(),
                " ORDER BY id DESC LIMIT ?2"
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
            UNREAD,
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
            "SELECT id, direction, peer, kind, reply_to, thread, sent_at, stored_at, body, state, priority
             FROM messages
             WHERE identity = ?1 AND id = ?2 AND direction = 'in' AND consumed_at IS NULL
               AND peer IN (SELECT address FROM contacts WHERE identity = ?1)",
            params![identity.as_str(), id.as_bytes()],
            message_row,
        )
    }

    /// Counts unread incoming messages.
    pub fn unread_count(&self, identity: &Name) -> Result<u64> {
        self.count(UNREAD_COUNT, params![identity.as_str()])
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
