//! One WebSocket connection: challenge, authentication, then requests and
//! deliveries until either side closes or the relay shuts down.
//!
//! Each connection is one task that owns its socket (an actor). It reads
//! frames, hands store work to the store (several requests may wait for the
//! store at once, bounded by [`MAX_PENDING_REQUESTS_PER_CONNECTION`]), answers
//! them in completion order, and pushes deliveries when woken. Anything wrong
//! with this connection's input is answered with an error frame and, for the
//! fatal kinds, a close — it never affects another connection.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use agentwire_wire::{
    Body, DecodeError, EnvelopeId, ErrorCode, Frame, Nonce, PROTOCOL_VERSION, PublicKey, RequestId,
    Signature, directory,
};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;

use crate::config::{
    CLOSE_LINGER, DELIVERY_WINDOW, MAX_CONSECUTIVE_VIOLATIONS, MAX_PENDING_REQUESTS_PER_CONNECTION,
    SHUTDOWN_WRITE_TIMEOUT, WRITE_TIMEOUT,
};
use crate::metrics::FrameLabel;
use crate::rate::IpSlot;
use crate::server::{Shared, now_ms};
use crate::store::{ListOutcome, NewEnvelope, NewListing, PutOutcome, StoreError};

/// Envelopes read from the store per delivery batch, at most.
const FETCH_BATCH: usize = 64;
/// Expiry notices read from the store at once, at most.
const NOTICE_BATCH: usize = 256;
/// WebSocket close code for a protocol violation.
const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code for a message too big to process.
const CLOSE_TOO_BIG: u16 = 1009;
/// WebSocket close code for "going away" (relay shutting down).
const CLOSE_GOING_AWAY: u16 = 1001;

/// The connection is over; the reason has been sent (when possible).
struct Closed;

type Step = Result<(), Closed>;

/// A store request that finished, to be answered.
enum Done {
    Put {
        request_id: RequestId,
        id: EnvelopeId,
        to: PublicKey,
        result: Result<PutOutcome, StoreError>,
    },
    Ack {
        request_id: RequestId,
        id: EnvelopeId,
        result: Result<bool, StoreError>,
    },
    AckBatch {
        request_id: RequestId,
        ids: Vec<EnvelopeId>,
        result: Result<usize, StoreError>,
    },
    Dismiss {
        request_id: RequestId,
        id: EnvelopeId,
        to: PublicKey,
        result: Result<bool, StoreError>,
    },
    List {
        request_id: RequestId,
        listed_until_ms: u64,
        result: Result<ListOutcome, StoreError>,
    },
    Lookup {
        request_id: RequestId,
        result: Result<Vec<Vec<u8>>, StoreError>,
    },
}

type Pending = FuturesUnordered<Pin<Box<dyn Future<Output = Done> + Send>>>;

/// What one read from the socket produced.
enum Inbound {
    Frame(Frame),
    /// Nothing to act on (a control message, or a refused frame that has been
    /// answered).
    Nothing,
    Closed,
    /// The connection keeps ignoring the rate limits: it is to be closed,
    /// once the requests it has in progress are answered.
    Abusive,
}

struct Conn {
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    /// Rate-limit violations in a row.
    violations: u32,
    last_seen: Instant,
}

/// The connection slots a new connection got (or did not get).
pub(crate) struct Admission {
    /// One of the relay's `max_connections`.
    pub(crate) global: Option<OwnedSemaphorePermit>,
    /// One of its IP address's `max_connections_per_ip`.
    pub(crate) ip: Option<IpSlot>,
}

/// Runs one connection to its end.
pub(crate) async fn run(
    socket: WebSocket,
    peer: SocketAddr,
    shared: Arc<Shared>,
    admission: Admission,
) {
    let conn_id = shared.next_conn_id();
    let (sink, stream) = socket.split();
    let mut conn = Conn {
        sink,
        stream,
        peer,
        shared: shared.clone(),
        violations: 0,
        last_seen: Instant::now(),
    };
    let Some(_permit) = admission.global else {
        let limit = shared.limits.max_connections as u64;
        let _ = conn
            .refuse(
                0,
                ErrorCode::TooManyConnections,
                limit,
                format!("the relay already serves its limit of {limit} connections; retry later"),
            )
            .await;
        return;
    };
    let Some(_ip_slot) = admission.ip else {
        let limit = shared.ip_connections.limit() as u64;
        let _ = conn
            .refuse(
                0,
                ErrorCode::TooManyIpConnections,
                limit,
                format!(
                    "this IP address already has its limit of {limit} connections open; close some"
                ),
            )
            .await;
        return;
    };
    shared.metrics.connections.inc();
    if let Ok((key, hello_id)) = conn.authenticate().await {
        tracing::debug!(conn = conn_id, %peer, key = %key.short_id(), "authenticated");
        let wakers = shared.wakers.register(key, conn_id);
        let mut session = Session {
            key,
            cursor: 0,
            in_flight: HashMap::new(),
            window_full: false,
            notices_sent: HashSet::new(),
            pending: Pending::new(),
        };
        let _ = conn.serve(&mut session, hello_id, &wakers).await;
        shared.wakers.unregister(key, conn_id);
        tracing::debug!(conn = conn_id, key = %key.short_id(), "connection closed");
    }
    shared.metrics.connections.dec();
}

