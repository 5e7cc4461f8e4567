//! The API's operations, one module each (status and stop; init; config;
//! whoami and the contact operations; send, state and sent; invite and
//! accept; recv, inbox and ack; subscribe). Each implements [`Run`] for its request type
//! from `agentwire-api`: typed request in, typed answer out. The socket
//! server and the in-process client both call [`Run::run`]; neither sees
//! JSON here.

use std::future::Future;
use std::sync::Arc;

use crate::api::{ApiError, Operation, Request, Response};
use crate::core::Daemon;

pub(crate) mod cards;
mod config;
mod contacts;
pub(crate) mod directory;
pub(crate) mod files;
mod init;
mod pairing;
pub(crate) mod read;
mod send;
mod status;
pub(crate) mod subscribe;
pub(crate) mod tasks;

/// An operation the daemon carries out.
pub trait Run: Operation {
    /// Carries it out.
    fn run(
        self,
        daemon: &Arc<Daemon>,
    ) -> impl Future<Output = Result<Self::Output, ApiError>> + Send;
}

/// Carries out a one-answer request and encodes the response line (without
/// its newline). `subscribe` is not one: the server streams it.
pub(crate) async fn answer(daemon: &Arc<Daemon>, request: Request) -> Vec<u8> {
    async fn line<O: Run>(daemon: &Arc<Daemon>, op: O) -> Vec<u8> {
        encode(&Response::from_result(op.run(daemon).await))
    }
    match request {
        Request::Status(op) => line(daemon, op).await,
        Request::Stop(op) => line(daemon, op).await,
        Request::Init(op) => line(daemon, op).await,
        Request::Config(op) => line(daemon, op).await,
        Request::Whoami(op) => line(daemon, op).await,
        Request::Contacts(op) => line(daemon, op).await,
        Request::Rename(op) => line(daemon, op).await,
        Request::Remove(op) => line(daemon, op).await,
        Request::Permit(op) => line(daemon, op).await,
        Request::Send(op) => line(daemon, op).await,
        Request::State(op) => line(daemon, op).await,
        Request::Sent(op) => line(daemon, op).await,
        Request::Invite(op) => line(daemon, op).await,
        Request::Accept(op) => line(daemon, op).await,
        Request::Recv(op) => line(daemon, op).await,
        Request::Ack(op) => line(daemon, op).await,
        Request::Inbox(op) => line(daemon, op).await,
        Request::Tasks(op) => line(daemon, op).await,
        Request::Task(op) => line(daemon, op).await,
        Request::UpdateTask(op) => line(daemon, op).await,
        Request::Cancel(op) => line(daemon, op).await,
        Request::Stream(op) => line(daemon, op).await,
        Request::Chunks(op) => line(daemon, op).await,
        Request::GetCard(op) => line(daemon, op).await,
        Request::SetCard(op) => line(daemon, op).await,
        Request::Discover(op) => line(daemon, op).await,
        Request::PublishCard(op) => line(daemon, op).await,
        Request::SendFile(op) => line(daemon, op).await,
        Request::Subscribe(_) => encode(&Response::<()>::from_result(Err(ApiError::invalid(
            "subscribe streams events on its own connection",
        )))),
    }
}

/// One JSON line. Encoding plain data cannot fail; if it ever did, the
/// client gets an internal error rather than nothing.
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|error| {
        tracing::error!(%error, "cannot encode an answer");
        br#"{"ok":false,"error":{"code":"internal","message":"cannot encode the answer; see daemon.log"}}"#.to_vec()
    })
}
