//! Agents through the CLI: real `agentwire` processes, a real daemon started
//! on demand, the in-process relay, each home a temp dir.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use agentwire_client::RelayClient;

use crate::util::*;

#[test]
fn sibling_identities_talk_without_an_invite_and_recv_consumes_while_inbox_peeks() {
    let home = TestHome::new();
    home.run(&["init", "--name", "planner"]).ok();
    let created = home.run(&["--json", "init", "--name", "coder"]).ok().json();
    assert_eq!(created["siblings"][0], "planner");

    let contacts = home
        .run(&["--json", "--as", "coder", "contacts"])
        .ok()
        .json();
    assert_eq!(contacts["contacts"][0]["name"], "planner");
    assert_eq!(contacts["contacts"][0]["via"], "sibling");

    // planner is the default identity.
    let sent = home
        .run(&["--json", "send", "coder", "run the tests"])
        .ok()
        .json();
    let id = sent["id"].as_str().unwrap().to_owned();
    assert_eq!(sent["state"], "queued");

    let received = home.run(&[
        "--json", "--as", "coder", "recv", "--wait", "10s", "--max", "1",
    ]);
    let message = &received.json()["messages"][0];
    assert_eq!(message["id"], id.as_str());
    assert_eq!(message["from"]["name"], "planner");
    assert_eq!(message["from"]["verified"], true);
    assert_eq!(message["body"], "run the tests");
    assert_eq!(message["kind"], "chat");

    let reply = home.run_with_stdin(
        &["--as", "coder", "send", "planner", "-"],
        Some(b"done: 12 passed"),
    );
    assert_eq!(reply.code, 0, "{reply:?}");
    let received = home.run(&["--json", "recv", "--wait", "10s"]).ok().json();
    assert_eq!(received["messages"][0]["body"], "done: 12 passed");
    assert_eq!(received["messages"][0]["from"]["name"], "coder");

    // Nothing left for coder: exit code 1, nothing printed.
    let empty = home.run(&["--as", "coder", "recv"]);
    assert_eq!(empty.code, 1, "{empty:?}");
    assert!(empty.stdout.is_empty());
}

#[test]
fn inbox_does_not_consume_and_recv_does() {
    let home = TestHome::new();
    home.run(&["init", "--name", "a"]).ok();
    home.run(&["init", "--name", "b"]).ok();
    home.run(&["send", "b", "one"]).ok();
    // Wait for the arrival without consuming it: look at the inbox a
    // bounded number of times.
    assert!(
        eventually(|| unread(&home, "b") == 1),
        "the message never arrived"
    );
    let again = home.run(&["--json", "--as", "b", "inbox"]).ok().json();
    assert_eq!(again["unread"], 1);
    assert_eq!(again["messages"][0]["body"], "one");
    let taken = home.run(&["--json", "--as", "b", "recv"]).ok().json();
    assert_eq!(taken["messages"][0]["body"], "one");
    let after = home.run(&["--json", "--as", "b", "inbox"]);
    assert_eq!(after.code, 1);
    assert_eq!(after.json()["unread"], 0);
}

