//! agentwire's local API as Rust types: the requests every door (CLI,
//! `connect --json`, the HTTP bridge, MCP, the Rust library) makes of the
//! daemon, the answers it gets, and the events of a subscription.
//!
//! This crate does no IO. The daemon works on these types; JSON exists only
//! where bytes leave a process (the daemon's socket, `--json`, the bridge,
//! MCP), and there it is exactly the serde form of these types. Each
//! operation is a struct implementing [`Operation`], which names its answer:
//!
//! ```
//! use agentwire_api::{Operation, Request, SendMessage, Priority};
//!
//! let send = SendMessage {
//!     to: "coder".into(),
//!     body: "run the tests".into(),
//!     priority: Some(Priority::Urgent),
//!     ..SendMessage::default()
//! };
//! let line = serde_json::to_string(&Request::from(send)).unwrap();
//! assert!(line.starts_with(r#"{"op":"send","as":null,"to":"coder""#));
//! ```
//!
//! The vocabularies ([`DeliveryState`], [`ContactState`], [`Via`], [`Kind`],
//! [`Priority`]) are defined once here; in particular the order of delivery
//! states and what may replace what ([`DeliveryState::may_become`]).

pub mod connect;
mod error;
mod event;
mod request;
mod response;
mod types;

pub use error::{ApiError, ErrorCode};
pub use event::Event;
pub use request::{
    Accept, Ack, Cancel, Chunks, Configure, Contacts, Discover, GetCard, Inbox, Init, Invite,
    Operation, Permit, PublishCard, Recv, Remove, Rename, Request, SendFile, SendMessage, Sent,
    SetCard, State, Status, Stop, Stream, Subscribe, Task, Tasks, UpdateTask, Whoami,
};
pub use response::{
    Acked, CardSet, CardView, ChunkList, ChunkView, ContactList, ContactView, Created,
    DaemonStatus, FileSent, FileView, Found, FoundContact, IdentityStatus, IdentityView,
    InviteView, ListedIdentity, Listing, MessageView, Messages, Queued, Recipient, Removed,
    Renamed, SendOutcome, Sender, SentList, SentView, Settings, Stopping, Streamed, TaskList,
    TaskView, Waited,
};
pub use types::{
    ContactState, DeliveryState, Kind, Priority, TaskRole, TaskState, UnknownName, Via,
};

/// Longest request line on the daemon's socket, in bytes.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
