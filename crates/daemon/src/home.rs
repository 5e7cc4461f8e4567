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
//!   hook-stops/    0700  per Claude Code session: Stops in a row that `hook claude` continued
//! ```
//!
//! Paths inside the home are fixed names; user-supplied names never become
//! paths. The home and every file in it must belong to the user running
//! agentwire: a home another local user made first (private to them, with
//! their own key) would otherwise receive this user's messages where they
//! can read them. Files in the home are opened without following links.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
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
    /// The home, or a file in it, belongs to another user.
    #[error(
        "{path} belongs to another user (uid {owner}, you are uid {you}); whoever made it could read what this home receives: use a home of your own (--home DIR or AGENTWIRE_HOME) and do not use this one"
    )]
    NotOwned {
        /// The path.
        path: String,
        /// Its owner.
        owner: u32,
        /// The user running agentwire.
        you: u32,
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
        owned_by_us(&self.root, &meta)?;
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
        match read_own_file(&path) {
            Ok(Err(refused)) => Err(refused),
            Ok(Ok((bytes, meta))) => {
                let mode = meta.permissions().mode() & 0o777;
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
                    .custom_flags(libc::O_NOFOLLOW)
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

/// The user agentwire runs as.
pub fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Refuses `meta` (of `path`) unless the current user owns it.
fn owned_by_us(path: &Path, meta: &fs::Metadata) -> Result<(), HomeError> {
    let you = current_uid();
    if meta.uid() == you {
        Ok(())
    } else {
        Err(HomeError::NotOwned {
            path: path.display().to_string(),
            owner: meta.uid(),
            you,
        })
    }
}

/// Reads a whole file of ours: opened without following a link, and
/// refused (the inner error) unless it is a regular file the current user
/// owns. Its metadata comes with it, read from the open file.
fn read_own_file(path: &Path) -> std::io::Result<Result<(Vec<u8>, fs::Metadata), HomeError>> {
    use std::io::Read;
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(not_a_link)?;
    let meta = file.metadata()?;
    if let Err(refused) = owned_by_us(path, &meta) {
        return Ok(Err(refused));
    }
    if !meta.is_file() {
        return Ok(Err(HomeError::BadFile {
            path: path.display().to_string(),
            reason: "not a regular file".into(),
        }));
    }
    let mut bytes = Vec::new();
    Read::take(&mut file, 1024).read_to_end(&mut bytes)?;
    Ok(Ok((bytes, meta)))
}

/// `ELOOP` from `O_NOFOLLOW` said plainly.
fn not_a_link(error: std::io::Error) -> std::io::Error {
    if error.raw_os_error() == Some(libc::ELOOP) {
        std::io::Error::other(
            "it is a symbolic link; files in the home are never followed out of it",
        )
    } else {
        error
    }
}

/// Creates `path` empty with mode 0600 if it does not exist, so that files
/// SQLite derives from it (`-wal`, `-shm`) are private too. One that exists
/// must be a regular file of the current user's, not a link.
pub(crate) fn create_private_file(path: &Path) -> std::io::Result<()> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            check_own_file(path).map_err(std::io::Error::other)
        }
        Err(error) => Err(not_a_link(error)),
    }
}

/// Refuses `path` unless it is a regular file (not a link) that the current
/// user owns.
pub fn check_own_file(path: &Path) -> Result<(), HomeError> {
    let meta = fs::symlink_metadata(path).map_err(|source| HomeError::Io {
        what: "cannot read",
        path: path.display().to_string(),
        source,
    })?;
    owned_by_us(path, &meta)?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(HomeError::BadFile {
            path: path.display().to_string(),
            reason: "not a regular file (a link or something else); files in the home are never followed out of it".into(),
        })
    }
}

/// Creates a new file in the home, 0600, failing if anything (a link
/// included) is already there.
pub fn create_private_new(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Opens a file in the home for writing from the start (creating it 0600,
/// emptying it), without following a link; one that exists must be the
/// current user's.
pub fn open_private_truncate(path: &Path) -> std::io::Result<fs::File> {
    let file = open_private(path, fs::OpenOptions::new().write(true))?;
    file.set_len(0)?;
    Ok(file)
}

/// Opens a file in the home for appending (creating it 0600), without
/// following a link; one that exists must be the current user's.
pub fn open_private_append(path: &Path) -> std::io::Result<fs::File> {
    open_private(path, fs::OpenOptions::new().append(true))
}

/// `options`, creating the file 0600, never through a link, and refusing a
/// file another user owns.
fn open_private(path: &Path, options: &mut fs::OpenOptions) -> std::io::Result<fs::File> {
    let file = options
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(not_a_link)?;
    let meta = file.metadata()?;
    owned_by_us(path, &meta).map_err(std::io::Error::other)?;
    Ok(file)
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

    /// A path another user owns: as root, `path` given to `nobody`; as
    /// anyone else, the root directory (root's).
    pub(crate) fn foreign(path: &Path) -> PathBuf {
        if current_uid() == 0 {
            std::os::unix::fs::lchown(path, Some(65534), Some(65534)).unwrap();
            path.to_path_buf()
        } else {
            PathBuf::from("/")
        }
    }

    /// Finding: another local user who made the home first (private to
    /// them, with their own key and store) read what the victim received.
    #[test]
    fn a_home_key_or_store_made_by_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs");
        fs::DirBuilder::new().mode(0o700).create(&theirs).unwrap();
        let home = Home::resolve(Some(&foreign(&theirs))).unwrap();
        match home.ensure() {
            Err(error @ HomeError::NotOwned { .. }) => {
                assert!(error.to_string().contains("another user"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        if current_uid() != 0 {
            return; // only root can give files away; the rest needs it
        }
        // A home of ours with a key or a store someone else made.
        let home = Home::resolve(Some(&dir.path().join("ours"))).unwrap();
        home.ensure().unwrap();
        home.load_or_create_key().unwrap();
        foreign(&home.key_path());
        assert!(matches!(
            home.load_or_create_key(),
            Err(HomeError::NotOwned { .. })
        ));
        create_private_file(&home.db()).unwrap();
        foreign(&home.db());
        let refused = create_private_file(&home.db()).unwrap_err();
        assert!(refused.to_string().contains("another user"), "{refused}");
    }

    /// Files in the home are never followed out of it.
    #[test]
    fn links_in_the_home_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(&dir.path().join("h"))).unwrap();
        home.ensure().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, [7u8; 32]).unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, home.key_path()).unwrap();
        let refused = home.load_or_create_key().unwrap_err();
        assert!(refused.to_string().contains("symbolic link"), "{refused}");
        std::os::unix::fs::symlink(&elsewhere, home.db()).unwrap();
        let refused = create_private_file(&home.db()).unwrap_err();
        assert!(
            refused.to_string().contains("not a regular file"),
            "{refused}"
        );
        std::os::unix::fs::symlink(&elsewhere, home.log()).unwrap();
        let refused = open_private_append(&home.log()).unwrap_err();
        assert!(refused.to_string().contains("symbolic link"), "{refused}");
        assert_eq!(fs::read(&elsewhere).unwrap(), [7u8; 32]);
    }
}
