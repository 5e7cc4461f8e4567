//! `invite` and `accept`: pairing two identities through a single-use
//! invite. The acceptor opens a session to the invite's keys and queues the
//! redemption; the inviter's daemon answers (see `receive.rs` and
//! `pairing.rs`), and `accept` waits for that answer.

use std::sync::Arc;
use std::time::Duration;

use agentwire_api::{ContactState, Via};
use agentwire_session::{
    Invite as InviteToken, InviteError, InviteSecret, Kind, Name, Permissions, Redeem, SignedInvite,
};
use agentwire_wire::RelayId;

use crate::api::{Accept, ApiError, ContactView, ErrorCode, Invite, InviteView, internal};
use crate::core::{
    DEFAULT_INVITE_TTL, DEFAULT_WAIT, Daemon, deadline, now_ms, parse_permissions, parse_petname,
    petname_hint, stopping,
};
use crate::ops::Run;
use crate::pairing::Answer;
use crate::receive::control;
use crate::store::{Contact, StoreError, StoredMessage};
use crate::views::{contact_view, invite_error};

/// How long `invite` and `accept` wait for the identity's relay link.
const LINK_WAIT: Duration = Duration::from_secs(10);

/// The relay id this identity's link is connected to, waiting for the link
/// up to [`LINK_WAIT`].
async fn connected_relay_id(daemon: &Daemon, name: &Name) -> Result<RelayId, ApiError> {
    when_connected(daemon, name, || daemon.relay_ids.get(name)).await
}

/// This identity's relay connection and the relay's id, waiting for the
/// link up to [`LINK_WAIT`].
pub(crate) async fn connected_link(
    daemon: &Daemon,
    name: &Name,
) -> Result<(RelayId, agentwire_client::RelayClient), ApiError> {
    when_connected(daemon, name, || {
        Some((daemon.relay_ids.get(name)?, daemon.links.get(name)?))
    })
    .await
}

/// What `connected` finds once the identity's link is up, waiting up to
/// [`LINK_WAIT`]; says why not otherwise.
async fn when_connected<T>(
    daemon: &Daemon,
    name: &Name,
    connected: impl Fn() -> Option<T>,
) -> Result<T, ApiError> {
    let mut wait = daemon.wait_on(&daemon.pairing, tokio::time::Instant::now() + LINK_WAIT);
    loop {
        let at_deadline = wait.arm();
        if let Some(found) = connected() {
            return Ok(found);
        }
        let refused = daemon.link_refusals.get(name);
        if at_deadline || refused.is_some() {
            let why = refused
                .or_else(|| daemon.link_errors.get(name))
                .unwrap_or_else(|| "still connecting".into());
            return Err(ApiError::new(
                ErrorCode::RelayUnreachable,
                format!("{name} is not connected to its relay: {why}"),
            ));
        }
        if !wait.sleep().await {
            return Err(stopping());
        }
    }
}

