//! A client for the agentwire relay: connect, authenticate, send, receive,
//! acknowledge, and reconnect with backoff.
//!
//! [`RelayClient::connect`] opens one authenticated connection and returns a
//! handle plus an [`Events`] stream. The handle's requests ([`RelayClient::send`],
//! [`RelayClient::ack`], [`RelayClient::dismiss`]) each wait for the relay's
//! answer. Envelopes arrive on [`Events`] and stay queued at the relay until
//! acknowledged, so a consumer that crashes before acking receives them again.
//! When the connection drops, the client reconnects by itself with exponential
//! backoff and jitter; requests in flight at that moment fail with
//! [`ClientError::Disconnected`] and are safe to retry (sends are idempotent by
//! envelope id).
//!
//! This crate knows the relay protocol and nothing about what is inside
//! envelopes: end-to-end encryption is a layer above it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), agentwire_client::ClientError> {
//! use std::sync::Arc;
//! use agentwire_client::{ClientConfig, Event, RelayClient};
//! use agentwire_wire::EnvelopeId;
//!
//! let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
//! let peer = agentwire_wire::PublicKey::from_bytes([9; 32]);
//! let (client, mut events) =
//!     RelayClient::connect(ClientConfig::new("ws://127.0.0.1:7878"), Arc::new(key)).await?;
//! client.send(peer, EnvelopeId::from_bytes([1; 16]), b"sealed bytes".to_vec()).await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Envelope(envelope) = event {
//!         client.ack(envelope.id).await?;
//!     }
//! }
//! # Ok(()) }
//! ```

mod connection;
mod error;

pub use connection::{Connection, FrameSink, FrameStream, MAX_RELAY_URLS, Welcome, relay_urls};
pub use error::{ClientError, untrusted_text};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use agentwire_wire::{
    Body, EnvelopeId, Frame, PublicKey, RelayId, RequestId, Signature, directory,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Default time to open and authenticate a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time to wait for the relay's answer to a request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Events buffered for a slow consumer before the client stops reading from the
/// relay (backpressure, nothing is dropped).
pub const EVENT_BUFFER: usize = 1024;
/// Requests buffered between handles and the connection task.
const COMMAND_BUFFER: usize = 256;

/// Signs authentication challenges with an identity's Ed25519 key.
///
/// Implemented for [`ed25519_dalek::SigningKey`]; an identity store can
/// implement it over its own key type without handing the key out.
pub trait Signer: Send + Sync + 'static {
    /// The Ed25519 public key: the client's address on the relay.
    fn public_key(&self) -> PublicKey;
    /// An Ed25519 signature over `message`.
    fn sign(&self, message: &[u8]) -> Signature;
}

impl Signer for ed25519_dalek::SigningKey {
    fn public_key(&self) -> PublicKey {
        PublicKey::from_bytes(self.verifying_key().to_bytes())
    }

    fn sign(&self, message: &[u8]) -> Signature {
        Signature::from_bytes(ed25519_dalek::Signer::sign(self, message).to_bytes())
    }
}

/// Exponential backoff with full jitter between reconnect attempts.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (0-based): a random duration
    /// between half and all of `min(max, initial * 2^attempt)`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        let mut random = [0u8; 4];
        let fraction = if getrandom::fill(&mut random).is_ok() {
            f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX)
        } else {
            1.0
        };
        ceiling.mul_f64(0.5 + fraction / 2.0)
    }
}