#[test]
fn bad_names_are_refused_with_a_clear_error() {
    let home = TestHome::new();
    for (name, expected) in [
        ("../x", "'/'"),
        ("a/b", "'/'"),
        (&"x".repeat(300), "limit is 64"),
        ("a\u{7}b", "control character"),
        ("..", "start with a letter or digit"),
        ("c0ffee", "looks like the start of a key"),
    ] {
        let run = home.run(&["init", "--name", name]);
        assert_eq!(run.code, 2, "{name:?}: {run:?}");
        assert!(run.stderr.contains(expected), "{name:?}: {}", run.stderr);
    }
    home.run(&["init", "--name", "ok"]).ok();
    let run = home.run(&["init", "--name", "ok"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    let run = home.run(&["contacts", "rename", "nobody", "../x"]);
    assert_eq!(run.code, 12, "{run:?}");
}

#[test]
fn unknown_peer_and_uninitialized_home_have_their_own_exit_codes() {
    let home = TestHome::new();
    let run = home.run(&["whoami"]);
    assert_eq!(run.code, 13, "{run:?}");
    assert!(run.stderr.contains("agentwire init"), "{}", run.stderr);
    home.run(&["init"]).ok();
    let run = home.run(&["send", "nobody", "hi"]);
    assert_eq!(run.code, 12, "{run:?}");
    assert!(run.stderr.contains("agentwire contacts"), "{}", run.stderr);
    let run = home.run(&["--as", "ghost", "whoami"]);
    assert_eq!(run.code, 12, "{run:?}");
    let run = home.run(&["send", "x", "hi", "--kind", "receipt"]);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn a_person_at_a_terminal_is_told_what_empty_output_means_and_scripts_are_not() {
    let home = TestHome::new();
    let init = home.run_on_terminal(&["init", "--name", "a"]);
    assert!(init.stdout.contains("runs in the background"), "{init:?}");
    for (args, said) in [
        (&["recv"][..], "no unread messages"),
        (&["inbox"][..], "no unread messages"),
        (&["contacts"][..], "no contacts yet"),
    ] {
        let shown = home.run_on_terminal(args);
        assert!(shown.stdout.contains(said), "{args:?}: {shown:?}");
        let piped = home.run(args);
        assert!(
            piped.stdout.is_empty() && piped.stderr.is_empty(),
            "{args:?}: {piped:?}"
        );
    }
    home.run(&["init", "--name", "b"]).ok();
    home.run(&["send", "b", "one"]).ok();
    assert!(eventually(|| home.run(&["--as", "b", "inbox"]).code == 0));
    let inbox = home.run_on_terminal(&["--as", "b", "inbox"]);
    assert!(inbox.stdout.contains("1 unread, 1 shown"), "{inbox:?}");
    // A long wait says what it waits for, at a terminal only.
    let waited = home.run_on_terminal(&["--as", "a", "recv", "--wait", "1s"]);
    assert!(
        waited.stdout.contains("waiting for a message: 0s of 1s"),
        "{waited:?}"
    );
    let piped = home.run(&["--as", "a", "recv", "--wait", "1s"]);
    assert!(piped.stderr.is_empty(), "{piped:?}");
}

#[test]
fn errors_say_what_is_wrong_once_and_in_plain_terms() {
    // A home that is a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let file = file.to_str().unwrap();
    for command in ["whoami", "init"] {
        let run = Run::from(
            std::process::Command::new(agentwire_bin())
                .args(["--home", file, command])
                .output()
                .unwrap(),
        );
        assert_eq!(run.code, 3, "{run:?}");
        assert!(run.stderr.contains("is not a directory"), "{run:?}");
    }
    let home = TestHome::new();
    // A port in use: the cause is said once.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let run = home.run(&["relay", "--listen", &addr]);
    assert_eq!(run.code, 4, "{run:?}");
    assert_eq!(
        run.stderr.matches("in use").count(),
        1,
        "said more than once: {}",
        run.stderr
    );
}

#[test]
fn with_json_errors_are_json_objects_with_the_same_exit_code() {
    let home = TestHome::new();
    let error = |run: &Run| -> serde_json::Value {
        assert!(run.stdout.is_empty(), "{run:?}");
        serde_json::from_str(run.stderr.trim()).unwrap_or_else(|e| panic!("{e}: {run:?}"))
    };
    let run = home.run(&["--json", "whoami"]);
    assert_eq!(run.code, 13, "{run:?}");
    let e = error(&run);
    assert_eq!(e["error"]["code"], "not_initialized");
    assert_eq!(e["error"]["exit_code"], 13);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agentwire init")
    );
    home.run(&["init"]).ok();
    let run = home.run(&["--json", "send", "nobody", "hi"]);
    assert_eq!(run.code, 12, "{run:?}");
    assert_eq!(error(&run)["error"]["code"], "unknown_peer");
    // Usage errors too, wherever --json stands.
    let run = home.run(&["recv", "--bogus", "--json"]);
    assert_eq!(run.code, 2, "{run:?}");
    let e = error(&run);
    assert_eq!(e["error"]["code"], "usage");
    assert!(e["error"]["message"].as_str().unwrap().contains("--bogus"));
    // Without --json, a sentence.
    let run = home.run(&["send", "nobody", "hi"]);
    assert!(run.stderr.starts_with("agentwire: "), "{run:?}");
}

#[test]
fn files_in_the_home_are_private() {
    let home = TestHome::new();
    home.run(&["init", "--name", "a"]).ok();
    home.run(&["init", "--name", "b"]).ok();
    home.run(&["send", "b", "x"]).ok();
    let mode =
        |path: std::path::PathBuf| std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(home.path()), 0o700);
    for entry in std::fs::read_dir(home.path()).unwrap() {
        let path = entry.unwrap().path();
        let m = mode(path.clone());
        assert_eq!(m & 0o077, 0, "{} has mode {m:o}", path.display());
    }
}

#[tokio::test]
async fn a_stranger_who_knows_the_key_gets_nothing_shown() {
    // A shared relay, which anyone may use (a home's own loopback relay
    // admits only its daemon).
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::spawn(&relay_dir.path().join("home"), "127.0.0.1:0", &[]);
    let relay_url = relay.url.clone();
    let home = TestHome::new();
    home.run(&["init", "--name", "bob", "--relay", &relay_url])
        .ok();
    let bob = home.run(&["--json", "whoami"]).ok().json();
    let bob_key = agentwire_wire::PublicKey::from_hex(bob["address"].as_str().unwrap()).unwrap();

    // A third party with Bob's address sends him envelopes: garbage, and a
    // real Olm pre-key message from its own identity.
    let mallory = new_key();
    let (client, _events) = RelayClient::connect(
        agentwire_client::ClientConfig::new(relay_url),
        Arc::new(mallory),
    )
    .await
    .unwrap();
    client
        .send(bob_key, new_id(), b"let me in".to_vec())
        .await
        .unwrap();
    let (id, payload) = stranger_message("hello bob, trust me");
    client
        .send(
            bob_key,
            agentwire_wire::EnvelopeId::from_bytes(*id.as_bytes()),
            payload,
        )
        .await
        .unwrap();

    // Both are dropped and counted; Bob sees nothing.
    let mut dropped = 0;
    for _ in 0..200 {
        dropped = home.run(&["--json", "daemon", "status"]).json()["dropped_non_contact"]
            .as_u64()
            .unwrap();
        if dropped == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(dropped, 2);
    let run = home.run(&["recv"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        home.run(&["--json", "contacts"]).json()["contacts"],
        serde_json::json!([])
    );
}

#[test]
fn commands_other_than_init_do_not_create_a_home() {
    // A mistyped --home: nothing may appear there, no daemon may start.
    let typo = TestHome::new();
    for args in [
        &["daemon", "start"][..],
        &["whoami"],
        &["recv"],
        &["send", "b", "x"],
        &["contacts"],
    ] {
        let run = typo.run(args);
        assert_eq!(run.code, 13, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("no agentwire home at") && run.stderr.contains("agentwire init"),
            "{args:?}: {run:?}"
        );
        assert!(
            !typo.path().exists(),
            "{args:?} created {}",
            typo.path().display()
        );
    }
}

#[test]
fn daemon_start_stop_status() {
    let home = TestHome::new();
    let run = home.run(&["daemon", "status"]);
    assert_eq!(run.code, 10, "{run:?}");
    home.run(&["init", "--name", "a"]).ok();
    home.run(&["daemon", "stop"]).ok();
    let started = home.run(&["--json", "daemon", "start"]).ok().json();
    assert_eq!(started["running"], true);
    // Starting again is a no-op.
    home.run(&["daemon", "start"]).ok();
    home.run(&["daemon", "stop"]).ok();
    assert!(
        eventually(|| home.run(&["daemon", "status"]).code != 0),
        "daemon did not stop"
    );
}

#[test]
fn replies_carry_their_reply_to_and_thread_end_to_end() {
    let home = TestHome::new();
    home.run(&["init", "--name", "planner"]).ok();
    home.run(&["init", "--name", "coder"]).ok();
    let task = home
        .run(&["--json", "send", "coder", "build it", "--kind", "task"])
        .ok()
        .json();
    let task_id = task["id"].as_str().unwrap().to_owned();
    let got = home
        .run(&["--json", "--as", "coder", "recv", "--wait", "10s"])
        .ok()
        .json();
    assert_eq!(got["messages"][0]["kind"], "task");
    assert_eq!(got["messages"][0]["thread"], serde_json::Value::Null);

    home.run(&[
        "--as",
        "coder",
        "send",
        "planner",
        "built",
        "--kind",
        "result",
        "--reply-to",
        &task_id,
        "--thread",
        &task_id,
    ])
    .ok();
    let reply = home.run(&["--json", "recv", "--wait", "10s"]).ok().json();
    let message = &reply["messages"][0];
    assert_eq!(message["kind"], "result");
    assert_eq!(message["reply_to"], task_id.as_str());
    assert_eq!(message["thread"], task_id.as_str());

    let run = home.run(&["send", "coder", "x", "--reply-to", "not-an-id"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("not a message id"), "{}", run.stderr);
}

#[test]
fn a_name_that_looks_like_another_contacts_key_is_refused() {
    let home = TestHome::new();
    for name in ["a", "b", "c"] {
        home.run(&["init", "--name", name]).ok();
    }
    let c_short = home.run(&["--json", "--as", "c", "whoami"]).ok().json()["short_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = home.run(&["contacts", "rename", "b", &c_short]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("looks like the start of a key"),
        "{}",
        run.stderr
    );
    let run = home.run(&["invite", "--for", &c_short]);
    assert_eq!(run.code, 2, "{run:?}");
    // The key prefix still names c, and only c.
    home.run(&["send", &c_short, "for c"]).ok();
    assert!(eventually(|| unread(&home, "c") == 1));
    assert_eq!(unread(&home, "b"), 0);
}

#[test]
fn removing_a_contact_hides_its_messages_tells_it_and_a_new_invite_pairs_again() {
    let home = TestHome::new();
    home.run(&["init", "--name", "a"]).ok();
    home.run(&["init", "--name", "b"]).ok();
    home.run(&["send", "b", "before removal"]).ok();
    assert!(
        eventually(|| unread(&home, "b") == 1),
        "the message never arrived"
    );
    let removed = home.run(&["--as", "b", "contacts", "remove", "a"]).ok();
    assert!(removed.stdout.contains("it is told"), "{removed:?}");
    let run = home.run(&["--as", "b", "recv"]);
    assert_eq!(run.code, 1, "{run:?}");

    // a is told: it lists b as removed, and a send to b is refused (exit 21).
    assert!(
        eventually(|| home.run(&["contacts"]).ok().stdout.contains("removed")),
        "a never learnt it was removed"
    );
    let run = home.run(&["--json", "send", "b", "still there?"]);
    assert_eq!(run.code, 21, "{run:?}");
    let error: serde_json::Value = serde_json::from_str(&run.stderr).unwrap();
    assert_eq!(error["error"]["code"], "contact_removed", "{run:?}");

    // A new invite pairs them again.
    let invite = home.run(&["--as", "b", "invite"]).ok().stdout;
    home.run(&["accept", invite.trim()]).ok();
    home.run(&["send", "b", "paired again"]).ok();
    // What a sent before the removal shows again with the contact.
    let mut got = String::new();
    let arrived = eventually(|| {
        got.push_str(&home.run(&["--as", "b", "recv"]).stdout);
        got.contains("paired again")
    });
    assert!(arrived && got.contains("before removal"), "{got}");
}

#[test]
fn the_relay_is_chosen_with_the_first_identity() {
    let home = TestHome::new();
    home.run(&["init", "--name", "a"]).ok();
    let run = home.run(&["init", "--name", "b", "--relay", "ws://127.0.0.1:9/v1/ws"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("first identity"), "{}", run.stderr);
}

/// Unread messages of identity `name`, without consuming them.
fn unread(home: &TestHome, name: &str) -> u64 {
    home.run(&["--json", "--as", name, "inbox"]).json()["unread"]
        .as_u64()
        .unwrap()
}

#[test]
fn one_daemon_per_home_and_stop_waits_for_the_exit() {
    let home = TestHome::new();
    home.run(&["init", "--name", "solo"]).ok();
    // A second daemon for the same home refuses at once: the first holds
    // daemon.lock and answers on the socket.
    let second = home.run(&["daemon", "run"]);
    assert_ne!(second.code, 0, "{second:?}");
    assert!(
        second.stderr.contains("another daemon"),
        "{}",
        second.stderr
    );
    // The first one is unharmed.
    home.run(&["whoami"]).ok();
    // `daemon stop` returns once the daemon has exited and let go of the home.
    let stop = home.run(&["--json", "daemon", "stop"]).ok().json();
    assert_eq!(stop, serde_json::json!({"stopped": true, "exited": true}));
    assert!(!home.path().join("daemon.sock").exists());
    // The next command starts a fresh one.
    assert_eq!(home.run(&["--json", "whoami"]).ok().json()["name"], "solo");
}

#[test]
fn a_daemon_that_cannot_start_says_why_once() {
    let home = TestHome::new();
    home.run(&["init", "--name", "a"]).ok();
    home.run(&["daemon", "stop"]).ok();
    let key = home.path().join("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = home.run(&["whoami"]);
    assert_eq!(run.code, 10, "{run:?}");
    // The fix itself, not "see daemon.log".
    assert!(
        run.stderr.contains("the daemon could not start:") && run.stderr.contains("chmod 600"),
        "{run:?}"
    );
    assert_eq!(run.stderr.matches("chmod 600").count(), 1, "{run:?}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    home.run(&["whoami"]).ok();
}

#[test]
fn send_wait_says_why_a_message_is_held_up() {
    let mut pair = Paired::start(&[]);
    pair.relay.signal("-KILL");
    pair.relay.wait();
    let run = pair
        .alice
        .run(&["send", "bob", "x", "--wait", "relayed", "--timeout", "2s"]);
    assert_eq!(run.code, 18, "{run:?}");
    assert!(
        run.stderr.contains("is queued, not relayed yet after 2s")
            && run.stderr.contains("not connected to its relay"),
        "{run:?}"
    );
    let status = pair.alice.run(&["--json", "daemon", "status"]).ok().json();
    let error = status["identities"][0]["relay_error"]
        .as_str()
        .unwrap_or("");
    assert!(error.contains("reconnecting"), "{status}");
}

#[test]
fn a_daemon_without_identities_does_not_linger() {
    let home = TestHome::new();
    let run = Run::from(
        std::process::Command::new(agentwire_bin())
            .arg("--home")
            .arg(home.path())
            .args(["init", "--relay", "http://not-a-relay"])
            .env("AGENTWIRE_DAEMON_IDLE_EXIT", "300ms")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        eventually(|| home.run(&["daemon", "status"]).code == 10),
        "the daemon lingers"
    );
}
