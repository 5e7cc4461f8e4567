//! The PostgreSQL store: the queues of a relay cluster, shared by its nodes.
//!
//! Every node serves any key. The guarantees are SQLite's: a write is
//! answered only after its commit, ids are idempotent, an ack deletes and
//! leaves a tombstone, and expiry turns envelopes into notices.
//!
//! - **Group commit.** Writes wait in a bounded channel; the node's one
//!   writer task takes all that are waiting, sorts them by recipient, and
//!   runs them in one transaction, pipelined on one connection: one round
//!   trip and one commit for the lot (and while it commits, the next batch
//!   gathers). Each write is one call of a PL/pgSQL
//!   function that answers with an outcome rather than an error, so one
//!   refused write cannot undo another; if the transaction fails anyway (a
//!   deadlock, a damaged row), each write runs again on its own.
//! - **Order.** Every change to a recipient's queue first locks that
//!   recipient's `depth` row, so changes to one queue happen one at a time
//!   and its `seq` numbers are committed in increasing order: a reader
//!   whose cursor passed `seq` N never later finds a new envelope below N.
//!   Writers lock rows in ascending recipient order, so two batches cannot
//!   deadlock.
//! - **Wake-ups.** A stored envelope sends `NOTIFY agentwire_deliver` inside
//!   its transaction (delivered on commit), and a sweep sends
//!   `agentwire_notice`. Each node listens on a connection of its own and
//!   wakes the recipient's (or sender's) connections if it has any. Each
//!   node also checks every few seconds for envelopes and notices that
//!   arrived since its last check, in case a notification was lost (the
//!   listener reconnecting wakes everyone for the same reason).
//! - **Expiry** runs on one node at a time, under an advisory lock.
//! - **Schema** changes are numbered migrations, applied at start under an
//!   advisory lock by whichever node starts first.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use agentwire_wire::{EnvelopeId, PublicKey, RelayId};
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime,
};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::{
    ExpiryNotice, ListOutcome, NewEnvelope, NewListing, PutOutcome, Queued, SWEEP_BATCH,
    StoreError, from_sql_time, to_array, to_sql_time,
};
use crate::config::PostgresConfig;
use crate::metrics::Metrics;
use crate::server::now_ms;
use crate::wakers::Wakers;

/// Writes waiting for a writer, at most; senders wait beyond this.
const STORE_QUEUE: usize = 4096;
/// Writes run in one transaction, at most.
const MAX_BATCH: usize = 512;
/// How long a request waits for a pooled connection, or for a new one to
/// open, before it is refused as unavailable.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection attempt may take (unless the URL says otherwise).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `/health` trusts its last look at the database.
const HEALTH_CACHE: Duration = Duration::from_secs(1);
/// How long `/health` waits for the database before calling it unreachable.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// The listener's wait before reconnecting, doubled up to the maximum.
const LISTEN_RETRY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// Recipients one periodic check wakes, at most; beyond that it wakes all.
const CHECK_LIMIT: i64 = 10_000;
/// Every this many checks, the queued count is read again from the
/// database (other nodes change it too).
const RECOUNT_EVERY: u32 = 5;

/// First key of the advisory locks this store takes (two-key form: "aw").
const LOCK_CLASS: i32 = 0x6177;
/// Second key of the lock around migrations.
const LOCK_MIGRATE: i32 = 1;

/// Notification channels.
const DELIVER_CHANNEL: &str = "agentwire_deliver";
const NOTICE_CHANNEL: &str = "agentwire_notice";

/// The schema, one migration per version, applied in order. A released
/// migration is never edited: changes come as a new one.
const MIGRATIONS: &[&str] = &[include_str!("postgres_v1.sql")];

/// Outcome codes of `agentwire.put`.
const PUT_OUTCOMES: [PutOutcome; 5] = [
    PutOutcome::Stored,
    PutOutcome::Duplicate,
    PutOutcome::IdConflict,
    PutOutcome::QueueFull,
    PutOutcome::SenderShareFull,
];
/// Outcome codes of `agentwire.list`.
const LIST_OUTCOMES: [ListOutcome; 3] =
    [ListOutcome::Stored, ListOutcome::Stale, ListOutcome::Full];

const PUT_SQL: &str = "SELECT agentwire.put($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const ACK_SQL: &str = "SELECT agentwire.ack($1, $2)";
const LIST_SQL: &str = "SELECT agentwire.list($1, $2, $3, $4, $5, $6, $7)";
const DISMISS_SQL: &str =
    "DELETE FROM agentwire.expired WHERE sender = $1 AND recipient = $2 AND id = $3";
const SWEEP_SQL: &str = "SELECT o_sender, o_recipient, o_id FROM agentwire.sweep($1, $2, $3, $4)";
const FETCH_SQL: &str = "SELECT seq, id, sender, received_at, payload FROM agentwire.envelopes
     WHERE recipient = $1 AND seq > $2 AND expires_at > $3 ORDER BY seq LIMIT $4";
