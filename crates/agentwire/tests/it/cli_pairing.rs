//! Two homes, one relay: pairing by invite, and every way an invite can be
//! wrong. Real relay process, real daemons, real CLI processes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::util::*;

/// A relay process and two homes initialised against it.
struct TwoHomes {
    relay: RelayProcess,
    _relay_dir: tempfile::TempDir,
    alice: TestHome,
    bob: TestHome,
}

fn two_homes() -> TwoHomes {
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::spawn(&relay_dir.path().join("home"), "127.0.0.1:0", &[]);
    let (alice, bob) = (TestHome::new(), TestHome::new());
    alice
        .run(&["init", "--name", "alice", "--relay", &relay.url])
        .ok();
    bob.run(&["init", "--name", "bob", "--relay", &relay.url])
        .ok();
    TwoHomes {
        relay,
        _relay_dir: relay_dir,
        alice,
        bob,
    }
}

fn invite(home: &TestHome, extra: &[&str]) -> String {
    let mut args = vec!["invite"];
    args.extend_from_slice(extra);
    let token = home.run(&args).ok().stdout.trim().to_owned();
    assert!(token.starts_with("aw1:"), "{token}");
    token
}

#[test]
fn one_invite_pairs_two_homes_and_messages_flow_both_ways_end_to_end_encrypted() {
    let homes = two_homes();
    let token = invite(&homes.alice, &[]);
    let accepted = homes.bob.run(&["--json", "accept", &token]).ok().json();
    assert_eq!(accepted["name"], "alice");
    assert_eq!(accepted["state"], "active");

    let contacts = homes.alice.run(&["--json", "contacts"]).ok().json();
    assert_eq!(contacts["contacts"][0]["name"], "bob");
    assert_eq!(contacts["contacts"][0]["via"], "invited");

    // Bob's daemon is stopped, so the envelope waits at the relay.
    homes
        .alice
        .run(&["send", "bob", "MARKER-7f3a9 plans attached"])
        .ok();
    homes.bob.run(&["daemon", "stop"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(300));
    homes
        .alice
        .run(&["send", "bob", "MARKER-7f3a9 second"])
        .ok();
    let queued_at_relay = wait_until(|| {
        let (_, body) = blocking_http_get(homes.relay.addr, "/health");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["queued_envelopes"]
            .as_u64()
            .unwrap()
            >= 1
    });
    assert!(queued_at_relay, "the envelope never reached the relay");
    // The relay's files hold only ciphertext.
    for entry in std::fs::read_dir(homes._relay_dir.path().join("home")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(12).any(|w| w == b"MARKER-7f3a9"),
            "plaintext found in the relay's files"
        );
    }

    // Bob comes back and receives both, in order.
    let received = homes
        .bob
        .run(&["--json", "recv", "--wait", "10s"])
        .ok()
        .json();
    let mut bodies: Vec<String> = received["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect();
    if bodies.len() == 1 {
        let more = homes
            .bob
            .run(&["--json", "recv", "--wait", "10s"])
            .ok()
            .json();
        bodies.push(more["messages"][0]["body"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        bodies,
        ["MARKER-7f3a9 plans attached", "MARKER-7f3a9 second"]
    );
    assert_eq!(received["messages"][0]["from"]["name"], "alice");

    homes.bob.run(&["send", "alice", "got it"]).ok();
    let reply = homes
        .alice
        .run(&["--json", "recv", "--wait", "10s"])
        .ok()
        .json();
    assert_eq!(reply["messages"][0]["body"], "got it");
    assert_eq!(reply["messages"][0]["from"]["name"], "bob");
}

#[test]
fn an_invite_works_once() {
    let homes = two_homes();
    let token = invite(&homes.alice, &[]);
    homes.bob.run(&["accept", &token]).ok();
    let carol = TestHome::new();
    carol
        .run(&["init", "--name", "carol", "--relay", &homes.relay.url])
        .ok();
    let run = carol.run(&["accept", &token]);
    assert_eq!(run.code, 16, "{run:?}");
    assert!(run.stderr.contains("already used"), "{}", run.stderr);
    // Carol is not Alice's contact, and has no pending contact either.
    let names: Vec<String> = homes.alice.run(&["--json", "contacts"]).json()["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["bob"]);
    assert_eq!(
        carol.run(&["--json", "contacts"]).json()["contacts"],
        serde_json::json!([])
    );
}

#[test]
fn an_expired_invite_is_refused() {
    let homes = two_homes();
    let token = invite(&homes.alice, &["--ttl", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let run = homes.bob.run(&["accept", &token]);
    assert_eq!(run.code, 15, "{run:?}");
    assert!(run.stderr.contains("expired"), "{}", run.stderr);
}

#[test]
fn an_invite_with_a_flipped_bit_is_refused() {
    let homes = two_homes();
    let token = invite(&homes.alice, &[]);
    let mut bytes = URL_SAFE_NO_PAD.decode(&token[4..]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let damaged = format!("aw1:{}", URL_SAFE_NO_PAD.encode(&bytes));
    let run = homes.bob.run(&["accept", &damaged]);
    assert_eq!(run.code, 14, "{run:?}");
    assert!(run.stderr.contains("altered"), "{}", run.stderr);
    let run = homes.bob.run(&["accept", "hello"]);
    assert_eq!(run.code, 14, "{run:?}");
}

#[test]
fn an_invite_for_another_relay_is_refused() {
    let relay_dir = tempfile::tempdir().unwrap();
    let mut first = RelayProcess::spawn(&relay_dir.path().join("one"), "127.0.0.1:0", &[]);
    let addr = first.addr.to_string();
    let url = first.url.clone();
    let (alice, bob) = (TestHome::new(), TestHome::new());
    alice
        .run(&["init", "--name", "alice", "--relay", &url])
        .ok();
    let token = invite(&alice, &[]);
    alice.run(&["daemon", "stop"]).ok();
    first.signal("-TERM");
    first.wait();
    // Another relay (another database, so another id) at the same address.
    let _second = RelayProcess::spawn(&relay_dir.path().join("two"), &addr, &[]);
    bob.run(&["init", "--name", "bob", "--relay", &url]).ok();
    let run = bob.run(&["accept", &token]);
    assert_eq!(run.code, 17, "{run:?}");
    assert!(run.stderr.contains("another relay"), "{}", run.stderr);

    // And an invite for a relay this home does not use at all.
    let elsewhere = TestHome::new();
    elsewhere.run(&["init", "--name", "eve"]).ok();
    let run = elsewhere.run(&["accept", &token]);
    assert_eq!(run.code, 17, "{run:?}");
}

fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

fn blocking_http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(http_get(addr, path))
}
