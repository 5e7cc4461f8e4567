//! The numeric error codes carried by [`crate::Body::Error`] frames.

/// Why the relay refused a request or a connection.
///
/// The numeric values are part of the protocol (see PROTOCOL.md). Codes this
/// version does not know decode as [`ErrorCode::Unknown`] so that a client keeps
/// working when a newer relay adds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The frame could not be decoded. The connection is closed.
    Malformed,
    /// The frame's protocol version is not spoken by this relay; `limit` is the
    /// highest version it speaks. The connection is closed.
    UnsupportedVersion,
    /// The challenge signature does not verify for the presented key. The
    /// connection is closed.
    BadSignature,
    /// The hello answers a different challenge than the one this connection
    /// was given (a replayed hello). The connection is closed.
    ChallengeMismatch,
    /// The hello came too late; `limit` is the allowed time in milliseconds. The
    /// connection is closed.
    ChallengeExpired,
    /// The relay requires an access token and none, or a wrong one, was
    /// presented. The connection is closed.
    AccessDenied,
    /// A request arrived before a successful hello. The connection is closed.
    NotAuthenticated,
    /// A second hello arrived on an authenticated connection.
    AlreadyAuthenticated,
    /// The client sent a frame type only the relay may send. The connection is
    /// closed.
    UnexpectedFrame,
    /// The frame is larger than `limit` bytes.
    FrameTooLarge,
    /// The relay already serves `limit` connections. The connection is closed.
    TooManyConnections,
    /// This IP address already has `limit` connections open. The connection is
    /// closed.
    TooManyIpConnections,
    /// This key sent more than `limit` frames per second; the frame was dropped.
    KeyRateLimited,
    /// This IP address sent more than `limit` frames per second; the frame was
    /// dropped.
    IpRateLimited,
    /// The recipient already has `limit` envelopes queued; try again later.
    QueueFull,
    /// Another sender already queued an envelope with this id for this
    /// recipient; pick a fresh id.
    IdConflict,
    /// The payload is larger than `limit` bytes (the frame limit minus the
    /// delivery overhead).
    PayloadTooLarge,
    /// A directory entry was refused: malformed, not signed by its key for
    /// this relay, not this connection's key, its time more than `limit`
    /// milliseconds from the relay's clock, or older than the one listed.
    InvalidEntry,
    /// The directory already lists `limit` keys; a new key cannot be added.
    DirectoryFull,
    /// This relay keeps no directory.
    DirectoryDisabled,
    /// The relay could not store or read the request; retry later.
    Internal,
    /// The relay is shutting down; reconnect later.
    ShuttingDown,
    /// A code this version of the protocol does not define.
    Unknown(u16),
}