const DEPTH_SQL: &str = "SELECT queued FROM agentwire.depth WHERE recipient = $1";
const NOTICES_SQL: &str = "SELECT recipient, id, expired_at FROM agentwire.expired
     WHERE sender = $1 ORDER BY expired_at LIMIT $2";
const LOOKUP_ANY_SQL: &str = "SELECT entry FROM agentwire.directory WHERE listed_until > $1
     ORDER BY published_at DESC LIMIT $2";
const LOOKUP_TAG_SQL: &str = "SELECT d.entry FROM agentwire.directory_tags t
     JOIN agentwire.directory d ON d.key = t.key
     WHERE t.tag = $1 AND d.listed_until > $2 ORDER BY d.published_at DESC LIMIT $3";
const QUEUED_SQL: &str = "SELECT coalesce(sum(queued), 0)::bigint FROM agentwire.depth";
const NEWEST_SQL: &str = "SELECT coalesce(max(seq), 0) FROM agentwire.envelopes";
const CHECK_DELIVERIES_SQL: &str = "SELECT recipient, max(seq) FROM agentwire.envelopes
     WHERE seq > $1 GROUP BY recipient LIMIT $2";
const CHECK_NOTICES_SQL: &str =
    "SELECT DISTINCT sender FROM agentwire.expired WHERE expired_at >= $1 LIMIT $2";

/// A write for the writer, with where its answer goes.
enum Write {
    Put {
        envelope: NewEnvelope,
        max_queue: u32,
        max_per_sender: u32,
        answer: oneshot::Sender<Result<PutOutcome, StoreError>>,
    },
    Ack {
        recipient: PublicKey,
        ids: Vec<EnvelopeId>,
        answer: oneshot::Sender<Result<usize, StoreError>>,
    },
    Dismiss {
        sender: PublicKey,
        recipient: PublicKey,
        id: EnvelopeId,
        answer: oneshot::Sender<Result<bool, StoreError>>,
    },
    List {
        listing: NewListing,
        max_entries: u32,
        answer: oneshot::Sender<Result<ListOutcome, StoreError>>,
    },
}

/// The writes' statements, prepared on one connection.
struct Statements {
    put: tokio_postgres::Statement,
    ack: tokio_postgres::Statement,
    dismiss: tokio_postgres::Statement,
    list: tokio_postgres::Statement,
}

impl Statements {
    /// Prepares them on `client`'s connection (once; then from its cache).
    async fn prepare(client: &impl GenericClient) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            put: client.prepare_cached(PUT_SQL).await?,
            ack: client.prepare_cached(ACK_SQL).await?,
            dismiss: client.prepare_cached(DISMISS_SQL).await?,
            list: client.prepare_cached(LIST_SQL).await?,
        })
    }
}

/// What a write did.
enum Done {
    Put(PutOutcome),
    Acked(usize),
    Dismissed(bool),
    Listed(ListOutcome),
    /// A function answered with a code this relay does not know.
    Unknown(i32),
}

impl Write {
    /// The order writes take locks in within a transaction: queue changes by
    /// recipient first, then directory entries by key, then notices.
    fn lock_order(&self) -> (u8, &[u8]) {
        match self {
            Write::Put { envelope, .. } => (0, envelope.recipient.as_bytes()),
            Write::Ack { recipient, .. } => (0, recipient.as_bytes()),
            Write::List { listing, .. } => (1, listing.key.as_bytes()),
            Write::Dismiss { sender, .. } => (2, sender.as_bytes()),
        }
    }

