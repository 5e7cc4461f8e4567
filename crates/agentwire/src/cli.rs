//! The command line as typed: raw flags only. Resolving them into settings
//! (defaults that depend on the home, files to read) happens in each command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// End-to-end encrypted messaging for AI agents.
///
/// agentwire connects agents on one machine or across the internet through a
/// blind relay that stores and forwards sealed envelopes it cannot open.
#[derive(Debug, Parser)]
#[command(
    name = "agentwire",
    version,
    propagate_version = true,
    after_help = "Examples:
  agentwire init --name planner && agentwire init --name coder
  agentwire send coder \"run the tests\"
  agentwire --as coder recv --wait 30s

Exit codes: 0 ok, 1 nothing to receive, 2 usage, 3 configuration, 4 cannot start,
10 daemon unreachable, 11 relay unreachable, 12 unknown peer, identity or message,
13 no identity yet, 14 invite invalid, 15 invite expired, 16 invite already used,
17 invite for another relay, 18 send --wait not reached in time, 19 message expired
or failed, 20 outbox full, 21 the contact removed you, 22 task failed, 23 task
rejected, 24 task canceled, 25 task needs input, 70 internal."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The heading global flags are listed under in every command's help, apart
/// from the command's own options.
const GLOBAL: &str = "Global options";

/// Subcommands that act on the whole home, not on one identity: their help
/// leaves `--as` out (it is still accepted, and ignored).
const HOME_WIDE: &[&str] = &["relay", "config", "daemon"];

/// The parser, with the global flags that mean nothing to a subcommand left
/// out of its help.
pub(crate) fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut command = Cli::command();
    for name in HOME_WIDE {
        // A subcommand's own argument of the same id takes the place of the
        // global one when clap propagates globals, so a hidden copy hides it.
        command = command.mut_subcommand(name, |sub| {
            sub.arg(
                clap::Arg::new("identity")
                    .long("as")
                    .global(true)
                    .hide(true),
            )
        });
    }
    command
}

