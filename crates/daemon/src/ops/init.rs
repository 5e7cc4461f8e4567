//! `init`: create an identity. The first one also fixes the relay; every
//! later one becomes a contact of each earlier one at once (a session pair
//! set up locally, nothing over the network).

use std::sync::{Arc, Mutex as StdMutex};

use agentwire_api::{ContactState, Via};
use agentwire_session::{Identity, Kind, Name};

use crate::api::{ApiError, Created, ErrorCode, Init, internal};
use crate::core::{Daemon, now_ms, parse_petname};
use crate::ops::Run;
use crate::receive::control;
use crate::store::Contact;

impl Run for Init {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Created, ApiError> {
        let Init {
            name,
            relay,
            relay_token,
            relay_ca,
            no_check,
        } = self;
        let relay = relay
            .as_deref()
            .map(crate::link::relay_url_setting)
            .transpose()?;
        let _accounts = daemon.accounts.lock().await;
        let existing: Vec<(Name, Arc<StdMutex<Identity>>)> = daemon.identities().0.clone();
        if let Some(url) = &relay
            && !existing.is_empty()
            && daemon.setting("relay_url").await?.as_deref() != Some(url.as_str())
        {
            return Err(ApiError::invalid(
                "this home already has identities on another relay; --relay is chosen with the first identity (use another --home for another relay)",
            ));
        }
        let name = match name {
            Some(name) => parse_petname(&name)?,
            None => daemon.identities().free_name()?,
        };
        // The first identity fixes the home's relay: check it answers, and
        // takes the token, before anything is created.
        if let Some(url) = &relay
            && existing.is_empty()
            && !no_check
        {
            crate::link::probe_relay(url, relay_token.as_deref(), relay_ca.as_deref())
                .await
                .map_err(|error| {
                    ApiError::new(
                        error.code,
                        format!(
                            "{}; nothing was created: fix --relay, --relay-token-file or --relay-ca and run init again (--no-check creates the identity anyway)",
                            error.message
                        ),
                    )
                })?;
        }
        if existing.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::new(
                ErrorCode::NameTaken,
                format!("an identity named {name} already exists here; pick another with --name"),
            ));
        }
        let mut identity = Identity::generate(name.clone());
        let address = identity.address();
        let curve = identity.curve25519();
        let mut pairs = Vec::new();
        for (sibling_name, sibling) in &existing {
            let sibling = sibling.lock().unwrap_or_else(|e| e.into_inner());
            let pairing_failed = |e| internal("cannot pair siblings", e);
            let otk = identity
                .new_one_time_key()
                .map_err(|e| internal("cannot pair siblings", e))?;
            let mut outbound = sibling.open_session(curve, otk).map_err(pairing_failed)?;
            let first = outbound
                .seal(&control(Kind::Redeem, Vec::new(), now_ms()))
                .map_err(pairing_failed)?;
            let (inbound, _) = identity
                .accept_session(sibling.curve25519(), &first)
                .map_err(pairing_failed)?;
            pairs.push(SiblingPair {
                name: sibling_name.clone(),
                address: sibling.address(),
                curve25519: sibling.curve25519(),
                outbound: outbound.to_encrypted_pickle(&daemon.key),
                inbound: inbound.to_encrypted_pickle(&daemon.key),
                pickle: sibling.to_encrypted_pickle(&daemon.key),
            });
        }
        let now = now_ms();
        let pickle = identity.to_encrypted_pickle(&daemon.key);
        let sibling = move |petname, address, curve25519| Contact {
            address,
            curve25519,
            petname,
            via: Via::Sibling,
            state: ContactState::Active,
            invite_key: None,
            permissions: agentwire_session::Permissions::DEFAULT,
            created_at_ms: now,
        };
        let (owner, written_pairs) = (name.clone(), pairs.clone());
        daemon
            .db
            .run(move |tx| {
                let (name, pairs) = (owner, written_pairs);
                if let Some(url) = &relay {
                    tx.set_setting("relay_url", url)?;
                }
                if let Some(token) = &relay_token {
                    tx.set_setting("relay_token", token)?;
                }
                if let Some(ca) = &relay_ca {
                    tx.set_setting("relay_ca", ca)?;
                }
                tx.save_identity(&name, &address, &pickle, now)?;
                for pair in &pairs {
                    tx.save_identity(&pair.name, &pair.address, &pair.pickle, now)?;
                    tx.add_contact(
                        &name,
                        &sibling(pair.name.clone(), pair.address, pair.curve25519),
                    )?;
                    tx.add_contact(&pair.name, &sibling(name.clone(), address, curve))?;
                    tx.save_session(&pair.name, &address, &pair.outbound)?;
                    tx.save_session(&name, &pair.address, &pair.inbound)?;
                }
                Ok::<_, ApiError>(())
            })
            .await?;
        daemon
            .identities
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .push((name.clone(), Arc::new(StdMutex::new(identity))));
        daemon.start_link(name.clone());
        Ok(Created {
            name: name.as_str().to_owned(),
            address: address.to_hex(),
            short_id: address.short_id(),
            siblings: pairs.iter().map(|p| p.name.as_str().to_owned()).collect(),
        })
    }
}

/// A new identity's session pair with an existing sibling.
#[derive(Clone)]
struct SiblingPair {
    name: agentwire_session::Name,
    address: agentwire_wire::PublicKey,
    curve25519: [u8; 32],
    /// The sibling's side.
    outbound: String,
    /// The new identity's side.
    inbound: String,
    /// The sibling's account, whose one-time key was used.
    pickle: String,
}