    /// Runs the write with `statements` (prepared on `client`'s connection).
    async fn run(
        &self,
        client: &impl GenericClient,
        statements: &Statements,
        node: &str,
    ) -> Result<Done, tokio_postgres::Error> {
        match self {
            Write::Put {
                envelope: e,
                max_queue,
                max_per_sender,
                ..
            } => {
                let statement = &statements.put;
                let row = client
                    .query_one(
                        statement,
                        &[
                            &e.recipient.as_bytes().as_slice(),
                            &e.id.as_bytes().as_slice(),
                            &e.sender.as_bytes().as_slice(),
                            &e.payload,
                            &to_sql_time(e.received_at_ms),
                            &to_sql_time(e.expires_at_ms),
                            &i64::from(*max_queue),
                            &i64::from(*max_per_sender),
                            &node,
                        ],
                    )
                    .await?;
                let code = row.get(0);
                Ok(outcome(&PUT_OUTCOMES, code).map_or(Done::Unknown(code), Done::Put))
            }
            Write::Ack { recipient, ids, .. } => {
                let statement = &statements.ack;
                let ids: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes().as_slice()).collect();
                let row = client
                    .query_one(statement, &[&recipient.as_bytes().as_slice(), &ids])
                    .await?;
                let removed: i32 = row.get(0);
                Ok(Done::Acked(usize::try_from(removed).unwrap_or(0)))
            }
            Write::Dismiss {
                sender,
                recipient,
                id,
                ..
            } => {
                let statement = &statements.dismiss;
                let removed = client
                    .execute(
                        statement,
                        &[
                            &sender.as_bytes().as_slice(),
                            &recipient.as_bytes().as_slice(),
                            &id.as_bytes().as_slice(),
                        ],
                    )
                    .await?;
                Ok(Done::Dismissed(removed > 0))
            }
            Write::List {
                listing: l,
                max_entries,
                ..
            } => {
                let statement = &statements.list;
                let row = client
                    .query_one(
                        statement,
                        &[
                            &l.key.as_bytes().as_slice(),
                            &to_sql_time(l.published_at_ms),
                            &to_sql_time(l.listed_until_ms),
                            &to_sql_time(l.forget_at_ms),
                            &l.entry,
                            &l.capabilities,
                            &i64::from(*max_entries),
                        ],
                    )
                    .await?;
                let code = row.get(0);
                Ok(outcome(&LIST_OUTCOMES, code).map_or(Done::Unknown(code), Done::Listed))
            }
        }
    }

    /// The change to the number of queued envelopes that `done` made.
    fn queued_delta(done: &Done) -> i64 {
        match done {
            Done::Put(PutOutcome::Stored) => 1,
            Done::Acked(removed) => -i64::try_from(*removed).unwrap_or(0),
            _ => 0,
        }
    }

    /// Sends the answer (a caller that stopped waiting is no one's concern).
    fn answer(self, result: Result<Done, StoreError>) {
        match self {
            Write::Put { answer, .. } => {
                let _ = answer.send(result.and_then(|done| match done {
                    Done::Put(outcome) => Ok(outcome),
                    other => Err(mismatch(&other)),
                }));
            }
            Write::Ack { answer, .. } => {
                let _ = answer.send(result.and_then(|done| match done {
                    Done::Acked(removed) => Ok(removed),
                    other => Err(mismatch(&other)),
                }));
            }
            Write::Dismiss { answer, .. } => {
                let _ = answer.send(result.and_then(|done| match done {
                    Done::Dismissed(removed) => Ok(removed),
                    other => Err(mismatch(&other)),
                }));
            }
            Write::List { answer, .. } => {
                let _ = answer.send(result.and_then(|done| match done {
                    Done::Listed(outcome) => Ok(outcome),
                    other => Err(mismatch(&other)),
                }));
            }
        }
    }
}

/// The error for an answer that does not fit its write (an unknown outcome
/// code: a schema newer than this relay).
fn mismatch(done: &Done) -> StoreError {
    let code = match done {
        Done::Unknown(code) => *code,
        _ => -1,
    };
    StoreError::Postgres(format!(
        "the database answered with outcome {code}, which this relay does not know"
    ))
}

/// The outcome with code `code`.
fn outcome<T: Copy>(outcomes: &[T], code: i32) -> Option<T> {
    usize::try_from(code)
        .ok()
        .and_then(|i| outcomes.get(i).copied())
}

/// What the store's handles and its background tasks share.
struct Shared {
    /// Envelopes queued across the cluster: this node's changes since its
    /// last recount, on top of that recount.
    queued: AtomicI64,
    metrics: Arc<Metrics>,
    /// The last look at the database, for `/health`.
    health: std::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    /// This node's id in notifications, so that it skips its own.
    node: String,
}

impl Shared {
    fn add_queued(&self, delta: i64) {
        if delta != 0 {
            let now = self.queued.fetch_add(delta, Ordering::Relaxed) + delta;
            self.metrics.queued.set(now);
        }
    }

    fn set_queued(&self, queued: i64) {
        self.queued.store(queued, Ordering::Relaxed);
        self.metrics.queued.set(queued);
    }
}

/// Handle to the store. Cloning is cheap; the writer ends when the last
/// handle is dropped (after finishing what was asked of them).
#[derive(Clone)]
pub(crate) struct Store {
    pool: Pool,
    writes: mpsc::Sender<Write>,
    shared: Arc<Shared>,
}

