//! The daemon's shared state: the store, the identities, the in-process
//! relay, and the wake-ups that waiters and links listen to. Operations
//! (`ops/`), the relay links (`link.rs`) and the receive pipeline
//! (`receive.rs`) work on it; this module holds no logic of theirs.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex as StdMutex, RwLock};
use std::time::Duration;

use agentwire_relay::{RateLimit, Relay, RelayConfig};
use agentwire_session::{Identity, MessageId, Name, PeerSession, PickleKey};
use agentwire_wire::{PublicKey, RelayId};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{ApiError, ErrorCode, internal};
use crate::contact_book::ContactBook;
use crate::db::{Db, DbThread};
use crate::home::Home;
use crate::identities::resolve_peer;
pub(crate) use crate::identities::{
    Identities, parse_message_id, parse_permissions, parse_petname, petname_hint,
};
use crate::pairing::Answer;
use crate::store::{Contact, Store};

/// Default number of messages `recv`/`inbox` return.
pub const DEFAULT_MAX_MESSAGES: usize = 100;
/// The most messages one `recv`, `inbox` or `ack` handles; a larger `max`
/// (or list of ids) is refused.
pub const MAX_MESSAGES_PER_REQUEST: usize = 1000;
/// The most sent messages one `sent` lists (states only, no bodies).
pub const MAX_SENT_PER_REQUEST: usize = 100_000;

/// A request's `max`, or the default; refused above `limit`.
pub(crate) fn bounded_max(max: Option<usize>, limit: usize) -> Result<usize, ApiError> {
    match max {
        None => Ok(DEFAULT_MAX_MESSAGES.min(limit)),
        Some(0) => Err(ApiError::invalid("max must be at least 1")),
        Some(max) if max > limit => Err(ApiError::invalid(format!(
            "max {max} is over the limit of {limit} messages per request"
        ))),
        Some(max) => Ok(max),
    }
}
/// Longest wait the daemon grants a request.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// How long a wait lasts when the request does not say.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// Messages an identity may have waiting for the relay, by default
/// (`AGENTWIRE_OUTBOX_LIMIT`); a `send` beyond it waits for room, then is
/// refused with `outbox_full`.
pub const DEFAULT_OUTBOX_LIMIT: u64 = 10_000;
/// How long a `send` waits for room in a full outbox.
pub(crate) const OUTBOX_ROOM_WAIT: Duration = Duration::from_secs(10);
/// Frames per second per key and per IP of the daemon's own loopback relay.
pub(crate) const LOCAL_RELAY_FRAMES_PER_SEC: u32 = 1_000_000;
/// How long a client of the in-process relay has to answer its challenge.
const LOCAL_RELAY_AUTH_TIMEOUT: Duration = Duration::from_secs(1);

/// The in-process relay (when no `--relay` is set) and the random access
/// token, made at its start and known to this daemon only, that it requires.
struct LocalRelay {
    relay: Relay,
    token: String,
}

/// 32 random bytes, hex.
fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
/// Default lifetime of an invite.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Messages dropped since the daemon started (kept in memory: counting must
/// not cost a disk write per dropped envelope).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) non_contact: AtomicU64,
    pub(crate) undecryptable: AtomicU64,
    /// Messages of a kind their sender may not send (answered `rejected`).
    pub(crate) refused: AtomicU64,
    /// Our invites redeemed: new contacts.
    pub(crate) redeemed: AtomicU64,
}

/// What happened to an identity, as published to its subscriptions.
#[derive(Clone, Debug)]
pub(crate) enum Published {
    /// A message was stored (once per message).
    Message(Box<crate::api::MessageView>),
    /// A sent message changed state.
    State(crate::api::SentView),
    /// A task arrived or changed state.
    Task(crate::api::TaskView),
    /// A contact was added or removed us.
    Contact(crate::api::ContactView),
    /// A piece of the output of a task we asked for.
    Chunk(crate::api::ChunkView),
    /// Unread messages were taken (a subscription that could not show its
    /// whole backlog looks again).
    Consumed,
}

