//! The relay service: HTTP routes, the listener (plain or TLS), background
//! sweeping, and graceful shutdown.
//!
//! Every task the relay starts (the HTTP server, the sweeper, TLS handshakes,
//! one actor per WebSocket connection) is tracked by one [`TaskTracker`] and
//! watches one [`CancellationToken`]; [`Relay::shutdown`] cancels the token and
//! waits, bounded by [`SHUTDOWN_GRACE`], for all of them. Dropping a [`Relay`]
//! cancels the token too, so no task outlives its owner for long.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentwire_wire::{PublicKey, RelayId};
use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{
    AccessToken, HARD_FRAME_FACTOR, Limits, RelayConfig, SHUTDOWN_GRACE, TlsFiles, WS_READ_BUFFER,
};
use crate::metrics::Metrics;
use crate::rate::{IpConnections, RateLimiter};
use crate::socket::{self, Admitted, SocketSlot};
use crate::store::{Store, StoreError, StoreWorkers};
use crate::wakers::Wakers;

/// TLS handshakes in progress at once, at most.
const MAX_PENDING_HANDSHAKES: usize = 256;
/// TLS handshakes in progress from one IP address, at most: one address
/// holding silent sockets cannot take the handshakes of everyone else.
const MAX_HANDSHAKES_PER_IP: usize = 8;
/// Time a TLS client has to send its first bytes (its client hello).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(3);
/// Time a TLS handshake may take once the client has spoken.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the relay could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The database could not be opened.
    #[error("cannot open the relay database {path}: {source}")]
    Store {
        /// The database (a path, or a URL without its password).
        path: String,
        /// What failed.
        source: StoreError,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// State shared by all connections of one relay.
pub(crate) struct Shared {
    pub(crate) limits: Limits,
    pub(crate) access_token: Option<AccessToken>,
    metrics_token: Option<AccessToken>,
    pub(crate) relay_id: RelayId,
    pub(crate) store: Store,
    pub(crate) wakers: Arc<Wakers>,
    pub(crate) ip_rate: RateLimiter<IpAddr>,
    pub(crate) key_rate: RateLimiter<PublicKey>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) connections: Arc<Semaphore>,
    pub(crate) ip_connections: Arc<IpConnections>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    started: Instant,
    next_conn_id: AtomicU64,
    /// When a store failure was last logged, and how many were not since.
    store_failures: std::sync::Mutex<(Option<Instant>, u64)>,
}