/// Parses the process's arguments.
pub(crate) fn parse() -> Result<Cli, clap::Error> {
    use clap::FromArgMatches;
    let matches = command().try_get_matches()?;
    Cli::from_arg_matches(&matches)
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Directory holding agentwire's state [default: ~/.agentwire]
    #[arg(
        long,
        global = true,
        env = "AGENTWIRE_HOME",
        value_name = "DIR",
        help_heading = GLOBAL
    )]
    pub(crate) home: Option<PathBuf>,
    /// Act as this identity of the home [default: the first one created]
    #[arg(
        long = "as",
        global = true,
        env = "AGENTWIRE_AGENT",
        value_name = "NAME",
        help_heading = GLOBAL
    )]
    pub(crate) identity: Option<String>,
    /// Print JSON instead of text (one object; lists as {"messages":[...]} etc.)
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub(crate) json: bool,
    /// Log format on stderr (filter with AGENTWIRE_LOG, e.g. `debug`)
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        help_heading = GLOBAL
    )]
    pub(crate) log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines
    Text,
    /// One JSON object a line
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a relay: the blind router that stores and forwards envelopes
    ///
    /// The relay authenticates clients by their keys (no accounts), keeps each
    /// envelope durably until its recipient acknowledges it or its TTL runs out,
    /// and never sees plaintext. Stop it with Ctrl-C or SIGTERM: it finishes
    /// in-flight commits, closes connections and exits.
    ///
    /// Examples:
    ///   agentwire relay                          # loopback, ~/.agentwire/relay.db
    ///   agentwire relay --listen 0.0.0.0:7878 \
    ///       --access-token-file /etc/agentwire/token \
    ///       --tls-cert cert.pem --tls-key key.pem # public host
    ///   PGPASSWORD=… agentwire relay --listen 0.0.0.0:7878 \
    ///       --db postgres://agentwire@db.internal/agentwire  # one node of a cluster
    #[command(verbatim_doc_comment)]
    Relay(RelayArgs),
    /// Create an identity in this home (starting the daemon if needed)
    ///
    /// The first identity is the default; later ones are its siblings and are
    /// contacts of each other at once. Without --relay, the daemon runs a relay
    /// on loopback, so agents on this machine need nothing else.
    ///
    /// Examples:
    ///   agentwire init --name planner        # the home's first identity
    ///   agentwire init --name coder          # a sibling: already a contact
    ///   agentwire init --name bot --relay wss://relay.example:7878 \
    ///       --relay-token-file token         # agents on other machines
    #[command(verbatim_doc_comment)]
    Init {
        /// Name of the identity [default: agent, agent-2, ...]
        #[arg(long)]
        name: Option<String>,
        /// Relay to use, e.g. wss://relay.example:7878 (set once, for the
        /// home); the nodes of a relay cluster as URLs separated by commas,
        /// tried in order
        #[arg(long, value_name = "URL[,URL..]")]
        relay: Option<String>,
        /// The relay's access token, read from the first line of this file
        #[arg(long, value_name = "FILE", requires = "relay")]
        relay_token_file: Option<std::path::PathBuf>,
        /// Also trust these certificates (PEM) for the relay: its self-signed
        /// certificate or a private CA
        #[arg(long, value_name = "FILE", requires = "relay")]
        relay_ca: Option<std::path::PathBuf>,
        /// Create the identity without first checking that the relay answers
        /// and takes the token (e.g. it is down for now)
        #[arg(long, requires = "relay")]
        no_check: bool,
    },
    /// Show or change the home's relay settings, and how long messages are kept
    ///
    /// Without flags, shows the relay URL, whether an access token is set,
    /// and the retention: a message is deleted that long after it was read
    /// (a sent one after it ended: read, expired or failed), with the tasks
    /// that ended by then (default 30d; `forever` keeps everything).
    /// A new relay (or token) is checked first: it must answer at the URL,
    /// with TLS for wss:// and without for ws://, and take the token; then
    /// every identity reconnects to it. Contacts made through the old relay
    /// reach you only if they move too.
    ///
    /// Examples:
    ///   agentwire config
    ///   agentwire config --relay ws://relay.example:7878    # was wss:// by mistake
    ///   agentwire config --relay-token-file token            # the relay's new token
    ///   agentwire config --relay-ca relay-cert.pem           # a self-signed relay
    ///   agentwire config --retention 7d                       # keep read messages a week
    #[command(verbatim_doc_comment)]
    Config {
        /// The relay to use, e.g. wss://relay.example:7878, or a relay
        /// cluster's nodes separated by commas
        #[arg(long, value_name = "URL[,URL..]")]
        relay: Option<String>,
        /// The relay's access token, read from the first line of this file
        #[arg(long, value_name = "FILE", conflicts_with = "no_relay_token")]
        relay_token_file: Option<std::path::PathBuf>,
        /// Forget the relay's access token
        #[arg(long)]
        no_relay_token: bool,
        /// Also trust these certificates (PEM) for the relay: its self-signed
        /// certificate or a private CA
        #[arg(long, value_name = "FILE", conflicts_with = "no_relay_ca")]
        relay_ca: Option<std::path::PathBuf>,
        /// Trust only the public roots for the relay again
        #[arg(long)]
        no_relay_ca: bool,
        /// Keep the new settings without checking the relay first
        #[arg(long)]
        no_check: bool,
        /// How long a message is kept once read (a sent one once it ended):
        /// 30d (the default), 12h, ... or forever
        #[arg(long, value_name = "DURATION")]
        retention: Option<String>,
    },
    /// Show this identity's name and address
    ///
    /// Examples:
    ///   agentwire whoami
    ///   agentwire --as coder --json whoami
    #[command(verbatim_doc_comment)]
    Whoami,
    /// List contacts, or rename, allow, deny or remove one
    ///
    /// Each contact has permissions: what it may send to you (chat, task,
    /// file). Your daemon refuses the rest and tells the sender why.
    ///
    /// Examples:
    ///   agentwire contacts
    ///   agentwire contacts rename 3f9a2c alice   # a key prefix gets a name
    ///   agentwire contacts deny alice task       # alice's tasks are rejected
    ///   agentwire contacts allow alice task,file
    ///   agentwire contacts remove alice
    #[command(verbatim_doc_comment)]
    Contacts {
        #[command(subcommand)]
        action: Option<ContactsAction>,
    },
    /// Make a single-use invite link for another agent to pair with this one
    ///
    /// Prints one line (aw1:...) to hand over out of band. It carries this
    /// identity's keys, a fresh one-time key, the relay and a secret, signed;
    /// it works once, until it expires.
    ///
    /// The invite says what the new contact may send you (--allow; your
    /// daemon enforces it) and, with --for, the name it gets here: the name
    /// the other side suggests is then ignored.
    ///
    /// Examples:
    ///   agentwire invite                        # valid for 24 hours
    ///   agentwire invite --ttl 10m --for carol  # whoever redeems it is "carol" here
    ///   agentwire invite --allow chat           # no tasks or files from this contact
    ///   agentwire --as coder invite             # an invite to pair with coder
    #[command(verbatim_doc_comment)]
    Invite {
        /// How long the invite stays valid (1s to 30d)
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: Duration,
        /// What the new contact may send you: chat, task, file, all
        #[arg(
            long,
            value_name = "PERMS",
            default_value = "all",
            value_delimiter = ','
        )]
        allow: Vec<String>,
        /// The petname the new contact gets here (not a key-like name)
        #[arg(long = "for", value_name = "NAME")]
        for_name: Option<String>,
    },
    /// Accept an invite link: the inviter becomes a contact
    ///
    /// Waits for the inviter's daemon to confirm (or refuse: already used,
    /// expired). If it does not answer in time, the contact stays pending and
    /// becomes active when it does.
    ///
    /// Examples:
    ///   agentwire accept aw1:AbC...              # the inviter's suggested name
    ///   agentwire accept aw1:AbC... --name alice # your name for it
    ///   pbpaste | agentwire accept -             # from stdin, not the process list
    #[command(verbatim_doc_comment)]
    Accept {
        /// The aw1:... link; `-` reads it from stdin (keeps it out of the
        /// process list)
        link: String,
        /// Petname for the inviter [default: the name it suggests]
        #[arg(long)]
        name: Option<String>,
        /// How long to wait for the inviter's answer
        #[arg(long, default_value = "30s", value_parser = parse_wait)]
        wait: Duration,
        /// What the inviter may send you: chat, task, file, all
        #[arg(
            long,
            value_name = "PERMS",
            default_value = "all",
            value_delimiter = ','
        )]
        allow: Vec<String>,
    },
    /// Send a message to a contact (PEER: petname or unique key prefix)
    ///
    /// Returns once the message is stored in the local outbox; the daemon
    /// delivers it. TEXT `-` reads the body from stdin, out of sight of other
    /// users (a body given as an argument shows in `ps`, and is noted).
    ///
    /// Examples:
    ///   echo "run the tests" | agentwire send coder -
    ///   agentwire send coder "fix #12" --kind task --priority urgent
    ///   agentwire send planner "done" --reply-to 01a215a5-...  # answer a message
    ///   git diff | agentwire send reviewer -                    # body from stdin
    ///   agentwire send coder "ping" --wait read --timeout 1m    # block until read
    #[command(verbatim_doc_comment)]
    Send {
        /// The contact
        peer: String,
        /// The message; `-` reads stdin, which keeps it out of the process list
        text: String,
        /// Kind: chat, task, result, query or file
        #[arg(long, default_value = "chat")]
        kind: agentwire_api::Kind,
        /// Id of the message this answers
        #[arg(long, value_name = "ID")]
        reply_to: Option<String>,
        /// Id of the thread this belongs to (e.g. the first message's id)
        #[arg(long, value_name = "ID")]
        thread: Option<String>,
        /// urgent, normal or low: the recipient's recv and inbox show urgent first
        #[arg(long, default_value = "normal")]
        priority: agentwire_api::Priority,
        /// Wait until the message is relayed, delivered (stored by the peer's
        /// daemon) or read (consumed by the peer's agent); exit 18 if not in time
        #[arg(long, value_name = "STATE", value_parser = parse_waitable)]
        wait: Option<agentwire_api::DeliveryState>,
        /// How long --wait waits
        #[arg(long, default_value = "30s", value_parser = parse_wait, requires = "wait")]
        timeout: Duration,
    },
    /// Show a sent message's delivery state: queued, relayed, delivered, read, expired or failed
    ///
    /// Examples:
    ///   agentwire status 01a215a5-6c1e-4f7e-9d1a-2b3c4d5e6f70
    ///   agentwire --json status 01a215a5-6c1e-4f7e-9d1a-2b3c4d5e6f70
    #[command(verbatim_doc_comment)]
    Status {
        /// The message id, as printed by send
        id: String,
    },
    /// List recently sent messages with their delivery states, newest first
    ///
    /// Examples:
    ///   agentwire sent
    ///   agentwire sent --max 100 --json
    #[command(verbatim_doc_comment)]
    Sent {
        /// At most N messages (1 to 100000)
        #[arg(long, default_value_t = 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
        max: usize,
    },
    /// Ask a contact to do something, and wait for its result (a task)
    ///
    /// Sends TEXT as a task and follows it until the worker finishes: prints
    /// the result on `completed`; otherwise the exit code says how it ended
    /// (22 failed, 23 rejected, 24 canceled, 25 the worker needs input, 18
    /// not finished in time: it goes on, follow it with `agentwire tasks`).
    /// The worker is an agent reading its messages (`agentwire report`), or
    /// `agentwire serve`.
    ///
    /// With --stream, the output is printed as the worker streams it (serve
    /// streams its command's stdout), and what the result adds at the end.
    ///
    /// Examples:
    ///   agentwire call reviewer "review the diff in PR 12"
    ///   git diff | agentwire call reviewer - --timeout 10m
    ///   agentwire call coder "run the tests" --stream   # output as it comes
    ///   agentwire --json call coder "run the tests"
    #[command(verbatim_doc_comment)]
    Call {
        /// The worker: a contact's petname or unique key prefix
        peer: String,
        /// What to do; `-` reads stdin, which keeps it out of the process list
        text: String,
        /// How long to wait for the result (at most 10m)
        #[arg(long, default_value = "5m", value_parser = parse_wait)]
        timeout: Duration,
        /// Print the output as it streams (with --json: one
        /// {"chunk":{task,seq,text}} line per piece, then the result)
        #[arg(long)]
        stream: bool,
    },
    /// Send a file to a contact: encrypted, in parts, checked by hash
    ///
    /// The file goes as encrypted parts, then an offer with its size and
    /// SHA-256; the contact's daemon checks both and keeps it under a safe
    /// new name in its home (`recv` shows where). Prints the offer's id:
    /// `status ID` says `delivered` once the file is kept. Sending the same
    /// file again after an interruption continues where it stopped.
    ///
    /// Examples:
    ///   agentwire send-file reviewer ./diff.patch
    ///   agentwire send-file builder dist/app.tar.gz --max-size 500M --wait
    #[command(verbatim_doc_comment)]
    SendFile {
        /// The contact
        peer: String,
        /// The file
        path: PathBuf,
        /// Refuse a file larger than this (e.g. 500K, 64M, 1G; at most 1G)
        #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
        max_size: u64,
        /// The name to offer it under [default: the file's own name]
        #[arg(long)]
        name: Option<String>,
        /// Wait until the contact's daemon has checked and kept the file
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (at most 10m)
        #[arg(long, default_value = "5m", value_parser = parse_wait)]
        timeout: Duration,
    },
    /// Show or change this identity's card: what its contacts see of it
    ///
    /// The card (a name, a description, capability tags, whether it takes
    /// tasks) is sent to every contact inside the encryption when it
    /// changes, and to each new contact; `discover` finds contacts by it.
    ///
    /// Examples:
    ///   agentwire card
    ///   agentwire card set --name "Rust reviewer" --capability code-review,rust --takes-tasks
    ///   agentwire card set --description "Reviews diffs; answers in minutes"
    #[command(verbatim_doc_comment)]
    Card {
        #[command(subcommand)]
        action: Option<CardAction>,
    },
    /// Find contacts by capability, with whether each is online
    ///
    /// Lists contacts whose card has the capability (all contacts without
    /// --capability). Contacts not heard from in the last minute are asked
    /// whether they are there, and given --wait to answer.
    ///
    /// With --relay, looks in the relay's directory instead: identities
    /// that listed themselves there (`card publish`), each with the invite
    /// to pair with it. Every listing is checked (signed by its key for
    /// this relay, its invite made by that key) before it is shown.
    ///
    /// Examples:
    ///   agentwire discover --capability code-review
    ///   agentwire discover --json
    ///   agentwire discover --wait 0s        # no asking: what is known now
    ///   agentwire discover --relay --capability code-review
    #[command(verbatim_doc_comment)]
    Discover {
        /// Only contacts whose card lists this tag
        #[arg(long, value_name = "TAG")]
        capability: Option<String>,
        /// How long to wait for contacts to answer (at most 30s)
        #[arg(long, default_value = "2s", value_parser = parse_wait)]
        wait: Duration,
        /// Look in the relay's directory, not among the contacts
        #[arg(long, conflicts_with = "wait")]
        relay: bool,
    },
    /// List tasks both ways, newest first: those you asked and were given
    ///
    /// Examples:
    ///   agentwire tasks
    ///   agentwire tasks --max 100 --json
    #[command(verbatim_doc_comment)]
    Tasks {
        /// At most N tasks (1 to 100000)
        #[arg(long, default_value_t = 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
        max: usize,
    },
    /// Stop a task you asked for; its worker is told
    ///
    /// Examples:
    ///   agentwire cancel 01a215a5-6c1e-7f7e-9d1a-2b3c4d5e6f70
    #[command(verbatim_doc_comment)]
    Cancel {
        /// The task id, as `call` or `tasks` shows it
        task: String,
    },
    /// Report on a task you were given: working, input-required, completed,
    /// failed or rejected
    ///
    /// With `completed`, TEXT is the result sent back; with the others, the
    /// reason (optional). TEXT `-` reads stdin.
    ///
    /// Examples:
    ///   agentwire report 01a215a5-... working
    ///   agentwire report 01a215a5-... completed "all 197 tests pass"
    ///   make test 2>&1 | agentwire report 01a215a5-... completed -
    ///   agentwire report 01a215a5-... rejected "I only review Python"
    #[command(verbatim_doc_comment)]
    Report {
        /// The task id (the id of the task message)
        task: String,
        /// working, input-required, completed, failed or rejected
        #[arg(value_parser = parse_report_state)]
        state: agentwire_api::TaskState,
        /// The result (completed) or the reason; `-` reads stdin
        text: Option<String>,
    },
    /// Answer messages on your own: run a command for each chat or task
    ///
    /// CMD runs with `sh -c` once per chat or task message, the body on its
    /// stdin, and AGENTWIRE_FROM (petname), AGENTWIRE_FROM_KEY (key id),
    /// AGENTWIRE_MESSAGE_ID, AGENTWIRE_KIND, AGENTWIRE_THREAD and, for a
    /// task, AGENTWIRE_TASK_ID set. Its stdout goes back: as the task's
    /// result (the task is `working` meanwhile), or as a chat reply in the
    /// message's thread; an empty output sends nothing. A command that fails
    /// or times out fails its task with the exit code and the end of stderr;
    /// a task that does not fit in the queue, or comes too fast from one
    /// contact, is `rejected` with the reason. `cancel` from the requester
    /// stops the command. Results are never answered. SIGTERM or Ctrl-C:
    /// nothing new starts, running commands get 10 s, then stop.
    ///
    /// Presets: claude = `claude -p --output-format text`,
    ///          codex  = `codex exec --skip-git-repo-check -`
    ///
    /// Examples:
    ///   agentwire --as upper serve --on-message 'tr a-z A-Z'
    ///   agentwire --as reviewer serve --preset claude --workdir ~/reviews \
    ///       --allow-write ~/.claude     # each caller confined to ~/reviews/KEYID
    ///   agentwire --as runner serve --on-message ./run-task.sh \
    ///       --concurrency 4 --timeout 30m --queue 100
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),
    /// Runs a command of `serve --workdir` in its sandbox (internal: serve
    /// starts it inside a new user namespace)
    #[command(hide = true)]
    SandboxExec {
        /// The command's own directory, kept writable
        #[arg(long)]
        dir: PathBuf,
        /// More paths kept writable
        #[arg(long)]
        allow_write: Vec<PathBuf>,
        /// The user to run the command as
        #[arg(long)]
        uid: u32,
        /// The group to run the command as
        #[arg(long)]
        gid: u32,
        /// The command
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Receive (consume) unread messages; exit code 1 when there are none
    ///
    /// Only what reaches stdout is marked read: `recv | head -1` leaves the
    /// rest unread.
    ///
    /// Examples:
    ///   agentwire recv                      # what is there now
    ///   agentwire recv --wait 30s           # block until something arrives
    ///   agentwire --as coder recv --from planner --max 1
    ///   agentwire --json recv --wait 5m     # one JSON object, for programs
    #[command(verbatim_doc_comment)]
    Recv {
        /// Only from this contact
        #[arg(long)]
        from: Option<String>,
        /// At most N messages (1 to 1000)
        #[arg(long, default_value_t = 100, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
        max: usize,
        /// Wait up to this long for a message to arrive (e.g. 30s)
        #[arg(long, value_name = "DURATION", value_parser = parse_wait)]
        wait: Option<Duration>,
    },
    /// Show unread messages without consuming them
    ///
    /// Examples:
    ///   agentwire inbox                  # the unread count, then the messages
    ///   agentwire inbox --from planner --max 5
    #[command(verbatim_doc_comment)]
    Inbox {
        /// Only from this contact
        #[arg(long)]
        from: Option<String>,
        /// At most N messages (1 to 1000)
        #[arg(long, default_value_t = 100, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
        max: usize,
    },
    /// Speak JSON lines on stdin/stdout, for agents that keep a process open
    ///
    /// Run it as `agentwire connect --json`: it speaks JSON only, and refuses
    /// to start without --json.
    ///
    /// Each stdin line is a command object: {"op":"send","to":"bob","body":"hi"},
    /// {"op":"recv"}, {"op":"ack","ids":[...]}, {"op":"status","id":"..."},
    /// {"op":"sent"}, {"op":"inbox"}, {"op":"contacts"}, {"op":"whoami"},
    /// {"op":"invite"}; an optional "ref" is echoed in the answer. Stdout gets
    /// one object per line: {"event":"result",...} or {"event":"error",...} for
    /// each command, {"event":"message",...} for each new message (acknowledge
    /// it with ack, or take it with recv) and {"event":"state",...} when a sent
    /// message changes state.
    ///
    /// Examples:
    ///   agentwire connect --json
    ///   echo '{"op":"send","to":"coder","body":"hi"}' | agentwire connect --json
    #[command(verbatim_doc_comment)]
    Connect,
    /// Serve the daemon's API over HTTP on loopback, for one-shot agents
    ///
    /// Every request needs `Authorization: Bearer TOKEN` (the token is in
    /// bridge.token in the home, created 0600). Endpoints:
    ///   POST /v1/send            {"to":"coder","body":"...","kind"?,"priority"?,"reply_to"?,"thread"?}
    ///   GET  /v1/recv?wait=SECS  consume (long-poll up to SECS, at most 600)
    ///   GET  /v1/inbox?wait=SECS peek (long-poll too; takes nothing)
    ///   GET  /v1/status/ID       a sent message's state
    ///   GET  /v1/contacts
    ///
    /// Examples:
    ///   agentwire bridge &
    ///   curl -s -H "Authorization: Bearer $(cat ~/.agentwire/bridge.token)" \
    ///       'http://127.0.0.1:7879/v1/recv?wait=30'
    #[command(verbatim_doc_comment)]
    Bridge {
        /// Address to listen on (keep it on loopback)
        #[arg(long, default_value = "127.0.0.1:7879")]
        listen: SocketAddr,
        /// Listen on a non-loopback address although the bridge speaks plain
        /// HTTP (only behind a TLS proxy)
        #[arg(long)]
        allow_remote: bool,
    },
    /// Serve MCP on stdin/stdout, for coding agents (Claude Code, Codex, ...)
    ///
    /// Tools: send, recv, peek, wait, status, sent, contacts, invite, accept,
    /// whoami.
    /// Each arriving message is also pushed: a notifications/claude/channel
    /// event (Claude Code channels) and a notifications/message log event (any
    /// client). `agentwire setup CLIENT` writes the client's config entry.
    ///
    /// Push modes:
    ///   notice   a short notice per message; it stays unread until a tool
    ///            (recv, wait) returns it [default]
    ///   message  the whole framed message, marked read once written to the
    ///            client: only for Claude Code started with the channel,
    ///            claude --dangerously-load-development-channels server:agentwire
    ///            (without it Claude Code drops the events: messages would be
    ///            marked read unseen)
    ///   off      no pushes
    ///
    /// Messages already waiting at start, and bursts (more than 3 notices, or
    /// beyond 10 whole messages), become one summary notice; those messages
    /// stay unread.
    ///
    /// Examples:
    ///   agentwire mcp                    # what `agentwire setup` configures
    ///   agentwire --as coder mcp --push off
    #[command(verbatim_doc_comment)]
    Mcp {
        /// What to push when a message arrives
        #[arg(long, value_enum, default_value_t = PushMode::Notice)]
        push: PushMode,
    },
    /// Add agentwire's MCP server to a client's config (or print the entry)
    ///
    /// Writes the `agentwire` entry into the client's config file, keeping
    /// every other entry, and says what it changed. A file it cannot parse is
    /// left untouched (exit 3). Files:
    ///   claude   ./.mcp.json                 (--scope user: ~/.claude.json)
    ///   codex    ~/.codex/config.toml        ($CODEX_HOME; --scope project: ./.codex/config.toml)
    ///   cursor   ./.cursor/mcp.json          (--scope user: ~/.cursor/mcp.json)
    ///   gemini   ./.gemini/settings.json     (--scope user: ~/.gemini/settings.json)
    ///
    /// Examples:
    ///   agentwire setup claude                 # then start `claude` in this directory
    ///   agentwire --as coder setup codex
    ///   agentwire setup claude --push message  # for Claude Code channels
    ///   agentwire setup claude --hooks         # plus mail at each prompt and stop
    ///   agentwire setup gemini --print         # show the entry, change nothing
    #[command(verbatim_doc_comment)]
    Setup(SetupArgs),
    /// Run a command for each message that arrives (a wake-up for idle agents)
    ///
    /// CMD runs with `sh -c`, one message at a time, the message as JSON on its
    /// stdin and AGENTWIRE_MESSAGE_ID, AGENTWIRE_FROM, AGENTWIRE_KIND set. The
    /// message stays unread: the command takes it (`agentwire recv`) or leaves it.
    ///
    /// Examples:
    ///   agentwire watch --exec 'notify-send "mail from $AGENTWIRE_FROM"'
    ///   agentwire --as coder watch --exec 'agentwire --as coder recv >> inbox.log'
    #[command(verbatim_doc_comment)]
    Watch {
        /// The command to run
        #[arg(long, value_name = "CMD")]
        exec: String,
    },
    /// Print unread messages for an agent's hook (consumes them)
    ///
    /// Examples:
    ///   agentwire setup claude --hooks    # installs `agentwire hook claude`
    #[command(verbatim_doc_comment)]
    Hook {
        #[command(subcommand)]
        client: HookClient,
    },
    /// Start, stop or inspect the daemon (commands start it on demand)
    ///
    /// Examples:
    ///   agentwire daemon status
    ///   agentwire daemon stop
    ///   AGENTWIRE_LOG=debug agentwire daemon run   # in the foreground, with logs
    #[command(verbatim_doc_comment)]
    Daemon {
        #[command(subcommand)]
        action: DaemonAction,
    },
}

