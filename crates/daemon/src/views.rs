//! Stored rows as API views, and the conversions between the end-to-end
//! layer's vocabulary (`agentwire-session`) and the API's.

use agentwire_session::{InviteError, MessageId};

use crate::api::{
    self, ApiError, ContactView, ErrorCode, MessageView, Recipient, Sender, SentView, TaskView,
};
use crate::store::{Contact, SentMessage, StoredMessage, StoredTask};

/// The API kind of a message kind; control kinds (receipts, pairing) are
/// never shown, so meeting one here is a bug reported as such.
pub(crate) fn api_kind(kind: agentwire_session::Kind) -> Result<api::Kind, ApiError> {
    use agentwire_session::Kind as K;
    Ok(match kind {
        K::Chat => api::Kind::Chat,
        K::Task => api::Kind::Task,
        K::Result => api::Kind::Result,
        K::Query => api::Kind::Query,
        K::File => api::Kind::File,
        K::Receipt
        | K::Redeem
        | K::Unpair
        | K::Status
        | K::Cancel
        | K::Chunk
        | K::Card
        | K::Ping
        | K::FilePart => {
            return Err(crate::api::internal(
                "a control message reached an agent's view",
                kind.name(),
            ));
        }
    })
}

/// The message kind of an API kind.
pub(crate) fn session_kind(kind: api::Kind) -> agentwire_session::Kind {
    use agentwire_session::Kind as K;
    match kind {
        api::Kind::Chat => K::Chat,
        api::Kind::Task => K::Task,
        api::Kind::Result => K::Result,
        api::Kind::Query => K::Query,
        api::Kind::File => K::File,
    }
}

/// The API priority of a message priority.
pub(crate) fn api_priority(priority: agentwire_session::Priority) -> api::Priority {
    use agentwire_session::Priority as P;
    match priority {
        P::Urgent => api::Priority::Urgent,
        P::Normal => api::Priority::Normal,
        P::Low => api::Priority::Low,
    }
}

/// The message priority of an API priority.
pub(crate) fn session_priority(priority: api::Priority) -> agentwire_session::Priority {
    use agentwire_session::Priority as P;
    match priority {
        api::Priority::Urgent => P::Urgent,
        api::Priority::Normal => P::Normal,
        api::Priority::Low => P::Low,
    }
}

fn petname_of(contacts: &[Contact], peer: &agentwire_wire::PublicKey) -> Option<String> {
    contacts
        .iter()
        .find(|c| c.address == *peer)
        .map(|c| c.petname.as_str().to_owned())
}

/// A sent message and its delivery state.
/// `relay_ttl`: how long the identity's relay keeps an undelivered envelope,
/// once known.
pub(crate) fn sent_view(
    message: &SentMessage,
    contacts: &[Contact],
    relay_ttl: Option<std::time::Duration>,
) -> Result<SentView, ApiError> {
    let overdue = match (message.state, message.reached_at_ms.relayed, relay_ttl) {
        (crate::api::DeliveryState::Relayed, Some(relayed_at), Some(ttl)) => {
            let allowed = u64::try_from(ttl.as_millis().saturating_mul(3) / 2).unwrap_or(u64::MAX);
            crate::core::now_ms() > relayed_at.saturating_add(allowed)
        }
        _ => false,
    };
    Ok(SentView {
        id: message.id.to_string(),
        to: Recipient {
            name: petname_of(contacts, &message.peer),
            short_id: message.peer.short_id(),
        },
        kind: api_kind(message.kind)?,
        state: message.state,
        sent_at_ms: message.sent_at_ms,
        updated_at_ms: message.updated_at_ms,
        relayed_at_ms: message.reached_at_ms.relayed,
        delivered_at_ms: message.reached_at_ms.delivered,
        read_at_ms: message.reached_at_ms.read,
        reason: message.reason.clone(),
        overdue,
    })
}

/// A task, either side.
pub(crate) fn task_view(task: &StoredTask, contacts: &[Contact]) -> TaskView {
    TaskView {
        id: task.id.to_string(),
        role: task.role,
        peer: Recipient {
            name: petname_of(contacts, &task.peer),
            short_id: task.peer.short_id(),
        },
        state: task.state,
        summary: task.summary.clone(),
        detail: task.detail.clone(),
        result: task.result.map(|id| id.to_string()),
        created_at_ms: task.created_at_ms,
        updated_at_ms: task.updated_at_ms,
    }
}

/// A contact.
pub(crate) fn contact_view(contact: &Contact) -> ContactView {
    ContactView {
        name: contact.petname.as_str().to_owned(),
        state: contact.state,
        address: contact.address.to_hex(),
        short_id: contact.address.short_id(),
        via: contact.via,
        permissions: contact
            .permissions
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        created_at_ms: contact.created_at_ms,
        missing: 0,
    }
}

/// A received message. The sender is the verified contact (petname and key,
/// filled in by the daemon); the body is untrusted content from that contact.
pub(crate) fn message_view(
    message: &StoredMessage,
    contacts: &[Contact],
) -> Result<MessageView, ApiError> {
    let id_text = |id: Option<MessageId>| id.map(|id| id.to_string());
    Ok(MessageView {
        id: message.id.to_string(),
        from: Sender {
            name: petname_of(contacts, &message.peer),
            short_id: message.peer.short_id(),
            address: message.peer.to_hex(),
            verified: true,
        },
        kind: api_kind(message.kind)?,
        priority: api_priority(message.priority),
        sent_at_ms: message.sent_at_ms,
        stored_at_ms: message.stored_at_ms,
        reply_to: id_text(message.reply_to),
        thread: id_text(message.thread),
        chain: id_text(message.chain.map(|c| c.id)),
        hops: message.chain.map_or(0, |c| c.hops),
        file: (message.kind == agentwire_session::Kind::File)
            .then(|| crate::ops::files::file_view(&message.body))
            .flatten(),
        body: match message.kind {
            agentwire_session::Kind::File => crate::ops::files::file_text(&message.body),
            _ => String::from_utf8_lossy(&message.body).into_owned(),
        },
    })
}

/// Messages as views.
pub(crate) fn message_views(
    messages: &[StoredMessage],
    contacts: &[Contact],
) -> Result<Vec<MessageView>, ApiError> {
    messages.iter().map(|m| message_view(m, contacts)).collect()
}

/// An invite that does not hold, as an API error.
pub(crate) fn invite_error(error: InviteError) -> ApiError {
    let code = match &error {
        InviteError::Malformed(_)
        | InviteError::UnsupportedVersion(_)
        | InviteError::BadSignature => ErrorCode::InviteInvalid,
        InviteError::Expired { .. } => ErrorCode::InviteExpired,
        InviteError::WrongRelay { .. } => ErrorCode::InviteWrongRelay,
    };
    ApiError::new(code, error.to_string())
}
