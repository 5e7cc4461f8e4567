//! `agentwire setup CLIENT`: writes (or prints) the MCP server entry in the
//! config file of a coding agent, in that client's documented format.
//!
//! The file is parsed, the one entry added or replaced, and the result written
//! to a temporary file that is renamed over the original: every other entry
//! stays, and a file that does not parse is left exactly as it was.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use serde_json::{Value, json};

use crate::cli::{GlobalArgs, PushMode, SetupArgs as Options, SetupClient, SetupScope};
use crate::exit::{CONFIG, Failure, INTERNAL, USAGE, WithCode};

/// Seconds Codex may wait for one tool call: the longest `wait` plus slack.
const CODEX_TOOL_TIMEOUT_SECS: i64 = crate::mcp_cmd::MAX_WAIT_SECS as i64 + 30;
/// Seconds Codex may wait for the server to start (it may start the daemon).
const CODEX_STARTUP_TIMEOUT_SECS: i64 = 30;
/// Largest config file `setup` reads.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// The server as a client should start it.
struct Server {
    command: String,
    args: Vec<String>,
}

/// What happened to the entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Added,
    Updated,
    Unchanged,
}

impl Action {
    /// Writing a whole entry where one `existed` or not.
    fn replacing(existed: bool) -> Action {
        if existed {
            Action::Updated
        } else {
            Action::Added
        }
    }

    /// The start of the sentence that reports it.
    fn verb(self) -> &'static str {
        match self {
            Action::Added => "Added",
            Action::Updated => "Updated",
            Action::Unchanged => "Already had",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::Added => "added",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
        }
    }
}

pub(crate) fn run(global: &GlobalArgs, options: &Options) -> Result<(), Failure> {
    validate_entry_name(&options.entry)?;
    if options.push == PushMode::Message && options.client != SetupClient::Claude {
        return Err(Failure::new(
            USAGE,
            anyhow!(
                "--push message is for Claude Code channels only: it marks messages read once pushed, \
                 and {} does not show pushed messages to the model",
                client_name(options.client)
            ),
        ));
    }
    if options.hooks && options.client != SetupClient::Claude {
        return Err(Failure::new(
            USAGE,
            anyhow!("--hooks installs Claude Code hooks; it goes with `setup claude`"),
        ));
    }
    let server = server(global, options.push)?;
    let path = config_path(options)?;
    let codex = options.client == SetupClient::Codex;
    let hooks = if options.hooks {
        Some((hooks_path(options)?, hook_command(global)?))
    } else {
        None
    };
    if options.print {
        if let Some((hooks_path, command)) = &hooks {
            let (snippet, _) = hooks_merge(None, command)?;
            if global.json {
                println!(
                    "{}",
                    json!({"client": "claude", "path": hooks_path.display().to_string(), "snippet": snippet})
                );
            } else {
                eprintln!("# for {}", hooks_path.display());
                print!("{snippet}");
            }
        }
        let snippet = if codex {
            toml_entry(None, &options.entry, &server)?.0
        } else {
            let entry = json_entry(options.client, &server);
            serde_json::to_string_pretty(&json!({"mcpServers": {&options.entry: entry}}))
                .context("cannot render the entry")
                .code(INTERNAL)?
                + "\n"
        };
        if global.json {
            println!(
                "{}",
                json!({"client": client_name(options.client), "path": path.display().to_string(), "snippet": snippet})
            );
        } else {
            eprintln!("# for {}", path.display());
            print!("{snippet}");
        }
        return Ok(());
    }

    // Only now: `--print` writes nothing.
    if is_project_file(options) {
        inside_project(options, &path)?;
    }
    if let Some((hooks_path, _)) = &hooks
        && options.scope.unwrap_or(SetupScope::Project) == SetupScope::Project
    {
        inside_project(options, hooks_path)?;
    }
    let existing = read_config(&path)?;
    let (text, action, kept) = if codex {
        toml_entry(existing.as_deref(), &options.entry, &server)
            .map_err(|failure| refuse(&path, failure))?
    } else {
        json_merge(
            existing.as_deref(),
            &options.entry,
            json_entry(options.client, &server),
        )
        .map_err(|failure| refuse(&path, failure))?
    };
    // Both files are parsed before either is written: a malformed one
    // leaves both as they were.
    let hooks = match &hooks {
        Some((hooks_path, command)) => {
            let existing = read_config(hooks_path)?;
            let (text, action) = hooks_merge(existing.as_deref(), command)
                .map_err(|failure| refuse(hooks_path, failure))?;
            Some((hooks_path, text, action))
        }
        None => None,
    };
    if action != Action::Unchanged {
        write_atomically(&path, &text).code(CONFIG)?;
    }
    if let Some((hooks_path, text, action)) = &hooks
        && *action != Action::Unchanged
    {
        write_atomically(hooks_path, text).code(CONFIG)?;
    }
    if global.json {
        let mut report = json!({
            "client": client_name(options.client),
            "path": path.display().to_string(),
            "action": action.name(),
            "entry": options.entry,
            "command": server.command,
            "args": server.args,
            "kept": kept,
        });
        if let Some((hooks_path, _, action)) = &hooks {
            report["hooks"] =
                json!({"path": hooks_path.display().to_string(), "action": action.name()});
        }
        println!("{report}");
    } else {
        if let Some((hooks_path, _, action)) = &hooks {
            println!(
                "{} the wake-up hooks ({}) in {}.",
                action.verb(),
                HOOK_EVENTS.join(", "),
                hooks_path.display()
            );
        }
        println!(
            "{} the `{}` MCP server in {}{}.",
            action.verb(),
            options.entry,
            path.display(),
            if kept.is_empty() {
                String::new()
            } else {
                format!(" (other servers kept: {})", kept.join(", "))
            }
        );
        println!("{}", next_step(global, options));
        if is_project_file(options) {
            println!(
                "Note: the entry holds this machine's paths; if the file is shared \
                 (committed), others need their own (`--scope user` keeps it out of the project)."
            );
        }
    }
    Ok(())
}

