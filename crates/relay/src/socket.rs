//! Sockets from accept to close: each counts against the relay's connection
//! limits (global and per IP) from the moment it is accepted, not only once
//! it has become a WebSocket, and one that has not upgraded within the
//! relay's authentication time (`--auth-timeout`, default 10 s) is closed. Without this, sockets that never
//! finish their HTTP request stayed open forever and counted toward no
//! limit: about 1,100 from one address exhausted the process's file
//! descriptors.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use crate::conn::Admission;
use crate::server::Shared;

/// Sockets over the connection limits that are still taken in, for a moment
/// (at most the HTTP phase's time), so that a WebSocket client learns why
/// it is refused (an error frame naming the limit). Beyond these, a socket
/// over the limits is closed at once.
pub(crate) const OVERFLOW_SOCKETS: usize = 64;

/// What one accepted socket holds: its connection slots until the
/// WebSocket connection takes them, and whether it has upgraded.
pub(crate) struct SocketSlot {
    admission: Mutex<Option<Admission>>,
    upgraded: AtomicBool,
    _overflow: Option<OwnedSemaphorePermit>,
}

impl SocketSlot {
    /// The slots, for the WebSocket connection this socket becomes; the
    /// HTTP-phase deadline no longer applies.
    pub(crate) fn upgrade(&self) -> Admission {
        self.upgraded.store(true, Ordering::Release);
        self.admission
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or(Admission {
                global: None,
                ip: None,
            })
    }
}

/// Takes in a socket from `peer`: its slots, or (over a limit) one of the
/// [`OVERFLOW_SOCKETS`]; `None` when it must be closed at once.
pub(crate) fn admit(
    shared: &Shared,
    overflow: &Arc<Semaphore>,
    peer: std::net::IpAddr,
) -> Option<Arc<SocketSlot>> {
    let admission = Admission {
        global: shared.connections.clone().try_acquire_owned().ok(),
        ip: shared.ip_connections.try_acquire(peer),
    };
    let over = admission.global.is_none() || admission.ip.is_none();
    let overflow = if over {
        let Ok(permit) = overflow.clone().try_acquire_owned() else {
            shared.metrics.reject("too_many_sockets");
            return None;
        };
        Some(permit)
    } else {
        None
    };
    Some(Arc::new(SocketSlot {
        admission: Mutex::new(Some(admission)),
        upgraded: AtomicBool::new(false),
        _overflow: overflow,
    }))
}

/// A socket that holds its [`SocketSlot`] and is closed (reads fail with
/// `TimedOut`) if it has not upgraded within its HTTP phase's time (a plain
/// HTTP client, of `/health` or `/metrics`, is closed after it too).
pub(crate) struct Admitted<S> {
    inner: S,
    slot: Arc<SocketSlot>,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> Admitted<S> {
    pub(crate) fn new(inner: S, slot: Arc<SocketSlot>, http_phase: Duration) -> Self {
        Self {
            inner,
            slot,
            deadline: Some(Box::pin(tokio::time::sleep(http_phase))),
        }
    }

    pub(crate) fn slot(&self) -> &Arc<SocketSlot> {
        &self.slot
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Admitted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = &mut this.deadline {
            if this.slot.upgraded.load(Ordering::Acquire) {
                this.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no WebSocket upgrade within the HTTP phase's time",
                )));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Admitted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
