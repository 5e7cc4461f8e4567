//! `publish_card` and `discover --relay`: the relay's opt-in directory.
//!
//! Publishing lists the identity under its card's capabilities with a
//! fresh invite (30 days, offering `chat` unless told otherwise), signed by
//! the identity for its relay. Each redemption of that invite, and each
//! change of the card, publishes again with a new invite, so the listing
//! always carries one that works. Withdrawing tells the relay and revokes
//! the invite. Nothing is published unless asked.
//!
//! Finding checks every entry the relay returns before showing it: signed
//! by its key for this relay, its card's capabilities the ones it is listed
//! under, its invite made by that same key for this relay and unexpired. A
//! relay can leave entries out; it cannot make one up or alter one.

use std::sync::Arc;
use std::time::Duration;

use agentwire_client::{ClientError, verify_entry};
use agentwire_session::{Card, Name, Permissions, SignedInvite};
use agentwire_wire::directory::{Entry, MAX_ENTRY_BYTES};
use agentwire_wire::{RelayId, Signature};

use crate::api::{
    ApiError, ContactState, ErrorCode, Found, Invite, ListedIdentity, Listing, PublishCard,
};
use crate::core::{Daemon, now_ms, parse_permissions};
use crate::ops::Run;
use crate::ops::cards::card_view;
use crate::ops::pairing::connected_link;

/// How long a listing (and its invite) lasts unless published again.
const LISTING_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl Run for PublishCard {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Listing, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        if self.withdraw {
            if self.allow.is_some() {
                return Err(ApiError::invalid(
                    "a withdrawal offers nothing; drop --allow",
                ));
            }
            return withdraw(daemon, &name).await;
        }
        let permissions = match &self.allow {
            Some(_) => parse_permissions(self.allow.as_deref())?,
            None => Permissions::CHAT,
        };
        publish(daemon, &name, permissions).await
    }
}

/// Publishes `name`'s card with a new invite offering `permissions`.
pub(crate) async fn publish(
    daemon: &Arc<Daemon>,
    name: &Name,
    permissions: Permissions,
) -> Result<Listing, ApiError> {
    let (relay_id, client) = connected_link(daemon, name).await?;
    let owner = name.clone();
    let card = daemon
        .db
        .run(move |tx| tx.own_card(&owner))
        .await?
        .unwrap_or_default();
    let invite = Invite {
        identity: Some(name.as_str().to_owned()),
        ttl_ms: Some(u64::try_from(LISTING_TTL.as_millis()).unwrap_or(u64::MAX)),
        allow: Some(permissions.names().into_iter().map(str::to_owned).collect()),
        for_name: None,
    }
    .run(daemon)
    .await?;
    let one_time_key = SignedInvite::parse(&invite.invite)
        .map_err(|e| crate::api::internal("our own invite does not parse", e))?
        .invite
        .one_time_key;
    let mut entry = Entry {
        key: identity_key(daemon, name)?,
        published_at_ms: now_ms(),
        expires_at_ms: invite.expires_at_ms,
        capabilities: card.capabilities.clone(),
        card: card.encode(),
        invite: invite.invite.clone().into_bytes(),
        signature: Signature::from_bytes([0; 64]),
    };
    if entry.encode().len() > MAX_ENTRY_BYTES {
        return Err(ApiError::invalid(format!(
            "the card is too large to list (an entry is at most {MAX_ENTRY_BYTES} bytes with its invite); shorten its description or capabilities"
        )));
    }
    sign(daemon, name, &mut entry, &relay_id)?;
    let expires_at_ms = client.publish(&entry).await.map_err(relay_refused)?;
    let owner = name.clone();
    daemon
        .db
        .run(move |tx| tx.set_listing(&owner, Some((&one_time_key, permissions)), now_ms()))
        .await?;
    tracing::info!(identity = %name, capabilities = ?card.capabilities, "listed in the relay's directory");
    Ok(Listing {
        relay: daemon.relay_url().await?,
        listed: true,
        capabilities: card.capabilities,
        permissions: invite.permissions,
        expires_at_ms,
    })
}

async fn withdraw(daemon: &Arc<Daemon>, name: &Name) -> Result<Listing, ApiError> {
    let (relay_id, client) = connected_link(daemon, name).await?;
    let mut entry = Entry {
        key: identity_key(daemon, name)?,
        published_at_ms: now_ms(),
        expires_at_ms: now_ms(),
        capabilities: Vec::new(),
        card: Vec::new(),
        invite: Vec::new(),
        signature: Signature::from_bytes([0; 64]),
    };
    sign(daemon, name, &mut entry, &relay_id)?;
    client.publish(&entry).await.map_err(relay_refused)?;
    let owner = name.clone();
    daemon
        .db
        .run(move |tx| tx.set_listing(&owner, None, now_ms()))
        .await?;
    tracing::info!(identity = %name, "withdrawn from the relay's directory");
    Ok(Listing {
        relay: daemon.relay_url().await?,
        listed: false,
        capabilities: Vec::new(),
        permissions: Vec::new(),
        expires_at_ms: 0,
    })
}

