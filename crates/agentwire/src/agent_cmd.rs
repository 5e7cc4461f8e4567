//! The agent-facing commands: init, whoami, contacts, send, recv, inbox,
//! daemon. Each is one request to the daemon and one printout: compact text
//! lines, or JSON with --json.

use std::io::{BufRead, Read};
use std::time::Duration;

use agentwire_daemon::Home;
use agentwire_daemon::api::{self, ContactState, SendOutcome};
use anyhow::Context;

use crate::cli::{Command, ContactsAction, DaemonAction, GlobalArgs};
use crate::daemon_client::{call, call_running, start};
use crate::exit::{CONFIG, Failure, NOTHING, USAGE, WithCode};

/// How long `daemon stop` waits for the daemon to exit.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

pub(crate) fn run(global: &GlobalArgs, command: Command) -> Result<(), Failure> {
    let home = Home::resolve(global.home.as_deref()).code(CONFIG)?;
    let identity = global.identity.clone();
    let out = Output { json: global.json };
    match command {
        Command::Relay(_)
        | Command::Connect
        | Command::Bridge { .. }
        | Command::Watch { .. }
        | Command::Mcp { .. }
        | Command::Setup(_)
        | Command::Serve(_)
        | Command::SandboxExec { .. }
        | Command::Hook { .. } => {
            // main runs these itself; reaching here is a dispatch bug.
            Err(Failure::new(
                crate::exit::INTERNAL,
                anyhow::anyhow!("this command is not an agent command"),
            ))
        }
        Command::Daemon { action } => daemon(global, &home, action),
        Command::Call {
            peer,
            text,
            timeout,
            stream,
        } => crate::task_cmd::call(&home, out, identity, peer, text, timeout, stream),
        Command::Tasks { max } => crate::task_cmd::list(&home, out, identity, max),
        Command::SendFile {
            peer,
            path,
            max_size,
            name,
            wait,
            timeout,
        } => crate::task_cmd::send_file(
            &home,
            out,
            identity,
            (peer, path, name),
            max_size,
            wait.then_some(timeout),
        ),
        Command::Card { action } => crate::task_cmd::card(&home, out, identity, action),
        Command::Discover {
            capability,
            wait,
            relay,
        } => crate::task_cmd::discover(&home, out, identity, capability, (!relay).then_some(wait)),
        Command::Cancel { task } => crate::task_cmd::cancel(&home, out, identity, task),
        Command::Report { task, state, text } => {
            crate::task_cmd::report(&home, out, identity, task, state, text)
        }
        Command::Init {
            name,
            relay,
            relay_token_file,
            relay_ca,
            no_check,
        } => {
            let (relay_token, relay_ca) = read_relay_files(relay_token_file, relay_ca)?;
            // The one command that may create a home.
            if !home.daemon_running() {
                crate::daemon_client::spawn_daemon(&home)?;
            }
            let created = call(
                &home,
                api::Init {
                    name,
                    relay,
                    relay_token,
                    relay_ca,
                    no_check,
                },
                Duration::ZERO,
            )?;
            out.print(&created, |c| {
                if c.siblings.is_empty() {
                    format!("created {} {}", c.name, c.short_id)
                } else {
                    format!(
                        "created {} {} (contacts: {})",
                        c.name,
                        c.short_id,
                        c.siblings.join(", ")
                    )
                }
            })?;
            out.tell(&format!(
                "a daemon for {} now runs in the background; `agentwire daemon status` shows it",
                home.root().display()
            ));
            Ok(())
        }
        Command::Config {
            relay,
            relay_token_file,
            no_relay_token,
            relay_ca,
            no_relay_ca,
            no_check,
            retention,
        } => {
            let (relay_token, relay_ca) = read_relay_files(relay_token_file, relay_ca)?;
            let relay_changes = relay.is_some()
                || relay_token.is_some()
                || no_relay_token
                || relay_ca.is_some()
                || no_relay_ca;
            let request = api::Configure {
                relay,
                relay_token,
                clear_relay_token: no_relay_token,
                relay_ca,
                clear_relay_ca: no_relay_ca,
                no_check,
                retention,
            };
            let settings = call(&home, request, Duration::ZERO)?;
            out.print(&settings, |s| {
                let relay = s
                    .relay
                    .clone()
                    .unwrap_or_else(|| "the daemon's own, on loopback".into());
                let token = if s.relay_token { "set" } else { "none" };
                let changed = if s.changed && relay_changes {
                    "; identities reconnect to it"
                } else {
                    ""
                };
                format!(
                    "relay {relay} (access token: {token}){changed}; read messages kept {}",
                    s.retention
                )
            })
        }
        Command::Whoami => {
            let me = call(&home, api::Whoami { identity }, Duration::ZERO)?;
            out.print(&me, |me| {
                format!("{} {} {}", me.name, me.short_id, me.address)
            })
        }
        Command::Contacts { action } => match action {
            None => {
                let list = call(&home, api::Contacts { identity }, Duration::ZERO)?;
                out.print_lines(&list, &list.contacts, |c| {
                    let permissions = if c.permissions.is_empty() {
                        "none".to_owned()
                    } else {
                        c.permissions.join(",")
                    };
                    let missing = if c.missing > 0 {
                        format!(" missing:{}", c.missing)
                    } else {
                        String::new()
                    };
                    format!(
                        "{} {} {} {} may-send:{permissions}{missing}",
                        c.name, c.short_id, c.via, c.state
                    )
                })?;
                if list.contacts.is_empty() {
                    out.tell(
                        "no contacts yet: pair with `agentwire invite` here and `agentwire accept` there",
                    );
                }
                for contact in &list.contacts {
                    if contact.state == ContactState::Removed {
                        out.tell(&format!(
                            "{} removed you: nothing more reaches it until a new invite pairs you again",
                            contact.name
                        ));
                    }
                }
                Ok(())
            }
            Some(ContactsAction::Rename { peer, new_name }) => {
                let renamed = call(
                    &home,
                    api::Rename {
                        identity,
                        peer,
                        new_name,
                    },
                    Duration::ZERO,
                )?;
                out.print(&renamed, |r| format!("renamed {} to {}", r.renamed, r.to))
            }
            Some(ContactsAction::Allow { peer, permissions }) => {
                permit(&home, out, identity, peer, permissions, true)
            }
            Some(ContactsAction::Deny { peer, permissions }) => {
                permit(&home, out, identity, peer, permissions, false)
            }
            Some(ContactsAction::Remove { peer }) => {
                let removed = call(&home, api::Remove { identity, peer }, Duration::ZERO)?;
                out.print(&removed, |r| {
                    if r.told {
                        format!(
                            "removed {}; it is told, and what it sends from now on is dropped",
                            r.removed
                        )
                    } else {
                        format!("removed {}", r.removed)
                    }
                })
            }
        },
        Command::Invite {
            ttl,
            allow,
            for_name,
        } => {
            let invite = call(
                &home,
                api::Invite {
                    identity,
                    ttl_ms: Some(millis(ttl)),
                    allow: Some(allow),
                    for_name,
                },
                Duration::ZERO,
            )?;
            out.print(&invite, |i| i.invite.clone())
        }
        Command::Accept {
            link,
            name,
            wait,
            allow,
        } => {
            let token = if link == "-" {
                read_stdin_line()?
            } else {
                note_argument("invite link", out.json);
                link
            };
            let request = api::Accept {
                identity,
                token,
                name,
                wait_ms: Some(millis(wait)),
                allow: Some(allow),
            };
            let contact = with_progress(
                out,
                "waiting for the inviter's daemon to answer",
                wait,
                || call(&home, request, wait),
            )?;
            out.print(&contact, |c| match c.state {
                ContactState::Active => format!("paired with {} {}", c.name, c.short_id),
                ContactState::Pending => format!(
                    "sent; {} {} is pending until the inviter's daemon answers",
                    c.name, c.short_id
                ),
                ContactState::Removed => format!("{} {} removed you", c.name, c.short_id),
            })
        }
        Command::Status { id } => {
            let sent = call(
                &home,
                api::State {
                    identity,
                    id,
                    ..api::State::default()
                },
                Duration::ZERO,
            )?;
            out.print(&sent, sent_line)
        }
        Command::Sent { max } => {
            let list = call(
                &home,
                api::Sent {
                    identity,
                    max: Some(max),
                },
                Duration::ZERO,
            )?;
            out.print_lines(&list, &list.messages, sent_line)
        }
        Command::Send {
            peer,
            text,
            kind,
            reply_to,
            thread,
            priority,
            wait,
            timeout,
        } => {
            let body = if text == "-" {
                read_body_from_stdin()?
            } else {
                note_argument("message body", out.json);
                text
            };
            let request = api::SendMessage {
                identity,
                to: peer,
                body,
                kind: Some(kind),
                reply_to,
                thread,
                priority: Some(priority),
                wait_ms: wait.is_some().then(|| millis(timeout)),
                wait,
            };
            let extra = if wait.is_some() {
                timeout
            } else {
                Duration::ZERO
            };
            let what = match wait {
                Some(state) => format!("waiting for the message to be {state}"),
                None => String::new(),
            };
            match with_progress(out, &what, extra, || call(&home, request, extra))? {
                SendOutcome::Queued(queued) => {
                    out.print(&queued, |q| format!("{} {} to {}", q.id, q.state, q.to))
                }
                SendOutcome::Waited(waited) => {
                    out.print(&waited, |w| sent_line(&w.sent))?;
                    let (id, state, wanted) = (&waited.sent.id, waited.sent.state, waited.wanted);
                    if state.is_failure() {
                        Err(Failure::new(
                            crate::exit::UNDELIVERABLE,
                            anyhow::anyhow!(
                                "message {id} {state}: it will not be delivered{}",
                                waited
                                    .sent
                                    .reason
                                    .as_ref()
                                    .map(|r| format!(" ({})", r.escape_debug()))
                                    .unwrap_or_default()
                            ),
                        ))
                    } else if !waited.reached {
                        let why = waited
                            .held_up_by
                            .map(|why| format!("; {why}"))
                            .unwrap_or_default();
                        Err(Failure::new(
                            crate::exit::NOT_YET,
                            anyhow::anyhow!(
                                "message {id} is {state}, not {wanted} yet after {}{why}; it is still on its way (follow it with `agentwire status {id}`)",
                                humantime::format_duration(timeout)
                            ),
                        ))
                    } else {
                        Ok(())
                    }
                }
            }
        }
        Command::Recv { from, max, wait } => {
            let wait = wait.unwrap_or(Duration::ZERO);
            let request = api::Recv {
                identity,
                from,
                max: Some(max),
                wait_ms: Some(millis(wait)),
                confirm: true,
                ..api::Recv::default()
            };
            // Held, printed, then taken: only what reached stdout is marked
            // read (`recv | head -1` leaves the rest unread).
            let (messages, held) = with_progress(out, "waiting for a message", wait, || {
                crate::daemon_client::call_held(&home, request, wait)
            })?;
            let (written, printed) = write_messages(out, &messages);
            held.confirm(written)
                .map_err(crate::daemon_client::failure)?;
            printed?;
            if messages.messages.is_empty() {
                out.tell(&if wait.is_zero() {
                    "no unread messages (wait for one with --wait 30s)".to_owned()
                } else {
                    format!(
                        "no unread messages after waiting {}",
                        humantime::format_duration(wait)
                    )
                });
                return Err(Failure::quiet(NOTHING));
            }
            Ok(())
        }
        Command::Inbox { from, max } => {
            let request = api::Inbox {
                identity,
                from,
                max: Some(max),
                wait_ms: None,
            };
            let messages = call(&home, request, Duration::ZERO)?;
            print_messages(out, &messages)
        }
    }
}