/// Per-connection state after authentication.
struct Session {
    key: PublicKey,
    /// Highest store sequence number pushed on this connection.
    cursor: i64,
    /// Delivered on this connection and not yet acknowledged, with when.
    in_flight: HashMap<EnvelopeId, Instant>,
    /// The last delivery pump stopped because the window was full.
    window_full: bool,
    notices_sent: HashSet<(EnvelopeId, PublicKey)>,
    pending: Pending,
}

impl Conn {
    /// How long one write may take: short once shutdown has begun, so that
    /// shutdown stays bounded even with a client that does not read.
    fn write_timeout(&self) -> std::time::Duration {
        if self.shared.shutdown.is_cancelled() {
            SHUTDOWN_WRITE_TIMEOUT
        } else {
            WRITE_TIMEOUT
        }
    }

    /// Sends one frame; a failed or timed-out write ends the connection.
    async fn send(&mut self, frame: Frame) -> Step {
        self.feed(frame).await?;
        self.flush().await
    }

    /// Queues one frame for the socket without writing it out: frames fed
    /// together leave in one write at the next [`Conn::flush`] (or once
    /// they fill the WebSocket layer's write buffer).
    async fn feed(&mut self, frame: Frame) -> Step {
        let label = FrameLabel {
            r#type: frame.body.frame_type().name(),
        };
        let bytes = frame.encode();
        let len = bytes.len() as u64;
        match tokio::time::timeout(
            self.write_timeout(),
            self.sink.feed(Message::Binary(bytes.into())),
        )
        .await
        {
            Ok(Ok(())) => {
                self.shared.metrics.frames_out.get_or_create(&label).inc();
                self.shared.metrics.bytes_out.inc_by(len);
                Ok(())
            }
            Ok(Err(_)) | Err(_) => Err(Closed),
        }
    }

    /// Writes out what was fed.
    async fn flush(&mut self) -> Step {
        match tokio::time::timeout(self.write_timeout(), self.sink.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(Closed),
        }
    }

