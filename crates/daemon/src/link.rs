//! One relay link per identity: a task that keeps the identity's relay
//! connection up (reconnecting with backoff), hands what arrives to the
//! receive pipeline, and pushes the outbox. It owns no state of its own
//! beyond the connection; what it learns goes into the store and the
//! daemon's side tables.
//!
//! While connected, the link runs two loops: receiving (bursts of envelopes
//! committed together, acknowledged without waiting for each answer) and the
//! outbox pump (its own task, up to [`SEND_WINDOW`] sends in flight, the
//! resulting states recorded in one store job per round).

use std::collections::HashSet;
use std::sync::{Arc, Mutex as StdMutex};

use agentwire_api::DeliveryState;
use agentwire_client::{ClientConfig, ClientError, Event, Events, RelayClient};
use agentwire_session::{Identity, MessageId, Name};
use agentwire_wire::{EnvelopeId, PublicKey, Signature};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, ErrorCode};
use crate::core::{Daemon, now_ms};

/// Outgoing messages read from the store per round.
const OUTBOX_BATCH: usize = 256;
/// Sends in flight to the relay per identity (under the relay's limit of
/// pending requests per connection, and under the receiver's tolerance for
/// messages of one session arriving out of order).
const SEND_WINDOW: usize = 32;
/// Reconnecting to the relay: soon after it comes back (a relay restart
/// takes seconds), with jitter so that many clients do not come at once.
const RECONNECT: agentwire_client::Backoff = agentwire_client::Backoff {
    initial: std::time::Duration::from_millis(100),
    max: std::time::Duration::from_secs(3),
};
/// Envelopes taken from the relay and committed together, at most.
const RECEIVE_BURST: usize = 256;
/// How often a link looks at its outbox anyway, and the longest it waits to
/// retry messages the relay did not accept yet.
const OUTBOX_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
/// The first wait before retrying messages the relay declined for now (rate
/// limit, queue full); it doubles up to [`OUTBOX_RETRY`].
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(250);

/// Signs relay challenges with an identity held by the daemon.
struct IdentitySigner {
    identity: Arc<StdMutex<Identity>>,
    address: PublicKey,
}

/// The certificates of a stored `relay_ca` setting, for the client.
pub(crate) fn extra_roots(ca: Option<&str>) -> Result<Vec<Vec<u8>>, ApiError> {
    match ca {
        None => Ok(Vec::new()),
        Some(pem) => agentwire_client::roots_from_pem(pem.as_bytes()).map_err(|e| {
            ApiError::invalid(format!("the relay's CA certificates do not read: {e}"))
        }),
    }
}

/// Checks a relay URL as a user gave it (one URL, or the comma-separated
/// URLs of a relay cluster's nodes) and returns it in its stored form.
pub(crate) fn relay_url_setting(url: &str) -> Result<String, ApiError> {
    let joined = agentwire_client::relay_urls(url)
        .map(|urls| urls.join(","))
        .map_err(|error| ApiError::invalid(error.to_string()))?;
    // Invites carry it whole.
    let limit = agentwire_session::invite::MAX_RELAY_URL_LEN;
    if joined.len() > limit {
        return Err(ApiError::invalid(format!(
            "the relay URLs are {} bytes together; the limit is {limit}",
            joined.len()
        )));
    }
    Ok(joined)
}

/// Whether two relay settings name a common node (the relay ids, checked
/// after connecting, say whether they are the same relay).
pub(crate) fn share_a_node(a: &str, b: &str) -> bool {
    let nodes = |list: &str| -> Vec<String> {
        list.split(',')
            .map(|url| url.trim().trim_end_matches('/').to_owned())
            .collect()
    };
    let b = nodes(b);
    nodes(a).iter().any(|url| b.contains(url))
}

/// Checks that a relay answers at `url` and takes `token`: connects with a
/// throwaway key, waits for the relay's welcome, and hangs up. A relay
/// with several URLs (a cluster) must answer at each.
pub(crate) async fn probe_relay(
    url: &str,
    token: Option<&str>,
    ca: Option<&str>,
) -> Result<(), ApiError> {
    let urls = agentwire_client::relay_urls(url).map_err(|e| ApiError::invalid(e.to_string()))?;
    for url in &urls {
        probe_one(url, token, ca).await?;
    }
    Ok(())
}

