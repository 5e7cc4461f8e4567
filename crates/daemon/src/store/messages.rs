//! The queries about messages: both directions, their delivery states, the
//! outbox and the unread.

use agentwire_api::DeliveryState;
use agentwire_session::{Chain, Kind, MessageId, Name, Priority};
use agentwire_wire::PublicKey;
use rusqlite::params;

use super::queries::{get_ms, ms, optional_ms, parse};
use super::{Direction, Outgoing, Result, SentMessage, StoreError, StoredMessage, Tx};

// As in `queries.rs`, the SQL is made at compile time.
macro_rules! sent_columns {
    () => {
        "id, peer, kind, state, sent_at, COALESCE(updated_at, stored_at), relayed_at, delivered_at, read_at, reason"
    };
}
/// Messages a sender tracks: not receipts or pairing messages.
macro_rules! tracked {
    () => {
        "direction = 'out' AND kind NOT IN ('receipt', 'redeem', 'unpair', 'status', 'cancel', 'chunk', 'card', 'ping', 'file_part')"
    };
}

// The hot queries, as constants so that a test can check their plans.
/// An identity's queued outgoing messages, oldest first (the partial index
/// `messages_queued` holds exactly these).
pub(super) const OUTBOX: &str =
    "SELECT rowid, id, peer, payload FROM messages INDEXED BY messages_queued
     WHERE identity = ?1 AND state = 'queued' AND direction = 'out' AND (?2 IS NULL OR rowid > ?2)
     ORDER BY rowid LIMIT ?3";
/// How many of them are messages the sender tracks.
pub(super) const OUTBOX_COUNT: &str = "SELECT COUNT(*) FROM messages INDEXED BY messages_queued
     WHERE identity = ?1 AND state = 'queued' AND direction = 'out'
       AND kind NOT IN ('receipt', 'redeem')";
/// Unread messages from current contacts: by lane (urgent first), then by
/// turn (each sender's first waiting message before anyone's second), then
/// oldest first.
pub(super) const UNREAD: &str =
    "SELECT id, direction, peer, kind, reply_to, thread, sent_at, stored_at, body, state, priority, chain, hops
     FROM messages
     WHERE identity = ?1 AND direction = 'in' AND consumed_at IS NULL
       AND (?2 IS NULL OR peer = ?2)
       AND peer IN (SELECT address FROM contacts WHERE identity = ?1)
     ORDER BY lane, turn, id LIMIT ?3";
/// How many urgent messages a contact may have waiting in the urgent lane;
/// its further urgent messages wait in the normal lane (still marked urgent).
pub(super) const URGENT_SHARE: u64 = 10;
/// The last turn taken in a sender's lane by a waiting message: one look at
/// the end of the index, however many wait.
pub(super) const LAST_TURN: &str = "SELECT MAX(turn) FROM messages INDEXED BY messages_waiting
     WHERE identity = ?1 AND peer = ?2 AND lane = ?3 AND direction = 'in' AND consumed_at IS NULL";
/// How many of a sender's messages wait in a lane, counted up to ?4 only.
pub(super) const WAITING_UP_TO: &str =
    "SELECT COUNT(*) FROM (SELECT 1 FROM messages INDEXED BY messages_waiting
     WHERE identity = ?1 AND peer = ?2 AND lane = ?3 AND direction = 'in' AND consumed_at IS NULL
     LIMIT ?4)";
/// How many unread messages from current contacts.
pub(super) const UNREAD_COUNT: &str = "SELECT COUNT(*) FROM messages
     WHERE identity = ?1 AND direction = 'in' AND consumed_at IS NULL
       AND peer IN (SELECT address FROM contacts WHERE identity = ?1)";