/// How to reach a relay.
#[derive(Clone)]
pub struct ClientConfig {
    /// `ws://` or `wss://` URL; `/v1/ws` is appended when the URL has no path.
    /// Several URLs separated by commas name the nodes of one relay cluster:
    /// the client connects to the first that answers, and after a lost
    /// connection tries the node it was on first, then the others in order
    /// (see [`relay_urls`]). A host name that resolves to several addresses
    /// is tried address by address as well.
    pub url: String,
    /// The relay's access token, when it requires one.
    pub access_token: Option<Vec<u8>>,
    /// Time to open and authenticate a connection.
    pub connect_timeout: Duration,
    /// Time to wait for the answer to a request.
    pub request_timeout: Duration,
    /// Delays between reconnect attempts.
    pub backoff: Backoff,
    /// Extra trusted root certificates (DER) for `wss://`, e.g. a relay's
    /// self-signed certificate. The Web PKI roots are always trusted.
    pub extra_roots: Vec<Vec<u8>>,
    /// The local address to connect from (on a host with several); `None`
    /// lets the system choose.
    pub local_address: Option<std::net::IpAddr>,
}

impl ClientConfig {
    /// Defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            access_token: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            backoff: Backoff::default(),
            extra_roots: Vec::new(),
            local_address: None,
        }
    }

    /// The same configuration with an access token.
    pub fn with_access_token(mut self, token: impl Into<Vec<u8>>) -> Self {
        self.access_token = Some(token.into());
        self
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("backoff", &self.backoff)
            .field("extra_roots", &self.extra_roots.len())
            .field("local_address", &self.local_address)
            .finish()
    }
}

/// An envelope delivered by the relay. Acknowledge it with
/// [`RelayClient::ack`] once it is safely stored; until then the relay keeps it
/// and delivers it again on the next connection.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The sender-chosen id.
    pub id: EnvelopeId,
    /// The key that sent it, as authenticated by the relay.
    pub from: PublicKey,
    /// When the relay accepted it, Unix milliseconds.
    pub received_at_ms: u64,
    /// The opaque bytes, as sent.
    pub payload: Vec<u8>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("id", &self.id)
            .field("from", &self.from)
            .field("received_at_ms", &self.received_at_ms)
            .field("payload", &format_args!("<{} bytes>", self.payload.len()))
            .finish()
    }
}

/// What happens on a client's connection.
#[derive(Debug)]
pub enum Event {
    /// A connection is authenticated (first or after a reconnect); `queued`
    /// envelopes wait and will be delivered next.
    Connected {
        /// Envelopes queued for this key at that moment.
        queued: u32,
        /// The relay's stable id.
        relay_id: agentwire_wire::RelayId,
        /// How long the relay keeps an undelivered envelope.
        envelope_ttl: Duration,
    },
    /// An envelope for this key.
    Envelope(Envelope),
    /// One of this key's envelopes expired undelivered. Dismiss it with
    /// [`RelayClient::dismiss`] to stop hearing about it.
    Expired {
        /// The expired envelope's id.
        id: EnvelopeId,
        /// Its recipient.
        to: PublicKey,
        /// When it expired, Unix milliseconds.
        expired_at_ms: u64,
    },
    /// The connection dropped; the client is reconnecting.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// The client gave up for good (the relay refused this key, or the client
    /// was closed); no more events follow.
    Stopped {
        /// Why.
        reason: ClientError,
    },
}

/// The stream of [`Event`]s of one client. Dropping it does not close the
/// client; it only stops the events.
pub struct Events(mpsc::Receiver<Event>);

impl Events {
    /// The next event; `None` once the client is gone.
    pub async fn recv(&mut self) -> Option<Event> {
        self.0.recv().await
    }

    /// An event that is already waiting, if any (to take a burst at once).
    pub fn try_recv(&mut self) -> Option<Event> {
        self.0.try_recv().ok()
    }
}

enum Command {
    Request {
        body: Body,
        answer: oneshot::Sender<Result<Body, ClientError>>,
    },
}

/// A handle to a relay connection that reconnects by itself. Cloning is cheap;
/// the connection closes when the last handle is dropped.
#[derive(Clone)]
pub struct RelayClient {
    commands: mpsc::Sender<Command>,
    public_key: PublicKey,
    request_timeout: Duration,
    _stop: Arc<DropGuard>,
}

