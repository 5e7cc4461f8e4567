//! [`DaemonClient`]: how every door (CLI, `connect --json`, bridge, MCP,
//! hooks, the Rust library) talks to a daemon — over the home's Unix socket,
//! or in process with an embedded daemon. Either way it is one typed request
//! in and one typed answer out ([`DaemonClient::call`]), or a stream of
//! typed events ([`DaemonClient::subscribe`]). The JSON of the socket is
//! written and read here and in `server.rs`, nowhere else.
//!
//! [`blocking`] has the same for synchronous callers (the one-shot CLI).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::api::{
    Ack, Acked, ApiError, Event, Messages, Operation, Recv, Request, Response, Subscribe,
};
use crate::core::Daemon;
use crate::ops::Run;
use crate::ops::subscribe::Subscription;

/// Longest answer or event line a client reads, in bytes (a `recv` of 100
/// messages of 128 KiB each, escaped, fits).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Why a request got no answer from the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon refused the request (unknown peer, bad name, …).
    #[error(transparent)]
    Refused(ApiError),
    /// No daemon listens: nothing was sent.
    #[error("no agentwire daemon listens at {path}: {source}")]
    NotRunning {
        /// The socket.
        path: String,
        /// Why it could not be reached.
        source: std::io::Error,
    },
    /// The connection failed after the request may have been sent, or the
    /// answer was not valid: whether it was carried out is unknown.
    #[error("the agentwire daemon at {path} stopped answering: {reason}")]
    Lost {
        /// The socket.
        path: String,
        /// What failed.
        reason: String,
    },
}

impl ClientError {
    /// The daemon's refusal, if that is what it is.
    pub fn refusal(&self) -> Option<&ApiError> {
        match self {
            ClientError::Refused(error) => Some(error),
            _ => None,
        }
    }
}

/// A client of one daemon. Cloning is cheap.
#[derive(Clone)]
pub enum DaemonClient {
    /// Over the daemon's Unix socket.
    Socket(PathBuf),
    /// A daemon in this process.
    InProcess(Arc<Daemon>),
}

impl std::fmt::Debug for DaemonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonClient::Socket(path) => write!(f, "DaemonClient::Socket({})", path.display()),
            DaemonClient::InProcess(_) => f.write_str("DaemonClient::InProcess"),
        }
    }
}

impl DaemonClient {
    /// A client of the daemon listening at `socket`.
    pub fn socket(socket: impl Into<PathBuf>) -> DaemonClient {
        DaemonClient::Socket(socket.into())
    }

    /// Carries out one operation and returns its typed answer. Dropping the
    /// future abandons the request: over the socket that closes the
    /// connection, and the daemon cancels a request that was waiting.
    pub async fn call<O: Run>(&self, op: O) -> Result<O::Output, ClientError> {
        match self {
            DaemonClient::InProcess(daemon) => op.run(daemon).await.map_err(ClientError::Refused),
            DaemonClient::Socket(path) => {
                let request: Request = op.into();
                // The daemon keeps a connection open after answering a
                // request that neither waits nor holds messages.
                let reusable =
                    !request.waits() && !matches!(&request, Request::Recv(recv) if recv.confirm);
                let (read, mut write) = idle::connect(path).await?;
                send_line(path, &mut write, &request).await?;
                let mut lines = BufReader::new(read);
                let line = read_line(path, &mut lines, &mut Vec::new()).await?.ok_or_else(|| {
                    lost(
                        path,
                        "it closed the connection without answering; see daemon.log in the home",
                    )
                })?;
                if reusable && lines.buffer().is_empty() {
                    idle::park(path, lines.into_inner(), write);
                }
                decode_answer::<O>(path, &line)
            }
        }
    }

    /// `recv` with `confirm`: the messages, held for this caller (no other
    /// reader gets them) until [`HeldMessages::confirm`] names those it
    /// took; the rest stay unread, as do all of them if the
    /// [`HeldMessages`] is dropped.
    pub async fn recv_held(&self, mut recv: Recv) -> Result<(Messages, HeldMessages), ClientError> {
        recv.confirm = true;
        match self {
            DaemonClient::InProcess(daemon) => {
                let (messages, claim) = crate::ops::read::claim(daemon, recv)
                    .await
                    .map_err(ClientError::Refused)?;
                Ok((messages, HeldMessages(Holder::InProcess(claim))))
            }
            DaemonClient::Socket(path) => {
                let (read, mut write) = connect(path).await?;
                send_line(path, &mut write, &Request::Recv(recv)).await?;
                let mut lines = BufReader::new(read);
                let line = read_line(path, &mut lines, &mut Vec::new())
                    .await?
                    .ok_or_else(|| lost(path, "it closed the connection without answering"))?;
                let messages = decode_answer::<Recv>(path, &line)?;
                let holder = Holder::Socket {
                    path: path.clone(),
                    lines,
                    write,
                };
                Ok((messages, HeldMessages(holder)))
            }
        }
    }

