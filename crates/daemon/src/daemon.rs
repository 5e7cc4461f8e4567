//! The daemon's core: identities, contacts, sessions, the store, and one relay
//! link per identity.
//!
//! All mutable state sits behind one async mutex ([`State`]); operations on it
//! are short (local SQLite), and relay IO happens outside it. Each identity
//! has a link task that keeps its relay connection, stores what arrives and
//! pushes what is queued.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use agentwire_client::{ClientConfig, Event, RelayClient};
use agentwire_relay::{Relay, RelayConfig};
use agentwire_session::{
    Identity, Invite, InviteError, InviteSecret, Kind, MessageId, Name, PeerSession, Permissions,
    PickleKey, Plaintext, Redeem, SignedInvite, prekey_identity_key, prekey_one_time_key,
};
use agentwire_wire::{PublicKey, RelayId, Signature};
use serde_json::json;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{ApiError, ErrorCode, Request};
use crate::home::Home;
use crate::pairing::{self, Answer};
use crate::store::{self, Contact, Store, StoredMessage};

/// Default number of messages `recv`/`inbox` return.
pub const DEFAULT_MAX_MESSAGES: usize = 100;
/// Longest `recv` wait the daemon grants.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// Outgoing messages pushed to the relay per round.
const OUTBOX_BATCH: usize = 64;
/// How often a link retries messages the relay did not accept yet.
const OUTBOX_RETRY: Duration = Duration::from_secs(5);
/// Default lifetime of an invite.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Unread messages a subscription looks at per wake-up, at most; the rest
/// follow as these are consumed.
const SUBSCRIBE_WINDOW: usize = 1000;
/// How long `invite` and `accept` wait for the identity's relay link.
const LINK_WAIT: Duration = Duration::from_secs(10);

/// Messages dropped since the daemon started (kept in memory: counting must
/// not cost a disk write per dropped envelope).
#[derive(Default)]
struct Counters {
    non_contact: AtomicU64,
    undecryptable: AtomicU64,
}

/// A message to send, as the API request gave it.
struct Outgoing {
    to: String,
    body: String,
    kind: Option<String>,
    reply_to: Option<String>,
    thread: Option<String>,
    priority: Option<String>,
}

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

/// Mutable state.
pub(crate) struct State {
    store: Store,
    /// In creation order; the first is the default.
    identities: Vec<(Name, Arc<StdMutex<Identity>>)>,
}

/// The daemon.
pub struct Daemon {
    home: Home,
    key: PickleKey,
    state: Mutex<State>,
    /// Woken whenever a message is stored.
    arrived: Notify,
    /// Per identity: woken when a message is queued for sending (a stored
    /// permit means a wake-up is never lost while the link is busy).
    queued: StdMutex<std::collections::HashMap<Name, Arc<Notify>>>,
    relay: Mutex<Option<Relay>>,
    /// The id of the relay each identity is connected to, once connected.
    relay_ids: StdMutex<std::collections::HashMap<Name, RelayId>>,
    /// Woken when a link connects or a pairing answer arrives.
    pairing: Notify,
    /// Woken when an outgoing message changes state.
    states: Notify,
    counters: Counters,
    /// Why each identity's link is not connected, while it is not.
    link_errors: StdMutex<std::collections::HashMap<Name, String>>,
    /// Why the relay last declined one of an identity's queued messages, until
    /// the outbox drains.
    outbox_errors: StdMutex<std::collections::HashMap<Name, String>>,
    /// Refusals of our redemptions, by (identity, inviter), for `accept`.
    refusals: StdMutex<std::collections::HashMap<(Name, PublicKey), Answer>>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Daemon {
    /// Opens the home's store and restores the identities.
    pub fn open(home: Home) -> Result<Arc<Daemon>, crate::DaemonError> {
        home.ensure()?;
        let key = home.load_or_create_key()?;
        let store = Store::open(&home.db()).map_err(crate::DaemonError::Store)?;
        let mut identities = Vec::new();
        for (name, pickle) in store::identities(store.conn()).map_err(crate::DaemonError::Store)? {
            let name = Name::new(&name).map_err(|e| crate::DaemonError::Corrupt(e.to_string()))?;
            let identity = Identity::from_encrypted_pickle(name.clone(), &pickle, &key)
                .map_err(|e| crate::DaemonError::Corrupt(e.to_string()))?;
            identities.push((name, Arc::new(StdMutex::new(identity))));
        }
        Ok(Arc::new(Daemon {
            home,
            key,
            state: Mutex::new(State { store, identities }),
            arrived: Notify::new(),
            queued: StdMutex::new(std::collections::HashMap::new()),
            relay: Mutex::new(None),
            relay_ids: StdMutex::new(std::collections::HashMap::new()),
            pairing: Notify::new(),
            states: Notify::new(),
            refusals: StdMutex::new(std::collections::HashMap::new()),
            counters: Counters::default(),
            link_errors: StdMutex::new(std::collections::HashMap::new()),
            outbox_errors: StdMutex::new(std::collections::HashMap::new()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }))
    }

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

    fn start_link(self: &Arc<Self>, name: Name) {
        let daemon = self.clone();
        self.tasks.spawn(async move { daemon.link(name).await });
    }

    /// The relay URL: the configured one, or an in-process relay on loopback.
    async fn relay_url(&self) -> Result<String, ApiError> {
        if let Some(url) = store::setting(self.state.lock().await.store.conn(), "relay_url")? {
            return Ok(url);
        }
        let mut relay = self.relay.lock().await;
        if let Some(relay) = relay.as_ref() {
            return Ok(relay.url());
        }
        let config = RelayConfig::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            self.home.local_relay_db(),
        );
        let started = Relay::spawn(config).await.map_err(|e| {
            ApiError::new(
                ErrorCode::RelayUnreachable,
                format!("cannot start the local relay: {e}"),
            )
        })?;
        let url = started.url();
        tracing::info!(%url, "started the local relay");
        *relay = Some(started);
        Ok(url)
    }

    /// Stops links and the in-process relay.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
        if let Some(relay) = self.relay.lock().await.take() {
            relay.shutdown().await;
        }
    }