/// The store's tasks, to be awaited after the last [`Store`] handle is gone.
pub(crate) struct Workers {
    writer: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Workers {
    /// Waits until the writer has answered every write, then stops the
    /// listener and the periodic check.
    pub(crate) async fn finish(self) {
        if self.writer.await.is_err() {
            tracing::error!("the store writer panicked");
        }
        self.stop.cancel();
        for task in self.background {
            let _ = task.await;
        }
    }
}

impl Store {
    /// Connects, applies any migrations, reads (or sets) the cluster's relay
    /// id, and starts the writer, the listener and the periodic check.
    pub(crate) async fn open(
        config: &PostgresConfig,
        metrics: Arc<Metrics>,
        wakers: Arc<Wakers>,
    ) -> Result<(Store, Workers, RelayId), StoreError> {
        let (pg, tls) = connect_config(config)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Tls::Plain => Manager::from_config(pg.clone(), NoTls, manager_config),
            Tls::Rustls(tls) => Manager::from_config(pg.clone(), tls.clone(), manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Open(format!("cannot make the connection pool: {e}")))?;

        let mut client = pool
            .get()
            .await
            .map_err(|e| StoreError::Open(format!("cannot connect: {}", pool_error(e))))?;
        migrate(&mut client).await?;
        let relay_id = relay_id(&client).await?;
        let queued: i64 = client
            .query_one(QUEUED_SQL, &[])
            .await
            .map_err(pg_error)?
            .get(0);
        let newest: i64 = client
            .query_one(NEWEST_SQL, &[])
            .await
            .map_err(pg_error)?
            .get(0);
        drop(client);

        let mut node = [0u8; 8];
        getrandom::fill(&mut node)
            .map_err(|e| StoreError::Open(format!("no randomness for the node id: {e}")))?;
        let shared = Arc::new(Shared {
            queued: AtomicI64::new(queued),
            metrics: metrics.clone(),
            health: std::sync::Mutex::new(None),
            node: node.iter().map(|b| format!("{b:02x}")).collect(),
        });
        shared.set_queued(queued);

        let (writes, rx) = mpsc::channel(STORE_QUEUE);
        let writer = tokio::spawn(writer(pool.clone(), rx, shared.clone()));
        let stop = CancellationToken::new();
        let background = vec![
            tokio::spawn(listen(
                pg,
                tls,
                shared.clone(),
                wakers.clone(),
                stop.clone(),
            )),
            tokio::spawn(check(
                pool.clone(),
                config.check_interval,
                newest,
                shared.clone(),
                wakers,
                stop.clone(),
            )),
        ];
        Ok((
            Store {
                pool,
                writes,
                shared,
            },
            Workers {
                writer,
                background,
                stop,
            },
            relay_id,
        ))
    }

