//! Store-and-forward: durable accept, delivery order, acks, duplicates, expiry.

use std::time::Duration;

use agentwire_client::Event;
use agentwire_wire::{Body, ErrorCode, Frame};

use crate::util::*;

async fn envelope_to_a_connected_recipient_is_pushed_and_removed_by_ack(store: Store) {
    let relay = TestRelay::on(store, |_| {}).await;
    let (a, b) = (new_key(), new_key());
    let (client_a, _) = relay.client(&a).await;
    let (client_b, mut events_b) = relay.client(&b).await;

    let id = new_id();
    client_a
        .send(public(&b), id, b"sealed".to_vec())
        .await
        .unwrap();
    let envelope = next_envelope(&mut events_b).await;
    assert_eq!(envelope.id, id);
    assert_eq!(envelope.from, public(&a));
    assert_eq!(envelope.payload, b"sealed");
    assert_eq!(relay.health().await["queued_envelopes"], 1);

    client_b.ack(id).await.unwrap();
    assert_eq!(relay.health().await["queued_envelopes"], 0);
}

async fn queued_envelopes_arrive_oldest_first_on_connect(store: Store) {
    let relay = TestRelay::on(store, |_| {}).await;
    let (a, b) = (new_key(), new_key());
    let (client_a, _) = relay.client(&a).await;
    let ids: Vec<_> = (0..300).map(|_| new_id()).collect();
    for (n, id) in ids.iter().enumerate() {
        client_a
            .send(public(&b), *id, format!("#{n}").into_bytes())
            .await
            .unwrap();
    }
    // More than the delivery window: acks must keep the pipe moving.
    let (client_b, mut events_b) = relay.client(&b).await;
    for (n, id) in ids.iter().enumerate() {
        let envelope = next_envelope(&mut events_b).await;
        assert_eq!(envelope.id, *id, "envelope #{n} out of order");
        client_b.ack(envelope.id).await.unwrap();
    }
    assert_eq!(relay.health().await["queued_envelopes"], 0);
}

async fn unacknowledged_envelopes_are_delivered_again_on_reconnect(store: Store) {
    let relay = TestRelay::on(store, |_| {}).await;
    let (a, b) = (new_key(), new_key());
    let (client_a, _) = relay.client(&a).await;
    let id = new_id();
    client_a.send(public(&b), id, b"x".to_vec()).await.unwrap();
    {
        let (_client_b, mut events_b) = relay.client(&b).await;
        assert_eq!(next_envelope(&mut events_b).await.id, id);
        // Dropped without ack: a crash before the envelope was stored.
    }
    let (client_b, mut events_b) = relay.client(&b).await;
    assert_eq!(next_envelope(&mut events_b).await.id, id);
    client_b.ack(id).await.unwrap();
}

async fn duplicate_envelope_id_is_stored_once(store: Store) {
    let relay = TestRelay::on(store, |_| {}).await;
    let (a, b) = (new_key(), new_key());
    let (client_a, _) = relay.client(&a).await;
    let id = new_id();
    client_a
        .send(public(&b), id, b"first".to_vec())
        .await
        .unwrap();
    client_a
        .send(public(&b), id, b"again".to_vec())
        .await
        .unwrap();
    assert_eq!(relay.health().await["queued_envelopes"], 1);

    let (client_b, mut events_b) = relay.client(&b).await;
    let envelope = next_envelope(&mut events_b).await;
    assert_eq!(envelope.payload, b"first");
    client_b.ack(id).await.unwrap();
    // A resend after delivery is recognised too: not stored, not delivered.
    client_a
        .send(public(&b), id, b"late".to_vec())
        .await
        .unwrap();
    assert_no_envelope(&mut events_b, Duration::from_millis(300)).await;
    assert_eq!(relay.health().await["queued_envelopes"], 0);
}

async fn envelope_id_of_another_sender_is_a_conflict_not_a_silent_drop(store: Store) {
    let relay = TestRelay::on(store, |_| {}).await;
    let (a, b, c) = (new_key(), new_key(), new_key());
    let (client_a, _) = relay.client(&a).await;
    let (client_c, _) = relay.client(&c).await;
    let id = new_id();
    client_a.send(public(&b), id, b"a".to_vec()).await.unwrap();
    let (code, _) = rejected_code(client_c.send(public(&b), id, b"c".to_vec()).await);
    assert_eq!(code, ErrorCode::IdConflict);
}

