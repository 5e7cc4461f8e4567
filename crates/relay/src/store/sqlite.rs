//! The SQLite store: the relay's queues in one file, owned by one process.
//!
//! One dedicated thread owns the connection. It takes requests from a bounded
//! channel, runs every request that is waiting in one transaction (each in its
//! own savepoint, so one failing request cannot undo another) and commits once:
//! group commit, so many concurrent senders share one `fsync`. The database runs
//! in WAL mode with `synchronous=FULL`: an accepted envelope survives a power
//! cut, not just a crash.
//!
//! Reads that need no transaction (a recipient's queue, its depth, a sender's
//! expiry notices) go to a second thread with its own read-only connection:
//! WAL lets it read the last commit while the writer is in its `fsync`, so a
//! delivery never waits behind someone else's commit. What it reads is
//! always committed; the writer answers only after its commit, so whoever
//! was told of a change reads it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::thread;
use std::time::Instant;

use agentwire_wire::{EnvelopeId, PublicKey, RelayId};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::{
    ExpiryNotice, ListOutcome, NewEnvelope, NewListing, PutOutcome, Queued, SWEEP_BATCH,
    StoreError, from_sql_time, to_array, to_sql_time,
};
use crate::metrics::Metrics;

/// Requests waiting for the store thread, at most; senders wait beyond this.
const STORE_QUEUE: usize = 4096;
/// Requests run in one transaction, at most.
const MAX_BATCH: usize = 512;

/// `(seq, sender, recipient, id)` of an envelope whose time is up.
type ExpiredRow = (i64, Vec<u8>, Vec<u8>, Vec<u8>);

type Finish = Box<dyn FnOnce(Result<(), Arc<StoreError>>) + Send>;

/// What one request did inside the transaction.
struct Ran {
    /// Whether to keep its changes.
    ok: bool,
    /// Change to the number of queued envelopes, applied after commit.
    queued_delta: i64,
    /// Delivers the answer once the commit's outcome is known.
    finish: Finish,
}

type Job = Box<dyn FnOnce(&Connection) -> Ran + Send>;

/// A read for the reader thread; it sends its own answer.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Handle to the store thread. Cloning is cheap; the thread ends when the last
/// handle is dropped (after finishing what was asked of it).
#[derive(Clone)]
pub(crate) struct Store {
    jobs: mpsc::Sender<Job>,
    reads: mpsc::Sender<ReadJob>,
    queued: Arc<AtomicI64>,
}

/// The store's threads, to be joined after the last [`Store`] handle is gone.
pub(crate) struct StoreThread {
    writer: thread::JoinHandle<()>,
    reader: thread::JoinHandle<()>,
}

impl StoreThread {
    /// Waits (blocking) until the writer has committed its last batch and the
    /// reader has answered its last read.
    pub(crate) fn join(self) {
        if self.writer.join().is_err() {
            tracing::error!("store thread panicked");
        }
        if self.reader.join().is_err() {
            tracing::error!("store reader thread panicked");
        }
    }
}

impl Store {
    /// Opens (creating if needed) the database and starts the store thread.
    pub(crate) fn open(
        path: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<(Store, StoreThread, RelayId), StoreError> {
        create_private(path)
            .map_err(|e| StoreError::Open(format!("cannot create {}: {e}", path.display())))?;
        let conn = connection(path)?;
        // SQLite opens a file it may not write read-only without a word;
        // a relay that cannot store what it accepts must not start.
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(StoreError::Open(
                "it is read-only (the file or its filesystem), and a relay that cannot store \
                 what it accepts does not start"
                    .into(),
            ));
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&conn)?;
        let relay_id = relay_id(&conn)?;
        let queued_now: i64 = conn.query_row("SELECT COUNT(*) FROM envelopes", [], |r| r.get(0))?;
        let queued = Arc::new(AtomicI64::new(queued_now));
        metrics.queued.set(queued_now);

        let reader_conn = open_reader(path)?;
        let (jobs, rx) = mpsc::channel(STORE_QUEUE);
        let (reads, read_rx) = mpsc::channel(STORE_QUEUE);
        let thread_queued = queued.clone();
        let writer = thread::Builder::new()
            .name("relay-store".into())
            .spawn(move || run(conn, rx, thread_queued, metrics))
            .map_err(|e| StoreError::Open(format!("cannot start the store thread: {e}")))?;
        let reader = thread::Builder::new()
            .name("relay-reader".into())
            .spawn(move || read_loop(&reader_conn, read_rx))
            .map_err(|e| StoreError::Open(format!("cannot start the reader thread: {e}")))?;
        Ok((
            Store {
                jobs,
                reads,
                queued,
            },
            StoreThread { writer, reader },
            relay_id,
        ))
    }