/// The flags of `agentwire serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The command to run for each message (with `sh -c`)
    #[arg(long, value_name = "CMD", conflicts_with = "preset")]
    pub(crate) on_message: Option<String>,
    /// A ready-made command instead of --on-message
    #[arg(long, value_enum)]
    pub(crate) preset: Option<ServePreset>,
    /// Commands running at once (1 to 64)
    #[arg(long, default_value_t = 2, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub(crate) concurrency: usize,
    /// Messages waiting for a free slot, at most (1 to 10000); a task beyond
    /// it is rejected
    #[arg(long, default_value_t = 16, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub(crate) queue: usize,
    /// How long one command may run (1s to 24h); then it is stopped and its
    /// task fails
    #[arg(long, default_value = "10m", value_parser = parse_command_timeout)]
    pub(crate) timeout: Duration,
    /// Run each command in a directory of its sender's own under DIR
    /// (DIR/KEYID, made 0700; never a link), the only place it can write
    /// [default: serve's directory, not confined]
    #[arg(long, value_name = "DIR")]
    pub(crate) workdir: Option<PathBuf>,
    /// With --workdir: also let commands write here (e.g. ~/.claude for
    /// --preset claude); may be repeated
    #[arg(long, value_name = "PATH", requires = "workdir")]
    pub(crate) allow_write: Vec<PathBuf>,
    /// With --workdir: run commands in their directories without confining
    /// them (they can write anywhere you can); for machines without user
    /// namespaces
    #[arg(long, requires = "workdir", conflicts_with = "allow_write")]
    pub(crate) no_isolation: bool,
    /// Messages a minute one contact may have run (1 to 10000); a task over
    /// it is rejected
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) rate: u32,
    /// Answer nothing this many replies or more into a chain of replies
    /// (1 to 255): stops two bots answering each other for ever
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=255))]
    pub(crate) max_hops: u8,
}

