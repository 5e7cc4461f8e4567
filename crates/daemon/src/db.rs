//! The store's thread and its handle: every read and write of the daemon's
//! store runs on one thread that owns the SQLite connection. Callers send a
//! job (a closure over [`Tx`]) and await its answer; the thread takes every
//! job waiting, runs each in a savepoint of one transaction, commits once,
//! and only then answers them all (group commit: one fsync for a burst of
//! sends, receipts and state changes, from every identity at once). A job
//! that fails is rolled back alone; its caller gets its error.
//!
//! Jobs run in the order they were queued, so a job queued after another
//! sees its changes; [`Db::queue`] lets a caller queue a job while it holds
//! a lock and wait for the commit after letting go.
//!
//! [`Db::read`] runs a read on a second thread with its own read-only
//! connection, which sees the last commit and never waits behind the
//! writer's `fsync`. It is for reads on a message's path whose caller was
//! told of the change it reads after that change committed (the outbox pump
//! woken by a send, a reader woken by an arrival); anything that must see a
//! job queued but not yet committed uses [`Db::run`].

use std::sync::Arc;
use std::thread;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Store, StoreError, Tx};

/// Jobs waiting for the thread, at most (callers wait for room beyond it).
const QUEUE: usize = 4096;
/// Jobs committed together, at most.
const MAX_BATCH: usize = 1024;

/// What a job leaves to do once its transaction's fate is known.
type Finish = Box<dyn FnOnce(Result<(), Arc<StoreError>>) + Send>;
/// A job: runs on the thread; whether it succeeded, and its finish.
type Job = Box<dyn FnOnce(&Tx<'_>) -> (bool, Finish) + Send>;

/// A read for the reader thread; it sends its own answer.
type Read = Box<dyn FnOnce(&Tx<'_>) + Send>;

/// A handle to the store thread. Cloning is cheap.
#[derive(Clone)]
pub(crate) struct Db {
    /// `None` asks the thread to finish.
    jobs: mpsc::Sender<Option<Job>>,
    /// `None` asks the reader to finish.
    reads: mpsc::Sender<Option<Read>>,
}

/// The store's threads; [`DbThread::join`] waits for them after
/// [`Db::close`].
pub(crate) struct DbThread {
    writer: thread::JoinHandle<()>,
    reader: thread::JoinHandle<()>,
}

impl DbThread {
    /// Waits for the writer to finish its last batch and the reader its last
    /// read.
    pub(crate) fn join(self) {
        if self.writer.join().is_err() {
            tracing::error!("the store thread panicked");
        }
        if self.reader.join().is_err() {
            tracing::error!("the store reader thread panicked");
        }
    }
}

/// A queued job's answer, once committed.
pub(crate) struct Pending<T, E> {
    answer: oneshot::Receiver<Result<T, E>>,
}

impl<T, E: From<StoreError>> Pending<T, E> {
    /// The job's answer, after its transaction committed.
    pub(crate) async fn committed(self) -> Result<T, E> {
        self.answer.await.map_err(|_| StoreError::Closed)?
    }
}

impl Db {
    /// Starts the thread that owns `store` and the one that reads through
    /// `reader` (see [`Store::open_reader`]).
    pub(crate) fn spawn(store: Store, reader: Store) -> Result<(Db, DbThread), StoreError> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (reads, read_rx) = mpsc::channel(QUEUE);
        let writer = thread::Builder::new()
            .name("daemon-store".into())
            .spawn(move || run(store, rx))
            .map_err(StoreError::Thread)?;
        let reader = thread::Builder::new()
            .name("daemon-reader".into())
            .spawn(move || read_loop(&reader, read_rx))
            .map_err(StoreError::Thread)?;
        Ok((Db { jobs, reads }, DbThread { writer, reader }))
    }

    /// Runs the read `f` on the reader thread: it sees the last commit, not
    /// jobs still waiting for theirs.
    pub(crate) async fn read<T, E>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let read: Read = Box::new(move |tx| {
            let _ = reply.send(f(tx));
        });
        self.reads
            .send(Some(read))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on the store thread and returns its answer once committed.
    pub(crate) async fn run<T, E>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.queue(f).await?.committed().await
    }

    /// Queues `f` (waiting only for room in the queue); the returned
    /// [`Pending`] gives its answer once committed.
    pub(crate) async fn queue<T, E>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E> + Send + 'static,
    ) -> Result<Pending<T, E>, StoreError>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |tx| match f(tx) {
            Ok(value) => (
                true,
                Box::new(move |committed: Result<(), Arc<StoreError>>| {
                    let _ = reply.send(
                        committed
                            .map(|()| value)
                            .map_err(|e| E::from(StoreError::Commit(e))),
                    );
                }),
            ),
            Err(error) => (
                false,
                Box::new(move |_| {
                    let _ = reply.send(Err(error));
                }),
            ),
        });
        self.jobs
            .send(Some(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(Pending { answer })
    }

    /// Asks the thread to finish once the jobs queued so far are done; jobs
    /// queued later fail with [`StoreError::Closed`].
    pub(crate) async fn close(&self) {
        let _ = self.jobs.send(None).await;
        let _ = self.reads.send(None).await;
    }
}

/// The reader thread: one read at a time, until asked to finish or every
/// handle is gone.
fn read_loop(store: &Store, mut reads: mpsc::Receiver<Option<Read>>) {
    while let Some(Some(read)) = reads.blocking_recv() {
        read(&store.read());
    }
    tracing::debug!("store reader thread finished");
}

/// The store thread: batch, run, commit, answer; until every handle is gone.
fn run(mut store: Store, mut jobs: mpsc::Receiver<Option<Job>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut closing = false;
    while !closing && let Some(first) = jobs.blocking_recv() {
        match first {
            Some(job) => batch.push(job),
            None => break,
        }
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(Some(job)) => batch.push(job),
                Ok(None) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let (finishes, outcome) = store.batch(batch.drain(..));
        let outcome = outcome.map_err(Arc::new);
        if let Err(error) = &outcome {
            tracing::error!(%error, "a store commit failed; its requests get the error");
        }
        for finish in finishes {
            finish(outcome.clone());
        }
    }
    tracing::debug!("store thread finished");
}

impl Store {
    /// Runs each job in a savepoint of one transaction and commits; the
    /// jobs' finishes and the commit's outcome.
    fn batch(&mut self, jobs: impl Iterator<Item = Job>) -> (Vec<Finish>, Result<(), StoreError>) {
        let mut finishes = Vec::new();
        let outcome = self.write(|tx| {
            for job in jobs {
                if let Err(error) = tx.begin_job() {
                    // Not even begun: its caller sees the store closed.
                    tracing::error!(%error, "cannot begin a store job");
                    continue;
                }
                let (ok, finish) = job(tx);
                let kept = if ok { tx.keep_job() } else { tx.undo_job() };
                match kept {
                    Ok(()) => finishes.push(finish),
                    Err(error) => {
                        let error = Arc::new(error);
                        finishes.push(Box::new(move |_| finish(Err(error))));
                    }
                }
            }
            Ok::<_, StoreError>(())
        });
        (finishes, outcome)
    }
}