/// After a change that makes the listing stale (its invite redeemed, the
/// card changed): publishes again if the identity is listed. Failures are
/// logged; `card publish` mends them.
pub(crate) async fn refresh(daemon: &Arc<Daemon>, name: &Name, redeemed: Option<[u8; 32]>) {
    let owner = name.clone();
    let listing = match daemon.db.run(move |tx| tx.listing(&owner)).await {
        Ok(Some(listing)) => listing,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, "cannot read the listing");
            return;
        }
    };
    if redeemed.is_some_and(|key| key != listing.0) {
        return;
    }
    if let Err(error) = publish(daemon, name, listing.1).await {
        tracing::warn!(identity = %name, %error, "cannot refresh the directory listing; run `agentwire card publish` again");
    }
}

/// `discover` with `relay`: the relay's listings, each checked.
pub(crate) async fn find(
    daemon: &Arc<Daemon>,
    name: &Name,
    wait_ms: Option<u64>,
    capability: Option<&str>,
) -> Result<Found, ApiError> {
    if wait_ms.is_some() {
        return Err(ApiError::invalid(
            "the relay's directory answers at once; drop --wait with --relay",
        ));
    }
    let (relay_id, client) = connected_link(daemon, name).await?;
    let own = identity_key(daemon, name)?;
    let entries = client
        .lookup(capability.unwrap_or(""))
        .await
        .map_err(relay_refused)?;
    let contacts = daemon.contacts.get(&daemon.db, name).await?;
    let now = now_ms();
    let mut listed = Vec::new();
    for bytes in entries {
        let entry = match checked(&bytes, &relay_id, now) {
            Ok(entry) => entry,
            Err(why) => {
                tracing::warn!(identity = %name, why, "dropped a directory entry that does not check");
                continue;
            }
        };
        if entry.0.key == own
            || capability.is_some_and(|tag| !entry.1.capabilities.iter().any(|c| c == tag))
        {
            continue;
        }
        let (entry, card, invite) = entry;
        let contact = contacts
            .iter()
            .find(|c| c.address == entry.key && c.state != ContactState::Removed)
            .map(|c| c.petname.as_str().to_owned());
        listed.push(ListedIdentity {
            key: entry.key.to_string(),
            short_id: entry.key.short_id(),
            card: card_view(&card),
            invite: String::from_utf8(entry.invite).unwrap_or_default(),
            permissions: invite
                .invite
                .permissions
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            published_at_ms: entry.published_at_ms,
            expires_at_ms: entry.expires_at_ms,
            contact,
        });
    }
    Ok(Found {
        contacts: Vec::new(),
        listed,
    })
}

/// An entry as a relay returned it, checked: its signature for this relay,
/// its card (whose capabilities must be the listed ones), its invite (made
/// by the entry's key, for this relay, unexpired).
fn checked(
    bytes: &[u8],
    relay_id: &RelayId,
    now: u64,
) -> Result<(Entry, Card, SignedInvite), &'static str> {
    let entry = verify_entry(bytes, relay_id).map_err(|_| "bad signature or layout")?;
    if entry.is_withdrawal() || entry.expires_at_ms <= now {
        return Err("not listed");
    }
    let card = Card::decode(&entry.card).map_err(|_| "the card does not read")?;
    if card.capabilities != entry.capabilities {
        return Err("the card's capabilities are not the listed ones");
    }
    let text = std::str::from_utf8(&entry.invite).map_err(|_| "the invite is not text")?;
    let invite = SignedInvite::parse(text).map_err(|_| "the invite does not verify")?;
    if invite.invite.inviter != entry.key {
        return Err("the invite is someone else's");
    }
    if invite.invite.relay_id != *relay_id || invite.check_unexpired(now).is_err() {
        return Err("the invite is for another relay or expired");
    }
    Ok((entry, card, invite))
}

fn identity_key(daemon: &Daemon, name: &Name) -> Result<agentwire_wire::PublicKey, ApiError> {
    let (_, identity) = daemon.pick(Some(name.as_str()))?;
    Ok(identity.lock().unwrap_or_else(|e| e.into_inner()).address())
}

fn sign(
    daemon: &Daemon,
    name: &Name,
    entry: &mut Entry,
    relay_id: &RelayId,
) -> Result<(), ApiError> {
    let (_, identity) = daemon.pick(Some(name.as_str()))?;
    let guard = identity.lock().unwrap_or_else(|e| e.into_inner());
    entry.signature = guard.sign(&entry.signed_bytes(relay_id));
    Ok(())
}

/// What the relay said, for the one who asked.
fn relay_refused(error: ClientError) -> ApiError {
    use agentwire_wire::ErrorCode as Relay;
    match error {
        ClientError::Rejected { code, .. } => {
            let what = match code {
                Relay::DirectoryDisabled => "the relay keeps no directory".to_owned(),
                Relay::DirectoryFull => "the relay's directory is full; retry later".to_owned(),
                _ => format!("the relay refused it: {} ({code})", code.explain()),
            };
            ApiError::new(ErrorCode::InvalidRequest, what)
        }
        other => ApiError::new(ErrorCode::RelayUnreachable, other.to_string()),
    }
}