/// A malformed file: say what is wrong and that nothing was changed.
fn refuse(path: &Path, failure: Failure) -> Failure {
    let reason = failure.error.map(|e| format!("{e:#}")).unwrap_or_default();
    Failure::new(
        CONFIG,
        anyhow!(
            "{} is not a config file setup can edit: {reason}; it was left unchanged. \
             Fix it, or add the entry by hand (`agentwire setup ... --print` shows it)",
            path.display()
        ),
    )
}

fn validate_entry_name(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Failure::new(
            USAGE,
            anyhow!("--entry must be 1 to 64 letters, digits, `-` or `_`, got {name:?}"),
        ))
    }
}

fn client_name(client: SetupClient) -> &'static str {
    match client {
        SetupClient::Claude => "claude",
        SetupClient::Codex => "codex",
        SetupClient::Cursor => "cursor",
        SetupClient::Gemini => "gemini",
    }
}

/// This binary, with the flags that pick the same home and identity.
fn server(global: &GlobalArgs, push: PushMode) -> Result<Server, Failure> {
    let exe = binary_path()?;
    let mut args = identity_args(global)?;
    args.push("mcp".to_owned());
    if push != PushMode::Notice {
        args.push("--push".to_owned());
        args.push(push.name().to_owned());
    }
    Ok(Server {
        command: exe.display().to_string(),
        args,
    })
}

/// `--home DIR` and `--as NAME`, as given to `setup`.
fn identity_args(global: &GlobalArgs) -> Result<Vec<String>, Failure> {
    let mut args = Vec::new();
    if let Some(home) = &global.home {
        let home = std::path::absolute(home)
            .with_context(|| format!("cannot make {} absolute", home.display()))
            .code(CONFIG)?;
        args.push("--home".to_owned());
        args.push(home.display().to_string());
    }
    if let Some(identity) = &global.identity {
        args.push("--as".to_owned());
        args.push(identity.clone());
    }
    Ok(args)
}

/// Claude Code events the wake-up hook is installed for: mail is shown at
/// the next prompt, and a session about to stop with unread mail goes on.
const HOOK_EVENTS: [&str; 2] = ["UserPromptSubmit", "Stop"];

/// Claude Code's settings file for the hooks: the project's personal one
/// (`.claude/settings.local.json`, not shared: it holds this machine's paths)
/// or the user's.
fn hooks_path(options: &Options) -> Result<PathBuf, Failure> {
    Ok(match options.scope.unwrap_or(SetupScope::Project) {
        SetupScope::Project => project_dir(options)?
            .join(".claude")
            .join("settings.local.json"),
        SetupScope::User => user_home()?.join(".claude").join("settings.json"),
    })
}

