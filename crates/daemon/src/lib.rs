//! The agentwire daemon: one per home. It holds the identities, their
//! end-to-end sessions and contacts, one relay connection per identity
//! (reconnecting on its own), and the local message store, and serves the
//! local API on a Unix socket in the home.
//!
//! Without a configured relay it runs the relay of `agentwire-relay` in
//! process on loopback, so agents on one machine need nothing else.

pub mod api;
pub mod client;
mod contact_book;
mod core;
mod db;
pub mod home;
mod identities;
mod link;
mod ops;
mod outgoing;
mod pairing;
mod receive;
mod recent;
mod redeem;
mod retention;
mod server;
pub mod store;
mod views;

pub use client::{ClientError, DaemonClient, Events, HeldMessages};
pub use core::{
    DEFAULT_INVITE_TTL, DEFAULT_MAX_MESSAGES, DEFAULT_OUTBOX_LIMIT, Daemon,
    MAX_MESSAGES_PER_REQUEST, MAX_SENT_PER_REQUEST, MAX_WAIT,
};
pub use home::{Home, HomeError};
pub use ops::Run;
pub use recent::RecentIds;

/// Why the daemon cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The home is unusable.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// A setting is not valid.
    #[error("{0}")]
    Config(String),
    /// The store cannot be opened.
    #[error("cannot open the daemon's store {path}: {source}")]
    Store {
        /// The store's file.
        path: String,
        /// What failed.
        source: store::StoreError,
    },
    /// Stored state does not load.
    #[error("the daemon's store is damaged: {0}")]
    Corrupt(String),
    /// The home's lock file cannot be opened or locked.
    #[error("cannot lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Another daemon holds the home and did not let go.
    #[error(
        "another daemon runs for {0} (it holds daemon.lock); stop it with `agentwire daemon stop`"
    )]
    Locked(String),
    /// The socket cannot be bound.
    #[error("cannot listen on {path}: {source}")]
    Socket {
        /// The socket path.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// A running daemon: its tasks, its socket and the home's lock. Dropping it
/// without [`DaemonHandle::shutdown`] cancels its tasks (they end at their
/// next await) but does not wait for them.
pub struct DaemonHandle {
    daemon: std::sync::Arc<Daemon>,
    socket: std::path::PathBuf,
    bound: Option<(u64, u64)>,
    /// Held for the daemon's life: the home's exclusive lock goes with it.
    _lock: std::fs::File,
}

impl DaemonHandle {
    /// Takes the home (waiting for a daemon that is still stopping), opens
    /// its store, listens on its socket and starts a relay link per identity.
    pub async fn spawn(home: Home) -> Result<DaemonHandle, DaemonError> {
        home.ensure()?;
        let lock = lock_home(&home).await?;
        let daemon = Daemon::open(home.clone())?;
        let socket = home.socket();
        let listener = server::bind(&socket)
            .await
            .map_err(|source| DaemonError::Socket {
                path: socket.display().to_string(),
                source,
            })?;
        let bound = socket_identity(&socket);
        tracing::info!(home = %home.root().display(), "daemon started");
        // Invites long expired are forgotten (they are also pruned whenever
        // one is made): a redemption of one is then a stranger's message.
        let now = core::now_ms();
        if let Err(error) = daemon.db.run(move |tx| tx.prune_invites(now)).await {
            tracing::warn!(%error, "cannot prune expired invites");
        }
        daemon.start_links().await;
        daemon.tasks.spawn(retention::sweep(daemon.clone()));
        daemon.tasks.spawn(server::serve(listener, daemon.clone()));
        Ok(DaemonHandle {
            daemon,
            socket,
            bound,
            _lock: lock,
        })
    }

    /// A client that calls this daemon in process (no socket, no JSON).
    pub fn client(&self) -> DaemonClient {
        DaemonClient::InProcess(self.daemon.clone())
    }

    /// Resolves when the daemon was asked to stop (`agentwire daemon stop`).
    pub async fn stop_requested(&self) {
        self.daemon.shutdown.cancelled().await;
    }

    /// Stops the daemon: its links and requests end, the socket goes, the
    /// home is let go.
    pub async fn shutdown(self) {
        self.daemon.stop().await;
        // Remove the socket only if it is still the one this daemon bound.
        if self.bound.is_some() && socket_identity(&self.socket) == self.bound {
            let _ = std::fs::remove_file(&self.socket);
        }
        tracing::info!("daemon stopped");
        // The home's lock goes last, with `self`.
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        self.daemon.shutdown.cancel();
    }
}

/// How long a daemon with no identity waits for a request before it exits,
/// by default (a home without identities has nothing to keep connected).
pub const DEFAULT_IDLE_EXIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the daemon for `home` until a stop request or `stop` resolves, or
/// until it has had no identity and no request for `idle_exit`.
pub async fn run(
    home: Home,
    idle_exit: std::time::Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let daemon = DaemonHandle::spawn(home).await?;
    let idle = async {
        let mut check =
            tokio::time::interval((idle_exit / 6).max(std::time::Duration::from_millis(100)));
        loop {
            check.tick().await;
            if daemon.daemon.is_idle(idle_exit) {
                tracing::info!("no identity and no request for {idle_exit:?}: stopping");
                return;
            }
        }
    };
    tokio::select! {
        () = stop => {}
        () = daemon.stop_requested() => {}
        () = idle => {}
    }
    daemon.shutdown().await;
    Ok(())
}

/// How long a starting daemon waits for a stopping one to let go of the home.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Takes the home's exclusive daemon lock, waiting up to [`LOCK_WAIT`] for a
/// daemon that is still stopping. The lock goes with the returned file (and
/// with the process, however it ends).
async fn lock_home(home: &Home) -> Result<std::fs::File, DaemonError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = home.daemon_lock();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|source| DaemonError::Lock {
            path: path.display().to_string(),
            source,
        })?;
    crate::home::check_own_file(&path)?;
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            // A daemon that answers on the socket is running, not stopping:
            // no point waiting for it.
            Err(std::fs::TryLockError::WouldBlock)
                if tokio::time::Instant::now() < deadline
                    && tokio::net::UnixStream::connect(home.socket())
                        .await
                        .is_err() =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(DaemonError::Locked(home.root().display().to_string()));
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(DaemonError::Lock {
                    path: path.display().to_string(),
                    source,
                });
            }
        }
    }
}

/// The device and inode of the file at `path`.
fn socket_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}
