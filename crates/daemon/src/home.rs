//! The agentwire home: one directory (0700) holding a user's state.
//!
//! ```text
//! HOME/            0700
//!   key            0600  32-byte key that encrypts pickled identities and sessions
//!   agentwire.db   0600  the daemon's store
//!   daemon.sock    0600  the local API
//!   daemon.log     0600  the daemon's log when started in the background
//!   local-relay.db 0600  the in-process relay's store (when no --relay is set)
//!   relay.db       0600  `agentwire relay`'s store (default --db)
//! ```
//!
//! Paths inside the home are fixed names; user-supplied names never become
//! paths.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agentwire_session::PickleKey;

/// Why the home cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// No `--home`, no `AGENTWIRE_HOME`, no `HOME`.
    #[error("cannot find a home directory: HOME is not set; pass --home DIR or set AGENTWIRE_HOME")]
    NoHome,
    /// The home exists with permissions that let others in.
    #[error(
        "the agentwire home {path} has mode {mode:o}; it must be private: run `chmod 700 {path}`"
    )]
    NotPrivate {
        /// The home.
        path: String,
        /// Its mode.
        mode: u32,
    },
    /// The home's path names something that is not a directory.
    #[error(
        "the agentwire home {path} is not a directory; pass --home with a directory (it is created if missing)"
    )]
    NotADirectory {
        /// The path.
        path: String,
    },
    /// A file in the home has the wrong size or mode.
    #[error("{path} is damaged or not private ({reason})")]
    BadFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The filesystem refused.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A resolved home directory.
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `flag` if given, else `$HOME/.agentwire`. Nothing is created.
    pub fn resolve(flag: Option<&Path>) -> Result<Home, HomeError> {
        let root = match flag {
            Some(path) => path.to_path_buf(),
            None => {
                let home = std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .ok_or(HomeError::NoHome)?;
                PathBuf::from(home).join(".agentwire")
            }
        };
        Ok(Home { root })
    }

    /// The home directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The daemon's socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("daemon.sock")
    }

    /// The file a running daemon holds an exclusive lock on: one daemon per
    /// home, and a new one starts only after the old one has exited.
    pub fn daemon_lock(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }

    /// Whether a daemon holds the home's lock (is running or still stopping).
    pub fn daemon_running(&self) -> bool {
        match std::fs::File::open(self.daemon_lock()) {
            Ok(file) => matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }

    /// Whether `agentwire init` made this home (its store exists).
    pub fn is_initialized(&self) -> bool {
        self.db().exists()
    }

    /// The daemon's store.
    pub fn db(&self) -> PathBuf {
        self.root.join("agentwire.db")
    }

    /// The in-process relay's store.
    pub fn local_relay_db(&self) -> PathBuf {
        self.root.join("local-relay.db")
    }

    /// The default store of `agentwire relay`.
    pub fn relay_db(&self) -> PathBuf {
        self.root.join("relay.db")
    }

    /// The file touched when a message arrives for identity `name` (its
    /// content is the unread count), for tools that watch files. `name` is a
    /// validated [`agentwire_session::Name`], so it is one safe component.
    pub fn notify_file(&self, name: &agentwire_session::Name) -> PathBuf {
        self.root.join("notify").join(name.as_str())
    }

    /// The daemon's log file.
    pub fn log(&self) -> PathBuf {
        self.root.join("daemon.log")
    }

    fn key_path(&self) -> PathBuf {
        self.root.join("key")
    }

    /// Creates the home (0700) if missing; refuses one that others can enter.
    pub fn ensure(&self) -> Result<(), HomeError> {
        let io = |what, source| HomeError::Io {
            what,
            path: self.root.display().to_string(),
            source,
        };
        if !self.root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)
                .map_err(|e| io("cannot create", e))?;
        }
        let meta = fs::metadata(&self.root).map_err(|e| io("cannot read", e))?;
        if !meta.is_dir() {
            return Err(HomeError::NotADirectory {
                path: self.root.display().to_string(),
            });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(HomeError::NotPrivate {
                path: self.root.display().to_string(),
                mode,
            });
        }
        Ok(())
    }

    /// The pickle key, created (0600) on first use.
    pub fn load_or_create_key(&self) -> Result<PickleKey, HomeError> {
        let path = self.key_path();
        let shown = path.display().to_string();
        match fs::read(&path) {
            Ok(bytes) => {
                let mode = fs::metadata(&path)
                    .map(|m| m.permissions().mode() & 0o777)
                    .unwrap_or(0);
                if mode & 0o077 != 0 {
                    return Err(HomeError::BadFile {
                        path: shown.clone(),
                        reason: format!("mode {mode:o}; run `chmod 600 {shown}`"),
                    });
                }
                let bytes: [u8; 32] =
                    bytes.try_into().map_err(|b: Vec<u8>| HomeError::BadFile {
                        path: shown.clone(),
                        reason: format!("{} bytes, expected 32", b.len()),
                    })?;
                Ok(PickleKey::from_bytes(bytes))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = PickleKey::generate().map_err(|e| HomeError::BadFile {
                    path: shown.clone(),
                    reason: format!("no randomness: {e}"),
                })?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|source| HomeError::Io {
                        what: "cannot create",
                        path: shown.clone(),
                        source,
                    })?;
                file.write_all(key.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|source| HomeError::Io {
                        what: "cannot write",
                        path: shown,
                        source,
                    })?;
                Ok(key)
            }
            Err(source) => Err(HomeError::Io {
                what: "cannot read",
                path: shown,
                source,
            }),
        }
    }
}

/// Creates `path` empty with mode 0600 if it does not exist, so that files
/// SQLite derives from it (`-wal`, `-shm`) are private too.
pub(crate) fn create_private_file(path: &Path) -> std::io::Result<()> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_home_and_its_key_are_private_and_the_key_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(&dir.path().join("h"))).unwrap();
        home.ensure().unwrap();
        let mode = fs::metadata(home.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let key = home.load_or_create_key().unwrap();
        let again = home.load_or_create_key().unwrap();
        assert_eq!(key.as_bytes(), again.as_bytes());
        let mode = fs::metadata(home.key_path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        fs::set_permissions(home.key_path(), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            home.load_or_create_key(),
            Err(HomeError::BadFile { .. })
        ));
        fs::set_permissions(home.root(), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(home.ensure(), Err(HomeError::NotPrivate { .. })));
        let file = dir.path().join("a-file");
        std::fs::write(&file, "not a home").unwrap();
        let home = Home::resolve(Some(&file)).unwrap();
        assert!(matches!(
            home.ensure(),
            Err(HomeError::NotADirectory { .. })
        ));
    }
}