impl Run for Invite {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<InviteView, ApiError> {
        let Invite {
            identity,
            ttl_ms,
            allow,
            for_name,
        } = self;
        let permissions = parse_permissions(allow.as_deref())?;
        let for_name = for_name.as_deref().map(parse_petname).transpose()?;
        let ttl = ttl_ms.map_or(DEFAULT_INVITE_TTL, Duration::from_millis);
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(30 * 24 * 3600) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "an invite lives between 1s and 30d; pass --ttl within that",
            ));
        }
        let (name, identity) = daemon.pick(identity.as_deref())?;
        if let Some(wanted) = &for_name
            && let Some(taken) = daemon
                .contacts
                .get(&daemon.db, &name)
                .await?
                .iter()
                .find(|c| c.petname == *wanted && c.state != ContactState::Removed)
        {
            return Err(ApiError::new(
                ErrorCode::NameTaken,
                format!(
                    "{name} already has a contact named {wanted} ({}); pick another name for --for, or rename that contact",
                    taken.address.short_id()
                ),
            ));
        }
        let relay_url = daemon.relay_url().await?;
        let relay_id = connected_relay_id(daemon, &name).await?;
        let _accounts = daemon.accounts.lock().await;
        let secret = InviteSecret::generate().map_err(|e| internal("no randomness", e))?;
        let now = now_ms();
        let expires_at_ms = now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let (signed, address, pickle) = {
            let mut guard = identity.lock().unwrap_or_else(|e| e.into_inner());
            let one_time_key = guard
                .new_one_time_key()
                .map_err(|e| internal("cannot make a one-time key", e))?;
            let invite = InviteToken {
                inviter: guard.address(),
                inviter_curve25519: guard.curve25519(),
                one_time_key,
                secret,
                expires_at_ms,
                permissions,
                relay_url: relay_url.clone(),
                relay_id,
                inviter_name: name.clone(),
            };
            let signed = SignedInvite::sign(invite, &guard);
            (
                signed,
                guard.address(),
                guard.to_encrypted_pickle(&daemon.key),
            )
        };
        let invite = &signed.invite;
        let (owner, one_time_key, secret, chosen) = (
            name.clone(),
            invite.one_time_key,
            *invite.secret.as_bytes(),
            for_name.clone(),
        );
        daemon
            .db
            .run(move |tx| {
                tx.prune_invites(now)?;
                tx.save_identity(&owner, &address, &pickle, now)?;
                tx.add_invite(
                    &owner,
                    &one_time_key,
                    &secret,
                    expires_at_ms,
                    permissions,
                    chosen.as_ref(),
                    now,
                )?;
                Ok::<_, ApiError>(())
            })
            .await?;
        Ok(InviteView {
            invite: signed.to_token(),
            expires_at_ms,
            relay: relay_url,
            permissions: invite
                .permissions
                .names()
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            for_name: for_name.map(|n| n.as_str().to_owned()),
        })
    }
}

impl Run for Accept {
    async fn run(self, daemon: &Arc<Daemon>) -> Result<ContactView, ApiError> {
        let Accept {
            identity,
            token,
            name: petname,
            wait_ms,
            allow,
        } = self;
        let permissions = parse_permissions(allow.as_deref())?;
        let signed = SignedInvite::parse(&token).map_err(invite_error)?;
        signed.check_unexpired(now_ms()).map_err(invite_error)?;
        let invite = signed.invite;
        let petname = petname.map(|p| parse_petname(&p)).transpose()?;
        let name = daemon.pick(identity.as_deref())?.0;
        let relay_url = daemon.relay_url().await?;
        if !crate::link::share_a_node(&invite.relay_url, &relay_url) {
            return Err(ApiError::new(
                ErrorCode::InviteWrongRelay,
                format!(
                    "this invite is for the relay {}, but this home uses {relay_url}; accept it in a home set up with `agentwire init --relay {}`",
                    invite.relay_url, invite.relay_url
                ),
            ));
        }
        let relay_id = connected_relay_id(daemon, &name).await?;
        if relay_id != invite.relay_id {
            return Err(invite_error(InviteError::WrongRelay {
                url: invite.relay_url.clone(),
                expected: invite.relay_id,
                found: relay_id,
            }));
        }
        send_redemption(daemon, &name, &invite, petname, permissions).await?;
        daemon.outbox_waker(&name).notify_one();

        let mut wait = daemon.wait_on(&daemon.pairing, deadline(wait_ms, DEFAULT_WAIT));
        loop {
            let timed_out = wait.arm();
            let refusal = daemon.refusals.take(&(name.clone(), invite.inviter));
            if let Some(refusal) = refusal {
                return Err(match refusal {
                    Answer::Spent => ApiError::new(
                        ErrorCode::InviteSpent,
                        "this invite was already used; ask the inviter for a new one",
                    ),
                    Answer::AlreadyContact => ApiError::new(
                        ErrorCode::InviteSpent,
                        "the inviter already has you as a contact (or you both accepted each other's invites at once); use one invite",
                    ),
                    _ => ApiError::new(
                        ErrorCode::InviteExpired,
                        "the inviter says this invite has expired; ask for a new one",
                    ),
                });
            }
            let contact = daemon.contact(&name, &invite.inviter).await?;
            match &contact {
                Some(contact) if contact.state == ContactState::Active || timed_out => {
                    return Ok(contact_view(contact));
                }
                None if timed_out => {
                    return Err(ApiError::new(
                        ErrorCode::Internal,
                        "the pending contact disappeared while waiting (removed, or another accept took the answer)",
                    ));
                }
                _ => {}
            }
            if !wait.sleep().await {
                return Err(stopping());
            }
        }
    }
}

