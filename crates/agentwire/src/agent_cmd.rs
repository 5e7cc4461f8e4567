//! The agent-facing commands: init, whoami, contacts, send, recv, inbox,
//! daemon. Each is one request to the daemon and one printout: compact text
//! lines, or JSON with --json.

use std::io::{BufRead, Read};
use std::time::Duration;

use agentwire_daemon::Home;
use agentwire_daemon::api::Request;
use anyhow::Context;
use serde_json::Value;

use crate::cli::{Command, ContactsAction, DaemonAction, GlobalArgs};
use crate::daemon_client::{call, call_running, start};
use crate::exit::{CONFIG, Failure, NOTHING, USAGE, WithCode};

/// How long `daemon stop` waits for the daemon to exit.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

pub(crate) fn run(global: &GlobalArgs, command: Command) -> Result<(), Failure> {
    let home = Home::resolve(global.home.as_deref()).code(CONFIG)?;
    let identity = global.identity.clone();
    let (request, wait) = match command {
        Command::Relay(_)
        | Command::Connect
        | Command::Bridge { .. }
        | Command::Watch { .. }
        | Command::Mcp { .. }
        | Command::Setup(_)
        | Command::Hook { .. } => {
            // main runs these itself; reaching here is a dispatch bug.
            return Err(Failure::new(
                crate::exit::INTERNAL,
                anyhow::anyhow!("this command is not an agent command"),
            ));
        }
        Command::Daemon { action } => return daemon(global, &home, action),
        Command::Init {
            name,
            relay,
            relay_token_file,
        } => {
            let relay_token = relay_token_file
                .map(|path| {
                    std::fs::read_to_string(&path)
                        .with_context(|| {
                            format!("cannot read the relay token file {}", path.display())
                        })
                        .map(|text| text.lines().next().unwrap_or("").trim().to_owned())
                })
                .transpose()
                .code(CONFIG)?;
            (
                Request::Init {
                    name,
                    relay,
                    relay_token,
                },
                Duration::ZERO,
            )
        }
        Command::Whoami => (Request::Whoami { identity }, Duration::ZERO),
        Command::Contacts { action } => match action {
            None => (Request::Contacts { identity }, Duration::ZERO),
            Some(ContactsAction::Rename { peer, new_name }) => (
                Request::Rename {
                    identity,
                    peer,
                    new_name,
                },
                Duration::ZERO,
            ),
            Some(ContactsAction::Remove { peer }) => {
                (Request::Remove { identity, peer }, Duration::ZERO)
            }
        },
        Command::Invite { ttl } => (
            Request::Invite {
                identity,
                ttl_ms: Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            },
            Duration::ZERO,
        ),
        Command::Accept { link, name, wait } => (
            Request::Accept {
                identity,
                token: if link == "-" {
                    read_stdin_line()?
                } else {
                    link
                },
                name,
                wait_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            },
            wait,
        ),
        Command::Status { id } => (Request::State { identity, id }, Duration::ZERO),
        Command::Sent { max } => (
            Request::Sent {
                identity,
                max: Some(max),
            },
            Duration::ZERO,
        ),
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
                let mut body = String::new();
                std::io::stdin()
                    .take(agentwire_session::message::MAX_BODY_BYTES as u64 + 1)
                    .read_to_string(&mut body)
                    .context("cannot read the message from stdin (it must be UTF-8)")
                    .code(USAGE)?;
                body
            } else {
                text
            };
            (
                Request::Send {
                    identity,
                    to: peer,
                    body,
                    kind: Some(kind),
                    reply_to,
                    thread,
                    priority: Some(priority),
                    wait_ms: wait
                        .is_some()
                        .then(|| u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
                    wait,
                },
                timeout,
            )
        }
        Command::Recv { from, max, wait } => {
            let wait = wait.unwrap_or(Duration::ZERO);
            (
                Request::Recv {
                    identity,
                    from,
                    max: Some(max),
                    wait_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
                },
                wait,
            )
        }
        Command::Inbox { from, max } => (
            Request::Inbox {
                identity,
                from,
                max: Some(max),
                wait_ms: None,
            },
            Duration::ZERO,
        ),
    };
    let result = call(&home, &request, wait)?;
    print(global.json, &request, &result);
    let empty = matches!(request, Request::Recv { .. } | Request::Inbox { .. })
        && result["messages"].as_array().is_none_or(|m| m.is_empty());
    if empty {
        return Err(Failure::quiet(NOTHING));
    }
    if let Request::Send { wait: Some(_), .. } = &request {
        if matches!(result["state"].as_str(), Some("failed" | "expired")) {
            return Err(Failure::quiet(crate::exit::UNDELIVERABLE));
        }
        if result["reached"] == false {
            return Err(Failure::quiet(crate::exit::NOT_YET));
        }
    }
    Ok(())
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
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")
                .code(crate::exit::CANNOT_START)?;
            runtime
                .block_on(async {
                    let stop = crate::relay_cmd::shutdown_signal();
                    agentwire_daemon::run(home.clone(), stop).await
                })
                .code(crate::exit::CANNOT_START)
        }
        DaemonAction::Start => {
            if call_running(home, &Request::Status)?.is_none() {
                start(home)?;
            }
            let status = call(home, &Request::Status, Duration::ZERO)?;
            print_status(global.json, &status);
            Ok(())
        }
        DaemonAction::Stop => {
            let stopped = call_running(home, &Request::Stop)?.is_some();
            // Returns once the daemon has exited (it lets go of the home's
            // lock last), so a command right after starts a fresh one.
            let deadline = std::time::Instant::now() + STOP_WAIT;
            while stopped && home.daemon_running() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            let exited = !home.daemon_running();
            if global.json {
                println!(
                    "{}",
                    serde_json::json!({"stopped": stopped, "exited": exited})
                );
            } else if !stopped {
                println!("no daemon running for {}", home.root().display());
            } else if exited {
                println!("daemon stopped");
            } else {
                println!("daemon stopping (still finishing after {STOP_WAIT:?})");
            }
            Ok(())
        }
        DaemonAction::Status => match call_running(home, &Request::Status)? {
            Some(status) => {
                print_status(global.json, &status);
                Ok(())
            }
            None => {
                if global.json {
                    println!("{}", serde_json::json!({"running": false}));
                } else {
                    println!("no daemon running for {}", home.root().display());
                }
                Err(Failure::quiet(crate::exit::DAEMON_UNREACHABLE))
            }
        },
    }
}

