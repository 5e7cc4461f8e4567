//! `status` (the daemon's health, per identity: link, outbox, unread) and
//! `stop`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::api::{ApiError, DaemonStatus, IdentityStatus, Status, Stop, Stopping};
use crate::core::Daemon;
use crate::ops::Run;

impl Run for Status {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<DaemonStatus, ApiError> {
        let relay = daemon.relay_url().await.ok();
        let local_relay = daemon.has_local_relay().await;
        let state = daemon.state.lock().await;
        let tx = state.store.read();
        let mut identities = Vec::new();
        for (name, identity) in &state.identities {
            let address = identity.lock().unwrap_or_else(|e| e.into_inner()).address();
            identities.push(IdentityStatus {
                name: name.as_str().to_owned(),
                short_id: address.short_id(),
                relay_error: daemon.link_errors.get(name),
                queued: tx.outbox_count(name)?,
                queued_because: daemon.outbox_errors.get(name),
                unread: tx.unread_count(name)?,
            });
        }
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
        })
    }
}

impl Run for Stop {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Stopping, ApiError> {
        daemon.shutdown.cancel();
        Ok(Stopping { stopping: true })
    }
}