/// Runs `call`; meanwhile, when it may wait a second or more and stderr is
/// a terminal (and not with `--json`), a line there says what it waits for
/// and for how long, and is cleared at the end. Nothing otherwise.
pub(crate) fn with_progress<T>(
    out: Output,
    what: &str,
    limit: Duration,
    call: impl FnOnce() -> T,
) -> T {
    use std::io::{IsTerminal, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    if out.json
        || what.is_empty()
        || limit < Duration::from_secs(1)
        || !std::io::stderr().is_terminal()
    {
        return call();
    }
    /// Sets the flag when dropped, so the line is cleared and its thread
    /// ends even if `call` panics.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let started = std::time::Instant::now();
            let limit = humantime::format_duration(Duration::from_secs(limit.as_secs()));
            let mut shown = 0;
            let mut width = 0;
            while !done.load(Ordering::Relaxed) {
                let waited = started.elapsed().as_secs();
                if waited != shown || width == 0 {
                    shown = waited;
                    let line = format!("{what}: {waited}s of {limit} (Ctrl-C stops)");
                    width = width.max(line.len());
                    let _ = write!(std::io::stderr(), "\r{line:width$}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = write!(std::io::stderr(), "\r{:width$}\r", "");
        });
        let _done = Done(&done);
        call()
    })
}