/// The hook's shell command: this binary, the same home and identity,
/// `hook claude`; each word quoted for `sh`.
fn hook_command(global: &GlobalArgs) -> Result<String, Failure> {
    let mut words = vec![binary_path()?.display().to_string()];
    words.extend(identity_args(global)?);
    words.extend(["hook".to_owned(), "claude".to_owned()]);
    Ok(words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" "))
}

/// `agentwire` with the `--home` and `--as` this command was given, quoted
/// for `sh`: the start of a hint that works as printed.
pub(crate) fn command_words(home: Option<&std::path::Path>, identity: Option<&str>) -> String {
    let mut words = vec!["agentwire".to_owned()];
    if let Some(home) = home {
        let home = std::path::absolute(home).unwrap_or_else(|_| home.to_path_buf());
        words.push("--home".to_owned());
        words.push(shell_quote(&home.display().to_string()));
    }
    if let Some(identity) = identity {
        words.push("--as".to_owned());
        words.push(shell_quote(identity));
    }
    words.join(" ")
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=+@%,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Adds the wake-up hook for each of [`HOOK_EVENTS`] to Claude Code's
/// settings, keeping everything else. A hook of ours from another path or
/// identity (a command ending in `hook claude`) is updated in place.
fn hooks_merge(existing: Option<&str>, command: &str) -> Result<(String, Action), Failure> {
    let mut root = parse_json_object(existing)?;
    let hooks = root
        .as_object_mut()
        .and_then(|o| {
            o.entry("hooks")
                .or_insert_with(|| json!({}))
                .as_object_mut()
        })
        .ok_or_else(|| Failure::new(CONFIG, anyhow!("its `hooks` is not an object")))?;
    let mut action = Action::Unchanged;
    for event in HOOK_EVENTS {
        let groups = hooks
            .entry(event)
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .ok_or_else(|| Failure::new(CONFIG, anyhow!("its `hooks.{event}` is not a list")))?;
        let commands = groups
            .iter_mut()
            .filter_map(|g| g.get_mut("hooks").and_then(Value::as_array_mut))
            .flatten()
            .filter_map(|h| h.get_mut("command"));
        let mut found = false;
        for existing in commands {
            let text = existing.as_str().unwrap_or_default();
            if text == command {
                found = true;
            } else if text.ends_with(" hook claude") && text.contains("agentwire") {
                *existing = json!(command);
                found = true;
                action = Action::Updated;
            }
        }
        if !found {
            groups.push(json!({"hooks": [{"type": "command", "command": command}]}));
            if action == Action::Unchanged {
                action = Action::Added;
            }
        }
    }
    let mut text = serde_json::to_string_pretty(&root)
        .context("cannot render the settings")
        .code(INTERNAL)?;
    text.push('\n');
    Ok((text, action))
}

/// A JSON file's top-level object (an empty one for no file).
fn parse_json_object(existing: Option<&str>) -> Result<Value, Failure> {
    let root = match existing {
        None => json!({}),
        Some(text) if text.trim().is_empty() => json!({}),
        Some(text) => serde_json::from_str::<Value>(text)
            .context("it is not valid JSON (setup does not edit files with comments)")
            .code(CONFIG)?,
    };
    if root.is_object() {
        Ok(root)
    } else {
        Err(Failure::new(
            CONFIG,
            anyhow!("its top level is not an object"),
        ))
    }
}

/// The path to start this binary by: the one it was started by (found on
/// PATH when it was a bare name) if that is the same file, so a symlink such
/// as a package manager's stays a symlink and survives upgrades; else the
/// resolved executable.
fn binary_path() -> Result<PathBuf, Failure> {
    let exe = std::env::current_exe()
        .context("cannot tell where the agentwire binary is")
        .code(INTERNAL)?;
    let same_file = |candidate: &Path| match (
        std::fs::canonicalize(candidate),
        std::fs::canonicalize(&exe),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let invoked = std::env::args_os().next().map(PathBuf::from);
    let found = invoked.and_then(|name| {
        if name.components().count() > 1 {
            std::path::absolute(&name).ok()
        } else {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(&name))
                    .find(|candidate| candidate.is_file())
            })
        }
    });
    Ok(match found {
        Some(path) if path.is_absolute() && same_file(&path) => path,
        _ => exe,
    })
}

