//! Requests: one struct per operation, and [`Request`], the enum of them all
//! as it travels on the daemon's socket (`{"op": NAME, ...fields}`).
//!
//! Each operation names its answer type through [`Operation`], so a client
//! gets a typed answer back and never reads JSON by key.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::response::{
    Acked, CardSet, CardView, ChunkList, ContactList, ContactView, Created, DaemonStatus, FileSent,
    Found, IdentityView, InviteView, Listing, Messages, Removed, Renamed, SendOutcome, SentList,
    SentView, Settings, Stopping, Streamed, TaskList, TaskView,
};
use crate::types::{DeliveryState, Kind, Priority, TaskState};

/// An operation: a request with a typed answer.
pub trait Operation: Into<Request> + Serialize + Send + 'static {
    /// What the daemon answers.
    type Output: Serialize + DeserializeOwned + Send + 'static;
}

macro_rules! operations {
    ($( $(#[$meta:meta])* $variant:ident($op:ident) => $output:ty, $name:literal; )+) => {
        /// A request to the daemon. `Debug` shows only the operation: bodies
        /// and invite tokens stay out of logs.
        #[derive(Clone, Serialize, Deserialize, JsonSchema)]
        #[serde(tag = "op", rename_all = "snake_case")]
        pub enum Request {
            $( $(#[$meta])* $variant($op), )+
            /// Stream [`crate::Event`]s on this connection until it closes.
            Subscribe(Subscribe),
        }

        impl Request {
            /// The operation's name, as in `op`.
            pub fn op(&self) -> &'static str {
                match self {
                    $( Request::$variant(_) => $name, )+
                    Request::Subscribe(_) => "subscribe",
                }
            }
        }

        $(
            impl From<$op> for Request {
                fn from(op: $op) -> Request {
                    Request::$variant(op)
                }
            }

            impl Operation for $op {
                type Output = $output;
            }
        )+
    };
}

operations! {
    /// Daemon health and counters.
    Status(Status) => DaemonStatus, "status";
    /// Stop the daemon.
    Stop(Stop) => Stopping, "stop";
    /// Create an identity (the first one also picks the relay).
    Init(Init) => Created, "init";
    /// Show or change the home's relay settings.
    Config(Configure) => Settings, "config";
    /// Who an identity is.
    Whoami(Whoami) => IdentityView, "whoami";
    /// An identity's contacts.
    Contacts(Contacts) => ContactList, "contacts";
    /// Rename a contact.
    Rename(Rename) => Renamed, "rename";
    /// Remove a contact.
    Remove(Remove) => Removed, "remove";
    /// Grant or take back what a contact may send us.
    Permit(Permit) => ContactView, "permit";
    /// Send a message.
    Send(SendMessage) => SendOutcome, "send";
    /// The delivery state of one sent message, optionally waiting for one.
    State(State) => SentView, "state";
    /// Recent sent messages with their states.
    Sent(Sent) => SentList, "sent";
    /// Make an invite.
    Invite(Invite) => InviteView, "invite";
    /// Accept an invite.
    Accept(Accept) => ContactView, "accept";
    /// Take unread messages (mark them read).
    Recv(Recv) => Messages, "recv";
    /// Take the named unread messages.
    Ack(Ack) => Acked, "ack";
    /// Show unread messages without taking them.
    Inbox(Inbox) => Messages, "inbox";
    /// Tasks both ways, newest first.
    Tasks(Tasks) => TaskList, "tasks";
    /// One task, optionally waiting until it ends.
    Task(Task) => TaskView, "task";
    /// The worker moves a task it was given (working, done, failed, ...).
    UpdateTask(UpdateTask) => TaskView, "update_task";
    /// The requester stops a task it asked for.
    Cancel(Cancel) => TaskView, "cancel";
    /// The worker streams a piece of a task's output to its requester.
    Stream(Stream) => Streamed, "stream";
    /// A task's streamed output, optionally waiting for more.
    Chunks(Chunks) => ChunkList, "chunks";
    /// This identity's card.
    GetCard(GetCard) => CardView, "card";
    /// Change this identity's card; contacts are sent the new one.
    SetCard(SetCard) => CardSet, "set_card";
    /// Contacts by capability, with whether they are online.
    Discover(Discover) => Found, "discover";
    /// List this identity's card in its relay's directory, or withdraw it.
    PublishCard(PublishCard) => Listing, "publish_card";
    /// Send a file to a contact.
    SendFile(SendFile) => FileSent, "send_file";
}

impl Request {
    /// Whether the request may wait (for an arrival, an answer or a state);
    /// the daemon abandons such a request when its client hangs up, so a
    /// client keeps its side open until it has the answer.
    pub fn waits(&self) -> bool {
        match self {
            Request::Recv(Recv { wait_ms, .. }) | Request::Inbox(Inbox { wait_ms, .. }) => {
                wait_ms.is_some_and(|ms| ms > 0)
            }
            Request::Send(send) => send.wait.is_some(),
            Request::State(state) => state.wait.is_some(),
            Request::Task(task) => task.wait_ms.is_some_and(|ms| ms > 0),
            Request::Chunks(chunks) => chunks.wait_ms.is_some_and(|ms| ms > 0),
            Request::Discover(discover) => discover.wait_ms != Some(0),
            Request::Accept(_)
            | Request::Invite(_)
            | Request::PublishCard(_)
            | Request::Subscribe(_) => true,
            _ => false,
        }
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Request({})", self.op())
    }
}

/// `status`: daemon health and counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Status {}

/// `stop`: stop the daemon.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stop {}

/// `init`: create an identity.
#[derive(Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Init {
    /// Its name (default `agent`, or `agent-N` when taken).
    #[serde(default)]
    pub name: Option<String>,
    /// Relay URL; without it, a relay runs inside the daemon on loopback.
    #[serde(default)]
    pub relay: Option<String>,
    /// The relay's access token, if it requires one.
    #[serde(default)]
    pub relay_token: Option<String>,
    /// Certificates (PEM) to trust for the relay besides the public roots:
    /// its self-signed certificate or a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_ca: Option<String>,
    /// Create the identity without first checking that the relay answers
    /// and takes the token (e.g. the relay is down for now).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_check: bool,
}

impl std::fmt::Debug for Init {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Init")
            .field("name", &self.name)
            .field("relay", &self.relay)
            .field(
                "relay_token",
                &self.relay_token.as_ref().map(|_| "<redacted>"),
            )
            .field("relay_ca", &self.relay_ca.is_some())
            .field("no_check", &self.no_check)
            .finish()
    }
}

/// `config`: show the home's relay settings, or change them. The daemon
/// checks a new relay (it answers, TLS or not as its URL says, and takes the
/// token) before keeping it, and reconnects every identity to it.
#[derive(Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Configure {
    /// A new relay URL (`ws://` or `wss://`).
    #[serde(default)]
    pub relay: Option<String>,
    /// A new access token for the relay.
    #[serde(default)]
    pub relay_token: Option<String>,
    /// Forget the access token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_relay_token: bool,
    /// New certificates (PEM) to trust for the relay besides the public
    /// roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_ca: Option<String>,
    /// Trust only the public roots again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_relay_ca: bool,
    /// Keep the new settings without checking the relay first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_check: bool,
    /// How long a message is kept once it was read (and a sent one once it
    /// ended): a duration (`30d`, `12h`, at least `1s`) or `forever`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
}