impl fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayClient")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl RelayClient {
    /// Connects and authenticates once (failing with the relay's reason if it
    /// refuses), then keeps the connection up in a background task owned by
    /// the returned handles.
    pub async fn connect(
        config: ClientConfig,
        signer: Arc<dyn Signer>,
    ) -> Result<(RelayClient, Events), ClientError> {
        let (connection, welcome, node) =
            Connection::open_from(&config, signer.as_ref(), 0).await?;
        let (commands, command_rx) = mpsc::channel(COMMAND_BUFFER);
        let (event_tx, events) = mpsc::channel(EVENT_BUFFER);
        let stop = CancellationToken::new();
        let client = RelayClient {
            commands,
            public_key: signer.public_key(),
            request_timeout: config.request_timeout,
            _stop: Arc::new(stop.clone().drop_guard()),
        };
        let actor = Actor {
            config,
            signer,
            commands: command_rx,
            events: event_tx,
            stop,
            next_request_id: 1,
            max_payload: 0,
            failures: 0,
            node,
            waiting: HashMap::new(),
        };
        tokio::spawn(actor.run(connection, welcome));
        Ok((client, Events(events)))
    }

    /// This client's key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    async fn request(&self, body: Body) -> Result<Body, ClientError> {
        let exchange = async {
            let (answer, answered) = oneshot::channel();
            self.commands
                .send(Command::Request { body, answer })
                .await
                .map_err(|_| ClientError::Closed)?;
            answered.await.map_err(|_| ClientError::Closed)?
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.request_timeout))?
    }

    /// Sends an envelope; returns once the relay has stored it durably.
    /// Sending the same id to the same recipient again is a no-op that
    /// succeeds, so retrying after an error is always safe.
    pub async fn send(
        &self,
        to: PublicKey,
        id: EnvelopeId,
        payload: Vec<u8>,
    ) -> Result<(), ClientError> {
        match self.request(Body::Send { to, id, payload }).await? {
            Body::Accepted { id: accepted } if accepted == id => Ok(()),
            other => Err(unexpected("accepted", &other)),
        }
    }

    /// Acknowledges a delivered envelope: the relay deletes it.
    pub async fn ack(&self, id: EnvelopeId) -> Result<(), ClientError> {
        match self.request(Body::Ack { id }).await? {
            Body::Acked { id: acked } if acked == id => Ok(()),
            other => Err(unexpected("acked", &other)),
        }
    }

    /// Acknowledges delivered envelopes in one frame (at most
    /// [`agentwire_wire::MAX_ACK_BATCH`] ids; more are sent as several):
    /// the relay deletes them.
    pub async fn ack_batch(&self, ids: &[EnvelopeId]) -> Result<(), ClientError> {
        for chunk in ids.chunks(agentwire_wire::MAX_ACK_BATCH) {
            match self
                .request(Body::AckBatch {
                    ids: chunk.to_vec(),
                })
                .await?
            {
                Body::AckedBatch { count } if usize::from(count) == chunk.len() => {}
                other => return Err(unexpected("acked_batch", &other)),
            }
        }
        Ok(())
    }

    /// Dismisses an expiry notice.
    pub async fn dismiss(&self, id: EnvelopeId, to: PublicKey) -> Result<(), ClientError> {
        match self.request(Body::Dismiss { id, to }).await? {
            Body::Dismissed { id: dismissed } if dismissed == id => Ok(()),
            other => Err(unexpected("dismissed", &other)),
        }
    }
}

impl RelayClient {
    /// Lists this key in the relay's directory, or withdraws it: `entry` is
    /// a [`directory::Entry`] of this client's key, signed for this relay
    /// (see [`sign_entry`]). Returns when the relay stops listing it (0 for
    /// a withdrawal).
    pub async fn publish(&self, entry: &directory::Entry) -> Result<u64, ClientError> {
        match self
            .request(Body::Publish {
                entry: entry.encode(),
            })
            .await?
        {
            Body::Published { expires_at_ms } => Ok(expires_at_ms),
            other => Err(unexpected("published", &other)),
        }
    }