fn user_home() -> Result<PathBuf, Failure> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            Failure::new(
                CONFIG,
                anyhow!("HOME is not set, so the user's config file cannot be found"),
            )
        })
}

/// `--dir`, absolute.
fn project_dir(options: &Options) -> Result<PathBuf, Failure> {
    std::path::absolute(&options.dir)
        .with_context(|| format!("cannot make {} absolute", options.dir.display()))
        .code(CONFIG)
}

/// The file to edit.
fn config_path(options: &Options) -> Result<PathBuf, Failure> {
    let scope = options.scope.unwrap_or(match options.client {
        SetupClient::Codex => SetupScope::User,
        _ => SetupScope::Project,
    });
    let dir = project_dir(options)?;
    Ok(match (options.client, scope) {
        (SetupClient::Claude, SetupScope::Project) => dir.join(".mcp.json"),
        (SetupClient::Claude, SetupScope::User) => user_home()?.join(".claude.json"),
        (SetupClient::Codex, SetupScope::Project) => dir.join(".codex").join("config.toml"),
        (SetupClient::Codex, SetupScope::User) => match std::env::var_os("CODEX_HOME") {
            Some(codex_home) if !codex_home.is_empty() => {
                PathBuf::from(codex_home).join("config.toml")
            }
            _ => user_home()?.join(".codex").join("config.toml"),
        },
        (SetupClient::Cursor, SetupScope::Project) => dir.join(".cursor").join("mcp.json"),
        (SetupClient::Cursor, SetupScope::User) => user_home()?.join(".cursor").join("mcp.json"),
        (SetupClient::Gemini, SetupScope::Project) => dir.join(".gemini").join("settings.json"),
        (SetupClient::Gemini, SetupScope::User) => {
            user_home()?.join(".gemini").join("settings.json")
        }
    })
}

/// The file's text, or `None` when there is no file yet.
fn read_config(path: &Path) -> Result<Option<String>, Failure> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Failure::new(
                CONFIG,
                anyhow!("cannot read {}: {e}", path.display()),
            ));
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))
        .code(CONFIG)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(Failure::new(
            CONFIG,
            anyhow!(
                "{} is larger than {MAX_CONFIG_BYTES} bytes; it was left unchanged",
                path.display()
            ),
        ));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| refuse(path, Failure::new(CONFIG, anyhow!("it is not UTF-8"))))
}

/// The entry in the JSON clients' shape.
fn json_entry(client: SetupClient, server: &Server) -> Value {
    match client {
        // Claude Code and Cursor document an explicit stdio type.
        SetupClient::Claude | SetupClient::Cursor => json!({
            "type": "stdio",
            "command": server.command,
            "args": server.args,
        }),
        _ => json!({
            "command": server.command,
            "args": server.args,
        }),
    }
}

/// Adds or replaces `name` under `mcpServers`, keeping everything else (and
/// its order).
fn json_merge(
    existing: Option<&str>,
    name: &str,
    entry: Value,
) -> Result<(String, Action, Vec<String>), Failure> {
    let mut root = parse_json_object(existing)?;
    let Some(object) = root.as_object_mut() else {
        return Err(Failure::new(
            CONFIG,
            anyhow!("its top level is not an object"),
        ));
    };
    let servers = object
        .entry("mcpServers")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| Failure::new(CONFIG, anyhow!("its `mcpServers` is not an object")))?;
    let kept: Vec<String> = servers.keys().filter(|k| *k != name).cloned().collect();
    let action = match servers.get_mut(name).and_then(Value::as_object_mut) {
        // The user's own settings in the entry (env, timeouts, trust, ...)
        // stay; only the keys setup writes are set.
        Some(old) => {
            let ours = entry.as_object().cloned().unwrap_or_default();
            if ours.iter().all(|(key, value)| old.get(key) == Some(value)) {
                Action::Unchanged
            } else {
                for (key, value) in ours {
                    old.insert(key, value);
                }
                Action::Updated
            }
        }
        None => {
            // Missing, or there but not a table/object: replaced whole.
            let action = Action::replacing(servers.contains_key(name));
            servers.insert(name.to_owned(), entry);
            action
        }
    };
    let mut text = serde_json::to_string_pretty(&root)
        .context("cannot render the config")
        .code(INTERNAL)?;
    text.push('\n');
    Ok((text, action, kept))
}