impl std::fmt::Debug for Configure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configure")
            .field("relay", &self.relay)
            .field(
                "relay_token",
                &self.relay_token.as_ref().map(|_| "<redacted>"),
            )
            .field("clear_relay_token", &self.clear_relay_token)
            .field("relay_ca", &self.relay_ca.is_some())
            .field("clear_relay_ca", &self.clear_relay_ca)
            .field("no_check", &self.no_check)
            .field("retention", &self.retention)
            .finish()
    }
}

/// Declares a request that names only the identity.
macro_rules! identity_only {
    ($( $(#[$meta:meta])* $name:ident; )+) => {$(
        $(#[$meta])*
        #[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Identity name (default: the home's first).
            #[serde(rename = "as", default)]
            #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
            pub identity: Option<String>,
        }
    )+};
}

identity_only! {
    /// `whoami`: who an identity is.
    Whoami;
    /// `contacts`: an identity's contacts.
    Contacts;
    /// `subscribe`: stream events until the connection closes.
    Subscribe;
}

/// `rename`: give a contact another petname.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// Petname or unique key prefix.
    pub peer: String,
    /// New petname.
    pub new_name: String,
}

/// `remove`: forget a contact.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Remove {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// Petname or unique key prefix.
    pub peer: String,
}

/// `permit`: grant (`allow: true`) or take back what a contact may send to
/// this identity. The receiving daemon enforces it: a message of a kind the
/// contact may not send is refused and never reaches the agent.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Permit {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// Petname or unique key prefix.
    pub peer: String,
    /// Permissions: `chat`, `task`, `file` (or `all`).
    #[schemars(length(min = 1, max = 8))]
    pub permissions: Vec<String>,
    /// Grant them (true) or take them back (false).
    pub allow: bool,
}