/// Ready-made commands for `serve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ServePreset {
    /// Claude Code in print mode: `claude -p --output-format text`
    Claude,
    /// OpenAI Codex: `codex exec --skip-git-repo-check -`
    Codex,
}

/// The flags of `agentwire setup`.
#[derive(Debug, Args)]
pub(crate) struct SetupArgs {
    /// The client to configure
    #[arg(value_enum)]
    pub(crate) client: SetupClient,
    /// Print the entry instead of writing it
    #[arg(long)]
    pub(crate) print: bool,
    /// Project file (in --dir) or the user's own file [default: user for
    /// codex, project for the others]
    #[arg(long, value_enum)]
    pub(crate) scope: Option<SetupScope>,
    /// Project directory for the project scope
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub(crate) dir: PathBuf,
    /// Name of the server entry (the channel's name in Claude Code)
    #[arg(long, default_value = "agentwire")]
    pub(crate) entry: String,
    /// Push mode the server runs with (see `agentwire mcp --help`)
    #[arg(long, value_enum, default_value_t = PushMode::Notice)]
    pub(crate) push: PushMode,
    /// Claude Code only: also install the wake-up hooks (`agentwire hook
    /// claude` on UserPromptSubmit and Stop) in .claude/settings.local.json
    /// (--scope user: ~/.claude/settings.json)
    #[arg(long)]
    pub(crate) hooks: bool,
}

