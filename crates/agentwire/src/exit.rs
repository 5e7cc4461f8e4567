//! Exit codes, as documented in README.md ("Exit codes").

use std::fmt;

/// Success.
pub(crate) const OK: u8 = 0;
/// Nothing to receive.
pub(crate) const NOTHING: u8 = 1;
/// Bad flags or arguments (clap reports them).
pub(crate) const USAGE: u8 = 2;
/// A file named by a flag is missing, unreadable or invalid (access token,
/// TLS certificate or key, home directory).
pub(crate) const CONFIG: u8 = 3;
/// The service could not start: address in use, database cannot be opened.
pub(crate) const CANNOT_START: u8 = 4;

/// The daemon cannot be reached or started.
pub(crate) const DAEMON_UNREACHABLE: u8 = 10;
/// The relay cannot be reached.
pub(crate) const RELAY_UNREACHABLE: u8 = 11;
/// No such contact or identity (or a key prefix matching several).
pub(crate) const UNKNOWN_PEER: u8 = 12;
/// No identity in this home yet.
pub(crate) const NOT_INITIALIZED: u8 = 13;
/// The invite is damaged, altered or not an invite.
pub(crate) const INVITE_INVALID: u8 = 14;
/// The invite has expired.
pub(crate) const INVITE_EXPIRED: u8 = 15;
/// The invite was already used.
pub(crate) const INVITE_SPENT: u8 = 16;
/// The invite is for another relay.
pub(crate) const INVITE_WRONG_RELAY: u8 = 17;
/// `send --wait`: the state was not reached in time (the message is still
/// on its way).
pub(crate) const NOT_YET: u8 = 18;
/// `send --wait`: the message expired at the relay or was refused for good.
pub(crate) const UNDELIVERABLE: u8 = 19;
/// `send`: the identity's outbox is full (the relay has not taken what is
/// queued); nothing was queued.
pub(crate) const OUTBOX_FULL: u8 = 20;
/// The contact removed this identity; a new invite pairs them again.
pub(crate) const CONTACT_REMOVED: u8 = 21;
/// `call`: the task failed.
pub(crate) const TASK_FAILED: u8 = 22;
/// `call`: the worker rejected the task.
pub(crate) const TASK_REJECTED: u8 = 23;
/// `call`: the task was canceled.
pub(crate) const TASK_CANCELED: u8 = 24;
/// `call`: the worker needs input to go on.
pub(crate) const TASK_INPUT_REQUIRED: u8 = 25;
/// The daemon failed internally.
pub(crate) const INTERNAL: u8 = 70;

/// The name of an exit code, as the `code` of a `--json` error.
pub(crate) fn name(code: u8) -> &'static str {
    match code {
        OK => "ok",
        NOTHING => "nothing",
        USAGE => "usage",
        CONFIG => "config",
        CANNOT_START => "cannot_start",
        DAEMON_UNREACHABLE => "daemon_unreachable",
        RELAY_UNREACHABLE => "relay_unreachable",
        UNKNOWN_PEER => "unknown_peer",
        NOT_INITIALIZED => "not_initialized",
        INVITE_INVALID => "invite_invalid",
        INVITE_EXPIRED => "invite_expired",
        INVITE_SPENT => "invite_spent",
        INVITE_WRONG_RELAY => "invite_wrong_relay",
        NOT_YET => "not_yet",
        UNDELIVERABLE => "undeliverable",
        OUTBOX_FULL => "outbox_full",
        CONTACT_REMOVED => "contact_removed",
        TASK_FAILED => "task_failed",
        TASK_REJECTED => "task_rejected",
        TASK_CANCELED => "task_canceled",
        TASK_INPUT_REQUIRED => "task_input_required",
        _ => "internal",
    }
}

/// An error and its causes as one sentence, each said once: a cause whose
/// text its error already includes is not repeated.
pub(crate) fn sentence(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let said = cause.to_string();
        if text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

/// Prints an error on stderr: a sentence, or with `--json` one JSON object
/// `{"error":{"code","message","exit_code"}}`.
pub(crate) fn report(json: bool, code: u8, message: &str) {
    if json {
        let line = serde_json::json!({
            "error": {"code": name(code), "message": message, "exit_code": code}
        });
        eprintln!("{line}");
    } else {
        eprintln!("agentwire: {message}");
    }
}

/// An error with the exit code it maps to.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) error: Option<anyhow::Error>,
}

impl Failure {
    pub(crate) fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: Some(error.into()),
        }
    }

    /// An exit code with nothing to print (e.g. "nothing to receive").
    pub(crate) fn quiet(code: u8) -> Self {
        Self { code, error: None }
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            Some(error) => write!(f, "exit {}: {error:#}", self.code),
            None => write!(f, "exit {}", self.code),
        }
    }
}

/// Attaches an exit code to any error.
pub(crate) trait WithCode<T> {
    fn code(self, code: u8) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> WithCode<T> for Result<T, E> {
    fn code(self, code: u8) -> Result<T, Failure> {
        self.map_err(|error| Failure::new(code, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:1: {source}")]
    struct Bind {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_is_said_once() {
        let bind = Bind {
            source: std::io::Error::other("Address already in use"),
        };
        let error = anyhow::Error::new(bind).context("cannot start the relay");
        assert_eq!(
            sentence(&error),
            "cannot start the relay: cannot listen on 127.0.0.1:1: Address already in use"
        );
    }
}