/// Who follows each identity: its subscriptions' broadcast. A cheap handle,
/// so that a store job can ask, in its own transaction, whether anyone
/// follows (a subscription that starts later reads the store after that
/// job, so no message falls between the two).
#[derive(Clone, Default)]
pub(crate) struct Followers(Arc<StdMutex<HashMap<Name, broadcast::Sender<Published>>>>);

impl Followers {
    /// Whether anyone follows `name`.
    pub(crate) fn any(&self, name: &Name) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .is_some_and(|sender| sender.receiver_count() > 0)
    }
}

/// Published items buffered per identity for subscriptions that lag; one
/// that falls further behind looks at the store again.
const PUBLISHED_BUFFER: usize = 1024;

/// A contact's session as cached, behind the lock that orders its changes.
type CachedSession = Arc<Mutex<Option<PeerSession>>>;

/// One contact's session, cached: `None` until loaded from the store (or
/// after something else replaced it there).
pub(crate) type SessionSlot = OwnedMutexGuard<Option<PeerSession>>;

/// A map behind a std mutex, for the small per-identity side tables (never
/// held across an await).
pub(crate) struct Table<K, V>(StdMutex<HashMap<K, V>>);

impl<K: std::hash::Hash + Eq, V: Clone> Table<K, V> {
    fn new() -> Self {
        Table(StdMutex::new(HashMap::new()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.lock().get(key).cloned()
    }

    pub(crate) fn set(&self, key: K, value: V) {
        self.lock().insert(key, value);
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    pub(crate) fn take(&self, key: &K) -> Option<V> {
        self.lock().remove(key)
    }
}

/// The daemon.
pub struct Daemon {
    /// This daemon, for work it hands to tasks of its own.
    me: std::sync::Weak<Daemon>,
    pub(crate) home: Home,
    pub(crate) key: PickleKey,
    /// The store, through its thread.
    pub(crate) db: Db,
    /// Each identity's contacts, cached between changes.
    pub(crate) contacts: ContactBook,
    db_thread: StdMutex<Option<DbThread>>,
    pub(crate) identities: RwLock<Identities>,
    /// Held while an account changes (an identity created, a one-time key
    /// made for an invite or used by a redemption) until its store write is
    /// done, so such changes never interleave.
    pub(crate) accounts: Mutex<()>,
    /// Each contact's session, behind a lock that orders its changes: a
    /// change (seal or open) and the queueing of its store write happen under
    /// it, so the store receives a session's states in order.
    sessions: StdMutex<HashMap<(Name, PublicKey), CachedSession>>,
    /// Woken whenever a message is stored or consumed.
    pub(crate) arrived: Notify,
    /// Per identity: woken when a message is queued for sending (a stored
    /// permit means a wake-up is never lost while the link is busy).
    queued: StdMutex<HashMap<Name, Arc<Notify>>>,
    relay: Mutex<Option<LocalRelay>>,
    /// The id of the relay each identity is connected to, once connected.
    pub(crate) relay_ids: Table<Name, RelayId>,
    /// The relay id each identity's link last connected to, kept across
    /// reconnects: a relay whose URLs lead to different relays is noticed.
    pub(crate) last_relay_ids: Table<Name, RelayId>,
    /// How long each identity's relay keeps an undelivered envelope, once
    /// connected.
    pub(crate) relay_ttls: Table<Name, Duration>,
    /// Woken when the retention changes, so the sweep follows it at once.
    pub(crate) retention_changed: Notify,
    /// Each identity's relay connection while its link serves one, for
    /// requests other than sending (the directory). The link takes it back
    /// when the connection ends, so that no handle keeps it open.
    pub(crate) links: Table<Name, agentwire_client::RelayClient>,
    /// Woken when a link connects or is refused, or a pairing answer arrives.
    pub(crate) pairing: Notify,
    /// Woken when an outgoing message changes state.
    pub(crate) states: Notify,
    /// Woken when a task (either side) arrives or changes state.
    pub(crate) task_changes: Notify,
    pub(crate) counters: Counters,
    /// Which refusals of redemptions of spent or expired invites may still
    /// be sent.
    pub(crate) refusals_allowed: StdMutex<crate::redeem::RefusalLimiter>,
    /// Per identity: unread messages a reader holds until it confirms which
    /// it took (`recv` with `confirm`); other readers pass them by.
    claims: StdMutex<HashMap<Name, std::collections::HashSet<MessageId>>>,
    /// Per identity: what its subscriptions follow.
    published: Followers,
    /// When the last request came in, Unix ms.
    pub(crate) last_request_ms: AtomicU64,
    /// Why each identity's link is not connected, while it is not.
    pub(crate) link_errors: Table<Name, String>,
    /// Why the relay refused each identity's link in a way retrying cannot
    /// mend, while it does.
    pub(crate) link_refusals: Table<Name, String>,
    /// Per identity: messages waiting for the relay (not receipts or
    /// pairing messages), as of the last store job that changed it.
    pub(crate) outbox_depth: Table<Name, u64>,
    /// The most messages an identity may have waiting for the relay.
    pub(crate) outbox_limit: u64,
    /// Why the relay last declined one of an identity's queued messages,
    /// until the outbox drains.
    pub(crate) outbox_errors: Table<Name, String>,
    /// Refusals of our redemptions, by (identity, inviter), for `accept`.
    pub(crate) refusals: Table<(Name, PublicKey), Answer>,
    /// When each contact's daemon was last heard from (any envelope that
    /// opened), Unix ms: `discover`'s online. In memory only.
    pub(crate) seen: Table<(Name, PublicKey), u64>,
    /// When `discover` last pinged each contact, Unix ms (one unanswered
    /// ping at a time per contact, at most every few minutes).
    pub(crate) pinged: Table<(Name, PublicKey), u64>,
    /// Moves on when the relay settings change: every link reconnects.
    pub(crate) relay_changed: tokio::sync::watch::Sender<u64>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// `AGENTWIRE_OUTBOX_LIMIT`, or [`DEFAULT_OUTBOX_LIMIT`].
fn outbox_limit() -> u64 {
    match std::env::var("AGENTWIRE_OUTBOX_LIMIT").map(|v| v.parse::<u64>()) {
        Ok(Ok(limit)) if limit > 0 => limit,
        Ok(_) => {
            tracing::warn!(
                "AGENTWIRE_OUTBOX_LIMIT is not a positive number; using {DEFAULT_OUTBOX_LIMIT}"
            );
            DEFAULT_OUTBOX_LIMIT
        }
        Err(_) => DEFAULT_OUTBOX_LIMIT,
    }
}

/// The time now, Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
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
        let store_error = |source| crate::DaemonError::Store {
            path: home.db().display().to_string(),
            source,
        };
        let store = Store::open(&home.db()).map_err(store_error)?;
        let mut identities = Vec::new();
        let stored = store.read().identities().map_err(store_error)?;
        let contacts = ContactBook::new(store.contacts_version());
        let reader =
            Store::open_reader(&home.db(), store.contacts_version()).map_err(store_error)?;
        let (db, db_thread) = Db::spawn(store, reader).map_err(store_error)?;
        for (name, pickle) in stored {
            let name = Name::new(&name).map_err(|e| crate::DaemonError::Corrupt(e.to_string()))?;
            let identity = Identity::from_encrypted_pickle(name.clone(), &pickle, &key)
                .map_err(|e| crate::DaemonError::Corrupt(e.to_string()))?;
            identities.push((name, Arc::new(StdMutex::new(identity))));
        }
        Ok(Arc::new_cyclic(|me| Daemon {
            me: me.clone(),
            home,
            key,
            db,
            contacts,
            db_thread: StdMutex::new(Some(db_thread)),
            identities: RwLock::new(Identities(identities)),
            accounts: Mutex::new(()),
            sessions: StdMutex::new(HashMap::new()),
            arrived: Notify::new(),
            queued: StdMutex::new(HashMap::new()),
            relay: Mutex::new(None),
            relay_ids: Table::new(),
            last_relay_ids: Table::new(),
            relay_ttls: Table::new(),
            retention_changed: Notify::new(),
            links: Table::new(),
            seen: Table::new(),
            pinged: Table::new(),
            pairing: Notify::new(),
            states: Notify::new(),
            task_changes: Notify::new(),
            refusals: Table::new(),
            counters: Counters::default(),
            refusals_allowed: StdMutex::new(crate::redeem::RefusalLimiter::default()),
            published: Followers::default(),
            claims: StdMutex::new(HashMap::new()),
            last_request_ms: AtomicU64::new(now_ms()),
            link_errors: Table::new(),
            link_refusals: Table::new(),
            outbox_errors: Table::new(),
            outbox_depth: Table::new(),
            outbox_limit: outbox_limit(),
            relay_changed: tokio::sync::watch::Sender::new(0),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }))
    }

    /// Runs `work` on this daemon in a task of its own (tracked, so that
    /// shutdown waits for it).
    pub(crate) fn spawn<F, Fut>(&self, work: F)
    where
        F: FnOnce(Arc<Daemon>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        if let Some(daemon) = self.me.upgrade() {
            self.tasks.spawn(work(daemon));
        }
    }

    /// The relay URL: the configured one, or an in-process relay on loopback.
    pub(crate) async fn relay_url(&self) -> Result<String, ApiError> {
        Ok(self.relay_access().await?.0)
    }

    /// The relay URL and the access token to present there: the configured
    /// ones, or the in-process relay's (started on first use).
    pub(crate) async fn relay_access(&self) -> Result<(String, Option<String>), ApiError> {
        if let Some(url) = self.setting("relay_url").await? {
            return Ok((url, self.setting("relay_token").await?));
        }
        let mut relay = self.relay.lock().await;
        if let Some(local) = relay.as_ref() {
            return Ok((local.relay.url(), Some(local.token.clone())));
        }
        let mut config = RelayConfig::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            self.home.local_relay_db(),
        );
        // The daemon's own relay serves this home's identities over
        // loopback: its frame rates must not throttle its own daemon (a
        // message costs about six frames). Still bounded, as everything is.
        config.limits.key_rate = RateLimit::per_second(LOCAL_RELAY_FRAMES_PER_SEC);
        config.limits.ip_rate = RateLimit::per_second(LOCAL_RELAY_FRAMES_PER_SEC);
        // Every client comes from 127.0.0.1: a per-IP limit below the global
        // one would only let another local user's connections take this
        // daemon's share. Only this daemon knows the token, and its hello
        // comes within milliseconds: others are refused at the hello, or
        // dropped after a second if they send none.
        config.limits.max_connections_per_ip = config.limits.max_connections;
        config.limits.auth_timeout = LOCAL_RELAY_AUTH_TIMEOUT;
        let token = random_token().map_err(|e| internal("no randomness for the local relay", e))?;
        let secret = agentwire_relay::AccessToken::new(token.clone().into_bytes());
        config.access_token = secret.clone();
        config.metrics_token = secret;
        let started = Relay::spawn(config).await.map_err(|e| {
            ApiError::new(
                ErrorCode::RelayUnreachable,
                format!("cannot start the local relay: {e}"),
            )
        })?;
        let url = started.url();
        tracing::info!(%url, "started the local relay");
        *relay = Some(LocalRelay {
            relay: started,
            token: token.clone(),
        });
        Ok((url, Some(token)))
    }

    /// A setting from the store.
    pub(crate) async fn setting(&self, key: &'static str) -> Result<Option<String>, ApiError> {
        Ok(self.db.run(move |tx| tx.setting(key)).await?)
    }

    /// The identities, for a moment (never held across an await).
    pub(crate) fn identities(&self) -> std::sync::RwLockReadGuard<'_, Identities> {
        self.identities.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The identity named, or the default one.
    pub(crate) fn pick(
        &self,
        name: Option<&str>,
    ) -> Result<(Name, Arc<StdMutex<Identity>>), ApiError> {
        self.identities().pick(name)
    }

    /// The contact's session slot, locked: the caller changes the session
    /// and queues its store write before letting go.
    pub(crate) async fn session_slot(&self, name: &Name, peer: &PublicKey) -> SessionSlot {
        let slot = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((name.clone(), *peer))
            .or_default()
            .clone();
        slot.lock_owned().await
    }

    /// The session in `slot`, loaded from the store if not cached; `None`
    /// when there is none with this contact.
    pub(crate) async fn load_session<'a>(
        &self,
        slot: &'a mut SessionSlot,
        name: &Name,
        peer: &PublicKey,
    ) -> Result<Option<&'a mut PeerSession>, ApiError> {
        if slot.is_none() {
            let (name, peer) = (name.clone(), *peer);
            let pickle = self.db.run(move |tx| tx.session(&name, &peer)).await?;
            if let Some(pickle) = pickle {
                let session = PeerSession::from_encrypted_pickle(&pickle, &self.key)
                    .map_err(|e| internal("a stored session does not load", e))?;
                **slot = Some(session);
            }
        }
        Ok(slot.as_mut())
    }

    /// The contact with this address, if any.
    pub(crate) async fn contact(
        &self,
        identity: &Name,
        address: &PublicKey,
    ) -> Result<Option<Contact>, ApiError> {
        let contacts = self.contacts.get(&self.db, identity).await?;
        Ok(contacts.iter().find(|c| c.address == *address).cloned())
    }

    /// A contact by petname or by a unique prefix of its key (hex).
    pub(crate) async fn resolve_peer(
        &self,
        identity: &Name,
        peer: &str,
    ) -> Result<Contact, ApiError> {
        let contacts = self.contacts.get(&self.db, identity).await?;
        resolve_peer(&contacts, peer)
    }

    /// How many of `name`'s unread messages readers hold.
    pub(crate) fn claimed(&self, name: &Name) -> usize {
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map_or(0, std::collections::HashSet::len)
    }

    /// `messages` without those a reader holds; with `claim`, the rest are
    /// held from now on (until [`Daemon::release`]).
    pub(crate) fn unclaimed(
        &self,
        name: &Name,
        messages: Vec<crate::store::StoredMessage>,
        claim: bool,
    ) -> Vec<crate::store::StoredMessage> {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        let held = claims.entry(name.clone()).or_default();
        let free: Vec<_> = messages
            .into_iter()
            .filter(|m| !held.contains(&m.id))
            .collect();
        if claim {
            held.extend(free.iter().map(|m| m.id));
        }
        free
    }

    /// Lets go of held messages.
    pub(crate) fn release(&self, name: &Name, ids: &[MessageId]) {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = claims.get_mut(name) {
            for id in ids {
                held.remove(id);
            }
        }
    }

    /// Follows what is published for `name` from now on.
    pub(crate) fn follow(&self, name: &Name) -> broadcast::Receiver<Published> {
        self.published
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.clone())
            .or_insert_with(|| broadcast::channel(PUBLISHED_BUFFER).0)
            .subscribe()
    }

    /// Who follows the identities, for a store job to ask (so that views
    /// are built only for a reader).
    pub(crate) fn followers(&self) -> Followers {
        self.published.clone()
    }

    /// Publishes `items` to `name`'s subscriptions, if it has any.
    pub(crate) fn publish(&self, name: &Name, items: impl IntoIterator<Item = Published>) {
        let published = self.published.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = published.get(name).filter(|s| s.receiver_count() > 0) {
            for item in items {
                // No receiver left is not an error: nobody follows.
                let _ = sender.send(item);
            }
        }
    }

    /// Publishes stored messages and changed sent messages as views.
    pub(crate) fn publish_changes<'a>(
        &self,
        name: &Name,
        contacts: impl IntoIterator<Item = &'a Contact>,
        stored: &[crate::store::StoredMessage],
        changed: &[crate::store::SentMessage],
    ) {
        if stored.is_empty() && changed.is_empty() {
            return;
        }
        let contacts: Vec<Contact> = contacts.into_iter().cloned().collect();
        let mut items = Vec::with_capacity(stored.len() + changed.len());
        for message in stored {
            match crate::views::message_view(message, &contacts) {
                Ok(view) => items.push(Published::Message(Box::new(view))),
                Err(error) => tracing::error!(%error, "cannot show a stored message"),
            }
        }
        for message in changed {
            match crate::views::sent_view(message, &contacts, self.relay_ttls.get(name)) {
                Ok(view) => items.push(Published::State(view)),
                Err(error) => tracing::error!(%error, "cannot show a state change"),
            }
        }
        self.publish(name, items);
    }

    /// Tells task waiters and subscriptions that these tasks changed.
    pub(crate) async fn publish_tasks(&self, name: &Name, tasks: &[crate::store::StoredTask]) {
        if tasks.is_empty() {
            return;
        }
        self.task_changes.notify_waiters();
        match self.contacts.get(&self.db, name).await {
            Ok(contacts) => self.publish(
                name,
                tasks
                    .iter()
                    .map(|task| Published::Task(crate::views::task_view(task, &contacts))),
            ),
            Err(error) => tracing::error!(%error, "cannot show a task change"),
        }
    }

    /// Whether the daemon has no identity and has had no request for `idle`.
    pub(crate) fn is_idle(&self, idle: Duration) -> bool {
        let last = self
            .last_request_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        self.identities().0.is_empty() && now_ms().saturating_sub(last) >= idle_ms
    }

    /// Whether the relay runs inside this daemon.
    pub(crate) async fn has_local_relay(&self) -> bool {
        self.relay.lock().await.is_some()
    }

    /// Stops links, waiters and the in-process relay.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some of the daemon's tasks did not stop within 5 s");
        }
        if let Some(local) = self.relay.lock().await.take() {
            local.relay.shutdown().await;
        }
        self.db.close().await;
        let thread = self
            .db_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread
            && tokio::task::spawn_blocking(move || thread.join())
                .await
                .is_err()
        {
            tracing::error!("cannot wait for the store thread");
        }
    }

    /// The wake-up of `name`'s outbox pump.
    pub(crate) fn outbox_waker(&self, name: &Name) -> Arc<Notify> {
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.clone())
            .or_default()
            .clone()
    }

    /// A wait for `notify` (or `deadline`, or the daemon's shutdown).
    pub(crate) fn wait_on<'a>(
        &'a self,
        notify: &'a Notify,
        deadline: tokio::time::Instant,
    ) -> Wait<'a> {
        Wait {
            notify,
            shutdown: &self.shutdown,
            deadline,
            woken: Box::pin(notify.notified()),
        }
    }
}