    /// Runs `f` on the reader thread (no transaction; it sees the last
    /// commit).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = tx.send(f(conn).map_err(StoreError::Sqlite));
        });
        self.reads.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Envelopes queued across all recipients, as of the last commit.
    pub(crate) fn queued(&self) -> u64 {
        u64::try_from(self.queued.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Runs `f` in the store thread's transaction and answers after commit.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<(T, i64)> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| match f(conn) {
            Ok((value, queued_delta)) => Ran {
                ok: true,
                queued_delta,
                finish: Box::new(move |committed| {
                    let _ = tx.send(committed.map(|()| value).map_err(unwrap_shared));
                }),
            },
            Err(error) => Ran {
                ok: false,
                queued_delta: 0,
                finish: Box::new(move |_| {
                    let _ = tx.send(Err(StoreError::Sqlite(error)));
                }),
            },
        });
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Stores an envelope unless its id is a duplicate, conflicts, or the
    /// recipient's queue holds `max_queue` already.
    pub(crate) async fn put(
        &self,
        envelope: NewEnvelope,
        max_queue: u32,
        max_per_sender: u32,
    ) -> Result<PutOutcome, StoreError> {
        self.call(move |conn| {
            let e = &envelope;
            let existing: Option<Vec<u8>> = conn
                .query_row(
                    "SELECT sender FROM envelopes WHERE recipient = ?1 AND id = ?2
                     UNION ALL
                     SELECT sender FROM delivered WHERE recipient = ?1 AND id = ?2",
                    params![e.recipient.as_bytes(), e.id.as_bytes()],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(sender) = existing {
                let outcome = if sender == e.sender.as_bytes() {
                    PutOutcome::Duplicate
                } else {
                    PutOutcome::IdConflict
                };
                return Ok((outcome, 0));
            }
            let depth = queue_depth(conn, &e.recipient)?;
            if depth >= i64::from(max_queue) {
                return Ok((PutOutcome::QueueFull, 0));
            }
            // One sender's share of the queue, counted only once the whole
            // queue is that long (until then no sender can be over it).
            if depth >= i64::from(max_per_sender) {
                let from_sender: i64 = conn
                    .prepare_cached(
                        "SELECT COUNT(*) FROM envelopes WHERE recipient = ?1 AND sender = ?2",
                    )?
                    .query_row(
                        params![e.recipient.as_bytes(), e.sender.as_bytes()],
                        |row| row.get(0),
                    )?;
                if from_sender >= i64::from(max_per_sender) {
                    return Ok((PutOutcome::SenderShareFull, 0));
                }
            }
            adjust_depth(conn, e.recipient.as_bytes(), 1)?;
            conn.prepare_cached(
                "INSERT INTO envelopes (recipient, id, sender, payload, received_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                e.recipient.as_bytes(),
                e.id.as_bytes(),
                e.sender.as_bytes(),
                e.payload,
                to_sql_time(e.received_at_ms),
                to_sql_time(e.expires_at_ms),
            ])?;
            Ok((PutOutcome::Stored, 1))
        })
        .await
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
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, id, sender, received_at, payload FROM envelopes
                 WHERE recipient = ?1 AND seq > ?2 AND expires_at > ?3
                 ORDER BY seq LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![
                    recipient.as_bytes(),
                    after_seq,
                    to_sql_time(now_ms),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |row| {
                    Ok(Queued {
                        seq: row.get(0)?,
                        id: EnvelopeId::from_bytes(row.get(1)?),
                        sender: PublicKey::from_bytes(row.get(2)?),
                        received_at_ms: from_sql_time(row.get(3)?),
                        payload: row.get(4)?,
                    })
                },
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
        .await
    }

    /// How many envelopes wait for `recipient`.
    pub(crate) async fn depth(&self, recipient: PublicKey) -> Result<u64, StoreError> {
        self.read(move |conn| {
            let depth = queue_depth(conn, &recipient)?;
            Ok(u64::try_from(depth).unwrap_or(0))
        })
        .await
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
        self.call(move |conn| {
            let removed = ack_one(conn, &recipient, &id)?;
            Ok((removed, -i64::from(removed)))
        })
        .await
    }

    /// [`Store::ack`] for a batch of ids, in one store job; returns how many
    /// envelopes were removed.
    pub(crate) async fn ack_batch(
        &self,
        recipient: PublicKey,
        ids: Vec<EnvelopeId>,
    ) -> Result<usize, StoreError> {
        self.call(move |conn| {
            let mut removed = 0usize;
            for id in &ids {
                removed += usize::from(ack_one(conn, &recipient, id)?);
            }
            Ok((removed, -i64::try_from(removed).unwrap_or(0)))
        })
        .await
    }

    /// Moves envelopes whose time is up into expiry notices (kept for one
    /// more TTL, or until the sender dismisses them), forgets old tombstones
    /// and notices, and returns the new notices.
    pub(crate) async fn sweep(
        &self,
        now_ms: u64,
        notice_ttl_ms: u64,
    ) -> Result<Vec<ExpiryNotice>, StoreError> {
        self.call(move |conn| {
            let now = to_sql_time(now_ms);
            let expired: Vec<ExpiredRow> = conn
                .prepare_cached(
                    "SELECT seq, sender, recipient, id FROM envelopes
                     WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
                )?
                .query_map(params![now, SWEEP_BATCH as i64], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut notices = Vec::with_capacity(expired.len());
            for (seq, sender, recipient, id) in expired {
                conn.prepare_cached("DELETE FROM envelopes WHERE seq = ?1")?
                    .execute(params![seq])?;
                adjust_depth(conn, &recipient, -1)?;
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO expired (sender, recipient, id, expired_at, forget_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    sender,
                    recipient,
                    id,
                    now,
                    to_sql_time(now_ms.saturating_add(notice_ttl_ms))
                ])?;
                notices.push(ExpiryNotice {
                    sender: PublicKey::from_bytes(to_array(sender)),
                    recipient: PublicKey::from_bytes(to_array(recipient)),
                    id: EnvelopeId::from_bytes(to_array(id)),
                    expired_at_ms: now_ms,
                });
            }
            conn.prepare_cached("DELETE FROM delivered WHERE forget_at <= ?1")?
                .execute(params![now])?;
            conn.prepare_cached("DELETE FROM expired WHERE forget_at <= ?1")?
                .execute(params![now])?;
            conn.prepare_cached(
                "DELETE FROM directory_tags WHERE key IN
                 (SELECT key FROM directory WHERE forget_at <= ?1)",
            )?
            .execute(params![now])?;
            conn.prepare_cached("DELETE FROM directory WHERE forget_at <= ?1")?
                .execute(params![now])?;
            let delta = -i64::try_from(notices.len()).unwrap_or(0);
            Ok((notices, delta))
        })
        .await
    }

    /// Up to `limit` undismissed expiry notices for `sender`.
    pub(crate) async fn notices(
        &self,
        sender: PublicKey,
        limit: usize,
    ) -> Result<Vec<ExpiryNotice>, StoreError> {
        self.read(move |conn| {
            let notices = conn
                .prepare_cached(
                    "SELECT recipient, id, expired_at FROM expired WHERE sender = ?1
                     ORDER BY expired_at LIMIT ?2",
                )?
                .query_map(
                    params![sender.as_bytes(), i64::try_from(limit).unwrap_or(i64::MAX)],
                    |row| {
                        Ok(ExpiryNotice {
                            sender,
                            recipient: PublicKey::from_bytes(row.get(0)?),
                            id: EnvelopeId::from_bytes(row.get(1)?),
                            expired_at_ms: from_sql_time(row.get(2)?),
                        })
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(notices)
        })
        .await
    }

    /// Stores a directory entry for its key unless the key has one as new
    /// or newer, or the directory already lists `max_entries` other keys.
    pub(crate) async fn list(
        &self,
        listing: NewListing,
        max_entries: u32,
    ) -> Result<ListOutcome, StoreError> {
        self.call(move |conn| {
            let l = &listing;
            let key = l.key.as_bytes();
            let existing: Option<i64> = conn
                .prepare_cached("SELECT published_at FROM directory WHERE key = ?1")?
                .query_row(params![key], |row| row.get(0))
                .optional()?;
            match existing {
                Some(at) if at >= to_sql_time(l.published_at_ms) => {
                    return Ok((ListOutcome::Stale, 0));
                }
                Some(_) => {}
                None => {
                    let count: i64 = conn
                        .prepare_cached("SELECT COUNT(*) FROM directory")?
                        .query_row([], |row| row.get(0))?;
                    if count >= i64::from(max_entries) {
                        return Ok((ListOutcome::Full, 0));
                    }
                }
            }
            conn.prepare_cached(
                "INSERT OR REPLACE INTO directory (key, published_at, listed_until, forget_at, entry)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                key,
                to_sql_time(l.published_at_ms),
                to_sql_time(l.listed_until_ms),
                to_sql_time(l.forget_at_ms),
                l.entry
            ])?;
            conn.prepare_cached("DELETE FROM directory_tags WHERE key = ?1")?
                .execute(params![key])?;
            for tag in &l.capabilities {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO directory_tags (tag, key) VALUES (?1, ?2)",
                )?
                .execute(params![tag, key])?;
            }
            Ok((ListOutcome::Stored, 0))
        })
        .await
    }

    /// Up to `limit` listed entries with `capability` (any, when empty),
    /// newest first.
    pub(crate) async fn lookup(
        &self,
        capability: String,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(move |conn| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let now = to_sql_time(now_ms);
            if capability.is_empty() {
                conn.prepare_cached(
                    "SELECT entry FROM directory WHERE listed_until > ?1
                     ORDER BY published_at DESC LIMIT ?2",
                )?
                .query_map(params![now, limit], |row| row.get(0))?
                .collect()
            } else {
                conn.prepare_cached(
                    "SELECT d.entry FROM directory_tags t JOIN directory d ON d.key = t.key
                     WHERE t.tag = ?1 AND d.listed_until > ?2
                     ORDER BY d.published_at DESC LIMIT ?3",
                )?
                .query_map(params![capability, now, limit], |row| row.get(0))?
                .collect()
            }
        })
        .await
    }

    /// The sender has seen the notice for `id` to `recipient`; forget it.
    pub(crate) async fn dismiss(
        &self,
        sender: PublicKey,
        recipient: PublicKey,
        id: EnvelopeId,
    ) -> Result<bool, StoreError> {
        self.call(move |conn| {
            let removed = conn
                .prepare_cached(
                    "DELETE FROM expired WHERE sender = ?1 AND recipient = ?2 AND id = ?3",
                )?
                .execute(params![
                    sender.as_bytes(),
                    recipient.as_bytes(),
                    id.as_bytes()
                ])?;
            Ok((removed > 0, 0))
        })
        .await
    }
}

