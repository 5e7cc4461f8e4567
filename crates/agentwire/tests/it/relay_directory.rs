//! The relay's opt-in directory: only what a key publishes, signed by that
//! key for this relay, newest wins, withdrawals stick, and the limits hold.

use std::sync::Arc;

use agentwire_client::{Event, Events, RelayClient, sign_entry, verify_entry};
use agentwire_wire::directory::{Entry, MAX_ENTRY_CLOCK_SKEW_MS, MAX_ENTRY_LIFETIME_MS};
use agentwire_wire::{ErrorCode, RelayId, Signature};
use ed25519_dalek::SigningKey;

use crate::util::*;

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A connected client and the relay's id from its welcome.
async fn connect(relay: &TestRelay, key: &SigningKey) -> (RelayClient, Events, RelayId) {
    let (client, mut events) = RelayClient::connect(relay.client_config(), Arc::new(key.clone()))
        .await
        .unwrap();
    match next_event(&mut events).await {
        Event::Connected { relay_id, .. } => (client, events, relay_id),
        other => panic!("expected Connected, got {other:?}"),
    }
}

/// An entry of `key` listing `tags`, made at `at`, signed for `relay_id`.
fn entry(key: &SigningKey, relay_id: &RelayId, tags: &[&str], at: u64) -> Entry {
    let mut entry = Entry {
        key: public(key),
        published_at_ms: at,
        expires_at_ms: at + 3_600_000,
        capabilities: tags.iter().map(|t| (*t).to_owned()).collect(),
        card: b"card".to_vec(),
        invite: b"aw1:invite".to_vec(),
        signature: Signature::from_bytes([0; 64]),
    };
    sign_entry(&mut entry, relay_id, key);
    entry
}

fn withdrawal(key: &SigningKey, relay_id: &RelayId, at: u64) -> Entry {
    let mut entry = entry(key, relay_id, &[], at);
    entry.card.clear();
    entry.invite.clear();
    sign_entry(&mut entry, relay_id, key);
    entry
}

