//! Errors as the daemon reports them: a stable [`ErrorCode`] that doors map
//! to exit codes, HTTP statuses or tool errors, and a message for a person.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What went wrong, as a stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is not valid (a field out of range, a malformed id).
    InvalidRequest,
    /// No identity yet: run `agentwire init`.
    NotInitialized,
    /// No identity by that name.
    UnknownIdentity,
    /// No contact matches.
    UnknownPeer,
    /// No sent message has that id.
    UnknownMessage,
    /// Several contacts match a key prefix.
    AmbiguousPeer,
    /// A name is invalid.
    BadName,
    /// A name is already taken.
    NameTaken,
    /// The body is over the limit.
    BodyTooLarge,
    /// The relay cannot be reached.
    RelayUnreachable,
    /// The invite is not valid (damaged, altered, or not an invite).
    InviteInvalid,
    /// The invite has expired.
    InviteExpired,
    /// The invite was already used.
    InviteSpent,
    /// The invite is for another relay.
    InviteWrongRelay,
    /// The identity's outbox is full: the relay has not taken what is
    /// queued. Nothing was queued.
    OutboxFull,
    /// The contact removed us: nothing more reaches it until a new invite
    /// pairs us again.
    ContactRemoved,
    /// Something failed inside the daemon.
    Internal,
}

impl ErrorCode {
    /// Its name, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::NotInitialized => "not_initialized",
            ErrorCode::UnknownIdentity => "unknown_identity",
            ErrorCode::UnknownPeer => "unknown_peer",
            ErrorCode::UnknownMessage => "unknown_message",
            ErrorCode::AmbiguousPeer => "ambiguous_peer",
            ErrorCode::BadName => "bad_name",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::RelayUnreachable => "relay_unreachable",
            ErrorCode::InviteInvalid => "invite_invalid",
            ErrorCode::InviteExpired => "invite_expired",
            ErrorCode::InviteSpent => "invite_spent",
            ErrorCode::InviteWrongRelay => "invite_wrong_relay",
            ErrorCode::OutboxFull => "outbox_full",
            ErrorCode::ContactRemoved => "contact_removed",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An error answer: what happened and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
    /// What happened and what to do, for a person.
    pub message: String,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// An invalid request.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn code_names_are_their_json() {
        for code in [
            ErrorCode::InvalidRequest,
            ErrorCode::UnknownPeer,
            ErrorCode::InviteWrongRelay,
            ErrorCode::Internal,
        ] {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.name())
            );
        }
    }
}