    /// Whether the database answers, looked at most once a second.
    pub(crate) async fn check(&self) -> Result<(), StoreError> {
        if let Some((at, result)) = &*lock(&self.shared.health)
            && at.elapsed() < HEALTH_CACHE
        {
            return result.clone().map_err(StoreError::Unavailable);
        }
        let result = match tokio::time::timeout(HEALTH_TIMEOUT, async {
            let client = self.pool.get().await.map_err(pool_error)?;
            client.simple_query("SELECT 1").await.map_err(pg_error)?;
            Ok::<(), StoreError>(())
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {} s", HEALTH_TIMEOUT.as_secs())),
        };
        *lock(&self.shared.health) = Some((Instant::now(), result.clone()));
        result.map_err(StoreError::Unavailable)
    }

    pub(crate) fn queued(&self) -> u64 {
        u64::try_from(self.shared.queued.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Hands a write to the writers and waits for its answer.
    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Write,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) async fn put(
        &self,
        envelope: NewEnvelope,
        max_queue: u32,
        max_per_sender: u32,
    ) -> Result<PutOutcome, StoreError> {
        self.write(|answer| Write::Put {
            envelope,
            max_queue,
            max_per_sender,
            answer,
        })
        .await
    }

    pub(crate) async fn ack(
        &self,
        recipient: PublicKey,
        id: EnvelopeId,
    ) -> Result<bool, StoreError> {
        Ok(self.ack_batch(recipient, vec![id]).await? > 0)
    }

    pub(crate) async fn ack_batch(
        &self,
        recipient: PublicKey,
        ids: Vec<EnvelopeId>,
    ) -> Result<usize, StoreError> {
        self.write(|answer| Write::Ack {
            recipient,
            ids,
            answer,
        })
        .await
    }

    pub(crate) async fn dismiss(
        &self,
        sender: PublicKey,
        recipient: PublicKey,
        id: EnvelopeId,
    ) -> Result<bool, StoreError> {
        self.write(|answer| Write::Dismiss {
            sender,
            recipient,
            id,
            answer,
        })
        .await
    }

    pub(crate) async fn list(
        &self,
        listing: NewListing,
        max_entries: u32,
    ) -> Result<ListOutcome, StoreError> {
        self.write(|answer| Write::List {
            listing,
            max_entries,
            answer,
        })
        .await
    }

    /// A pooled connection, or why there is none.
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    pub(crate) async fn sweep(
        &self,
        now_ms: u64,
        notice_ttl_ms: u64,
    ) -> Result<Vec<ExpiryNotice>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(SWEEP_SQL).await.map_err(pg_error)?;
        let rows = client
            .query(
                &statement,
                &[
                    &to_sql_time(now_ms),
                    &to_sql_time(now_ms.saturating_add(notice_ttl_ms)),
                    &i32::try_from(SWEEP_BATCH).unwrap_or(i32::MAX),
                    &self.shared.node,
                ],
            )
            .await
            .map_err(pg_error)?;
        let notices: Vec<ExpiryNotice> = rows
            .iter()
            .map(|row| ExpiryNotice {
                sender: PublicKey::from_bytes(to_array(row.get(0))),
                recipient: PublicKey::from_bytes(to_array(row.get(1))),
                id: EnvelopeId::from_bytes(to_array(row.get(2))),
                expired_at_ms: now_ms,
            })
            .collect();
        self.shared
            .add_queued(-i64::try_from(notices.len()).unwrap_or(0));
        Ok(notices)
    }

    pub(crate) async fn fetch(
        &self,
        recipient: PublicKey,
        after_seq: i64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(FETCH_SQL).await.map_err(pg_error)?;
        let rows = client
            .query(
                &statement,
                &[
                    &recipient.as_bytes().as_slice(),
                    &after_seq,
                    &to_sql_time(now_ms),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .into_iter()
            .map(|row| Queued {
                seq: row.get(0),
                id: EnvelopeId::from_bytes(to_array(row.get(1))),
                sender: PublicKey::from_bytes(to_array(row.get(2))),
                received_at_ms: from_sql_time(row.get(3)),
                payload: row.get(4),
            })
            .collect())
    }

    pub(crate) async fn depth(&self, recipient: PublicKey) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(DEPTH_SQL).await.map_err(pg_error)?;
        let row = client
            .query_opt(&statement, &[&recipient.as_bytes().as_slice()])
            .await
            .map_err(pg_error)?;
        Ok(row.map_or(0, |row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
    }

    pub(crate) async fn notices(
        &self,
        sender: PublicKey,
        limit: usize,
    ) -> Result<Vec<ExpiryNotice>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(NOTICES_SQL).await.map_err(pg_error)?;
        let rows = client
            .query(
                &statement,
                &[
                    &sender.as_bytes().as_slice(),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .into_iter()
            .map(|row| ExpiryNotice {
                sender,
                recipient: PublicKey::from_bytes(to_array(row.get(0))),
                id: EnvelopeId::from_bytes(to_array(row.get(1))),
                expired_at_ms: from_sql_time(row.get(2)),
            })
            .collect())
    }

    pub(crate) async fn lookup(
        &self,
        capability: String,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let now = to_sql_time(now_ms);
        let rows = if capability.is_empty() {
            let statement = client
                .prepare_cached(LOOKUP_ANY_SQL)
                .await
                .map_err(pg_error)?;
            client.query(&statement, &[&now, &limit]).await
        } else {
            let statement = client
                .prepare_cached(LOOKUP_TAG_SQL)
                .await
                .map_err(pg_error)?;
            client.query(&statement, &[&capability, &now, &limit]).await
        }
        .map_err(pg_error)?;
        Ok(rows.into_iter().map(|row| row.get(0)).collect())
    }
}

/// The node's one writer: take what is waiting, run it in one transaction,
/// answer. One transaction at a time: while it commits, the next batch
/// gathers. Four writers measured slower (relay-bench, 1 and 2 nodes, 4 and
/// 64 recipients): concurrent batches for the same recipients wait on each
/// other's queue locks, and the database's CPU goes to the waiting.
async fn writer(pool: Pool, mut writes: mpsc::Receiver<Write>, shared: Arc<Shared>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = writes.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match writes.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        // A stable sort: one sender's writes to one recipient keep their
        // order.
        batch.sort_by(|a, b| a.lock_order().cmp(&b.lock_order()));
        let started = Instant::now();
        run_batch(&pool, &mut batch, &shared).await;
        shared
            .metrics
            .store_commit_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    tracing::debug!("store writer finished");
}

async fn run_batch(pool: &Pool, batch: &mut Vec<Write>, shared: &Shared) {
    let mut client = match pool.get().await {
        Ok(client) => client,
        Err(error) => {
            let error = pool_error(error).to_string();
            for write in batch.drain(..) {
                write.answer(Err(StoreError::Unavailable(error.clone())));
            }
            return;
        }
    };
    let error = match in_one_transaction(&mut client, batch, &shared.node).await {
        Ok(results) => {
            let delta = results.iter().map(Write::queued_delta).sum();
            shared.add_queued(delta);
            for (write, done) in batch.drain(..).zip(results) {
                write.answer(Ok(done));
            }
            return;
        }
        Err(error) => error,
    };
    if is_unavailable(&error) {
        let error = error.to_string();
        for write in batch.drain(..) {
            write.answer(Err(StoreError::Unavailable(error.clone())));
        }
        return;
    }
    // One write's failure (or a deadlock) undid them all: run each on its
    // own, so that only a failing write fails.
    tracing::debug!(%error, writes = batch.len(), "a batch failed; running its writes one by one");
    let statements = match Statements::prepare(&client).await {
        Ok(statements) => statements,
        Err(error) => {
            let error = pg_error(error).to_string();
            for write in batch.drain(..) {
                write.answer(Err(StoreError::Postgres(error.clone())));
            }
            return;
        }
    };
    for write in batch.drain(..) {
        let result = write
            .run(&client, &statements, &shared.node)
            .await
            .map_err(pg_error);
        if let Ok(done) = &result {
            shared.add_queued(Write::queued_delta(done));
        }
        write.answer(result);
    }
}

/// Runs every write of `batch`, pipelined, in one transaction, and commits.
async fn in_one_transaction(
    client: &mut deadpool_postgres::Client,
    batch: &[Write],
    node: &str,
) -> Result<Vec<Done>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // Prepared first, so that each write sends its query when first polled:
    // the queries go out, and take their locks, in the batch's order.
    let statements = Statements::prepare(&tx).await?;
    let results =
        futures_util::future::join_all(batch.iter().map(|write| write.run(&tx, &statements, node)))
            .await;
    let results = results.into_iter().collect::<Result<Vec<_>, _>>();
    match results {
        Ok(results) => {
            tx.commit().await?;
            Ok(results)
        }
        Err(error) => {
            let _ = tx.rollback().await;
            Err(error)
        }
    }
}

/// The listener: wake local connections for what other nodes stored, and
/// everyone after (re)connecting, since notifications may have been missed.
async fn listen(
    pg: tokio_postgres::Config,
    tls: Tls,
    shared: Arc<Shared>,
    wakers: Arc<Wakers>,
    stop: CancellationToken,
) {
    let mut retry = LISTEN_RETRY.0;
    loop {
        match listen_once(&pg, &tls, &shared, &wakers, &stop).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "lost the notification listener; reconnecting");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(LISTEN_RETRY.1);
    }
}

/// Listens until `stop` (`Ok`) or until the connection fails.
async fn listen_once(
    pg: &tokio_postgres::Config,
    tls: &Tls,
    shared: &Shared,
    wakers: &Wakers,
    stop: &CancellationToken,
) -> Result<(), String> {
    let (tx, mut notifications) = mpsc::channel(1024);
    let (client, drive) = match tls {
        Tls::Plain => {
            let (client, connection) = pg.connect(NoTls).await.map_err(|e| e.to_string())?;
            (client, tokio::spawn(forward_notifications(connection, tx)))
        }
        Tls::Rustls(tls) => {
            let (client, connection) = pg.connect(tls.clone()).await.map_err(|e| e.to_string())?;
            (client, tokio::spawn(forward_notifications(connection, tx)))
        }
    };
    client
        .batch_execute(&format!(
            "LISTEN {DELIVER_CHANNEL}; LISTEN {NOTICE_CHANNEL}"
        ))
        .await
        .map_err(|e| e.to_string())?;
    shared.metrics.listener_connects.inc();
    wakers.wake_all();
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                drive.abort();
                return Ok(());
            }
            notification = notifications.recv() => match notification {
                Some(notification) => {
                    shared.metrics.notifications.inc();
                    on_notification(notification.channel(), notification.payload(), shared, wakers);
                }
                None => break,
            },
        }
    }
    match drive.await {
        Ok(Err(error)) => Err(error.to_string()),
        _ => Err("the connection ended".into()),
    }
}