/// Deletes `id` from `recipient`'s queue, keeping a tombstone until it
/// would have expired; whether an envelope was removed.
fn ack_one(conn: &Connection, recipient: &PublicKey, id: &EnvelopeId) -> rusqlite::Result<bool> {
    let removed: Option<(Vec<u8>, i64)> = conn
        .prepare_cached(
            "DELETE FROM envelopes WHERE recipient = ?1 AND id = ?2
             RETURNING sender, expires_at",
        )?
        .query_row(params![recipient.as_bytes(), id.as_bytes()], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let Some((sender, expires_at)) = removed else {
        return Ok(false);
    };
    adjust_depth(conn, recipient.as_bytes(), -1)?;
    conn.prepare_cached(
        "INSERT OR IGNORE INTO delivered (recipient, id, sender, forget_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        recipient.as_bytes(),
        id.as_bytes(),
        sender,
        expires_at
    ])?;
    Ok(true)
}

/// Envelopes queued for `recipient`, from the `depth` table (kept in step with
/// `envelopes` in the same transactions, so a put costs O(log n), not a count).
fn queue_depth(conn: &Connection, recipient: &PublicKey) -> rusqlite::Result<i64> {
    Ok(conn
        .prepare_cached("SELECT queued FROM depth WHERE recipient = ?1")?
        .query_row(params![recipient.as_bytes()], |row| row.get(0))
        .optional()?
        .unwrap_or(0))
}