    /// Answers `request_id` with an error frame; closes the connection when
    /// the code says so.
    async fn refuse(
        &mut self,
        request_id: RequestId,
        code: ErrorCode,
        limit: u64,
        message: String,
    ) -> Step {
        self.shared.metrics.reject(code.name());
        tracing::debug!(peer = %self.peer, code = code.name(), %message, "refused");
        self.send(Frame::new(
            request_id,
            Body::Error {
                code,
                limit,
                message,
            },
        ))
        .await?;
        if code.closes_connection() {
            let close_code = if code == ErrorCode::ShuttingDown {
                CLOSE_GOING_AWAY
            } else {
                CLOSE_POLICY
            };
            self.close(close_code, code.name()).await;
            return Err(Closed);
        }
        Ok(())
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(self.write_timeout(), self.sink.send(frame)).await;
        // Lingering close: read and drop what the client sent meanwhile
        // until it answers the close (briefly). Closing a socket with
        // unread data makes the kernel reset the connection, and a reset
        // can destroy at the client the frames sent just before the close
        // (the errors that say why).
        let linger = self.write_timeout().min(CLOSE_LINGER);
        let _ = tokio::time::timeout(linger, async {
            while let Some(Ok(message)) = self.stream.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
        let _ = tokio::time::timeout(self.write_timeout(), self.sink.close()).await;
    }

    /// Interprets one message from the socket: limits, decoding, control
    /// messages. `key` is the authenticated key, once there is one.
    async fn receive(
        &mut self,
        message: Option<Result<Message, axum::Error>>,
        key: Option<PublicKey>,
    ) -> Result<Inbound, Closed> {
        let limits = &self.shared.limits;
        let max_frame = u64::from(limits.max_frame_bytes);
        let bytes = match message {
            None | Some(Ok(Message::Close(_))) => return Ok(Inbound::Closed),
            Some(Err(error)) => {
                if is_capacity_error(error) {
                    self.shared.metrics.reject(ErrorCode::FrameTooLarge.name());
                    let _ = self
                        .send(Frame::new(
                            0,
                            Body::Error {
                                code: ErrorCode::FrameTooLarge,
                                limit: max_frame,
                                message: format!(
                                    "a frame far beyond the limit of {max_frame} bytes was cut off; closing"
                                ),
                            },
                        ))
                        .await;
                    self.close(CLOSE_TOO_BIG, "frame_too_large").await;
                }
                return Ok(Inbound::Closed);
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                self.last_seen = Instant::now();
                return Ok(Inbound::Nothing);
            }
            Some(Ok(Message::Text(_))) => {
                self.refuse(
                    0,
                    ErrorCode::Malformed,
                    0,
                    "text messages are not part of the protocol; send binary frames (PROTOCOL.md)"
                        .into(),
                )
                .await?;
                return Ok(Inbound::Closed);
            }
            Some(Ok(Message::Binary(bytes))) => bytes,
        };
        self.last_seen = Instant::now();
        self.shared.metrics.bytes_in.inc_by(bytes.len() as u64);
        let header = Frame::peek_header(&bytes);
        let request_id = header.map_or(0, |(_, _, id)| id);
        // Acks only ever follow the relay's own deliveries (which are
        // bounded by the delivery window): a key's rate must never throttle
        // them below the rate the relay delivers at, or draining a backlog
        // would stall. They still count toward the address's rate.
        let is_ack = header.is_some_and(|(_, tag, _)| {
            tag == agentwire_wire::FrameType::Ack as u8
                || tag == agentwire_wire::FrameType::AckBatch as u8
        });

        let now = Instant::now();
        if !self.shared.ip_rate.allow(self.peer.ip(), now) {
            let limit = self.shared.ip_rate.limit().per_sec;
            return self
                .violation(
                    request_id,
                    ErrorCode::IpRateLimited,
                    limit,
                    format!("more than {limit} frames per second from this IP address; slow down"),
                )
                .await;
        }
        if let Some(key) = key
            && !is_ack
            && !self.shared.key_rate.allow(key, now)
        {
            let limit = self.shared.key_rate.limit().per_sec;
            return self
                .violation(
                    request_id,
                    ErrorCode::KeyRateLimited,
                    limit,
                    format!("more than {limit} frames per second from this key; slow down"),
                )
                .await;
        }
        if bytes.len() as u64 > max_frame {
            self.refuse(
                request_id,
                ErrorCode::FrameTooLarge,
                max_frame,
                format!(
                    "frame of {} bytes exceeds the limit of {max_frame} bytes",
                    bytes.len()
                ),
            )
            .await?;
            return Ok(Inbound::Nothing);
        }
        self.violations = 0;
        match Frame::decode(&bytes) {
            Ok(frame) => {
                let label = FrameLabel {
                    r#type: frame.body.frame_type().name(),
                };
                self.shared.metrics.frames_in.get_or_create(&label).inc();
                Ok(Inbound::Frame(frame))
            }
            Err(error @ DecodeError::UnsupportedVersion { .. }) => {
                self.refuse(
                    request_id,
                    ErrorCode::UnsupportedVersion,
                    u64::from(PROTOCOL_VERSION),
                    format!("{error}; upgrade or downgrade the client"),
                )
                .await?;
                Ok(Inbound::Closed)
            }
            Err(error) => {
                self.refuse(
                    error.request_id().unwrap_or(0),
                    ErrorCode::Malformed,
                    0,
                    format!("malformed frame: {error}"),
                )
                .await?;
                Ok(Inbound::Closed)
            }
        }
    }

    /// Answers a rate-limit violation; closes after too many in a row.
    async fn violation(
        &mut self,
        request_id: RequestId,
        code: ErrorCode,
        limit: u32,
        message: String,
    ) -> Result<Inbound, Closed> {
        self.violations += 1;
        self.refuse(request_id, code, u64::from(limit), message)
            .await?;
        if self.violations >= MAX_CONSECUTIVE_VIOLATIONS {
            // The peer's address only at debug level: SECURITY.md promises
            // that client addresses stay out of info-level logs.
            tracing::info!("closing a connection that ignores rate limits");
            tracing::debug!(peer = %self.peer, "that connection's address");
            return Ok(Inbound::Abusive);
        }
        Ok(Inbound::Nothing)
    }

    /// Sends the challenge and waits for a valid hello. Returns the key and
    /// the hello's request id.
    async fn authenticate(&mut self) -> Result<(PublicKey, RequestId), Closed> {
        let mut nonce = [0u8; 32];
        if getrandom::fill(&mut nonce).is_err() {
            return Err(Closed);
        }
        let nonce = Nonce::from_bytes(nonce);
        let issued_at_ms = now_ms();
        let relay_id = self.shared.relay_id;
        self.send(Frame::new(
            0,
            Body::Challenge {
                relay_id,
                nonce,
                issued_at_ms,
            },
        ))
        .await?;
        let timeout = self.shared.limits.auth_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::select! {
                biased;
                () = self.shared.shutdown.cancelled() => {
                    self.close(CLOSE_GOING_AWAY, "shutting_down").await;
                    return Err(Closed);
                }
                message = tokio::time::timeout_at(deadline, self.stream.next()) => message,
            };
            let Ok(message) = message else {
                let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                self.refuse(
                    0,
                    ErrorCode::ChallengeExpired,
                    ms,
                    format!("no hello within {ms} ms of the challenge; answer it sooner"),
                )
                .await?;
                return Err(Closed);
            };
            let frame = match self.receive(message, None).await? {
                Inbound::Frame(frame) => frame,
                Inbound::Nothing => continue,
                Inbound::Closed => return Err(Closed),
                Inbound::Abusive => {
                    self.close(CLOSE_POLICY, "rate_limit_abuse").await;
                    return Err(Closed);
                }
            };
            let request_id = frame.request_id;
            let (hello_nonce, key, signature, token) = match frame.body {
                Body::Hello {
                    nonce,
                    public_key,
                    signature,
                    access_token,
                } => (nonce, public_key, signature, access_token),
                other => {
                    let (code, message) = if other.frame_type().is_client_to_relay() {
                        (
                            ErrorCode::NotAuthenticated,
                            "answer the challenge with a hello before any request",
                        )
                    } else {
                        (
                            ErrorCode::UnexpectedFrame,
                            "clients may send only hello, send, ack, ack_batch, dismiss, publish and lookup frames",
                        )
                    };
                    self.refuse(request_id, code, 0, message.into()).await?;
                    return Err(Closed);
                }
            };
            if let Some(expected) = &self.shared.access_token
                && !expected.matches(&token)
            {
                let message = if token.is_empty() {
                    "this relay requires an access token; ask its operator for it"
                } else {
                    "wrong access token"
                };
                self.refuse(request_id, ErrorCode::AccessDenied, 0, message.into())
                    .await?;
                return Err(Closed);
            }
            if hello_nonce != nonce {
                self.refuse(
                    request_id,
                    ErrorCode::ChallengeMismatch,
                    0,
                    "the hello answers another challenge (replayed?); sign this connection's challenge"
                        .into(),
                )
                .await?;
                return Err(Closed);
            }
            if !verify(&key, &signature, &relay_id, &nonce, issued_at_ms) {
                self.refuse(
                    request_id,
                    ErrorCode::BadSignature,
                    0,
                    "the signature does not verify for this public key".into(),
                )
                .await?;
                return Err(Closed);
            }
            return Ok((key, request_id));
        }
    }

    /// The authenticated part of the connection.
    async fn serve(
        &mut self,
        session: &mut Session,
        hello_id: RequestId,
        wakers: &crate::wakers::ConnWakers,
    ) -> Step {
        let queued = match self.shared.store.depth(session.key).await {
            Ok(queued) => queued,
            Err(error) => {
                self.internal(hello_id, error).await?;
                self.close(1011, "internal").await;
                return Err(Closed);
            }
        };
        let limits = &self.shared.limits;
        let welcome = Body::Welcome {
            relay_id: self.shared.relay_id,
            max_frame_bytes: limits.max_frame_bytes,
            envelope_ttl_secs: limits.envelope_ttl.as_secs(),
            queued: u32::try_from(queued).unwrap_or(u32::MAX),
        };
        self.send(Frame::new(hello_id, welcome)).await?;
        self.pump_deliveries(session).await?;
        self.pump_notices(session).await?;

        let shutdown = self.shared.shutdown.clone();
        let mut ping = tokio::time::interval(self.shared.limits.ping_interval);
        ping.tick().await;
        let mut abusive = false;
        let outcome = loop {
            let step = tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(()),
                Some(done) = session.pending.next(), if !session.pending.is_empty() => {
                    self.complete_ready(done, session).await
                }
                () = wakers.deliveries.notified() => self.pump_deliveries(session).await,
                () = wakers.notices.notified() => self.pump_notices(session).await,
                _ = ping.tick() => self.keepalive(session).await,
                message = self.stream.next(),
                    if session.pending.len() < MAX_PENDING_REQUESTS_PER_CONNECTION =>
                {
                    match self.receive(message, Some(session.key)).await {
                        Ok(Inbound::Frame(frame)) => self.handle(frame, session).await,
                        Ok(Inbound::Nothing) => Ok(()),
                        Ok(Inbound::Closed) | Err(Closed) => Err(Closed),
                        Ok(Inbound::Abusive) => {
                            abusive = true;
                            Err(Closed)
                        }
                    }
                }
            };
            if step.is_err() {
                break Err(Closed);
            }
        };
        // Whatever the store is still doing for this connection finishes and
        // is answered if the socket still works: an envelope committed is an
        // envelope accepted.
        while let Some(done) = session.pending.next().await {
            let _ = self.complete(done, session).await;
        }
        let _ = self.flush().await;
        if abusive {
            // Closed only now: the answers above reached the client first.
            self.close(CLOSE_POLICY, "rate_limit_abuse").await;
        }
        if outcome.is_ok() {
            let _ = self
                .refuse(
                    0,
                    ErrorCode::ShuttingDown,
                    0,
                    "the relay is shutting down; reconnect later".into(),
                )
                .await;
        }
        outcome
    }