impl Shared {
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Logs a failed store request, at most once a second with the count of
    /// those left out: a full disk fails every request, and the log must not
    /// fill what is left of it.
    pub(crate) fn log_store_failure(&self, error: &crate::store::StoreError) {
        let mut last = self
            .store_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if last
            .0
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1))
        {
            last.1 += 1;
            return;
        }
        tracing::error!(%error, not_logged_since = last.1, "store request failed");
        *last = (Some(now), 0);
    }

    fn open_connections(&self) -> usize {
        self.limits
            .max_connections
            .saturating_sub(self.connections.available_permits())
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A running relay. Obtain with [`Relay::spawn`]; stop with
/// [`Relay::shutdown`].
pub struct Relay {
    local_addr: SocketAddr,
    tls: bool,
    relay_id: RelayId,
    shared: Option<Arc<Shared>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    store_workers: Option<StoreWorkers>,
}

impl Relay {
    /// Opens the store, binds the listener and starts serving.
    pub async fn spawn(config: RelayConfig) -> Result<Relay, RelayError> {
        let metrics = Arc::new(Metrics::new(matches!(
            config.database,
            crate::config::Database::Postgres(_)
        )));
        let wakers = Arc::new(Wakers::default());
        let (store, store_workers, relay_id) =
            Store::open(&config.database, metrics.clone(), wakers.clone())
                .await
                .map_err(|source| RelayError::Store {
                    path: config.database.to_string(),
                    source,
                })?;
        let tls = config.tls.as_ref().map(load_tls).transpose()?;
        let tcp = TcpListener::bind(config.listen)
            .await
            .map_err(|source| RelayError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = tcp.local_addr().map_err(|source| RelayError::Bind {
            addr: config.listen,
            source,
        })?;

        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let limits = config.limits;
        let shared = Arc::new(Shared {
            ip_rate: RateLimiter::new(limits.ip_rate),
            key_rate: RateLimiter::new(limits.key_rate),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            ip_connections: Arc::new(IpConnections::new(limits.max_connections_per_ip)),
            limits,
            access_token: config.access_token,
            metrics_token: config.metrics_token,
            relay_id,
            store,
            wakers,
            metrics,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            started: Instant::now(),
            store_failures: std::sync::Mutex::new((None, 0)),
            next_conn_id: AtomicU64::new(1),
        });

        let app = Router::new()
            .route("/v1/ws", get(ws_handler))
            .route("/health", get(health))
            .route("/metrics", get(metrics_handler))
            .fallback(not_found)
            .with_state(shared.clone());
        let make_service = app.into_make_service_with_connect_info::<PeerAddr>();
        let stop = shutdown.clone().cancelled_owned();
        match tls {
            None => {
                let listener = PlainListener {
                    tcp,
                    shared: shared.clone(),
                    overflow: Arc::new(Semaphore::new(socket::OVERFLOW_SOCKETS)),
                };
                tasks.spawn(async move {
                    let served = axum::serve(listener, make_service)
                        .with_graceful_shutdown(stop)
                        .await;
                    if let Err(error) = served {
                        tracing::error!(%error, "relay server stopped");
                    }
                });
            }
            Some(acceptor) => {
                let listener = TlsListener::spawn(tcp, acceptor, &tasks, shared.clone());
                tasks.spawn(async move {
                    let served = axum::serve(listener, make_service)
                        .with_graceful_shutdown(stop)
                        .await;
                    if let Err(error) = served {
                        tracing::error!(%error, "relay server stopped");
                    }
                });
            }
        }
        tasks.spawn(sweeper(shared.clone()));
        tracing::info!(
            addr = %local_addr,
            relay_id = %relay_id,
            tls = config.tls.is_some(),
            "relay listening"
        );
        Ok(Relay {
            local_addr,
            tls: config.tls.is_some(),
            relay_id,
            shared: Some(shared),
            shutdown,
            tasks,
            store_workers: Some(store_workers),
        })
    }

    /// The address the relay listens on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The WebSocket URL clients connect to, e.g. `ws://127.0.0.1:7878/v1/ws`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/v1/ws", self.local_addr)
    }

    /// The relay's stable id (persisted in its database).
    pub fn relay_id(&self) -> RelayId {
        self.relay_id
    }

    /// Resolves once shutdown has begun (by [`Relay::shutdown`] or a fatal
    /// server error).
    pub async fn cancelled(&self) {
        self.shutdown.cancelled().await;
    }

    /// Stops accepting, lets connections finish their in-flight commits and
    /// close, then waits for the store's last commit. Bounded by
    /// [`SHUTDOWN_GRACE`] for connections plus the same again for the store.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tasks.len(),
                "connections did not finish within the shutdown grace period"
            );
        }
        // The store's workers end once every handle is gone.
        drop(self.shared.take());
        if let Some(workers) = self.store_workers.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, workers.finish())
                .await
                .is_err()
        {
            tracing::warn!("the store did not finish within the shutdown grace period");
        }
        tracing::info!("relay stopped");
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Removes expired envelopes and wakes their senders; prunes idle rate-limit
/// buckets.
async fn sweeper(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.limits.sweep_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let notice_ttl_ms = u64::try_from(shared.limits.envelope_ttl.as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        shared.ip_rate.prune(now);
        shared.key_rate.prune(now);
        // A sweep moves at most SWEEP_BATCH envelopes per transaction; keep
        // going until one comes back short, so a burst of expiries cannot
        // build a backlog (other store work runs between the batches).
        loop {
            match shared.store.sweep(now_ms(), notice_ttl_ms).await {
                Ok(notices) => {
                    for notice in &notices {
                        tracing::debug!(
                            sender = %notice.sender.short_id(),
                            recipient = %notice.recipient.short_id(),
                            "envelope expired undelivered"
                        );
                        shared.wakers.wake_notices(&notice.sender);
                    }
                    if notices.len() < crate::store::SWEEP_BATCH || shared.shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "expiry sweep failed");
                    break;
                }
            }
        }
    }
}

/// The peer's socket address, for per-IP limits and logs.
#[derive(Clone)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr, Arc<SocketSlot>);

