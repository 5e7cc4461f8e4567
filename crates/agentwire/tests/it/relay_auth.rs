//! Key authentication: every way to get the hello wrong has its own error,
//! followed by a close; nothing else on the relay is affected.

use std::sync::Arc;
use std::time::Duration;

use agentwire_client::{ClientError, RelayClient};
use agentwire_relay::AccessToken;
use agentwire_wire::{Body, ErrorCode, Frame, Signature};

use crate::util::*;

#[tokio::test]
async fn a_correct_hello_is_welcomed_with_the_relays_limits() {
    let relay = TestRelay::start().await;
    let mut raw = RawWs::connect(&relay).await;
    let welcome = raw.authenticate(&new_key()).await;
    let Body::Welcome {
        max_frame_bytes,
        envelope_ttl_secs,
        queued,
        ..
    } = welcome.body
    else {
        panic!("expected welcome, got {welcome:?}");
    };
    assert_eq!(max_frame_bytes, agentwire_relay::DEFAULT_MAX_FRAME_BYTES);
    assert_eq!(envelope_ttl_secs, 7 * 24 * 3600);
    assert_eq!(queued, 0);
}

#[tokio::test]
async fn bad_signature_is_refused() {
    let relay = TestRelay::start().await;
    let mut raw = RawWs::connect(&relay).await;
    let mut hello = raw.hello_for_challenge(&new_key(), Vec::new()).await;
    if let Body::Hello { signature, .. } = &mut hello.body {
        let mut bytes = *signature.as_bytes();
        bytes[10] ^= 1;
        *signature = Signature::from_bytes(bytes);
    }
    raw.send(hello).await;
    raw.expect_error(1, ErrorCode::BadSignature).await;
    raw.expect_closed().await;
    relay.assert_serving().await;
}

#[tokio::test]
async fn hello_signed_by_another_key_than_it_claims_is_refused() {
    let relay = TestRelay::start().await;
    let mut raw = RawWs::connect(&relay).await;
    let mut hello = raw.hello_for_challenge(&new_key(), Vec::new()).await;
    if let Body::Hello { public_key, .. } = &mut hello.body {
        *public_key = public(&new_key());
    }
    raw.send(hello).await;
    raw.expect_error(1, ErrorCode::BadSignature).await;
    raw.expect_closed().await;
}

#[tokio::test]
async fn replayed_hello_from_another_connection_is_refused() {
    let relay = TestRelay::start().await;
    let key = new_key();
    let mut first = RawWs::connect(&relay).await;
    let captured = first.hello_for_challenge(&key, Vec::new()).await;
    first.send(captured.clone()).await;
    assert!(matches!(first.expect().await.body, Body::Welcome { .. }));

    // An eavesdropper replays the captured hello on its own connection.
    let mut replay = RawWs::connect(&relay).await;
    let _challenge = replay.expect().await;
    replay.send(captured).await;
    let (_, message) = replay.expect_error(1, ErrorCode::ChallengeMismatch).await;
    assert!(message.contains("another challenge"), "{message}");
    replay.expect_closed().await;
}

#[tokio::test]
async fn unknown_protocol_version_is_refused_naming_the_supported_one() {
    let relay = TestRelay::start().await;
    let mut raw = RawWs::connect(&relay).await;
    let hello = raw.hello_for_challenge(&new_key(), Vec::new()).await;
    let mut bytes = hello.encode();
    bytes[0] = 9;
    raw.send_bytes(bytes).await;
    let (limit, message) = raw.expect_error(1, ErrorCode::UnsupportedVersion).await;
    assert_eq!(limit, u64::from(agentwire_wire::PROTOCOL_VERSION));
    assert!(message.contains("version 9"), "{message}");
    raw.expect_closed().await;
}

#[tokio::test]
async fn late_hello_is_refused_as_an_expired_challenge() {
    let relay = limits_relay(|l| l.auth_timeout = Duration::from_millis(200)).await;
    let mut raw = RawWs::connect(&relay).await;
    let _challenge = raw.expect().await;
    let (limit, _) = raw.expect_error(0, ErrorCode::ChallengeExpired).await;
    assert_eq!(limit, 200, "the limit is the allowed time in milliseconds");
    raw.expect_closed().await;
}

#[tokio::test]
async fn requests_before_the_hello_are_refused() {
    let relay = TestRelay::start().await;
    let mut raw = RawWs::connect(&relay).await;
    let _challenge = raw.expect().await;
    raw.send(Frame::new(5, Body::Ack { id: new_id() })).await;
    raw.expect_error(5, ErrorCode::NotAuthenticated).await;
    raw.expect_closed().await;
}

#[tokio::test]
async fn a_second_hello_is_refused_without_closing() {
    let relay = TestRelay::start().await;
    let mut raw = RawWs::connect(&relay).await;
    let key = new_key();
    raw.authenticate(&key).await;
    let dummy = Frame::new(
        2,
        Body::Hello {
            nonce: agentwire_wire::Nonce::from_bytes([0; 32]),
            public_key: public(&key),
            signature: Signature::from_bytes([0; 64]),
            access_token: Vec::new(),
        },
    );
    raw.send(dummy).await;
    raw.expect_error(2, ErrorCode::AlreadyAuthenticated).await;
    let id = new_id();
    raw.send(Frame::new(3, Body::Ack { id })).await;
    assert_eq!(raw.expect().await, Frame::new(3, Body::Acked { id }));
}

#[tokio::test]
async fn access_token_is_required_when_configured() {
    let relay = TestRelay::with(|config| {
        config.access_token = AccessToken::new(b"open sesame".to_vec());
    })
    .await;

    // Missing.
    let mut raw = RawWs::connect(&relay).await;
    let hello = raw.hello_for_challenge(&new_key(), Vec::new()).await;
    raw.send(hello).await;
    let (_, message) = raw.expect_error(1, ErrorCode::AccessDenied).await;
    assert!(message.contains("requires an access token"), "{message}");
    raw.expect_closed().await;

    // Wrong.
    let mut raw = RawWs::connect(&relay).await;
    let hello = raw
        .hello_for_challenge(&new_key(), b"open sesamE".to_vec())
        .await;
    raw.send(hello).await;
    let (_, message) = raw.expect_error(1, ErrorCode::AccessDenied).await;
    assert!(message.contains("wrong"), "{message}");

    // Through the client library: a permanent error, reported at once.
    let result = RelayClient::connect(relay.client_config(), Arc::new(new_key())).await;
    match result {
        Err(error @ ClientError::Rejected { .. }) => {
            assert_eq!(error.code(), Some(ErrorCode::AccessDenied));
            assert!(error.is_permanent());
        }
        other => panic!("expected access denied, got {:?}", other.map(|_| ())),
    }

    // Right.
    let config = relay
        .client_config()
        .with_access_token(b"open sesame".to_vec());
    let (client, _events) = RelayClient::connect(config, Arc::new(new_key()))
        .await
        .unwrap();
    client.ack(new_id()).await.unwrap();
}
