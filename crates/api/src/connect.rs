//! `agentwire connect --json`: the lines a streaming agent writes
//! ([`Command`], one JSON object per stdin line) and reads ([`Line`], one JSON
//! object per stdout line).
//!
//! The JSON Schemas in `schemas/` are generated from these types
//! ([`schemas`]); a test fails when the files and the types disagree.

use schemars::{JsonSchema, Schema, schema_for};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Event;
use crate::request::{
    Ack, Cancel, Chunks, Contacts, Discover, GetCard, Inbox, Invite, Permit, PublishCard, Recv,
    Request, SendFile, SendMessage, Sent, SetCard, State, Stream, Task, Tasks, UpdateTask, Whoami,
};
use crate::response::{
    Acked, CardSet, CardView, ChunkList, ContactList, ContactView, FileSent, Found, IdentityView,
    InviteView, Listing, Messages, SendOutcome, SentList, SentView, Streamed, TaskList, TaskView,
};

/// Longest command line, in bytes.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

macro_rules! commands {
    ($d:tt $( $(#[$meta:meta])* $variant:ident($op:ident) => $output:ty, $name:literal; )+) => {
        /// One command line. Besides the fields of its operation, every line
        /// may carry `ref` (any JSON value), echoed in its answer; it is
        /// taken out before the rest is read as a `Command`.
        #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
        #[serde(tag = "op", rename_all = "snake_case")]
        #[schemars(transform = add_ref)]
        pub enum Command {
            $( $(#[$meta])* $variant($op), )+
        }

        /// A command's answer: the operation's own, typed.
        #[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
        #[serde(tag = "op", content = "result", rename_all = "snake_case")]
        pub enum Outcome {
            $( $(#[$meta])* $variant($output), )+
        }

        impl Command {
            /// The names of the operations, as in `op`.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The identity the command names (`as`), to fill in the
            /// session's own.
            pub fn identity_mut(&mut self) -> &mut Option<String> {
                match self {
                    $( Command::$variant(op) => &mut op.identity, )+
                }
            }

        }

        /// Calls `$callback!` with the names of the [`Command`] variants (each
        /// also an [`Outcome`] variant): a door writes its dispatch once for
        /// all of them, e.g. `Command::X(op) => Outcome::X(call(op).await?)`.
        #[macro_export]
        macro_rules! each_command {
            ($d callback:ident) => {
                $d callback! { $($variant),+ }
            };
        }

        impl From<Command> for Request {
            fn from(command: Command) -> Request {
                match command {
                    $( Command::$variant(op) => op.into(), )+
                }
            }
        }
    };
}

commands! {
    $
    /// Send a message (the daemon's `send`).
    Send(SendMessage) => SendOutcome, "send";
    /// Take unread messages.
    Recv(Recv) => Messages, "recv";
    /// Take the named unread messages.
    Ack(Ack) => Acked, "ack";
    /// One sent message's delivery state (the daemon's `state`).
    Status(State) => SentView, "status";
    /// Recent sent messages.
    Sent(Sent) => SentList, "sent";
    /// Show unread messages without taking them.
    Inbox(Inbox) => Messages, "inbox";
    /// The identity's contacts.
    Contacts(Contacts) => ContactList, "contacts";
    /// Who the identity is.
    Whoami(Whoami) => IdentityView, "whoami";
    /// Make an invite.
    Invite(Invite) => InviteView, "invite";
    /// Grant or take back what a contact may send.
    Permit(Permit) => ContactView, "permit";
    /// Tasks both ways, newest first.
    Tasks(Tasks) => TaskList, "tasks";
    /// One task, optionally waiting until it ends.
    Task(Task) => TaskView, "task";
    /// The worker reports on a task it was given (the daemon's `update_task`).
    Report(UpdateTask) => TaskView, "report";
    /// The requester stops a task.
    Cancel(Cancel) => TaskView, "cancel";
    /// The worker streams a piece of a task's output.
    Stream(Stream) => Streamed, "stream";
    /// A task's streamed output, optionally waiting for more.
    Chunks(Chunks) => ChunkList, "chunks";
    /// This identity's card.
    Card(GetCard) => CardView, "card";
    /// Change this identity's card.
    SetCard(SetCard) => CardSet, "set_card";
    /// Contacts by capability, with whether they are online (or, with
    /// `relay`, identities listed in the relay's directory).
    Discover(Discover) => Found, "discover";
    /// List this identity's card in the relay's directory, or withdraw it.
    PublishCard(PublishCard) => Listing, "publish_card";
    /// Send a file (the daemon reads it from `path`).
    SendFile(SendFile) => FileSent, "send_file";
}

/// Adds `ref` (any value) to each operation's properties: the variants
/// refuse unknown fields, and JSON Schema sees only a subschema's own.
fn add_ref(schema: &mut Schema) {
    let Some(Value::Array(variants)) = schema.get_mut("oneOf") else {
        return;
    };
    for variant in variants {
        if let Some(Value::Object(properties)) = variant.get_mut("properties") {
            properties.insert(
                "ref".into(),
                serde_json::json!({"description": "Any JSON value; echoed in the answer"}),
            );
        }
    }
}

/// One output line: an event of the subscription or an answer to a command.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Line {
    /// `ready`, `message` or `state`, as they happen.
    Event(Event),
    /// The answer to a command, or a problem.
    Reply(Reply),
}

/// The answer to a command, or a problem of the session.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Reply {
    /// A command succeeded; `result` is what the CLI prints with `--json`.
    Result {
        /// The operation and its answer.
        #[serde(flatten)]
        outcome: Outcome,
        /// The command's `ref`, if it had one.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
    },
    /// A command was refused or failed, or the event stream had a problem.
    Error {
        /// What went wrong.
        code: LineError,
        /// A sentence saying what to change.
        message: String,
        /// The command's `ref`, if it had one and it was read.
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
        /// With `request_failed`: the CLI's exit code for the same failure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<u8>,
    },
}

impl Reply {
    /// An error line.
    pub fn error(code: LineError, message: impl Into<String>, reference: Option<Value>) -> Reply {
        Reply::Error {
            code,
            message: message.into(),
            reference,
            exit_code: None,
        }
    }
}

/// The codes of `{"event":"error"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineError {
    /// The line is not a JSON object.
    InvalidJson,
    /// `op` names no operation.
    UnknownOp,
    /// A required field is missing.
    MissingField,
    /// A field is unknown or its value does not fit.
    InvalidField,
    /// The line is longer than [`MAX_LINE_BYTES`].
    TooLarge,
    /// The daemon refused or failed the command; `exit_code` says how.
    RequestFailed,
    /// The daemon cannot be reached (the session keeps trying).
    DaemonUnreachable,
}

/// The JSON Schemas of the two directions, as `(file name, schema)`, for
/// `schemas/`.
pub fn schemas() -> [(&'static str, Schema); 2] {
    let mut input = schema_for!(Command);
    describe(
        &mut input,
        "connect-in.schema.json",
        "agentwire connect --json: one command line (stdin)",
        "Each stdin line is one JSON object (at most 256 KiB). `ref` is echoed in the answer; \
         `as` picks the identity (default: the session's).",
    );
    let mut output = schema_for!(Line);
    describe(
        &mut output,
        "connect-out.schema.json",
        "agentwire connect --json: one event line (stdout)",
        "Each stdout line is one JSON object: an event of the subscription (`ready`, `message`, \
         `state`) or the answer to a command (`result`, `error`), which echoes the command's \
         `ref`.",
    );
    [
        ("connect-in.schema.json", input),
        ("connect-out.schema.json", output),
    ]
}

fn describe(schema: &mut Schema, file: &str, title: &str, description: &str) {
    schema.insert(
        "$id".into(),
        format!("https://github.com/agentwire/agentwire/schemas/{file}").into(),
    );
    schema.insert("title".into(), title.into());
    schema.insert("description".into(), description.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_as_the_daemons_requests() {
        let command: Command =
            serde_json::from_str(r#"{"op":"status","id":"m1","wait":"delivered"}"#).unwrap();
        let request = Request::from(command);
        assert_eq!(request.op(), "state");
        for line in [
            r#"{"op":"state","id":"m1"}"#,
            r#"{"op":"send","to":"a","body":"x","colour":"red"}"#,
            r#"{"op":"stop"}"#,
        ] {
            assert!(serde_json::from_str::<Command>(line).is_err(), "{line}");
        }
        let names: Vec<String> = Command::NAMES.iter().map(|n| format!("\"{n}\"")).collect();
        let schema = serde_json::to_string(&schemas()[0].1).unwrap();
        for name in names {
            assert!(schema.contains(&name), "{name} missing from the schema");
        }
    }

    #[test]
    fn lines_keep_their_shape() {
        let line = Line::Reply(Reply::Result {
            outcome: Outcome::Ack(Acked {
                acked: vec!["m1".into()],
            }),
            reference: Some(7.into()),
        });
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(
            text,
            r#"{"event":"result","op":"ack","result":{"acked":["m1"]},"ref":7}"#
        );
        let error = Line::Reply(Reply::error(LineError::TooLarge, "too long", None));
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"event":"error","code":"too_large","message":"too long"}"#
        );
    }

    /// The value with every object's keys in order, so that the files do not
    /// depend on whether a crate in the build keeps insertion order.
    fn sorted(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(String, Value)> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
            other => other,
        }
    }

    /// `schemas/` holds exactly what the types generate. To regenerate after
    /// changing a type: `AGENTWIRE_WRITE_SCHEMAS=1 cargo test -p agentwire-api`.
    #[test]
    fn schema_files_are_generated_from_the_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let write = std::env::var_os("AGENTWIRE_WRITE_SCHEMAS").is_some();
        for (file, schema) in schemas() {
            let path = dir.join(file);
            let generated =
                serde_json::to_string_pretty(&sorted(schema.to_value())).unwrap() + "\n";
            if write {
                std::fs::write(&path, &generated).unwrap();
                continue;
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == generated,
                "{} differs from what the types generate; run \
                 AGENTWIRE_WRITE_SCHEMAS=1 cargo test -p agentwire-api and commit the result",
                path.display()
            );
        }
    }
}