/// Adds or replaces `[mcp_servers.NAME]` in Codex's config.toml, keeping
/// everything else (comments and formatting included). With no existing
/// text, returns just the entry.
fn toml_entry(
    existing: Option<&str>,
    name: &str,
    server: &Server,
) -> Result<(String, Action, Vec<String>), Failure> {
    use toml_edit::{Array, DocumentMut, Item, Table, value};
    let mut doc = existing
        .unwrap_or("")
        .parse::<DocumentMut>()
        .context("it is not valid TOML")
        .code(CONFIG)?;
    let servers = doc
        .entry("mcp_servers")
        .or_insert_with(|| {
            let mut table = Table::new();
            table.set_implicit(true);
            Item::Table(table)
        })
        .as_table_like_mut()
        .ok_or_else(|| Failure::new(CONFIG, anyhow!("its `mcp_servers` is not a table")))?;
    let kept: Vec<String> = servers
        .iter()
        .map(|(key, _)| key.to_owned())
        .filter(|key| key != name)
        .collect();
    let mut entry = Table::new();
    entry.insert("command", value(server.command.as_str()));
    entry.insert(
        "args",
        value(server.args.iter().map(String::as_str).collect::<Array>()),
    );
    entry.insert("startup_timeout_sec", value(CODEX_STARTUP_TIMEOUT_SECS));
    entry.insert("tool_timeout_sec", value(CODEX_TOOL_TIMEOUT_SECS));
    let action = match servers.get_mut(name).and_then(Item::as_table_like_mut) {
        // The user's own settings in the entry (env, enabled, tool lists,
        // comments) stay; only the keys setup writes are set.
        Some(old) => {
            let same = entry.iter().all(|(key, new)| {
                old.get(key)
                    .is_some_and(|item| item.to_string().trim() == new.to_string().trim())
            });
            if same {
                Action::Unchanged
            } else {
                for (key, new) in entry.iter() {
                    old.insert(key, new.clone());
                }
                Action::Updated
            }
        }
        None => {
            // Missing, or there but not a table/object: replaced whole.
            let action = Action::replacing(servers.contains_key(name));
            servers.insert(name, Item::Table(entry));
            action
        }
    };
    Ok((doc.to_string(), action, kept))
}

/// Writes `text` to a new temporary file beside `path` (created 0600, so the
/// config's contents are never readable by others on the way) and renames it
/// over `path`, with the original's permissions (0644 for a new file). A
/// symlinked config is written where the link points, and stays a link.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let target = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(_) => path.to_path_buf(),
    };
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let mut nonce = [0u8; 6];
    getrandom::fill(&mut nonce).map_err(|e| anyhow!("no randomness: {e}"))?;
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let temp = parent.join(format!(".{file_name}.agentwire-{nonce}"));
    let mode = std::fs::metadata(&target)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&temp, &target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.with_context(|| format!("cannot write {}", target.display()))
}

/// Refuses a project file that a symbolic link (the file itself, or a
/// directory on its way such as `.claude`) leads out of the project: a
/// cloned repository must not be able to make `setup` write elsewhere.
fn inside_project(options: &Options, path: &Path) -> Result<(), Failure> {
    let dir = project_dir(options)?;
    let project = std::fs::canonicalize(&dir)
        .with_context(|| format!("cannot find the project directory {}", dir.display()))
        .code(CONFIG)?;
    // The file, or else its nearest ancestor that exists, resolved.
    let Some(resolved) = path
        .ancestors()
        .find(|p| std::fs::symlink_metadata(p).is_ok())
        .and_then(|p| std::fs::canonicalize(p).ok())
    else {
        return Ok(());
    };
    if resolved.starts_with(&project) {
        return Ok(());
    }
    Err(Failure::new(
        CONFIG,
        anyhow!(
            "{} leads out of the project, to {}: a symbolic link on its way points elsewhere. \
             setup writes a project's files only inside the project; nothing was changed. \
             Remove the link, or use --scope user",
            path.display(),
            resolved.display()
        ),
    ))
}

fn is_project_file(options: &Options) -> bool {
    match options.scope {
        Some(scope) => scope == SetupScope::Project,
        None => options.client != SetupClient::Codex,
    }
}

