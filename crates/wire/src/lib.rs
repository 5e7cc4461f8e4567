//! The agentwire relay wire format: frame types and their binary codec.
//!
//! This crate is responsible for turning [`Frame`]s into bytes and bytes into
//! frames, and for the handful of fixed-size value types that appear on the
//! wire ([`PublicKey`], [`EnvelopeId`], ...). It does no IO, knows nothing of
//! WebSockets, storage or cryptographic sessions, and never looks inside an
//! envelope payload: payloads are opaque bytes to everyone but the two
//! end points.
//!
//! Every frame is one binary WebSocket message laid out as
//!
//! ```text
//! version:u8  type:u8  request_id:u32be  body...
//! ```
//!
//! followed by a body whose layout depends on the type. All integers are
//! big-endian, all lengths are explicit and bounded, and every value has
//! exactly one encoding, so `decode(encode(f)) == f` and
//! `encode(decode(b)?) == b`. PROTOCOL.md at the repository root specifies
//! each frame byte by byte with worked hex examples.
//!
//! ```
//! use agentwire_wire::{Body, EnvelopeId, Frame, PublicKey};
//!
//! let frame = Frame::new(7, Body::Ack { id: EnvelopeId::from_bytes([1; 16]) });
//! let bytes = frame.encode();
//! assert_eq!(Frame::decode(&bytes).unwrap(), frame);
//! # let _ = PublicKey::from_bytes([0; 32]);
//! ```

mod codec;
pub mod directory;
mod error_code;
#[cfg(test)]
mod examples;
mod frame;
mod types;

pub use codec::DecodeError;
pub use error_code::ErrorCode;
pub use frame::{Body, Frame, FrameType, MAX_ACK_BATCH};
pub use types::{EnvelopeId, Nonce, PublicKey, RelayId, RequestId, Signature};

/// Whether `c` acts on a terminal or hides from a reader instead of showing:
/// a control character (C0, DEL, C1), or a format character (the soft hyphen,
/// bidirectional marks, overrides and isolates, zero-width characters, the
/// byte-order mark, interlinear annotation marks, Unicode tag characters).
/// Text that someone else chose (a relay's error message, a contact's body)
/// escapes these before it is shown.
pub fn is_hidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}')
}

/// The protocol version this crate speaks; carried in the first byte of every frame.
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes in the fixed frame header: version, type and request id.
pub const HEADER_LEN: usize = 6;

/// The default (and recommended) largest frame a relay accepts, in bytes.
///
/// Relays may be configured with another value; they announce theirs in
/// [`Body::Welcome`].
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 256 * 1024;

/// Bytes a [`Body::Send`] frame spends around its payload (header, recipient,
/// envelope id and length prefix): the largest payload is the frame limit
/// minus this.
pub const SEND_OVERHEAD: usize = HEADER_LEN + 32 + 16 + 4;

/// Bytes a [`Body::Deliver`] frame spends around its payload. It is larger than
/// [`SEND_OVERHEAD`]; a relay therefore accepts payloads only up to its frame
/// limit minus this, so that every accepted envelope can be delivered.
pub const DELIVER_OVERHEAD: usize = HEADER_LEN + 16 + 32 + 8 + 4;

/// Longest access token a client may present, in bytes.
pub const MAX_ACCESS_TOKEN_LEN: usize = 512;

/// Longest human-readable message in an [`Body::Error`] frame, in bytes.
pub const MAX_ERROR_MESSAGE_LEN: usize = 1024;

/// Domain-separation prefix of the bytes a client signs to authenticate.
pub const AUTH_CONTEXT: &[u8] = b"agentwire-relay-auth-v1\0";

/// The exact bytes a client signs with its Ed25519 key to answer a challenge.
///
/// `AUTH_CONTEXT || relay_id || nonce || issued_at_ms:u64be || public_key`.
/// Binding the relay id and the client key stops a signature made for one
/// relay, or on behalf of one key, from being used anywhere else; the nonce is
/// fresh for every connection, so a captured answer cannot be replayed.
pub fn auth_message(
    relay_id: &RelayId,
    nonce: &Nonce,
    issued_at_ms: u64,
    public_key: &PublicKey,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(AUTH_CONTEXT.len() + 16 + 32 + 8 + 32);
    out.extend_from_slice(AUTH_CONTEXT);
    out.extend_from_slice(relay_id.as_bytes());
    out.extend_from_slice(nonce.as_bytes());
    out.extend_from_slice(&issued_at_ms.to_be_bytes());
    out.extend_from_slice(public_key.as_bytes());
    out
}
