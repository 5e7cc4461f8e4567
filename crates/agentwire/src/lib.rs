//! agentwire for in-process agents: a Rust client of the home's daemon.
//!
//! An [`Agent`] is one identity of a home. It talks to the home's daemon over
//! its local socket — the same daemon, store and delivery states the CLI, the
//! JSON-lines mode and the HTTP bridge use. [`EmbeddedDaemon`] runs that
//! daemon inside your process instead of a separate one.
//!
//! Two agents on one machine, with a daemon embedded in this process:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), agentwire::AgentError> {
//! use std::time::Duration;
//! use agentwire::{Agent, EmbeddedDaemon};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let home = dir.path().join("home");
//! let daemon = EmbeddedDaemon::start(&home).await?;
//!
//! // Two identities of one home are contacts of each other from the start.
//! let planner = Agent::init(&home, "planner").await?;
//! let coder = Agent::init(&home, "coder").await?;
//!
//! let sent = planner.send("coder", "run the tests").await?;
//! let mut messages = coder.recv(Duration::from_secs(10)).await?;
//! let message = messages.remove(0);
//! assert_eq!(message.body, "run the tests");
//! assert_eq!(message.from.name.as_deref(), Some("planner"));
//! assert!(message.from.verified);
//!
//! // The sender sees it read once the coder consumed it.
//! let state = planner.wait_for(&sent.id, "read", Duration::from_secs(10)).await?;
//! assert_eq!(state, "read");
//!
//! daemon.stop().await;
//! # Ok(()) }
//! ```
//!
//! [`Agent::messages`] streams messages as they arrive (without consuming
//! them; [`Agent::ack`] does).

use std::path::{Path, PathBuf};
use std::time::Duration;

use agentwire_daemon::Home;
use agentwire_daemon::api::{ApiError, ErrorCode, Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The daemon refused the request (unknown peer, bad name, ...).
    #[error("{0}")]
    Refused(ApiError),
    /// No daemon listens on the socket: nothing was sent (start one, e.g.
    /// with [`EmbeddedDaemon`]).
    #[error("no agentwire daemon listens at {path}: {reason}")]
    NotRunning {
        /// Its socket.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The connection to the daemon failed after the request may have been
    /// sent, or its answer was not valid.
    #[error("the agentwire daemon at {path} cannot be reached: {reason}")]
    Unreachable {
        /// Its socket.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The daemon could not start.
    #[error("cannot start the daemon: {0}")]
    Start(String),
}

impl AgentError {
    /// The daemon's error code, when it refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            AgentError::Refused(error) => Some(error.code),
            _ => None,
        }
    }
}

/// A message's verified sender.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Sender {
    /// The contact's petname here.
    pub name: Option<String>,
    /// The first 8 hex digits of its key.
    pub short_id: String,
    /// Its full key, hex.
    pub address: String,
    /// Always true: the daemon set it from the session that decrypted it.
    pub verified: bool,
}

/// A received message. The body is untrusted content from [`Message::from`].
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Message {
    /// Its id.
    pub id: String,
    /// Who sent it (verified).
    pub from: Sender,
    /// `chat`, `task`, `result`, `query` or `file`.
    pub kind: String,
    /// `urgent`, `normal` or `low`.
    pub priority: String,
    /// The sender's clock, Unix ms.
    pub sent_at_ms: u64,
    /// What it answers.
    pub reply_to: Option<String>,
    /// Its thread.
    pub thread: Option<String>,
    /// The content.
    pub body: String,
}

/// What `send` returns.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Sent {
    /// The message id (for [`Agent::state`] and [`Agent::wait_for`]).
    pub id: String,
    /// `queued`.
    pub state: String,
}

/// One identity of a home, as a client of the home's daemon.
#[derive(Clone, Debug)]
pub struct Agent {
    socket: PathBuf,
    name: String,
}

impl Agent {
    /// The identity `name` of the home at `home` (whose daemon must run:
    /// `agentwire daemon start`, or an [`EmbeddedDaemon`]).
    pub fn open(home: &Path, name: &str) -> Agent {
        Agent {
            socket: home.join("daemon.sock"),
            name: name.to_owned(),
        }
    }

    /// Creates the identity `name` in the home (the first one picks the
    /// relay: the daemon's own loopback relay here) and opens it.
    pub async fn init(home: &Path, name: &str) -> Result<Agent, AgentError> {
        let agent = Agent::open(home, name);
        agent
            .call(&Request::Init {
                name: Some(name.to_owned()),
                relay: None,
                relay_token: None,
            })
            .await?;
        Ok(agent)
    }

    /// This identity's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `body` to the contact `to` (petname or key prefix); returns once
    /// it is durable in the outbox.
    pub async fn send(&self, to: &str, body: &str) -> Result<Sent, AgentError> {
        let result = self
            .call(&Request::Send {
                identity: Some(self.name.clone()),
                to: to.to_owned(),
                body: body.to_owned(),
                kind: None,
                reply_to: None,
                thread: None,
                priority: None,
                wait: None,
                wait_ms: None,
            })
            .await?;
        decode(result)
    }

    /// Consumes unread messages, waiting up to `wait` for one to arrive.
    pub async fn recv(&self, wait: Duration) -> Result<Vec<Message>, AgentError> {
        let result = self
            .call(&Request::Recv {
                identity: Some(self.name.clone()),
                from: None,
                max: None,
                wait_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            })
            .await?;
        decode(result["messages"].clone())
    }

