//! The agentwire daemon: one per home. It holds the identities, their
//! end-to-end sessions and contacts, one relay connection per identity
//! (reconnecting on its own), and the local message store, and serves the
//! local API on a Unix socket in the home.
//!
//! Without a configured relay it runs the relay of `agentwire-relay` in
//! process on loopback, so agents on one machine need nothing else.

pub mod api;
mod daemon;
pub mod home;
mod pairing;
mod server;
pub mod store;

pub use daemon::{DEFAULT_INVITE_TTL, DEFAULT_MAX_MESSAGES, Daemon, MAX_WAIT};
pub use home::{Home, HomeError};

/// Why the daemon cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The home is unusable.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The store cannot be opened.
    #[error("cannot open the daemon's store: {0}")]
    Store(rusqlite::Error),
    /// Stored state does not load.
    #[error("the daemon's store is damaged: {0}")]
    Corrupt(String),
    /// The socket cannot be bound.
    #[error("cannot listen on {path}: {source}")]
    Socket {
        /// The socket path.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
}

/// Runs the daemon for `home` until a stop request or `stop` resolves.
pub async fn run(
    home: Home,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let daemon = Daemon::open(home.clone())?;
    let socket = home.socket();
    let listener = server::bind(&socket)
        .await
        .map_err(|source| DaemonError::Socket {
            path: socket.display().to_string(),
            source,
        })?;
    tracing::info!(home = %home.root().display(), "daemon started");
    daemon.start_links().await;
    daemon.tasks.spawn(server::serve(listener, daemon.clone()));
    tokio::select! {
        () = stop => {}
        () = daemon.shutdown.cancelled() => {}
    }
    daemon.stop().await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("daemon stopped");
    Ok(())
}