    /// The directory's entries with `capability` (any, when empty), newest
    /// first, as the relay returned them: check each with [`verify_entry`]
    /// before trusting it.
    pub async fn lookup(&self, capability: &str) -> Result<Vec<Vec<u8>>, ClientError> {
        match self
            .request(Body::Lookup {
                capability: capability.to_owned(),
            })
            .await?
        {
            Body::Listing { entries } => Ok(entries),
            other => Err(unexpected("listing", &other)),
        }
    }
}

/// Signs `entry` (whose `key` must be the signer's) for the relay
/// `relay_id`, filling in its signature.
pub fn sign_entry(entry: &mut directory::Entry, relay_id: &RelayId, signer: &dyn Signer) {
    entry.signature = signer.sign(&entry.signed_bytes(relay_id));
}

/// Parses an entry a relay returned and checks that its key signed it for
/// `relay_id`: a relay cannot make entries up or change them (it can still
/// leave some out, or return an older one of the same key).
pub fn verify_entry(bytes: &[u8], relay_id: &RelayId) -> Result<directory::Entry, String> {
    let entry = directory::Entry::decode(bytes).map_err(|e| e.to_string())?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(entry.key.as_bytes())
        .map_err(|_| "the entry's key is not an Ed25519 key".to_owned())?;
    let signature = ed25519_dalek::Signature::from_bytes(entry.signature.as_bytes());
    key.verify_strict(&entry.signed_bytes(relay_id), &signature)
        .map_err(|_| "the entry's signature does not verify".to_owned())?;
    Ok(entry)
}

fn unexpected(expected: &str, got: &Body) -> ClientError {
    ClientError::Protocol(format!(
        "expected {expected}, the relay answered {}",
        got.frame_type().name()
    ))
}

/// The task that owns the connection.
struct Actor {
    config: ClientConfig,
    signer: Arc<dyn Signer>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
    next_request_id: RequestId,
    /// The largest payload the connected relay accepts.
    max_payload: usize,
    /// Connections in a row that failed or did not last
    /// [`STABLE_CONNECTION`]; drives the backoff.
    failures: u32,
    /// Which of the relay's URLs the connection is to (0 for a relay with
    /// one URL); reconnecting tries it first, then the others in order.
    node: usize,
    waiting: HashMap<RequestId, oneshot::Sender<Result<Body, ClientError>>>,
}

/// A connection that lasted this long resets the backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// Frames queued for the writer task, at most.
const WRITE_BUFFER: usize = 64;

/// Why serving a connection ended.
enum Ended {
    /// The client was closed.
    Closed,
    /// The connection dropped; reconnect.
    Lost(String),
}

impl Actor {
    async fn run(mut self, mut connection: Connection, mut welcome: Welcome) {
        loop {
            self.max_payload =
                (welcome.max_frame_bytes as usize).saturating_sub(agentwire_wire::DELIVER_OVERHEAD);
            let connected_at = tokio::time::Instant::now();
            let ended = match self
                .emit(Event::Connected {
                    queued: welcome.queued,
                    relay_id: welcome.relay_id,
                    envelope_ttl: Duration::from_secs(welcome.envelope_ttl_secs),
                })
                .await
            {
                Some(ended) => ended,
                None => self.serve(connection).await,
            };
            for (_, answer) in self.waiting.drain() {
                let _ = answer.send(Err(ClientError::Disconnected));
            }
            let reason = match ended {
                Ended::Closed => return,
                Ended::Lost(reason) => reason,
            };
            if connected_at.elapsed() < STABLE_CONNECTION {
                self.failures = self.failures.saturating_add(1);
            } else {
                self.failures = 0;
            }
            tracing::debug!(%reason, "relay connection lost; reconnecting");
            if let Some(Ended::Closed) = self.emit(Event::Disconnected { reason }).await {
                return;
            }
            match self.reconnect().await {
                Ok((next, next_welcome)) => {
                    connection = next;
                    welcome = next_welcome;
                }
                Err(reason) => {
                    let _ = self.events.try_send(Event::Stopped { reason });
                    return;
                }
            }
        }
    }