/// Drives the listener's connection, handing its notifications over until
/// it ends (`Ok`) or fails.
async fn forward_notifications<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    tx: mpsc::Sender<tokio_postgres::Notification>,
) -> Result<(), tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(message) = messages.next().await {
        match message {
            Ok(AsyncMessage::Notification(notification)) => {
                if tx.send(notification).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// A payload is this node's id, `:`, and a key in hex.
fn on_notification(channel: &str, payload: &str, shared: &Shared, wakers: &Wakers) {
    let Some((node, key)) = payload.split_once(':') else {
        return;
    };
    if node == shared.node {
        return;
    }
    let Some(key) = PublicKey::from_hex(key) else {
        return;
    };
    match channel {
        DELIVER_CHANNEL => {
            wakers.wake_deliveries(&key);
        }
        NOTICE_CHANNEL => {
            wakers.wake_notices(&key);
        }
        _ => {}
    }
}

/// The periodic check: wakes connections for envelopes and notices that
/// arrived since the check before last (the overlap covers a transaction
/// that took its `seq` before the last check and committed after it), and
/// keeps the queued count and pool figures current.
async fn check(
    pool: Pool,
    interval: Duration,
    newest: i64,
    shared: Arc<Shared>,
    wakers: Arc<Wakers>,
    stop: CancellationToken,
) {
    let mut seqs = [newest, newest];
    let mut since_ms = [now_ms(), now_ms()];
    let mut round = 0u32;
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let status = pool.status();
        let metrics = &shared.metrics;
        metrics
            .pool_connections
            .set(i64::try_from(status.size).unwrap_or(i64::MAX));
        metrics
            .pool_idle
            .set(i64::try_from(status.available).unwrap_or(i64::MAX));
        metrics
            .pool_waiting
            .set(i64::try_from(status.waiting).unwrap_or(i64::MAX));
        let started_ms = now_ms();
        match check_once(
            &pool,
            seqs[0],
            since_ms[0],
            round.is_multiple_of(RECOUNT_EVERY),
            &shared,
            &wakers,
        )
        .await
        {
            Ok(newest) => {
                seqs = [seqs[1], newest.max(seqs[1])];
                since_ms = [since_ms[1], started_ms];
                round = round.wrapping_add(1);
            }
            Err(error) => tracing::debug!(%error, "the periodic check failed"),
        }
    }
}

async fn check_once(
    pool: &Pool,
    after_seq: i64,
    since_ms: u64,
    recount: bool,
    shared: &Shared,
    wakers: &Wakers,
) -> Result<i64, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let rows = client
        .query(CHECK_DELIVERIES_SQL, &[&after_seq, &CHECK_LIMIT])
        .await
        .map_err(pg_error)?;
    let mut newest = after_seq;
    if i64::try_from(rows.len()).unwrap_or(i64::MAX) >= CHECK_LIMIT {
        wakers.wake_all();
    }
    for row in &rows {
        let key = PublicKey::from_bytes(to_array(row.get(0)));
        newest = newest.max(row.get(1));
        if wakers.wake_deliveries(&key) {
            shared.metrics.check_wakeups.inc();
        }
    }
    let rows = client
        .query(CHECK_NOTICES_SQL, &[&to_sql_time(since_ms), &CHECK_LIMIT])
        .await
        .map_err(pg_error)?;
    for row in &rows {
        wakers.wake_notices(&PublicKey::from_bytes(to_array(row.get(0))));
    }
    if recount {
        let queued: i64 = client
            .query_one(QUEUED_SQL, &[])
            .await
            .map_err(pg_error)?
            .get(0);
        shared.set_queued(queued);
    }
    Ok(newest)
}

/// How a node's connections to the database are made.
#[derive(Clone)]
enum Tls {
    /// In the clear (`sslmode` absent, `disable` or `prefer`).
    Plain,
    /// TLS, the server's certificate verified for the host name against the
    /// Web PKI roots and any `sslrootcert` (`sslmode=require`,
    /// `verify-ca` or `verify-full`).
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tls::Plain => "Plain",
            Tls::Rustls(_) => "Rustls",
        })
    }
}

