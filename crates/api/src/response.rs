//! Answers: what each operation returns, as plain data. The JSON of each is
//! what `--json`, `connect --json`, the bridge and MCP's structured content
//! show.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::types::{ContactState, DeliveryState, Kind, Priority, TaskRole, TaskState, Via};

/// `status`: the daemon's health and counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DaemonStatus {
    /// Always true (a daemon that answers runs).
    pub running: bool,
    /// Its process id.
    pub pid: u32,
    /// Its home directory.
    pub home: String,
    /// The relay URL, once known.
    pub relay: Option<String>,
    /// Whether the relay runs inside the daemon on loopback.
    pub local_relay: bool,
    /// Each identity.
    pub identities: Vec<IdentityStatus>,
    /// Messages waiting for the relay, all identities.
    pub queued: u64,
    /// Envelopes dropped because their sender is not a contact.
    pub dropped_non_contact: u64,
    /// Envelopes dropped because they did not decrypt.
    pub dropped_undecryptable: u64,
    /// Messages refused because their sender lacks the permission for their
    /// kind (each answered `rejected`).
    pub refused_not_permitted: u64,
    /// Invites of ours redeemed since the daemon started (new contacts).
    pub invites_redeemed: u64,
}

/// One identity in `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityStatus {
    /// Its name.
    pub name: String,
    /// The first 8 hex digits of its key.
    pub short_id: String,
    /// Why it is not connected to its relay, while it is not.
    pub relay_error: Option<String>,
    /// Messages waiting for the relay.
    pub queued: u64,
    /// Why the relay last declined one of them, until the outbox drains.
    pub queued_because: Option<String>,
    /// Unread messages.
    pub unread: u64,
}

/// `config`: the home's relay settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Settings {
    /// The relay URL; `None` while the daemon runs its own on loopback.
    pub relay: Option<String>,
    /// Whether an access token is set (the token itself is never shown).
    pub relay_token: bool,
    /// Whether certificates besides the public roots are trusted for it.
    pub relay_ca: bool,
    /// How long read messages (and ended sent ones) are kept: a duration
    /// such as `30days`, or `forever`.
    pub retention: String,
    /// Whether this call changed anything.
    pub changed: bool,
}

/// `stop`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Stopping {
    /// Always true.
    pub stopping: bool,
}

/// `init`: the new identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Created {
    /// Its name.
    pub name: String,
    /// Its key, hex.
    pub address: String,
    /// The first 8 hex digits of its key.
    pub short_id: String,
    /// The identities of the same home, now its contacts.
    pub siblings: Vec<String>,
}

/// `whoami`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityView {
    /// Its name.
    pub name: String,
    /// Its key, hex.
    pub address: String,
    /// The first 8 hex digits of its key.
    pub short_id: String,
}

/// `contacts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContactList {
    /// By petname.
    pub contacts: Vec<ContactView>,
}

/// A contact (also `accept`'s answer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContactView {
    /// Its petname here.
    pub name: String,
    /// Whether it can be written to.
    pub state: ContactState,
    /// Its key, hex.
    pub address: String,
    /// The first 8 hex digits of its key.
    pub short_id: String,
    /// How it became a contact.
    pub via: Via,
    /// What it may send to us (`chat`, `task`, `file`); this daemon refuses
    /// the rest.
    pub permissions: Vec<String>,
    /// When, Unix ms.
    pub created_at_ms: u64,
    /// Messages the contact sealed that have not arrived although a later one
    /// has (each message is numbered inside the encryption): lost on the way
    /// (a relay that dropped them), or still coming. Only `contacts` fills it
    /// in; elsewhere it is 0.
    #[serde(default)]
    pub missing: u64,
}

/// `contacts rename`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Renamed {
    /// The old petname.
    pub renamed: String,
    /// The new one.
    pub to: String,
}

/// `contacts remove`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Removed {
    /// The petname it had.
    pub removed: String,
    /// Whether the contact is told (an `unpair` message is queued to it):
    /// false for a contact that had removed us, or that had no session yet.
    pub told: bool,
}

/// `send` without a wait: the message is durable in the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Queued {
    /// Its id.
    pub id: String,
    /// The contact's petname.
    pub to: String,
    /// `queued`.
    pub state: DeliveryState,
    /// Its priority.
    pub priority: Priority,
}

/// `send` with a wait: where the message got to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Waited {
    /// The message and its state.
    #[serde(flatten)]
    pub sent: SentView,
    /// Whether it reached the wanted state in time.
    pub reached: bool,
    /// The state waited for.
    pub wanted: DeliveryState,
    /// When it did not get there: what holds it up, if the daemon knows
    /// (the relay link is down, the relay declined it for now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_up_by: Option<String>,
}

/// What `send` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SendOutcome {
    /// It waited for a state.
    Waited(Waited),
    /// It returned once queued.
    Queued(Queued),
}

