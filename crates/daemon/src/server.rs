//! The local API server: a Unix socket (0600) in the home; one request line
//! in, one response line out, and again on the same connection for requests
//! that neither wait nor stream.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use tokio::net::unix::OwnedWriteHalf;

use crate::api::{ApiError, MAX_REQUEST_BYTES, Recv, Request, Response, Subscribe};
use crate::core::Daemon;
use crate::ops;
use crate::ops::read::claim;
use crate::ops::subscribe::subscribe;

/// Binds the socket, replacing a stale one (left by a daemon that died).
pub(crate) async fn bind(path: &std::path::Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another daemon is already running for this home",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves connections until shutdown.
pub(crate) async fn serve(listener: UnixListener, daemon: Arc<Daemon>) {
    loop {
        let accepted = tokio::select! {
            () = daemon.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let daemon = daemon.clone();
                daemon
                    .tasks
                    .clone()
                    .spawn(async move { connection(stream, daemon).await });
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// How long a connection may sit idle between requests before the daemon
/// closes it (clients reuse a connection for a few seconds at most).
const IDLE_CONNECTION: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves one connection: requests one after another (a client may reuse
/// its connection), until the client hangs up or sends a request that
/// waits, holds or streams, which is the connection's last.
async fn connection(stream: UnixStream, daemon: Arc<Daemon>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES as u64 + 1));
    let mut line = String::new();
    let mut first = true;
    loop {
        line.clear();
        reader.get_mut().set_limit(MAX_REQUEST_BYTES as u64 + 1);
        let read = if first {
            reader.read_line(&mut line).await
        } else {
            match tokio::time::timeout(IDLE_CONNECTION, reader.read_line(&mut line)).await {
                Ok(read) => read,
                Err(_) => return,
            }
        };
        first = false;
        let Some((answer, more)) = request(&daemon, read, &line, &mut reader, &mut write).await
        else {
            return;
        };
        let mut bytes = answer;
        bytes.push(b'\n');
        if let Err(error) = write.write_all(&bytes).await {
            tracing::debug!(%error, "a client left before its answer");
            return;
        }
        if !more {
            return;
        }
    }
}

/// Carries out one request line: its answer, and whether the connection
/// may carry another; `None` when the request answered on its own (a
/// held `recv`, a subscription) or the client left.
async fn request(
    daemon: &Arc<Daemon>,
    read: std::io::Result<usize>,
    line: &str,
    reader: &mut BufReader<tokio::io::Take<tokio::net::unix::OwnedReadHalf>>,
    write: &mut OwnedWriteHalf,
) -> Option<(Vec<u8>, bool)> {
    let answer = match read {
        Ok(_) if line.len() > MAX_REQUEST_BYTES => {
            let refused = refusal(ApiError::invalid(format!(
                "request longer than {MAX_REQUEST_BYTES} bytes"
            )));
            // What follows is the rest of that line: end here.
            return Some((refused, false));
        }
        Ok(0) => return None,
        Ok(_) => match serde_json::from_str::<Request>(line).inspect(|request| {
            // Asking how the daemon is does not keep an idle one alive.
            if !matches!(request, Request::Status(_)) {
                daemon
                    .last_request_ms
                    .store(crate::core::now_ms(), std::sync::atomic::Ordering::Relaxed);
            }
        }) {
            Ok(Request::Recv(recv)) if recv.confirm => {
                held_recv(daemon, recv, reader, write).await;
                return None;
            }
            Ok(Request::Subscribe(request)) => {
                let mut rest = Vec::new();
                let hangup = async move {
                    let _ = reader.read_to_end(&mut rest).await;
                };
                stream_events(daemon, request, write, hangup).await;
                return None;
            }
            Ok(request) if request.waits() => {
                // A client that hangs up while waiting (recv --wait, accept)
                // cancels its request, so no message is claimed for a
                // reader that is gone. The answer is the connection's last.
                let mut rest = Vec::new();
                let answer = tokio::select! {
                    answer = ops::answer(daemon, request) => answer,
                    _ = reader.read_to_end(&mut rest) => return None,
                };
                return Some((answer, false));
            }
            Ok(request) => ops::answer(daemon, request).await,
            Err(error) => refusal(ApiError::invalid(format!("invalid request: {error}"))),
        },
        Err(error) => {
            tracing::debug!(%error, "cannot read a request");
            return None;
        }
    };
    Some((answer, true))
}

/// How long a reader that holds messages has to confirm which it took.
const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `recv` with `confirm`: answers the held messages, then waits on the same
/// connection for the `ack` naming those the client took; the rest (all of
/// them if it hangs up, sends something else or takes too long) stay
/// unread.
async fn held_recv(
    daemon: &Arc<Daemon>,
    recv: Recv,
    reader: &mut BufReader<tokio::io::Take<tokio::net::unix::OwnedReadHalf>>,
    write: &mut OwnedWriteHalf,
) {
    let mut next = String::new();
    // A client that hangs up while the recv waits cancels it.
    let claimed = tokio::select! {
        claimed = claim(daemon, recv) => claimed,
        _ = reader.read_line(&mut next) => return,
    };
    let claim = match claimed {
        Ok((messages, claim)) => {
            if send(write, &ops::encode(&Response::from_result(Ok(messages))))
                .await
                .is_err()
            {
                return;
            }
            claim
        }
        Err(error) => {
            let _ = send(write, &refusal(error)).await;
            return;
        }
    };
    let read = tokio::time::timeout(CONFIRM_WAIT, reader.read_line(&mut next)).await;
    let answer = match (read, serde_json::from_str::<Request>(&next)) {
        (Ok(Ok(n)), Ok(Request::Ack(ack))) if n > 0 => {
            Response::from_result(claim.confirm(&ack.ids).await)
        }
        (Ok(Ok(n)), _) if n > 0 => {
            drop(claim);
            Response::from_result(Err(ApiError::invalid(
                "after recv with confirm, send {\"op\":\"ack\",\"ids\":[…]} with the ids taken",
            )))
        }
        // Hung up or took too long: nothing taken.
        _ => return,
    };
    let _ = send(write, &ops::encode(&answer)).await;
}

/// Writes one line.
async fn send(write: &mut OwnedWriteHalf, line: &[u8]) -> std::io::Result<()> {
    let mut bytes = line.to_vec();
    bytes.push(b'\n');
    write.write_all(&bytes).await
}

fn refusal(error: ApiError) -> Vec<u8> {
    ops::encode(&Response::<()>::from_result(Err(error)))
}

/// Writes a subscription's events, one line each (what is ready together in
/// one write, so a reader sees a backlog as one burst), until the client
/// hangs up or the daemon stops.
async fn stream_events(
    daemon: &Arc<Daemon>,
    request: Subscribe,
    write: &mut OwnedWriteHalf,
    hangup: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(hangup);
    let mut subscription = match subscribe(daemon, request).await {
        Ok(subscription) => subscription,
        Err(error) => {
            let mut bytes = refusal(error);
            bytes.push(b'\n');
            let _ = write.write_all(&bytes).await;
            return;
        }
    };
    loop {
        let first = tokio::select! {
            () = &mut hangup => return,
            event = subscription.next() => event,
        };
        let Some(first) = first else { return };
        let mut batch = ops::encode(&first);
        batch.push(b'\n');
        while let Some(event) = subscription.try_next() {
            batch.extend_from_slice(&ops::encode(&event));
            batch.push(b'\n');
        }
        if write.write_all(&batch).await.is_err() {
            return;
        }
    }
}