impl ErrorCode {
    /// The code's number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::Malformed => 1,
            Self::UnsupportedVersion => 2,
            Self::BadSignature => 3,
            Self::ChallengeMismatch => 4,
            Self::ChallengeExpired => 5,
            Self::AccessDenied => 6,
            Self::NotAuthenticated => 7,
            Self::AlreadyAuthenticated => 8,
            Self::UnexpectedFrame => 9,
            Self::FrameTooLarge => 20,
            Self::TooManyConnections => 21,
            Self::KeyRateLimited => 22,
            Self::IpRateLimited => 23,
            Self::QueueFull => 24,
            Self::IdConflict => 25,
            Self::PayloadTooLarge => 26,
            Self::TooManyIpConnections => 27,
            Self::InvalidEntry => 28,
            Self::DirectoryFull => 29,
            Self::Internal => 30,
            Self::ShuttingDown => 31,
            Self::DirectoryDisabled => 32,
            Self::Unknown(code) => code,
        }
    }

    /// The code for a number on the wire.
    pub fn from_u16(code: u16) -> Self {
        match code {
            1 => Self::Malformed,
            2 => Self::UnsupportedVersion,
            3 => Self::BadSignature,
            4 => Self::ChallengeMismatch,
            5 => Self::ChallengeExpired,
            6 => Self::AccessDenied,
            7 => Self::NotAuthenticated,
            8 => Self::AlreadyAuthenticated,
            9 => Self::UnexpectedFrame,
            20 => Self::FrameTooLarge,
            21 => Self::TooManyConnections,
            22 => Self::KeyRateLimited,
            23 => Self::IpRateLimited,
            24 => Self::QueueFull,
            25 => Self::IdConflict,
            26 => Self::PayloadTooLarge,
            27 => Self::TooManyIpConnections,
            28 => Self::InvalidEntry,
            29 => Self::DirectoryFull,
            30 => Self::Internal,
            31 => Self::ShuttingDown,
            32 => Self::DirectoryDisabled,
            other => Self::Unknown(other),
        }
    }

    /// A stable snake_case name, used in logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedVersion => "unsupported_version",
            Self::BadSignature => "bad_signature",
            Self::ChallengeMismatch => "challenge_mismatch",
            Self::ChallengeExpired => "challenge_expired",
            Self::AccessDenied => "access_denied",
            Self::NotAuthenticated => "not_authenticated",
            Self::AlreadyAuthenticated => "already_authenticated",
            Self::UnexpectedFrame => "unexpected_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::TooManyConnections => "too_many_connections",
            Self::KeyRateLimited => "key_rate_limited",
            Self::IpRateLimited => "ip_rate_limited",
            Self::QueueFull => "queue_full",
            Self::IdConflict => "id_conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::TooManyIpConnections => "too_many_ip_connections",
            Self::InvalidEntry => "invalid_entry",
            Self::DirectoryFull => "directory_full",
            Self::DirectoryDisabled => "directory_disabled",
            Self::Internal => "internal",
            Self::ShuttingDown => "shutting_down",
            Self::Unknown(_) => "unknown",
        }
    }

    /// What the code means, in this crate's words: what a client shows
    /// instead of the relay's own text, which a hostile relay chooses.
    pub fn explain(self) -> &'static str {
        match self {
            Self::Malformed => "a frame could not be decoded",
            Self::UnsupportedVersion => "it does not speak this protocol version",
            Self::BadSignature => "the hello's signature does not verify for its key",
            Self::ChallengeMismatch => "the hello answers another challenge",
            Self::ChallengeExpired => "the hello came too late after the challenge",
            Self::AccessDenied => "it requires an access token, and none or a wrong one was given",
            Self::NotAuthenticated => "a request came before the hello",
            Self::AlreadyAuthenticated => "a second hello on one connection",
            Self::UnexpectedFrame => "a frame only the relay may send",
            Self::FrameTooLarge => "a frame is over its size limit",
            Self::TooManyConnections => "it serves all the connections it can; retry later",
            Self::TooManyIpConnections => "this IP address has all the connections it may open",
            Self::KeyRateLimited => "more frames per second from this key than it allows",
            Self::IpRateLimited => "more frames per second from this IP address than it allows",
            Self::QueueFull => "the recipient's queue at the relay is full; retry later",
            Self::IdConflict => "another sender used this envelope id for this recipient",
            Self::PayloadTooLarge => "the payload is over its size limit",
            Self::InvalidEntry => "the directory entry is not valid for this relay",
            Self::DirectoryFull => "its directory is full; retry later",
            Self::DirectoryDisabled => "it keeps no directory",
            Self::Internal => "it could not complete the request; retry later",
            Self::ShuttingDown => "it is shutting down; reconnect later",
            Self::Unknown(_) => "a code this version does not know",
        }
    }

    /// Whether the relay closes the connection after sending this error.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            Self::Malformed
                | Self::UnsupportedVersion
                | Self::BadSignature
                | Self::ChallengeMismatch
                | Self::ChallengeExpired
                | Self::AccessDenied
                | Self::NotAuthenticated
                | Self::UnexpectedFrame
                | Self::TooManyConnections
                | Self::TooManyIpConnections
                | Self::ShuttingDown
        )
    }

    /// Whether the same request may succeed if retried later unchanged.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::TooManyConnections
                | Self::TooManyIpConnections
                | Self::KeyRateLimited
                | Self::IpRateLimited
                | Self::QueueFull
                | Self::DirectoryFull
                | Self::Internal
                | Self::ShuttingDown
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown(code) => write!(f, "unknown error code {code}"),
            known => f.write_str(known.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_number() {
        for number in 0..=u16::MAX {
            assert_eq!(ErrorCode::from_u16(number).to_u16(), number);
        }
    }
}