    /// Pings the client, closes a silent connection, and stops counting
    /// deliveries that have waited a whole interval for an ack against the
    /// window (acked on another connection of the same key, or an ack that
    /// was refused): they stay queued and come again on the next connection.
    async fn keepalive(&mut self, session: &mut Session) -> Step {
        let interval = self.shared.limits.ping_interval;
        if session.window_full {
            session
                .in_flight
                .retain(|_, sent| sent.elapsed() < interval);
            if session.in_flight.len() < DELIVERY_WINDOW {
                self.pump_deliveries(session).await?;
            }
        }
        if self.last_seen.elapsed() > interval * 3 {
            tracing::debug!(peer = %self.peer, "closing a silent connection");
            self.close(CLOSE_POLICY, "idle").await;
            return Err(Closed);
        }
        tokio::time::timeout(
            self.write_timeout(),
            self.sink.send(Message::Ping(Default::default())),
        )
        .await
        .map_err(|_| Closed)?
        .map_err(|_| Closed)
    }

    /// Acts on one authenticated request.
    async fn handle(&mut self, frame: Frame, session: &mut Session) -> Step {
        let request_id = frame.request_id;
        let store = self.shared.store.clone();
        match frame.body {
            Body::Send { to, id, payload } => {
                let max_payload = self.shared.limits.max_payload_bytes();
                if payload.len() > max_payload {
                    return self
                        .refuse(
                            request_id,
                            ErrorCode::PayloadTooLarge,
                            max_payload as u64,
                            format!(
                                "payload of {} bytes exceeds the limit of {max_payload} bytes",
                                payload.len()
                            ),
                        )
                        .await;
                }
                let received_at_ms = now_ms();
                let ttl_ms =
                    u64::try_from(self.shared.limits.envelope_ttl.as_millis()).unwrap_or(u64::MAX);
                let envelope = NewEnvelope {
                    sender: session.key,
                    recipient: to,
                    id,
                    payload,
                    received_at_ms,
                    expires_at_ms: received_at_ms.saturating_add(ttl_ms),
                };
                let limits = &self.shared.limits;
                let (max_queue, max_per_sender) =
                    (limits.max_queue_per_recipient, limits.max_queue_per_sender);
                session.pending.push(Box::pin(async move {
                    Done::Put {
                        request_id,
                        id,
                        to,
                        result: store.put(envelope, max_queue, max_per_sender).await,
                    }
                }));
                Ok(())
            }
            Body::Ack { id } => {
                let key = session.key;
                session.pending.push(Box::pin(async move {
                    Done::Ack {
                        request_id,
                        id,
                        result: store.ack(key, id).await,
                    }
                }));
                Ok(())
            }
            Body::AckBatch { ids } => {
                let key = session.key;
                session.pending.push(Box::pin(async move {
                    let result = store.ack_batch(key, ids.clone()).await;
                    Done::AckBatch {
                        request_id,
                        ids,
                        result,
                    }
                }));
                Ok(())
            }
            Body::Dismiss { id, to } => {
                let key = session.key;
                session.pending.push(Box::pin(async move {
                    Done::Dismiss {
                        request_id,
                        id,
                        to,
                        result: store.dismiss(key, to, id).await,
                    }
                }));
                Ok(())
            }
            Body::Publish { .. } | Body::Lookup { .. }
                if self.shared.limits.max_directory_entries == 0 =>
            {
                self.refuse(
                    request_id,
                    ErrorCode::DirectoryDisabled,
                    0,
                    "this relay keeps no directory".into(),
                )
                .await
            }
            Body::Publish { entry } => {
                let listing =
                    match check_entry(&entry, session.key, &self.shared.relay_id, now_ms()) {
                        Ok(listing) => listing,
                        Err(why) => {
                            return self
                                .refuse(
                                    request_id,
                                    ErrorCode::InvalidEntry,
                                    directory::MAX_ENTRY_CLOCK_SKEW_MS,
                                    why,
                                )
                                .await;
                        }
                    };
                let max_entries = self.shared.limits.max_directory_entries;
                let listed_until_ms = listing.listed_until_ms;
                session.pending.push(Box::pin(async move {
                    Done::List {
                        request_id,
                        listed_until_ms,
                        result: store.list(listing, max_entries).await,
                    }
                }));
                Ok(())
            }
            Body::Lookup { capability } => {
                // A tag no entry can carry matches nothing.
                if !capability.is_empty() && !directory::is_tag(&capability) {
                    return self
                        .send(Frame::new(request_id, Body::Listing { entries: vec![] }))
                        .await;
                }
                session.pending.push(Box::pin(async move {
                    Done::Lookup {
                        request_id,
                        result: store
                            .lookup(capability, now_ms(), directory::MAX_LISTING)
                            .await,
                    }
                }));
                Ok(())
            }
            Body::Hello { .. } => {
                self.refuse(
                    request_id,
                    ErrorCode::AlreadyAuthenticated,
                    0,
                    "this connection is already authenticated".into(),
                )
                .await
            }
            _ => {
                self.refuse(
                    request_id,
                    ErrorCode::UnexpectedFrame,
                    0,
                    "clients may send only hello, send, ack, dismiss, publish and lookup frames"
                        .into(),
                )
                .await
            }
        }
    }

