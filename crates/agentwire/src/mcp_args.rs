//! The MCP tools' arguments: their types, how they are read, and the input
//! schemas shown to clients and models.
//!
//! The schemas are generated from these types, then made plain for the
//! model: no internal titles, no `format`, no `null` alternatives for
//! optional fields (absence means the default), enums inlined. Clients that
//! send numbers as strings (some inspectors do) are understood.

use std::sync::Arc;

use agentwire_daemon::api::{Kind, Priority};
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// The most messages one call takes or shows.
pub(crate) const MAX_MESSAGES: usize = 100;

/// Input of `send`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendArgs {
    /// The contact to write to: its name (as listed by `contacts`) or a unique prefix of its key.
    pub(crate) to: String,
    /// The message text (at most 128 KiB).
    pub(crate) text: String,
    /// What the message is: `chat` (default), `task` (asks the contact to do something), `result` (the outcome of a task), `query` or `file`.
    #[serde(default)]
    pub(crate) kind: Option<Kind>,
    /// The id of the message this one answers, so the contact can match them.
    #[serde(default)]
    pub(crate) reply_to: Option<String>,
    /// The id of the conversation thread (usually the id of its first message).
    #[serde(default)]
    pub(crate) thread: Option<String>,
    /// `urgent`, `normal` (default) or `low`: the contact's inbox shows urgent messages first.
    #[serde(default)]
    pub(crate) priority: Option<Priority>,
}

/// Input of `recv` and `peek`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListArgs {
    /// At most this many messages (1 to 100, default 100).
    #[serde(default, deserialize_with = "number")]
    #[schemars(range(min = 1, max = 100))]
    pub(crate) max: Option<u64>,
    /// Only messages from this contact (name or key prefix).
    #[serde(default)]
    pub(crate) from: Option<String>,
}

/// Input of `wait`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitArgs {
    /// How long to wait for a message, in seconds (0 to 300, default 45). Returns as soon as one arrives.
    #[serde(default, deserialize_with = "number")]
    #[schemars(range(min = 0, max = 300))]
    pub(crate) timeout_secs: Option<u64>,
    /// Only messages from this contact (name or key prefix).
    #[serde(default)]
    pub(crate) from: Option<String>,
    /// At most this many messages (1 to 100, default 100).
    #[serde(default, deserialize_with = "number")]
    #[schemars(range(min = 1, max = 100))]
    pub(crate) max: Option<u64>,
}

/// Input of `status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusArgs {
    /// The id `send` returned (or `sent` lists).
    pub(crate) id: String,
}

/// Input of `sent`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SentArgs {
    /// At most this many, newest first (1 to 100, default 20).
    #[serde(default, deserialize_with = "number")]
    #[schemars(range(min = 1, max = 100))]
    pub(crate) max: Option<u64>,
}

/// Input of `call`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallArgs {
    /// The contact to ask: its name (as listed by `contacts` or `discover`) or a unique prefix of its key.
    pub(crate) to: String,
    /// What to do (at most 128 KiB).
    pub(crate) text: String,
    /// How long to wait for the result, in seconds (1 to 600, default 120). The task goes on after that; follow it with `tasks`.
    #[serde(default, deserialize_with = "number")]
    #[schemars(range(min = 1, max = 600))]
    pub(crate) timeout_secs: Option<u64>,
}

/// Input of `send_file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendFileArgs {
    /// The contact to send it to: its name or a unique prefix of its key.
    pub(crate) to: String,
    /// The file's absolute path on this machine.
    pub(crate) path: String,
}

/// Input of `tasks`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TasksArgs {
    /// At most this many, newest first (1 to 100, default 20).
    #[serde(default, deserialize_with = "number")]
    #[schemars(range(min = 1, max = 100))]
    pub(crate) max: Option<u64>,
}

/// Input of `cancel`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskIdArgs {
    /// The task's id (as `call` or `tasks` show it).
    pub(crate) id: String,
}

/// Input of `report`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportArgs {
    /// The id of the task you were given (the task message's id).
    pub(crate) id: String,
    /// `working`, `input-required`, `completed`, `failed` or `rejected`.
    pub(crate) state: agentwire_daemon::api::TaskState,
    /// For `completed`: the result to send back. For the others: why (optional).
    #[serde(default)]
    pub(crate) text: Option<String>,
}