    /// Serves one connection until it drops or the client is closed. A writer
    /// task sends frames so that reading never waits on a write: relay and
    /// client can both be sending large frames without blocking each other.
    async fn serve(&mut self, connection: Connection) -> Ended {
        let (mut sink, mut stream) = connection.into_parts();
        let (frames, mut to_write) = mpsc::channel::<Frame>(WRITE_BUFFER);
        let writer = tokio::spawn(async move {
            // Frames that are waiting together go out in one write.
            while let Some(frame) = to_write.recv().await {
                sink.feed(frame).await?;
                while let Ok(frame) = to_write.try_recv() {
                    sink.feed(frame).await?;
                }
                sink.flush().await?;
            }
            sink.close().await;
            Ok::<(), ClientError>(())
        });
        let _abort_writer = AbortOnDrop(writer.abort_handle());
        loop {
            let step = tokio::select! {
                biased;
                () = self.stop.cancelled() => Some(Ended::Closed),
                frame = stream.recv() => match frame {
                    Ok(frame) => self.dispatch(frame, &frames).await,
                    Err(error) => Some(Ended::Lost(error.to_string())),
                },
                command = self.commands.recv() => self.request(command, &frames).await,
            };
            if let Some(ended) = step {
                if matches!(ended, Ended::Closed) {
                    drop(frames);
                    // Let the writer flush and close politely, briefly.
                    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
                }
                return ended;
            }
        }
    }

    /// Sends one request to the relay (or refuses it locally).
    async fn request(
        &mut self,
        command: Option<Command>,
        frames: &mpsc::Sender<Frame>,
    ) -> Option<Ended> {
        let Some(Command::Request { body, answer }) = command else {
            return Some(Ended::Closed);
        };
        if let Body::Send { payload, .. } = &body
            && payload.len() > self.max_payload
        {
            // The relay would refuse it; a frame far over its limit would even
            // cost the connection. Refuse it here.
            let _ = answer.send(Err(ClientError::Rejected {
                code: agentwire_wire::ErrorCode::PayloadTooLarge,
                limit: self.max_payload as u64,
                message: format!(
                    "payload of {} bytes exceeds the relay's limit of {} bytes",
                    payload.len(),
                    self.max_payload
                ),
            }));
            return None;
        }
        let request_id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        if frames.send(Frame::new(request_id, body)).await.is_err() {
            let _ = answer.send(Err(ClientError::Disconnected));
            return Some(Ended::Lost("the connection's writer stopped".into()));
        }
        self.waiting.insert(request_id, answer);
        None
    }

    /// Routes one frame from the relay.
    async fn dispatch(&mut self, frame: Frame, frames: &mpsc::Sender<Frame>) -> Option<Ended> {
        let event = match frame.body {
            Body::Deliver {
                id,
                from,
                received_at_ms,
                payload,
            } => Event::Envelope(Envelope {
                id,
                from,
                received_at_ms,
                payload,
            }),
            Body::Expired {
                id,
                to,
                expired_at_ms,
            } => Event::Expired {
                id,
                to,
                expired_at_ms,
            },
            Body::Error {
                code,
                limit,
                message,
            } if !self.waiting.contains_key(&frame.request_id) => {
                // An error not tied to a request of ours: the relay is about
                // to close the connection.
                tracing::debug!(%code, limit, message = %untrusted_text(&message), "the relay is closing the connection");
                return Some(Ended::Lost(format!(
                    "the relay closed the connection: {} ({code})",
                    code.explain()
                )));
            }
            body => {
                if let Some(answer) = self.waiting.remove(&frame.request_id) {
                    let result = match body {
                        Body::Error {
                            code,
                            limit,
                            message,
                        } => Err(ClientError::Rejected {
                            code,
                            limit,
                            message: untrusted_text(&message),
                        }),
                        other => Ok(other),
                    };
                    let _ = answer.send(result);
                }
                return None;
            }
        };
        self.emit_serving(event, frames).await
    }