    /// Follows an identity's events until the daemon stops (or the returned
    /// stream is dropped).
    pub async fn subscribe(&self, request: Subscribe) -> Result<Events, ClientError> {
        match self {
            DaemonClient::InProcess(daemon) => {
                let subscription = crate::ops::subscribe::subscribe(daemon, request)
                    .await
                    .map_err(ClientError::Refused)?;
                Ok(Events(EventSource::InProcess(subscription)))
            }
            DaemonClient::Socket(path) => {
                let (read, mut write) = connect(path).await?;
                send_line(path, &mut write, &Request::Subscribe(request)).await?;
                Ok(Events(EventSource::Socket {
                    path: path.clone(),
                    lines: BufReader::new(read),
                    partial: Vec::new(),
                    _write: write,
                }))
            }
        }
    }
}

/// Messages held by [`DaemonClient::recv_held`].
pub struct HeldMessages(Holder);

enum Holder {
    InProcess(crate::ops::read::Claim),
    Socket {
        path: PathBuf,
        lines: BufReader<OwnedReadHalf>,
        write: OwnedWriteHalf,
    },
}

impl HeldMessages {
    /// Takes the held messages with these ids (marks them read); the rest
    /// stay unread. The answer lists those taken.
    pub async fn confirm(self, ids: Vec<String>) -> Result<Acked, ClientError> {
        match self.0 {
            Holder::InProcess(claim) => claim.confirm(&ids).await.map_err(ClientError::Refused),
            Holder::Socket {
                path,
                mut lines,
                mut write,
            } => {
                let ack = Request::Ack(Ack {
                    identity: None,
                    ids,
                });
                send_line(&path, &mut write, &ack).await?;
                let line = read_line(&path, &mut lines, &mut Vec::new())
                    .await?
                    .ok_or_else(|| lost(&path, "it closed the connection without answering"))?;
                decode_answer::<Ack>(&path, &line)
            }
        }
    }
}

/// A subscription's events.
pub struct Events(EventSource);

enum EventSource {
    InProcess(Subscription),
    Socket {
        path: PathBuf,
        lines: BufReader<OwnedReadHalf>,
        /// A line read in part by a call that was cancelled.
        partial: Vec<u8>,
        /// Kept open: closing it ends the subscription.
        _write: OwnedWriteHalf,
    },
}

impl Events {
    /// The next event; `Ok(None)` when the daemon ended the stream (it
    /// stopped), an error when it refused the subscription or the
    /// connection failed. Cancel-safe: a call dropped halfway (in a
    /// `select!` or under a timeout) loses nothing.
    pub async fn next(&mut self) -> Result<Option<Event>, ClientError> {
        match &mut self.0 {
            EventSource::InProcess(subscription) => Ok(subscription.next().await),
            EventSource::Socket {
                path,
                lines,
                partial,
                ..
            } => match read_line(path, lines, partial).await? {
                None => Ok(None),
                Some(line) => decode_event(path, &line).map(Some),
            },
        }
    }
}

/// One event line: an event, or the daemon's refusal of the subscription.
fn decode_event(path: &Path, line: &str) -> Result<Event, ClientError> {
    if let Ok(event) = serde_json::from_str::<Event>(line) {
        return Ok(event);
    }
    match serde_json::from_str::<Response<serde::de::IgnoredAny>>(line) {
        Ok(response) => match response.into_result() {
            Err(error) => Err(ClientError::Refused(error)),
            Ok(_) => Err(lost(path, "an answer where an event was expected")),
        },
        Err(error) => Err(lost(path, format!("an event that is not valid: {error}"))),
    }
}

/// One answer line, as the operation's answer type.
fn decode_answer<O: Operation>(path: &Path, line: &str) -> Result<O::Output, ClientError> {
    let response: Response<O::Output> = serde_json::from_str(line)
        .map_err(|e| lost(path, format!("an answer that is not valid: {e}")))?;
    response.into_result().map_err(ClientError::Refused)
}

