//! A throwaway PostgreSQL server for the tests and benchmarks of relay
//! clusters: a fresh cluster (`initdb`) in a temporary directory, served on
//! a free loopback port, gone when its owner stops it or the process ends.
//!
//! PostgreSQL refuses to run as root; as root, the server runs as `nobody`
//! (through `setpriv`, which also makes it stop when this process dies).
//! The binaries are found in `AGENTWIRE_PG_BIN`, else in the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The uid and gid the server runs as when this process is root.
const NOBODY: u32 = 65534;

/// A running PostgreSQL server. Dropping it stops it and deletes its data.
pub(crate) struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    durable: bool,
    /// Whether it serves TLS with `server.crt` and `server.key` in its data
    /// directory.
    tls: bool,
    child: Option<Child>,
    databases: AtomicU32,
}

impl PgServer {
    /// Makes a new cluster and starts it. `durable` keeps PostgreSQL's
    /// `fsync` (for benchmarks); without it, commits skip the disk (for
    /// tests, where a power cut is not the question).
    pub(crate) fn start(durable: bool) -> Result<PgServer, String> {
        Self::start_with(durable, None)
    }

    /// [`PgServer::start`], serving TLS (besides plain connections) with
    /// this PEM certificate chain and key.
    pub(crate) fn start_with(durable: bool, tls: Option<(&str, &str)>) -> Result<PgServer, String> {
        let bin = bin_dir()?;
        remove_stale_dirs();
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "agentwire-pg-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if is_root() {
            std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY))
                .map_err(|e| format!("cannot hand {} to nobody: {e}", dir.display()))?;
        }
        let data = dir.join("data");
        let output = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
                "-N",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            for (name, pem) in [("server.crt", cert), ("server.key", key)] {
                let path = data.join(name);
                std::fs::write(&path, pem).map_err(|e| format!("cannot write {name}: {e}"))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| format!("cannot restrict {name}: {e}"))?;
                if is_root() {
                    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY))
                        .map_err(|e| format!("cannot hand {name} to nobody: {e}"))?;
                }
            }
        }
        let mut server = PgServer {
            bin,
            dir,
            port: free_port()?,
            durable,
            tls: tls.is_some(),
            child: None,
            databases: AtomicU32::new(0),
        };
        server.resume()?;
        Ok(server)
    }

    /// The port it listens on (127.0.0.1).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` as the superuser.
    pub(crate) fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    pub(crate) fn create_database(&self) -> Result<String, String> {
        let name = format!("relay_{}", self.databases.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Runs `sql` in database `db` with `psql`; returns its output.
    pub(crate) fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-X", "-q", "-A", "-t"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(db)
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(format!(
                "psql `{sql}` failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Stops the server (a fast shutdown: open connections are cut), keeping
    /// its data for [`PgServer::resume`].
    pub(crate) fn pause(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "INT");
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on its port and data, and waits until it
    /// answers.
    pub(crate) fn resume(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Ok(());
        }
        let mut command = as_server_user(&self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-k")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=400",
            ])
            .args(["-c", "shared_buffers=128MB"]);
        if self.tls {
            command.args(["-c", "ssl=on"]);
        }
        if !self.durable {
            command.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.join("server.log"))
                    .map_err(|e| format!("cannot create the server log: {e}"))?,
            ));
        self.child = Some(spawn_kept(command)?);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.psql("postgres", "SELECT 1").is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "postgres exited ({status}): {}",
                    std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                return Err("postgres did not answer within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.pause();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A command for the server's binaries: as `nobody` when this process is
/// root, and (through `setpriv`) told to stop when the thread that started
/// it ends.
fn as_server_user(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command.args(["--pdeathsig", "INT"]);
    if is_root() {
        command.args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]);
    }
    command.arg(program);
    command
}

/// Spawns `command` from a thread that lives as long as this process, so
/// that the parent-death signal comes when the process ends, not when the
/// (test) thread that asked for the server does.
fn spawn_kept(mut command: Command) -> Result<Child, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-keeper".into())
        .spawn(move || {
            let _ = tx.send(command.spawn());
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    rx.recv()
        .map_err(|_| "the keeper thread died".to_string())?
        .map_err(|e| format!("cannot start postgres (is setpriv installed?): {e}"))
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

fn free_port() -> Result<u16, String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// The directory of PostgreSQL's server binaries.
fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("AGENTWIRE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL is not installed: `apt-get install postgresql` (Debian), or set \
         AGENTWIRE_PG_BIN to the directory holding initdb and postgres"
            .to_string()
    })
}

/// Deletes the data of servers whose process is gone (killed before it
/// could clean up).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("agentwire-pg-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
