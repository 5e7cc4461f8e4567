//! Which keys are connected, and how to wake their connections.
//!
//! A connection registers one [`ConnWakers`] for its key. Storing an envelope
//! wakes the recipient's connections, which then read the new envelopes from
//! the store themselves: the store is the only queue, so live pushes and the
//! backlog on connect are one code path and cannot reorder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agentwire_wire::PublicKey;
use tokio::sync::Notify;

/// The wake-ups one connection listens for.
#[derive(Default)]
pub(crate) struct ConnWakers {
    /// New envelopes for this key were committed.
    pub(crate) deliveries: Notify,
    /// New expiry notices for this key (as a sender) were committed.
    pub(crate) notices: Notify,
}

/// Connection id and wakers of each connection, by key.
type ByKey = HashMap<PublicKey, Vec<(u64, Arc<ConnWakers>)>>;

/// Connected keys and their connections' wakers.
#[derive(Default)]
pub(crate) struct Wakers {
    by_key: Mutex<ByKey>,
}

impl Wakers {
    pub(crate) fn register(&self, key: PublicKey, conn_id: u64) -> Arc<ConnWakers> {
        let wakers = Arc::new(ConnWakers::default());
        self.lock()
            .entry(key)
            .or_default()
            .push((conn_id, wakers.clone()));
        wakers
    }

    pub(crate) fn unregister(&self, key: PublicKey, conn_id: u64) {
        let mut by_key = self.lock();
        if let Some(conns) = by_key.get_mut(&key) {
            conns.retain(|(id, _)| *id != conn_id);
            if conns.is_empty() {
                by_key.remove(&key);
            }
        }
    }

    /// Wakes `key`'s connections for new envelopes; whether it has any.
    pub(crate) fn wake_deliveries(&self, key: &PublicKey) -> bool {
        let by_key = self.lock();
        let conns = by_key.get(key);
        for (_, wakers) in conns.into_iter().flatten() {
            wakers.deliveries.notify_one();
        }
        conns.is_some()
    }

    /// Wakes `key`'s connections for new expiry notices; whether it has any.
    pub(crate) fn wake_notices(&self, key: &PublicKey) -> bool {
        let by_key = self.lock();
        let conns = by_key.get(key);
        for (_, wakers) in conns.into_iter().flatten() {
            wakers.notices.notify_one();
        }
        conns.is_some()
    }

    /// Wakes every connection for both kinds of news (after notifications
    /// may have been missed).
    #[cfg(feature = "postgres")]
    pub(crate) fn wake_all(&self) {
        for (_, wakers) in self.lock().values().flatten() {
            wakers.deliveries.notify_one();
            wakers.notices.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ByKey> {
        self.by_key.lock().unwrap_or_else(|e| e.into_inner())
    }
}