fn lost(path: &Path, reason: impl Into<String>) -> ClientError {
    ClientError::Lost {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Connections to daemons that answered a request and may take another,
/// kept for a few seconds so that a busy client does not open a connection
/// per request. They are kept as plain (blocking-mode) sockets, so that a
/// runtime that ends takes none with it.
mod idle {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use tokio::net::UnixStream;
    use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

    use super::ClientError;

    /// Connections kept, at most (for all daemons of this process).
    const MAX_IDLE: usize = 16;
    /// How long a kept connection may be reused: well under the daemon's
    /// own idle limit, so that the daemon never closes one as it is reused.
    const REUSE_WITHIN: Duration = Duration::from_secs(10);

    static IDLE: Mutex<Vec<(PathBuf, std::os::unix::net::UnixStream, Instant)>> =
        Mutex::new(Vec::new());

    /// A connection to the daemon at `path`: a kept one if there is one
    /// still open, else a new one.
    pub(super) async fn connect(
        path: &Path,
    ) -> Result<(OwnedReadHalf, OwnedWriteHalf), ClientError> {
        while let Some(kept) = take(path) {
            if let Ok(stream) = UnixStream::from_std(kept) {
                return Ok(stream.into_split());
            }
        }
        super::connect(path).await
    }

    /// The newest kept connection to `path` that the daemon has not closed
    /// (a closed one reads as the end of the stream at once).
    fn take(path: &Path) -> Option<std::os::unix::net::UnixStream> {
        let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(_, _, since)| since.elapsed() < REUSE_WITHIN);
        let at = idle.iter().rposition(|(p, _, _)| p == path)?;
        let (_, stream, _) = idle.swap_remove(at);
        drop(idle);
        // Non-blocking: an open, quiet connection has nothing to read.
        let mut probe = [0u8; 1];
        match std::io::Read::read(&mut &stream, &mut probe) {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => Some(stream),
            // Closed, or bytes nobody asked for: not reusable.
            _ => None,
        }
    }

    /// Keeps a connection whose request was answered in full.
    pub(super) fn park(path: &Path, read: OwnedReadHalf, write: OwnedWriteHalf) {
        let Ok(stream) = read.reunite(write) else {
            return;
        };
        let Ok(stream) = stream.into_std() else {
            return;
        };
        // Non-blocking, so that the probe before reuse never waits.
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((path.to_path_buf(), stream, Instant::now()));
        }
    }
}

async fn connect(path: &Path) -> Result<(OwnedReadHalf, OwnedWriteHalf), ClientError> {
    check_socket_owner(path)?;
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ClientError::NotRunning {
            path: path.display().to_string(),
            source,
        })?;
    Ok(stream.into_split())
}

/// Refuses a socket another user made: that user's daemon would read every
/// request (bodies, invite links). A missing socket is left to `connect`.
fn check_socket_owner(path: &Path) -> Result<(), ClientError> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let you = crate::home::current_uid();
    if meta.uid() == you {
        return Ok(());
    }
    Err(ClientError::NotRunning {
        path: path.display().to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "the socket belongs to another user (uid {owner}, you are uid {you}), so no daemon of yours listens there: use a home of your own",
                owner = meta.uid()
            ),
        ),
    })
}

fn request_line(path: &Path, request: &Request) -> Result<Vec<u8>, ClientError> {
    let mut line =
        serde_json::to_vec(request).map_err(|e| lost(path, format!("cannot encode: {e}")))?;
    line.push(b'\n');
    Ok(line)
}

async fn send_line(
    path: &Path,
    write: &mut OwnedWriteHalf,
    request: &Request,
) -> Result<(), ClientError> {
    let line = request_line(path, request)?;
    write
        .write_all(&line)
        .await
        .map_err(|e| lost(path, e.to_string()))
}

/// One line, at most [`MAX_ANSWER_BYTES`]; `None` at the end of the stream.
/// What a cancelled call read stays in `partial` for the next call.
async fn read_line(
    path: &Path,
    lines: &mut BufReader<OwnedReadHalf>,
    partial: &mut Vec<u8>,
) -> Result<Option<String>, ClientError> {
    let room = (MAX_ANSWER_BYTES + 1).saturating_sub(partial.len()) as u64;
    (&mut *lines)
        .take(room)
        .read_until(b'\n', partial)
        .await
        .map_err(|e| lost(path, e.to_string()))?;
    finish_line(path, std::mem::take(partial))
}

/// A line as read (empty at the end of the stream): checked for its limit
/// and UTF-8.
fn finish_line(path: &Path, line: Vec<u8>) -> Result<Option<String>, ClientError> {
    if line.is_empty() {
        return Ok(None);
    }
    if line.len() > MAX_ANSWER_BYTES {
        return Err(lost(path, "an answer longer than the limit"));
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| lost(path, "an answer that is not UTF-8"))
}

/// The same over blocking sockets, for synchronous callers.
pub mod blocking {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::time::Duration;

    use super::{
        ClientError, MAX_ANSWER_BYTES, decode_answer, decode_event, finish_line, lost, request_line,
    };
    use crate::api::{Ack, Acked, Event, Messages, Operation, Recv, Request, Subscribe};

