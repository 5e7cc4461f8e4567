//! Each identity's contacts, kept in memory between changes: the send and
//! receive paths look a contact up on every message, and a store round trip
//! each time sat on the latency of every message.
//!
//! The store counts changes to contacts ([`Store::contacts_version`]); a
//! copy is read together with the count in one store job and used while
//! the count stays the same. A job that changes contacts moves the count on
//! before it commits, so a reader never keeps a copy older than a change it
//! could have seen.
//!
//! [`Store::contacts_version`]: crate::store::Store::contacts_version

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use agentwire_session::Name;

use crate::db::Db;
use crate::store::{Contact, StoreError};

/// A copy of an identity's contacts and the version it was read at.
type Copy = (u64, Arc<Vec<Contact>>);

/// The cached contacts of every identity.
pub(crate) struct ContactBook {
    version: Arc<AtomicU64>,
    cached: Mutex<HashMap<Name, Copy>>,
}

impl ContactBook {
    /// A book that follows the store's contacts version.
    pub(crate) fn new(version: Arc<AtomicU64>) -> ContactBook {
        ContactBook {
            version,
            cached: Mutex::new(HashMap::new()),
        }
    }

    /// `name`'s contacts, by petname: the cached copy while it is current,
    /// else read afresh.
    pub(crate) async fn get(&self, db: &Db, name: &Name) -> Result<Arc<Vec<Contact>>, StoreError> {
        let current = self.version.load(Ordering::Acquire);
        if let Some((version, contacts)) = self.lock().get(name)
            && *version == current
        {
            return Ok(contacts.clone());
        }
        let owner = name.clone();
        let (version, contacts) = db
            .run(move |tx| Ok::<_, StoreError>((tx.contacts_version(), tx.contacts(&owner)?)))
            .await?;
        let contacts = Arc::new(contacts);
        let mut cached = self.lock();
        // A slower reader must not replace a newer copy.
        if cached.get(name).is_none_or(|(held, _)| *held <= version) {
            cached.insert(name.clone(), (version, contacts.clone()));
        }
        Ok(contacts)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Name, Copy>> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }
}