impl Tx<'_> {
    /// Stores a message unless one with its id exists; returns whether it was
    /// new.
    pub fn insert_message(
        &self,
        identity: &Name,
        message: &StoredMessage,
        payload: Option<&[u8]>,
    ) -> Result<bool> {
        let (lane, turn) = match message.direction {
            Direction::In => self.place(identity, &message.peer, message.priority)?,
            Direction::Out => (message.priority.to_u8(), 0),
        };
        Ok(self.exec(
            "INSERT OR IGNORE INTO messages
                 (identity, id, direction, peer, kind, reply_to, thread, sent_at, stored_at, body, payload, state, priority, updated_at, chain, hops, lane, turn)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?9, ?14, ?15, ?16, ?17)",
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
                message.chain.map(|c| *c.id.as_bytes()),
                message.chain.map(|c| c.hops),
                lane,
                turn,
            ],
        )? > 0)
    }

    /// Where an incoming message from `peer` waits: its lane (its priority,
    /// but normal for an urgent one beyond the contact's [`URGENT_SHARE`])
    /// and its turn in that lane.
    fn place(&self, identity: &Name, peer: &PublicKey, priority: Priority) -> Result<(u8, i64)> {
        let mut lane = priority.to_u8();
        if priority == Priority::Urgent {
            let waiting: i64 = self
                .row(
                    WAITING_UP_TO,
                    params![
                        identity.as_str(),
                        peer.as_bytes(),
                        lane,
                        URGENT_SHARE as i64
                    ],
                    |row| row.get(0),
                )?
                .unwrap_or(0);
            if u64::try_from(waiting).unwrap_or(0) >= URGENT_SHARE {
                lane = Priority::Normal.to_u8();
            }
        }
        let last = self.row(
            LAST_TURN,
            params![identity.as_str(), peer.as_bytes(), lane],
            |row| row.get::<_, Option<i64>>(0),
        )?;
        Ok((lane, last.flatten().map_or(0, |turn| turn + 1)))
    }

    /// The chain a reply to `id` (a message we received) belongs to: its
    /// chain one hop further, or a new chain from it. `None` for a message
    /// we do not have or sent ourselves.
    pub fn reply_chain(&self, identity: &Name, id: &MessageId) -> Result<Option<Chain>> {
        let parent = self.row(
            "SELECT chain, hops FROM messages WHERE identity = ?1 AND id = ?2 AND direction = 'in'",
            params![identity.as_str(), id.as_bytes()],
            |row| chain_at(row, 0),
        )?;
        Ok(parent.map(|chain| Chain::reply_to(*id, chain)))
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
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Outgoing>> {
        self.rows(
            OUTBOX,
            params![
                identity.as_str(),
                after,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |row| {
                Ok(Outgoing {
                    seq: row.get(0)?,
                    id: MessageId::from_bytes(row.get(1)?),
                    peer: PublicKey::from_bytes(row.get(2)?),
                    payload: row.get(3)?,
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

    /// Fails every message to `peer` that has not reached it yet (queued or
    /// relayed): the peer removed us, and drops whatever still arrives.
    /// Returns the ids of the tracked ones (what senders see).
    pub fn fail_undelivered_to(
        &self,
        identity: &Name,
        peer: &PublicKey,
        now_ms: u64,
    ) -> Result<Vec<MessageId>> {
        self.rows(
            concat!(
                "UPDATE messages SET state = 'failed', payload = NULL, updated_at = ?3
                 WHERE identity = ?1 AND peer = ?2 AND direction = 'out'
                   AND state IN ('queued', 'relayed')
                 RETURNING id, ",
                tracked!()
            ),
            params![identity.as_str(), peer.as_bytes(), ms(now_ms)],
            |row| Ok((MessageId::from_bytes(row.get(0)?), row.get::<_, bool>(1)?)),
        )
        .map(|rows| {
            rows.into_iter()
                .filter_map(|(id, tracked)| tracked.then_some(id))
                .collect()
        })
    }

    /// Keeps why the recipient refused an outgoing message (its status's
    /// detail), shown with its `failed` state.
    pub fn set_reason(&self, identity: &Name, id: &MessageId, reason: &str) -> Result<()> {
        self.exec(
            "UPDATE messages SET reason = ?3 WHERE identity = ?1 AND id = ?2 AND direction = 'out'",
            params![identity.as_str(), id.as_bytes(), reason],
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
        // Which progress times this state sets (those not set already): the
        // state itself and the ones it implies.
        let reached = |wanted| state.has_reached(wanted);
        Ok(self.exec(
            "UPDATE messages SET state = ?3, payload = NULL, updated_at = ?5,
                 relayed_at = CASE WHEN ?12 THEN COALESCE(relayed_at, ?5) ELSE relayed_at END,
                 delivered_at = CASE WHEN ?13 THEN COALESCE(delivered_at, ?5) ELSE delivered_at END,
                 read_at = CASE WHEN ?14 THEN COALESCE(read_at, ?5) ELSE read_at END
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
                f,
                reached(DeliveryState::Relayed),
                reached(DeliveryState::Delivered),
                reached(DeliveryState::Read)
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
            "SELECT id, direction, peer, kind, reply_to, thread, sent_at, stored_at, body, state, priority, chain, hops
             FROM messages
             WHERE identity = ?1 AND id = ?2 AND direction = 'in' AND consumed_at IS NULL
               AND peer IN (SELECT address FROM contacts WHERE identity = ?1)",
            params![identity.as_str(), id.as_bytes()],
            message_row,
        )
    }

    /// Unread incoming messages from `peer`: how many, and their bodies'
    /// bytes.
    pub fn unread_from(&self, identity: &Name, peer: &PublicKey) -> Result<(u64, u64)> {
        Ok(self
            .row(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM messages
                 WHERE identity = ?1 AND direction = 'in' AND consumed_at IS NULL AND peer = ?2",
                params![identity.as_str(), peer.as_bytes()],
                |row| {
                    Ok((
                        u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                        u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                    ))
                },
            )?
            .unwrap_or((0, 0)))
    }

    /// Forgets what is past its retention (every identity): tasks that
    /// ended before `cutoff_ms` and their streamed output, then messages
    /// read before it, and sent ones that ended (read, expired, failed)
    /// before it, unless a task still names them. How many messages went.
    pub fn forget_before(&self, cutoff_ms: u64) -> Result<usize> {
        let cutoff = ms(cutoff_ms);
        self.exec(
            "DELETE FROM task_chunks WHERE EXISTS (
                 SELECT 1 FROM tasks t
                 WHERE t.identity = task_chunks.identity AND t.id = task_chunks.task
                   AND t.state IN ('completed', 'failed', 'canceled', 'rejected')
                   AND t.updated_at < ?1)",
            params![cutoff],
        )?;
        self.exec(
            "DELETE FROM tasks WHERE state IN ('completed', 'failed', 'canceled', 'rejected')
               AND updated_at < ?1",
            params![cutoff],
        )?;
        self.exec(
            "DELETE FROM messages
             WHERE ((direction = 'in' AND consumed_at IS NOT NULL AND consumed_at < ?1)
                 OR (direction = 'out' AND state IN ('read', 'expired', 'failed')
                     AND updated_at < ?1))
               AND NOT EXISTS (
                 SELECT 1 FROM tasks t
                 WHERE t.identity = messages.identity
                   AND (t.id = messages.id OR t.result = messages.id))",
            params![cutoff],
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

fn sent_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SentMessage> {
    Ok(SentMessage {
        id: MessageId::from_bytes(row.get(0)?),
        peer: PublicKey::from_bytes(row.get(1)?),
        kind: kind(row, 2)?,
        state: parse(row, 3, "delivery state")?,
        sent_at_ms: get_ms(row, 4)?,
        updated_at_ms: get_ms(row, 5)?,
        reached_at_ms: super::Reached {
            relayed: optional_ms(row, 6)?,
            delivered: optional_ms(row, 7)?,
            read: optional_ms(row, 8)?,
        },
        reason: row.get(9)?,
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
        chain: chain_at(row, 11)?,
    })
}

/// The chain in columns `column` (id) and `column + 1` (hops).
fn chain_at(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Option<Chain>> {
    let id: Option<[u8; 16]> = row.get(column)?;
    let hops: Option<u8> = row.get(column + 1)?;
    Ok(id.map(|id| Chain {
        id: MessageId::from_bytes(id),
        hops: hops.unwrap_or(1),
    }))
}

fn kind(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Kind> {
    let name: String = row.get(column)?;
    Kind::from_name(&name).ok_or_else(|| StoreError::corrupt("kind", &name))
}
