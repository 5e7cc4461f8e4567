//! One relay link per identity: a task that keeps the identity's relay
//! connection up (reconnecting with backoff), hands what arrives to the
//! receive pipeline, and pushes the outbox. It owns no state of its own
//! beyond the connection; what it learns goes into the store and the
//! daemon's side tables.

use std::sync::{Arc, Mutex as StdMutex};

use agentwire_api::DeliveryState;
use agentwire_client::{ClientConfig, Event, RelayClient};
use agentwire_session::{Identity, MessageId, Name};
use agentwire_wire::{PublicKey, Signature};

use crate::api::{ApiError, ErrorCode};
use crate::core::{Daemon, now_ms};

/// Outgoing messages read from the store per round.
const OUTBOX_BATCH: usize = 64;
/// How often a link retries messages the relay did not accept yet.
const OUTBOX_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Signs relay challenges with an identity held by the daemon.
struct IdentitySigner {
    identity: Arc<StdMutex<Identity>>,
    address: PublicKey,
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
        let names: Vec<Name> = {
            let state = self.state.lock().await;
            state.identities.iter().map(|(n, _)| n.clone()).collect()
        };
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
        let queued = self.outbox_waker(&name);
        let mut attempt = 0u32;
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            let (client, mut events) = match self.connect(&name).await {
                Ok(connected) => connected,
                Err(error) => {
                    self.link_errors.set(name.clone(), error.message.clone());
                    let delay = agentwire_client::Backoff::default().delay(attempt);
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(identity = %name, %error, "cannot reach the relay; retrying");
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            attempt = 0;
            self.link_errors.take(&name);
            tracing::info!(identity = %name, "connected to the relay");
            self.push_outbox(&name, &client).await;
            let mut retry = tokio::time::interval(OUTBOX_RETRY);
            retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => return,
                    _ = retry.tick() => self.push_outbox(&name, &client).await,
                    event = events.recv() => match event {
                        Some(Event::Envelope(envelope)) => {
                            let id = envelope.id;
                            if self.receive(&name, envelope.from, envelope.id, &envelope.payload).await
                                && let Err(error) = client.ack(id).await
                            {
                                tracing::info!(identity = %name, %error, "an ack did not reach the relay; it will deliver again");
                            }
                        }
                        Some(Event::Connected { relay_id, .. }) => {
                            self.relay_ids.set(name.clone(), relay_id);
                            self.link_errors.take(&name);
                            self.pairing.notify_waiters();
                            self.push_outbox(&name, &client).await;
                        }
                        Some(Event::Expired { id, to, .. }) => {
                            self.expired(&name, &client, id, to).await;
                        }
                        Some(Event::Disconnected { reason }) => {
                            tracing::warn!(identity = %name, %reason, "lost the relay; reconnecting");
                            self.relay_ids.take(&name);
                            self.link_errors.set(name.clone(), format!("reconnecting: {reason}"));
                        }
                        Some(Event::Stopped { reason }) => {
                            tracing::error!(identity = %name, %reason, "the relay refused this identity");
                            self.link_errors.set(name.clone(), reason.to_string());
                            break;
                        }
                        None => break,
                    },
                    () = queued.notified() => self.push_outbox(&name, &client).await,
                }
            }
        }
    }

    /// The relay gave up on one of our messages: record it, then stop
    /// hearing about it.
    async fn expired(
        &self,
        name: &Name,
        client: &RelayClient,
        id: agentwire_wire::EnvelopeId,
        to: PublicKey,
    ) {
        let message_id = MessageId::from_bytes(*id.as_bytes());
        let recorded = {
            let state = self.state.lock().await;
            state
                .store
                .read()
                .advance(name, &message_id, None, DeliveryState::Expired, now_ms())
        };
        match recorded {
            Ok(_) => {
                self.states.notify_waiters();
                if let Err(error) = client.dismiss(id, to).await {
                    tracing::info!(identity = %name, %error, "an expiry notice was not dismissed; it will come again");
                }
            }
            Err(error) => tracing::error!(%error, "cannot record an expiry"),
        }
    }

    async fn connect(
        &self,
        name: &Name,
    ) -> Result<(RelayClient, agentwire_client::Events), ApiError> {
        let url = self.relay_url().await?;
        let (signer, token) = {
            let state = self.state.lock().await;
            let identity = state
                .identity(name)
                .ok_or_else(|| ApiError::new(ErrorCode::UnknownIdentity, "identity removed"))?;
            let address = identity.lock().unwrap_or_else(|e| e.into_inner()).address();
            let token = state.store.read().setting("relay_token")?;
            (IdentitySigner { identity, address }, token)
        };
        let mut config = ClientConfig::new(url);
        config.access_token = token.map(String::into_bytes);
        RelayClient::connect(config, Arc::new(signer))
            .await
            .map_err(|e| ApiError::new(ErrorCode::RelayUnreachable, e.to_string()))
    }

    /// Sends what is queued for `name`, oldest first, until the outbox is
    /// empty or the relay refuses (then the next wake-up retries).
    async fn push_outbox(&self, name: &Name, client: &RelayClient) {
        // Pages forward through the outbox, so that a recipient the relay
        // declines for now cannot keep everyone else's messages waiting.
        let mut after: Option<MessageId> = None;
        let mut blocked: std::collections::HashSet<PublicKey> = std::collections::HashSet::new();
        loop {
            let batch = {
                let state = self.state.lock().await;
                match state
                    .store
                    .read()
                    .outbox(name, after.as_ref(), OUTBOX_BATCH)
                {
                    Ok(batch) => batch,
                    Err(error) => {
                        tracing::error!(%error, "cannot read the outbox");
                        return;
                    }
                }
            };
            if batch.is_empty() {
                if blocked.is_empty() {
                    self.outbox_errors.take(name);
                }
                return;
            }
            after = batch.last().map(|outgoing| outgoing.id);
            for outgoing in batch {
                // Per recipient, messages go out in order: once one waits,
                // the later ones to the same recipient wait too.
                if blocked.contains(&outgoing.peer) {
                    continue;
                }
                let envelope_id = agentwire_wire::EnvelopeId::from_bytes(*outgoing.id.as_bytes());
                let state_after = match client
                    .send(outgoing.peer, envelope_id, outgoing.payload)
                    .await
                {
                    Ok(()) => DeliveryState::Relayed,
                    Err(error) if error.code().is_some_and(|c| !c.is_transient()) => {
                        tracing::warn!(%error, "the relay refused a message for good");
                        DeliveryState::Failed
                    }
                    Err(agentwire_client::ClientError::Disconnected) => return,
                    Err(error) => {
                        tracing::info!(%error, "the relay did not accept a message yet; will retry");
                        self.outbox_errors.set(name.clone(), error.to_string());
                        blocked.insert(outgoing.peer);
                        continue;
                    }
                };
                let state = self.state.lock().await;
                match state
                    .store
                    .read()
                    .advance(name, &outgoing.id, None, state_after, now_ms())
                {
                    Ok(_) => self.states.notify_waiters(),
                    Err(error) => {
                        tracing::error!(%error, "cannot record a message's state");
                        return;
                    }
                }
            }
        }
    }
}
