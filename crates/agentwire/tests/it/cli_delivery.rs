//! Delivery states, receipts, priority, concurrent readers, offline peers
//! and expiry, through real daemons.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::util::*;

fn siblings() -> TestHome {
    let home = TestHome::new();
    home.run(&["init", "--name", "a"]).ok();
    home.run(&["init", "--name", "b"]).ok();
    home
}

fn bodies(result: &serde_json::Value) -> Vec<String> {
    result["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn send_wait_read_returns_only_after_the_peer_consumed_the_message() {
    let home = siblings();
    let mut sender = Command::new(agentwire_bin())
        .arg("--home")
        .arg(home.path())
        .args([
            "--json",
            "send",
            "b",
            "read me",
            "--wait",
            "read",
            "--timeout",
            "20s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Delivered to b's daemon, but not read: the sender keeps waiting.
    let delivered = eventually(|| {
        let sent = home.run(&["--json", "sent"]).ok().json();
        sent["messages"][0]["state"] == "delivered"
    });
    assert!(delivered, "the message never reached delivered");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        sender.try_wait().unwrap().is_none(),
        "send --wait read returned before the read"
    );

    home.run(&["--as", "b", "recv"]).ok();
    let output = sender.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["state"], "read");
    assert_eq!(result["reached"], true);

    let id = result["id"].as_str().unwrap();
    let status = home.run(&["--json", "status", id]).ok().json();
    assert_eq!(status["state"], "read");
    // The text says when each state was reached, after the send.
    let line = home.run(&["status", id]).ok().stdout;
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[..2], [id, "read"], "{line}");
    for step in ["· sent 20", "· relayed +", "· delivered +", "· read +"] {
        assert!(line.contains(step), "{step:?} missing: {line}");
    }
    let run = home.run(&["status", "01a215b8-e7f2-7603-bec5-ca48f27b96b9"]);
    assert_eq!(run.code, 12, "{run:?}");
    // Receipts are not messages: nothing to read on a's side.
    assert_eq!(home.run(&["recv"]).code, 1);
}

#[test]
fn send_wait_exits_18_when_the_state_is_not_reached_in_time() {
    let home = siblings();
    let run = home.run(&[
        "--json",
        "send",
        "b",
        "x",
        "--wait",
        "read",
        "--timeout",
        "300ms",
    ]);
    assert_eq!(run.code, 18, "{run:?}");
    assert_eq!(run.json()["reached"], false);
}

#[test]
fn urgent_comes_first_then_normal_then_low_including_the_lowest_level() {
    let home = siblings();
    for (body, priority) in [
        ("low-1", "low"),
        ("normal-1", "normal"),
        ("urgent-1", "urgent"),
        ("low-2", "low"),
        ("normal-2", "normal"),
    ] {
        home.run(&["send", "b", body, "--priority", priority]).ok();
    }
    let mut unread = 0;
    eventually(|| {
        unread = home.run(&["--json", "--as", "b", "inbox"]).json()["unread"]
            .as_u64()
            .unwrap();
        unread == 5
    });
    assert_eq!(unread, 5);
    let peeked = home.run(&["--json", "--as", "b", "inbox"]).ok().json();
    let expected = ["urgent-1", "normal-1", "normal-2", "low-1", "low-2"];
    assert_eq!(bodies(&peeked), expected);
    assert_eq!(peeked["messages"][3]["priority"], "low");
    let taken = home.run(&["--json", "--as", "b", "recv"]).ok().json();
    assert_eq!(bodies(&taken), expected);
}

