//! The queries about tasks: both sides of each, and the moves between A2A's
//! states ([`TaskState::may_become`] is the rule).

use agentwire_api::{TaskRole, TaskState};
use agentwire_session::{MessageId, Name};
use agentwire_wire::PublicKey;
use rusqlite::params;

use super::queries::{get_ms, ms, parse};
use super::{Result, Tx};

/// The latest send of a file: its transfer id, the parts queued, and the
/// offer's id once queued.
pub(crate) type OutgoingFile = ([u8; 16], u64, Option<MessageId>);

/// A task as stored, with the start of its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTask {
    /// The task message's id.
    pub id: MessageId,
    /// Which side we are on.
    pub role: TaskRole,
    /// The other side.
    pub peer: PublicKey,
    /// Where it is.
    pub state: TaskState,
    /// The task's text (its start).
    pub summary: String,
    /// Why, from the worker.
    pub detail: Option<String>,
    /// The result message, once completed.
    pub result: Option<MessageId>,
    /// When it was sent or arrived, Unix ms.
    pub created_at_ms: u64,
    /// When its state last changed, Unix ms.
    pub updated_at_ms: u64,
}

/// How much of a task's text a listing shows, in characters.
const SUMMARY_CHARS: usize = 200;

macro_rules! task_select {
    () => {
        "SELECT t.id, t.role, t.peer, t.state, substr(CAST(m.body AS TEXT), 1, 200), t.detail, t.result,
                t.created_at, t.updated_at
         FROM tasks t LEFT JOIN messages m ON m.identity = t.identity AND m.id = t.id"
    };
}

