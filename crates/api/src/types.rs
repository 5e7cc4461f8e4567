//! The small vocabularies of the API: delivery and contact states, how a
//! contact came to be, message kinds and priorities. Each is an enum with one
//! spelling (its serde name) used everywhere: in JSON, in the store, in the
//! CLI's text output.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Declares a string-like enum: its serde names, `name()`, `ALL`, `FromStr`
/// (with an error that lists the choices) and `Display`.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $( $(#[$vmeta])* $variant ),+ }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Its name, as in JSON and the CLI.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownName;

            fn from_str(text: &str) -> Result<Self, UnknownName> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|value| value.name() == text)
                    .ok_or_else(|| UnknownName {
                        what: stringify!($name),
                        given: text.to_owned(),
                        choices: $name::ALL.iter().map(|v| v.name()).collect(),
                    })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

/// A name that is none of an enum's values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {} {given:?}; use {}", lowercase(what), choices.join(", "))]
pub struct UnknownName {
    what: &'static str,
    given: String,
    choices: Vec<&'static str>,
}

fn lowercase(type_name: &str) -> String {
    let mut out = String::new();
    for (i, c) in type_name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out
}

named_enum! {
    /// Where a sent message is. A message moves forward only:
    /// `queued` → `relayed` → `delivered` → `read`. `expired` (the relay gave
    /// up on it) and `failed` (the relay refused it for good) can replace only
    /// `queued` or `relayed`. `read` is final; `expired` and `failed` are the
    /// relay's word, which an end-to-end receipt from the recipient
    /// (`delivered`, `read`) still replaces: a relay cannot make a message
    /// that arrived look lost.
    ///
    /// The order (`Ord`) is this one: progress first, then the two failures.
    /// [`DeliveryState::may_become`] and [`DeliveryState::has_reached`] are the
    /// only rules built on it; the store and every door use them.
    pub enum DeliveryState {
        /// In the sender's outbox.
        Queued = "queued",
        /// Stored by the relay.
        Relayed = "relayed",
        /// Stored by the recipient's daemon.
        Delivered = "delivered",
        /// Taken by the recipient's agent.
        Read = "read",
        /// The relay dropped it undelivered when its time ran out.
        Expired = "expired",
        /// The relay refused it for good.
        Failed = "failed",
    }
}

impl DeliveryState {
    /// Whether it ended undelivered.
    pub fn is_failure(self) -> bool {
        matches!(self, DeliveryState::Expired | DeliveryState::Failed)
    }

    /// Whether nothing replaces it any more (`read`).
    pub fn is_final(self) -> bool {
        self == DeliveryState::Read
    }

    /// Whether a message in this state may move to `next`.
    pub fn may_become(self, next: DeliveryState) -> bool {
        use DeliveryState::{Delivered, Read};
        match (self, next) {
            (from, _) if from.is_final() => false,
            // The recipient's receipt beats the relay's word.
            (from, Delivered | Read) if from.is_failure() => true,
            (from, _) if from.is_failure() => false,
            (from, to) if to.is_failure() => from < Delivered,
            (from, to) => to > from,
        }
    }

    /// Whether it is `wanted` or further along (a failure reaches nothing).
    pub fn has_reached(self, wanted: DeliveryState) -> bool {
        !self.is_failure() && !wanted.is_failure() && self >= wanted
    }

    /// The states a sender can wait for.
    pub const WAITABLE: &'static [DeliveryState] = &[
        DeliveryState::Relayed,
        DeliveryState::Delivered,
        DeliveryState::Read,
    ];
}

named_enum! {
    /// Whether a contact can be written to.
    pub enum ContactState {
        /// Paired on both sides.
        Active = "active",
        /// We accepted its invite; its daemon has not confirmed yet.
        Pending = "pending",
        /// It removed us from its contacts: nothing more reaches it. A new
        /// invite, either way, pairs us again.
        Removed = "removed",
    }
}