fn adjust_depth(conn: &Connection, recipient: &[u8], delta: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO depth (recipient, queued) VALUES (?1, ?2)
         ON CONFLICT (recipient) DO UPDATE SET queued = queued + excluded.queued",
    )?
    .execute(params![recipient, delta])?;
    if delta < 0 {
        conn.prepare_cached("DELETE FROM depth WHERE recipient = ?1 AND queued <= 0")?
            .execute(params![recipient])?;
    }
    Ok(())
}

fn unwrap_shared(error: Arc<StoreError>) -> StoreError {
    Arc::try_unwrap(error).unwrap_or_else(|shared| match &*shared {
        StoreError::Commit(why) => StoreError::Commit(why.clone()),
        other => StoreError::Commit(other.to_string()),
    })
}

/// The reader's connection: the same database, read only.
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = connection(path)?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

/// A connection to the database with what the writer and the reader share.
fn connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // The planner must not look at bound values: where it does, SQLite
    // prepares a cached statement again each time a value changes.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(conn)
}

/// The reader thread: one read at a time, until every handle is gone.
fn read_loop(conn: &Connection, mut reads: mpsc::Receiver<ReadJob>) {
    while let Some(read) = reads.blocking_recv() {
        read(conn);
    }
    tracing::debug!("store reader thread finished");
}

