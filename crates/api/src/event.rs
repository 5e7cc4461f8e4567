//! Events of a subscription: one JSON object a line on the daemon's socket,
//! and the `message`/`state`/`ready` lines of `connect --json`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::response::{ChunkView, ContactView, MessageView, SentView, TaskView};

/// Something that happened for a subscribed identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The subscription is up.
    Ready {
        /// The identity it follows.
        #[serde(rename = "as")]
        identity: String,
    },
    /// An unread message, once per subscription.
    Message {
        /// The message.
        message: MessageView,
    },
    /// A sent message changed state.
    State(SentView),
    /// A task, either side, arrived or changed state.
    Task(TaskView),
    /// A piece of the output of a task we asked for, as it streams.
    Chunk(ChunkView),
    /// A contact was added (one of our invites was redeemed, or an invite we
    /// accepted was confirmed) or removed us.
    Contact(ContactView),
}
