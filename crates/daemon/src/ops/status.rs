//! `status` (the daemon's health, per identity: link, outbox, unread) and
//! `stop`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::api::{ApiError, DaemonStatus, IdentityStatus, Status, Stop, Stopping};
use agentwire_session::Name;

use crate::core::Daemon;
use crate::ops::Run;
use crate::store::StoreError;

impl Run for Status {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<DaemonStatus, ApiError> {
        let relay = daemon.relay_url().await.ok();
        let local_relay = daemon.has_local_relay().await;
        let known: Vec<(Name, String)> = daemon
            .identities()
            .0
            .iter()
            .map(|(name, identity)| {
                let address = identity.lock().unwrap_or_else(|e| e.into_inner()).address();
                (name.clone(), address.short_id())
            })
            .collect();
        let names: Vec<Name> = known.iter().map(|(name, _)| name.clone()).collect();
        let counts = daemon
            .db
            .run(move |tx| {
                names
                    .iter()
                    .map(|name| Ok((tx.outbox_count(name)?, tx.unread_count(name)?)))
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await?;
        let identities: Vec<IdentityStatus> = known
            .into_iter()
            .zip(counts)
            .map(|((name, short_id), (queued, unread))| IdentityStatus {
                relay_error: daemon.link_errors.get(&name),
                queued_because: daemon.outbox_errors.get(&name),
                name: name.as_str().to_owned(),
                short_id,
                queued,
                unread,
            })
            .collect();
        Ok(DaemonStatus {
            running: true,
            pid: std::process::id(),
            home: daemon.home.root().display().to_string(),
            relay,
            local_relay,
            queued: identities.iter().map(|i| i.queued).sum(),
            identities,
            dropped_non_contact: daemon.counters.non_contact.load(Ordering::Relaxed),
            dropped_undecryptable: daemon.counters.undecryptable.load(Ordering::Relaxed),
            refused_not_permitted: daemon.counters.refused.load(Ordering::Relaxed),
            invites_redeemed: daemon.counters.redeemed.load(Ordering::Relaxed),
        })
    }
}

impl Run for Stop {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Stopping, ApiError> {
        daemon.shutdown.cancel();
        Ok(Stopping { stopping: true })
    }
}
