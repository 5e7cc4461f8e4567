//! Relay configuration: where to listen, where to store, and every limit, each
//! with a named default.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default listen address: loopback only. Use `0.0.0.0:7878` on a public host.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Default largest frame, in bytes (256 KiB).
pub const DEFAULT_MAX_FRAME_BYTES: u32 = agentwire_wire::DEFAULT_MAX_FRAME_BYTES;
/// Default largest number of simultaneous WebSocket connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default largest number of simultaneous connections from one IP address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// Default sustained frames per second one key may send (bursts up to twice).
pub const DEFAULT_KEY_FRAMES_PER_SEC: u32 = 500;
/// Default sustained frames per second one IP address may send (bursts up to
/// twice).
pub const DEFAULT_IP_FRAMES_PER_SEC: u32 = 2000;
/// Default largest number of envelopes queued for one recipient.
pub const DEFAULT_MAX_QUEUE_PER_RECIPIENT: u32 = 10_000;
/// Default largest number of envelopes one sender may have queued for one
/// recipient (a quarter of the recipient's queue).
pub const DEFAULT_MAX_QUEUE_PER_SENDER: u32 = DEFAULT_MAX_QUEUE_PER_RECIPIENT / 4;
/// Default largest number of keys the directory lists (0 turns it off).
pub const DEFAULT_MAX_DIRECTORY_ENTRIES: u32 = 10_000;
/// Default time an undelivered envelope is kept (7 days).
pub const DEFAULT_ENVELOPE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default time a client has to answer the challenge.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for connections to finish before it drops them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Default interval of the relay's pings; a connection silent for three
/// intervals is closed, and deliveries unacknowledged for one interval stop
/// counting against the delivery window (they stay queued and are delivered
/// again on the next connection).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Write timeout once shutdown has begun.
pub const SHUTDOWN_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one write to a client may take before the connection is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Deliveries sent to one connection and not yet acknowledged, at most.
pub const DELIVERY_WINDOW: usize = 256;
/// Requests of one connection waiting for the store, at most; the relay stops
/// reading from a connection that has this many.
pub const MAX_PENDING_REQUESTS_PER_CONNECTION: usize = 128;
/// Rate-limit violations in a row after which a connection is closed as
/// abusive.
pub const MAX_CONSECUTIVE_VIOLATIONS: u32 = 64;
/// Frames larger than this many times the frame limit are not even read: the
/// connection is closed.
pub const HARD_FRAME_FACTOR: usize = 2;
/// How long the relay reads (and drops) a closing connection's input,
/// waiting for the client's answer to its close.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// The WebSocket read buffer each connection starts with, in bytes. The
/// library's default (128 KiB, zero-filled on the first read) made up
/// nearly all of an idle connection's memory; a frame larger than this
/// still arrives whole (the buffer grows to fit it), in reads of this size
/// (relay-bench with 64 KiB payloads showed no difference beyond noise).
pub(crate) const WS_READ_BUFFER: usize = 2 * 1024;

/// Everything [`crate::Relay::spawn`] needs.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where envelopes are stored: a SQLite file, or a PostgreSQL database
    /// shared by the nodes of a relay cluster.
    pub database: Database,
    /// When set, clients must present this token in their hello.
    pub access_token: Option<AccessToken>,
    /// When set, serve `wss://` with this certificate and key.
    pub tls: Option<TlsFiles>,
    /// When set, `/metrics` and the counts in `/health` are for requests
    /// bearing this token (`Authorization: Bearer TOKEN`) only; when not,
    /// for requests from loopback addresses only.
    pub metrics_token: Option<AccessToken>,
    /// The limits.
    pub limits: Limits,
}

impl RelayConfig {
    /// A configuration with default limits, no token and no TLS.
    pub fn new(listen: SocketAddr, database: impl Into<Database>) -> Self {
        Self {
            listen,
            database: database.into(),
            access_token: None,
            tls: None,
            metrics_token: None,
            limits: Limits::default(),
        }
    }
}

