//! Garbage in: random bytes, plain HTTP, truncated, unknown and misdirected
//! frames. Each is refused specifically, closes only its own connection, and
//! the relay keeps serving everyone else.

use agentwire_wire::{Body, ErrorCode, Frame, FrameType};
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::util::*;

#[tokio::test]
async fn random_bytes_on_raw_tcp_do_not_disturb_the_relay() {
    let relay = TestRelay::start().await;
    for round in 0..5 {
        let mut noise = vec![0u8; 4096];
        getrandom::fill(&mut noise).unwrap();
        if round == 0 {
            noise[..4].copy_from_slice(b"\x16\x03\x01\x02"); // a TLS hello's start
        }
        let mut stream = TcpStream::connect(relay.addr()).await.unwrap();
        let _ = stream.write_all(&noise).await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut sink)).await;
    }
    relay.assert_serving().await;
}

#[tokio::test]
async fn plain_http_on_the_websocket_endpoint_gets_a_helpful_answer() {
    let relay = TestRelay::start().await;
    let (status, body) = http_get(relay.addr(), "/v1/ws").await;
    assert_eq!(status, 426);
    assert!(body.contains("WebSocket"), "{body}");
    let (status, body) = http_get(relay.addr(), "/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("/health"), "{body}");
    relay.assert_serving().await;
}

#[tokio::test]
async fn truncated_frame_is_malformed_and_closes_only_that_connection() {
    let relay = TestRelay::start().await;
    let (a, b) = (new_key(), new_key());
    let (client_a, _) = relay.client(&a).await;

    let mut raw = RawWs::connect(&relay).await;
    raw.authenticate(&new_key()).await;
    let mut bytes = Frame::new(
        9,
        Body::Send {
            to: public(&b),
            id: new_id(),
            payload: vec![1; 100],
        },
    )
    .encode();
    bytes.truncate(bytes.len() - 10);
    raw.send_bytes(bytes).await;
    let (_, message) = raw.expect_error(9, ErrorCode::Malformed).await;
    assert!(message.contains("truncated"), "{message}");
    raw.expect_closed().await;

    // The other client's connection is untouched.
    client_a
        .send(public(&b), new_id(), b"ok".to_vec())
        .await
        .unwrap();
}

#[tokio::test]
async fn shorter_than_a_header_is_malformed() {
    let relay = TestRelay::start().await;
    let mut raw = RawWs::connect(&relay).await;
    let _challenge = raw.expect().await;
    raw.send_bytes(vec![1, 2]).await;
    let (_, message) = raw.expect_error(0, ErrorCode::Malformed).await;
    assert!(message.contains("header"), "{message}");
    raw.expect_closed().await;
}

#[tokio::test]
async fn unknown_frame_type_is_malformed() {
    let relay = TestRelay::start().await;
    let mut raw = RawWs::connect(&relay).await;
    raw.authenticate(&new_key()).await;
    raw.send_bytes(vec![agentwire_wire::PROTOCOL_VERSION, 0x66, 0, 0, 0, 4])
        .await;
    let (_, message) = raw.expect_error(4, ErrorCode::Malformed).await;
    assert!(message.contains("0x66"), "{message}");
    raw.expect_closed().await;
}

#[tokio::test]
async fn relay_only_frames_from_a_client_are_refused() {
    let relay = TestRelay::start().await;
    let mut raw = RawWs::connect(&relay).await;
    raw.authenticate(&new_key()).await;
    raw.send(Frame::new(6, Body::Accepted { id: new_id() }))
        .await;
    raw.expect_error(6, ErrorCode::UnexpectedFrame).await;
    raw.expect_closed().await;
    assert!(!FrameType::Accepted.is_client_to_relay());
}

#[tokio::test]
async fn text_messages_are_refused() {
    let relay = TestRelay::start().await;
    let mut raw = RawWs::connect(&relay).await;
    let _challenge = raw.expect().await;
    raw.ws
        .send(Message::Text("{\"op\":\"hello\"}".into()))
        .await
        .unwrap();
    let (_, message) = raw.expect_error(0, ErrorCode::Malformed).await;
    assert!(message.contains("binary"), "{message}");
    raw.expect_closed().await;
    relay.assert_serving().await;
}

#[tokio::test]
async fn health_and_metrics_report_what_happened() {
    let relay = TestRelay::start().await;
    let (a, b) = (new_key(), new_key());
    let (client_a, _events_a) = relay.client(&a).await;
    client_a
        .send(public(&b), new_id(), b"m".to_vec())
        .await
        .unwrap();
    let mut raw = RawWs::connect(&relay).await;
    let _ = raw.expect().await;
    raw.send_bytes(vec![0xff]).await;
    raw.expect_error(0, ErrorCode::Malformed).await;
    raw.expect_closed().await;

    let health = relay.health().await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(health["queued_envelopes"], 1);
    assert!(health["uptime_secs"].is_u64());
    assert!(health["connections"].as_u64().unwrap() >= 1);

    let metrics = relay.metrics().await;
    for expected in [
        "agentwire_relay_connections ",
        "agentwire_relay_frames_in_total{type=\"send\"} 1",
        "agentwire_relay_frames_out_total{type=\"accepted\"} 1",
        "agentwire_relay_queued_envelopes 1",
        "agentwire_relay_rejections_total{reason=\"malformed\"} 1",
        "agentwire_relay_store_commit_seconds_bucket",
        "agentwire_relay_bytes_in_total ",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected:?} in\n{metrics}"
        );
    }
}