    fn outbox_waker(&self, name: &Name) -> Arc<Notify> {
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.clone())
            .or_default()
            .clone()
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
            let connected = self.connect(&name).await;
            let (client, mut events) = match connected {
                Ok(connected) => connected,
                Err(error) => {
                    self.link_errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.clone(), error.message.clone());
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
            self.link_errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
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
                            if self.receive(&name, envelope.from, envelope.id, &envelope.payload).await {
                                let _ = client.ack(id).await;
                            }
                        }
                        Some(Event::Connected { relay_id, .. }) => {
                            self.relay_ids
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(name.clone(), relay_id);
                            self.pairing.notify_waiters();
                            self.push_outbox(&name, &client).await;
                        }
                        Some(Event::Expired { id, to, .. }) => {
                            // The relay gave up on one of our messages: record
                            // it, then stop hearing about it.
                            let message_id = MessageId::from_bytes(*id.as_bytes());
                            let recorded = {
                                let state = self.state.lock().await;
                                store::set_outgoing_state(state.store.conn(), &name, &message_id, "expired", now_ms())
                            };
                            match recorded {
                                Ok(_) => {
                                    self.states.notify_waiters();
                                    let _ = client.dismiss(id, to).await;
                                }
                                Err(error) => tracing::error!(%error, "cannot record an expiry"),
                            }
                        }
                        Some(Event::Stopped { reason }) => {
                            tracing::error!(identity = %name, %reason, "the relay refused this identity");
                            break;
                        }
                        Some(_) => {}
                        None => break,
                    },
                    () = queued.notified() => self.push_outbox(&name, &client).await,
                }
            }
        }
    }

    async fn connect(
        &self,
        name: &Name,
    ) -> Result<(RelayClient, agentwire_client::Events), ApiError> {
        let url = self.relay_url().await?;
        let signer = {
            let state = self.state.lock().await;
            let (_, identity) = state
                .identities
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| ApiError::new(ErrorCode::UnknownIdentity, "identity removed"))?;
            let address = identity.lock().unwrap_or_else(|e| e.into_inner()).address();
            IdentitySigner {
                identity: identity.clone(),
                address,
            }
        };
        let token = store::setting(self.state.lock().await.store.conn(), "relay_token")?;
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
                match store::outbox(state.store.conn(), name, after.as_ref(), OUTBOX_BATCH) {
                    Ok(batch) => batch,
                    Err(error) => {
                        tracing::error!(%error, "cannot read the outbox");
                        return;
                    }
                }
            };
            if batch.is_empty() {
                if blocked.is_empty() {
                    self.outbox_errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(name);
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
                    Ok(()) => "relayed",
                    Err(error) if error.code().is_some_and(|c| !c.is_transient()) => {
                        tracing::warn!(%error, "the relay refused a message for good");
                        "failed"
                    }
                    Err(agentwire_client::ClientError::Disconnected) => return,
                    Err(error) => {
                        tracing::info!(%error, "the relay did not accept a message yet; will retry");
                        self.outbox_errors
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(name.clone(), error.to_string());
                        blocked.insert(outgoing.peer);
                        continue;
                    }
                };
                let state = self.state.lock().await;
                if let Err(error) = store::set_outgoing_state(
                    state.store.conn(),
                    name,
                    &outgoing.id,
                    state_after,
                    now_ms(),
                )
                .map(|_| self.states.notify_waiters())
                {
                    tracing::error!(%error, "cannot record a message's state");
                    return;
                }
            }
        }
    }

    /// Handles one envelope for `name`. Returns whether to acknowledge it
    /// (it is stored, a duplicate, or dropped for good).
    async fn receive(
        &self,
        name: &Name,
        from: PublicKey,
        id: agentwire_wire::EnvelopeId,
        payload: &[u8],
    ) -> bool {
        let mut state = self.state.lock().await;
        let Some(identity) = state.identity(name) else {
            return false;
        };
        let contact = match store::contact(state.store.conn(), name, &from) {
            Ok(contact) => contact,
            Err(error) => {
                tracing::error!(%error, "cannot read contacts");
                return false;
            }
        };
        // Redelivered after it was stored (the ack was lost): ack again, no
        // second copy.
        if contact.is_some()
            && store::has_message(state.store.conn(), name, id.as_bytes()).unwrap_or(false)
        {
            return true;
        }
        let Some(contact) = contact else {
            return self.redeem(&mut state, name, &identity, from, payload);
        };
        if payload.first() == Some(&pairing::NOTICE_TAG) {
            return self.answered(&mut state, name, &identity, &contact, payload);
        }
        let stored_session = match store::session(state.store.conn(), name, &from) {
            Ok(session) => session,
            Err(error) => {
                tracing::error!(%error, "cannot read a session");
                return false;
            }
        };
        let session = stored_session
            .and_then(|pickle| PeerSession::from_encrypted_pickle(&pickle, &self.key).ok());
        // The sender is whoever owns the session that opens the payload: only
        // the session set up with this contact is tried. A contact never
        // starts a second session by itself.
        let opened = session.map(|mut session| session.open(payload).map(|p| (session, p)));
        let (session, plaintext) = match opened {
            Some(Ok(opened)) => opened,
            _ => {
                // A redemption of one of our invites by someone who already
                // is a contact (e.g. both sides accepted each other's
                // invites): refused, so that no second session replaces the
                // first.
                if let Some(one_time_key) = prekey_one_time_key(payload)
                    && let Ok(Some(record)) =
                        store::invite_by_key(state.store.conn(), name, &one_time_key)
                    && record.spent_by.is_none()
                {
                    let notice = {
                        let guard = identity.lock().unwrap_or_else(|e| e.into_inner());
                        pairing::notice(&guard, &one_time_key, &from, Answer::AlreadyContact)
                    };
                    return self.queue_notice(&mut state, name, from, notice);
                }
                tracing::info!(identity = %name, from = %from.short_id(), "dropped an undecryptable message");
                self.counters.undecryptable.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        };
        if plaintext.id.as_bytes() != id.as_bytes() {
            tracing::info!(identity = %name, from = %from.short_id(), "dropped a message whose id does not match its envelope");
            self.counters.undecryptable.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let mut session = session;
        let now = now_ms();
        let (plaintext_id, plaintext_kind) = (plaintext.id, plaintext.kind);
        // What this message changes, decided before the transaction.
        enum Effect {
            Store(StoredMessage, Option<(MessageId, Vec<u8>)>),
            Receipt(agentwire_session::Receipt),
            Nothing,
        }
        let effect = match plaintext.kind {
            Kind::Receipt => match agentwire_session::Receipt::decode(&plaintext.body) {
                Ok(receipt) => Effect::Receipt(receipt),
                Err(_) => Effect::Nothing,
            },
            // A redemption-kind message from a contact carries nothing to show.
            Kind::Redeem => Effect::Nothing,
            _ => {
                // The sender learns "delivered" by an encrypted receipt,
                // queued in the same transaction as the message itself.
                let receipt = seal_receipt(
                    &mut session,
                    agentwire_session::ReceiptState::Delivered,
                    vec![plaintext.id],
                    now,
                );
                Effect::Store(
                    StoredMessage {
                        id: plaintext.id,
                        direction: "in".into(),
                        peer: from,
                        kind: plaintext.kind,
                        priority: plaintext.priority,
                        reply_to: plaintext.reply_to,
                        thread: plaintext.thread,
                        sent_at_ms: plaintext.sent_at_ms,
                        stored_at_ms: now,
                        body: plaintext.body,
                        state: "delivered".into(),
                    },
                    receipt,
                )
            }
        };
        let session_pickle = session.to_encrypted_pickle(&self.key);
        let stored = state.store.transaction(|tx| {
            store::save_session(tx, name, &from, &session_pickle)?;
            match &effect {
                Effect::Store(message, receipt) => {
                    if store::insert_message(tx, name, message, None)?
                        && let Some((receipt_id, payload)) = receipt
                    {
                        insert_receipt(tx, name, from, *receipt_id, payload, now)?;
                    }
                }
                Effect::Receipt(receipt) => {
                    store::insert_seen(tx, name, &plaintext_id, &from, Kind::Receipt, now)?;
                    let state = match receipt.state {
                        agentwire_session::ReceiptState::Delivered => "delivered",
                        agentwire_session::ReceiptState::Read => "read",
                    };
                    store::apply_receipt(tx, name, &from, &receipt.ids, state, now)?;
                }
                Effect::Nothing => {
                    store::insert_seen(tx, name, &plaintext_id, &from, plaintext_kind, now)?;
                }
            }
            Ok::<_, rusqlite::Error>(())
        });
        drop(state);
        match stored {
            Ok(()) => {
                match effect {
                    Effect::Store(..) => {
                        self.arrived.notify_waiters();
                        self.outbox_waker(name).notify_one();
                        self.touch_notify_file(name).await;
                    }
                    Effect::Receipt(_) => self.states.notify_waiters(),
                    Effect::Nothing => {}
                }
                true
            }
            Err(error) => {
                // Nothing committed; the stored session is still the one
                // before this message, so the redelivery decrypts.
                tracing::error!(%error, "cannot store a message; it stays at the relay");
                false
            }
        }
    }

    /// Writes the unread count to the identity's notify file (atomically:
    /// written aside, then renamed), so that file watchers see each arrival.
    async fn touch_notify_file(&self, name: &Name) {
        let unread = {
            let state = self.state.lock().await;
            store::unread_count(state.store.conn(), name).unwrap_or(0)
        };
        let path = self.home.notify_file(name);
        let written = (|| -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            let dir = path.parent().unwrap_or(self.home.root());
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            let aside = dir.join(format!(".{}.tmp", name.as_str()));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&aside)?;
            writeln!(file, "{unread}")?;
            std::fs::rename(&aside, &path)
        })();
        if let Err(error) = written {
            tracing::warn!(%error, "cannot update the notify file");
        }
    }

    /// Replaces the in-memory account with the stored one, after a change to
    /// it (a one-time key consumed) was not committed.
    fn reload_identity(&self, state: &State, name: &Name, identity: &Arc<StdMutex<Identity>>) {
        let stored = store::identities(state.store.conn()).ok().and_then(|all| {
            all.into_iter()
                .find(|(n, _)| n == name.as_str())
                .map(|(_, pickle)| pickle)
        });
        match stored.map(|pickle| Identity::from_encrypted_pickle(name.clone(), &pickle, &self.key))
        {
            Some(Ok(restored)) => *identity.lock().unwrap_or_else(|e| e.into_inner()) = restored,
            _ => tracing::error!(identity = %name, "cannot reload an identity from the store"),
        }
    }

    /// A first message from a non-contact: the redemption of one of our
    /// invites, or dropped (and counted) — never shown to an agent.
    fn redeem(
        &self,
        state: &mut State,
        name: &Name,
        identity: &Arc<StdMutex<Identity>>,
        from: PublicKey,
        payload: &[u8],
    ) -> bool {
        let drop_it = |_: &mut State, why: &str| {
            tracing::info!(identity = %name, from = %from.short_id(), why, "dropped a message from a non-contact");
            self.counters.non_contact.fetch_add(1, Ordering::Relaxed);
            true
        };
        let (Some(one_time_key), Some(their_curve)) =
            (prekey_one_time_key(payload), prekey_identity_key(payload))
        else {
            return drop_it(state, "not a first message");
        };
        let record = match store::invite_by_key(state.store.conn(), name, &one_time_key) {
            Ok(Some(record)) => record,
            Ok(None) => return drop_it(state, "no invite of ours"),
            Err(error) => {
                tracing::error!(%error, "cannot read invites");
                return false;
            }
        };
        if record.spent_by == Some(from) {
            // A redelivery of the redemption we accepted; our answer is queued.
            return true;
        }
        let refusal = if record.spent_by.is_some() {
            Some(Answer::Spent)
        } else if now_ms() >= record.expires_at_ms {
            Some(Answer::Expired)
        } else {
            None
        };
        if let Some(answer) = refusal {
            let notice = {
                let guard = identity.lock().unwrap_or_else(|e| e.into_inner());
                pairing::notice(&guard, &one_time_key, &from, answer)
            };
            tracing::info!(identity = %name, from = %from.short_id(), ?answer, "refused a redemption");
            return self.queue_notice(state, name, from, notice);
        }
        let mut guard = identity.lock().unwrap_or_else(|e| e.into_inner());
        let Ok((session, first)) = guard.accept_session(their_curve, payload) else {
            drop(guard);
            return drop_it(state, "redemption does not decrypt");
        };
        let redeem = match (first.kind, Redeem::decode(&first.body)) {
            (Kind::Redeem, Ok(redeem)) => redeem,
            _ => {
                drop(guard);
                // The one-time key stays for the real redemption.
                self.reload_identity(state, name, identity);
                return drop_it(state, "first message is not a redemption");
            }
        };
        if redeem.acceptor != from
            || !redeem.verify(&guard.address(), &their_curve)
            || redeem.secret.as_bytes() != &record.secret
        {
            drop(guard);
            self.reload_identity(state, name, identity);
            return drop_it(state, "redemption does not prove the invite");
        }
        let notice = pairing::notice(&guard, &one_time_key, &from, Answer::Accepted);
        let identity_pickle = guard.to_encrypted_pickle(&self.key);
        let address = guard.address();
        drop(guard);
        let now = now_ms();
        let session_pickle = session.to_encrypted_pickle(&self.key);
        let stored = state.store.transaction(|tx| {
            let petname = store::free_petname(tx, name, &redeem.acceptor_name)?;
            store::add_contact(
                tx,
                name,
                &Contact {
                    address: from,
                    curve25519: their_curve,
                    petname,
                    via: "invited".into(),
                    state: "active".into(),
                    invite_key: None,
                    created_at_ms: now,
                },
            )?;
            store::save_session(tx, name, &from, &session_pickle)?;
            store::save_identity(tx, name, &address, &identity_pickle, now)?;
            store::spend_invite(tx, name, &one_time_key, &from, now)?;
            insert_notice(tx, name, from, &notice, now)?;
            Ok::<_, rusqlite::Error>(())
        });
        match stored {
            Ok(()) => {
                tracing::info!(identity = %name, contact = %from.short_id(), "invite redeemed: new contact");
                self.outbox_waker(name).notify_one();
                true
            }
            Err(error) => {
                // The account in memory consumed the one-time key; reload it
                // from the store so memory matches what is committed.
                tracing::error!(%error, "cannot store a new contact");
                self.reload_identity(state, name, identity);
                false
            }
        }
    }

    fn queue_notice(&self, state: &mut State, name: &Name, to: PublicKey, notice: Vec<u8>) -> bool {
        let now = now_ms();
        match state
            .store
            .transaction(|tx| insert_notice(tx, name, to, &notice, now))
        {
            Ok(()) => {
                self.outbox_waker(name).notify_one();
                true
            }
            Err(error) => {
                tracing::error!(%error, "cannot queue a pairing answer");
                false
            }
        }
    }

    /// The inviter's answer to our redemption.
    fn answered(
        &self,
        state: &mut State,
        name: &Name,
        identity: &Arc<StdMutex<Identity>>,
        contact: &Contact,
        payload: &[u8],
    ) -> bool {
        let me = identity.lock().unwrap_or_else(|e| e.into_inner()).address();
        let answer = contact
            .invite_key
            .and_then(|key| pairing::read_notice(payload, &contact.address, &me, &key));
        let Some(answer) = answer else {
            self.counters.undecryptable.fetch_add(1, Ordering::Relaxed);
            return true;
        };
        let result = match answer {
            Answer::Accepted => {
                store::set_contact_state(state.store.conn(), name, &contact.address, "active")
            }
            refused => {
                self.refusals
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((name.clone(), contact.address), refused);
                if contact.state == "pending" {
                    store::remove_contact(state.store.conn(), name, &contact.address).map(|_| ())
                } else {
                    Ok(())
                }
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "cannot record a pairing answer");
            return false;
        }
        tracing::info!(identity = %name, inviter = %contact.address.short_id(), ?answer, "pairing answered");
        self.pairing.notify_waiters();
        true
    }

    /// The relay id this identity's link is connected to, waiting for the link
    /// up to [`LINK_WAIT`].
    async fn connected_relay_id(&self, name: &Name) -> Result<RelayId, ApiError> {
        let mut wait = self.wait_on(&self.pairing, tokio::time::Instant::now() + LINK_WAIT);
        loop {
            let at_deadline = wait.arm();
            if let Some(id) = self
                .relay_ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(name)
            {
                return Ok(*id);
            }
            if at_deadline {
                let why = self
                    .link_errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| "still connecting".into());
                return Err(ApiError::new(
                    ErrorCode::RelayUnreachable,
                    format!("{name} is not connected to its relay: {why}"),
                ));
            }
            if !wait.sleep().await {
                return Err(stopping());
            }
        }
    }

    async fn invite(
        &self,
        identity: Option<String>,
        ttl_ms: Option<u64>,
    ) -> Result<serde_json::Value, ApiError> {
        let ttl = ttl_ms.map_or(DEFAULT_INVITE_TTL, Duration::from_millis);
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(30 * 24 * 3600) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "an invite lives between 1s and 30d; pass --ttl within that",
            ));
        }
        let name = self.state.lock().await.pick(identity.as_deref())?.0;
        let relay_url = self.relay_url().await?;
        let relay_id = self.connected_relay_id(&name).await?;
        let mut state = self.state.lock().await;
        let (_, identity) = state.pick(Some(name.as_str()))?;
        let secret =
            InviteSecret::generate().map_err(|e| ApiError::internal("no randomness", e))?;
        let now = now_ms();
        let expires_at_ms = now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let (signed, address, pickle) = {
            let mut guard = identity.lock().unwrap_or_else(|e| e.into_inner());
            let one_time_key = guard.new_one_time_key();
            let invite = Invite {
                inviter: guard.address(),
                inviter_curve25519: guard.curve25519(),
                one_time_key,
                secret,
                expires_at_ms,
                permissions: Permissions::DEFAULT,
                relay_url: relay_url.clone(),
                relay_id,
                inviter_name: name.clone(),
            };
            let signed = SignedInvite::sign(invite, &guard);
            (
                signed,
                guard.address(),
                guard.to_encrypted_pickle(&self.key),
            )
        };
        let invite = &signed.invite;
        state.store.transaction(|tx| {
            store::prune_invites(tx, now)?;
            store::save_identity(tx, &name, &address, &pickle, now)?;
            store::add_invite(
                tx,
                &name,
                &invite.one_time_key,
                invite.secret.as_bytes(),
                expires_at_ms,
                invite.permissions.bits(),
                now,
            )?;
            Ok::<_, ApiError>(())
        })?;
        Ok(json!({
            "invite": signed.to_token(),
            "expires_at_ms": expires_at_ms,
            "relay": relay_url,
            "permissions": invite.permissions.names(),
        }))
    }

    async fn accept(
        &self,
        identity: Option<String>,
        token: String,
        petname: Option<String>,
        wait_ms: Option<u64>,
    ) -> Result<serde_json::Value, ApiError> {
        let signed = SignedInvite::parse(&token).map_err(invite_error)?;
        signed.check_unexpired(now_ms()).map_err(invite_error)?;
        let invite = signed.invite;
        let petname = petname.map(|p| parse_name(&p)).transpose()?;
        let name = self.state.lock().await.pick(identity.as_deref())?.0;
        let relay_url = self.relay_url().await?;
        if invite.relay_url != relay_url {
            return Err(ApiError::new(
                ErrorCode::InviteWrongRelay,
                format!(
                    "this invite is for the relay {}, but this home uses {relay_url}; accept it in a home set up with `agentwire init --relay {}`",
                    invite.relay_url, invite.relay_url
                ),
            ));
        }
        let relay_id = self.connected_relay_id(&name).await?;
        if relay_id != invite.relay_id {
            return Err(invite_error(InviteError::WrongRelay {
                url: invite.relay_url.clone(),
                expected: invite.relay_id,
                found: relay_id,
            }));
        }
        self.send_redemption(&name, &invite, petname).await?;
        self.outbox_waker(&name).notify_one();

        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(wait_ms.unwrap_or(30_000)).min(MAX_WAIT);
        let mut wait = self.wait_on(&self.pairing, deadline);
        loop {
            let timed_out = wait.arm();
            let refusal = self
                .refusals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(name.clone(), invite.inviter));
            if let Some(refusal) = refusal {
                return Err(match refusal {
                    Answer::Spent => ApiError::new(
                        ErrorCode::InviteSpent,
                        "this invite was already used; ask the inviter for a new one",
                    ),
                    Answer::AlreadyContact => ApiError::new(
                        ErrorCode::InviteSpent,
                        "the inviter already has you as a contact (or you both accepted each other's invites at once); use one invite",
                    ),
                    _ => ApiError::new(
                        ErrorCode::InviteExpired,
                        "the inviter says this invite has expired; ask for a new one",
                    ),
                });
            }
            let contact = {
                let state = self.state.lock().await;
                store::contact(state.store.conn(), &name, &invite.inviter)?
            };
            match &contact {
                Some(contact) if contact.state == "active" || timed_out => {
                    return Ok(contact_json(contact));
                }
                None if timed_out => {
                    return Err(ApiError::new(
                        ErrorCode::Internal,
                        "the pending contact disappeared while waiting (removed, or another accept took the answer)",
                    ));
                }
                _ => {}
            }
            if !wait.sleep().await {
                return Err(stopping());
            }
        }
    }

    /// Opens a session to the invite's keys and queues the redemption; the
    /// inviter becomes a `pending` contact until it answers.
    async fn send_redemption(
        &self,
        name: &Name,
        invite: &Invite,
        petname: Option<Name>,
    ) -> Result<(), ApiError> {
        // Accepting the same invite again (say after a timeout) sends nothing
        // new: the first redemption is queued or delivered, and a second
        // session on the same one-time key would never open.
        let mut state = self.state.lock().await;
        let (_, identity) = state.pick(Some(name.as_str()))?;
        if identity.lock().unwrap_or_else(|e| e.into_inner()).address() == invite.inviter {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "this is your own invite; give it to the agent you want to pair with",
            ));
        }
        let replaced = match store::contact(state.store.conn(), name, &invite.inviter)? {
            // This very invite, accepted before: nothing to send again.
            Some(existing) if existing.invite_key == Some(invite.one_time_key) => return Ok(()),
            Some(existing) if existing.state == "active" => {
                return Err(ApiError::new(
                    ErrorCode::NameTaken,
                    format!("the inviter is already your contact {}", existing.petname),
                ));
            }
            Some(_) => true,
            None => false,
        };
        self.refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(name.clone(), invite.inviter));
        let (first, payload, session_pickle) = {
            let guard = identity.lock().unwrap_or_else(|e| e.into_inner());
            let mut session = guard
                .open_session(invite.inviter_curve25519, invite.one_time_key)
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::InviteInvalid,
                        format!("the invite's keys are unusable: {e}"),
                    )
                })?;
            let first = Plaintext {
                id: MessageId::new_v7(),
                kind: Kind::Redeem,
                priority: agentwire_session::Priority::Normal,
                sent_at_ms: now_ms(),
                reply_to: None,
                thread: None,
                body: Redeem::new(invite, &guard).encode(),
            };
            let payload = session
                .seal(&first)
                .map_err(|e| ApiError::internal("cannot encrypt", e))?;
            (first, payload, session.to_encrypted_pickle(&self.key))
        };
        let now = now_ms();
        state
            .store
            .transaction(|tx| {
                if replaced {
                    // A pending pairing by an older invite of the same
                    // inviter gives way to this one.
                    store::remove_contact(tx, name, &invite.inviter)?;
                    store::drop_queued_to(tx, name, &invite.inviter)?;
                }
                let petname = match &petname {
                    Some(chosen) => chosen.clone(),
                    None => store::free_petname(tx, name, &invite.inviter_name)?,
                };
                store::add_contact(
                    tx,
                    name,
                    &Contact {
                        address: invite.inviter,
                        curve25519: invite.inviter_curve25519,
                        petname,
                        via: "accepted".into(),
                        state: "pending".into(),
                        invite_key: Some(invite.one_time_key),
                        created_at_ms: now,
                    },
                )?;
                store::save_session(tx, name, &invite.inviter, &session_pickle)?;
                let message =
                    StoredMessage::outgoing_control(first.id, invite.inviter, Kind::Redeem, now);
                store::insert_message(tx, name, &message, Some(&payload))?;
                Ok::<_, rusqlite::Error>(())
            })
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    ApiError::new(
                        ErrorCode::NameTaken,
                        "a contact already has that name; pass another with --name",
                    )
                }
                other => other.into(),
            })
    }

    /// Answers one API request.
    pub async fn handle(self: &Arc<Self>, request: Request) -> Result<serde_json::Value, ApiError> {
        match request {
            Request::Status => self.status().await,
            Request::Stop => {
                self.shutdown.cancel();
                Ok(json!({"stopping": true}))
            }
            Request::Init {
                name,
                relay,
                relay_token,
            } => self.init(name, relay, relay_token).await,
            Request::Whoami { identity } => {
                let state = self.state.lock().await;
                let (name, identity) = state.pick(identity.as_deref())?;
                let guard = identity.lock().unwrap_or_else(|e| e.into_inner());
                Ok(json!({
                    "name": name.as_str(),
                    "address": guard.address().to_hex(),
                    "short_id": guard.address().short_id(),
                }))
            }
            Request::Contacts { identity } => {
                let state = self.state.lock().await;
                let (name, _) = state.pick(identity.as_deref())?;
                let contacts = store::contacts(state.store.conn(), &name)?;
                Ok(json!({"contacts": contacts.iter().map(contact_json).collect::<Vec<_>>()}))
            }
            Request::Rename {
                identity,
                peer,
                new_name,
            } => {
                let state = self.state.lock().await;
                let (name, _) = state.pick(identity.as_deref())?;
                let contact = state.resolve_peer(&name, &peer)?;
                let new_name = parse_name(&new_name)?;
                match store::rename_contact(state.store.conn(), &name, &contact.address, &new_name)
                {
                    Ok(_) => {
                        Ok(json!({"renamed": contact.petname.as_str(), "to": new_name.as_str()}))
                    }
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                    {
                        Err(ApiError::new(
                            ErrorCode::NameTaken,
                            format!("a contact is already named {new_name}"),
                        ))
                    }
                    Err(error) => Err(error.into()),
                }
            }
            Request::Remove { identity, peer } => {
                let state = self.state.lock().await;
                let (name, _) = state.pick(identity.as_deref())?;
                let contact = state.resolve_peer(&name, &peer)?;
                store::remove_contact(state.store.conn(), &name, &contact.address)?;
                Ok(json!({"removed": contact.petname.as_str()}))
            }
            Request::Send {
                identity,
                to,
                body,
                kind,
                reply_to,
                thread,
                priority,
                wait,
                wait_ms,
            } => {
                let outgoing = Outgoing {
                    to,
                    body,
                    kind,
                    reply_to,
                    thread,
                    priority,
                };
                let sent = self.send(identity.clone(), outgoing).await?;
                match wait {
                    None => Ok(sent),
                    Some(wanted) => {
                        let id = sent["id"].as_str().unwrap_or_default().to_owned();
                        self.wait_for_state(identity, &id, &wanted, wait_ms).await
                    }
                }
            }
            Request::State { identity, id } => {
                let state = self.state.lock().await;
                let (name, _) = state.pick(identity.as_deref())?;
                let id = parse_message_id("id", &id)?;
                let contacts = store::contacts(state.store.conn(), &name)?;
                match store::sent_message(state.store.conn(), &name, &id)? {
                    Some(message) => Ok(sent_json(&message, &contacts)),
                    None => Err(ApiError::new(
                        ErrorCode::UnknownMessage,
                        format!("no message {id} was sent by {name}; see `agentwire sent`"),
                    )),
                }
            }
            Request::Sent { identity, max } => {
                let state = self.state.lock().await;
                let (name, _) = state.pick(identity.as_deref())?;
                let contacts = store::contacts(state.store.conn(), &name)?;
                let sent = store::sent_messages(
                    state.store.conn(),
                    &name,
                    max.unwrap_or(DEFAULT_MAX_MESSAGES),
                )?;
                Ok(
                    json!({"messages": sent.iter().map(|m| sent_json(m, &contacts)).collect::<Vec<_>>()}),
                )
            }
            Request::Invite { identity, ttl_ms } => self.invite(identity, ttl_ms).await,
            Request::Accept {
                identity,
                token,
                name,
                wait_ms,
            } => self.accept(identity, token, name, wait_ms).await,
            Request::Recv {
                identity,
                from,
                max,
                wait_ms,
            } => self.unread(identity, from, max, wait_ms, true).await,
            Request::Ack { identity, ids } => self.ack(identity, ids).await,
            Request::Subscribe { .. } => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "subscribe streams events on its own connection",
            )),
            Request::Inbox {
                identity,
                from,
                max,
                wait_ms,
            } => self.unread(identity, from, max, wait_ms, false).await,
        }
    }

    async fn status(&self) -> Result<serde_json::Value, ApiError> {
        let relay_url = self.relay_url().await.ok();
        let local_relay = self.relay.lock().await.is_some();
        let state = self.state.lock().await;
        let conn = state.store.conn();
        let mut identities = Vec::new();
        let mut queued_total = 0;
        for (name, identity) in &state.identities {
            let address = identity.lock().unwrap_or_else(|e| e.into_inner()).address();
            let link_error = self
                .link_errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(name)
                .cloned();
            let outbox_error = self
                .outbox_errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(name)
                .cloned();
            let queued = store::outbox_count(conn, name)?;
            queued_total += queued;
            identities.push(json!({
                "name": name.as_str(),
                "short_id": address.short_id(),
                "relay_error": link_error,
                "queued": queued,
                "queued_because": outbox_error,
                "unread": store::unread_count(conn, name)?,
            }));
        }
        Ok(json!({
            "running": true,
            "pid": std::process::id(),
            "home": self.home.root().display().to_string(),
            "relay": relay_url,
            "local_relay": local_relay,
            "identities": identities,
            "queued": queued_total,
            "dropped_non_contact": self.counters.non_contact.load(Ordering::Relaxed),
            "dropped_undecryptable": self.counters.undecryptable.load(Ordering::Relaxed),
        }))
    }

    async fn init(
        self: &Arc<Self>,
        name: Option<String>,
        relay: Option<String>,
        relay_token: Option<String>,
    ) -> Result<serde_json::Value, ApiError> {
        if let Some(url) = &relay
            && !(url.starts_with("ws://") || url.starts_with("wss://"))
        {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("relay URL {url:?} must start with ws:// or wss://"),
            ));
        }
        let mut state = self.state.lock().await;
        if let Some(url) = &relay
            && !state.identities.is_empty()
            && store::setting(state.store.conn(), "relay_url")?.as_deref() != Some(url.as_str())
        {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "this home already has identities on another relay; --relay is chosen with the first identity (use another --home for another relay)",
            ));
        }
        let name = match name {
            Some(name) => parse_name(&name)?,
            None => state.free_name()?,
        };
        if state.identities.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::new(
                ErrorCode::NameTaken,
                format!("an identity named {name} already exists here; pick another with --name"),
            ));
        }
        let mut identity = Identity::generate(name.clone());
        let address = identity.address();
        // Siblings in one home are contacts of each other from the start: set
        // up a session pair locally, without any message over the network.
        let mut pairs = Vec::new();
        for (sibling_name, sibling) in &state.identities {
            let sibling = sibling.lock().unwrap_or_else(|e| e.into_inner());
            let otk = identity.new_one_time_key();
            let mut outbound = sibling
                .open_session(identity.curve25519(), otk)
                .map_err(|e| ApiError::internal("cannot pair siblings", e))?;
            let first = outbound
                .seal(&Plaintext {
                    id: MessageId::new_v7(),
                    kind: Kind::Redeem,
                    priority: agentwire_session::Priority::Normal,
                    sent_at_ms: now_ms(),
                    reply_to: None,
                    thread: None,
                    body: Vec::new(),
                })
                .map_err(|e| ApiError::internal("cannot pair siblings", e))?;
            let (inbound, _) = identity
                .accept_session(sibling.curve25519(), &first)
                .map_err(|e| ApiError::internal("cannot pair siblings", e))?;
            pairs.push((
                sibling_name.clone(),
                sibling.address(),
                sibling.curve25519(),
                outbound.to_encrypted_pickle(&self.key),
                inbound.to_encrypted_pickle(&self.key),
                sibling.to_encrypted_pickle(&self.key),
            ));
        }
        let now = now_ms();
        let pickle = identity.to_encrypted_pickle(&self.key);
        let curve = identity.curve25519();
        state.store.transaction(|tx| {
            if let Some(url) = &relay {
                store::set_setting(tx, "relay_url", url)?;
            }
            if let Some(token) = &relay_token {
                store::set_setting(tx, "relay_token", token)?;
            }
            store::save_identity(tx, &name, &address, &pickle, now)?;
            for (sibling_name, sibling_address, sibling_curve, outbound, inbound, sibling_pickle) in
                &pairs
            {
                store::save_identity(tx, sibling_name, sibling_address, sibling_pickle, now)?;
                store::add_contact(
                    tx,
                    &name,
                    &Contact {
                        address: *sibling_address,
                        curve25519: *sibling_curve,
                        petname: sibling_name.clone(),
                        via: "sibling".into(),
                        state: "active".into(),
                        invite_key: None,
                        created_at_ms: now,
                    },
                )?;
                store::add_contact(
                    tx,
                    sibling_name,
                    &Contact {
                        address,
                        curve25519: curve,
                        petname: name.clone(),
                        via: "sibling".into(),
                        state: "active".into(),
                        invite_key: None,
                        created_at_ms: now,
                    },
                )?;
                store::save_session(tx, sibling_name, &address, outbound)?;
                store::save_session(tx, &name, sibling_address, inbound)?;
            }
            Ok::<_, ApiError>(())
        })?;
        state
            .identities
            .push((name.clone(), Arc::new(StdMutex::new(identity))));
        let siblings: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
        let result = json!({
            "name": name.as_str(),
            "address": address.to_hex(),
            "short_id": address.short_id(),
            "siblings": siblings,
        });
        drop(state);
        self.start_link(name);
        Ok(result)
    }

    async fn send(
        &self,
        identity: Option<String>,
        outgoing: Outgoing,
    ) -> Result<serde_json::Value, ApiError> {
        let Outgoing {
            to,
            body,
            kind,
            reply_to,
            thread,
            priority,
        } = outgoing;
        let priority = match priority.as_deref() {
            None => agentwire_session::Priority::Normal,
            Some(name) => agentwire_session::Priority::from_name(name).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("unknown priority {name:?}; use urgent, normal or low"),
                )
            })?,
        };
        let kind = match kind.as_deref() {
            None => Kind::Chat,
            Some(name) => Kind::from_name(name)
                .filter(|k| !matches!(k, Kind::Redeem | Kind::Receipt))
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("unknown kind {name:?}; use chat, task, result, query or file"),
                    )
                })?,
        };
        let message_id = |field: &str, text: Option<String>| {
            text.map(|text| {
                MessageId::parse(&text).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("{field} {text:?} is not a message id (a UUID as printed by send and recv)"),
                    )
                })
            })
            .transpose()
        };
        let reply_to = message_id("--reply-to", reply_to)?;
        let thread = message_id("--thread", thread)?;
        let mut state = self.state.lock().await;
        let (name, _) = state.pick(identity.as_deref())?;
        let contact = state.resolve_peer(&name, &to)?;
        let pickle = store::session(state.store.conn(), &name, &contact.address)?
            .ok_or_else(|| ApiError::internal("no session with this contact", &contact.petname))?;
        let mut session = PeerSession::from_encrypted_pickle(&pickle, &self.key)
            .map_err(|e| ApiError::internal("cannot restore a session", e))?;
        let plaintext = Plaintext {
            id: MessageId::new_v7(),
            kind,
            priority,
            sent_at_ms: now_ms(),
            reply_to,
            thread,
            body: body.into_bytes(),
        };
        let payload = session.seal(&plaintext).map_err(|e| match e {
            agentwire_session::SessionError::Message(m) => {
                ApiError::new(ErrorCode::BodyTooLarge, m.to_string())
            }
            other => ApiError::internal("cannot encrypt", other),
        })?;
        let message = StoredMessage {
            id: plaintext.id,
            direction: "out".into(),
            peer: contact.address,
            kind,
            priority,
            reply_to,
            thread,
            sent_at_ms: plaintext.sent_at_ms,
            stored_at_ms: plaintext.sent_at_ms,
            body: plaintext.body,
            state: "queued".into(),
        };
        let session_pickle = session.to_encrypted_pickle(&self.key);
        state.store.transaction(|tx| {
            store::save_session(tx, &name, &contact.address, &session_pickle)?;
            store::insert_message(tx, &name, &message, Some(&payload))?;
            Ok::<_, ApiError>(())
        })?;
        drop(state);
        self.outbox_waker(&name).notify_one();
        Ok(json!({
            "id": message.id.to_string(),
            "to": contact.petname.as_str(),
            "state": "queued",
            "priority": priority.name(),
        }))
    }

    /// Marks `candidates` consumed (those another reader has not claimed in
    /// the meantime) and queues the read receipts, one per sender, in the
    /// caller's transaction: the sender learns "read" exactly when this
    /// commits.
    fn consume(
        &self,
        tx: &rusqlite::Connection,
        name: &Name,
        candidates: Vec<StoredMessage>,
        now: u64,
    ) -> Result<Vec<StoredMessage>, ApiError> {
        let mut taken = Vec::new();
        for message in candidates {
            if store::consume(tx, name, &message.id, now)? {
                taken.push(message);
            }
        }
        let mut by_peer: std::collections::BTreeMap<PublicKey, Vec<MessageId>> =
            std::collections::BTreeMap::new();
        for message in &taken {
            by_peer.entry(message.peer).or_default().push(message.id);
        }
        for (peer, ids) in by_peer {
            let Some(pickle) = store::session(tx, name, &peer)? else {
                continue;
            };
            let Ok(mut session) = PeerSession::from_encrypted_pickle(&pickle, &self.key) else {
                continue;
            };
            for chunk in ids.chunks(agentwire_session::message::MAX_RECEIPT_IDS) {
                if let Some((receipt_id, payload)) = seal_receipt(
                    &mut session,
                    agentwire_session::ReceiptState::Read,
                    chunk.to_vec(),
                    now,
                ) {
                    insert_receipt(tx, name, peer, receipt_id, &payload, now)?;
                }
            }
            store::save_session(tx, name, &peer, &session.to_encrypted_pickle(&self.key))?;
        }
        Ok(taken)
    }

    /// Consumes the named unread messages (an agent that was shown them by a
    /// subscription acknowledges them).
    async fn ack(
        &self,
        identity: Option<String>,
        ids: Vec<String>,
    ) -> Result<serde_json::Value, ApiError> {
        let ids = ids
            .iter()
            .map(|id| parse_message_id("id", id))
            .collect::<Result<Vec<_>, _>>()?;
        let mut state = self.state.lock().await;
        let (name, _) = state.pick(identity.as_deref())?;
        let now = now_ms();
        let taken = state.store.transaction(|tx| {
            let mut candidates = Vec::new();
            for id in &ids {
                if let Some(message) = store::unread_message(tx, &name, id)? {
                    candidates.push(message);
                }
            }
            self.consume(tx, &name, candidates, now)
        })?;
        drop(state);
        if !taken.is_empty() {
            self.outbox_waker(&name).notify_one();
            self.arrived.notify_waiters();
        }
        Ok(json!({"acked": taken.iter().map(|m| m.id.to_string()).collect::<Vec<_>>()}))
    }

    /// Streams events for one identity to `out`, one JSON object a line,
    /// until the client hangs up (`hangup` resolves) or the daemon stops:
    /// `{"event":"message",...}` for each unread message (once), and
    /// `{"event":"state",...}` whenever a sent message changes state.
    pub(crate) async fn subscribe<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        identity: Option<String>,
        out: &mut W,
        hangup: impl std::future::Future<Output = ()>,
    ) -> Result<(), ApiError> {
        use tokio::io::AsyncWriteExt;
        tokio::pin!(hangup);
        let name = self.state.lock().await.pick(identity.as_deref())?.0;
        let mut shown: std::collections::HashSet<MessageId> = std::collections::HashSet::new();
        let mut states_since = now_ms();
        // State changes already sent whose time is exactly `states_since`
        // (several can share a millisecond).
        let mut sent_at_since: std::collections::HashSet<(MessageId, String)> =
            std::collections::HashSet::new();
        let ready = json!({"event": "ready", "as": name.as_str()});
        let _ = out.write_all(format!("{ready}\n").as_bytes()).await;
        loop {
            let arrived = self.arrived.notified();
            let changed = self.states.notified();
            tokio::pin!(arrived, changed);
            arrived.as_mut().enable();
            changed.as_mut().enable();
            let mut lines = Vec::new();
            {
                let state = self.state.lock().await;
                let conn = state.store.conn();
                let contacts = store::contacts(conn, &name)?;
                let unread = store::unread(conn, &name, None, SUBSCRIBE_WINDOW)?;
                // Forget only what was consumed: a message that merely left
                // the window (urgent ones came first) is not shown twice.
                let mut consumed = Vec::new();
                for id in &shown {
                    if store::unread_message(conn, &name, id)?.is_none() {
                        consumed.push(*id);
                    }
                }
                for id in consumed {
                    shown.remove(&id);
                }
                for message in &unread {
                    if shown.insert(message.id) {
                        lines.push(json!({"event": "message", "message": message_json(message, &contacts)}));
                    }
                }
                for message in store::sent_changed_since(conn, &name, states_since)? {
                    let key = (message.id, message.state.clone());
                    if message.updated_at_ms > states_since {
                        states_since = message.updated_at_ms;
                        sent_at_since.clear();
                    }
                    if message.updated_at_ms == states_since && !sent_at_since.insert(key) {
                        continue;
                    }
                    let mut event = sent_json(&message, &contacts);
                    event["event"] = json!("state");
                    lines.push(event);
                }
            }
            // One write for what is ready together, so a reader sees a
            // backlog as one burst.
            let mut batch = String::new();
            for line in lines {
                batch.push_str(&line.to_string());
                batch.push('\n');
            }
            if !batch.is_empty() && out.write_all(batch.as_bytes()).await.is_err() {
                return Ok(());
            }
            if out.flush().await.is_err() {
                return Ok(());
            }
            tokio::select! {
                () = &mut hangup => return Ok(()),
                () = self.shutdown.cancelled() => return Ok(()),
                () = arrived => {}
                () = changed => {}
            }
        }
    }

    /// Waits until a sent message reaches `wanted` (or a later state), fails
    /// for good, or the time is up; returns its state then.
    async fn wait_for_state(
        &self,
        identity: Option<String>,
        id: &str,
        wanted: &str,
        wait_ms: Option<u64>,
    ) -> Result<serde_json::Value, ApiError> {
        let rank = |state: &str| match state {
            "queued" => 0,
            "relayed" => 1,
            "delivered" => 2,
            "read" => 3,
            _ => -1,
        };
        let wanted_rank = rank(wanted);
        if wanted_rank < 1 {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("cannot wait for {wanted:?}; wait for relayed, delivered or read"),
            ));
        }
        let id = parse_message_id("id", id)?;
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(wait_ms.unwrap_or(30_000)).min(MAX_WAIT);
        let mut wait = self.wait_on(&self.states, deadline);
        loop {
            let timed_out = wait.arm();
            let (message, contacts) = {
                let state = self.state.lock().await;
                let (name, _) = state.pick(identity.as_deref())?;
                (
                    store::sent_message(state.store.conn(), &name, &id)?,
                    store::contacts(state.store.conn(), &name)?,
                )
            };
            let Some(message) = message else {
                return Err(ApiError::new(
                    ErrorCode::UnknownMessage,
                    format!("no sent message {id}"),
                ));
            };
            let reached = rank(&message.state) >= wanted_rank;
            let terminal = matches!(message.state.as_str(), "failed" | "expired");
            if reached || terminal || timed_out {
                let mut result = sent_json(&message, &contacts);
                result["reached"] = json!(reached);
                result["wanted"] = json!(wanted);
                return Ok(result);
            }
            if !wait.sleep().await {
                return Err(stopping());
            }
        }
    }

    /// The unread messages (urgent first, then oldest first): taken
    /// (`consume`, for `recv`: marked read, receipts queued, in one
    /// transaction) or only shown (`inbox`). With `wait_ms`, waits up to that
    /// long for a first one.
    async fn unread(
        &self,
        identity: Option<String>,
        from: Option<String>,
        max: Option<usize>,
        wait_ms: Option<u64>,
        consume: bool,
    ) -> Result<serde_json::Value, ApiError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(wait_ms.unwrap_or(0)).min(MAX_WAIT);
        let mut wait = self.wait_on(&self.arrived, deadline);
        loop {
            let timed_out = wait.arm();
            {
                let mut state = self.state.lock().await;
                let (name, _) = state.pick(identity.as_deref())?;
                let from = from
                    .as_ref()
                    .map(|peer| state.resolve_peer(&name, peer))
                    .transpose()?;
                let contacts = store::contacts(state.store.conn(), &name)?;
                let now = now_ms();
                let max = max.unwrap_or(DEFAULT_MAX_MESSAGES);
                let messages = if consume {
                    let taken = state.store.transaction(|tx| {
                        let candidates =
                            store::unread(tx, &name, from.as_ref().map(|c| &c.address), max)?;
                        self.consume(tx, &name, candidates, now)
                    })?;
                    if !taken.is_empty() {
                        self.outbox_waker(&name).notify_one();
                        // Subscriptions may now show messages beyond their window.
                        self.arrived.notify_waiters();
                    }
                    taken
                } else {
                    store::unread(
                        state.store.conn(),
                        &name,
                        from.as_ref().map(|c| &c.address),
                        max,
                    )?
                };
                if !messages.is_empty() || timed_out {
                    let mut answer = json!({
                        "messages": messages.iter().map(|m| message_json(m, &contacts)).collect::<Vec<_>>(),
                    });
                    if !consume {
                        answer["unread"] = json!(store::unread_count(state.store.conn(), &name)?);
                    }
                    return Ok(answer);
                }
            }
            if !wait.sleep().await {
                // A stopping daemon ends a wait for messages with none.
                return Ok(json!({"messages": []}));
            }
        }
    }
}

