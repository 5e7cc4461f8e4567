//! `agentwire bridge`: the daemon's API over HTTP on loopback, for agents
//! that can make HTTP requests but cannot keep a process open.
//!
//! Every request needs `Authorization: Bearer TOKEN`, the token kept in
//! `bridge.token` (0600) in the home. The bridge is an edge: it turns HTTP
//! into daemon requests and daemon answers into JSON responses, nothing more.

use std::net::SocketAddr;
use std::sync::Arc;

use agentwire_api::connect::{Command, Outcome};
use agentwire_daemon::Home;
use agentwire_daemon::api::{self, ApiError, ErrorCode, Kind, Priority};
use agentwire_daemon::client::ClientError;
use agentwire_daemon::{DaemonClient, Run};
use anyhow::Context;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::exit::{CANNOT_START, CONFIG, Failure, WithCode};

/// Longest long-poll the bridge grants, in seconds.
const MAX_WAIT_SECS: u64 = 600;

struct Bridge {
    home: Home,
    token: String,
    identity: Option<String>,
}

/// Shortest token the bridge accepts from `bridge.token`, in characters.
const MIN_TOKEN_CHARS: usize = 32;

/// The largest request body: what fits in one request to the daemon
/// (re-encoded, a body is never longer than it came), less room for the
/// request's other fields.
const MAX_HTTP_BODY: usize = agentwire_api::MAX_REQUEST_BYTES - 4096;

pub(crate) fn run(
    home_flag: Option<&std::path::Path>,
    identity: Option<String>,
    listen: SocketAddr,
    allow_remote: bool,
    json: bool,
) -> Result<(), Failure> {
    if !listen.ip().is_loopback() && !allow_remote {
        return Err(Failure::new(
            CONFIG,
            anyhow::anyhow!(
                "the bridge speaks plain HTTP: on {listen} its token and every message would \
                 cross the network readable by anyone on the way; listen on 127.0.0.1, or put a \
                 TLS proxy in front and pass --allow-remote"
            ),
        ));
    }
    let home = Home::resolve(home_flag).code(CONFIG)?;
    if std::os::unix::net::UnixStream::connect(home.socket()).is_err() {
        crate::daemon_client::start(&home)?;
    }
    let token_path = home.root().join("bridge.token");
    let token = load_or_create_token(&token_path).code(CONFIG)?;
    let runtime = crate::runtime(None)?;
    runtime.block_on(async move {
        let stop = crate::relay_cmd::shutdown_signal();
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))
            .code(CANNOT_START)?;
        let addr = listener.local_addr().code(CANNOT_START)?;
        let url = format!("http://{addr}");
        if !listen.ip().is_loopback() {
            eprintln!(
                "agentwire: warning: the bridge listens on {addr} over plain HTTP; only a TLS \
                 proxy in front keeps its token and messages from being read on the network"
            );
        }
        if json {
            println!(
                "{}",
                json!({"event": "listening", "url": url, "token_file": token_path.display().to_string()})
            );
        } else {
            println!(
                "agentwire bridge on {url}; send `Authorization: Bearer $(cat {})`",
                token_path.display()
            );
        }
        let bridge = Arc::new(Bridge {
            home,
            token,
            identity,
        });
        let app = Router::new()
            .route("/v1/send", post(send))
            .route("/v1/recv", get(recv))
            .route("/v1/inbox", get(inbox))
            .route("/v1/status/{id}", get(status))
            .route("/v1/contacts", get(contacts))
            .route("/v1/op", post(operation))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_HTTP_BODY))
            .with_state(bridge);
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
            .context("the bridge stopped")
            .code(CANNOT_START)
    })
}

/// The token in `bridge.token`: made (random, 0600) when there is none. One
/// that others can read, that is a link or another user's, or that is
/// shorter than [`MIN_TOKEN_CHARS`] is refused with what to do.
fn load_or_create_token(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    if std::fs::symlink_metadata(path).is_ok() {
        agentwire_daemon::home::check_own_file(path)?;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "{shown} has mode {mode:o}: others can read the bridge's token; run `chmod 600 {shown}` \
                 (or delete it: the bridge makes a new one)"
            );
        }
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {shown}"))?
            .trim()
            .to_owned();
        if token.chars().count() < MIN_TOKEN_CHARS {
            anyhow::bail!(
                "{shown} holds a weak token ({} characters; at least {MIN_TOKEN_CHARS}): delete it \
                 and the bridge makes a strong one, or write {MIN_TOKEN_CHARS} or more random characters",
                token.chars().count()
            );
        }
        return Ok(token);
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = agentwire_daemon::home::create_private_new(path)
        .with_context(|| format!("cannot write {shown}"))?;
    file.write_all(token.as_bytes())?;
    Ok(token)
}

