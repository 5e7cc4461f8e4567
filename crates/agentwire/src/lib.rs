//! agentwire for in-process agents: a Rust client of the home's daemon.
//!
//! An [`Agent`] is one identity of a home. It talks to the home's daemon —
//! the same daemon, store and delivery states the CLI, the JSON-lines mode
//! and the HTTP bridge use — over its local socket ([`Agent::open`]), or in
//! this very process when the daemon is an [`EmbeddedDaemon`]
//! ([`EmbeddedDaemon::agent`]: no socket, no JSON).
//!
//! Two agents on one machine, with a daemon embedded in this process:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), agentwire::AgentError> {
//! use std::time::Duration;
//! use agentwire::{DeliveryState, EmbeddedDaemon};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let daemon = EmbeddedDaemon::start(&dir.path().join("home")).await?;
//!
//! // Two identities of one home are contacts of each other from the start.
//! let planner = daemon.init("planner").await?;
//! let coder = daemon.init("coder").await?;
//!
//! let sent = planner.send("coder", "run the tests").await?;
//! let mut messages = coder.recv(Duration::from_secs(10)).await?;
//! let message = messages.remove(0);
//! assert_eq!(message.body, "run the tests");
//! assert_eq!(message.from.name.as_deref(), Some("planner"));
//! assert!(message.from.verified);
//!
//! // The sender sees it read once the coder consumed it.
//! let state = planner.wait_for(&sent.id, DeliveryState::Read, Duration::from_secs(10)).await?;
//! assert_eq!(state, DeliveryState::Read);
//!
//! daemon.stop().await;
//! # Ok(()) }
//! ```
//!
//! [`Agent::messages`] streams messages as they arrive (without consuming
//! them; [`Agent::ack`] does).
//!
//! Delegating a task: the worker reports on what it was given, the
//! requester's [`Agent::call`] returns the result.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), agentwire::AgentError> {
//! use std::time::Duration;
//! use agentwire::{EmbeddedDaemon, Kind, TaskState};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let daemon = EmbeddedDaemon::start(&dir.path().join("home")).await?;
//! let planner = daemon.init("planner").await?;
//! let coder = daemon.init("coder").await?;
//!
//! let worker = tokio::spawn(async move {
//!     let task = coder.recv(Duration::from_secs(10)).await?.remove(0);
//!     assert_eq!(task.kind, Kind::Task);
//!     coder.report(&task.id, TaskState::Working, None).await?;
//!     coder.stream(&task.id, "1 passed\n").await?;
//!     coder.report(&task.id, TaskState::Completed, Some("1 passed\n")).await
//! });
//! let done = planner.call("coder", "run the tests", Duration::from_secs(10)).await?;
//! assert_eq!(done.task.state, TaskState::Completed);
//! assert_eq!(done.result.unwrap().body, "1 passed\n");
//! worker.await.unwrap()?;
//! daemon.stop().await;
//! # Ok(()) }
//! ```

use std::path::Path;
use std::time::Duration;

use agentwire_daemon::api::{self, Event};
pub use agentwire_daemon::api::{
    ApiError, CardSet, CardView as Card, ChunkView as Chunk, ContactView as Contact, DeliveryState,
    ErrorCode, FileSent, FileView, FoundContact, Kind, ListedIdentity, Listing,
    MessageView as Message, Priority, Queued, Sender, SentView, TaskRole, TaskState,
    TaskView as Task,
};
use agentwire_daemon::client::ClientError;
use agentwire_daemon::{DaemonClient, DaemonHandle, Home};

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

impl From<ClientError> for AgentError {
    fn from(error: ClientError) -> AgentError {
        match error {
            ClientError::Refused(error) => AgentError::Refused(error),
            ClientError::NotRunning { path, source } => AgentError::NotRunning {
                path,
                reason: source.to_string(),
            },
            ClientError::Lost { path, reason } => AgentError::Unreachable { path, reason },
        }
    }
}

/// Messages buffered by [`Agent::messages`] for a consumer that reads slowly.
const MESSAGE_BUFFER: usize = 256;

/// One identity of a home, as a client of the home's daemon.
#[derive(Clone, Debug)]
pub struct Agent {
    client: DaemonClient,
    name: String,
}