fn refusal<T: std::fmt::Debug>(result: Result<T, agentwire_client::ClientError>) -> ErrorCode {
    match result {
        Err(agentwire_client::ClientError::Rejected { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn only_published_entries_are_listed_and_each_verifies(store: Store) {
    let relay = TestRelay::on(store, |_| {}).await;
    let (alice, bob, carol) = (new_key(), new_key(), new_key());
    let (client_a, _ea, relay_id) = connect(&relay, &alice).await;
    let (client_b, _eb, _) = connect(&relay, &bob).await;
    // Connected and sending is not publishing: nothing is listed yet.
    let (client_c, _ec, _) = connect(&relay, &carol).await;
    client_c
        .send(public(&alice), new_id(), b"x".to_vec())
        .await
        .unwrap();
    assert!(client_c.lookup("").await.unwrap().is_empty());

    let now = now_ms();
    let listed_a = entry(&alice, &relay_id, &["code-review", "rust"], now);
    let expires = client_a.publish(&listed_a).await.unwrap();
    assert_eq!(expires, listed_a.expires_at_ms);
    client_b
        .publish(&entry(&bob, &relay_id, &["python"], now + 1))
        .await
        .unwrap();

    let found = client_c.lookup("rust").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(verify_entry(&found[0], &relay_id).unwrap(), listed_a);
    assert!(client_c.lookup("go").await.unwrap().is_empty());
    // A tag no entry can have matches nothing (and is not an error).
    assert!(client_c.lookup("Not A Tag").await.unwrap().is_empty());
    // All entries, newest first; none of carol's.
    let all = client_c.lookup("").await.unwrap();
    let keys: Vec<_> = all
        .iter()
        .map(|e| verify_entry(e, &relay_id).unwrap().key)
        .collect();
    assert_eq!(keys, [public(&bob), public(&alice)]);
    // An entry checked against another relay's id does not verify.
    assert!(verify_entry(&found[0], &RelayId::from_bytes([9; 16])).is_err());
}

async fn forged_stale_and_foreign_entries_are_refused(store: Store) {
    let relay = TestRelay::on(store, |_| {}).await;
    let (alice, mallory) = (new_key(), new_key());
    let (client_a, _ea, relay_id) = connect(&relay, &alice).await;
    let (client_m, _em, _) = connect(&relay, &mallory).await;
    let now = now_ms();

    // Mallory cannot publish alice's entry, even one alice signed.
    let alices = entry(&alice, &relay_id, &["rust"], now);
    assert_eq!(
        refusal(client_m.publish(&alices).await),
        ErrorCode::InvalidEntry
    );
    // Nor one claiming alice's key that mallory signed.
    let mut forged = alices.clone();
    sign_entry(&mut forged, &relay_id, &mallory);
    assert_eq!(
        refusal(client_a.publish(&forged).await),
        ErrorCode::InvalidEntry
    );
    // A changed field breaks alice's own signature.
    let mut changed = alices.clone();
    changed.capabilities.push("admin".into());
    assert_eq!(
        refusal(client_a.publish(&changed).await),
        ErrorCode::InvalidEntry
    );
    // Signed for another relay.
    let elsewhere = entry(&alice, &RelayId::from_bytes([7; 16]), &["rust"], now);
    assert_eq!(
        refusal(client_a.publish(&elsewhere).await),
        ErrorCode::InvalidEntry
    );
    // Made too long ago, or listed for too long.
    let old = entry(
        &alice,
        &relay_id,
        &["rust"],
        now - MAX_ENTRY_CLOCK_SKEW_MS - 60_000,
    );
    assert_eq!(
        refusal(client_a.publish(&old).await),
        ErrorCode::InvalidEntry
    );
    let mut forever = entry(&alice, &relay_id, &["rust"], now);
    forever.expires_at_ms = now + MAX_ENTRY_LIFETIME_MS + 1;
    sign_entry(&mut forever, &relay_id, &alice);
    assert_eq!(
        refusal(client_a.publish(&forever).await),
        ErrorCode::InvalidEntry
    );
    assert!(client_m.lookup("").await.unwrap().is_empty());

    // Newest wins; an older entry replayed is refused; a withdrawal sticks.
    client_a.publish(&alices).await.unwrap();
    let newer = entry(&alice, &relay_id, &["go"], now + 10);
    client_a.publish(&newer).await.unwrap();
    assert_eq!(
        refusal(client_a.publish(&alices).await),
        ErrorCode::InvalidEntry
    );
    assert!(client_m.lookup("rust").await.unwrap().is_empty());
    assert_eq!(client_m.lookup("go").await.unwrap().len(), 1);
    assert_eq!(
        client_a
            .publish(&withdrawal(&alice, &relay_id, now + 20))
            .await
            .unwrap(),
        0
    );
    assert!(client_m.lookup("").await.unwrap().is_empty());
    assert_eq!(
        refusal(client_a.publish(&newer).await),
        ErrorCode::InvalidEntry
    );
    assert!(client_m.lookup("go").await.unwrap().is_empty());
    // The connection survived every refusal.
    client_m
        .send(public(&alice), new_id(), b"still here".to_vec())
        .await
        .unwrap();
}

async fn the_directory_is_bounded_and_can_be_turned_off(store: Store) {
    let relay = limits_relay_on(store, |l| l.max_directory_entries = 1).await;
    let (alice, bob) = (new_key(), new_key());
    let (client_a, _ea, relay_id) = connect(&relay, &alice).await;
    let (client_b, _eb, _) = connect(&relay, &bob).await;
    let now = now_ms();
    client_a
        .publish(&entry(&alice, &relay_id, &["rust"], now))
        .await
        .unwrap();
    assert_eq!(
        refusal(
            client_b
                .publish(&entry(&bob, &relay_id, &["rust"], now))
                .await
        ),
        ErrorCode::DirectoryFull
    );
    // The key already listed may still replace its entry.
    client_a
        .publish(&entry(&alice, &relay_id, &["go"], now + 1))
        .await
        .unwrap();

    let off = limits_relay_on(store, |l| l.max_directory_entries = 0).await;
    let (client, _e, relay_id) = connect(&off, &alice).await;
    assert_eq!(
        refusal(
            client
                .publish(&entry(&alice, &relay_id, &["rust"], now))
                .await
        ),
        ErrorCode::DirectoryDisabled
    );
    assert_eq!(
        refusal(client.lookup("rust").await),
        ErrorCode::DirectoryDisabled
    );
}

on_both_stores!(
    only_published_entries_are_listed_and_each_verifies,
    forged_stale_and_foreign_entries_are_refused,
    the_directory_is_bounded_and_can_be_turned_off,
);