/// The relay's access token and CA certificates, from the files named by
/// `--relay-token-file` and `--relay-ca`.
fn read_relay_files(
    token_file: Option<std::path::PathBuf>,
    ca_file: Option<std::path::PathBuf>,
) -> Result<(Option<String>, Option<String>), Failure> {
    let token = token_file.map(|path| read_token_file(&path)).transpose()?;
    let ca = ca_file.map(|path| read_ca_file(&path)).transpose()?;
    Ok((token, ca))
}

/// An access token: the first line of a file.
fn read_token_file(path: &std::path::Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the relay token file {}", path.display()))
        .map(|text| text.lines().next().unwrap_or("").trim().to_owned())
        .code(CONFIG)
}

/// Certificates to trust for the relay: a PEM file, checked here.
fn read_ca_file(path: &std::path::Path) -> Result<String, Failure> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the relay CA file {}", path.display()))
        .code(CONFIG)?;
    agentwire_client::roots_from_pem(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        .code(CONFIG)?;
    Ok(pem)
}

/// Notes on stderr that `what` came as an argument: every user of the
/// machine can read a process's arguments (`ps`). Not with `--json` (whose
/// stderr carries only errors), nor with `AGENTWIRE_ARGS_OK=1`.
pub(crate) fn note_argument(what: &str, json: bool) {
    if json || std::env::var_os("AGENTWIRE_ARGS_OK").is_some_and(|v| v == "1") {
        return;
    }
    eprintln!(
        "agentwire: note: the {what} was given as an argument, which every user of this machine \
         can read in the process list (ps); pass `-` and give it on stdin instead \
         (AGENTWIRE_ARGS_OK=1 silences this note)"
    );
}