    /// Answers a finished store request and every other one that has
    /// finished too (a group commit finishes many at once), then writes the
    /// answers out together.
    async fn complete_ready(&mut self, done: Done, session: &mut Session) -> Step {
        use futures_util::FutureExt;
        self.complete(done, session).await?;
        while let Some(Some(done)) = session.pending.next().now_or_never() {
            self.complete(done, session).await?;
        }
        self.flush().await
    }

    /// Answers a finished store request (fed: the caller flushes).
    async fn complete(&mut self, done: Done, session: &mut Session) -> Step {
        match done {
            Done::Put {
                request_id,
                id,
                to,
                result,
            } => match result {
                Ok(PutOutcome::Stored) => {
                    self.shared.wakers.wake_deliveries(&to);
                    self.feed(Frame::new(request_id, Body::Accepted { id })).await
                }
                Ok(PutOutcome::Duplicate) => {
                    self.feed(Frame::new(request_id, Body::Accepted { id })).await
                }
                Ok(PutOutcome::IdConflict) => {
                    self.refuse(
                        request_id,
                        ErrorCode::IdConflict,
                        0,
                        format!("envelope id {id} is already used by another sender for this recipient; pick a fresh id"),
                    )
                    .await
                }
                Ok(PutOutcome::QueueFull) => {
                    let limit = self.shared.limits.max_queue_per_recipient;
                    self.refuse(
                        request_id,
                        ErrorCode::QueueFull,
                        u64::from(limit),
                        format!("the recipient already has {limit} envelopes queued; retry later"),
                    )
                    .await
                }
                Ok(PutOutcome::SenderShareFull) => {
                    let limit = self.shared.limits.max_queue_per_sender;
                    self.refuse(
                        request_id,
                        ErrorCode::QueueFull,
                        u64::from(limit),
                        format!("the recipient already has {limit} envelopes queued from this sender, its share of the queue; retry later"),
                    )
                    .await
                }
                Err(error) => self.internal(request_id, error).await,
            },
            Done::Ack {
                request_id,
                id,
                result,
            } => match result {
                Ok(_) => {
                    session.in_flight.remove(&id);
                    self.feed(Frame::new(request_id, Body::Acked { id })).await?;
                    self.refill(session).await
                }
                Err(error) => {
                    // Still queued: it comes again on the next connection.
                    // It no longer holds a place in this one's window, or a
                    // few refused acks (a full disk) would stall deliveries
                    // until the next keepalive.
                    session.in_flight.remove(&id);
                    self.internal(request_id, error).await?;
                    self.refill(session).await
                }
            },
            Done::AckBatch {
                request_id,
                ids,
                result,
            } => match result {
                Ok(_) => {
                    for id in &ids {
                        session.in_flight.remove(id);
                    }
                    let count = u16::try_from(ids.len()).unwrap_or(u16::MAX);
                    self.feed(Frame::new(request_id, Body::AckedBatch { count }))
                        .await?;
                    self.refill(session).await
                }
                Err(error) => {
                    // As for a single ack: still queued, out of the window.
                    for id in &ids {
                        session.in_flight.remove(id);
                    }
                    self.internal(request_id, error).await?;
                    self.refill(session).await
                }
            },
            Done::Dismiss {
                request_id,
                id,
                to,
                result,
            } => match result {
                Ok(_) => {
                    session.notices_sent.remove(&(id, to));
                    self.feed(Frame::new(request_id, Body::Dismissed { id }))
                        .await?;
                    // A dismissal makes room for notices beyond the last batch.
                    self.pump_notices(session).await
                }
                Err(error) => self.internal(request_id, error).await,
            },
            Done::List {
                request_id,
                listed_until_ms,
                result,
            } => match result {
                Ok(ListOutcome::Stored) => {
                    self.send(Frame::new(
                        request_id,
                        Body::Published {
                            expires_at_ms: listed_until_ms,
                        },
                    ))
                    .await
                }
                Ok(ListOutcome::Stale) => {
                    self.refuse(
                        request_id,
                        ErrorCode::InvalidEntry,
                        0,
                        "this key already has an entry as new or newer; publish a fresh one".into(),
                    )
                    .await
                }
                Ok(ListOutcome::Full) => {
                    let limit = self.shared.limits.max_directory_entries;
                    self.refuse(
                        request_id,
                        ErrorCode::DirectoryFull,
                        u64::from(limit),
                        format!("the directory already lists {limit} keys; retry later"),
                    )
                    .await
                }
                Err(error) => self.internal(request_id, error).await,
            },
            Done::Lookup { request_id, result } => match result {
                Ok(entries) => {
                    self.send(Frame::new(request_id, Body::Listing { entries }))
                        .await
                }
                Err(error) => self.internal(request_id, error).await,
            },
        }
    }