impl Daemon {
    /// A wait for `notify` (or `deadline`, or the daemon's shutdown).
    fn wait_on<'a>(&'a self, notify: &'a Notify, deadline: tokio::time::Instant) -> Wait<'a> {
        Wait {
            notify,
            shutdown: &self.shutdown,
            deadline,
            woken: Box::pin(notify.notified()),
        }
    }
}

/// Waiting for a change: [`Wait::arm`] before each look, so a change between
/// the look and the sleep is not missed, then [`Wait::sleep`].
struct Wait<'a> {
    notify: &'a Notify,
    shutdown: &'a CancellationToken,
    deadline: tokio::time::Instant,
    woken: std::pin::Pin<Box<tokio::sync::futures::Notified<'a>>>,
}

impl Wait<'_> {
    /// Registers for the next wake-up; whether the deadline has passed (the
    /// look that follows is then the last).
    fn arm(&mut self) -> bool {
        self.woken.set(self.notify.notified());
        self.woken.as_mut().enable();
        tokio::time::Instant::now() >= self.deadline
    }

    /// Sleeps until woken or the deadline; false when the daemon is stopping.
    async fn sleep(&mut self) -> bool {
        tokio::select! {
            () = self.woken.as_mut() => true,
            () = tokio::time::sleep_until(self.deadline) => true,
            () = self.shutdown.cancelled() => false,
        }
    }
}

