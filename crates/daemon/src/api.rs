//! The local API on the wire: one JSON object per line over the daemon's Unix
//! socket. A client writes one request line ([`agentwire_api::Request`]) and
//! reads one response line ([`Response`]); a `subscribe` request is answered
//! with event lines ([`agentwire_api::Event`]) until either side closes.
//!
//! ```text
//! → {"op":"send","as":"planner","to":"coder","body":"run the tests"}
//! ← {"ok":true,"result":{"id":"019a…","to":"coder","state":"queued","priority":"normal"}}
//! ← {"ok":false,"error":{"code":"unknown_peer","message":"no contact named \"codr\"; see `agentwire contacts`"}}
//! ```
//!
//! The types are those of `agentwire-api`; this module only adds the
//! response envelope. JSON lives here and in the doors, nowhere else.

pub use agentwire_api::*;
use serde::{Deserialize, Serialize};

/// A response line: `{"ok":true,"result":…}` or `{"ok":false,"error":…}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response<T> {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
    /// The error, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl<T> Response<T> {
    /// A response for a result.
    pub fn from_result(result: Result<T, ApiError>) -> Response<T> {
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

    /// Back to a result; an answer with neither is an error of its own.
    pub fn into_result(self) -> Result<T, ApiError> {
        match (self.ok, self.result, self.error) {
            (true, Some(result), _) => Ok(result),
            (_, _, Some(error)) => Err(error),
            _ => Err(ApiError::new(
                ErrorCode::Internal,
                "the daemon's answer has neither a result nor an error",
            )),
        }
    }
}

/// An internal error: the details go to the log, the client gets where to
/// look.
pub(crate) fn internal(context: &str, error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "{context}");
    ApiError::new(
        ErrorCode::Internal,
        format!("{context}; see daemon.log in the agentwire home"),
    )
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> ApiError {
        internal("the local store failed", error)
    }
}