/// The deadline of a wait of `wait_ms` (or `default`), capped at
/// [`MAX_WAIT`].
pub(crate) fn deadline(wait_ms: Option<u64>, default: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + wait_ms.map_or(default, Duration::from_millis).min(MAX_WAIT)
}

/// Waiting for a change: [`Wait::arm`] before each look, so a change between
/// the look and the sleep is not missed, then [`Wait::sleep`].
pub(crate) struct Wait<'a> {
    notify: &'a Notify,
    shutdown: &'a CancellationToken,
    deadline: tokio::time::Instant,
    woken: std::pin::Pin<Box<tokio::sync::futures::Notified<'a>>>,
}

impl Wait<'_> {
    /// Registers for the next wake-up; whether the deadline has passed (the
    /// look that follows is then the last).
    pub(crate) fn arm(&mut self) -> bool {
        self.woken.set(self.notify.notified());
        self.woken.as_mut().enable();
        tokio::time::Instant::now() >= self.deadline
    }

    /// Sleeps until woken or the deadline; false when the daemon is stopping.
    pub(crate) async fn sleep(&mut self) -> bool {
        tokio::select! {
            () = self.woken.as_mut() => true,
            () = tokio::time::sleep_until(self.deadline) => true,
            () = self.shutdown.cancelled() => false,
        }
    }
}

/// The error of a wait the daemon's shutdown cut short.
pub(crate) fn stopping() -> ApiError {
    ApiError::new(ErrorCode::Internal, "the daemon is stopping")
}