/// The error of a wait the daemon's shutdown cut short.
fn stopping() -> ApiError {
    ApiError::new(ErrorCode::Internal, "the daemon is stopping")
}

impl State {
    fn identity(&self, name: &Name) -> Option<Arc<StdMutex<Identity>>> {
        self.identities
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, i)| i.clone())
    }

    /// The identity named, or the default one.
    fn pick(&self, name: Option<&str>) -> Result<(Name, Arc<StdMutex<Identity>>), ApiError> {
        match name {
            None => self.identities.first().cloned().ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotInitialized,
                    "no identity in this home yet; run `agentwire init`",
                )
            }),
            Some(name) => {
                let name = parse_name(name)?;
                self.identity(&name).map(|i| (name.clone(), i)).ok_or_else(|| {
                    let known: Vec<&str> = self.identities.iter().map(|(n, _)| n.as_str()).collect();
                    ApiError::new(
                        ErrorCode::UnknownIdentity,
                        format!("no identity named {name} in this home (have: {}); create it with `agentwire init --name {name}`", known.join(", ")),
                    )
                })
            }
        }
    }

    /// A contact by petname or by a unique prefix of its key (hex).
    fn resolve_peer(&self, identity: &Name, peer: &str) -> Result<Contact, ApiError> {
        let contacts = store::contacts(self.store.conn(), identity)?;
        let prefix = peer.to_ascii_lowercase();
        let by_key: Vec<&Contact> =
            if prefix.len() >= 4 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
                contacts
                    .iter()
                    .filter(|c| c.address.to_hex().starts_with(&prefix))
                    .collect()
            } else {
                Vec::new()
            };
        if let Some(contact) = contacts.iter().find(|c| c.petname.as_str() == peer) {
            // A name that looks like another contact's key must not capture
            // messages meant for that key.
            if by_key.iter().any(|c| c.address != contact.address) {
                return Err(ApiError::new(
                    ErrorCode::AmbiguousPeer,
                    format!(
                        "{peer:?} is both a contact's name and the start of another contact's key; use more of the key, or rename the contact"
                    ),
                ));
            }
            return Ok(contact.clone());
        }
        match by_key.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(ApiError::new(
                ErrorCode::UnknownPeer,
                format!(
                    "no contact named {peer:?} (or with a key starting so); see `agentwire contacts`"
                ),
            )),
            many => Err(ApiError::new(
                ErrorCode::AmbiguousPeer,
                format!(
                    "{peer:?} matches {} contacts ({}); give more of the key or the petname",
                    many.len(),
                    many.iter()
                        .map(|c| c.petname.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// `agent`, or `agent-2`, `agent-3`, … when taken.
    fn free_name(&self) -> Result<Name, ApiError> {
        let taken = |candidate: &str| self.identities.iter().any(|(n, _)| n.as_str() == candidate);
        let mut candidate = "agent".to_owned();
        let mut n = 2;
        while taken(&candidate) {
            candidate = format!("agent-{n}");
            n += 1;
        }
        parse_name(&candidate)
    }
}

fn parse_name(text: &str) -> Result<Name, ApiError> {
    Name::new(text)
        .map_err(|e| ApiError::new(ErrorCode::BadName, format!("invalid name {text:?}: {e}")))
}

/// Seals a receipt for `ids` in `session`: `(receipt id, payload)`, or `None`
/// if it cannot be sealed (then the sender just never sees that state).
fn seal_receipt(
    session: &mut PeerSession,
    state: agentwire_session::ReceiptState,
    ids: Vec<MessageId>,
    now: u64,
) -> Option<(MessageId, Vec<u8>)> {
    let receipt = Plaintext {
        id: MessageId::new_v7(),
        kind: Kind::Receipt,
        priority: agentwire_session::Priority::Normal,
        sent_at_ms: now,
        reply_to: None,
        thread: None,
        body: agentwire_session::Receipt { state, ids }.encode(),
    };
    match session.seal(&receipt) {
        Ok(payload) => Some((receipt.id, payload)),
        Err(error) => {
            tracing::warn!(%error, "cannot seal a receipt");
            None
        }
    }
}

/// Queues a sealed receipt in the outbox.
fn insert_receipt(
    tx: &rusqlite::Connection,
    name: &Name,
    to: PublicKey,
    id: MessageId,
    payload: &[u8],
    now: u64,
) -> rusqlite::Result<()> {
    let message = StoredMessage::outgoing_control(id, to, Kind::Receipt, now);
    store::insert_message(tx, name, &message, Some(payload)).map(|_| ())
}

/// Stores a pairing notice in the outbox.
fn insert_notice(
    tx: &rusqlite::Connection,
    name: &Name,
    to: PublicKey,
    notice: &[u8],
    now: u64,
) -> rusqlite::Result<()> {
    let message = StoredMessage::outgoing_control(MessageId::new_v7(), to, Kind::Redeem, now);
    store::insert_message(tx, name, &message, Some(notice)).map(|_| ())
}

fn parse_message_id(field: &str, text: &str) -> Result<MessageId, ApiError> {
    MessageId::parse(text).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{field} {text:?} is not a message id (a UUID as printed by send and recv)"),
        )
    })
}