/// Default largest number of PostgreSQL connections one relay node keeps
/// (besides the one that listens for notifications).
pub const DEFAULT_POSTGRES_POOL_SIZE: usize = 16;
/// Default interval of a node's check for envelopes stored by other nodes
/// whose notification it missed.
pub const DEFAULT_POSTGRES_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Where a relay stores its queues.
#[derive(Clone, Debug)]
pub enum Database {
    /// A SQLite file (created if missing), owned by this relay process alone.
    Sqlite(PathBuf),
    /// A PostgreSQL database, which several relay nodes may share.
    Postgres(PostgresConfig),
}

impl Database {
    /// Reads the `--db` argument: a `postgres://` or `postgresql://` URL
    /// names a PostgreSQL database, anything else a SQLite file.
    pub fn from_arg(arg: &str) -> Database {
        if arg.starts_with("postgres://") || arg.starts_with("postgresql://") {
            Database::Postgres(PostgresConfig::new(arg))
        } else {
            Database::Sqlite(PathBuf::from(arg))
        }
    }

    /// The backend's name, as `/health` reports it.
    pub fn backend(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }
}

impl fmt::Display for Database {
    /// The SQLite path, or the PostgreSQL URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(config) => write!(f, "{}", config.redacted_url()),
        }
    }
}

impl From<PathBuf> for Database {
    fn from(path: PathBuf) -> Self {
        Database::Sqlite(path)
    }
}

impl From<&std::path::Path> for Database {
    fn from(path: &std::path::Path) -> Self {
        Database::Sqlite(path.to_path_buf())
    }
}

impl From<&str> for Database {
    /// A path to a SQLite file (use [`Database::from_arg`] to accept URLs).
    fn from(path: &str) -> Self {
        Database::Sqlite(PathBuf::from(path))
    }
}

/// How to reach a PostgreSQL database. `Debug` and `Display` never print the
/// password.
#[derive(Clone)]
pub struct PostgresConfig {
    /// The connection URL; parts it leaves out come from libpq's environment
    /// variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`).
    url: String,
    /// Connections this node keeps open, at most (besides its listener).
    pub pool_size: usize,
    /// How often this node checks for envelopes whose notification it
    /// missed.
    pub check_interval: Duration,
}

impl PostgresConfig {
    /// A configuration for `url` with the default pool size and check
    /// interval.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: DEFAULT_POSTGRES_POOL_SIZE,
            check_interval: DEFAULT_POSTGRES_CHECK_INTERVAL,
        }
    }

    /// The URL as given, password included: for connecting only.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.redacted_url())
            .field("pool_size", &self.pool_size)
            .field("check_interval", &self.check_interval)
            .finish()
    }
}

/// `url` with the password of its user-info part, and any `password=`
/// query parameter, replaced by `***`.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// PEM files for TLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// A relay access token. `Debug` never prints it.
#[derive(Clone)]
pub struct AccessToken(Vec<u8>);

impl AccessToken {
    /// Wraps a token; `None` if it is empty or longer than
    /// [`agentwire_wire::MAX_ACCESS_TOKEN_LEN`].
    pub fn new(token: impl Into<Vec<u8>>) -> Option<Self> {
        let token = token.into();
        (!token.is_empty() && token.len() <= agentwire_wire::MAX_ACCESS_TOKEN_LEN)
            .then_some(Self(token))
    }

    /// Whether `presented` equals this token, in constant time.
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == presented.len() && bool::from(self.0.ct_eq(presented))
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// A token-bucket rate: `per_sec` sustained, bursts up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_sec: u32,
    /// Bucket size.
    pub burst: u32,
}

impl RateLimit {
    /// `per_sec` sustained with bursts of twice that.
    pub const fn per_second(per_sec: u32) -> Self {
        Self {
            per_sec,
            burst: per_sec.saturating_mul(2),
        }
    }
}