async fn ack_by_someone_other_than_the_recipient_has_no_effect(store: Store) {
    let relay = TestRelay::on(store, |_| {}).await;
    let (a, b, mallory) = (new_key(), new_key(), new_key());
    let (client_a, _) = relay.client(&a).await;
    let (client_m, _) = relay.client(&mallory).await;
    let id = new_id();
    client_a
        .send(public(&b), id, b"for b".to_vec())
        .await
        .unwrap();
    // The sender and a stranger both try to remove it.
    client_m.ack(id).await.unwrap();
    client_a.ack(id).await.unwrap();
    assert_eq!(relay.health().await["queued_envelopes"], 1);
    let (_client_b, mut events_b) = relay.client(&b).await;
    assert_eq!(next_envelope(&mut events_b).await.id, id);
}

async fn expiry_is_reported_to_a_connected_sender_and_again_until_dismissed(store: Store) {
    let relay = limits_relay_on(store, |l| l.envelope_ttl = Duration::from_millis(400)).await;
    let (a, b) = (new_key(), new_key());
    let (client_a, mut events_a) = relay.client(&a).await;
    let id = new_id();
    client_a
        .send(public(&b), id, b"too late".to_vec())
        .await
        .unwrap();

    let expired = loop {
        match next_event(&mut events_a).await {
            Event::Expired { id, to, .. } => break (id, to),
            _ => continue,
        }
    };
    assert_eq!(expired, (id, public(&b)));
    assert_eq!(relay.health().await["queued_envelopes"], 0);
    drop((client_a, events_a));

    // Not dismissed: reported again on the next connect.
    let (client_a, mut events_a) = relay.client(&a).await;
    match next_event(&mut events_a).await {
        Event::Expired { id: again, .. } => assert_eq!(again, id),
        other => panic!("expected the expiry notice again, got {other:?}"),
    }
    client_a.dismiss(id, public(&b)).await.unwrap();
    drop((client_a, events_a));
    let (_client_a, mut events_a) = relay.client(&a).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events_a.recv())
            .await
            .is_err(),
        "a dismissed notice came back"
    );

    // The recipient never sees the expired envelope.
    let (_client_b, mut events_b) = relay.client(&b).await;
    assert_no_envelope(&mut events_b, Duration::from_millis(200)).await;
}

async fn every_request_answer_echoes_its_request_id(store: Store) {
    let relay = TestRelay::on(store, |_| {}).await;
    let (a, b) = (new_key(), new_key());
    let mut raw = RawWs::connect(&relay).await;
    let welcome = raw.authenticate(&a).await;
    assert_eq!(welcome.request_id, 1);
    let id = new_id();
    raw.send(Frame::new(
        0xdead_beef,
        Body::Send {
            to: public(&b),
            id,
            payload: vec![1, 2, 3],
        },
    ))
    .await;
    let answer = raw.expect().await;
    assert_eq!(answer, Frame::new(0xdead_beef, Body::Accepted { id }));
    raw.send(Frame::new(77, Body::Ack { id })).await;
    assert_eq!(raw.expect().await, Frame::new(77, Body::Acked { id }));
}

async fn acks_on_one_connection_do_not_stall_another_connection_of_the_same_key(store: Store) {
    let relay = limits_relay_on(store, |l| l.ping_interval = Duration::from_millis(300)).await;
    let (a, b) = (new_key(), new_key());
    let (client_a, _) = relay.client(&a).await;
    let window = agentwire_relay::DELIVERY_WINDOW;
    // Two connections of b: one acks, the other never does. The silent one
    // keeps reading (so it answers the relay's pings) on its own task.
    let mut silent = RawWs::connect(&relay).await;
    silent.authenticate(&b).await;
    let (frames, mut silent_frames) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(frame) = silent.recv().await {
            if frames.send(frame).is_err() {
                break;
            }
        }
    });
    let mut next_silent = async || {
        tokio::time::timeout(WAIT, silent_frames.recv())
            .await
            .expect("no frame in time")
            .expect("the silent connection closed")
    };
    let (client_b, mut events_b) = relay.client(&b).await;
    for _ in 0..window {
        client_a
            .send(public(&b), new_id(), b"w".to_vec())
            .await
            .unwrap();
    }
    for _ in 0..window {
        let envelope = next_envelope(&mut events_b).await;
        client_b.ack(envelope.id).await.unwrap();
    }
    let mut delivered = 0;
    while delivered < window {
        if let Body::Deliver { .. } = next_silent().await.body {
            delivered += 1;
        }
    }
    // The silent connection's window is full of envelopes acked elsewhere.
    // Once they have waited a ping interval they stop counting, and new
    // envelopes reach it.
    let late = new_id();
    client_a
        .send(public(&b), late, b"late".to_vec())
        .await
        .unwrap();
    loop {
        match next_silent().await.body {
            Body::Deliver { id, .. } => {
                assert_eq!(id, late);
                break;
            }
            Body::Error { code, .. } => panic!("unexpected error {code}"),
            _ => {}
        }
    }
    reader.abort();
}