/// The store thread: batch, run, commit, answer.
fn run(
    mut conn: Connection,
    mut jobs: mpsc::Receiver<Job>,
    queued: Arc<AtomicI64>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let (finishes, delta, outcome) = run_batch(&mut conn, batch.drain(..));
        metrics
            .store_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcome = outcome.map_err(Arc::new);
        if outcome.is_ok() && delta != 0 {
            let now = queued.fetch_add(delta, Ordering::Relaxed) + delta;
            metrics.queued.set(now);
        }
        for finish in finishes {
            finish(outcome.clone());
        }
    }
    tracing::debug!("store thread finished");
}

fn run_batch(
    conn: &mut Connection,
    batch: impl Iterator<Item = Job>,
) -> (Vec<Finish>, i64, Result<(), StoreError>) {
    let mut finishes = Vec::new();
    let mut delta = 0;
    // A request that cannot even be started is dropped: its caller's answer
    // channel closes and it sees an error.
    let mut tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(error) => return (finishes, 0, Err(StoreError::Sqlite(error))),
    };
    for job in batch {
        let Ok(savepoint) = tx.savepoint() else {
            continue;
        };
        let ran = job(&savepoint);
        let kept = if ran.ok {
            savepoint.commit().is_ok()
        } else {
            drop(savepoint);
            false
        };
        if kept {
            delta += ran.queued_delta;
            finishes.push(ran.finish);
        } else if ran.ok {
            // Its changes were rolled back although it succeeded: say so.
            let finish = ran.finish;
            finishes.push(Box::new(move |_| {
                finish(Err(Arc::new(StoreError::Commit(
                    "could not release a savepoint".into(),
                ))));
            }));
        } else {
            finishes.push(ran.finish);
        }
    }
    let committed = tx
        .commit()
        .map_err(|error| StoreError::Commit(error.to_string()));
    (finishes, delta, committed)
}