impl SendOutcome {
    /// The message id.
    pub fn id(&self) -> &str {
        match self {
            SendOutcome::Waited(waited) => &waited.sent.id,
            SendOutcome::Queued(queued) => &queued.id,
        }
    }

    /// Its state when the answer was made.
    pub fn state(&self) -> DeliveryState {
        match self {
            SendOutcome::Waited(waited) => waited.sent.state,
            SendOutcome::Queued(queued) => queued.state,
        }
    }
}

/// Who a sent message is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Recipient {
    /// Its petname; `None` for a removed contact.
    pub name: Option<String>,
    /// The first 8 hex digits of its key.
    pub short_id: String,
}

/// A sent message and its delivery state (`state`, `sent`, state events).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SentView {
    /// Its id.
    pub id: String,
    /// Its recipient.
    pub to: Recipient,
    /// Its kind.
    pub kind: Kind,
    /// Where it is.
    pub state: DeliveryState,
    /// When it was sent, Unix ms.
    pub sent_at_ms: u64,
    /// When its state last changed, Unix ms.
    pub updated_at_ms: u64,
    /// When it was seen to reach `relayed`, Unix ms; absent before. A later
    /// state learnt first fills the earlier ones with its own time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relayed_at_ms: Option<u64>,
    /// When it was seen to reach `delivered`, Unix ms; absent before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at_ms: Option<u64>,
    /// When it was seen to reach `read`, Unix ms; absent before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at_ms: Option<u64>,
    /// Why the recipient refused it (then it is `failed`): e.g. a kind the
    /// contact does not accept from you, or a file it did not keep. From the
    /// contact: untrusted text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Still `relayed` half as long again as the relay keeps an undelivered
    /// envelope: by then the recipient should have taken it, or the relay
    /// should have said it expired. A relay that dropped it without a word
    /// looks like this. Absent (false) otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overdue: bool,
}

/// A task, from either side (`tasks`, `task`, `update_task`, `cancel`, task
/// events). Field names follow A2A's where they overlap (`id`, `state`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskView {
    /// Its id: the id of the task message.
    pub id: String,
    /// Which side we are on.
    pub role: TaskRole,
    /// The other side: the worker when we asked, the requester when given.
    pub peer: Recipient,
    /// Where it is.
    pub state: TaskState,
    /// The task's text, cut to its first 200 characters.
    pub summary: String,
    /// Why it is where it is (failed, rejected, input-required), from the
    /// worker; untrusted text from that contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The result message's id, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// When it was sent or arrived, Unix ms.
    pub created_at_ms: u64,
    /// When its state last changed, Unix ms.
    pub updated_at_ms: u64,
}

/// `send_file`: the file is queued (its parts, then its offer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileSent {
    /// The offer message's id: `status` follows it; `delivered` means the
    /// contact's daemon checked and kept the file.
    pub id: String,
    /// The contact's petname.
    pub to: String,
    /// The file's name as sent.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// How many parts it travels in.
    pub parts: u64,
    /// Parts queued by this call (fewer than `parts` when an earlier,
    /// interrupted send had queued the others).
    pub queued_now: u64,
}

/// A file that arrived, as a message shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileView {
    /// The name the sender gave it (untrusted; the saved name is safe).
    pub name: String,
    /// Where it was saved (received) or read from (sent).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, hex (checked on arrival).
    pub sha256: String,
}

/// An identity's card: what it says of itself to its contacts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CardView {
    /// How it presents itself.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Capability tags.
    pub capabilities: Vec<String>,
    /// Whether it takes tasks.
    pub takes_tasks: bool,
}

/// `set_card`: the new card and the contacts it is sent to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CardSet {
    /// The card now.
    pub card: CardView,
    /// The petnames of the contacts it was queued for.
    pub sent_to: Vec<String>,
}

/// One contact found by `discover`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FoundContact {
    /// Its petname here.
    pub name: String,
    /// The first 8 hex digits of its key.
    pub short_id: String,
    /// Its card, once it sent one (what it says of itself: untrusted).
    pub card: Option<CardView>,
    /// Whether its daemon was heard from in the last minute.
    pub online: bool,
    /// When its daemon was last heard from since this daemon started, Unix
    /// ms.
    pub last_seen_ms: Option<u64>,
}

/// `discover`: the matching contacts, online ones first (or, with
/// `relay`, the matching listings of the relay's directory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Found {
    /// The contacts.
    pub contacts: Vec<FoundContact>,
    /// The relay's listings, newest first (only with `relay`). Each one
    /// was checked: signed by its key for this relay, its card's
    /// capabilities as listed, its invite made by that key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listed: Vec<ListedIdentity>,
}