    /// Refills a full window only once half of it is acknowledged, so that
    /// reads from the store come in batches rather than one envelope per
    /// ack.
    async fn refill(&mut self, session: &mut Session) -> Step {
        if session.window_full && session.in_flight.len() <= DELIVERY_WINDOW / 2 {
            self.pump_deliveries(session).await?;
        }
        Ok(())
    }

    async fn internal(&mut self, request_id: RequestId, error: StoreError) -> Step {
        self.shared.log_store_failure(&error);
        let message = if matches!(error, StoreError::Unavailable(_)) {
            "the relay's database does not answer, so nothing was stored or changed; retry later"
        } else {
            "the relay could not complete the request; retry later"
        };
        self.refuse(request_id, ErrorCode::Internal, 0, message.into())
            .await
    }

    /// Pushes queued envelopes past the cursor, up to the delivery window.
    async fn pump_deliveries(&mut self, session: &mut Session) -> Step {
        loop {
            let room = DELIVERY_WINDOW.saturating_sub(session.in_flight.len());
            session.window_full = room == 0;
            if room == 0 {
                return Ok(());
            }
            let want = room.min(FETCH_BATCH);
            let batch = match self
                .shared
                .store
                .fetch(session.key, session.cursor, now_ms(), want)
                .await
            {
                Ok(batch) => batch,
                Err(error) => {
                    // Without a way to read the queue this connection cannot
                    // make progress; the client reconnects and resumes.
                    self.shared.log_store_failure(&error);
                    self.close(1011, "internal").await;
                    return Err(Closed);
                }
            };
            let got = batch.len();
            for envelope in batch {
                if self.shared.shutdown.is_cancelled() {
                    return Ok(());
                }
                session.cursor = envelope.seq;
                session.in_flight.insert(envelope.id, Instant::now());
                self.feed(Frame::new(
                    0,
                    Body::Deliver {
                        id: envelope.id,
                        from: envelope.sender,
                        received_at_ms: envelope.received_at_ms,
                        payload: envelope.payload,
                    },
                ))
                .await?;
            }
            // The batch leaves in one write, before the next store read.
            self.flush().await?;
            if got < want {
                return Ok(());
            }
        }
    }