/// A message body from stdin: at most the largest body, UTF-8.
pub(crate) fn read_body_from_stdin() -> Result<String, Failure> {
    let limit = agentwire_session::message::MAX_BODY_BYTES;
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .context("cannot read the message from stdin")
        .code(USAGE)?;
    if bytes.len() > limit {
        return Err(Failure::new(
            USAGE,
            anyhow::anyhow!(
                "the message on stdin is too long: the limit is {limit} bytes (128 KiB) a message; \
                 send a shorter one, or put the content in a file and send its path"
            ),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("the message on stdin is not UTF-8 text ({e})"))
        .code(USAGE)
}

/// How long a daemon with no identity lingers: `AGENTWIRE_DAEMON_IDLE_EXIT`
/// (a duration such as `60s`), or the default.
fn idle_exit() -> Result<Duration, agentwire_daemon::DaemonError> {
    match std::env::var("AGENTWIRE_DAEMON_IDLE_EXIT") {
        Ok(text) => humantime::parse_duration(&text).map_err(|e| {
            agentwire_daemon::DaemonError::Config(format!(
                "AGENTWIRE_DAEMON_IDLE_EXIT={text:?} is not a duration ({e}); write e.g. 60s"
            ))
        }),
        Err(_) => Ok(agentwire_daemon::DEFAULT_IDLE_EXIT),
    }
}

/// A duration as whole milliseconds, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Prints messages and, at a terminal, how many are unread; exits 1 when
/// there are none.
fn print_messages(out: Output, messages: &api::Messages) -> Result<(), Failure> {
    out.print_lines(messages, &messages.messages, message_line)?;
    if messages.messages.is_empty() {
        out.tell("no unread messages");
        return Err(Failure::quiet(NOTHING));
    }
    if let Some(unread) = messages.unread {
        out.tell(&format!(
            "{unread} unread, {} shown",
            messages.messages.len()
        ));
    }
    Ok(())
}

fn message_line(m: &api::MessageView) -> String {
    format!(
        "{} {}({}) {}: {}",
        m.id,
        m.from.name.as_deref().unwrap_or("?"),
        m.from.short_id,
        m.kind,
        m.body.escape_debug()
    )
}

/// Prints messages as far as stdout takes them: the ids written, and how
/// printing ended.
fn write_messages(out: Output, messages: &api::Messages) -> (Vec<String>, Result<(), Failure>) {
    let all = || messages.messages.iter().map(|m| m.id.clone()).collect();
    if out.json {
        return match json_text(messages).and_then(|text| write_line(&text)) {
            Ok(()) => (all(), Ok(())),
            Err(failure) => (Vec::new(), Err(failure)),
        };
    }
    let mut written = Vec::new();
    for message in &messages.messages {
        if let Err(failure) = write_line(&message_line(message)) {
            return (written, Err(failure));
        }
        written.push(message.id.clone());
    }
    (written, Ok(()))
}

fn sent_line(message: &api::SentView) -> String {
    let mut line = format!(
        "{} {} to {}({}) {} · sent {}",
        message.id,
        message.state,
        message.to.name.as_deref().unwrap_or("?"),
        message.to.short_id,
        message.kind,
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_millis(message.sent_at_ms)
        ),
    );
    let mut reached = vec![
        ("relayed", message.relayed_at_ms),
        ("delivered", message.delivered_at_ms),
        ("read", message.read_at_ms),
    ];
    if message.state.is_failure() {
        reached.push((message.state.name(), Some(message.updated_at_ms)));
    }
    for (state, at) in reached {
        if let Some(at) = at {
            let after = at.saturating_sub(message.sent_at_ms);
            line.push_str(&format!(" · {state} +{}", short_duration(after)));
        }
    }
    if let Some(reason) = &message.reason {
        line.push_str(&format!(" · refused: {}", reason.escape_debug()));
    }
    if message.overdue {
        line.push_str(
            " · overdue: the relay has held it longer than it keeps messages, without a word; \
             it may have lost it (ask the recipient, or send it again)",
        );
    }
    line
}

/// A time since sending, as short as it reads well: `4ms`, `2.1s`, `3m5s`.
fn short_duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => humantime::format_duration(Duration::from_secs(ms / 1000))
            .to_string()
            .replace(' ', ""),
    }
}