/// A sent message and its delivery state, for an agent.
fn sent_json(message: &store::SentMessage, contacts: &[Contact]) -> serde_json::Value {
    let petname = contacts
        .iter()
        .find(|c| c.address == message.peer)
        .map(|c| c.petname.as_str().to_owned());
    json!({
        "id": message.id.to_string(),
        "to": {"name": petname, "short_id": message.peer.short_id()},
        "kind": message.kind.name(),
        "state": message.state,
        "sent_at_ms": message.sent_at_ms,
        "updated_at_ms": message.updated_at_ms,
    })
}

fn invite_error(error: InviteError) -> ApiError {
    let code = match &error {
        InviteError::Malformed(_)
        | InviteError::UnsupportedVersion(_)
        | InviteError::BadSignature => ErrorCode::InviteInvalid,
        InviteError::Expired { .. } => ErrorCode::InviteExpired,
        InviteError::WrongRelay { .. } => ErrorCode::InviteWrongRelay,
    };
    ApiError::new(code, error.to_string())
}

fn contact_json(contact: &Contact) -> serde_json::Value {
    json!({
        "name": contact.petname.as_str(),
        "state": contact.state,
        "address": contact.address.to_hex(),
        "short_id": contact.address.short_id(),
        "via": contact.via,
        "created_at_ms": contact.created_at_ms,
    })
}

/// A message for an agent. The sender is the verified contact (petname and
/// short key id, filled in by the daemon); the body is untrusted content from
/// that contact.
fn message_json(message: &StoredMessage, contacts: &[Contact]) -> serde_json::Value {
    let petname = contacts
        .iter()
        .find(|c| c.address == message.peer)
        .map(|c| c.petname.as_str().to_owned());
    json!({
        "id": message.id.to_string(),
        "from": {
            "name": petname,
            "short_id": message.peer.short_id(),
            "address": message.peer.to_hex(),
            "verified": true,
        },
        "kind": message.kind.name(),
        "priority": message.priority.name(),
        "sent_at_ms": message.sent_at_ms,
        "stored_at_ms": message.stored_at_ms,
        "reply_to": message.reply_to.map(|id| id.to_string()),
        "thread": message.thread.map(|id| id.to_string()),
        "body": String::from_utf8_lossy(&message.body),
    })
}
