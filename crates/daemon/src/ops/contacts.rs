//! `whoami`, `contacts`, `rename`, `remove`.

use std::sync::Arc;

use crate::api::{
    ApiError, ContactList, Contacts, ErrorCode, IdentityView, Remove, Removed, Rename, Renamed,
    Whoami,
};
use crate::core::{Daemon, parse_name};
use crate::ops::Run;
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
        let contacts = daemon.db.run(move |tx| tx.contacts(&name)).await?;
        Ok(ContactList {
            contacts: contacts.iter().map(contact_view).collect(),
        })
    }
}

impl Run for Rename {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Renamed, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let contact = daemon.resolve_peer(&name, &self.peer).await?;
        let new_name = parse_name(&self.new_name)?;
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

impl Run for Remove {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Removed, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let contact = daemon.resolve_peer(&name, &self.peer).await?;
        let address = contact.address;
        let mut slot = daemon.session_slot(&name, &address).await;
        daemon
            .db
            .run(move |tx| tx.remove_contact(&name, &address))
            .await?;
        *slot = None;
        Ok(Removed {
            removed: contact.petname.as_str().to_owned(),
        })
    }
}