impl axum::extract::connect_info::Connected<IncomingStream<'_, PlainListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Self {
        PeerAddr(*stream.remote_addr(), stream.io().slot().clone())
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr(), stream.io().slot().clone())
    }
}

async fn ws_handler(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(PeerAddr(peer, slot)): ConnectInfo<PeerAddr>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            shared.metrics.reject("not_websocket");
            tracing::debug!(%peer, %rejection, "plain HTTP request on /v1/ws");
            return (
                StatusCode::UPGRADE_REQUIRED,
                [(header::UPGRADE, "websocket")],
                format!(
                    "/v1/ws speaks the agentwire relay protocol over WebSocket \
                     ({rejection}); connect with a WebSocket client and send binary \
                     frames as described in PROTOCOL.md\n"
                ),
            )
                .into_response();
        }
    };
    if shared.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "relay is shutting down\n").into_response();
    }
    // The slots this socket took when it was accepted.
    let admission = slot.upgrade();
    let hard_limit = (shared.limits.max_frame_bytes as usize).saturating_mul(HARD_FRAME_FACTOR);
    let tasks = shared.tasks.clone();
    upgrade
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| {
            tasks.track_future(crate::conn::run(socket, peer, shared, admission))
        })
}

/// Whether a request may read the relay's counts (`/metrics`, and the
/// counts in `/health`): with a metrics token configured, a request that
/// bears it; without one, a request from a loopback address. Exact byte and
/// frame counters show each message's size and timing, so they are not for
/// everyone who can reach the port.
fn may_read_counts(token: Option<&AccessToken>, peer: SocketAddr, headers: &HeaderMap) -> bool {
    match token {
        Some(token) => headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|presented| token.matches(presented)),
        None => peer.ip().is_loopback(),
    }
}

/// `/health`: whether the relay serves, for anyone; its counts only for
/// those who may read them ([`may_read_counts`]).
async fn health(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(PeerAddr(peer, _)): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
) -> Response {
    let database = shared.store.check().await;
    let status = if shared.shutdown.is_cancelled() {
        "stopping"
    } else if database.is_err() {
        "unhealthy"
    } else {
        "ok"
    };
    let mut body = serde_json::json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "relay_id": shared.relay_id.to_hex(),
        "backend": shared.store.backend(),
        "database": if database.is_ok() { "ok" } else { "unreachable" },
    });
    if may_read_counts(shared.metrics_token.as_ref(), peer, &headers) {
        body["uptime_secs"] = shared.started.elapsed().as_secs().into();
        body["connections"] = shared.open_connections().into();
        body["queued_envelopes"] = shared.store.queued().into();
        if let Err(error) = &database {
            body["database_error"] = error.to_string().into();
        }
    }
    let code = if database.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics_handler(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(PeerAddr(peer, _)): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
) -> Response {
    if !may_read_counts(shared.metrics_token.as_ref(), peer, &headers) {
        shared.metrics.reject("metrics_refused");
        return if shared.metrics_token.is_some() {
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "/metrics needs `Authorization: Bearer TOKEN`, the token in the relay's --metrics-token-file\n",
            )
                .into_response()
        } else {
            (
                StatusCode::FORBIDDEN,
                "/metrics is served to loopback addresses only; to read it from elsewhere, start the relay with --metrics-token-file and send `Authorization: Bearer TOKEN`\n",
            )
                .into_response()
        };
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found; this relay serves /v1/ws (WebSocket), /health and /metrics\n",
    )
        .into_response()
}