/// Opens a session to the invite's keys and queues the redemption; the
/// inviter becomes a `pending` contact until it answers.
async fn send_redemption(
    daemon: &Daemon,
    name: &Name,
    invite: &InviteToken,
    petname: Option<Name>,
    permissions: Permissions,
) -> Result<(), ApiError> {
    // Accepting the same invite again (say after a timeout) sends nothing
    // new: the first redemption is queued or delivered, and a second
    // session on the same one-time key would never open.
    let (_, identity) = daemon.pick(Some(name.as_str()))?;
    if identity.lock().unwrap_or_else(|e| e.into_inner()).address() == invite.inviter {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "this is your own invite; give it to the agent you want to pair with",
        ));
    }
    let existing = daemon.contact(name, &invite.inviter).await?;
    let replaced = match existing {
        // This very invite, accepted before: nothing to send again.
        Some(existing) if existing.invite_key == Some(invite.one_time_key) => return Ok(()),
        Some(existing) if existing.state == ContactState::Active => {
            return Err(ApiError::new(
                ErrorCode::NameTaken,
                format!("the inviter is already your contact {}", existing.petname),
            ));
        }
        // A pending pairing by an older invite, or a contact that removed
        // us: this invite takes its place, under the name we gave it.
        Some(existing) => Some(existing.petname),
        None => None,
    };
    daemon.refusals.take(&(name.clone(), invite.inviter));
    let (first, payload, session_pickle) = {
        let guard = identity.lock().unwrap_or_else(|e| e.into_inner());
        let mut session = guard
            .open_session(invite.inviter_curve25519, invite.one_time_key)
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::InviteInvalid,
                    format!("the invite's keys are unusable: {e}"),
                )
            })?;
        let first = control(Kind::Redeem, Redeem::new(invite, &guard).encode(), now_ms());
        let payload = session
            .seal(&first)
            .map_err(|e| internal("cannot encrypt", e))?;
        (first, payload, session.to_encrypted_pickle(&daemon.key))
    };
    let now = now_ms();
    let (name, invite) = (name.clone(), invite.clone());
    let mut slot = daemon.session_slot(&name, &invite.inviter).await;
    let written = daemon
        .db
        .run(move |tx| {
            if replaced.is_some() {
                tx.remove_contact(&name, &invite.inviter)?;
                tx.drop_queued_to(&name, &invite.inviter)?;
            }
            let petname = match (&petname, replaced) {
                (Some(chosen), _) => chosen.clone(),
                (None, Some(old)) => old,
                (None, None) => tx.free_petname(&name, &petname_hint(&invite.inviter_name))?,
            };
            tx.add_contact(
                &name,
                &Contact {
                    address: invite.inviter,
                    curve25519: invite.inviter_curve25519,
                    petname,
                    via: Via::Accepted,
                    state: ContactState::Pending,
                    invite_key: Some(invite.one_time_key),
                    permissions,
                    created_at_ms: now,
                },
            )?;
            tx.save_session(&name, &invite.inviter, &session_pickle)?;
            let message =
                StoredMessage::outgoing_control(first.id, invite.inviter, Kind::Redeem, now);
            tx.insert_message(&name, &message, Some(&payload))?;
            Ok::<_, StoreError>(())
        })
        .await;
    *slot = None;
    written.map_err(|e| match e {
        e if e.is_conflict() => ApiError::new(
            ErrorCode::NameTaken,
            "a contact already has that name; pass another with --name",
        ),
        other => other.into(),
    })
}