named_enum! {
    /// Where a task is: A2A's task states. `submitted` until the worker
    /// reports; `completed`, `failed`, `canceled` and `rejected` are final.
    pub enum TaskState {
        /// Sent (asked of us: arrived); the worker has not reported yet.
        Submitted = "submitted",
        /// The worker runs it.
        Working = "working",
        /// The worker needs more from the requester (`detail` says what).
        #[serde(rename = "input-required")]
        InputRequired = "input-required",
        /// Done; `result` is the id of the result message.
        Completed = "completed",
        /// It ran and failed (`detail` says how).
        Failed = "failed",
        /// Stopped at the requester's request.
        Canceled = "canceled",
        /// Refused without running (`detail` says why).
        Rejected = "rejected",
    }
}

impl TaskState {
    /// Whether nothing replaces it any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Canceled | TaskState::Rejected
        )
    }

    /// Whether a task in this state may move to `next`: any state but
    /// `submitted` follows a state that is not final.
    pub fn may_become(self, next: TaskState) -> bool {
        !self.is_final() && next != TaskState::Submitted && next != self
    }
}

named_enum! {
    /// Which side of a task an identity is on.
    pub enum TaskRole {
        /// We asked the contact (we are the requester).
        Asked = "asked",
        /// The contact asked us (we are the worker).
        Given = "given",
    }
}

named_enum! {
    /// How a contact came to be.
    pub enum Via {
        /// Another identity of the same home.
        Sibling = "sibling",
        /// It redeemed one of our invites.
        Invited = "invited",
        /// We accepted one of its invites.
        Accepted = "accepted",
    }
}

named_enum! {
    /// What a message is for.
    pub enum Kind {
        /// Conversation.
        Chat = "chat",
        /// A task for the contact to carry out.
        Task = "task",
        /// The result of a task.
        Result = "result",
        /// A question expecting an answer.
        Query = "query",
        /// A file.
        File = "file",
    }
}

// The enum's derives come from `named_enum!`, which has no `Default`.
#[allow(clippy::derivable_impls)]
impl Default for Kind {
    fn default() -> Self {
        Kind::Chat
    }
}

named_enum! {
    /// How soon the recipient's agent should see a message: `recv` and `inbox`
    /// give urgent first, then normal, then low, the senders taking turns
    /// within each (a contact's urgent ones beyond its first 10 waiting
    /// wait with the normal ones).
    pub enum Priority {
        /// Before everything else.
        Urgent = "urgent",
        /// The default.
        Normal = "normal",
        /// After everything else.
        Low = "low",
    }
}

#[allow(clippy::derivable_impls)]
impl Default for Priority {
    fn default() -> Self {
        Priority::Normal
    }
}

#[cfg(test)]
mod tests {
    use super::DeliveryState::{self, *};

    #[test]
    fn a_message_only_moves_forward_and_failures_only_replace_undelivered_states() {
        let check = |from: DeliveryState, to: DeliveryState, expected: bool| {
            assert_eq!(from.may_become(to), expected, "{from} -> {to}");
        };
        for &to in DeliveryState::ALL {
            check(Read, to, false);
            // The relay's failures give way to the recipient's receipts only.
            let receipt = matches!(to, Delivered | Read);
            check(Expired, to, receipt);
            check(Failed, to, receipt);
        }
        check(Queued, Relayed, true);
        check(Queued, Read, true);
        check(Relayed, Queued, false);
        check(Delivered, Relayed, false);
        check(Delivered, Read, true);
        check(Queued, Expired, true);
        check(Relayed, Failed, true);
        check(Delivered, Expired, false);
    }

    #[test]
    fn reaching_a_state_means_progress_not_failure() {
        assert!(Read.has_reached(Delivered));
        assert!(Relayed.has_reached(Relayed));
        assert!(!Relayed.has_reached(Delivered));
        assert!(!Expired.has_reached(Relayed));
        assert!(!Failed.has_reached(Queued));
    }

    #[test]
    fn names_parse_back_and_unknown_ones_list_the_choices() {
        for &state in DeliveryState::ALL {
            assert_eq!(state.name().parse::<DeliveryState>(), Ok(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.name())
            );
        }
        let error = "soon".parse::<super::Priority>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown priority \"soon\"; use urgent, normal, low"
        );
        let error = "x".parse::<DeliveryState>().unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("unknown delivery state \"x\"")
        );
    }
}