/// One identity found in the relay's directory.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListedIdentity {
    /// Its key, hex (64 digits).
    pub key: String,
    /// The first 8 hex digits of its key.
    pub short_id: String,
    /// Its card (what it says of itself: untrusted).
    pub card: CardView,
    /// The invite to pair with it: `accept` it.
    pub invite: String,
    /// What the invite lets the one who accepts it send.
    pub permissions: Vec<String>,
    /// When it published the listing, Unix ms.
    pub published_at_ms: u64,
    /// When the listing and its invite lapse, Unix ms.
    pub expires_at_ms: u64,
    /// Its petname here, when it is a contact already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
}

impl std::fmt::Debug for ListedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListedIdentity")
            .field("short_id", &self.short_id)
            .field("card", &self.card)
            .field("invite", &"<redacted>")
            .field("published_at_ms", &self.published_at_ms)
            .finish_non_exhaustive()
    }
}

/// `publish_card`: what the relay's directory now says of this identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Listing {
    /// The relay whose directory it is.
    pub relay: String,
    /// Whether the identity is listed now (false after a withdrawal).
    pub listed: bool,
    /// The capabilities it is listed under.
    pub capabilities: Vec<String>,
    /// What whoever pairs through the listing may send.
    pub permissions: Vec<String>,
    /// When the listing lapses unless published again, Unix ms (0 when
    /// withdrawn).
    pub expires_at_ms: u64,
}

/// `stream`: the piece's place in the task's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Streamed {
    /// The task id.
    pub task: String,
    /// The piece's place: 0, 1, 2, ...
    pub seq: u32,
}

/// A piece of a task's output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChunkView {
    /// The task id.
    pub task: String,
    /// Its place: 0, 1, 2, ...
    pub seq: u32,
    /// The text (from the worker: untrusted).
    pub text: String,
}

impl std::fmt::Debug for ChunkView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkView")
            .field("task", &self.task)
            .field("seq", &self.seq)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .finish()
    }
}

/// `chunks`: the task as it is, and its pieces of output in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChunkList {
    /// The task.
    pub task: TaskView,
    /// The pieces after the one asked from, in order.
    pub chunks: Vec<ChunkView>,
}

/// `tasks`: newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskList {
    /// The tasks.
    pub tasks: Vec<TaskView>,
}

/// `sent`: newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SentList {
    /// The messages.
    pub messages: Vec<SentView>,
}

/// `invite`: the token to hand over. `Debug` hides it (anyone holding it can
/// pair with this identity once).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InviteView {
    /// The `aw1:` token.
    pub invite: String,
    /// When it stops working, Unix ms.
    pub expires_at_ms: u64,
    /// The relay it is for.
    pub relay: String,
    /// What the acceptor may send (`chat`, `task`, `file`).
    pub permissions: Vec<String>,
    /// The petname whoever redeems it gets here, if the inviter chose one.
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub for_name: Option<String>,
}

impl std::fmt::Debug for InviteView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteView")
            .field("invite", &"<redacted>")
            .field("expires_at_ms", &self.expires_at_ms)
            .field("relay", &self.relay)
            .field("permissions", &self.permissions)
            .field("for_name", &self.for_name)
            .finish()
    }
}

/// `recv` and `inbox`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Messages {
    /// Urgent first, then normal, then low, the senders taking turns within
    /// each.
    pub messages: Vec<MessageView>,
    /// `inbox` only: how many are unread in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<u64>,
}

/// A message's sender, as the daemon verified it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Sender {
    /// The contact's petname here; `None` if it was removed since.
    pub name: Option<String>,
    /// The first 8 hex digits of its key.
    pub short_id: String,
    /// Its key, hex.
    pub address: String,
    /// Always true: set from the session that decrypted the message.
    pub verified: bool,
}

/// A received message. The sender is verified; the body is untrusted content
/// from that sender. `Debug` shows the body's length, not the body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MessageView {
    /// Its id.
    pub id: String,
    /// Who sent it.
    pub from: Sender,
    /// Its kind.
    pub kind: Kind,
    /// Its priority.
    pub priority: Priority,
    /// The sender's clock, Unix ms.
    pub sent_at_ms: u64,
    /// When this daemon stored it, Unix ms.
    pub stored_at_ms: u64,
    /// What it answers.
    pub reply_to: Option<String>,
    /// Its thread.
    pub thread: Option<String>,
    /// The first message of the chain of replies it belongs to (set when it
    /// is a reply).
    #[serde(default)]
    pub chain: Option<String>,
    /// How many replies lead from the chain's first message to this one (0
    /// when it is not a reply). `serve` answers nothing past `--max-hops`.
    #[serde(default)]
    pub hops: u8,
    /// For a file: what it is and where it was saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileView>,
    /// The content.
    pub body: String,
}

impl std::fmt::Debug for MessageView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageView")
            .field("id", &self.id)
            .field("from", &self.from)
            .field("kind", &self.kind)
            .field("priority", &self.priority)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish_non_exhaustive()
    }
}

/// `ack`: the ids taken by this call (not those another reader took first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Acked {
    /// The ids.
    pub acked: Vec<String>,
}