/// Every limit the relay enforces. Each violation is answered with an error
/// frame that names the limit and its value.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest frame in bytes.
    pub max_frame_bytes: u32,
    /// Largest number of simultaneous connections.
    pub max_connections: usize,
    /// Largest number of simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Frames per second per authenticated key.
    pub key_rate: RateLimit,
    /// Frames per second per IP address.
    pub ip_rate: RateLimit,
    /// Largest number of envelopes queued for one recipient.
    pub max_queue_per_recipient: u32,
    /// Largest number of envelopes one sender may have queued for one
    /// recipient: its share of that queue, so that no single sender can
    /// fill it and room stays for the others.
    pub max_queue_per_sender: u32,
    /// How long an undelivered envelope is kept.
    pub envelope_ttl: Duration,
    /// Largest number of keys in the opt-in directory; 0 keeps no directory.
    pub max_directory_entries: u32,
    /// How long a client has to answer the challenge.
    pub auth_timeout: Duration,
    /// How often idle connections are pinged (see [`DEFAULT_PING_INTERVAL`]).
    pub ping_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            key_rate: RateLimit::per_second(DEFAULT_KEY_FRAMES_PER_SEC),
            ip_rate: RateLimit::per_second(DEFAULT_IP_FRAMES_PER_SEC),
            max_queue_per_recipient: DEFAULT_MAX_QUEUE_PER_RECIPIENT,
            max_queue_per_sender: DEFAULT_MAX_QUEUE_PER_SENDER,
            envelope_ttl: DEFAULT_ENVELOPE_TTL,
            max_directory_entries: DEFAULT_MAX_DIRECTORY_ENTRIES,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            ping_interval: DEFAULT_PING_INTERVAL,
        }
    }
}

impl Limits {
    /// The largest payload a `Send` may carry: what still fits in a
    /// `Deliver` frame under the frame limit.
    pub fn max_payload_bytes(&self) -> usize {
        (self.max_frame_bytes as usize).saturating_sub(agentwire_wire::DELIVER_OVERHEAD)
    }

    /// How often expired envelopes are swept: a quarter of the TTL, between
    /// 100 ms and one minute.
    pub(crate) fn sweep_interval(&self) -> Duration {
        (self.envelope_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_an_access_token_is_redacted() {
        let token = AccessToken::new(b"hunter2".to_vec()).unwrap();
        assert_eq!(format!("{token:?}"), "AccessToken(<redacted>)");
        let config = RelayConfig {
            access_token: Some(token),
            ..RelayConfig::new("127.0.0.1:0".parse().unwrap(), "relay.db")
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn access_tokens_are_bounded_and_compared_exactly() {
        assert!(AccessToken::new(Vec::new()).is_none());
        assert!(AccessToken::new(vec![b'x'; agentwire_wire::MAX_ACCESS_TOKEN_LEN + 1]).is_none());
        let token = AccessToken::new(b"abc".to_vec()).unwrap();
        assert!(token.matches(b"abc"));
        assert!(!token.matches(b"abd"));
        assert!(!token.matches(b"abcd"));
        assert!(!token.matches(b""));
    }

    #[test]
    fn a_postgres_password_never_shows() {
        let url =
            "postgres://relay:s3cret@db.example:5432/agentwire?password=s3cret&sslmode=disable";
        let database = Database::from_arg(url);
        assert_eq!(
            database.to_string(),
            "postgres://relay:***@db.example:5432/agentwire?password=***&sslmode=disable"
        );
        let config = RelayConfig::new("127.0.0.1:0".parse().unwrap(), database);
        assert!(!format!("{config:?}").contains("s3cret"));
        assert_eq!(
            redact_url("postgresql://a:b:c@h/d"),
            "postgresql://a:***@h/d",
            "a colon in the password"
        );
        assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact_url("postgres://"), "postgres://");
        assert!(matches!(
            Database::from_arg("relay.db"),
            Database::Sqlite(_)
        ));
        assert!(matches!(
            Database::from_arg("postgresql://h/d"),
            Database::Postgres(_)
        ));
    }
}