/// `send`: queue a message for a contact.
#[derive(Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// Petname or unique key prefix.
    pub to: String,
    /// The body, UTF-8.
    pub body: String,
    /// Kind (default `chat`).
    #[serde(default)]
    pub kind: Option<Kind>,
    /// Id of the message this answers.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Id of the thread this belongs to.
    #[serde(default)]
    pub thread: Option<String>,
    /// Priority (default `normal`).
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Wait until the message is `relayed`, `delivered` or `read`.
    #[serde(default)]
    pub wait: Option<DeliveryState>,
    /// How long to wait (default 30 s).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

impl std::fmt::Debug for SendMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendMessage")
            .field("identity", &self.identity)
            .field("to", &self.to)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .field("kind", &self.kind)
            .field("priority", &self.priority)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// `state`: one sent message's delivery state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// The message id.
    pub id: String,
    /// Wait until it is `relayed`, `delivered` or `read` (or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<DeliveryState>,
    /// How long to wait (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// `tasks`: tasks both ways.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tasks {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// At most this many (default 100, at most 100 000).
    #[serde(default)]
    pub max: Option<usize>,
}

/// `task`: one task, either side.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// The task id.
    pub id: String,
    /// Wait up to this long until it ends or needs input (at most 10 min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// `update_task`: the worker reports on a task it was given. `completed`
/// sends `result` as the result message; the other states send a status
/// with `detail`.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTask {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// The task id.
    pub id: String,
    /// `working`, `input-required`, `completed`, `failed` or `rejected`.
    pub state: TaskState,
    /// Why (for failed, rejected, input-required), at most 4096 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The result, for `completed` (at most 128 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// `stream`: the worker sends the next piece of a task's output while it
/// runs (a `chunk` message; the daemon numbers them). The result, when the
/// task completes, still carries the whole output.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// The task id (one you were given, not finished).
    pub id: String,
    /// The piece, 1 byte to 16 KiB.
    #[schemars(length(min = 1, max = 16384))]
    pub text: String,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("text", &self.text.len())
            .finish()
    }
}

/// `chunks`: the pieces of a task's output streamed so far, after `after`.
/// With `wait_ms`, waits until there is one or the task ends (or needs
/// input).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Chunks {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// The task id.
    pub id: String,
    /// Only the pieces after this one (their `seq`).
    #[serde(default)]
    pub after: Option<u32>,
    /// How long to wait for a piece.
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// `send_file`: send the file at `path` (absolute; read by the daemon) to a
/// contact, as encrypted parts and then an offer with its size and SHA-256.
/// Sending the same file to the same contact again continues where an
/// interrupted send stopped.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendFile {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// Petname or unique key prefix.
    pub to: String,
    /// The file, an absolute path.
    pub path: String,
    /// Refuse a file larger than this (default 64 MiB, at most 1 GiB).
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// The name to offer it under (default the file's own name; at most 255
    /// bytes). The recipient makes any name safe before using it.
    #[serde(default)]
    pub name: Option<String>,
}

/// `card`: this identity's card as its contacts see it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetCard {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
}

/// `set_card`: change the fields given (the others stay); every contact is
/// sent the new card, inside the encryption.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCard {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// How it presents itself (one line, at most 64 bytes).
    #[serde(default)]
    pub name: Option<String>,
    /// What it does (at most 1024 bytes).
    #[serde(default)]
    pub description: Option<String>,
    /// Capability tags (replacing the old ones): at most 32, each 1 to 48 of
    /// a-z, 0-9, '-', '_', '.', '+'.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub capabilities: Option<Vec<String>>,
    /// Whether it takes tasks.
    #[serde(default)]
    pub takes_tasks: Option<bool>,
}

/// `discover`: contacts whose card has the capability (all contacts
/// without one), with whether each is online. Contacts not heard from in
/// the last minute are asked (a `ping`) and waited for up to `wait_ms`
/// (default 2 s; 0 asks nobody).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Discover {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// Only contacts with this capability tag.
    #[serde(default)]
    pub capability: Option<String>,
    /// How long to wait for contacts to answer (at most 30 s).
    #[serde(default)]
    #[schemars(range(max = 30_000))]
    pub wait_ms: Option<u64>,
    /// Look in the relay's directory instead of the contacts: identities
    /// that published their card there (`publish_card`), each with an
    /// invite to pair with it.
    #[serde(default)]
    pub relay: bool,
}

/// `publish_card`: list this identity in its relay's opt-in directory
/// under its card's capabilities, with a fresh invite (valid 30 days, a
/// new one after each redemption) for whoever finds it; or withdraw the
/// listing (its invite stops working).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishCard {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// What whoever pairs through the listing may send: any of "chat",
    /// "task", "file" (default just "chat").
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// Withdraw the listing instead.
    #[serde(default)]
    pub withdraw: bool,
}

