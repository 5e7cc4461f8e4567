//! The relay client library: reconnects with backoff and resumes delivery.

use agentwire_client::{ClientError, Event};

use crate::util::*;

#[tokio::test]
async fn client_reconnects_after_a_relay_restart_and_receives_what_waited() {
    let mut relay = TestRelay::start().await;
    let (a, b) = (new_key(), new_key());
    let (client_b, mut events_b) = relay.client(&b).await;

    relay.stop().await;
    match next_event(&mut events_b).await {
        Event::Disconnected { .. } => {}
        other => panic!("expected Disconnected, got {other:?}"),
    }
    // While disconnected, requests fail at once and say so.
    let error = client_b.ack(new_id()).await.unwrap_err();
    assert!(matches!(error, ClientError::Disconnected), "{error:?}");

    relay.restart().await;
    let (client_a, _) = relay.client(&a).await;
    let id = new_id();
    client_a
        .send(public(&b), id, b"after restart".to_vec())
        .await
        .unwrap();
    // b reconnects on its own and gets the envelope.
    let envelope = next_envelope(&mut events_b).await;
    assert_eq!(envelope.id, id);
    client_b.ack(id).await.unwrap();
}

#[tokio::test]
async fn client_refuses_a_payload_the_relay_would_refuse_without_losing_the_connection() {
    let relay = limits_relay(|l| l.max_frame_bytes = 4096).await;
    let (a, b) = (new_key(), new_key());
    let (client, _events) = relay.client(&a).await;
    let max_payload = 4096 - agentwire_wire::DELIVER_OVERHEAD;
    let (code, limit) = rejected_code(client.send(public(&b), new_id(), vec![0; 100 * 1024]).await);
    assert_eq!(
        (code, limit),
        (
            agentwire_wire::ErrorCode::PayloadTooLarge,
            max_payload as u64
        )
    );
    // Same connection, still working.
    client
        .send(public(&b), new_id(), vec![0; max_payload])
        .await
        .unwrap();
}
