//! The queries: one method of [`Tx`] per thing the daemon reads or writes
//! (those about messages are in `messages.rs`),
//! and the conversions of rows to typed values (a stored value that does not
//! read back as its type is an error, never a default).

use agentwire_api::ContactState;
use agentwire_session::{Card, Name, Permissions};
use agentwire_wire::PublicKey;
use rusqlite::{OptionalExtension, Params, params};

use super::{Contact, InviteRecord, Result, StoreError, Tx};

// The SQL is made at compile time: no statement text is built per call on
// the hot paths (the statement cache looks statements up by their text).
macro_rules! contact_columns {
    () => {
        "address, curve25519, petname, via, created_at, state, invite_key, permissions"
    };
}

/// Every contact of an identity, by petname.
pub(super) const CONTACTS: &str = concat!(
    "SELECT ",
    contact_columns!(),
    " FROM contacts WHERE identity = ?1 ORDER BY petname"
);
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

    pub(super) fn rows<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut statement = self.conn.prepare_cached(sql)?;
        let rows = statement.query_map(params, f)?;
        Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
    }

    pub(super) fn count(&self, sql: &str, params: impl Params) -> Result<u64> {
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

    /// Forgets a setting.
    pub fn remove_setting(&self, key: &str) -> Result<()> {
        self.exec("DELETE FROM settings WHERE key = ?1", params![key])?;
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
            "INSERT INTO contacts (identity, address, curve25519, petname, via, state, created_at, invite_key, permissions)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                identity.as_str(),
                contact.address.as_bytes(),
                contact.curve25519,
                contact.petname.as_str(),
                contact.via.name(),
                contact.state.name(),
                ms(contact.created_at_ms),
                contact.invite_key,
                contact.permissions.bits(),
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

    /// Sets what a contact may send us; returns whether it exists.
    pub fn set_permissions(
        &self,
        identity: &Name,
        address: &PublicKey,
        permissions: Permissions,
    ) -> Result<bool> {
        self.contacts_changed();
        Ok(self.exec(
            "UPDATE contacts SET permissions = ?3 WHERE identity = ?1 AND address = ?2",
            params![identity.as_str(), address.as_bytes(), permissions.bits()],
        )? > 0)
    }

    /// Keeps the card a contact sent (not part of [`Contact`]: cards are
    /// read by `discover`, not on the message paths).
    pub fn set_contact_card(
        &self,
        identity: &Name,
        address: &PublicKey,
        card: &Card,
    ) -> Result<()> {
        self.exec(
            "UPDATE contacts SET card = ?3 WHERE identity = ?1 AND address = ?2",
            params![identity.as_str(), address.as_bytes(), card.encode()],
        )?;
        Ok(())
    }

    /// The cards contacts sent, by address (those that sent one).
    pub fn contact_cards(&self, identity: &Name) -> Result<Vec<(PublicKey, Card)>> {
        let rows: Vec<([u8; 32], Vec<u8>)> = self.rows(
            "SELECT address, card FROM contacts WHERE identity = ?1 AND card IS NOT NULL",
            params![identity.as_str()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|(address, card)| {
                Card::decode(&card)
                    .ok()
                    .map(|card| (PublicKey::from_bytes(address), card))
            })
            .collect())
    }

    /// This identity's own card, if it has one.
    pub fn own_card(&self, identity: &Name) -> Result<Option<Card>> {
        let bytes: Option<Vec<u8>> = self.row(
            "SELECT card FROM own_cards WHERE identity = ?1",
            params![identity.as_str()],
            |row| row.get(0),
        )?;
        bytes
            .map(|b| {
                Card::decode(&b).map_err(|e| StoreError::Sqlite(StoreError::corrupt("card", e)))
            })
            .transpose()
    }

    /// Sets this identity's own card.
    pub fn set_own_card(&self, identity: &Name, card: &Card) -> Result<()> {
        self.exec(
            "INSERT INTO own_cards (identity, card) VALUES (?1, ?2)
             ON CONFLICT (identity) DO UPDATE SET card = excluded.card",
            params![identity.as_str(), card.encode()],
        )?;
        Ok(())
    }

    /// This identity's listing in its relay's directory: the one-time key
    /// of the invite it carries, and what that invite offers.
    pub fn listing(&self, identity: &Name) -> Result<Option<([u8; 32], Permissions)>> {
        self.row(
            "SELECT invite_key, permissions FROM listings WHERE identity = ?1",
            params![identity.as_str()],
            |row| Ok((row.get(0)?, Permissions::from_bits(row.get(1)?))),
        )
    }

    /// Records a new listing, ending the old one's invite (whoever saw it
    /// listed and redeems it now is told it expired); `None` only
    /// withdraws.
    pub fn set_listing(
        &self,
        identity: &Name,
        listing: Option<(&[u8; 32], Permissions)>,
        now_ms: u64,
    ) -> Result<()> {
        if let Some((old, _)) = self.listing(identity)? {
            self.exec(
                "UPDATE invites SET expires_at = ?3
                 WHERE identity = ?1 AND one_time_key = ?2 AND spent_by IS NULL AND expires_at > ?3",
                params![identity.as_str(), old, ms(now_ms)],
            )?;
        }
        match listing {
            Some((key, permissions)) => self.exec(
                "INSERT INTO listings (identity, invite_key, permissions) VALUES (?1, ?2, ?3)
                 ON CONFLICT (identity) DO UPDATE SET invite_key = excluded.invite_key,
                     permissions = excluded.permissions",
                params![identity.as_str(), key, permissions.bits()],
            )?,
            None => self.exec(
                "DELETE FROM listings WHERE identity = ?1",
                params![identity.as_str()],
            )?,
        };
        Ok(())
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

    /// The contact removed us: it is kept, marked `removed`, and its session
    /// is gone (a new pairing makes a new one).
    pub fn mark_removed(&self, identity: &Name, address: &PublicKey) -> Result<()> {
        self.set_contact_state(identity, address, ContactState::Removed)?;
        self.exec(
            "DELETE FROM sessions WHERE identity = ?1 AND address = ?2",
            params![identity.as_str(), address.as_bytes()],
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
    #[allow(clippy::too_many_arguments)]
    pub fn add_invite(
        &self,
        identity: &Name,
        one_time_key: &[u8; 32],
        secret: &[u8; 32],
        expires_at_ms: u64,
        permissions: Permissions,
        for_name: Option<&Name>,
        now_ms: u64,
    ) -> Result<()> {
        self.exec(
            "INSERT INTO invites (identity, one_time_key, secret, expires_at, permissions, for_name, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                identity.as_str(),
                one_time_key,
                secret,
                ms(expires_at_ms),
                permissions.bits(),
                for_name.map(Name::as_str),
                ms(now_ms)
            ],
        )?;
        Ok(())
    }

    /// Forgets invites that expired more than a day ago
    /// ([`crate::redeem::INVITE_KEPT_AFTER_EXPIRY_MS`]).
    pub fn prune_invites(&self, now_ms: u64) -> Result<usize> {
        self.exec(
            "DELETE FROM invites WHERE expires_at < ?1",
            params![ms(
                now_ms.saturating_sub(crate::redeem::INVITE_KEPT_AFTER_EXPIRY_MS)
            )],
        )
    }

    /// The invite whose one-time key is `one_time_key`.
    pub fn invite_by_key(
        &self,
        identity: &Name,
        one_time_key: &[u8; 32],
    ) -> Result<Option<InviteRecord>> {
        self.row(
            "SELECT secret, expires_at, spent_by, permissions, for_name
             FROM invites WHERE identity = ?1 AND one_time_key = ?2",
            params![identity.as_str(), one_time_key],
            |row| {
                let for_name = match row.get::<_, Option<String>>(4)? {
                    Some(name) => {
                        Some(Name::new(&name).map_err(|_| StoreError::corrupt("petname", &name))?)
                    }
                    None => None,
                };
                Ok(InviteRecord {
                    secret: row.get(0)?,
                    expires_at_ms: get_ms(row, 1)?,
                    spent_by: row
                        .get::<_, Option<[u8; 32]>>(2)?
                        .map(PublicKey::from_bytes),
                    permissions: Permissions::from_bits(row.get(3)?),
                    for_name,
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

    /// Per contact with a session, how many of its messages have not arrived
    /// though a later one has (read from the stored sessions' numbers).
    pub fn missing(&self, identity: &Name) -> Result<std::collections::HashMap<PublicKey, u64>> {
        let rows: Vec<(Vec<u8>, String)> = self.rows(
            "SELECT address, pickle FROM sessions WHERE identity = ?1",
            params![identity.as_str()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|(address, pickle)| {
                let address = PublicKey::from_bytes(address.try_into().ok()?);
                Some((
                    address,
                    agentwire_session::PeerSession::missing_in_pickle(&pickle),
                ))
            })
            .collect())
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
        permissions: Permissions::from_bits(row.get(7)?),
    })
}

pub(super) fn parse<T: std::str::FromStr>(
    row: &rusqlite::Row<'_>,
    column: usize,
    what: &str,
) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    text.parse().map_err(|_| StoreError::corrupt(what, &text))
}

pub(super) fn get_ms(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|_| StoreError::corrupt("time", value))
}

pub(super) fn optional_ms(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Option<u64>> {
    let value: Option<i64> = row.get(column)?;
    value
        .map(|value| u64::try_from(value).map_err(|_| StoreError::corrupt("time", value)))
        .transpose()
}

pub(super) fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