async fn probe_one(url: &str, token: Option<&str>, ca: Option<&str>) -> Result<(), ApiError> {
    let name = Name::new("probe").map_err(|e| crate::api::internal("a probe name", e))?;
    let identity = Identity::generate(name);
    let address = identity.address();
    let signer = IdentitySigner {
        identity: Arc::new(StdMutex::new(identity)),
        address,
    };
    let mut config = ClientConfig::new(url.to_owned());
    config.access_token = token.map(|t| t.as_bytes().to_vec());
    config.extra_roots = extra_roots(ca)?;
    match RelayClient::connect(config, Arc::new(signer)).await {
        // Dropping both handles ends the connection.
        Ok(_connected) => Ok(()),
        Err(error) => Err(ApiError::new(
            ErrorCode::RelayUnreachable,
            error.to_string(),
        )),
    }
}

impl agentwire_client::Signer for IdentitySigner {
    fn public_key(&self) -> PublicKey {
        self.address
    }

    fn sign(&self, message: &[u8]) -> Signature {
        self.identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sign(message)
    }
}

impl Daemon {
    /// Starts a link for every identity.
    pub async fn start_links(self: &Arc<Self>) {
        let names: Vec<Name> = self.identities().0.iter().map(|(n, _)| n.clone()).collect();
        for name in names {
            self.start_link(name);
        }
    }

    /// Starts the link of one identity.
    pub(crate) fn start_link(self: &Arc<Self>, name: Name) {
        let daemon = self.clone();
        self.tasks.spawn(async move { daemon.link(name).await });
    }

