//! `whoami`, `contacts`, `rename`, `permit`, `remove` (which tells the
//! contact).

use std::sync::Arc;

use agentwire_session::Kind;

use crate::api::{
    ApiError, ContactList, ContactState, ContactView, Contacts, ErrorCode, IdentityView, Permit,
    Remove, Removed, Rename, Renamed, Whoami, internal,
};
use crate::core::{Daemon, now_ms, parse_permissions, parse_petname};
use crate::ops::Run;
use crate::receive::control;
use crate::store::{StoreError, StoredMessage};
use crate::views::contact_view;

impl Run for Whoami {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<IdentityView, ApiError> {
        let (name, identity) = daemon.pick(self.identity.as_deref())?;
        let address = identity.lock().unwrap_or_else(|e| e.into_inner()).address();
        Ok(IdentityView {
            name: name.as_str().to_owned(),
            address: address.to_hex(),
            short_id: address.short_id(),
        })
    }
}

impl Run for Contacts {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<ContactList, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let (contacts, missing) = daemon
            .db
            .run(move |tx| {
                Ok::<_, crate::store::StoreError>((tx.contacts(&name)?, tx.missing(&name)?))
            })
            .await?;
        Ok(ContactList {
            contacts: contacts
                .iter()
                .map(|contact| ContactView {
                    missing: missing.get(&contact.address).copied().unwrap_or(0),
                    ..contact_view(contact)
                })
                .collect(),
        })
    }
}

impl Run for Rename {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Renamed, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let contact = daemon.resolve_peer(&name, &self.peer).await?;
        let new_name = parse_petname(&self.new_name)?;
        let (address, petname) = (contact.address, new_name.clone());
        let renamed = daemon
            .db
            .run(move |tx| tx.rename_contact(&name, &address, &petname))
            .await;
        match renamed {
            Ok(_) => Ok(Renamed {
                renamed: contact.petname.as_str().to_owned(),
                to: new_name.as_str().to_owned(),
            }),
            Err(error) if error.is_conflict() => Err(ApiError::new(
                ErrorCode::NameTaken,
                format!("a contact is already named {new_name}"),
            )),
            Err(error) => Err(error.into()),
        }
    }
}

impl Run for Permit {
    /// Changes what the contact may send us; the receive path reads it on
    /// the next envelope (the contacts' copy follows the store's version).
    async fn run(self, daemon: &Arc<Daemon>) -> Result<ContactView, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let contact = daemon.resolve_peer(&name, &self.peer).await?;
        if self.permissions.is_empty() {
            return Err(ApiError::invalid(
                "name at least one permission: chat, task, file or all",
            ));
        }
        let change = parse_permissions(Some(&self.permissions))?;
        let permissions = if self.allow {
            contact.permissions.with(change)
        } else {
            contact.permissions.without(change)
        };
        let (owner, address) = (name.clone(), contact.address);
        daemon
            .db
            .run(move |tx| tx.set_permissions(&owner, &address, permissions))
            .await?;
        tracing::info!(identity = %name, contact = %contact.petname, permissions = ?permissions.names(), "permissions changed");
        Ok(contact_view(&crate::store::Contact {
            permissions,
            ..contact
        }))
    }
}

impl Run for Remove {
    /// Forgets the contact and tells it: an `unpair` message, sealed in the
    /// session before the session is dropped and queued in the same
    /// transaction, so the contact learns it after everything sent before.
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Removed, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let contact = daemon.resolve_peer(&name, &self.peer).await?;
        let address = contact.address;
        let mut slot = daemon.session_slot(&name, &address).await;
        let now = now_ms();
        let unpair = if contact.state == ContactState::Removed {
            None
        } else {
            match daemon.load_session(&mut slot, &name, &address).await? {
                Some(session) => {
                    let message = control(Kind::Unpair, Vec::new(), now);
                    let payload = session
                        .seal(&message)
                        .map_err(|e| internal("cannot encrypt", e))?;
                    Some((message.id, payload))
                }
                None => None,
            }
        };
        let told = unpair.is_some();
        let owner = name.clone();
        let removed = daemon
            .db
            .run(move |tx| {
                tx.remove_contact(&owner, &address)?;
                if let Some((id, payload)) = &unpair {
                    let message = StoredMessage::outgoing_control(*id, address, Kind::Unpair, now);
                    tx.insert_message(&owner, &message, Some(payload))?;
                }
                Ok::<_, StoreError>(())
            })
            .await;
        // Whatever happened, the cached session must not outlive this: it
        // moved on by the seal, or its contact is gone.
        *slot = None;
        removed?;
        if told {
            daemon.outbox_waker(&name).notify_one();
        }
        Ok(Removed {
            removed: contact.petname.as_str().to_owned(),
            told,
        })
    }
}
