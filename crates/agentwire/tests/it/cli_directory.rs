//! The relay's opt-in directory through the binary: nothing is listed
//! unless published; a listed identity is found by capability and paired
//! with through its invite, which is renewed after each redemption and ends
//! with the listing; entries a relay makes up or alters are never shown.

use agentwire_wire::directory::Entry;
use agentwire_wire::{RelayId, Signature};
use ed25519_dalek::Signer as _;
use serde_json::Value;

use crate::util::*;

struct Directory {
    relay: RelayProcess,
    relay_dir: tempfile::TempDir,
    homes: Vec<TestHome>,
}

/// A relay process and a home per name, each initialised against it.
fn start(names: &[&str]) -> Directory {
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::spawn(&relay_dir.path().join("home"), "127.0.0.1:0", &[]);
    let homes = names
        .iter()
        .map(|name| {
            let home = TestHome::new();
            home.run(&["init", "--name", name, "--relay", &relay.url])
                .ok();
            home
        })
        .collect();
    Directory {
        relay,
        relay_dir,
        homes,
    }
}

fn listed(home: &TestHome, capability: Option<&str>) -> Vec<Value> {
    let mut args = vec!["--json", "discover", "--relay"];
    if let Some(tag) = capability {
        args.extend(["--capability", tag]);
    }
    let found = home.run(&args).ok().json();
    assert_eq!(found["contacts"], serde_json::json!([]), "{found}");
    found["listed"].as_array().cloned().unwrap_or_default()
}

fn short_id(home: &TestHome) -> String {
    home.run(&["--json", "whoami"]).ok().json()["address"]
        .as_str()
        .unwrap()[..8]
        .to_owned()
}

#[test]
fn a_listed_identity_is_found_by_capability_and_paired_through_its_invite() {
    let dir = start(&["alice", "bob", "carol", "dave"]);
    let [alice, bob, carol, dave] = &dir.homes[..] else {
        unreachable!()
    };
    alice
        .run(&[
            "card",
            "set",
            "--name",
            "Alice reviews",
            "--capability",
            "code-review,rust",
            "--takes-tasks",
        ])
        .ok();
    // A card is not a listing: nothing reaches the directory unpublished.
    assert!(listed(bob, None).is_empty());
    let text = bob.run(&["discover", "--relay"]).ok();
    assert!(text.stdout.is_empty(), "{text:?}");

    let published = alice
        .run(&["--json", "card", "publish", "--allow", "chat,task"])
        .ok()
        .json();
    assert_eq!(published["listed"], true, "{published}");
    assert_eq!(
        published["capabilities"],
        serde_json::json!(["code-review", "rust"])
    );
    assert_eq!(
        published["permissions"],
        serde_json::json!(["chat", "task"])
    );

    assert!(listed(bob, Some("python")).is_empty());
    let found = listed(bob, Some("rust"));
    assert_eq!(found.len(), 1, "{found:?}");
    let first = &found[0];
    assert_eq!(first["short_id"], short_id(alice).as_str());
    assert_eq!(first["card"]["name"], "Alice reviews");
    assert_eq!(first["card"]["takes_tasks"], true);
    assert_eq!(first["permissions"], serde_json::json!(["chat", "task"]));
    assert!(first.get("contact").is_none(), "{first}");
    let invite = first["invite"].as_str().unwrap().to_owned();
    // The text form says how to pair.
    let text = bob
        .run(&["discover", "--relay", "--capability", "code-review"])
        .ok()
        .stdout;
    assert!(text.contains("Alice reviews"), "{text}");
    assert!(
        text.contains(&format!("agentwire accept {invite}")),
        "{text}"
    );

    // Bob pairs through the listing; it gets what the listing offered.
    let contact = bob
        .run(&["--json", "accept", &invite, "--wait", "20s"])
        .ok()
        .json();
    assert_eq!(contact["state"], "active", "{contact}");
    bob.run(&["send", "alice", "found you"]).ok();
    let mut got = String::new();
    assert!(eventually(|| {
        // Exit 1 while nothing has arrived.
        got = alice.run(&["recv"]).stdout;
        !got.is_empty()
    }));
    assert!(got.contains("found you"), "{got}");

    // The spent invite gave way to a fresh one, which carol uses.
    let mut renewed = Vec::new();
    assert!(eventually(|| {
        renewed = listed(carol, Some("rust"));
        renewed.len() == 1 && renewed[0]["invite"] != invite.as_str()
    }));
    let seen_by_bob = listed(bob, Some("rust"));
    assert_eq!(seen_by_bob[0]["contact"], "alice", "{seen_by_bob:?}");
    let second = renewed[0]["invite"].as_str().unwrap().to_owned();
    carol.run(&["accept", &second, "--wait", "20s"]).ok();
    let mut third = String::new();
    assert!(eventually(|| {
        let now = listed(dave, None);
        third = now
            .first()
            .and_then(|l| l["invite"].as_str())
            .unwrap_or_default()
            .to_owned();
        !third.is_empty() && third != second
    }));

    // Withdrawn: listed no more, and the listed invite has stopped working.
    let withdrawn = alice.run(&["--json", "card", "unpublish"]).ok().json();
    assert_eq!(withdrawn["listed"], false, "{withdrawn}");
    assert!(listed(dave, None).is_empty());
    let late = dave.run(&["accept", &third, "--wait", "20s"]);
    assert_ne!(late.code, 0, "{late:?}");
    assert!(late.stderr.contains("expired"), "{late:?}");
    // Alice's contacts are exactly the two who paired.
    let contacts = alice.run(&["--json", "contacts"]).ok().json();
    let names: Vec<&str> = contacts["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{contacts}");
    drop(dir.relay);
}

