//! `card`, `set_card` and `discover`: each identity's card, sent to its
//! contacts inside the encryption (a `card` message), and finding contacts
//! by the capabilities their cards list, with whether each is online.
//!
//! Online means the contact's daemon was heard from (any envelope that
//! opened) within [`ONLINE_WINDOW_MS`]. `discover` asks the contacts it has
//! not heard from lately with a `ping`, which a daemon answers with a
//! `delivered` receipt (and its card, if we have none), and waits a little
//! for the answers.

use std::sync::Arc;
use std::time::Duration;

use agentwire_session::{Card, Kind, Name};
use agentwire_wire::PublicKey;

use crate::api::{
    ApiError, CardSet, CardView, ContactState, Discover, Found, FoundContact, GetCard, SetCard,
};
use crate::core::{Daemon, now_ms};
use crate::ops::Run;
use crate::receive::control_with;
use crate::store::{Contact, StoredMessage};

/// How recently a contact's daemon must have been heard from to be online.
pub(crate) const ONLINE_WINDOW_MS: u64 = 60_000;
/// A contact that did not answer a ping is not pinged again before this.
const PING_AGAIN_MS: u64 = 5 * 60_000;
/// How long `discover` waits for answers unless told.
const DEFAULT_DISCOVER_WAIT: Duration = Duration::from_secs(2);
/// The longest wait `discover` takes.
const MAX_DISCOVER_WAIT: Duration = Duration::from_secs(30);

impl Run for GetCard {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<CardView, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let card = daemon.db.run(move |tx| tx.own_card(&name)).await?;
        Ok(card_view(&card.unwrap_or_default()))
    }
}

impl Run for SetCard {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<CardSet, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let owner = name.clone();
        let mut card = daemon
            .db
            .run(move |tx| tx.own_card(&owner))
            .await?
            .unwrap_or_default();
        if let Some(text) = self.name {
            card.name = text;
        }
        if let Some(text) = self.description {
            card.description = text;
        }
        if let Some(tags) = self.capabilities {
            card.capabilities = tags.iter().map(|t| t.trim().to_lowercase()).collect();
        }
        if let Some(takes) = self.takes_tasks {
            card.takes_tasks = takes;
        }
        card.check().map_err(ApiError::invalid)?;
        let (owner, stored) = (name.clone(), card.clone());
        daemon
            .db
            .run(move |tx| tx.set_own_card(&owner, &stored))
            .await?;
        let contacts = daemon.contacts.get(&daemon.db, &name).await?;
        let mut sent_to = Vec::new();
        for contact in contacts.iter().filter(|c| c.state == ContactState::Active) {
            match send_control(daemon, &name, &contact.address, Kind::Card, card.encode()).await {
                Ok(()) => sent_to.push(contact.petname.as_str().to_owned()),
                Err(error) => {
                    tracing::warn!(contact = %contact.petname, %error, "cannot send the card")
                }
            }
        }
        // A listing in the relay's directory shows the card: list it anew.
        let owner = name.clone();
        daemon.spawn(move |daemon| async move {
            crate::ops::directory::refresh(&daemon, &owner, None).await;
        });
        Ok(CardSet {
            card: card_view(&card),
            sent_to,
        })
    }
}