    /// Carries out one operation on the daemon at `socket`; `timeout` bounds
    /// the wait for its answer.
    pub fn call<O: Operation>(
        socket: &Path,
        op: O,
        timeout: Duration,
    ) -> Result<O::Output, ClientError> {
        call_on(connect(socket)?, socket, op, timeout)
    }

    /// [`call`] on a connection made with [`connect`].
    pub fn call_on<O: Operation>(
        stream: UnixStream,
        socket: &Path,
        op: O,
        timeout: Duration,
    ) -> Result<O::Output, ClientError> {
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| lost(socket, e.to_string()))?;
        (&stream)
            .write_all(&request_line(socket, &op.into())?)
            .map_err(|e| lost(socket, e.to_string()))?;
        let mut reader = BufReader::new(&stream);
        let line = read_line(socket, &mut reader)?.ok_or_else(|| {
            lost(
                socket,
                "it closed the connection without answering; see daemon.log in the home",
            )
        })?;
        decode_answer::<O>(socket, &line)
    }

    /// `recv` with `confirm`: the messages, held for this caller until
    /// [`Held::confirm`] says which it took (the rest stay unread, as do all
    /// of them if the `Held` is dropped).
    pub fn recv_held(
        socket: &Path,
        recv: Recv,
        timeout: Duration,
    ) -> Result<(Messages, Held), ClientError> {
        recv_held_on(connect(socket)?, socket, recv, timeout)
    }

    /// [`recv_held`] on a connection made with [`connect`].
    pub fn recv_held_on(
        stream: UnixStream,
        socket: &Path,
        mut recv: Recv,
        timeout: Duration,
    ) -> Result<(Messages, Held), ClientError> {
        recv.confirm = true;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| lost(socket, e.to_string()))?;
        (&stream)
            .write_all(&request_line(socket, &Request::Recv(recv))?)
            .map_err(|e| lost(socket, e.to_string()))?;
        let mut reader = BufReader::new(stream);
        let line = read_line(socket, &mut reader)?
            .ok_or_else(|| lost(socket, "it closed the connection without answering"))?;
        let messages = decode_answer::<Recv>(socket, &line)?;
        Ok((
            messages,
            Held {
                path: socket.to_path_buf(),
                reader,
            },
        ))
    }

    /// Messages held by [`recv_held`].
    pub struct Held {
        path: std::path::PathBuf,
        reader: BufReader<UnixStream>,
    }

    impl Held {
        /// Takes the held messages with these ids; the rest stay unread.
        pub fn confirm(mut self, ids: Vec<String>) -> Result<Acked, ClientError> {
            let ack = Request::Ack(Ack {
                identity: None,
                ids,
            });
            self.reader
                .get_ref()
                .write_all(&request_line(&self.path, &ack)?)
                .map_err(|e| lost(&self.path, e.to_string()))?;
            let line = read_line(&self.path, &mut self.reader)?
                .ok_or_else(|| lost(&self.path, "it closed the connection without answering"))?;
            decode_answer::<Ack>(&self.path, &line)
        }
    }

    /// Follows an identity's events on the daemon at `socket`.
    pub fn subscribe(socket: &Path, request: Subscribe) -> Result<Events, ClientError> {
        let stream = connect(socket)?;
        (&stream)
            .write_all(&request_line(socket, &Request::Subscribe(request))?)
            .map_err(|e| lost(socket, e.to_string()))?;
        Ok(Events {
            path: socket.to_path_buf(),
            reader: BufReader::new(stream),
        })
    }

    /// A subscription's events, as an iterator; it ends when the daemon
    /// closes the stream.
    pub struct Events {
        path: std::path::PathBuf,
        reader: BufReader<UnixStream>,
    }

    impl Iterator for Events {
        type Item = Result<Event, ClientError>;

        fn next(&mut self) -> Option<Self::Item> {
            match read_line(&self.path, &mut self.reader) {
                Ok(None) => None,
                Ok(Some(line)) => Some(decode_event(&self.path, &line)),
                Err(error) => Some(Err(error)),
            }
        }
    }

    /// A connection to the daemon at `socket`; [`ClientError::NotRunning`]
    /// when none listens.
    pub fn connect(socket: &Path) -> Result<UnixStream, ClientError> {
        super::check_socket_owner(socket)?;
        UnixStream::connect(socket).map_err(|source| ClientError::NotRunning {
            path: socket.display().to_string(),
            source,
        })
    }

    fn read_line(path: &Path, reader: &mut impl BufRead) -> Result<Option<String>, ClientError> {
        let mut line = Vec::new();
        reader
            .take(MAX_ANSWER_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| lost(path, e.to_string()))?;
        finish_line(path, line)
    }
}