/// The driver's configuration and how to connect: the URL, with what it
/// leaves out taken from libpq's environment variables.
fn connect_config(config: &PostgresConfig) -> Result<(tokio_postgres::Config, Tls), StoreError> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (url, root_file) = take_tls_options(config.url());
    let mut pg: tokio_postgres::Config = url.parse().map_err(|e| {
        StoreError::Open(format!(
            "{} is not a PostgreSQL URL the relay understands: {e}",
            config.redacted_url()
        ))
    })?;
    let root_file = root_file.or_else(|| env("PGSSLROOTCERT"));
    let tls = if pg.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        Tls::Rustls(rustls_connector(root_file.as_deref())?)
    } else if let Some(file) = root_file {
        return Err(StoreError::Open(format!(
            "a root certificate is given ({file}) but the URL does not ask for TLS: \
             add sslmode=verify-full"
        )));
    } else {
        Tls::Plain
    };
    if pg.get_hosts().is_empty() {
        pg.host(env("PGHOST").as_deref().unwrap_or("localhost"));
    }
    if pg.get_ports().is_empty()
        && let Some(port) = env("PGPORT")
    {
        let port = port
            .parse()
            .map_err(|_| StoreError::Open(format!("PGPORT={port} is not a port number")))?;
        pg.port(port);
    }
    if pg.get_user().is_none() {
        match env("PGUSER").or_else(|| env("USER")) {
            Some(user) => pg.user(user),
            None => {
                return Err(StoreError::Open(
                    "no PostgreSQL user: give one in the URL (postgres://USER@HOST/DB) or in PGUSER"
                        .into(),
                ));
            }
        };
    }
    if pg.get_password().is_none()
        && let Some(password) = env("PGPASSWORD")
    {
        pg.password(password);
    }
    if pg.get_dbname().is_none()
        && let Some(dbname) = env("PGDATABASE")
    {
        pg.dbname(dbname);
    }
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(CONNECT_TIMEOUT);
    }
    if pg.get_application_name().is_none() {
        pg.application_name("agentwire-relay");
    }
    // A dead database host is noticed within about half a minute, not the
    // system's default of two hours.
    pg.keepalives_idle(Duration::from_secs(10));
    Ok((pg, tls))
}

/// `url` without the TLS options the driver does not parse, and the root
/// certificate file they named: `sslrootcert=FILE` is taken out, and
/// `sslmode=verify-ca` or `verify-full` become `require` (whose TLS here
/// always verifies the certificate and the host name).
fn take_tls_options(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut root = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslrootcert", file)) => root = Some(file.to_owned()),
            Some(("sslmode", "verify-ca" | "verify-full")) => {
                kept.push("sslmode=require".to_owned());
            }
            _ => kept.push(pair.to_owned()),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, root)
}