/// Finding: `--priority urgent` let one contact jump everyone else's
/// messages, and one contact's flood kept everyone else's waiting. Within a
/// priority, each sender's first waiting message comes before anyone's
/// second; a contact's urgent messages beyond its first 10 waiting ones
/// queue as normal (still marked urgent).
#[test]
fn one_contacts_flood_of_urgent_messages_cannot_keep_the_others_waiting() {
    let home = siblings();
    home.run(&["init", "--name", "c"]).ok();
    let send = |from: &str, body: String, priority: &str| {
        home.api(json!({"op": "send", "as": from, "to": "c", "body": body, "priority": priority}));
    };
    for n in 0..30 {
        send("a", format!("a-urgent-{n}"), "urgent");
    }
    for n in 0..30 {
        send("a", format!("a-normal-{n}"), "normal");
    }
    send("b", "b-urgent".into(), "urgent");
    send("b", "b-normal-0".into(), "normal");
    send("b", "b-normal-1".into(), "normal");
    let mut unread = 0;
    eventually(|| {
        unread = home.api(json!({"op": "inbox", "as": "c", "max": 1}))["unread"]
            .as_u64()
            .unwrap();
        unread == 63
    });
    assert_eq!(unread, 63);
    let taken = home.api(json!({"op": "recv", "as": "c", "max": 100}));
    let order = bodies(&taken);
    // The urgent lane: a's first ten urgent messages, b's one at its turn.
    assert_eq!(order[..3], ["a-urgent-0", "b-urgent", "a-urgent-1"]);
    assert_eq!(order[10], "a-urgent-9");
    // The normal lane: a's other urgent messages, then its normal ones; b's
    // two at their turns beside a's first two.
    assert_eq!(
        order[11..15],
        ["a-urgent-10", "b-normal-0", "a-urgent-11", "b-normal-1"]
    );
    assert_eq!(taken["messages"][11]["priority"], "urgent");
    // One sender's messages keep their order.
    let from_a: Vec<&String> = order.iter().filter(|b| b.starts_with("a-")).collect();
    let sent_by_a: Vec<String> = (0..30)
        .map(|n| format!("a-urgent-{n}"))
        .chain((0..30).map(|n| format!("a-normal-{n}")))
        .collect();
    assert_eq!(from_a, sent_by_a.iter().collect::<Vec<_>>());
}

/// The replaced tools' bug class "sent before validated": a send refused for
/// an unknown peer or an oversized body leaves nothing behind, nothing
/// queued and nothing sent.
#[test]
fn a_refused_send_queues_nothing() {
    let home = siblings();
    let run = home.run_with_stdin(&["send", "nobody", "-"], Some(b"hi"));
    assert_eq!(run.code, 12, "{run:?}");
    let oversized = vec![b'x'; 128 * 1024 + 1];
    let run = home.run_with_stdin(&["send", "b", "-"], Some(&oversized));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("128 KiB"), "{}", run.stderr);
    let run = home.run_with_stdin(&["send", "b", "-", "--kind", "task"], Some(&oversized));
    assert_eq!(run.code, 2, "{run:?}");
    let sent = home.run(&["--json", "--as", "a", "sent"]).ok().json();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 0, "{sent}");
    // The daemon has nothing waiting to go out, and the peer gets nothing.
    let status = home.api(json!({"op": "status"}));
    assert_eq!(status["queued"], 0, "{status}");
    home.run_with_stdin(&["send", "b", "-"], Some(b"after"))
        .ok();
    let got = home
        .run(&["--json", "--as", "b", "recv", "--wait", "10s"])
        .ok()
        .json();
    assert_eq!(bodies(&got), ["after"]);
}