impl Agent {
    /// The identity `name` of the home at `home`, over the home's socket
    /// (its daemon must run: `agentwire daemon start`).
    pub fn open(home: &Path, name: &str) -> Agent {
        Agent {
            client: DaemonClient::socket(home.join("daemon.sock")),
            name: name.to_owned(),
        }
    }

    /// Creates the identity `name` in the home at `home` (the first one picks
    /// the relay: the daemon's own loopback relay here) and opens it.
    pub async fn init(home: &Path, name: &str) -> Result<Agent, AgentError> {
        let agent = Agent::open(home, name);
        agent.create().await?;
        Ok(agent)
    }

    async fn create(&self) -> Result<(), AgentError> {
        self.client
            .call(api::Init {
                name: Some(self.name.clone()),
                ..api::Init::default()
            })
            .await?;
        Ok(())
    }

    /// This identity's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn me(&self) -> Option<String> {
        Some(self.name.clone())
    }

    /// Sends `body` to the contact `to` (petname or key prefix); returns once
    /// it is durable in the outbox.
    pub async fn send(&self, to: &str, body: &str) -> Result<Queued, AgentError> {
        let request = api::SendMessage {
            identity: self.me(),
            to: to.to_owned(),
            body: body.to_owned(),
            ..api::SendMessage::default()
        };
        match self.client.call(request).await? {
            api::SendOutcome::Queued(queued) => Ok(queued),
            api::SendOutcome::Waited(_) => Err(AgentError::Unreachable {
                path: format!("{:?}", self.client),
                reason: "a send without a wait was answered as one with a wait".into(),
            }),
        }
    }

    /// Consumes unread messages, waiting up to `wait` for one to arrive.
    pub async fn recv(&self, wait: Duration) -> Result<Vec<Message>, AgentError> {
        let request = api::Recv {
            identity: self.me(),
            wait_ms: Some(millis(wait)),
            ..api::Recv::default()
        };
        Ok(self.client.call(request).await?.messages)
    }

    /// Consumes the messages with these ids (e.g. seen on
    /// [`Agent::messages`]); returns the ids this call took.
    pub async fn ack(&self, ids: &[String]) -> Result<Vec<String>, AgentError> {
        let request = api::Ack {
            identity: self.me(),
            ids: ids.to_vec(),
        };
        Ok(self.client.call(request).await?.acked)
    }

    /// A sent message and its delivery state.
    pub async fn state(&self, id: &str) -> Result<SentView, AgentError> {
        let request = api::State {
            identity: self.me(),
            id: id.to_owned(),
            ..api::State::default()
        };
        Ok(self.client.call(request).await?)
    }

    /// Waits up to `timeout` for a sent message to reach `wanted`
    /// (`Relayed`, `Delivered` or `Read`); returns the state it has then
    /// (which is a failure if it expired or was refused). The daemon wakes
    /// the wait when the state changes: nothing polls.
    pub async fn wait_for(
        &self,
        id: &str,
        wanted: DeliveryState,
        timeout: Duration,
    ) -> Result<DeliveryState, AgentError> {
        let request = api::State {
            identity: self.me(),
            id: id.to_owned(),
            wait: Some(wanted),
            wait_ms: Some(millis(timeout)),
        };
        Ok(self.client.call(request).await?.state)
    }

    /// A stream of messages as they arrive (unread ones first), without
    /// consuming them. Ends when the daemon stops or the receiver is dropped
    /// (the task that feeds it ends with it).
    pub async fn messages(&self) -> Result<tokio::sync::mpsc::Receiver<Message>, AgentError> {
        let mut events = self
            .client
            .subscribe(api::Subscribe {
                identity: self.me(),
            })
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(MESSAGE_BUFFER);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    () = tx.closed() => return,
                    event = events.next() => event,
                };
                match event {
                    Ok(Some(Event::Message { message })) => {
                        if tx.send(message).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return,
                }
            }
        });
        Ok(rx)
    }
}

/// How a task [`Agent::call`] asked for ended (or stood when the wait was
/// over).
#[derive(Clone, Debug)]
pub struct Called {
    /// The task as it is.
    pub task: Task,
    /// Its result, taken (marked read), when it completed.
    pub result: Option<Message>,
}