async fn shutdown_tells_connected_clients_before_closing(store: Store) {
    let mut relay = TestRelay::on(store, |_| {}).await;
    let mut raw = RawWs::connect(&relay).await;
    raw.authenticate(&new_key()).await;
    relay.stop().await;
    raw.expect_error(0, ErrorCode::ShuttingDown).await;
    raw.expect_closed().await;
}

async fn ack_batches_remove_only_the_recipients_own_envelopes_and_refill_the_window(store: Store) {
    let relay = TestRelay::on(store, |_| {}).await;
    let (a, b, c) = (new_key(), new_key(), new_key());
    let (client_a, _) = relay.client(&a).await;
    let ids: Vec<_> = (0..600).map(|_| new_id()).collect();
    for id in &ids {
        client_a.send(public(&b), *id, b"x".to_vec()).await.unwrap();
    }
    let for_c = new_id();
    client_a
        .send(public(&c), for_c, b"c".to_vec())
        .await
        .unwrap();
    // B names c's envelope in its batch too: it stays c's.
    let (client_b, mut events_b) = relay.client(&b).await;
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let mut burst = vec![next_envelope(&mut events_b).await.id];
        while let Some(Event::Envelope(envelope)) = events_b.try_recv() {
            burst.push(envelope.id);
        }
        got.extend_from_slice(&burst);
        burst.push(for_c);
        // More than one frame's worth is split by the client.
        client_b.ack_batch(&burst).await.unwrap();
    }
    assert_eq!(got, ids, "more than the delivery window, in order");
    assert_eq!(relay.health().await["queued_envelopes"], 1);
    let (_client_c, mut events_c) = relay.client(&c).await;
    assert_eq!(next_envelope(&mut events_c).await.id, for_c);
}

async fn an_empty_or_oversized_ack_batch_is_malformed(store: Store) {
    let relay = TestRelay::on(store, |_| {}).await;
    for count in [0usize, agentwire_wire::MAX_ACK_BATCH + 1] {
        let mut raw = RawWs::connect(&relay).await;
        raw.authenticate(&new_key()).await;
        let mut bytes = vec![agentwire_wire::PROTOCOL_VERSION, 0x18, 0, 0, 0, 9];
        bytes.extend_from_slice(&(count as u16).to_be_bytes());
        bytes.extend(std::iter::repeat_n(0u8, count * 16));
        raw.send_bytes(bytes).await;
        raw.expect_error(9, ErrorCode::Malformed).await;
        raw.expect_closed().await;
    }
    relay.assert_serving().await;
}

/// A bug class of the tools agentwire replaces: two requests with the same
/// request id hung a stream. Each is answered (the answers carry that id),
/// and the connection goes on.
async fn requests_that_share_a_request_id_are_each_answered(store: Store) {
    let relay = TestRelay::on(store, |_| {}).await;
    let mut raw = RawWs::connect(&relay).await;
    raw.authenticate(&new_key()).await;
    let to = public(&new_key());
    let (first, second) = (new_id(), new_id());
    for id in [first, second] {
        raw.send(Frame::new(
            7,
            Body::Send {
                to,
                id,
                payload: b"same request id".to_vec(),
            },
        ))
        .await;
    }
    let mut accepted = Vec::new();
    for _ in 0..2 {
        let frame = raw.expect().await;
        assert_eq!(frame.request_id, 7);
        match frame.body {
            Body::Accepted { id } => accepted.push(id),
            other => panic!("expected accepted, got {other:?}"),
        }
    }
    accepted.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(accepted, expected);
    // And the connection still serves.
    raw.send(Frame::new(8, Body::Ack { id: new_id() })).await;
    assert!(matches!(raw.expect().await.body, Body::Acked { .. }));
    assert_eq!(relay.health().await["queued_envelopes"], 2);
}

on_both_stores!(
    envelope_to_a_connected_recipient_is_pushed_and_removed_by_ack,
    queued_envelopes_arrive_oldest_first_on_connect,
    unacknowledged_envelopes_are_delivered_again_on_reconnect,
    duplicate_envelope_id_is_stored_once,
    envelope_id_of_another_sender_is_a_conflict_not_a_silent_drop,
    ack_by_someone_other_than_the_recipient_has_no_effect,
    expiry_is_reported_to_a_connected_sender_and_again_until_dismissed,
    every_request_answer_echoes_its_request_id,
    acks_on_one_connection_do_not_stall_another_connection_of_the_same_key,
    shutdown_tells_connected_clients_before_closing,
    ack_batches_remove_only_the_recipients_own_envelopes_and_refill_the_window,
    an_empty_or_oversized_ack_batch_is_malformed,
    requests_that_share_a_request_id_are_each_answered,
);