    /// Consumes the messages with these ids (e.g. seen on [`Agent::messages`]).
    pub async fn ack(&self, ids: &[String]) -> Result<(), AgentError> {
        self.call(&Request::Ack {
            identity: Some(self.name.clone()),
            ids: ids.to_vec(),
        })
        .await
        .map(|_| ())
    }

    /// A sent message's state: `queued`, `relayed`, `delivered`, `read`,
    /// `expired` or `failed`.
    pub async fn state(&self, id: &str) -> Result<String, AgentError> {
        let result = self
            .call(&Request::State {
                identity: Some(self.name.clone()),
                id: id.to_owned(),
            })
            .await?;
        Ok(result["state"].as_str().unwrap_or_default().to_owned())
    }

    /// Waits up to `timeout` for a sent message to reach `wanted`
    /// (`relayed`, `delivered` or `read`); returns the state it has then.
    pub async fn wait_for(
        &self,
        id: &str,
        wanted: &str,
        timeout: Duration,
    ) -> Result<String, AgentError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let state = self.state(id).await?;
            let rank = |s: &str| {
                ["queued", "relayed", "delivered", "read"]
                    .iter()
                    .position(|x| *x == s)
            };
            let done = matches!(state.as_str(), "expired" | "failed")
                || rank(&state) >= rank(wanted)
                || tokio::time::Instant::now() >= deadline;
            if done {
                return Ok(state);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A stream of messages as they arrive (unread ones first), without
    /// consuming them. Ends when the daemon stops.
    pub async fn messages(&self) -> Result<tokio::sync::mpsc::Receiver<Message>, AgentError> {
        let stream = self.connect().await?;
        let (read, mut write) = stream.into_split();
        let request = json!({"op": "subscribe", "as": self.name});
        write
            .write_all(format!("{request}\n").as_bytes())
            .await
            .map_err(|e| self.unreachable(e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            // Keeping the write half alive keeps the subscription open.
            let _write = write;
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["event"] == "message"
                    && let Ok(message) = serde_json::from_value(event["message"].clone())
                    && tx.send(message).await.is_err()
                {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn connect(&self) -> Result<UnixStream, AgentError> {
        UnixStream::connect(&self.socket)
            .await
            .map_err(|e| AgentError::NotRunning {
                path: self.socket.display().to_string(),
                reason: e.to_string(),
            })
    }

    fn unreachable(&self, error: std::io::Error) -> AgentError {
        AgentError::Unreachable {
            path: self.socket.display().to_string(),
            reason: error.to_string(),
        }
    }

    async fn call(&self, request: &Request) -> Result<Value, AgentError> {
        call_socket(&self.socket, request).await
    }
}

/// One request to the daemon at `socket`, one answer.
pub async fn call_socket(socket: &Path, request: &Request) -> Result<Value, AgentError> {
    let unreachable = |e: std::io::Error| AgentError::Unreachable {
        path: socket.display().to_string(),
        reason: e.to_string(),
    };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| AgentError::NotRunning {
            path: socket.display().to_string(),
            reason: e.to_string(),
        })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(|e| AgentError::Start(e.to_string()))?;
    line.push(b'\n');
    write.write_all(&line).await.map_err(unreachable)?;
    let mut answer = String::new();
    BufReader::new(read)
        .read_line(&mut answer)
        .await
        .map_err(unreachable)?;
    let response: Response =
        serde_json::from_str(&answer).map_err(|e| AgentError::Unreachable {
            path: socket.display().to_string(),
            reason: format!("an answer that is not valid: {e}"),
        })?;
    match (response.ok, response.result, response.error) {
        (true, Some(result), _) => Ok(result),
        (_, _, Some(error)) => Err(AgentError::Refused(error)),
        _ => Err(AgentError::Unreachable {
            path: socket.display().to_string(),
            reason: "an empty answer".into(),
        }),
    }
}

fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, AgentError> {
    serde_json::from_value(value).map_err(|e| AgentError::Unreachable {
        path: String::new(),
        reason: format!("an answer of another shape: {e}"),
    })
}

/// The home's daemon, run inside this process.
pub struct EmbeddedDaemon {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), agentwire_daemon::DaemonError>>,
}

impl EmbeddedDaemon {
    /// Starts the daemon for the home at `home` (created if missing) and
    /// waits until it answers.
    pub async fn start(home: &Path) -> Result<EmbeddedDaemon, AgentError> {
        let resolved = Home::resolve(Some(home)).map_err(|e| AgentError::Start(e.to_string()))?;
        if call_socket(&resolved.socket(), &Request::Status)
            .await
            .is_ok()
        {
            return Err(AgentError::Start(format!(
                "a daemon already runs for {}; use Agent::open with it instead",
                home.display()
            )));
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(agentwire_daemon::run(resolved.clone(), async move {
            let _ = stopped.await;
        }));
        let socket = resolved.socket();
        for _ in 0..400 {
            if call_socket(&socket, &Request::Status).await.is_ok() {
                return Ok(EmbeddedDaemon { stop, task });
            }
            if task.is_finished() {
                let outcome = task.await;
                return Err(AgentError::Start(match outcome {
                    Ok(Err(error)) => error.to_string(),
                    _ => "the daemon stopped at start".into(),
                }));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(AgentError::Start(
            "the daemon did not answer within 10 s".into(),
        ))
    }

    /// Stops the daemon and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