impl Agent {
    /// Asks the contact `to` to do `text` (a task) and waits up to `timeout`
    /// for it to end or need input; the result is taken when it completed.
    pub async fn call(
        &self,
        to: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<Called, AgentError> {
        let request = api::SendMessage {
            identity: self.me(),
            to: to.to_owned(),
            body: text.to_owned(),
            kind: Some(Kind::Task),
            ..api::SendMessage::default()
        };
        let id = match self.client.call(request).await? {
            api::SendOutcome::Queued(queued) => queued.id,
            api::SendOutcome::Waited(waited) => waited.sent.id,
        };
        let task = self.task(&id, timeout).await?;
        let result = match (&task.state, &task.result) {
            (TaskState::Completed, Some(result)) => {
                let request = api::Recv {
                    identity: self.me(),
                    ids: vec![result.clone()],
                    ..api::Recv::default()
                };
                self.client.call(request).await?.messages.into_iter().next()
            }
            _ => None,
        };
        Ok(Called { task, result })
    }

    /// A task, waiting up to `wait` for it to end or need input.
    pub async fn task(&self, id: &str, wait: Duration) -> Result<Task, AgentError> {
        let request = api::Task {
            identity: self.me(),
            id: id.to_owned(),
            wait_ms: Some(millis(wait)),
        };
        Ok(self.client.call(request).await?)
    }

    /// Tasks both ways, newest first.
    pub async fn tasks(&self) -> Result<Vec<Task>, AgentError> {
        let request = api::Tasks {
            identity: self.me(),
            max: None,
        };
        Ok(self.client.call(request).await?.tasks)
    }

    /// The worker's report on a task it was given: `text` is the result for
    /// `Completed`, else the reason.
    pub async fn report(
        &self,
        id: &str,
        state: TaskState,
        text: Option<&str>,
    ) -> Result<Task, AgentError> {
        let completed = state == TaskState::Completed;
        let text = text.map(str::to_owned);
        let request = api::UpdateTask {
            identity: self.me(),
            id: id.to_owned(),
            state,
            detail: if completed { None } else { text.clone() },
            result: if completed { text } else { None },
        };
        Ok(self.client.call(request).await?)
    }

    /// Streams a piece of a given task's output to its requester (at most
    /// 16 KiB); its place in the output.
    pub async fn stream(&self, id: &str, text: &str) -> Result<u32, AgentError> {
        let request = api::Stream {
            identity: self.me(),
            id: id.to_owned(),
            text: text.to_owned(),
        };
        Ok(self.client.call(request).await?.seq)
    }

    /// A task's streamed output after `after`, waiting up to `wait` for a
    /// piece.
    pub async fn chunks(
        &self,
        id: &str,
        after: Option<u32>,
        wait: Duration,
    ) -> Result<Vec<Chunk>, AgentError> {
        let request = api::Chunks {
            identity: self.me(),
            id: id.to_owned(),
            after,
            wait_ms: Some(millis(wait)),
        };
        Ok(self.client.call(request).await?.chunks)
    }

    /// Stops a task this identity asked for.
    pub async fn cancel(&self, id: &str) -> Result<Task, AgentError> {
        let request = api::Cancel {
            identity: self.me(),
            id: id.to_owned(),
        };
        Ok(self.client.call(request).await?)
    }

    /// This identity's card.
    pub async fn card(&self) -> Result<Card, AgentError> {
        let request = api::GetCard {
            identity: self.me(),
        };
        Ok(self.client.call(request).await?)
    }

    /// Replaces this identity's card; every contact is sent it.
    pub async fn set_card(&self, card: Card) -> Result<CardSet, AgentError> {
        let request = api::SetCard {
            identity: self.me(),
            name: Some(card.name),
            description: Some(card.description),
            capabilities: Some(card.capabilities),
            takes_tasks: Some(card.takes_tasks),
        };
        Ok(self.client.call(request).await?)
    }

    /// Contacts whose card lists `capability` (all without it), giving those
    /// not heard from lately up to `wait` to answer.
    pub async fn discover(
        &self,
        capability: Option<&str>,
        wait: Duration,
    ) -> Result<Vec<FoundContact>, AgentError> {
        let request = api::Discover {
            identity: self.me(),
            capability: capability.map(str::to_owned),
            wait_ms: Some(millis(wait)),
            relay: false,
        };
        Ok(self.client.call(request).await?.contacts)
    }

    /// Identities listed in the relay's directory with `capability` (any,
    /// without it), newest first, each checked and carrying the invite to
    /// [`Agent::accept`].
    pub async fn discover_listed(
        &self,
        capability: Option<&str>,
    ) -> Result<Vec<ListedIdentity>, AgentError> {
        let request = api::Discover {
            identity: self.me(),
            capability: capability.map(str::to_owned),
            wait_ms: None,
            relay: true,
        };
        Ok(self.client.call(request).await?.listed)
    }

    /// Lists this identity in its relay's directory under its card's
    /// capabilities, with an invite offering `allow` (`chat`, `task`,
    /// `file`) to whoever finds it. Nothing is listed until this is called.
    pub async fn publish_card(&self, allow: &[&str]) -> Result<Listing, AgentError> {
        let request = api::PublishCard {
            identity: self.me(),
            allow: Some(allow.iter().map(|p| (*p).to_owned()).collect()),
            withdraw: false,
        };
        Ok(self.client.call(request).await?)
    }

    /// Takes this identity out of its relay's directory; the listed invite
    /// stops working.
    pub async fn unpublish_card(&self) -> Result<Listing, AgentError> {
        let request = api::PublishCard {
            identity: self.me(),
            allow: None,
            withdraw: true,
        };
        Ok(self.client.call(request).await?)
    }

    /// Sends the file at `path` (absolute) to the contact `to`; returns once
    /// its parts and offer are queued. [`Agent::wait_for`] on the returned
    /// id with `Delivered` waits until the contact kept it.
    pub async fn send_file(&self, to: &str, path: &Path) -> Result<FileSent, AgentError> {
        let request = api::SendFile {
            identity: self.me(),
            to: to.to_owned(),
            path: path.display().to_string(),
            ..api::SendFile::default()
        };
        Ok(self.client.call(request).await?)
    }

    /// Grants (`allow`) or takes back what the contact `peer` may send:
    /// `chat`, `task`, `file`.
    pub async fn permit(
        &self,
        peer: &str,
        permissions: &[&str],
        allow: bool,
    ) -> Result<Contact, AgentError> {
        let request = api::Permit {
            identity: self.me(),
            peer: peer.to_owned(),
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            allow,
        };
        Ok(self.client.call(request).await?)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The home's daemon, run inside this process.
pub struct EmbeddedDaemon {
    handle: DaemonHandle,
}

impl EmbeddedDaemon {
    /// Starts the daemon for the home at `home` (created if missing). Fails
    /// if another daemon runs for that home.
    pub async fn start(home: &Path) -> Result<EmbeddedDaemon, AgentError> {
        let resolved = Home::resolve(Some(home)).map_err(|e| AgentError::Start(e.to_string()))?;
        if tokio::net::UnixStream::connect(resolved.socket())
            .await
            .is_ok()
        {
            return Err(AgentError::Start(format!(
                "a daemon already runs for {}; use Agent::open with it instead",
                home.display()
            )));
        }
        let handle = DaemonHandle::spawn(resolved)
            .await
            .map_err(|e| AgentError::Start(e.to_string()))?;
        Ok(EmbeddedDaemon { handle })
    }

    /// The identity `name` of this daemon's home, called in process.
    pub fn agent(&self, name: &str) -> Agent {
        Agent {
            client: self.handle.client(),
            name: name.to_owned(),
        }
    }

    /// Creates the identity `name` (the first one picks the relay: this
    /// daemon's own loopback relay) and returns it.
    pub async fn init(&self, name: &str) -> Result<Agent, AgentError> {
        let agent = self.agent(name);
        agent.create().await?;
        Ok(agent)
    }

    /// Stops the daemon and waits for it.
    pub async fn stop(self) {
        self.handle.shutdown().await;
    }
}
