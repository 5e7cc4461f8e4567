//! Exit codes, as documented in README.md ("Exit codes").

use std::fmt;

/// Success.
pub(crate) const OK: u8 = 0;
/// Bad flags or arguments (clap reports them).
pub(crate) const USAGE: u8 = 2;
/// A file named by a flag is missing, unreadable or invalid (access token,
/// TLS certificate or key, home directory).
pub(crate) const CONFIG: u8 = 3;
/// The service could not start: address in use, database cannot be opened.
pub(crate) const CANNOT_START: u8 = 4;

/// An error with the exit code it maps to.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) error: anyhow::Error,
}

impl Failure {
    pub(crate) fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit {}: {:#}", self.code, self.error)
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