/// How a command prints its answer: text lines, or one JSON object with
/// `--json`. A closed stdout (`| head`) ends the command quietly.
#[derive(Clone, Copy)]
pub(crate) struct Output {
    pub(crate) json: bool,
}

impl Output {
    /// Says `text` on stderr for a person at a terminal (not with `--json`,
    /// and not when stdout goes to a pipe or a file: scripts see nothing new).
    pub(crate) fn tell(self, text: &str) {
        use std::io::IsTerminal;
        if !self.json && std::io::stdout().is_terminal() {
            eprintln!("{text}");
        }
    }

    /// One answer: its JSON, or `text(answer)`; either way with nothing in it
    /// that could act on a terminal or hide (see [`crate::untrusted`]).
    pub(crate) fn print<T: serde::Serialize>(
        self,
        answer: &T,
        text: impl Fn(&T) -> String,
    ) -> Result<(), Failure> {
        if self.json {
            write_line(&json_text(answer)?)
        } else {
            write_line(&crate::untrusted::for_terminal(&text(answer)))
        }
    }

    /// An answer that is a list: its JSON, or one text line per item.
    pub(crate) fn print_lines<T: serde::Serialize, I>(
        self,
        answer: &T,
        items: &[I],
        text: impl Fn(&I) -> String,
    ) -> Result<(), Failure> {
        if self.json {
            return write_line(&json_text(answer)?);
        }
        for item in items {
            write_line(&crate::untrusted::for_terminal(&text(item)))?;
        }
        Ok(())
    }
}

fn json_text<T: serde::Serialize>(answer: &T) -> Result<String, Failure> {
    serde_json::to_string(answer)
        .map(crate::untrusted::json_safe)
        .context("cannot encode the answer as JSON")
        .code(crate::exit::INTERNAL)
}

/// Writes one line to stdout; a closed stdout is the quiet end of the
/// command (its reader has what it wanted).
pub(crate) fn write_line(line: &str) -> Result<(), Failure> {
    write_text(&format!("{line}\n"))
}