fn load_tls(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, RelayError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            RelayError::Tls(format!(
                "cannot read certificates from {}: {e}",
                files.cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(RelayError::Tls(format!(
            "{} holds no PEM certificate",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        RelayError::Tls(format!(
            "cannot read a private key from {}: {e}",
            files.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RelayError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| RelayError::Tls(format!("certificate and key do not fit together: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A plain TCP listener: each socket counts against the connection limits
/// from accept ([`crate::socket`]), and has Nagle's algorithm off (frames
/// are small and latency matters more than packet count).
pub(crate) struct PlainListener {
    tcp: TcpListener,
    shared: Arc<Shared>,
    overflow: Arc<Semaphore>,
}

impl Listener for PlainListener {
    type Io = Admitted<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = Listener::accept(&mut self.tcp).await;
            let Some(slot) = socket::admit(&self.shared, &self.overflow, addr.ip()) else {
                continue; // over every limit: closed at once
            };
            let _ = stream.set_nodelay(true);
            return (
                Admitted::new(stream, slot, self.shared.limits.auth_timeout),
                addr,
            );
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Listener::local_addr(&self.tcp)
    }
}

/// A listener whose connections have completed a TLS handshake. Handshakes run
/// in their own tracked tasks so a slow client cannot hold up others. Each
/// socket counts against the connection limits from accept (as a plain one
/// does); at most [`MAX_PENDING_HANDSHAKES`] handshakes are in progress, at
/// most [`MAX_HANDSHAKES_PER_IP`] of them from one address (the others wait
/// their turn), and a client must get its turn and send its first bytes
/// within [`FIRST_BYTE_TIMEOUT`] of the accept.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(
        Admitted<tokio_rustls::server::TlsStream<TcpStream>>,
        SocketAddr,
    )>,
    local_addr: SocketAddr,
}

impl TlsListener {
    fn spawn(
        tcp: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        tasks: &TaskTracker,
        shared: Arc<Shared>,
    ) -> Self {
        let local_addr = tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0; 4], 0)));
        let (ready_tx, ready) = mpsc::channel(MAX_PENDING_HANDSHAKES);
        let handshakes = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
        let per_ip = Arc::new(IpConnections::new(MAX_HANDSHAKES_PER_IP));
        let overflow = Arc::new(Semaphore::new(socket::OVERFLOW_SOCKETS));
        let inner_tasks = tasks.clone();
        let shutdown = shared.shutdown.clone();
        tasks.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    accepted = tcp.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = socket::admit(&shared, &overflow, peer.ip()) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, ready_tx) = (acceptor.clone(), ready_tx.clone());
                let (handshakes, per_ip, shared) =
                    (handshakes.clone(), per_ip.clone(), shared.clone());
                let http_phase = shared.limits.auth_timeout;
                inner_tasks.spawn(async move {
                    // The socket waits for its address's turn and then for
                    // its first byte, both within FIRST_BYTE_TIMEOUT of the
                    // accept: a silent socket is held (counted against its
                    // address) until then, rather than closed at once and
                    // reopened in a tight loop.
                    let deadline = tokio::time::Instant::now() + FIRST_BYTE_TIMEOUT;
                    let Some(handshaking) = per_ip.acquire(peer.ip(), deadline).await else {
                        shared.metrics.reject("too_many_handshakes_per_ip");
                        return;
                    };
                    let Ok(Ok(permit)) =
                        tokio::time::timeout_at(deadline, handshakes.acquire_owned()).await
                    else {
                        return;
                    };
                    let _held = (permit, handshaking);
                    let mut first = [0u8; 1];
                    if tokio::time::timeout_at(deadline, stream.peek(&mut first))
                        .await
                        .is_err()
                    {
                        tracing::debug!(%peer, "no TLS client hello in time");
                        return;
                    }
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready_tx
                                .send((Admitted::new(tls, slot, http_phase), peer))
                                .await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Self { ready, local_addr }
    }
}

impl Listener for TlsListener {
    type Io = Admitted<tokio_rustls::server::TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The acceptor stopped (shutdown): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_for_loopback_or_the_metrics_token() {
        let loopback: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let v6_loopback: SocketAddr = "[::1]:9".parse().unwrap();
        let outside: SocketAddr = "203.0.113.7:9".parse().unwrap();
        let none = HeaderMap::new();
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        let mut wrong = HeaderMap::new();
        wrong.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        // No metrics token: loopback only, whatever the headers.
        assert!(may_read_counts(None, loopback, &none));
        assert!(may_read_counts(None, v6_loopback, &none));
        assert!(!may_read_counts(None, outside, &none));
        assert!(!may_read_counts(None, outside, &bearer));
        // A metrics token: the token, from anywhere; loopback is not enough.
        let token = AccessToken::new(b"s3cret".to_vec()).unwrap();
        assert!(may_read_counts(Some(&token), outside, &bearer));
        assert!(may_read_counts(Some(&token), loopback, &bearer));
        assert!(!may_read_counts(Some(&token), loopback, &none));
        assert!(!may_read_counts(Some(&token), outside, &wrong));
    }
}