    /// Hands an event to the consumer. While its buffer is full, requests are
    /// still sent (a consumer typically acks from its event loop), but the
    /// relay is not read: backpressure, nothing is dropped.
    async fn emit_serving(&mut self, event: Event, frames: &mpsc::Sender<Frame>) -> Option<Ended> {
        let (events, stop) = (self.events.clone(), self.stop.clone());
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return Some(Ended::Closed),
                permit = events.reserve() => {
                    if let Ok(permit) = permit {
                        permit.send(event);
                    }
                    return None;
                }
                command = self.commands.recv() => {
                    if let Some(ended) = self.request(command, frames).await {
                        return Some(ended);
                    }
                }
            }
        }
    }

    /// Hands an event to the consumer outside a connection. A consumer that
    /// dropped [`Events`] gets nothing; envelopes it did not acknowledge stay
    /// queued at the relay.
    async fn emit(&self, event: Event) -> Option<Ended> {
        tokio::select! {
            biased;
            () = self.stop.cancelled() => Some(Ended::Closed),
            _ = self.events.send(event) => None,
        }
    }

    /// Reconnects with backoff until it works, the client is closed, or the
    /// relay refuses this client for a reason retrying cannot fix.
    async fn reconnect(&mut self) -> Result<(Connection, Welcome), ClientError> {
        loop {
            let delay = self.config.backoff.delay(self.failures.saturating_sub(1));
            let deadline = tokio::time::Instant::now() + delay;
            // Requests made while disconnected fail at once instead of waiting.
            loop {
                tokio::select! {
                    biased;
                    () = self.stop.cancelled() => return Err(ClientError::Closed),
                    () = tokio::time::sleep_until(deadline) => break,
                    command = self.commands.recv() => match command {
                        Some(Command::Request { answer, .. }) => {
                            let _ = answer.send(Err(ClientError::Disconnected));
                        }
                        None => return Err(ClientError::Closed),
                    },
                }
            }
            match Connection::open_from(&self.config, self.signer.as_ref(), self.node).await {
                Ok((connection, welcome, node)) => {
                    if node != self.node {
                        tracing::info!(
                            from = self.node,
                            to = node,
                            "the relay node did not answer; connected to another of its URLs"
                        );
                        self.node = node;
                    }
                    return Ok((connection, welcome));
                }
                Err(error) if error.is_permanent() => return Err(error),
                Err(error) => {
                    self.failures = self.failures.saturating_add(1);
                    tracing::debug!(%error, failures = self.failures, "reconnect failed");
                }
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The certificates in a PEM text, as DER, for [`ClientConfig::extra_roots`]
/// (e.g. a relay's self-signed certificate or a private CA). Fails on text
/// that holds no certificate or a damaged one.
pub fn roots_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let roots: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem)
        .map(|cert| {
            cert.map(|c| c.to_vec())
                .map_err(|e| format!("a damaged certificate ({e})"))
        })
        .collect::<Result<_, _>>()?;
    if roots.is_empty() {
        return Err("no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_bounds() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for attempt in 0..40 {
            let ceiling = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(20))
                .min(Duration::from_secs(2));
            let delay = backoff.delay(attempt);
            assert!(
                delay <= ceiling && delay >= ceiling / 2,
                "{attempt}: {delay:?}"
            );
        }
    }

    #[test]
    fn debug_of_a_config_hides_the_token() {
        let config = ClientConfig::new("ws://x").with_access_token("hunter2");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
