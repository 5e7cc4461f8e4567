//! The local API server: a Unix socket (0600) in the home; one request line
//! in, one response line out, per connection.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::api::{ApiError, ErrorCode, MAX_REQUEST_BYTES, Request, Response};
use crate::daemon::Daemon;

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

async fn connection(stream: UnixStream, daemon: Arc<Daemon>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES as u64 + 1));
    let mut line = String::new();
    let response = match reader.read_line(&mut line).await {
        Ok(_) if line.len() > MAX_REQUEST_BYTES => Response::from_result(Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("request longer than {MAX_REQUEST_BYTES} bytes"),
        ))),
        Ok(0) => return,
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(Request::Subscribe { identity }) => {
                let mut rest = Vec::new();
                let hangup = async move {
                    let _ = reader.read_to_end(&mut rest).await;
                };
                if let Err(error) = daemon.subscribe(identity, &mut write, hangup).await {
                    let response = Response::from_result(Err(error));
                    if let Ok(mut bytes) = serde_json::to_vec(&response) {
                        bytes.push(b'\n');
                        let _ = write.write_all(&bytes).await;
                    }
                }
                return;
            }
            Ok(request) if request.waits() => {
                // A client that hangs up while waiting (recv --wait, accept)
                // cancels its request, so no message is claimed for a
                // reader that is gone.
                let mut rest = Vec::new();
                tokio::select! {
                    result = daemon.handle(request) => Response::from_result(result),
                    _ = reader.read_to_end(&mut rest) => return,
                }
            }
            Ok(request) => Response::from_result(daemon.handle(request).await),
            Err(error) => Response::from_result(Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("invalid request: {error}"),
            ))),
        },
        Err(error) => {
            tracing::debug!(%error, "cannot read a request");
            return;
        }
    };
    let Ok(mut bytes) = serde_json::to_vec(&response) else {
        return;
    };
    bytes.push(b'\n');
    let _ = write.write_all(&bytes).await;
}