#[test]
fn two_concurrent_readers_split_500_messages_without_overlap() {
    let home = siblings();
    for n in 0..500 {
        home.api(json!({"op": "send", "to": "b", "body": format!("m{n}")}));
    }
    let reader = |home: &TestHome| {
        let mut seen = Vec::new();
        let mut idle = 0;
        while idle < 20 {
            let got = home.api(json!({"op": "recv", "as": "b", "max": 7, "wait_ms": 200}));
            let batch = bodies(&got);
            if batch.is_empty() {
                idle += 1;
            } else {
                idle = 0;
                seen.extend(batch);
            }
            if seen.len() >= 500 {
                break;
            }
        }
        seen
    };
    let (one, two) = std::thread::scope(|scope| {
        let one = scope.spawn(|| reader(&home));
        let two = scope.spawn(|| reader(&home));
        (one.join().unwrap(), two.join().unwrap())
    });
    let first: HashSet<&String> = one.iter().collect();
    let second: HashSet<&String> = two.iter().collect();
    assert_eq!(
        first.intersection(&second).count(),
        0,
        "a message was read twice"
    );
    assert_eq!(one.len() + two.len(), 500, "{} + {}", one.len(), two.len());
    let union: HashSet<&String> = first.union(&second).copied().collect();
    assert_eq!(union.len(), 500);
}

#[test]
fn an_offline_peer_gets_all_200_messages_in_order_when_it_comes_back() {
    let pair = Paired::start(&[]);
    let (alice, bob) = (&pair.alice, &pair.bob);
    bob.run(&["daemon", "stop"]).ok();
    for n in 0..200 {
        alice.api(json!({"op": "send", "to": "bob", "body": format!("{n:03}")}));
    }
    // The sender sees them waiting at the relay.
    let mut relayed = 0;
    eventually(|| {
        let sent = alice.api(json!({"op": "sent", "max": 500}));
        relayed = sent["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["state"] == "relayed")
            .count();
        relayed == 200
    });
    assert_eq!(relayed, 200);

    let mut received = Vec::new();
    while received.len() < 200 {
        let got = bob
            .run(&["--json", "recv", "--wait", "10s", "--max", "1000"])
            .ok()
            .json();
        received.extend(bodies(&got));
    }
    let expected: Vec<String> = (0..200).map(|n| format!("{n:03}")).collect();
    assert_eq!(received, expected);
    assert_eq!(bob.run(&["recv"]).code, 1);
}

#[test]
fn a_message_that_outlives_the_relay_ttl_becomes_expired_for_the_sender() {
    let pair = Paired::start(&["--envelope-ttl", "1s"]);
    let (alice, bob) = (&pair.alice, &pair.bob);
    bob.run(&["daemon", "stop"]).ok();
    let sent = alice
        .run(&["--json", "send", "bob", "too late"])
        .ok()
        .json();
    let id = sent["id"].as_str().unwrap().to_owned();
    let mut state = String::new();
    eventually(|| {
        state = alice.run(&["--json", "status", &id]).ok().json()["state"]
            .as_str()
            .unwrap()
            .to_owned();
        state == "expired"
    });
    assert_eq!(state, "expired");
    let run = alice.run(&[
        "send",
        "bob",
        "again",
        "--wait",
        "delivered",
        "--timeout",
        "3s",
    ]);
    assert!(run.code == 18 || run.code == 19, "{run:?}");
}

#[test]
fn daemon_status_says_what_is_pending_and_why() {
    let pair = Paired::start(&["--max-queue", "2", "--max-queue-per-sender", "2"]);
    let (alice, bob) = (&pair.alice, &pair.bob);
    bob.run(&["daemon", "stop"]).ok();
    for n in 0..3 {
        alice.run(&["send", "bob", &format!("m{n}")]).ok();
    }
    let mut status = serde_json::Value::Null;
    eventually(|| {
        status = alice.run(&["--json", "daemon", "status"]).ok().json();
        status["identities"][0]["queued_because"].is_string()
    });
    let alice_status = &status["identities"][0];
    assert_eq!(alice_status["queued"], 1, "{status}");
    assert!(
        alice_status["queued_because"]
            .as_str()
            .unwrap()
            .contains("queue_full"),
        "{status}"
    );
    let text = alice.run(&["daemon", "status"]).ok().stdout;
    assert!(text.contains("the relay declined"), "{text}");
    // Bob comes back, drains his queue, and the third message follows.
    let mut received = Vec::new();
    while received.len() < 3 {
        let got = bob.run(&["--json", "recv", "--wait", "10s"]).ok().json();
        received.extend(bodies(&got));
    }
    assert_eq!(received, ["m0", "m1", "m2"]);
}

#[test]
fn a_recipient_the_relay_declines_does_not_hold_up_other_recipients() {
    let pair = Paired::start(&["--max-queue", "2", "--max-queue-per-sender", "2"]);
    let (alice, bob) = (&pair.alice, &pair.bob);
    let carol = TestHome::new();
    carol
        .run(&["init", "--name", "carol", "--relay", &pair.relay.url])
        .ok();
    let token = alice.run(&["invite"]).ok().stdout.trim().to_owned();
    carol.run(&["accept", &token]).ok();
    bob.run(&["daemon", "stop"]).ok();
    // More than one outbox page for Bob, whose relay queue holds 2.
    for n in 0..70 {
        alice.api(json!({"op": "send", "to": "bob", "body": format!("b{n}")}));
    }
    alice.run(&["send", "carol", "for carol"]).ok();
    let got = carol.run(&["--json", "recv", "--wait", "10s"]).ok().json();
    assert_eq!(bodies(&got), ["for carol"]);
}

#[test]
fn a_full_outbox_refuses_sends_with_a_reason_instead_of_growing() {
    let mut pair = Paired::start(&[]);
    let alice = &pair.alice;
    alice.run(&["daemon", "stop"]).ok();
    // Alice's daemon comes back with a small outbox, and no relay.
    let started = Run::from(
        Command::new(agentwire_bin())
            .arg("--home")
            .arg(alice.path())
            .args(["daemon", "start"])
            .env("AGENTWIRE_OUTBOX_LIMIT", "5")
            .output()
            .unwrap(),
    );
    assert_eq!(started.code, 0, "{started:?}");
    pair.relay.signal("-KILL");
    pair.relay.wait();
    let alice = &pair.alice;
    assert!(eventually(|| {
        let status = alice.run(&["--json", "daemon", "status"]).json();
        status["identities"][0]["relay_error"].is_string()
    }));
    for n in 0..5 {
        alice.run(&["send", "bob", &format!("m{n}")]).ok();
    }
    let full = alice.run(&["send", "bob", "one too many"]);
    assert_eq!(full.code, 20, "{full:?}");
    assert!(
        full.stderr.contains("holds 5 messages") && full.stderr.contains("nothing was queued"),
        "{full:?}"
    );
    let sent = alice.run(&["--json", "sent"]).ok().json();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 5, "{sent}");
}