/// Plays a hostile relay: writes an entry straight into the relay's
/// directory under `tags`.
fn plant(relay_db: &std::path::Path, key: &[u8; 32], entry: &[u8], tags: &[&str]) {
    let db = rusqlite::Connection::open(relay_db).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    let far_future_ms = 4_000_000_000_000i64;
    db.execute(
        "INSERT OR REPLACE INTO directory (key, published_at, listed_until, forget_at, entry)
         VALUES (?1, 4000000000000, ?2, ?2, ?3)",
        rusqlite::params![key, far_future_ms, entry],
    )
    .unwrap();
    for tag in tags {
        db.execute(
            "INSERT OR IGNORE INTO directory_tags (tag, key) VALUES (?1, ?2)",
            rusqlite::params![tag, key],
        )
        .unwrap();
    }
}

#[test]
fn entries_a_relay_made_up_or_altered_are_never_shown() {
    let dir = start(&["alice", "bob"]);
    let [alice, bob] = &dir.homes[..] else {
        unreachable!()
    };
    alice.run(&["card", "set", "--capability", "rust"]).ok();
    alice.run(&["card", "publish"]).ok();
    let genuine = listed(bob, Some("rust"));
    assert_eq!(genuine.len(), 1);
    let alices_invite = genuine[0]["invite"].as_str().unwrap().to_owned();

    let health = blocking_health(&dir.relay);
    let relay_id = RelayId::from_hex(health["relay_id"].as_str().unwrap()).unwrap();
    let card = |tags: &[&str]| {
        let mut card = vec![1, 0, 0, 0, 0, tags.len() as u8];
        for tag in tags {
            card.push(tag.len() as u8);
            card.extend_from_slice(tag.as_bytes());
        }
        card
    };
    let signed = |key: &ed25519_dalek::SigningKey, tags: &[&str], card: Vec<u8>, invite: &str| {
        let mut entry = Entry {
            key: public(key),
            published_at_ms: 4_000_000_000_000,
            expires_at_ms: 4_000_000_000_000,
            capabilities: tags.iter().map(|t| (*t).to_owned()).collect(),
            card,
            invite: invite.as_bytes().to_vec(),
            signature: Signature::from_bytes([0; 64]),
        };
        entry.signature =
            Signature::from_bytes(key.sign(&entry.signed_bytes(&relay_id)).to_bytes());
        entry
    };
    let db = dir.relay_dir.path().join("home").join("relay.db");
    // Mallory lists herself with alice's invite: whoever accepts it pairs
    // with alice, not with the identity the listing shows.
    let mallory = new_key();
    let stolen = signed(&mallory, &["rust"], card(&["rust"]), &alices_invite);
    plant(
        &db,
        public(&mallory).as_bytes(),
        &stolen.encode(),
        &["rust"],
    );
    // Eve's entry, altered after she signed it.
    let eve = new_key();
    let mut altered = signed(&eve, &["go"], card(&["go"]), &alices_invite);
    altered.capabilities = vec!["rust".into()];
    altered.card = card(&["rust"]);
    plant(&db, public(&eve).as_bytes(), &altered.encode(), &["rust"]);
    // Trent's card does not list what his entry is listed under.
    let trent = new_key();
    let mismatch = signed(&trent, &["rust"], card(&["python"]), &alices_invite);
    plant(
        &db,
        public(&trent).as_bytes(),
        &mismatch.encode(),
        &["rust"],
    );

    let shown = listed(bob, Some("rust"));
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["short_id"], genuine[0]["short_id"]);
    assert_eq!(listed(bob, None).len(), 1);
}

fn blocking_health(relay: &RelayProcess) -> Value {
    let (status, body) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(http_get(relay.addr, "/health"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}