/// A TLS connector that trusts the Web PKI and the certificates (PEM) in
/// `root_file`.
fn rustls_connector(
    root_file: Option<&str>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(file) = root_file {
        let pem = std::fs::read(file).map_err(|e| {
            StoreError::Open(format!("cannot read the root certificate {file}: {e}"))
        })?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Open(format!("{file} is not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(StoreError::Open(format!("{file} holds no certificate")));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| {
                StoreError::Open(format!("a certificate in {file} is invalid: {e}"))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Open(format!("no TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

async fn migrate(client: &mut deadpool_postgres::Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_CLASS, &LOCK_MIGRATE],
    )
    .await
    .map_err(pg_error)?;
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning;
         CREATE SCHEMA IF NOT EXISTS agentwire;
         CREATE TABLE IF NOT EXISTS agentwire.schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await
    .map_err(|e| {
        StoreError::Open(format!(
            "cannot create the agentwire schema: {}",
            pg_error(e)
        ))
    })?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM agentwire.schema_migrations",
            &[],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    let latest = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    if current > latest {
        return Err(StoreError::Open(format!(
            "the database's schema is version {current}, newer than this relay's {latest}: \
             run the newer agentwire on every node"
        )));
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Open(format!(
                "schema migration {version} failed: {}",
                pg_error(e)
            ))
        })?;
        tx.execute(
            "INSERT INTO agentwire.schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(pg_error)?;
        tracing::info!(version, "applied a schema migration");
    }
    tx.commit().await.map_err(pg_error)
}

/// The cluster's relay id: the first node to start picks it.
async fn relay_id(client: &deadpool_postgres::Client) -> Result<RelayId, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Open(format!("no randomness for the relay id: {e}")))?;
    client
        .execute(
            "INSERT INTO agentwire.meta (key, value) VALUES ('relay_id', $1)
             ON CONFLICT (key) DO NOTHING",
            &[&bytes.as_slice()],
        )
        .await
        .map_err(pg_error)?;
    let stored: Vec<u8> = client
        .query_one(
            "SELECT value FROM agentwire.meta WHERE key = 'relay_id'",
            &[],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    let bytes = <[u8; 16]>::try_from(stored.as_slice())
        .map_err(|_| StoreError::Open("the relay id in agentwire.meta is not 16 bytes".into()))?;
    Ok(RelayId::from_bytes(bytes))
}

/// Whether `error` says the database is gone rather than that a statement
/// failed.
fn is_unavailable(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        None => error.as_db_error().is_none(),
        Some(code) => {
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS
        }
    }
}

fn pg_error(error: tokio_postgres::Error) -> StoreError {
    if is_unavailable(&error) {
        // The driver's own text ("error connecting to server") leaves the
        // cause (refused, timed out, no such host) to its source.
        StoreError::Unavailable(match std::error::Error::source(&error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        })
    } else {
        StoreError::Postgres(match error.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => error.to_string(),
        })
    }
}

fn pool_error(error: PoolError) -> StoreError {
    match error {
        PoolError::Backend(error) => pg_error(error),
        PoolError::Timeout(_) => StoreError::Unavailable(format!(
            "no connection to the database within {} s",
            POOL_TIMEOUT.as_secs()
        )),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_tls_options_are_refused_and_errors_never_show_the_password() {
        for url in [
            "postgres://relay:s3cret@db.example/agentwire?sslrootcert=/nonexistent/ca.pem&sslmode=verify-full",
            "postgres://relay:s3cret@db.example/agentwire?sslrootcert=/nonexistent/ca.pem",
            "postgres://relay:s3cret@db.example:notaport/agentwire",
        ] {
            let error = connect_config(&PostgresConfig::new(url)).unwrap_err();
            let text = error.to_string();
            assert!(!text.contains("s3cret"), "{text}");
            assert!(matches!(error, StoreError::Open(_)), "{text}");
        }
        let (pg, tls) = connect_config(&PostgresConfig::new(
            "postgres://relay:s3cret@db.example:5433/agentwire",
        ))
        .unwrap();
        assert!(matches!(tls, Tls::Plain));
        assert_eq!(pg.get_ports(), [5433]);
        assert_eq!(pg.get_user(), Some("relay"));
        assert_eq!(pg.get_dbname(), Some("agentwire"));
        assert_eq!(pg.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        let (_, tls) = connect_config(&PostgresConfig::new(
            "postgres://relay@db.example/agentwire?sslmode=verify-full&application_name=x",
        ))
        .unwrap();
        assert!(matches!(tls, Tls::Rustls(_)));
        assert_eq!(
            take_tls_options("postgres://h/d?sslmode=verify-ca&sslrootcert=/ca.pem"),
            (
                "postgres://h/d?sslmode=require".to_owned(),
                Some("/ca.pem".to_owned())
            )
        );
    }
}
