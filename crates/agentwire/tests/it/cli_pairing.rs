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
    two_homes_via(|relay| relay.url.clone())
}

/// Two homes whose relay URL is `url(relay)` (the relay itself, or a proxy).
fn two_homes_via(url: impl FnOnce(&RelayProcess) -> String) -> TwoHomes {
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::spawn(&relay_dir.path().join("home"), "127.0.0.1:0", &[]);
    let url = url(&relay);
    let (alice, bob) = (TestHome::new(), TestHome::new());
    alice
        .run(&["init", "--name", "alice", "--relay", &url])
        .ok();
    bob.run(&["init", "--name", "bob", "--relay", &url]).ok();
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
    // Everything between the daemons and the relay passes a recording proxy.
    let mut proxy = None;
    let homes = two_homes_via(|relay| {
        let recorder = WireRecorder::start(relay.addr);
        let url = format!("ws://{}/v1/ws", recorder.addr);
        proxy = Some(recorder);
        url
    });
    let proxy = proxy.unwrap();
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
    homes
        .alice
        .run(&["send", "bob", "MARKER-7f3a9 second"])
        .ok();
    let queued_at_relay = eventually(|| {
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

    // The bytes on the wire never held the plaintext.
    let wire = proxy.bytes();
    assert!(wire.len() > 1000, "the proxy saw only {} bytes", wire.len());
    assert!(
        !wire.windows(12).any(|w| w == b"MARKER-7f3a9"),
        "plaintext on the wire"
    );
    assert!(
        !wire.windows(6).any(|w| w == b"got it"),
        "plaintext on the wire"
    );
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
    // A date and how long ago, not a count of milliseconds.
    assert!(run.stderr.contains("ago"), "{}", run.stderr);
    assert!(!run.stderr.contains("ms since"), "{}", run.stderr);
}

/// The replaced tools' bug class "invite expiry in the wrong unit", the other
/// way round from `an_expired_invite_is_refused`: a lifetime taken 1,000
/// times too short (milliseconds for seconds) would expire this invite long
/// before it is used.
#[test]
fn an_invite_is_good_for_its_whole_lifetime_not_a_thousandth_of_it() {
    let homes = two_homes();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let made = homes
        .alice
        .run(&["--json", "invite", "--ttl", "30s"])
        .ok()
        .json();
    let expires = made["expires_at_ms"].as_u64().unwrap();
    assert!(
        (before + 29_000..=before + 60_000).contains(&expires),
        "30 s from {before} is not {expires}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let token = made["invite"].as_str().unwrap();
    homes
        .bob
        .run_with_stdin(&["accept", "-"], Some(token.as_bytes()))
        .ok();
}

/// The replaced tools' bug class "a name slot taken over": a second
/// redeemer suggesting a name a contact already has gets a name of its own,
/// and the first contact's name keeps pointing at the first contact.
#[test]
fn a_second_redeemer_with_the_same_name_takes_nothing_from_the_first() {
    let homes = two_homes();
    let impostor = TestHome::new();
    impostor
        .run(&["init", "--name", "bob", "--relay", &homes.relay.url])
        .ok();
    for home in [&homes.bob, &impostor] {
        let token = invite(&homes.alice, &[]);
        home.run_with_stdin(&["accept", "-"], Some(token.as_bytes()))
            .ok();
    }
    let key_of = |home: &TestHome| home.run(&["--json", "whoami"]).ok().json()["address"].clone();
    let contacts = homes.alice.run(&["--json", "contacts"]).ok().json();
    let by_name = |name: &str| {
        contacts["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["address"].clone())
    };
    assert_eq!(by_name("bob"), Some(key_of(&homes.bob)), "{contacts}");
    assert_eq!(by_name("bob-2"), Some(key_of(&impostor)), "{contacts}");
    // What alice sends to "bob" reaches the first bob only.
    homes
        .alice
        .run_with_stdin(&["send", "bob", "-"], Some(b"for the first bob"))
        .ok();
    let got = homes
        .bob
        .run(&["--json", "recv", "--wait", "10s"])
        .ok()
        .json();
    assert_eq!(got["messages"][0]["body"], "for the first bob");
    assert_eq!(
        impostor.run(&["recv"]).code,
        1,
        "the second bob got nothing"
    );
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

fn blocking_http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(http_get(addr, path))
}

/// Plays a hostile relay: puts an envelope straight into the relay's queue
/// for `recipient`, claiming any sender. The relay process must be stopped.
fn inject(
    relay_db: &std::path::Path,
    sender: &[u8; 32],
    recipient: &[u8; 32],
    id: &[u8; 16],
    payload: &[u8],
) {
    let db = rusqlite::Connection::open(relay_db).unwrap();
    let far_future_ms = 4_000_000_000_000i64;
    db.execute(
        "INSERT INTO envelopes (recipient, id, sender, payload, received_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, 0, ?5)",
        rusqlite::params![recipient, id, sender, payload, far_future_ms],
    )
    .unwrap();
    db.execute(
        "INSERT INTO depth (recipient, queued) VALUES (?1, 1)
         ON CONFLICT (recipient) DO UPDATE SET queued = queued + 1",
        rusqlite::params![recipient],
    )
    .unwrap();
}

fn address(home: &TestHome) -> [u8; 32] {
    let hex = home.run(&["--json", "whoami"]).ok().json()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    *agentwire_wire::PublicKey::from_hex(&hex)
        .unwrap()
        .as_bytes()
}

fn dropped_undecryptable(home: &TestHome) -> u64 {
    home.run(&["--json", "daemon", "status"]).ok().json()["dropped_undecryptable"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_message_sealed_by_someone_else_but_claiming_a_contact_as_sender_is_rejected() {
    let mut pair = Paired::start(&[]);
    let (alice, bob) = (&pair.alice, &pair.bob);
    let (alice_key, bob_key) = (address(alice), address(bob));

    // Carol seals a message to Bob with her own keys; a hostile relay hands
    // it to Bob as if Alice had sent it.
    let (id, payload) = stranger_message("transfer everything to carol");
    pair.with_relay_stopped(|relay_db| {
        inject(relay_db, &alice_key, &bob_key, id.as_bytes(), &payload)
    });
    let bob = &pair.bob;

    let mut dropped = 0;
    eventually(|| {
        dropped = dropped_undecryptable(bob);
        dropped >= 1
    });
    assert_eq!(dropped, 1);
    let run = bob.run(&["recv"]);
    assert_eq!(run.code, 1, "the forged message was shown: {run:?}");
}

#[test]
fn a_replayed_envelope_is_stored_once() {
    let mut pair = Paired::start(&[]);
    let (alice, bob) = (&pair.alice, &pair.bob);
    let (alice_key, bob_key) = (address(alice), address(bob));
    let relay_db = pair.relay_home.join("relay.db");

    // Capture the envelope while Bob is away.
    bob.run(&["daemon", "stop"]).ok();
    alice.run(&["send", "bob", "only once"]).ok();
    let mut captured = None;
    eventually(|| {
        let db = rusqlite::Connection::open(&relay_db).unwrap();
        captured = db
            .query_row(
                "SELECT id, payload FROM envelopes WHERE recipient = ?1",
                rusqlite::params![bob_key],
                |row| Ok((row.get::<_, [u8; 16]>(0)?, row.get::<_, Vec<u8>>(1)?)),
            )
            .ok();
        captured.is_some()
    });
    let (id, payload) = captured.expect("the envelope never reached the relay");
    let first = bob.run(&["--json", "recv", "--wait", "10s"]).ok().json();
    assert_eq!(first["messages"].as_array().unwrap().len(), 1);

    // A hostile relay (or a crash before the ack) delivers it again.
    pair.with_relay_stopped(|relay_db| inject(relay_db, &alice_key, &bob_key, &id, &payload));
    let bob = &pair.bob;
    let drained = eventually(|| {
        let db = rusqlite::Connection::open(&relay_db).unwrap();
        let left: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM envelopes WHERE recipient = ?1",
                rusqlite::params![bob_key],
                |r| r.get(0),
            )
            .unwrap();
        left == 0
    });
    assert!(drained, "the redelivery was not acknowledged");
    let run = bob.run(&["recv"]);
    assert_eq!(run.code, 1, "the replay was stored twice: {run:?}");
}

#[test]
fn a_body_over_the_limit_is_refused_with_the_limit_named() {
    let home = TestHome::new();
    home.run(&["init", "--name", "a"]).ok();
    home.run(&["init", "--name", "b"]).ok();
    // Well over it: said to be over the limit, not a size the reader happened
    // to stop at.
    let big = vec![b'x'; 140_000];
    let run = home.run_with_stdin(&["send", "b", "-"], Some(&big));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("limit is 131072 bytes"),
        "{}",
        run.stderr
    );
    let fits = vec![b'y'; 128 * 1024];
    home.run_with_stdin(&["send", "b", "-"], Some(&fits)).ok();
}

#[test]
fn accepting_again_after_a_timeout_does_not_break_the_pairing() {
    let homes = two_homes();
    let token = invite(&homes.alice, &[]);
    homes.alice.run(&["daemon", "stop"]).ok();
    // Alice is away: the accept times out pending, twice.
    for _ in 0..2 {
        let pending = homes
            .bob
            .run(&["--json", "accept", &token, "--wait", "1s"])
            .ok()
            .json();
        assert_eq!(pending["state"], "pending");
    }
    // Alice comes back; the one redemption pairs them.
    homes.alice.run(&["daemon", "start"]).ok();
    let active = homes
        .bob
        .run(&["--json", "accept", &token, "--wait", "10s"])
        .ok()
        .json();
    assert_eq!(active["state"], "active");
    homes.bob.run(&["send", "alice", "still works"]).ok();
    let got = homes
        .alice
        .run(&["--json", "recv", "--wait", "10s"])
        .ok()
        .json();
    assert_eq!(got["messages"][0]["body"], "still works");
    homes.alice.run(&["send", "bob", "both ways"]).ok();
    let got = homes
        .bob
        .run(&["--json", "recv", "--wait", "10s"])
        .ok()
        .json();
    assert_eq!(got["messages"][0]["body"], "both ways");
}

#[test]
fn an_invite_can_be_read_from_stdin() {
    let homes = two_homes();
    let token = invite(&homes.alice, &[]);
    let run = homes.bob.run_with_stdin(
        &["--json", "accept", "-"],
        Some(format!("{token}\n").as_bytes()),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["state"], "active");
}

#[test]
fn init_checks_the_relay_and_says_what_to_change() {
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::spawn(&relay_dir.path().join("home"), "127.0.0.1:0", &[]);
    // wss:// against a plain relay: told to use ws://.
    let home = TestHome::new();
    let tls_url = relay.url.replacen("ws://", "wss://", 1);
    let run = home.run(&["init", "--relay", &tls_url]);
    assert_eq!(run.code, 11, "{run:?}");
    assert!(
        run.stderr.contains("use ws:// instead of wss://"),
        "{}",
        run.stderr
    );
    // Nothing listening: said so.
    let run = home.run(&["init", "--relay", "ws://127.0.0.1:9"]);
    assert_eq!(run.code, 11, "{run:?}");
    assert!(
        run.stderr.contains("nothing listens there"),
        "{}",
        run.stderr
    );
    // The right URL works.
    home.run(&["init", "--relay", &relay.url]).ok();
}

#[test]
fn a_relay_with_a_self_signed_certificate_is_used_with_relay_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let relay = RelayProcess::spawn(
        &dir.path().join("relay-home"),
        "127.0.0.1:0",
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let url = format!("wss://localhost:{}/v1/ws", relay.addr.port());
    let (alice, bob) = (TestHome::new(), TestHome::new());
    // Not trusted: said so in words, nothing created.
    let run = alice.run(&["init", "--name", "alice", "--relay", &url]);
    assert_eq!(run.code, 11, "{run:?}");
    assert!(run.stderr.contains("not trusted"), "{}", run.stderr);
    // A file that holds no certificate is refused before anything is tried.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let run = alice.run(&[
        "init",
        "--relay",
        &url,
        "--relay-ca",
        junk.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 3, "{run:?}");
    // With the certificate trusted, both sides pair and talk over wss://.
    let ca = cert_path.to_str().unwrap();
    for (home, name) in [(&alice, "alice"), (&bob, "bob")] {
        home.run(&["init", "--name", name, "--relay", &url, "--relay-ca", ca])
            .ok();
    }
    let shown = alice.run(&["--json", "config"]).ok().json();
    assert_eq!(shown["relay_ca"], true);
    let token = invite(&alice, &[]);
    bob.run(&["accept", &token]).ok();
    bob.run(&["send", "alice", "over wss"]).ok();
    let got = alice.run(&["--json", "recv", "--wait", "10s"]).ok().json();
    assert_eq!(got["messages"][0]["body"], "over wss");
}

#[test]
fn a_wrong_relay_setting_is_fixed_with_config_without_a_new_home() {
    let relay_dir = tempfile::tempdir().unwrap();
    let token_file = relay_dir.path().join("token");
    std::fs::write(&token_file, "let-agents-in\n").unwrap();
    let wrong_file = relay_dir.path().join("wrong");
    std::fs::write(&wrong_file, "guess\n").unwrap();
    let (token, wrong) = (token_file.to_str().unwrap(), wrong_file.to_str().unwrap());
    let relay = RelayProcess::spawn(
        &relay_dir.path().join("home"),
        "127.0.0.1:0",
        &["--access-token-file", token],
    );
    // Made without the token (checks skipped): the link is refused.
    let home = TestHome::new();
    home.run(&["init", "--name", "a", "--relay", &relay.url, "--no-check"])
        .ok();
    assert_eq!(home.run(&["invite"]).code, 11);
    let shown = home.run(&["--json", "config"]).ok().json();
    assert_eq!(shown["relay"], relay.url.as_str());
    assert_eq!(shown["relay_token"], false);
    assert_eq!(shown["changed"], false);
    // A wrong token is checked and refused; nothing changes.
    let run = home.run(&["config", "--relay-token-file", wrong]);
    assert_eq!(run.code, 11, "{run:?}");
    assert!(run.stderr.contains("not changed"), "{}", run.stderr);
    assert_eq!(
        home.run(&["--json", "config"]).ok().json()["relay_token"],
        false
    );
    // wss:// to this plain relay: refused with what to change.
    let tls_url = relay.url.replacen("ws://", "wss://", 1);
    let run = home.run(&["config", "--relay", &tls_url, "--relay-token-file", token]);
    assert_eq!(run.code, 11, "{run:?}");
    assert!(run.stderr.contains("use ws://"), "{}", run.stderr);
    // The right token: kept, the link reconnects, pairing works.
    let set = home
        .run(&["--json", "config", "--relay-token-file", token])
        .ok()
        .json();
    assert_eq!(set["changed"], true);
    assert_eq!(set["relay_token"], true);
    assert!(eventually(|| home.run(&["invite"]).code == 0));
}

#[test]
fn homes_reach_a_relay_that_requires_an_access_token() {
    let relay_dir = tempfile::tempdir().unwrap();
    let token_file = relay_dir.path().join("token");
    std::fs::write(&token_file, "let-agents-in\n").unwrap();
    let token_path = token_file.to_str().unwrap();
    let relay = RelayProcess::spawn(
        &relay_dir.path().join("home"),
        "127.0.0.1:0",
        &["--access-token-file", token_path],
    );
    let (alice, bob) = (TestHome::new(), TestHome::new());
    for (home, name) in [(&alice, "alice"), (&bob, "bob")] {
        home.run(&[
            "init",
            "--name",
            name,
            "--relay",
            &relay.url,
            "--relay-token-file",
            token_path,
        ])
        .ok();
    }
    let token = invite(&alice, &[]);
    bob.run(&["accept", &token]).ok();
    bob.run(&["send", "alice", "through the gate"]).ok();
    let got = alice.run(&["--json", "recv", "--wait", "10s"]).ok().json();
    assert_eq!(got["messages"][0]["body"], "through the gate");

    // Without the token, init says so and creates nothing.
    let outsider = TestHome::new();
    let run = outsider.run(&["init", "--name", "eve", "--relay", &relay.url]);
    assert_eq!(run.code, 11, "{run:?}");
    assert!(run.stderr.contains("access token"), "{}", run.stderr);
    assert!(run.stderr.contains("nothing was created"), "{}", run.stderr);
    assert_eq!(outsider.run(&["whoami"]).code, 13);
    // Created anyway (--no-check), the home cannot get onto the relay, and
    // says why at once.
    outsider
        .run(&["init", "--name", "eve", "--relay", &relay.url, "--no-check"])
        .ok();
    let run = outsider.run(&["invite"]);
    assert_eq!(run.code, 11, "{run:?}");
    assert!(run.stderr.contains("access token"), "{}", run.stderr);
    let status = outsider.run(&["--json", "daemon", "status"]).ok().json();
    assert!(
        status["identities"][0]["relay_error"]
            .as_str()
            .unwrap()
            .contains("access token")
    );
}

/// Finding: message bodies and invite links passed as arguments are visible
/// to every user in `ps`; `-` reads them from stdin, and an argument is
/// noted.
#[test]
fn a_body_given_as_an_argument_is_noted() {
    let home = TestHome::new();
    home.run(&["init", "--name", "a"]).ok();
    home.run(&["init", "--name", "b"]).ok();
    let noted = home.run(&["send", "b", "secret plans"]).ok();
    assert!(noted.stderr.contains("process list"), "{noted:?}");
    assert!(noted.stderr.contains("pass `-`"), "{noted:?}");
    let quiet = home
        .run_with_stdin(&["send", "b", "-"], Some(b"secret plans"))
        .ok();
    assert!(quiet.stderr.is_empty(), "{quiet:?}");
    let json = home.run(&["--json", "send", "b", "secret plans"]).ok();
    assert!(json.stderr.is_empty(), "{json:?}");
    assert!(eventually(|| home
        .run(&["--json", "--as", "b", "inbox"])
        .json()["unread"]
        == 3));
}

/// Finding: anyone who ever saw an invite link, spent or expired, could make
/// the inviter write a row and send a signed refusal for every envelope
/// naming that invite's one-time key (1,000 envelopes: 1,000 rows and 1,000
/// notices), and these were not counted as dropped.
#[test]
fn replaying_a_spent_invite_cannot_make_the_inviter_write_without_end() {
    use agentwire_session::SignedInvite;
    let homes = two_homes();
    let token = invite(&homes.alice, &[]);
    homes.bob.run(&["accept", &token]).ok();
    let invite = SignedInvite::parse(&token).unwrap().invite;
    // 200 first messages naming the spent invite's one-time key, each from
    // a key of its own on the relay.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut sent = Vec::new();
        for _ in 0..200 {
            let config = homes.relay.client_config();
            let invite = invite.clone();
            sent.push(tokio::spawn(async move {
                let (_, payload) = first_message(
                    invite.inviter_curve25519,
                    invite.one_time_key,
                    "let me in again",
                );
                let (client, _events) =
                    agentwire_client::RelayClient::connect(config, std::sync::Arc::new(new_key()))
                        .await
                        .unwrap();
                client
                    .send(invite.inviter, new_id(), payload)
                    .await
                    .unwrap();
            }));
        }
        for one in sent {
            one.await.unwrap();
        }
    });
    // Every one is dropped and counted; only a few get a refusal (they wait
    // at the relay for their offline senders).
    assert!(eventually(|| {
        homes.alice.run(&["--json", "daemon", "status"]).json()["dropped_non_contact"] == 200
    }));
    // Once alice's outbox is empty, every refusal she sent is at the relay.
    assert!(eventually(|| {
        homes.alice.run(&["--json", "daemon", "status"]).json()["queued"] == 0
    }));
    let queued = runtime.block_on(async {
        let (_, body) = http_get(homes.relay.addr, "/health").await;
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["queued_envelopes"]
            .as_u64()
            .unwrap()
    });
    assert!(queued <= 20, "{queued} refusals for 200 replays");
    assert!(queued >= 1, "a replay is refused at least once");
}
