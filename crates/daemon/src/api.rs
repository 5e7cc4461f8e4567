//! The local API: one JSON object per line over the daemon's Unix socket.
//! A client writes one request line and reads one response line.
//!
//! ```text
//! → {"op":"send","as":"planner","to":"coder","body":"run the tests"}
//! ← {"ok":true,"result":{"id":"019a…","state":"queued"}}
//! ← {"ok":false,"error":{"code":"unknown_peer","message":"no contact named \"codr\"; see `agentwire contacts`"}}
//! ```
//!
//! ARCHITECTURE.md lists every operation. JSON lives here, at the edge; the
//! daemon's core works on typed values.

use serde::{Deserialize, Serialize};

/// Longest request line, in bytes.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// A request to the daemon. `Debug` shows only the operation (bodies and
/// invite tokens stay out of logs).
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Daemon health and counters.
    Status,
    /// Stop the daemon.
    Stop,
    /// Create an identity (the first one also picks the relay).
    Init {
        /// Its name (default `agent`, or `agent-N` when taken).
        name: Option<String>,
        /// Relay URL; without it, a relay runs inside the daemon on loopback.
        relay: Option<String>,
        /// The relay's access token, if it requires one.
        #[serde(default)]
        relay_token: Option<String>,
    },
    /// Who an identity is.
    Whoami {
        /// Identity name (default: the first).
        #[serde(rename = "as", default)]
        identity: Option<String>,
    },
    /// An identity's contacts.
    Contacts {
        /// Identity name.
        #[serde(rename = "as", default)]
        identity: Option<String>,
    },
    /// Rename a contact.
    Rename {
        /// Identity name.
        #[serde(rename = "as", default)]
        identity: Option<String>,
        /// Petname or unique key prefix.
        peer: String,
        /// New petname.
        new_name: String,
    },
    /// Remove a contact.
    Remove {
        /// Identity name.
        #[serde(rename = "as", default)]
        identity: Option<String>,
        /// Petname or unique key prefix.
        peer: String,
    },
    /// Send a message.
    Send {
        /// Identity name.
        #[serde(rename = "as", default)]
        identity: Option<String>,
        /// Petname or unique key prefix.
        to: String,
        /// The body, UTF-8.
        body: String,
        /// Kind name (default `chat`).
        #[serde(default)]
        kind: Option<String>,
        /// Id of the message this answers.
        #[serde(default)]
        reply_to: Option<String>,
        /// Id of the thread this belongs to.
        #[serde(default)]
        thread: Option<String>,
        /// `urgent`, `normal` (default) or `low`.
        #[serde(default)]
        priority: Option<String>,
        /// Wait until the message is `relayed`, `delivered` or `read`.
        #[serde(default)]
        wait: Option<String>,
        /// How long to wait (default 30 s).
        #[serde(default)]
        wait_ms: Option<u64>,
    },
    /// The delivery state of one sent message.
    State {
        /// Identity name.
        #[serde(rename = "as", default)]
        identity: Option<String>,
        /// The message id.
        id: String,
    },
    /// Recent sent messages with their states.
    Sent {
        /// Identity name.
        #[serde(rename = "as", default)]
        identity: Option<String>,
        /// At most this many (default 100).
        #[serde(default)]
        max: Option<usize>,
    },
    /// Make an invite.
    Invite {
        /// Identity name.
        #[serde(rename = "as", default)]
        identity: Option<String>,
        /// How long it stays valid (default 24 h).
        #[serde(default)]
        ttl_ms: Option<u64>,
    },
    /// Accept an invite.
    Accept {
        /// Identity name.
        #[serde(rename = "as", default)]
        identity: Option<String>,
        /// The `aw1:` token.
        token: String,
        /// Petname for the inviter (default: the name it suggests).
        #[serde(default)]
        name: Option<String>,
        /// How long to wait for the inviter's answer.
        #[serde(default)]
        wait_ms: Option<u64>,
    },
    /// Consume unread messages.
    Recv {
        /// Identity name.
        #[serde(rename = "as", default)]
        identity: Option<String>,
        /// Only from this contact.
        #[serde(default)]
        from: Option<String>,
        /// At most this many (default 100).
        #[serde(default)]
        max: Option<usize>,
        /// Wait up to this long for a first message.
        #[serde(default)]
        wait_ms: Option<u64>,
    },
    /// Consume the named unread messages.
    Ack {
        /// Identity name.
        #[serde(rename = "as", default)]
        identity: Option<String>,
        /// Message ids.
        ids: Vec<String>,
    },
    /// Stream events (messages, state changes) on this connection until it
    /// closes.
    Subscribe {
        /// Identity name.
        #[serde(rename = "as", default)]
        identity: Option<String>,
    },
    /// Show unread messages without consuming them.
    Inbox {
        /// Identity name.
        #[serde(rename = "as", default)]
        identity: Option<String>,
        /// Only from this contact.
        #[serde(default)]
        from: Option<String>,
        /// At most this many (default 100).
        #[serde(default)]
        max: Option<usize>,
        /// Wait up to this long for a first unread message (taking none).
        #[serde(default)]
        wait_ms: Option<u64>,
    },
}

impl Request {
    /// Whether the request may wait (for an arrival, an answer or a state);
    /// the daemon cancels such a request when its client hangs up. A client
    /// keeps its side of the connection open until it has the answer.
    pub fn waits(&self) -> bool {
        match self {
            Request::Recv { wait_ms, .. } | Request::Inbox { wait_ms, .. } => {
                wait_ms.is_some_and(|ms| ms > 0)
            }
            Request::Send { wait, .. } => wait.is_some(),
            Request::Accept { .. } | Request::Invite { .. } => true,
            _ => false,
        }
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self {
            Request::Status => "status",
            Request::Stop => "stop",
            Request::Init { .. } => "init",
            Request::Whoami { .. } => "whoami",
            Request::Contacts { .. } => "contacts",
            Request::Rename { .. } => "rename",
            Request::Remove { .. } => "remove",
            Request::Send { .. } => "send",
            Request::State { .. } => "state",
            Request::Sent { .. } => "sent",
            Request::Invite { .. } => "invite",
            Request::Accept { .. } => "accept",
            Request::Recv { .. } => "recv",
            Request::Ack { .. } => "ack",
            Request::Subscribe { .. } => "subscribe",
            Request::Inbox { .. } => "inbox",
        };
        write!(f, "Request({op})")
    }
}

/// What went wrong, as a stable code the CLI maps to an exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request line is not a valid request.
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
    /// Something failed inside the daemon.
    Internal,
}

/// An error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
    /// What happened and what to do.
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

    /// An internal error (details go to the log, not to the client).
    pub fn internal(context: &str, error: impl std::fmt::Display) -> ApiError {
        tracing::error!(%error, "{context}");
        ApiError::new(
            ErrorCode::Internal,
            format!("{context}; see daemon.log in the agentwire home"),
        )
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(error: rusqlite::Error) -> ApiError {
        ApiError::internal("the local store failed", error)
    }
}

/// A response line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The error, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Response {
    /// A response for a result.
    pub fn from_result(result: Result<serde_json::Value, ApiError>) -> Response {
        match result {
            Ok(value) => Response {
                ok: true,
                result: Some(value),
                error: None,
            },
            Err(error) => Response {
                ok: false,
                result: None,
                error: Some(error),
            },
        }
    }
}