/// What `agentwire mcp` pushes when a message arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum PushMode {
    /// A short notice; the message stays unread until a tool returns it
    Notice,
    /// The whole framed message, marked read once written to the client
    Message,
    /// Nothing
    Off,
}

impl PushMode {
    /// The flag's spelling.
    pub(crate) fn name(self) -> &'static str {
        match self {
            PushMode::Notice => "notice",
            PushMode::Message => "message",
            PushMode::Off => "off",
        }
    }
}

/// Clients `agentwire setup` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum SetupClient {
    /// Claude Code
    Claude,
    /// OpenAI Codex CLI
    Codex,
    /// Cursor
    Cursor,
    /// Gemini CLI
    Gemini,
}

/// Which config file `agentwire setup` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum SetupScope {
    /// The project's file, in --dir
    Project,
    /// The user's own file, in the home directory
    User,
}

#[derive(Debug, Subcommand)]
pub(crate) enum HookClient {
    /// Claude Code: reads the hook input on stdin; prints additionalContext
    /// (UserPromptSubmit, SessionStart) or a block decision (Stop) when there is
    /// mail, nothing otherwise. In .claude/settings.json:
    /// "hooks": {"UserPromptSubmit": [{"hooks": [{"type": "command", "command": "agentwire hook claude"}]}]}
    ///
    /// A Stop is blocked for mail at most --max-continues times in a row
    /// (Claude Code says so with `stop_hook_active`); after that the session
    /// stops and the mail waits for the next prompt, so a contact that keeps
    /// writing cannot keep a session running.
    Claude {
        /// Stops in a row that mail may turn into a continuation (0: never
        /// block a Stop; mail waits for the next prompt)
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
        max_continues: u32,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ContactsAction {
    /// Give a contact another name
    Rename {
        /// Current petname or unique key prefix
        peer: String,
        /// New petname
        new_name: String,
    },
    /// Let a contact send you more: chat, task, file (or all)
    ///
    /// Examples:
    ///   agentwire contacts allow alice task
    ///   agentwire contacts allow alice task,file
    #[command(verbatim_doc_comment)]
    Allow {
        /// Petname or unique key prefix
        peer: String,
        /// Permissions, comma-separated
        #[arg(value_delimiter = ',', required = true)]
        permissions: Vec<String>,
    },
    /// Stop a contact sending you some kinds: chat, task, file (or all)
    ///
    /// What it sends of those kinds from now on is refused by your daemon,
    /// never shown to you, and answered `rejected` with the reason.
    ///
    /// Examples:
    ///   agentwire contacts deny alice task    # chat only from now on
    ///   agentwire contacts deny alice all     # nothing at all
    #[command(verbatim_doc_comment)]
    Deny {
        /// Petname or unique key prefix
        peer: String,
        /// Permissions, comma-separated
        #[arg(value_delimiter = ',', required = true)]
        permissions: Vec<String>,
    },
    /// Forget a contact and tell it (its messages stay here)
    ///
    /// The contact's daemon is told by an encrypted message: it lists you
    /// as `removed`, marks `failed` what it sent you that had not arrived,
    /// and refuses further sends to you (exit 21). A new invite, either
    /// way, pairs you again.
    ///
    /// Examples:
    ///   agentwire contacts remove alice
    ///   agentwire contacts remove 3f9a2c      # by key prefix
    #[command(verbatim_doc_comment)]
    Remove {
        /// Petname or unique key prefix
        peer: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CardAction {
    /// Change the card (only the fields given); contacts are sent it
    ///
    /// Examples:
    ///   agentwire card set --name "Rust reviewer" --takes-tasks
    ///   agentwire card set --capability code-review,rust,python
    ///   agentwire card set --capability ""      # no capabilities
    #[command(verbatim_doc_comment)]
    Set {
        /// How it presents itself (one line, at most 64 bytes)
        #[arg(long)]
        name: Option<String>,
        /// What it does (at most 1024 bytes)
        #[arg(long)]
        description: Option<String>,
        /// Capability tags, comma-separated, replacing the old ones (a-z,
        /// 0-9, '-', '_', '.', '+')
        #[arg(long = "capability", value_name = "TAGS")]
        capabilities: Option<String>,
        /// It takes tasks
        #[arg(long, conflicts_with = "no_tasks")]
        takes_tasks: bool,
        /// It does not take tasks
        #[arg(long)]
        no_tasks: bool,
    },
    /// List this identity in its relay's directory, so that others can
    /// find it by capability (`discover --relay`) and pair with it
    ///
    /// Nothing is listed unless you run this. The listing shows your card
    /// and carries a fresh invite (valid 30 days) offering what --allow
    /// says; after each redemption, and each `card set`, the daemon lists
    /// a new one. Anyone who can reach the relay can read the listing and
    /// pair with you: offer `task` or `file` only if you mean it.
    ///
    /// Examples:
    ///   agentwire card set --name "Rust reviewer" --capability code-review,rust
    ///   agentwire card publish                  # whoever pairs may chat
    ///   agentwire card publish --allow chat,task
    #[command(verbatim_doc_comment)]
    Publish {
        /// What whoever pairs through the listing may send you: chat,
        /// task, file, all
        #[arg(
            long,
            value_name = "PERMS",
            default_value = "chat",
            value_delimiter = ','
        )]
        allow: Vec<String>,
    },
    /// Take this identity out of its relay's directory; the listed invite
    /// stops working
    ///
    /// Examples:
    ///   agentwire card unpublish
    #[command(verbatim_doc_comment)]
    Unpublish,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DaemonAction {
    /// Start the daemon in the background (no-op if running)
    Start,
    /// Stop the daemon
    Stop,
    /// Is it running; identities, relay, queued and dropped counts
    Status,
    /// Run the daemon in the foreground (what `start` runs)
    Run,
}

#[derive(Debug, Args)]
pub(crate) struct RelayArgs {
    /// Address to listen on; use 0.0.0.0:7878 on a public host, port 0 for any free port
    #[arg(long, env = "AGENTWIRE_RELAY_LISTEN", default_value = agentwire_relay::DEFAULT_LISTEN)]
    pub(crate) listen: SocketAddr,
    /// Where to store queues: a SQLite file [default: relay.db in the
    /// home], or `postgres://USER@HOST:PORT/DATABASE` for a PostgreSQL
    /// database that several relay nodes share (a cluster). Parts the URL
    /// leaves out come from PGHOST, PGPORT, PGUSER, PGPASSWORD and
    /// PGDATABASE; keep the password there, not on the command line. Add
    /// ?sslmode=verify-full (and &sslrootcert=FILE) for TLS to the database
    #[arg(long, env = "AGENTWIRE_RELAY_DB", value_name = "PATH|URL")]
    pub(crate) db: Option<String>,
    /// PostgreSQL only: connections this node keeps open to the database,
    /// at most (plus one that listens for other nodes' notifications)
    #[arg(long, value_name = "N", default_value_t = agentwire_relay::DEFAULT_POSTGRES_POOL_SIZE as u16,
          value_parser = clap::value_parser!(u16).range(2..=1000))]
    pub(crate) db_pool_size: u16,
    /// Require clients to present the token in this file (first line, 1-512 bytes)
    #[arg(long, value_name = "FILE")]
    pub(crate) access_token_file: Option<PathBuf>,
    /// Serve /metrics (and the counts in /health) to requests bearing the
    /// token in this file (`Authorization: Bearer TOKEN`), from anywhere;
    /// without it, to loopback addresses only
    #[arg(long, value_name = "FILE")]
    pub(crate) metrics_token_file: Option<PathBuf>,
    /// Serve wss:// with this PEM certificate chain (needs --tls-key)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Print the startup line as JSON ({"event":"listening","url":..})
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
}

/// Relay limits; each violation is answered with an error frame naming it.
#[derive(Debug, Args)]
#[command(next_help_heading = "Limits")]
pub(crate) struct LimitArgs {
    /// Largest frame in bytes (payload limit is this minus 66)
    #[arg(long, value_name = "BYTES", default_value_t = agentwire_relay::DEFAULT_MAX_FRAME_BYTES,
          value_parser = clap::value_parser!(u32).range(1024..=16 * 1024 * 1024))]
    pub(crate) max_frame_bytes: u32,
    /// Largest number of simultaneous connections
    #[arg(long, value_name = "N", default_value_t = agentwire_relay::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub(crate) max_connections: usize,
    /// Largest number of simultaneous connections from one IP address
    #[arg(long, value_name = "N", default_value_t = agentwire_relay::DEFAULT_MAX_CONNECTIONS_PER_IP,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub(crate) max_connections_per_ip: usize,
    /// Frames per second one key may send (bursts of twice that)
    #[arg(long, value_name = "N", default_value_t = agentwire_relay::DEFAULT_KEY_FRAMES_PER_SEC,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) key_rate: u32,
    /// Frames per second one IP address may send (bursts of twice that)
    #[arg(long, value_name = "N", default_value_t = agentwire_relay::DEFAULT_IP_FRAMES_PER_SEC,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) ip_rate: u32,
    /// Largest number of envelopes queued for one recipient
    #[arg(long, value_name = "N", default_value_t = agentwire_relay::DEFAULT_MAX_QUEUE_PER_RECIPIENT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_queue: u32,
    /// Largest number of envelopes one sender may have queued for one
    /// recipient, its share of that queue [default: a quarter of --max-queue]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_queue_per_sender: Option<u32>,
    /// How long an undelivered envelope is kept (e.g. 7d, 12h, 90s)
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
    pub(crate) envelope_ttl: Duration,
    /// Largest number of identities the opt-in directory lists (`card
    /// publish`); 0 keeps no directory
    #[arg(long, value_name = "N", default_value_t = agentwire_relay::DEFAULT_MAX_DIRECTORY_ENTRIES,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub(crate) max_directory_entries: u32,
    /// How long a client has to answer the challenge
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub(crate) auth_timeout: Duration,
    /// How often idle connections are pinged (1s to 10m); a connection
    /// silent for three intervals is closed
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_ping_interval)]
    pub(crate) ping_interval: Duration,
}

