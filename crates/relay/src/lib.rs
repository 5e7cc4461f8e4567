//! The agentwire relay: a blind router with store-and-forward.
//!
//! The relay authenticates clients by their Ed25519 keys (a signed challenge,
//! no accounts), accepts opaque envelopes addressed to other keys, stores each
//! durably before it says `accepted`, pushes it to the recipient when it is
//! connected (or when it next connects, oldest first), and deletes it only when
//! the recipient acknowledges it or its time to live runs out — in which case
//! the sender is told.
//!
//! It is blind by construction: this crate does not depend on any end-to-end
//! session code, so it has nothing to decrypt with; payloads are bytes it
//! stores and forwards. It enforces [`Limits`], each violation answered with an
//! error frame naming the limit and its value.
//!
//! ```no_run
//! # async fn demo() -> Result<(), agentwire_relay::RelayError> {
//! use agentwire_relay::{Relay, RelayConfig};
//!
//! let config = RelayConfig::new("127.0.0.1:0".parse().unwrap(), "/tmp/relay.db");
//! let relay = Relay::spawn(config).await?;
//! println!("clients connect to {}", relay.url());
//! relay.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
mod conn;
mod metrics;
mod rate;
mod server;
mod socket;
mod store;
mod wakers;

pub use config::{
    AccessToken, DEFAULT_AUTH_TIMEOUT, DEFAULT_ENVELOPE_TTL, DEFAULT_IP_FRAMES_PER_SEC,
    DEFAULT_KEY_FRAMES_PER_SEC, DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_DIRECTORY_ENTRIES, DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_QUEUE_PER_RECIPIENT, DEFAULT_MAX_QUEUE_PER_SENDER, DEFAULT_PING_INTERVAL,
    DEFAULT_POSTGRES_CHECK_INTERVAL, DEFAULT_POSTGRES_POOL_SIZE, DELIVERY_WINDOW, Database,
    HARD_FRAME_FACTOR, Limits, MAX_CONSECUTIVE_VIOLATIONS, MAX_PENDING_REQUESTS_PER_CONNECTION,
    PostgresConfig, RateLimit, RelayConfig, SHUTDOWN_GRACE, SHUTDOWN_WRITE_TIMEOUT, TlsFiles,
    WRITE_TIMEOUT,
};
pub use server::{Relay, RelayError};

/// Raises this process's soft limit on open files to its hard limit: each
/// connection holds a file descriptor, and the soft limit is often 1 024
/// where the hard one allows far more. Returns the limit before and after
/// (equal when it could not be raised or was already at the hard limit).
pub fn raise_open_files_limit() -> (Option<u64>, Option<u64>) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if limit.current == limit.maximum {
        return (before, before);
    }
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => (before, getrlimit(Resource::Nofile).current),
        Err(_) => (before, before),
    }
}
pub use store::StoreError;

#[cfg(test)]
mod tests {
    /// The relay is blind by construction: it must never link end-to-end
    /// session code. This reads the crate's own manifest, so adding such a
    /// dependency fails the build's tests, not a code review.
    #[test]
    fn the_relay_does_not_depend_on_session_code() {
        let manifest = include_str!("../Cargo.toml");
        let dependencies = manifest
            .split("[dependencies]")
            .nth(1)
            .and_then(|rest| rest.split("\n[").next())
            .unwrap_or_default();
        assert!(
            dependencies.contains("agentwire-wire"),
            "manifest not parsed"
        );
        for forbidden in ["agentwire-session", "vodozemac", "olm", "megolm"] {
            assert!(
                !dependencies.contains(forbidden),
                "agentwire-relay must not depend on {forbidden}"
            );
        }
    }
}