/// Writes text to stdout as it is, flushed; a closed stdout is the quiet end
/// of the command.
pub(crate) fn write_text(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            Err(Failure::quiet(crate::exit::OK))
        }
        Err(error) => Err(Failure::new(
            crate::exit::INTERNAL,
            anyhow::anyhow!("cannot write to stdout: {error}"),
        )),
    }
}

/// The first line of stdin (for secrets that should not sit in the process
/// list, like an invite link).
fn read_stdin_line() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(agentwire_session::invite::MAX_TOKEN_LEN as u64 + 2)
        .read_line(&mut line)
        .context("cannot read the invite from stdin")
        .code(USAGE)?;
    Ok(line.trim().to_owned())
}

fn daemon(global: &GlobalArgs, home: &Home, action: DaemonAction) -> Result<(), Failure> {
    match action {
        DaemonAction::Run => {
            let runtime = crate::runtime(None)?;
            runtime
                .block_on(async {
                    let stop = crate::relay_cmd::shutdown_signal();
                    agentwire_daemon::run(home.clone(), idle_exit()?, stop).await
                })
                .code(crate::exit::CANNOT_START)
        }
        DaemonAction::Start => {
            if call_running(home, api::Status {})?.is_none() {
                start(home)?;
            }
            let status = call(home, api::Status {}, Duration::ZERO)?;
            print_status(global.json, &status)
        }
        DaemonAction::Stop => {
            let stopped = call_running(home, api::Stop {})?.is_some();
            // Returns once the daemon has exited (it lets go of the home's
            // lock last), so a command right after starts a fresh one.
            let deadline = std::time::Instant::now() + STOP_WAIT;
            while stopped && home.daemon_running() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            let exited = !home.daemon_running();
            write_line(&if global.json {
                serde_json::json!({"stopped": stopped, "exited": exited}).to_string()
            } else if !stopped {
                format!("no daemon running for {}", home.root().display())
            } else if exited {
                "daemon stopped".to_owned()
            } else {
                format!("daemon stopping (still finishing after {STOP_WAIT:?})")
            })
        }
        DaemonAction::Status => match call_running(home, api::Status {})? {
            Some(status) => print_status(global.json, &status),
            None => {
                write_line(&if global.json {
                    serde_json::json!({"running": false}).to_string()
                } else {
                    format!("no daemon running for {}", home.root().display())
                })?;
                Err(Failure::quiet(crate::exit::DAEMON_UNREACHABLE))
            }
        },
    }
}

fn print_status(json: bool, status: &api::DaemonStatus) -> Result<(), Failure> {
    let out = Output { json };
    out.print(status, |status| {
        let mut text = format!(
            "daemon running (pid {}), relay {}{}",
            status.pid,
            status.relay.as_deref().unwrap_or("?"),
            if status.local_relay { " (local)" } else { "" }
        );
        for identity in &status.identities {
            text.push_str(&format!(
                "\n  {} {} unread {} queued {}",
                identity.name, identity.short_id, identity.unread, identity.queued
            ));
            if let Some(reason) = &identity.queued_because {
                text.push_str(&format!(" (the relay declined: {reason})"));
            }
            if let Some(error) = &identity.relay_error {
                text.push_str(&format!(" (not connected: {error})"));
            }
        }
        text.push_str(&format!(
            "\n  queued {} dropped-from-non-contacts {} dropped-undecryptable {} refused-not-permitted {} invites-redeemed {}",
            status.queued,
            status.dropped_non_contact,
            status.dropped_undecryptable,
            status.refused_not_permitted,
            status.invites_redeemed
        ));
        text
    })
}

/// `contacts allow|deny`.
fn permit(
    home: &Home,
    out: Output,
    identity: Option<String>,
    peer: String,
    permissions: Vec<String>,
    allow: bool,
) -> Result<(), Failure> {
    let contact = call(
        home,
        api::Permit {
            identity,
            peer,
            permissions,
            allow,
        },
        Duration::ZERO,
    )?;
    out.print(&contact, |c| {
        if c.permissions.is_empty() {
            format!("{} may send you nothing now", c.name)
        } else {
            format!("{} may send you: {}", c.name, c.permissions.join(", "))
        }
    })
}