    /// Sends expiry notices this connection has not sent yet.
    async fn pump_notices(&mut self, session: &mut Session) -> Step {
        let notices = match self.shared.store.notices(session.key, NOTICE_BATCH).await {
            Ok(notices) => notices,
            Err(error) => {
                tracing::error!(%error, "cannot read expiry notices");
                return Ok(());
            }
        };
        for notice in notices {
            if session.notices_sent.insert((notice.id, notice.recipient)) {
                self.send(Frame::new(
                    0,
                    Body::Expired {
                        id: notice.id,
                        to: notice.recipient,
                        expired_at_ms: notice.expired_at_ms,
                    },
                ))
                .await?;
            }
        }
        Ok(())
    }
}

fn verify(
    key: &PublicKey,
    signature: &Signature,
    relay_id: &agentwire_wire::RelayId,
    nonce: &Nonce,
    issued_at_ms: u64,
) -> bool {
    let Ok(verifying_key) = ed25519_dalek::VerifyingKey::from_bytes(key.as_bytes()) else {
        return false;
    };
    let message = agentwire_wire::auth_message(relay_id, nonce, issued_at_ms, key);
    let signature = ed25519_dalek::Signature::from_bytes(signature.as_bytes());
    verifying_key.verify_strict(&message, &signature).is_ok()
}

