//! The client's error type.

use std::time::Duration;

use agentwire_wire::ErrorCode;

/// What went wrong talking to a relay.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a `ws://` or `wss://` URL.
    #[error("invalid relay URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The client configuration is invalid.
    #[error("invalid client configuration: {0}")]
    InvalidConfig(String),
    /// The relay could not be reached or the WebSocket handshake failed.
    #[error("cannot reach the relay at {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The relay refused the request or the connection.
    #[error("the relay refused: {message} ({code}{})", limit_suffix(*.limit))]
    Rejected {
        /// The relay's error code.
        code: ErrorCode,
        /// The value of the limit that was hit, or 0.
        limit: u64,
        /// The relay's explanation.
        message: String,
    },
    /// The relay broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection dropped before the answer came; retrying is safe.
    #[error("the connection to the relay dropped; retry")]
    Disconnected,
    /// No answer in time.
    #[error("no answer from the relay within {0:?}")]
    Timeout(Duration),
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
}

fn limit_suffix(limit: u64) -> String {
    if limit == 0 {
        String::new()
    } else {
        format!(", limit {limit}")
    }
}

impl ClientError {
    /// Whether reconnecting cannot help: the relay refuses this client as it
    /// is (bad key, wrong token, unsupported version) or the URL is wrong.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::InvalidUrl { .. } | Self::InvalidConfig(_) | Self::Closed => true,
            Self::Rejected { code, .. } => matches!(
                code,
                ErrorCode::BadSignature
                    | ErrorCode::AccessDenied
                    | ErrorCode::UnsupportedVersion
                    | ErrorCode::UnexpectedFrame
            ),
            _ => false,
        }
    }

    /// The relay's error code, when the relay refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }
}