/// Creates the database file readable by its owner only, so that SQLite's
/// `-wal` and `-shm` files (which copy its mode) are private too.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version < 1 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS envelopes (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 recipient BLOB NOT NULL,
                 id BLOB NOT NULL,
                 sender BLOB NOT NULL,
                 payload BLOB NOT NULL,
                 received_at INTEGER NOT NULL,
                 expires_at INTEGER NOT NULL,
                 UNIQUE (recipient, id)
             );
             CREATE INDEX IF NOT EXISTS envelopes_by_recipient ON envelopes (recipient, seq);
             CREATE INDEX IF NOT EXISTS envelopes_by_expiry ON envelopes (expires_at);
             CREATE TABLE IF NOT EXISTS delivered (
                 recipient BLOB NOT NULL,
                 id BLOB NOT NULL,
                 sender BLOB NOT NULL,
                 forget_at INTEGER NOT NULL,
                 PRIMARY KEY (recipient, id)
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS delivered_by_forget ON delivered (forget_at);
             CREATE TABLE IF NOT EXISTS expired (
                 sender BLOB NOT NULL,
                 recipient BLOB NOT NULL,
                 id BLOB NOT NULL,
                 expired_at INTEGER NOT NULL,
                 forget_at INTEGER NOT NULL,
                 PRIMARY KEY (sender, recipient, id)
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS expired_by_forget ON expired (forget_at);
             CREATE TABLE IF NOT EXISTS depth (
                 recipient BLOB PRIMARY KEY,
                 queued INTEGER NOT NULL
             ) WITHOUT ROWID;
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    if version < 2 {
        // The opt-in directory: one signed entry per key that chose to be
        // listed, and its capability tags to find it by.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS directory (
                 key BLOB PRIMARY KEY,
                 published_at INTEGER NOT NULL,
                 listed_until INTEGER NOT NULL,
                 forget_at INTEGER NOT NULL,
                 entry BLOB NOT NULL
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS directory_by_forget ON directory (forget_at);
             CREATE TABLE IF NOT EXISTS directory_tags (
                 tag TEXT NOT NULL,
                 key BLOB NOT NULL,
                 PRIMARY KEY (tag, key)
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS directory_tags_by_key ON directory_tags (key);
             PRAGMA user_version = 2;
             COMMIT;",
        )?;
    }
    if version < 3 {
        // Each sender's share of a recipient's queue is counted from this
        // index (only once the queue is long enough to matter).
        conn.execute_batch(
            "BEGIN;
             CREATE INDEX IF NOT EXISTS envelopes_by_sender ON envelopes (recipient, sender);
             PRAGMA user_version = 3;
             COMMIT;",
        )?;
    }
    Ok(())
}

fn relay_id(conn: &Connection) -> Result<RelayId, StoreError> {
    let existing: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key = 'relay_id'", [], |row| {
            row.get(0)
        })
        .optional()?;
    if let Some(bytes) = existing
        && let Ok(bytes) = <[u8; 16]>::try_from(bytes.as_slice())
    {
        return Ok(RelayId::from_bytes(bytes));
    }
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Open(format!("no randomness for the relay id: {e}")))?;
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('relay_id', ?1)",
        params![bytes.as_slice()],
    )?;
    Ok(RelayId::from_bytes(bytes))
}