/// Checks a published entry: well formed, `key`'s own, signed by it for
/// this relay, made within the clock skew of `now_ms`, listed for at most
/// the longest lifetime. Says what is wrong otherwise.
fn check_entry(
    bytes: &[u8],
    key: PublicKey,
    relay_id: &agentwire_wire::RelayId,
    now_ms: u64,
) -> Result<NewListing, String> {
    use directory::{MAX_ENTRY_CLOCK_SKEW_MS, MAX_ENTRY_LIFETIME_MS};
    let entry = directory::Entry::decode(bytes).map_err(|e| e.to_string())?;
    if entry.key != key {
        return Err("the entry is for another key; publish your own".into());
    }
    let Ok(verifying_key) = ed25519_dalek::VerifyingKey::from_bytes(key.as_bytes()) else {
        return Err("the entry's key is not an Ed25519 key".into());
    };
    let signature = ed25519_dalek::Signature::from_bytes(entry.signature.as_bytes());
    if verifying_key
        .verify_strict(&entry.signed_bytes(relay_id), &signature)
        .is_err()
    {
        return Err("the entry's signature does not verify for this key and relay".into());
    }
    if entry.published_at_ms.abs_diff(now_ms) > MAX_ENTRY_CLOCK_SKEW_MS {
        return Err(format!(
            "the entry was made at {} but the relay's clock says {now_ms}; fix the clock (at most {MAX_ENTRY_CLOCK_SKEW_MS} ms apart)",
            entry.published_at_ms
        ));
    }
    let listed_until_ms = if entry.is_withdrawal() {
        0
    } else {
        if entry.expires_at_ms <= now_ms
            || entry.expires_at_ms - entry.published_at_ms.min(entry.expires_at_ms)
                > MAX_ENTRY_LIFETIME_MS
        {
            return Err(format!(
                "the entry must expire in the future and at most {MAX_ENTRY_LIFETIME_MS} ms after it was made"
            ));
        }
        entry.expires_at_ms
    };
    // Forgotten no sooner than an older entry could still pass the clock
    // check, so that a replayed older entry finds this one and is refused.
    let forget_at_ms =
        listed_until_ms.max(entry.published_at_ms.max(now_ms) + MAX_ENTRY_CLOCK_SKEW_MS);
    Ok(NewListing {
        key,
        published_at_ms: entry.published_at_ms,
        listed_until_ms,
        forget_at_ms,
        capabilities: entry.capabilities,
        entry: bytes.to_vec(),
    })
}

fn is_capacity_error(error: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    let inner = error.into_inner();
    matches!(inner.downcast_ref::<Error>(), Some(Error::Capacity(_)))
}