impl std::fmt::Debug for UpdateTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateTask")
            .field("id", &self.id)
            .field("state", &self.state)
            .field("detail", &self.detail.as_ref().map(String::len))
            .field("result", &self.result.as_ref().map(String::len))
            .finish()
    }
}

/// `cancel`: the requester stops a task it asked for.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// The task id.
    pub id: String,
}

/// `sent`: recent sent messages.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sent {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// At most this many (default 100).
    #[serde(default)]
    pub max: Option<usize>,
}

/// `invite`: make a single-use invite.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// How long it stays valid (default 24 h; 1 s to 30 days).
    #[serde(default)]
    #[schemars(range(min = 1000, max = 2_592_000_000u64))]
    pub ttl_ms: Option<u64>,
    /// What the new contact may send: `chat`, `task`, `file`, `all`
    /// (default all).
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub allow: Option<Vec<String>>,
    /// The petname the new contact gets here, whatever name it suggests.
    #[serde(rename = "for", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub for_name: Option<String>,
}

/// `accept`: redeem an invite.
#[derive(Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// The `aw1:` token.
    pub token: String,
    /// Petname for the inviter (default: the name it suggests).
    #[serde(default)]
    pub name: Option<String>,
    /// How long to wait for the inviter's answer (default 30 s).
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// What the inviter may send to us: `chat`, `task`, `file`, `all`
    /// (default all).
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub allow: Option<Vec<String>>,
}

impl std::fmt::Debug for Accept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accept")
            .field("identity", &self.identity)
            .field("token", &"<redacted>")
            .field("name", &self.name)
            .field("wait_ms", &self.wait_ms)
            .field("allow", &self.allow)
            .finish()
    }
}

/// `recv`: take unread messages.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recv {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// Only from this contact.
    #[serde(default)]
    pub from: Option<String>,
    /// At most this many (default 100).
    #[serde(default)]
    pub max: Option<usize>,
    /// Wait up to this long for a first message.
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// Hold the messages for this connection instead of taking them: the
    /// client then sends `{"op":"ack","ids":[…]}` on the same connection
    /// with the ids it really took (e.g. wrote out), and gets `acked`; the
    /// rest stay unread, as do all of them if it hangs up first. Without
    /// it, the messages are marked read before the answer is written: a
    /// reader that must not lose one (a daemon stopped in between) asks
    /// with `confirm`. With it, a message may come twice (the daemon
    /// stopped before the ack was recorded): the reader keeps what it took
    /// by id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirm: bool,
    /// Only these messages (ids), those still unread and not held by
    /// another reader; `from` and `wait_ms` do not apply. At most 1000.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
}

/// `inbox`: show unread messages, taking none.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inbox {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// Only from this contact.
    #[serde(default)]
    pub from: Option<String>,
    /// At most this many (default 100).
    #[serde(default)]
    pub max: Option<usize>,
    /// Wait up to this long for a first unread message.
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// `ack`: take the named unread messages.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// Identity name.
    #[serde(rename = "as", default)]
    #[schemars(pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub identity: Option<String>,
    /// Message ids.
    pub ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_keep_their_wire_shape() {
        let send: Request = serde_json::from_str(
            r#"{"op":"send","as":"planner","to":"coder","body":"hi","priority":"urgent"}"#,
        )
        .unwrap();
        let Request::Send(send) = send else {
            panic!("not a send")
        };
        assert_eq!(send.identity.as_deref(), Some("planner"));
        assert_eq!(send.priority, Some(Priority::Urgent));
        let status: Request = serde_json::from_str(r#"{"op":"status"}"#).unwrap();
        assert_eq!(status.op(), "status");
        let back = serde_json::to_value(Request::from(Recv {
            identity: Some("a".into()),
            ..Recv::default()
        }))
        .unwrap();
        assert_eq!(back["op"], "recv");
        assert_eq!(back["as"], "a");
    }

    #[test]
    fn unknown_fields_and_values_are_refused() {
        for line in [
            r#"{"op":"send","to":"x","body":"y","colour":"red"}"#,
            r#"{"op":"send","to":"x","body":"y","kind":"redeem"}"#,
            r#"{"op":"status","x":1}"#,
            r#"{"op":"launch"}"#,
        ] {
            assert!(serde_json::from_str::<Request>(line).is_err(), "{line}");
        }
    }

    #[test]
    fn debug_hides_bodies_and_tokens() {
        let send = SendMessage {
            to: "coder".into(),
            body: "the secret plan".into(),
            ..SendMessage::default()
        };
        assert!(!format!("{send:?}").contains("secret"));
        assert!(!format!("{:?}", Request::from(send)).contains("secret"));
        let accept = Accept {
            identity: None,
            token: "aw1:abc".into(),
            ..Accept::default()
        };
        assert!(!format!("{accept:?}").contains("aw1"));
    }
}