/// What the user does next, per client; a command it suggests works as
/// printed (the same home, identity, directory and entry name).
fn next_step(global: &GlobalArgs, options: &Options) -> String {
    let entry = &options.entry;
    let rerun = {
        let mut words = vec![
            command_words(global.home.as_deref(), global.identity.as_deref()),
            "setup claude".to_owned(),
        ];
        if options.dir != Path::new(".") {
            let dir = std::path::absolute(&options.dir).unwrap_or_else(|_| options.dir.clone());
            words.push(format!("--dir {}", shell_quote(&dir.display().to_string())));
        }
        if entry != "agentwire" {
            words.push(format!("--entry {}", shell_quote(entry)));
        }
        words.push("--push message".to_owned());
        words.join(" ")
    };
    match options.client {
        SetupClient::Claude if options.push == PushMode::Message => format!(
            "Start Claude Code with pushes into the session: claude --dangerously-load-development-channels server:{entry}"
        ),
        SetupClient::Claude if options.scope == Some(SetupScope::User) => {
            "Start `claude`; `/mcp` lists the server. For messages pushed into the session, add `--push message`.".to_owned()
        }
        SetupClient::Claude => format!(
            "Start `claude` in {} and approve the project server; `/mcp` lists it. For messages pushed into the session, run `{rerun}`.",
            options.dir.display()
        ),
        SetupClient::Codex => "Start `codex`; `/mcp` lists the server.".to_owned(),
        SetupClient::Cursor => {
            "Enable the server in Cursor's settings (MCP); it lists the tools.".to_owned()
        }
        SetupClient::Gemini => "Start `gemini`; `/mcp` lists the server.".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Server {
        Server {
            command: "/usr/bin/agentwire".into(),
            args: vec!["mcp".into()],
        }
    }

    #[test]
    fn json_merge_keeps_other_entries_and_order() {
        let existing = r#"{"z": 1, "mcpServers": {"other": {"command": "x"}}, "a": [1]}"#;
        let entry = json_entry(SetupClient::Claude, &server());
        let (text, action, kept) = json_merge(Some(existing), "agentwire", entry.clone()).unwrap();
        assert_eq!(action, Action::Added);
        assert_eq!(kept, vec!["other".to_owned()]);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["mcpServers"]["other"]["command"], "x");
        assert_eq!(value["mcpServers"]["agentwire"], entry);
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["z", "mcpServers", "a"]);
        let (_, again, _) = json_merge(Some(&text), "agentwire", entry).unwrap();
        assert_eq!(again, Action::Unchanged);
    }

    #[test]
    fn json_merge_refuses_what_it_cannot_edit() {
        for bad in ["{", "[1]", r#"{"mcpServers": []}"#, "// note\n{}"] {
            let entry = json_entry(SetupClient::Cursor, &server());
            assert!(json_merge(Some(bad), "agentwire", entry).is_err(), "{bad}");
        }
    }

    #[test]
    fn toml_entry_keeps_comments_and_other_servers() {
        let existing =
            "# my settings\nmodel = \"o3\"\n\n[mcp_servers.docs]\ncommand = \"docs-mcp\" # keep\n";
        let (text, action, kept) = toml_entry(Some(existing), "agentwire", &server()).unwrap();
        assert_eq!(action, Action::Added);
        assert_eq!(kept, vec!["docs".to_owned()]);
        assert!(text.starts_with(existing), "{text}");
        assert!(text.contains("[mcp_servers.agentwire]"), "{text}");
        assert!(text.contains("tool_timeout_sec = 330"), "{text}");
        let (again, action, _) = toml_entry(Some(&text), "agentwire", &server()).unwrap();
        assert_eq!(action, Action::Unchanged);
        assert_eq!(again, text);
    }

    #[test]
    fn shell_quote_keeps_odd_paths_one_word() {
        assert_eq!(shell_quote("/usr/bin/agentwire"), "/usr/bin/agentwire");
        assert_eq!(shell_quote("/home/a b/it's"), r"'/home/a b/it'\''s'");
        let quoted = shell_quote("$(rm -rf ~)");
        assert_eq!(quoted, "'$(rm -rf ~)'");
    }

    #[test]
    fn toml_entry_refuses_what_it_cannot_edit() {
        for bad in ["model = ", "mcp_servers = 3\n"] {
            assert!(
                toml_entry(Some(bad), "agentwire", &server()).is_err(),
                "{bad}"
            );
        }
    }
}
