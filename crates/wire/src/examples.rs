//! The worked examples of PROTOCOL.md, built from code so the document can be
//! checked against the codec (and regenerated: run
//! `cargo test -p agentwire-wire print_protocol_examples -- --nocapture`).

use crate::{Body, EnvelopeId, ErrorCode, Frame, Nonce, PublicKey, RelayId, Signature};
use ed25519_dalek::{Signer, SigningKey};

/// The example client's secret key: 32 bytes of 0x01 (never use it anywhere).
pub(crate) fn client_key() -> SigningKey {
    SigningKey::from_bytes(&[0x01; 32])
}

pub(crate) fn relay_id() -> RelayId {
    RelayId::from_bytes([0x52; 16])
}

pub(crate) fn nonce() -> Nonce {
    Nonce::from_bytes([0x4e; 32])
}

pub(crate) const ISSUED_AT_MS: u64 = 1_795_000_000_000;

pub(crate) fn all() -> Vec<(&'static str, Frame)> {
    let key = client_key();
    let public_key = PublicKey::from_bytes(key.verifying_key().to_bytes());
    let message = crate::auth_message(&relay_id(), &nonce(), ISSUED_AT_MS, &public_key);
    let signature = Signature::from_bytes(key.sign(&message).to_bytes());
    let bob = PublicKey::from_bytes([0xb0; 32]);
    let id = EnvelopeId::from_bytes([
        0x01, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x70, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01,
    ]);
    vec![
        (
            "challenge",
            Frame::new(
                0,
                Body::Challenge {
                    relay_id: relay_id(),
                    nonce: nonce(),
                    issued_at_ms: ISSUED_AT_MS,
                },
            ),
        ),
        (
            "hello",
            Frame::new(
                1,
                Body::Hello {
                    nonce: nonce(),
                    public_key,
                    signature,
                    access_token: b"s3cret".to_vec(),
                },
            ),
        ),
        (
            "welcome",
            Frame::new(
                1,
                Body::Welcome {
                    relay_id: relay_id(),
                    max_frame_bytes: crate::DEFAULT_MAX_FRAME_BYTES,
                    envelope_ttl_secs: 7 * 24 * 3600,
                    queued: 2,
                },
            ),
        ),
        (
            "send",
            Frame::new(
                2,
                Body::Send {
                    to: bob,
                    id,
                    payload: b"opaque".to_vec(),
                },
            ),
        ),
        ("accepted", Frame::new(2, Body::Accepted { id })),
        (
            "deliver",
            Frame::new(
                0,
                Body::Deliver {
                    id,
                    from: public_key,
                    received_at_ms: ISSUED_AT_MS + 1,
                    payload: b"opaque".to_vec(),
                },
            ),
        ),
        ("ack", Frame::new(3, Body::Ack { id })),
        ("acked", Frame::new(3, Body::Acked { id })),
        (
            "ack_batch",
            Frame::new(
                7,
                Body::AckBatch {
                    ids: vec![id, EnvelopeId::from_bytes([0x02; 16])],
                },
            ),
        ),
        ("acked_batch", Frame::new(7, Body::AckedBatch { count: 2 })),
        (
            "expired",
            Frame::new(
                0,
                Body::Expired {
                    id,
                    to: bob,
                    expired_at_ms: ISSUED_AT_MS + 604_800_000,
                },
            ),
        ),
        ("dismiss", Frame::new(4, Body::Dismiss { id, to: bob })),
        ("dismissed", Frame::new(4, Body::Dismissed { id })),
        (
            "publish",
            Frame::new(
                5,
                Body::Publish {
                    entry: directory_entry().encode(),
                },
            ),
        ),
        (
            "published",
            Frame::new(
                5,
                Body::Published {
                    expires_at_ms: directory_entry().expires_at_ms,
                },
            ),
        ),
        (
            "lookup",
            Frame::new(
                6,
                Body::Lookup {
                    capability: "code-review".to_owned(),
                },
            ),
        ),
        (
            "listing",
            Frame::new(
                6,
                Body::Listing {
                    entries: vec![directory_entry().encode()],
                },
            ),
        ),
        (
            "error",
            Frame::new(
                2,
                Body::Error {
                    code: ErrorCode::QueueFull,
                    limit: 10_000,
                    message: "queue full".to_owned(),
                },
            ),
        ),
    ]
}

/// The example directory entry: the example client lists itself under
/// `code-review` with a card (name `alice`, takes tasks) and a stand-in
/// invite, signed for the example relay.
pub(crate) fn directory_entry() -> crate::directory::Entry {
    let key = client_key();
    let mut card = vec![1, 1, 5];
    card.extend_from_slice(b"alice");
    card.extend_from_slice(&[0, 0, 1, 11]);
    card.extend_from_slice(b"code-review");
    let mut entry = crate::directory::Entry {
        key: PublicKey::from_bytes(key.verifying_key().to_bytes()),
        published_at_ms: ISSUED_AT_MS,
        expires_at_ms: ISSUED_AT_MS + crate::directory::MAX_ENTRY_LIFETIME_MS,
        capabilities: vec!["code-review".to_owned()],
        card,
        invite: b"aw1:EXAMPLE".to_vec(),
        signature: Signature::from_bytes([0; 64]),
    };
    entry.signature = Signature::from_bytes(key.sign(&entry.signed_bytes(&relay_id())).to_bytes());
    entry
}

/// Lower-case hex, 16 bytes a line.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn print_protocol_examples() {
    let key = client_key();
    println!(
        "client public key: {}",
        PublicKey::from_bytes(key.verifying_key().to_bytes())
    );
    for (name, frame) in all() {
        println!("### {name}\n```text\n{}\n```\n", to_hex(&frame.encode()));
    }
}