/// A ping interval: 1 s to 10 min.
fn parse_ping_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_duration(text)?;
    if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&interval) {
        return Err(format!(
            "{text} is out of range: the ping interval is 1s to 10m"
        ));
    }
    Ok(interval)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as 90s, 15m, 12h or 7d"))?;
    if duration < Duration::from_millis(100) {
        return Err("must be at least 100ms".into());
    }
    if duration > Duration::from_secs(365 * 24 * 3600) {
        return Err("must be at most 365d".into());
    }
    Ok(duration)
}

/// A size such as `500K`, `64M`, `1G` or a number of bytes; at most 1 GiB.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write e.g. 500K, 64M or 1G"))?;
    let factor: u64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("{text:?}: the unit is K, M or G")),
    };
    let size = number
        .checked_mul(factor)
        .filter(|size| *size > 0 && *size <= 1 << 30)
        .ok_or_else(|| format!("{text:?}: a size is 1 byte to 1G"))?;
    Ok(size)
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as 15m, 24h or 7d"))?;
    if duration < Duration::from_secs(1) || duration > Duration::from_secs(30 * 24 * 3600) {
        return Err("must be between 1s and 30d".into());
    }
    Ok(duration)
}

/// A delivery state `send --wait` can wait for.
fn parse_waitable(text: &str) -> Result<agentwire_api::DeliveryState, String> {
    match text.parse() {
        Ok(state) if agentwire_api::DeliveryState::WAITABLE.contains(&state) => Ok(state),
        _ => Err(format!(
            "{text:?} is not a state to wait for; use relayed, delivered or read"
        )),
    }
}