/// Any other path: a JSON error naming the routes.
async fn not_found(uri: axum::http::Uri) -> BridgeError {
    BridgeError(
        StatusCode::NOT_FOUND,
        "not_found".into(),
        format!(
            "no route {}; the bridge serves POST /v1/send, GET /v1/recv, GET /v1/inbox, \
             GET /v1/status/ID and GET /v1/contacts",
            uri.path()
        ),
    )
}

/// A known path with the wrong method.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> BridgeError {
    let wanted = if uri.path() == "/v1/send" {
        "POST"
    } else {
        "GET"
    };
    BridgeError(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed".into(),
        format!("{} does not take {method}; use {wanted}", uri.path()),
    )
}

/// A body that is not the JSON asked for: 400, or 413 (`body_too_large`)
/// for one over [`MAX_HTTP_BODY`].
fn json_rejection(rejection: axum::extract::rejection::JsonRejection) -> BridgeError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return BridgeError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large".into(),
            format!(
                "the request body is over {MAX_HTTP_BODY} bytes; a message body is at most {} bytes",
                agentwire_session::message::MAX_BODY_BYTES
            ),
        );
    }
    BridgeError(
        StatusCode::BAD_REQUEST,
        "invalid_request".into(),
        rejection.body_text(),
    )
}

/// An error answer: the daemon's code and message, with a fitting status.
struct BridgeError(StatusCode, String, String);

impl IntoResponse for BridgeError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"error": {"code": self.1, "message": self.2}})),
        )
            .into_response()
    }
}

impl From<ApiError> for BridgeError {
    fn from(error: ApiError) -> BridgeError {
        let status = match error.code {
            ErrorCode::InvalidRequest | ErrorCode::BadName | ErrorCode::BodyTooLarge => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::UnknownPeer
            | ErrorCode::UnknownIdentity
            | ErrorCode::UnknownMessage
            | ErrorCode::NotInitialized => StatusCode::NOT_FOUND,
            ErrorCode::AmbiguousPeer | ErrorCode::NameTaken => StatusCode::CONFLICT,
            ErrorCode::ContactRemoved => StatusCode::GONE,
            ErrorCode::RelayUnreachable => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let code = serde_json::to_value(error.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "internal".into());
        BridgeError(status, code, error.message)
    }
}

impl Bridge {
    fn authorize(&self, headers: &HeaderMap) -> Result<(), BridgeError> {
        use subtle::ConstantTimeEq;
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let ok = presented.len() == self.token.len()
            && bool::from(presented.as_bytes().ct_eq(self.token.as_bytes()));
        if ok {
            Ok(())
        } else {
            Err(BridgeError(
                StatusCode::UNAUTHORIZED,
                "unauthorized".into(),
                "send `Authorization: Bearer TOKEN` with the token from bridge.token in the agentwire home".into(),
            ))
        }
    }

    /// The identity a request acts as: the bridge's own (`--as`), which a
    /// request may name but not change; without one, the request's choice.
    fn identity(&self, asked: Option<String>) -> Result<Option<String>, BridgeError> {
        match (asked, &self.identity) {
            (Some(asked), Some(mine)) if asked != *mine => Err(BridgeError(
                StatusCode::FORBIDDEN,
                "forbidden_identity".into(),
                format!(
                    "this bridge acts as {mine} only (it was started with --as {mine}); \
                     start a bridge without --as to let requests choose"
                ),
            )),
            (asked, mine) => Ok(asked.or_else(|| mine.clone())),
        }
    }

    /// One request to the daemon over its socket.
    async fn call<O: Run>(&self, op: O) -> Result<Json<O::Output>, BridgeError> {
        DaemonClient::socket(self.home.socket())
            .call(op)
            .await
            .map(Json)
            .map_err(|error| match error {
                ClientError::Refused(error) => error.into(),
                other => BridgeError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "daemon_unreachable".into(),
                    format!("{other}; run `agentwire daemon start`"),
                ),
            })
    }
}