    /// Keeps one identity's relay connection: stores what arrives, pushes
    /// what is queued.
    async fn link(self: Arc<Self>, name: Name) {
        let owner = name.clone();
        match self.db.run(move |tx| tx.outbox_count(&owner)).await {
            Ok(depth) => self.outbox_depth.set(name.clone(), depth),
            Err(error) => tracing::error!(identity = %name, %error, "cannot count the outbox"),
        }
        let mut attempt = 0u32;
        let mut relay_changed = self.relay_changed.subscribe();
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            relay_changed.mark_unchanged();
            let (client, events) = match self.connect(&name).await {
                Ok(connected) => connected,
                Err(error) => {
                    self.link_errors.set(name.clone(), error.message.clone());
                    let delay = RECONNECT.delay(attempt);
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(identity = %name, %error, "cannot reach the relay; retrying");
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => continue,
                        // New settings: try them now.
                        _ = relay_changed.changed() => continue,
                    }
                }
            };
            attempt = 0;
            self.link_errors.take(&name);
            tracing::info!(identity = %name, "connected to the relay");
            // The pump lives as long as this connection.
            let connection = self.shutdown.child_token();
            let pump = {
                let (daemon, name, client) = (self.clone(), name.clone(), client.clone());
                let stop = connection.clone();
                self.tasks
                    .spawn(async move { daemon.pump(&name, &client, stop).await })
            };
            self.serve_link(&name, &client, events, &mut relay_changed)
                .await;
            self.links.take(&name);
            connection.cancel();
            if pump.await.is_err() {
                tracing::error!(identity = %name, "the outbox pump failed");
            }
        }
    }

    /// Handles one connection's events until the client stops, the daemon
    /// does, or the relay settings change.
    async fn serve_link(
        &self,
        name: &Name,
        client: &RelayClient,
        mut events: Events,
        relay_changed: &mut tokio::sync::watch::Receiver<u64>,
    ) {
        let mut acks = FuturesUnordered::new();
        loop {
            let event = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                _ = relay_changed.changed() => {
                    tracing::info!(identity = %name, "the relay settings changed; reconnecting");
                    return;
                }
                Some((count, acked)) = acks.next(), if !acks.is_empty() => {
                    if let Err(error) = acked {
                        tracing::info!(identity = %name, %error, envelopes = count, "acks did not reach the relay; it will deliver those envelopes again");
                    }
                    continue;
                }
                event = events.recv() => event,
            };
            let Some(event) = event else { return };
            // A burst: this envelope and those already waiting behind it.
            let mut burst = Vec::new();
            let mut next = Some(event);
            while let Some(event) = next.take() {
                match event {
                    Event::Envelope(envelope) => {
                        burst.push(envelope);
                        if burst.len() < RECEIVE_BURST {
                            next = events.try_recv();
                        }
                    }
                    other => {
                        let stored = self.take_burst(name, &mut burst).await;
                        if !stored.is_empty() {
                            acks.push(ack(client.clone(), stored));
                        }
                        if !self.on_event(name, client, other).await {
                            return;
                        }
                        next = events.try_recv();
                    }
                }
            }
            let stored = self.take_burst(name, &mut burst).await;
            if !stored.is_empty() {
                acks.push(ack(client.clone(), stored));
            }
        }
    }

    /// Stores a burst; the envelopes to acknowledge (the event loop sends
    /// the acks and takes their answers as they come).
    async fn take_burst(
        &self,
        name: &Name,
        burst: &mut Vec<agentwire_client::Envelope>,
    ) -> Vec<EnvelopeId> {
        if burst.is_empty() {
            return Vec::new();
        }
        self.receive(name, std::mem::take(burst)).await
    }

    /// Handles an event other than an envelope; false when the link must
    /// reconnect from scratch.
    async fn on_event(&self, name: &Name, client: &RelayClient, event: Event) -> bool {
        match event {
            Event::Envelope(_) => true,
            Event::Connected {
                relay_id,
                envelope_ttl,
                ..
            } => {
                self.relay_ids.set(name.clone(), relay_id);
                self.relay_ttls.set(name.clone(), envelope_ttl);
                self.links.set(name.clone(), client.clone());
                self.link_errors.take(name);
                if let Some(before) = self.last_relay_ids.get(name)
                    && before != relay_id
                {
                    // The home's relay URLs are meant to be nodes of one
                    // relay; this one is another relay, whose users this
                    // identity's contacts may not be on.
                    let problem = format!(
                        "the relay answered with relay id {relay_id}, not {before} as before: \
                         the home's relay URLs lead to different relays; list only the nodes \
                         of one relay cluster (agentwire config --relay)"
                    );
                    tracing::error!(identity = %name, "{problem}");
                    self.link_errors.set(name.clone(), problem);
                }
                self.last_relay_ids.set(name.clone(), relay_id);
                self.pairing.notify_waiters();
                self.outbox_waker(name).notify_one();
                true
            }
            Event::Expired { id, to, .. } => {
                self.expired(name, client, id, to).await;
                true
            }
            Event::Disconnected { reason } => {
                tracing::warn!(identity = %name, %reason, "lost the relay; reconnecting");
                self.relay_ids.take(name);
                self.links.take(name);
                self.link_errors
                    .set(name.clone(), format!("reconnecting: {reason}"));
                true
            }
            Event::Stopped { reason } => {
                tracing::error!(identity = %name, %reason, "the relay refused this identity");
                self.link_errors.set(name.clone(), reason.to_string());
                false
            }
        }
    }

    /// The relay gave up on one of our messages: record it, then stop
    /// hearing about it.
    async fn expired(&self, name: &Name, client: &RelayClient, id: EnvelopeId, to: PublicKey) {
        let message_id = MessageId::from_bytes(*id.as_bytes());
        let recorded = self
            .advance(name, vec![(message_id, DeliveryState::Expired)])
            .await;
        match recorded {
            Ok(()) => {
                if let Err(error) = client.dismiss(id, to).await {
                    tracing::info!(identity = %name, %error, "an expiry notice was not dismissed; it will come again");
                }
            }
            Err(error) => tracing::error!(%error, "cannot record an expiry"),
        }
    }

    async fn connect(&self, name: &Name) -> Result<(RelayClient, Events), ApiError> {
        let (url, token) = self.relay_access().await?;
        let identity = self
            .identities()
            .identity(name)
            .ok_or_else(|| ApiError::new(ErrorCode::UnknownIdentity, "identity removed"))?;
        let address = identity.lock().unwrap_or_else(|e| e.into_inner()).address();
        let ca = self.setting("relay_ca").await?;
        let signer = IdentitySigner { identity, address };
        let mut config = ClientConfig::new(url);
        config.access_token = token.map(String::into_bytes);
        config.extra_roots = extra_roots(ca.as_deref())?;
        config.backoff = RECONNECT;
        let connected = RelayClient::connect(config, Arc::new(signer)).await;
        // A refusal that retrying cannot mend (a missing or wrong access
        // token, an unsupported version) lets waiting requests fail at once.
        match &connected {
            Err(error) if error.is_permanent() => {
                self.link_refusals.set(name.clone(), error.to_string());
                self.pairing.notify_waiters();
            }
            _ => {
                self.link_refusals.take(name);
            }
        }
        connected.map_err(|e| ApiError::new(ErrorCode::RelayUnreachable, e.to_string()))
    }

    /// The outbox pump of one connection: pushes when something is queued;
    /// retries what the relay declined for now after [`RETRY_FIRST`],
    /// doubling up to [`OUTBOX_RETRY`], and looks every [`OUTBOX_RETRY`]
    /// anyway.
    async fn pump(&self, name: &Name, client: &RelayClient, stop: CancellationToken) {
        let queued = self.outbox_waker(name);
        let mut retry: Option<std::time::Duration> = None;
        loop {
            let declined = tokio::select! {
                () = stop.cancelled() => return,
                declined = self.push_outbox(name, client) => declined,
            };
            retry = match (declined, retry) {
                (false, _) => None,
                (true, None) => Some(RETRY_FIRST),
                (true, Some(last)) => Some(last.saturating_mul(2).min(OUTBOX_RETRY)),
            };
            let wait = retry.unwrap_or(OUTBOX_RETRY);
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = queued.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sends what is queued for `name`, oldest first, [`SEND_WINDOW`] at a
    /// time, until the outbox is empty or the relay declines (then the next
    /// wake-up retries). One store job per round records the new states.
    /// Returns whether the relay declined something for now.
    async fn push_outbox(&self, name: &Name, client: &RelayClient) -> bool {
        // Pages forward through the outbox, so that a recipient the relay
        // declines for now cannot keep everyone else's messages waiting.
        // In the order queued: for each contact, the order its session
        // sealed them in, which the recipient needs (within a small window).
        let mut after: Option<i64> = None;
        let mut blocked: HashSet<PublicKey> = HashSet::new();
        loop {
            let owner = name.clone();
            // Read on the reader: every send wakes the pump after its commit.
            let batch = match self
                .db
                .read(move |tx| tx.outbox(&owner, after, OUTBOX_BATCH))
                .await
            {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::error!(%error, "cannot read the outbox");
                    return true;
                }
            };
            if batch.is_empty() {
                if blocked.is_empty() {
                    self.outbox_errors.take(name);
                }
                return !blocked.is_empty();
            }
            after = batch.last().map(|outgoing| outgoing.seq);
            let mut in_flight = FuturesUnordered::new();
            let mut states = Vec::new();
            let mut disconnected = false;
            let mut outgoing = batch.into_iter();
            loop {
                while in_flight.len() < SEND_WINDOW && !disconnected {
                    let Some(next) = outgoing.next() else { break };
                    // Per recipient, messages wait behind one the relay
                    // declined for now.
                    if blocked.contains(&next.peer) {
                        continue;
                    }
                    in_flight.push(send(client.clone(), next));
                }
                let Some((id, peer, sent)) = in_flight.next().await else {
                    break;
                };
                match sent {
                    Ok(()) => states.push((id, DeliveryState::Relayed)),
                    Err(error) if error.code().is_some_and(|c| !c.is_transient()) => {
                        tracing::warn!(%error, "the relay refused a message for good");
                        states.push((id, DeliveryState::Failed));
                    }
                    Err(ClientError::Disconnected) => disconnected = true,
                    Err(error) => {
                        tracing::info!(%error, "the relay did not accept a message yet; will retry");
                        self.outbox_errors.set(name.clone(), error.to_string());
                        blocked.insert(peer);
                    }
                }
            }
            if !self.record_states(name, states).await || disconnected {
                return true;
            }
        }
    }

    /// Moves sent messages to new states in one store job, wakes the waiters
    /// and tells the subscriptions.
    async fn advance(
        &self,
        name: &Name,
        states: Vec<(MessageId, DeliveryState)>,
    ) -> Result<(), crate::store::StoreError> {
        let (owner, now, followers) = (name.clone(), now_ms(), self.followers());
        let (changed, contacts, depth) = self
            .db
            .run(move |tx| {
                let followed = followers.any(&owner);
                let mut changed = Vec::new();
                for (id, state) in &states {
                    if tx.advance(&owner, id, None, *state, now)? {
                        changed.push(*id);
                    }
                }
                let depth = tx.outbox_count(&owner)?;
                if !followed || changed.is_empty() {
                    return Ok::<_, crate::store::StoreError>((Vec::new(), Vec::new(), depth));
                }
                Ok((
                    tx.sent_messages_by_id(&owner, &changed)?,
                    tx.contacts(&owner)?,
                    depth,
                ))
            })
            .await?;
        self.outbox_depth.set(name.clone(), depth);
        self.states.notify_waiters();
        self.publish_changes(name, &contacts, &[], &changed);
        Ok(())
    }

    /// Records the outcome of a round of sends in one store job.
    async fn record_states(&self, name: &Name, states: Vec<(MessageId, DeliveryState)>) -> bool {
        if states.is_empty() {
            return true;
        }
        match self.advance(name, states).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "cannot record messages' states");
                false
            }
        }
    }
}

/// One send to the relay, with what it was.
async fn send(
    client: RelayClient,
    outgoing: crate::store::Outgoing,
) -> (MessageId, PublicKey, Result<(), ClientError>) {
    let envelope_id = EnvelopeId::from_bytes(*outgoing.id.as_bytes());
    let sent = client
        .send(outgoing.peer, envelope_id, outgoing.payload)
        .await;
    (outgoing.id, outgoing.peer, sent)
}

/// A burst's acks to the relay, in one frame: how many, and how it went.
async fn ack(client: RelayClient, ids: Vec<EnvelopeId>) -> (usize, Result<(), ClientError>) {
    (ids.len(), client.ack_batch(&ids).await)
}