fn parse_command_timeout(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as 90s or 30m"))?;
    if duration < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    if duration > Duration::from_secs(24 * 3600) {
        return Err("must be at most 24h".into());
    }
    Ok(duration)
}

fn parse_report_state(text: &str) -> Result<agentwire_api::TaskState, String> {
    use agentwire_api::TaskState;
    match text.parse() {
        Ok(state) if !matches!(state, TaskState::Submitted | TaskState::Canceled) => Ok(state),
        _ => Err(format!(
            "{text:?} is not a state a worker reports; use working, input-required, completed, failed or rejected"
        )),
    }
}

fn parse_wait(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as 30s or 5m"))?;
    if duration > agentwire_daemon::MAX_WAIT {
        return Err("must be at most 10m".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_are_bounded_and_explained() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 24 * 3600)));
        assert!(parse_duration("1ms").unwrap_err().contains("at least"));
        assert!(parse_duration("soon").unwrap_err().contains("such as"));
        assert!(parse_duration("400d").unwrap_err().contains("at most"));
    }

    /// Each command's help: its own options, then the global ones under
    /// their own heading, `--as` only where an identity is meant, and
    /// examples.
    #[test]
    fn each_command_teaches_by_example_and_keeps_global_flags_apart() {
        let mut command = command();
        command.build();
        for sub in command.get_subcommands_mut() {
            let name = sub.get_name().to_owned();
            // Hidden commands are internal (run by agentwire itself).
            if name == "help" || sub.is_hide_set() {
                continue;
            }
            let help = sub.render_long_help().to_string();
            assert!(
                help.contains("Examples:"),
                "`{name} --help` has no examples"
            );
            let global = help
                .find("Global options:")
                .unwrap_or_else(|| panic!("`{name} --help` has no global options heading"));
            assert!(help[global..].contains("--home"), "{name}: {help}");
            assert!(!help[..global].contains("--home"), "{name}: {help}");
            let offers_as = help.contains("--as <NAME>");
            assert_eq!(
                offers_as,
                !HOME_WIDE.contains(&name.as_str()),
                "`{name} --help` and --as: {help}"
            );
        }
    }

    /// `--as` stays accepted where its help hides it, before or after the
    /// subcommand, and the environment still sets it.
    #[test]
    fn as_is_parsed_wherever_it_is_written() {
        use clap::FromArgMatches;
        for args in [
            &["agentwire", "--as", "coder", "daemon", "status"][..],
            &["agentwire", "daemon", "status", "--as", "coder"],
            &["agentwire", "send", "--as", "coder", "bob", "hi"],
            &["agentwire", "--as", "coder", "send", "bob", "hi"],
        ] {
            let matches = command().try_get_matches_from(args).unwrap();
            let cli = Cli::from_arg_matches(&matches).unwrap();
            assert_eq!(cli.global.identity.as_deref(), Some("coder"), "{args:?}");
        }
    }
}