/// Input of `discover`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiscoverArgs {
    /// Only contacts whose card lists this capability tag (e.g. `code-review`).
    #[serde(default)]
    pub(crate) capability: Option<String>,
    /// How long to give contacts not heard from lately to answer, in seconds (0 to 30, default 2).
    #[serde(default, deserialize_with = "number")]
    #[schemars(range(min = 0, max = 30))]
    pub(crate) wait_secs: Option<u64>,
    /// Look in the relay's directory instead of your contacts: agents that
    /// listed themselves there, each with an invite to `accept`.
    #[serde(default)]
    pub(crate) relay: bool,
}

/// Input of `publish_card`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishCardArgs {
    /// What whoever pairs through the listing may send you: any of "chat", "task", "file" (default: chat only).
    #[serde(default)]
    pub(crate) allow: Option<Vec<String>>,
    /// Take the listing down instead (its invite stops working).
    #[serde(default)]
    pub(crate) withdraw: bool,
}

/// Input of `card`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CardArgs {
    /// A new display name (one line, at most 64 bytes). Give no field to just read the card.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// A new description of what you do (at most 1024 bytes).
    #[serde(default)]
    pub(crate) description: Option<String>,
    /// New capability tags, replacing the old ones (e.g. ["code-review", "rust"]).
    #[serde(default)]
    pub(crate) capabilities: Option<Vec<String>>,
    /// Whether you take tasks.
    #[serde(default)]
    pub(crate) takes_tasks: Option<bool>,
}

/// Input of `invite`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InviteArgs {
    /// How long the invite stays valid, in seconds (1 to 2592000, i.e. 30 days; default one day).
    #[serde(default, deserialize_with = "number")]
    #[schemars(range(min = 1, max = 2_592_000))]
    pub(crate) ttl_secs: Option<u64>,
    /// What the new contact may send you: any of "chat", "task", "file" (default all three).
    #[serde(default)]
    pub(crate) allow: Option<Vec<String>>,
    /// The name the new contact gets in your contacts, whatever name it suggests.
    #[serde(rename = "for", default)]
    pub(crate) for_name: Option<String>,
}

/// Input of `accept`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcceptArgs {
    /// The invite link, starting with `aw1:`.
    pub(crate) link: String,
    /// The name to give the new contact (default: the name it suggests).
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// What the inviter may send you: any of "chat", "task", "file" (default all three).
    #[serde(default)]
    pub(crate) allow: Option<Vec<String>>,
}

/// Input of tools that take nothing.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoArgs {}

/// An optional whole number, given as a JSON number or a string of digits.
fn number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    let parsed = match &value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    parsed.map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "expected a whole number of 0 or more (e.g. 30), not {}",
            value.unwrap_or(Value::Null)
        ))
    })
}

/// `value` within `min..=max`, or an error naming `field` and the range.
pub(crate) fn within(field: &str, value: u64, min: u64, max: u64) -> Result<u64, String> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "`{field}` is {min} to {max}; {value} is outside that"
        ))
    }
}

/// `max` as given (1 to [`MAX_MESSAGES`]) or the default.
pub(crate) fn message_count(max: Option<u64>) -> Result<usize, String> {
    let max = within(
        "max",
        max.unwrap_or(MAX_MESSAGES as u64),
        1,
        MAX_MESSAGES as u64,
    )?;
    Ok(usize::try_from(max).unwrap_or(MAX_MESSAGES))
}

/// Parses a tool's arguments; a mistake is a tool error the model can read
/// (not a protocol error, which clients tend to hide).
pub(crate) fn parse<T: DeserializeOwned>(tool: &str, arguments: JsonObject) -> Result<T, String> {
    serde_json::from_value(Value::Object(arguments))
        .map_err(|e| format!("{tool}: the arguments do not fit: {e}. See the tool's input schema."))
}