fn print_status(json: bool, status: &Value) {
    if json {
        println!("{status}");
        return;
    }
    println!(
        "daemon running (pid {}), relay {}{}",
        status["pid"],
        status["relay"].as_str().unwrap_or("?"),
        if status["local_relay"] == true {
            " (local)"
        } else {
            ""
        }
    );
    for identity in status["identities"].as_array().into_iter().flatten() {
        print!(
            "  {} {} unread {}",
            identity["name"].as_str().unwrap_or("?"),
            identity["short_id"].as_str().unwrap_or("?"),
            identity["unread"]
        );
        print!(" queued {}", identity["queued"]);
        if let Some(reason) = identity["queued_because"].as_str() {
            print!(" (the relay declined: {reason})");
        }
        match identity["relay_error"].as_str() {
            Some(error) => println!(" (not connected: {error})"),
            None => println!(),
        }
    }
    println!(
        "  queued {} dropped-from-non-contacts {} dropped-undecryptable {}",
        status["queued"], status["dropped_non_contact"], status["dropped_undecryptable"]
    );
}

fn print_sent(message: &Value) {
    let to = &message["to"];
    println!(
        "{} {} to {}({}) {}",
        message["id"].as_str().unwrap_or(""),
        message["state"].as_str().unwrap_or(""),
        to["name"].as_str().unwrap_or("?"),
        to["short_id"].as_str().unwrap_or(""),
        message["kind"].as_str().unwrap_or("")
    );
}

fn print(json: bool, request: &Request, result: &Value) {
    if json {
        println!("{result}");
        return;
    }
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    match request {
        Request::Init { .. } => {
            let siblings: Vec<String> = result["siblings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            print!(
                "created {} {}",
                text(&result["name"]),
                text(&result["short_id"])
            );
            if siblings.is_empty() {
                println!();
            } else {
                println!(" (contacts: {})", siblings.join(", "));
            }
        }
        Request::Whoami { .. } => println!(
            "{} {} {}",
            text(&result["name"]),
            text(&result["short_id"]),
            text(&result["address"])
        ),
        Request::Contacts { .. } => {
            for contact in result["contacts"].as_array().into_iter().flatten() {
                println!(
                    "{} {} {} {}",
                    text(&contact["name"]),
                    text(&contact["short_id"]),
                    text(&contact["via"]),
                    text(&contact["state"])
                );
            }
        }
        Request::Invite { .. } => println!("{}", text(&result["invite"])),
        Request::Accept { .. } => {
            if result["state"] == "active" {
                println!(
                    "paired with {} {}",
                    text(&result["name"]),
                    text(&result["short_id"])
                );
            } else {
                println!(
                    "sent; {} {} is pending until the inviter's daemon answers",
                    text(&result["name"]),
                    text(&result["short_id"])
                );
            }
        }
        Request::Rename { .. } => {
            println!(
                "renamed {} to {}",
                text(&result["renamed"]),
                text(&result["to"])
            )
        }
        Request::Remove { .. } => println!("removed {}", text(&result["removed"])),
        Request::Send { wait: None, .. } => println!(
            "{} {} to {}",
            text(&result["id"]),
            text(&result["state"]),
            text(&result["to"])
        ),
        Request::Send { .. } | Request::State { .. } => print_sent(result),
        Request::Sent { .. } => {
            for message in result["messages"].as_array().into_iter().flatten() {
                print_sent(message);
            }
        }
        Request::Recv { .. } | Request::Inbox { .. } => {
            for message in result["messages"].as_array().into_iter().flatten() {
                let from = &message["from"];
                println!(
                    "{} {}({}) {}: {}",
                    text(&message["id"]),
                    from["name"].as_str().unwrap_or("?"),
                    text(&from["short_id"]),
                    text(&message["kind"]),
                    text(&message["body"]).escape_debug()
                );
            }
        }
        Request::Status | Request::Stop | Request::Ack { .. } | Request::Subscribe { .. } => {
            println!("{result}")
        }
    }
}