impl Run for Discover {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<Found, ApiError> {
        let (name, _) = daemon.pick(self.identity.as_deref())?;
        let capability = match self.capability {
            Some(tag) => {
                let tag = tag.trim().to_lowercase();
                agentwire_session::card::check_capability(&tag).map_err(ApiError::invalid)?;
                Some(tag)
            }
            None => None,
        };
        if self.relay {
            return crate::ops::directory::find(daemon, &name, self.wait_ms, capability.as_deref())
                .await;
        }
        let matches = |card: Option<&Card>| match &capability {
            Some(tag) => card.is_some_and(|card| card.capabilities.contains(tag)),
            None => true,
        };
        let wait = self
            .wait_ms
            .map_or(DEFAULT_DISCOVER_WAIT, Duration::from_millis)
            .min(MAX_DISCOVER_WAIT);
        let contacts = daemon.contacts.get(&daemon.db, &name).await?;
        let cards = contact_cards(daemon, &name).await?;
        // Those that match, and those whose card we lack (it may match).
        let candidates: Vec<&Contact> = contacts
            .iter()
            .filter(|c| c.state == ContactState::Active)
            .filter(|c| {
                let card = cards.get(&c.address);
                card.is_none() || matches(card)
            })
            .collect();
        // Ask those not heard from lately, and those whose card we lack,
        // then give them a moment to answer.
        let now = now_ms();
        let mut asked = Vec::new();
        if !wait.is_zero() {
            for contact in &candidates {
                let key = (name.clone(), contact.address);
                let no_card = !cards.contains_key(&contact.address);
                let recent = daemon
                    .seen
                    .get(&key)
                    .is_some_and(|at| now.saturating_sub(at) < ONLINE_WINDOW_MS);
                let pinged_lately = daemon
                    .pinged
                    .get(&key)
                    .is_some_and(|at| now.saturating_sub(at) < PING_AGAIN_MS);
                // One unanswered ping at a time; a contact heard from lately
                // is asked only for a card we lack.
                if pinged_lately || (recent && !no_card) {
                    continue;
                }
                let body = vec![u8::from(no_card)];
                if send_control(daemon, &name, &contact.address, Kind::Ping, body)
                    .await
                    .is_ok()
                {
                    daemon.pinged.set(key, now);
                    asked.push(contact.address);
                }
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        while !asked.is_empty() && tokio::time::Instant::now() < deadline {
            // Answered: heard from since the ping (its card, if asked for,
            // comes in the same burst as the receipt).
            asked.retain(|address| {
                daemon
                    .seen
                    .get(&(name.clone(), *address))
                    .is_none_or(|at| at < now)
            });
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(25)) => {}
                () = daemon.shutdown.cancelled() => break,
            }
        }
        // Cards that came with the answers.
        let cards = contact_cards(daemon, &name).await?;
        let now = now_ms();
        let mut found: Vec<FoundContact> = candidates
            .iter()
            .filter(|contact| matches(cards.get(&contact.address)))
            .map(|contact| {
                let last_seen_ms = daemon.seen.get(&(name.clone(), contact.address));
                FoundContact {
                    name: contact.petname.as_str().to_owned(),
                    short_id: contact.address.short_id(),
                    card: cards.get(&contact.address).map(card_view),
                    online: last_seen_ms
                        .is_some_and(|at| now.saturating_sub(at) < ONLINE_WINDOW_MS),
                    last_seen_ms,
                }
            })
            .collect();
        found.sort_by(|a, b| b.online.cmp(&a.online).then_with(|| a.name.cmp(&b.name)));
        Ok(Found {
            contacts: found,
            listed: Vec::new(),
        })
    }
}

/// The cards `name`'s contacts sent, by address.
async fn contact_cards(
    daemon: &Daemon,
    name: &Name,
) -> Result<std::collections::HashMap<PublicKey, Card>, ApiError> {
    let owner = name.clone();
    let cards = daemon.db.run(move |tx| tx.contact_cards(&owner)).await?;
    Ok(cards.into_iter().collect())
}

/// Seals a control message (no reply, no thread) for `peer` and queues it.
pub(crate) async fn send_control(
    daemon: &Daemon,
    name: &Name,
    peer: &PublicKey,
    kind: Kind,
    body: Vec<u8>,
) -> Result<(), ApiError> {
    let sealed = daemon
        .seal_for(name, peer, move |id, now| control_with(id, kind, body, now))
        .await?;
    let (owner, to) = (name.clone(), *peer);
    daemon
        .queue_sealed(name, sealed, move |tx, plaintext, payload| {
            let message =
                StoredMessage::outgoing_control(plaintext.id, to, kind, plaintext.sent_at_ms);
            tx.insert_message(&owner, &message, Some(payload))?;
            Ok(())
        })
        .await
}

/// Sends our card, if we have one, to a contact that just paired.
pub(crate) async fn send_card_to(daemon: &Daemon, name: &Name, peer: &PublicKey) {
    let owner = name.clone();
    let card = match daemon.db.run(move |tx| tx.own_card(&owner)).await {
        Ok(Some(card)) => card,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, "cannot read the card");
            return;
        }
    };
    if let Err(error) = send_control(daemon, name, peer, Kind::Card, card.encode()).await {
        tracing::warn!(%error, "cannot send the card to a new contact");
    }
}

/// The API view of a card.
pub(crate) fn card_view(card: &Card) -> CardView {
    CardView {
        name: card.name.clone(),
        description: card.description.clone(),
        capabilities: card.capabilities.clone(),
        takes_tasks: card.takes_tasks,
    }
}