macro_rules! dispatch {
    ($($variant:ident),+) => {
        impl Bridge {
            /// Carries out any command of the JSON lines door.
            async fn carry_out(&self, command: Command) -> Result<Outcome, BridgeError> {
                Ok(match command {
                    $( Command::$variant(op) => Outcome::$variant(self.call(op).await?.0), )+
                })
            }
        }
    };
}
agentwire_api::each_command!(dispatch);

/// `POST /v1/op`: any operation of `connect --json` (`{"op": ..., ...}`),
/// answered with `{"op": ..., "result": ...}`.
async fn operation(
    State(bridge): State<Arc<Bridge>>,
    headers: HeaderMap,
    body: Result<Json<Command>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Outcome>, BridgeError> {
    bridge.authorize(&headers)?;
    let Json(mut command) = body.map_err(|e| {
        let mut error = json_rejection(e);
        if error.0 == StatusCode::BAD_REQUEST {
            error.2 = format!("{} (ops: {})", error.2, Command::NAMES.join(", "));
        }
        error
    })?;
    let identity = command.identity_mut();
    *identity = bridge.identity(identity.take())?;
    bridge.carry_out(command).await.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    to: String,
    body: String,
    #[serde(default)]
    kind: Option<Kind>,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    thread: Option<String>,
    #[serde(default)]
    priority: Option<Priority>,
    #[serde(default, rename = "as")]
    identity: Option<String>,
}

async fn send(
    State(bridge): State<Arc<Bridge>>,
    headers: HeaderMap,
    body: Result<Json<SendBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<api::SendOutcome>, BridgeError> {
    bridge.authorize(&headers)?;
    let Json(body) = body.map_err(json_rejection)?;
    let request = api::SendMessage {
        identity: bridge.identity(body.identity)?,
        to: body.to,
        body: body.body,
        kind: body.kind,
        reply_to: body.reply_to,
        thread: body.thread,
        priority: body.priority,
        wait: None,
        wait_ms: None,
    };
    bridge.call(request).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    wait: Option<u64>,
    #[serde(default)]
    max: Option<usize>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default, rename = "as")]
    identity: Option<String>,
}

impl ListQuery {
    /// The long-poll, in milliseconds, at most [`MAX_WAIT_SECS`].
    fn wait_ms(&self) -> u64 {
        self.wait.unwrap_or(0).min(MAX_WAIT_SECS) * 1000
    }
}

fn parse_query(
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ListQuery, BridgeError> {
    query.map(|Query(query)| query).map_err(|e| {
        BridgeError(
            StatusCode::BAD_REQUEST,
            "invalid_request".into(),
            e.body_text(),
        )
    })
}

async fn recv(
    State(bridge): State<Arc<Bridge>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<api::Messages>, BridgeError> {
    bridge.authorize(&headers)?;
    let query = parse_query(query)?;
    let wait_ms = query.wait_ms();
    let request = api::Recv {
        identity: bridge.identity(query.identity)?,
        from: query.from,
        max: query.max,
        wait_ms: Some(wait_ms),
        ..api::Recv::default()
    };
    bridge.call(request).await
}

async fn inbox(
    State(bridge): State<Arc<Bridge>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<api::Messages>, BridgeError> {
    bridge.authorize(&headers)?;
    let query = parse_query(query)?;
    let wait_ms = query.wait_ms();
    let request = api::Inbox {
        identity: bridge.identity(query.identity)?,
        from: query.from,
        max: query.max,
        wait_ms: Some(wait_ms),
    };
    bridge.call(request).await
}

async fn status(
    State(bridge): State<Arc<Bridge>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<api::SentView>, BridgeError> {
    bridge.authorize(&headers)?;
    let request = api::State {
        identity: bridge.identity(None)?,
        id,
        ..api::State::default()
    };
    bridge.call(request).await
}

async fn contacts(
    State(bridge): State<Arc<Bridge>>,
    headers: HeaderMap,
) -> Result<Json<api::ContactList>, BridgeError> {
    bridge.authorize(&headers)?;
    let request = api::Contacts {
        identity: bridge.identity(None)?,
    };
    bridge.call(request).await
}