impl Tx<'_> {
    /// Records a task that was just sent (`Asked`) or arrived (`Given`),
    /// `submitted`; one already recorded is left as it is.
    pub fn insert_task(
        &self,
        identity: &Name,
        id: &MessageId,
        role: TaskRole,
        peer: &PublicKey,
        now_ms: u64,
    ) -> Result<bool> {
        Ok(self.exec(
            "INSERT OR IGNORE INTO tasks (identity, id, role, peer, state, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'submitted', ?5, ?5)",
            params![
                identity.as_str(),
                id.as_bytes(),
                role.name(),
                peer.as_bytes(),
                ms(now_ms)
            ],
        )? > 0)
    }

    /// One task.
    pub fn task(&self, identity: &Name, id: &MessageId) -> Result<Option<StoredTask>> {
        self.row(
            concat!(task_select!(), " WHERE t.identity = ?1 AND t.id = ?2"),
            params![identity.as_str(), id.as_bytes()],
            task_row,
        )
    }

    /// The newest tasks, both ways.
    pub fn tasks(&self, identity: &Name, max: usize) -> Result<Vec<StoredTask>> {
        self.rows(
            concat!(
                task_select!(),
                " WHERE t.identity = ?1 ORDER BY t.id DESC LIMIT ?2"
            ),
            params![identity.as_str(), i64::try_from(max).unwrap_or(i64::MAX)],
            task_row,
        )
    }

    /// Moves a task on our `role` side with `peer` to `next`, if the rule
    /// allows it; the task as it is then, when it moved.
    #[allow(clippy::too_many_arguments)]
    pub fn move_task(
        &self,
        identity: &Name,
        id: &MessageId,
        role: TaskRole,
        peer: &PublicKey,
        next: TaskState,
        detail: Option<&str>,
        result: Option<&MessageId>,
        now_ms: u64,
    ) -> Result<Option<StoredTask>> {
        let Some(task) = self.task(identity, id)? else {
            return Ok(None);
        };
        if task.role != role || task.peer != *peer || !task.state.may_become(next) {
            return Ok(None);
        }
        self.exec(
            "UPDATE tasks SET state = ?3, detail = ?4, result = ?5, updated_at = ?6
             WHERE identity = ?1 AND id = ?2",
            params![
                identity.as_str(),
                id.as_bytes(),
                next.name(),
                detail,
                result.map(|r| *r.as_bytes()),
                ms(now_ms)
            ],
        )?;
        self.task(identity, id)
    }

    /// Keeps a piece of a task's output; false if that place was taken.
    pub fn add_chunk(
        &self,
        identity: &Name,
        task: &MessageId,
        seq: u32,
        text: &str,
        now_ms: u64,
    ) -> Result<bool> {
        Ok(self.exec(
            "INSERT OR IGNORE INTO task_chunks (identity, task, seq, body, stored_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![identity.as_str(), task.as_bytes(), seq, text, ms(now_ms)],
        )? > 0)
    }

    /// The place of the next piece of a task's output.
    pub fn next_chunk(&self, identity: &Name, task: &MessageId) -> Result<u32> {
        let next: Option<Option<u32>> = self.row(
            "SELECT MAX(seq) + 1 FROM task_chunks WHERE identity = ?1 AND task = ?2",
            params![identity.as_str(), task.as_bytes()],
            |row| row.get(0),
        )?;
        Ok(next.flatten().unwrap_or(0))
    }

    /// The pieces of a task's output after `after` (all without it), in
    /// order, at most `limit`.
    pub fn chunks(
        &self,
        identity: &Name,
        task: &MessageId,
        after: Option<u32>,
        limit: usize,
    ) -> Result<Vec<(u32, String)>> {
        self.rows(
            "SELECT seq, body FROM task_chunks
             WHERE identity = ?1 AND task = ?2 AND (?3 IS NULL OR seq > ?3)
             ORDER BY seq LIMIT ?4",
            params![
                identity.as_str(),
                task.as_bytes(),
                after,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
    }

    /// Notes that a part of a file from `peer` arrived; false if it had.
    pub fn add_file_part(
        &self,
        identity: &Name,
        peer: &PublicKey,
        file: &[u8; 16],
        index: u32,
    ) -> Result<bool> {
        Ok(self.exec(
            "INSERT OR IGNORE INTO file_parts (identity, peer, file, idx) VALUES (?1, ?2, ?3, ?4)",
            params![identity.as_str(), peer.as_bytes(), file, index],
        )? > 0)
    }

    /// How many parts of a file from `peer` arrived.
    pub fn file_part_count(
        &self,
        identity: &Name,
        peer: &PublicKey,
        file: &[u8; 16],
    ) -> Result<u64> {
        self.count(
            "SELECT COUNT(*) FROM file_parts WHERE identity = ?1 AND peer = ?2 AND file = ?3",
            params![identity.as_str(), peer.as_bytes(), file],
        )
    }

    /// Forgets the parts of a file (kept or refused).
    pub fn forget_file_parts(
        &self,
        identity: &Name,
        peer: &PublicKey,
        file: &[u8; 16],
    ) -> Result<()> {
        self.exec(
            "DELETE FROM file_parts WHERE identity = ?1 AND peer = ?2 AND file = ?3",
            params![identity.as_str(), peer.as_bytes(), file],
        )?;
        Ok(())
    }

    /// The latest send of a file (by its key: contact, contents and name):
    /// its transfer id, the parts queued, and the offer's id once queued.
    pub fn outgoing_file(&self, identity: &Name, file: &[u8; 16]) -> Result<Option<OutgoingFile>> {
        self.row(
            "SELECT transfer, parts_queued, offer FROM outgoing_files WHERE identity = ?1 AND file = ?2",
            params![identity.as_str(), file],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get::<_, i64>(1)?.max(0) as u64,
                    row.get::<_, Option<[u8; 16]>>(2)?.map(MessageId::from_bytes),
                ))
            },
        )
    }

    /// Records a send of a file: its transfer, the parts queued so far and,
    /// at the end, its offer, in the transaction that queues them.
    #[allow(clippy::too_many_arguments)]
    pub fn note_outgoing_file(
        &self,
        identity: &Name,
        file: &[u8; 16],
        transfer: &[u8; 16],
        peer: &PublicKey,
        parts_queued: u64,
        offer: Option<&MessageId>,
    ) -> Result<()> {
        self.exec(
            "INSERT INTO outgoing_files (identity, file, transfer, peer, parts_queued, offer)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (identity, file) DO UPDATE
                 SET transfer = excluded.transfer,
                     parts_queued = excluded.parts_queued,
                     offer = excluded.offer",
            params![
                identity.as_str(),
                file,
                transfer,
                peer.as_bytes(),
                i64::try_from(parts_queued).unwrap_or(i64::MAX),
                offer.map(|id| *id.as_bytes())
            ],
        )?;
        Ok(())
    }
}

fn task_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredTask> {
    let summary: Option<String> = row.get(4)?;
    Ok(StoredTask {
        id: MessageId::from_bytes(row.get(0)?),
        role: parse(row, 1, "task role")?,
        peer: PublicKey::from_bytes(row.get(2)?),
        state: parse(row, 3, "task state")?,
        summary: summary
            .unwrap_or_default()
            .chars()
            .take(SUMMARY_CHARS)
            .collect(),
        detail: row.get(5)?,
        result: row
            .get::<_, Option<[u8; 16]>>(6)?
            .map(MessageId::from_bytes),
        created_at_ms: get_ms(row, 7)?,
        updated_at_ms: get_ms(row, 8)?,
    })
}