/// A tool's input schema, generated from `T` and made plain for the model.
pub(crate) fn tool_schema<T: JsonSchema>() -> Arc<JsonObject> {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let schema = generator.into_root_schema_for::<T>().to_value();
    let Value::Object(mut root) = schema else {
        return Arc::new(JsonObject::new());
    };
    let defs = match root.remove("$defs") {
        Some(Value::Object(defs)) => defs,
        _ => Map::new(),
    };
    root.remove("title");
    root.remove("description");
    if let Some(Value::Object(properties)) = root.get_mut("properties") {
        for property in properties.values_mut() {
            if let Value::Object(property) = property {
                plain(property, &defs);
            }
        }
    }
    Arc::new(root)
}

/// One property made plain: `null` alternatives, `default: null` and
/// `format` dropped, a referenced enum inlined, descriptions on one line.
fn plain(property: &mut Map<String, Value>, defs: &Map<String, Value>) {
    property.remove("format");
    if property.get("default") == Some(&Value::Null) {
        property.remove("default");
    }
    if let Some(Value::Array(types)) = property.get("type") {
        let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        if let [only] = kept.as_slice() {
            property.insert("type".into(), only.clone());
        }
    }
    if let Some(Value::Array(alternatives)) = property.remove("anyOf") {
        let referenced = alternatives.iter().find_map(|alternative| {
            let reference = alternative.get("$ref")?.as_str()?;
            defs.get(reference.strip_prefix("#/$defs/")?)
        });
        if let Some(Value::Object(def)) = referenced {
            for (key, value) in def {
                if key != "description" && key != "title" {
                    property.insert(key.clone(), value.clone());
                }
            }
        } else {
            property.insert("anyOf".into(), Value::Array(alternatives));
        }
    }
    // An enum whose values carry their own descriptions comes out as a
    // `oneOf` of constants: clients show a plain `enum` better.
    let constants: Option<Vec<Value>> = match property.get("oneOf") {
        Some(Value::Array(choices)) => choices.iter().map(|c| c.get("const").cloned()).collect(),
        _ => None,
    };
    if let Some(constants) = constants {
        property.remove("oneOf");
        property.insert("type".into(), Value::from("string"));
        property.insert("enum".into(), Value::Array(constants));
    }
    if let Some(Value::String(description)) = property.get_mut("description") {
        *description = description.split_whitespace().collect::<Vec<_>>().join(" ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_plain_for_the_model() {
        for schema in [
            tool_schema::<SendArgs>(),
            tool_schema::<ListArgs>(),
            tool_schema::<WaitArgs>(),
            tool_schema::<InviteArgs>(),
            tool_schema::<NoArgs>(),
        ] {
            let text = serde_json::to_string(&*schema).unwrap();
            for internal in [
                "\"title\"",
                "Input of",
                "\"format\"",
                "\"null\"",
                "$defs",
                "\\n",
            ] {
                assert!(!text.contains(internal), "{internal} in {text}");
            }
        }
        let send = tool_schema::<SendArgs>();
        let kind = &send["properties"]["kind"];
        assert!(
            kind["enum"]
                .as_array()
                .unwrap()
                .contains(&Value::from("task")),
            "{kind}"
        );
        let wait = tool_schema::<WaitArgs>();
        assert_eq!(wait["properties"]["timeout_secs"]["type"], "integer");
        assert_eq!(wait["properties"]["timeout_secs"]["maximum"], 300);
    }

    #[test]
    fn numbers_may_come_as_strings_and_out_of_range_ones_are_named() {
        let mut arguments = JsonObject::new();
        arguments.insert("timeout_secs".into(), Value::from("30"));
        arguments.insert("max".into(), Value::from(5));
        let wait: WaitArgs = parse("wait", arguments).unwrap();
        assert_eq!((wait.timeout_secs, wait.max), (Some(30), Some(5)));
        let mut arguments = JsonObject::new();
        arguments.insert("timeout_secs".into(), Value::from(-5));
        let error = parse::<WaitArgs>("wait", arguments).unwrap_err();
        assert!(
            error.contains("whole number") && error.contains("-5"),
            "{error}"
        );
        assert_eq!(
            message_count(Some(0)).unwrap_err(),
            "`max` is 1 to 100; 0 is outside that"
        );
        assert_eq!(message_count(None), Ok(100));
    }
}