/// Runs `agentwire --home HOME ARGS` with its stdout closed before it
/// writes anything (a reader that went away, like `| head` done early).
fn run_into_closed_pipe(home: &TestHome, args: &[&str]) -> Run {
    let mut child = Command::new(agentwire_bin())
        .arg("--home")
        .arg(home.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    Run::from(child.wait_with_output().unwrap())
}

#[test]
fn a_closed_stdout_ends_quietly_and_recv_takes_only_what_it_wrote() {
    let home = siblings();
    for n in 0..30 {
        home.run(&["send", "b", &format!("m{n}")]).ok();
    }
    assert!(eventually(|| {
        home.run(&["--json", "--as", "b", "inbox"]).json()["unread"] == 30
    }));
    for args in [
        &["--as", "b", "recv"][..],
        &["--as", "b", "--json", "recv"],
        &["--as", "b", "inbox"],
        &["daemon", "status"],
        &["contacts"],
    ] {
        let run = run_into_closed_pipe(&home, args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        assert!(run.stderr.is_empty(), "{args:?}: {run:?}");
    }
    // Nothing reached a reader, so nothing was marked read.
    let inbox = home.run(&["--json", "--as", "b", "inbox"]).json();
    assert_eq!(inbox["unread"], 30, "{inbox}");
    // A reader that is there takes them all.
    let taken = home
        .run(&["--json", "--as", "b", "recv", "--max", "100"])
        .ok()
        .json();
    assert_eq!(taken["messages"].as_array().unwrap().len(), 30);
}

#[test]
fn messages_held_by_a_reader_pass_other_readers_by_until_it_confirms() {
    use std::io::{BufRead, BufReader, Write};
    let home = siblings();
    for n in 0..4 {
        home.api(json!({"op": "send", "to": "b", "body": format!("m{n}")}));
    }
    assert!(eventually(|| {
        home.api(json!({"op": "inbox", "as": "b"}))["unread"] == 4
    }));
    let stream = std::os::unix::net::UnixStream::connect(home.path().join("daemon.sock")).unwrap();
    let mut lines = BufReader::new(stream.try_clone().unwrap());
    writeln!(
        &stream,
        "{}",
        json!({"op": "recv", "as": "b", "max": 2, "confirm": true})
    )
    .unwrap();
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let held: serde_json::Value = serde_json::from_str(&line).unwrap();
    let held = held["result"]["messages"].as_array().unwrap().clone();
    assert_eq!(held.len(), 2, "{line}");
    // Another reader gets only the two not held.
    let other = home.api(json!({"op": "recv", "as": "b", "max": 10}));
    assert_eq!(bodies(&other), ["m2", "m3"]);
    // The holder took the first only: the second is unread again.
    writeln!(&stream, "{}", json!({"op": "ack", "ids": [held[0]["id"]]})).unwrap();
    line.clear();
    lines.read_line(&mut line).unwrap();
    let acked: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(acked["result"]["acked"], json!([held[0]["id"]]), "{line}");
    let rest = home.api(json!({"op": "recv", "as": "b", "max": 10}));
    assert_eq!(bodies(&rest), ["m1"]);
}

/// Finding: acks counted against the per-key rate, and a client that acked
/// each delivery exceeded it while draining a backlog: the relay dropped
/// those acks, the delivery window stalled for 30 s, and the client was
/// closed after 64 violations (3,000 envelopes took 160 s). The daemon acks
/// each burst with one frame, so a backlog drains without a single
/// rate-limit refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_backlog_never_runs_into_the_ack_rate_limit() {
    use std::sync::Arc;
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::spawn(
        &relay_dir.path().join("home"),
        "127.0.0.1:0",
        &["--key-rate", "20", "--ip-rate", "1000000"],
    );
    let home = TestHome::new();
    let url = relay.url.clone();
    let (home, bob) = tokio::task::spawn_blocking(move || {
        home.run(&["init", "--name", "bob", "--relay", &url]).ok();
        let bob = home.run(&["--json", "whoami"]).ok().json();
        home.run(&["daemon", "stop"]).ok();
        (home, bob)
    })
    .await
    .unwrap();
    let bob = agentwire_wire::PublicKey::from_hex(bob["address"].as_str().unwrap()).unwrap();
    // 2,000 envelopes queued while bob is offline, from 100 senders (each
    // within its own rate).
    let mut senders = Vec::new();
    for _ in 0..100 {
        let config = relay.client_config();
        senders.push(tokio::spawn(async move {
            let (client, _events) =
                agentwire_client::RelayClient::connect(config, Arc::new(new_key()))
                    .await
                    .unwrap();
            for _ in 0..20 {
                client.send(bob, new_id(), vec![7; 64]).await.unwrap();
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let queued = |body: &str| -> u64 {
        let health: serde_json::Value = serde_json::from_str(body).unwrap();
        health["queued_envelopes"].as_u64().unwrap()
    };
    assert_eq!(queued(&http_get(relay.addr, "/health").await.1), 2000);
    // Bob comes online: at 20 frames a second, one ack per envelope would
    // take 100 s and be refused long before.
    let home = tokio::task::spawn_blocking(move || {
        home.run(&["daemon", "start"]).ok();
        home
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while queued(&http_get(relay.addr, "/health").await.1) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the backlog never drained"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, metrics) = http_get(relay.addr, "/metrics").await;
    assert!(
        !metrics.contains("reason=\"key_rate_limited\""),
        "acks ran into the rate limit:\n{metrics}"
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = home.run(&["--json", "daemon", "status"]).ok().json();
        drop(home);
        status
    })
    .await
    .unwrap();
    assert_eq!(status["dropped_non_contact"], 2000, "{status}");
}

/// Finding: no per-contact quota: a contact sent 300 bodies of 128 KiB in
/// 9 s (38 MB in the victim's home). One contact's unread messages are now
/// bounded (10,000 messages, 16 MiB); beyond, what it sends is refused, and
/// it is told why, until the agent reads some.
#[test]
fn one_contact_cannot_fill_the_inbox() {
    let home = siblings();
    let body = vec![b'x'; 130_000];
    let mut ids = Vec::new();
    for _ in 0..131 {
        let sent = home
            .run_with_stdin(&["--json", "send", "b", "-"], Some(&body))
            .ok()
            .json();
        ids.push(sent["id"].as_str().unwrap().to_owned());
    }
    // 129 fit in 16 MiB; the last two are refused, with the reason.
    let state = |id: &str| home.run(&["--json", "status", id]).ok().json();
    for id in &ids[129..] {
        assert!(
            eventually(|| state(id)["state"] == "failed"),
            "{}",
            state(id)
        );
        let reason = state(id)["reason"].as_str().unwrap_or_default().to_owned();
        assert!(reason.contains("limit"), "{reason}");
    }
    assert!(eventually(|| state(&ids[128])["state"] == "delivered"));
    let inbox = home.run(&["--json", "--as", "b", "inbox"]).ok().json();
    assert_eq!(inbox["unread"], 129, "{inbox}");
    // Once b reads, a may send again.
    home.run(&["--as", "b", "recv", "--max", "10"]).ok();
    let again = home
        .run_with_stdin(&["--json", "send", "b", "-"], Some(&body))
        .ok()
        .json();
    let id = again["id"].as_str().unwrap().to_owned();
    assert!(
        eventually(|| state(&id)["state"] == "delivered"),
        "{}",
        state(&id)
    );
}

/// Finding: read messages were never deleted. A message is now forgotten
/// once its retention has passed after it was read (a sent one after it
/// ended), default 30 days, set with `config --retention`.
#[test]
fn read_messages_are_forgotten_after_the_retention() {
    let home = siblings();
    let shown = home.run(&["--json", "config"]).ok().json();
    assert_eq!(shown["retention"], "30days", "{shown}");
    let refused = home.run(&["config", "--retention", "soon"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    let set = home
        .run(&["--json", "config", "--retention", "2s"])
        .ok()
        .json();
    assert_eq!(
        (set["retention"].as_str(), set["changed"].as_bool()),
        (Some("2s"), Some(true))
    );
    let sent = home
        .run_with_stdin(
            &["--json", "send", "b", "-", "--wait", "delivered"],
            Some(b"old news"),
        )
        .ok()
        .json();
    let id = sent["id"].as_str().unwrap().to_owned();
    // Unread, it is kept however old; read, it goes after the retention.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        home.run(&["--json", "--as", "b", "inbox"]).json()["unread"],
        1
    );
    home.run(&["--as", "b", "recv"]).ok();
    let state = || home.run(&["--json", "status", &id]);
    assert!(eventually(|| state().json()["state"] == "read"));
    assert!(
        eventually(|| state().code == 12),
        "still known: {:?}",
        state()
    );
    // Forever keeps everything.
    let forever = home
        .run(&["--json", "config", "--retention", "forever"])
        .ok()
        .json();
    assert_eq!(forever["retention"], "forever");
}
