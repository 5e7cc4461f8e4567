//! The frames of the relay protocol and their meaning.

use crate::{EnvelopeId, ErrorCode, Nonce, PublicKey, RelayId, RequestId, Signature};

/// Most ids in one [`Body::AckBatch`]: the relay's delivery window.
pub const MAX_ACK_BATCH: usize = 256;

/// One protocol frame: a request id and a typed body.
///
/// The protocol version is not stored: [`Frame::encode`] always writes
/// [`crate::PROTOCOL_VERSION`], and [`Frame::decode`] rejects any other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Chosen by the client for each request; echoed by the answer or error.
    /// Frames the relay sends on its own carry 0.
    pub request_id: RequestId,
    /// What the frame says.
    pub body: Body,
}

impl Frame {
    /// A frame with the given request id and body.
    pub fn new(request_id: RequestId, body: Body) -> Self {
        Self { request_id, body }
    }
}

/// The body of a frame. Direction: C = client, R = relay.
#[derive(Clone, PartialEq, Eq)]
pub enum Body {
    /// R→C, first frame on every connection: sign this to authenticate.
    Challenge {
        /// The relay's stable id.
        relay_id: RelayId,
        /// Fresh random bytes for this connection only.
        nonce: Nonce,
        /// When the relay issued the challenge, Unix milliseconds.
        issued_at_ms: u64,
    },
    /// C→R, answer to the challenge: who I am, proven by a signature over
    /// [`crate::auth_message`].
    Hello {
        /// The nonce of the challenge this hello answers.
        nonce: Nonce,
        /// The client's Ed25519 public key: its address on this relay.
        public_key: PublicKey,
        /// Ed25519 signature over [`crate::auth_message`].
        signature: Signature,
        /// The relay's access token, or empty when the relay is open. At most
        /// [`crate::MAX_ACCESS_TOKEN_LEN`] bytes.
        access_token: Vec<u8>,
    },
    /// R→C, answer to a good hello: the connection is authenticated.
    Welcome {
        /// The relay's stable id (as in the challenge).
        relay_id: RelayId,
        /// The largest frame this relay accepts, in bytes.
        max_frame_bytes: u32,
        /// How long an undelivered envelope is kept, in seconds.
        envelope_ttl_secs: u64,
        /// How many envelopes are queued for this key right now.
        queued: u32,
    },
    /// C→R, store-and-forward an opaque envelope.
    Send {
        /// The recipient's key.
        to: PublicKey,
        /// Sender-chosen id; sending the same id again is a no-op.
        id: EnvelopeId,
        /// Opaque bytes; the relay never looks inside.
        payload: Vec<u8>,
    },
    /// R→C, answer to `Send`: the envelope is durable at the relay.
    Accepted {
        /// The accepted envelope's id.
        id: EnvelopeId,
    },
    /// R→C, an envelope for this client, oldest first; acknowledge with `Ack`.
    Deliver {
        /// The envelope's id.
        id: EnvelopeId,
        /// The authenticated key that sent it.
        from: PublicKey,
        /// When the relay accepted it, Unix milliseconds.
        received_at_ms: u64,
        /// The opaque bytes, exactly as sent.
        payload: Vec<u8>,
    },
    /// C→R, the recipient has the envelope; the relay deletes it.
    Ack {
        /// The delivered envelope's id.
        id: EnvelopeId,
    },
    /// R→C, answer to `Ack`: no envelope with this id is queued for you now.
    Acked {
        /// The acknowledged id.
        id: EnvelopeId,
    },
    /// C→R, the recipient has these envelopes; the relay deletes them. One
    /// frame for a whole burst of deliveries: at most [`MAX_ACK_BATCH`] ids.
    AckBatch {
        /// The delivered envelopes' ids (1 to [`MAX_ACK_BATCH`]).
        ids: Vec<EnvelopeId>,
    },
    /// R→C, answer to `AckBatch`: none of its envelopes is queued for you
    /// now.
    AckedBatch {
        /// How many ids the batch named.
        count: u16,
    },
    /// R→C, to the sender: an envelope expired undelivered and was deleted.
    /// Sent until dismissed with `Dismiss`.
    Expired {
        /// The expired envelope's id.
        id: EnvelopeId,
        /// Its recipient.
        to: PublicKey,
        /// When it expired, Unix milliseconds.
        expired_at_ms: u64,
    },
    /// C→R, the sender has seen an expiry notice; the relay forgets it.
    Dismiss {
        /// The expired envelope's id.
        id: EnvelopeId,
        /// Its recipient.
        to: PublicKey,
    },
    /// R→C, answer to `Dismiss`.
    Dismissed {
        /// The dismissed id.
        id: EnvelopeId,
    },
    /// C→R, list this key in the relay's directory (or withdraw it): a
    /// signed [`crate::directory::Entry`].
    Publish {
        /// The entry's bytes, at most [`crate::directory::MAX_ENTRY_BYTES`].
        entry: Vec<u8>,
    },
    /// R→C, answer to `Publish`: the entry is stored.
    Published {
        /// When the relay stops listing it, Unix milliseconds (0 for a
        /// withdrawal).
        expires_at_ms: u64,
    },
    /// C→R, the directory's entries with a capability tag.
    Lookup {
        /// The tag, or empty for the newest entries of any capability. At
        /// most [`crate::directory::MAX_TAG_LEN`] bytes.
        capability: String,
    },
    /// R→C, answer to `Lookup`: at most [`crate::directory::MAX_LISTING`]
    /// entries, newest first, each as published.
    Listing {
        /// The entries' bytes.
        entries: Vec<Vec<u8>>,
    },
    /// R→C, a request or the connection was refused.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// The value of the limit that was hit, or 0 when no limit applies.
        limit: u64,
        /// A human-readable explanation (UTF-8, at most
        /// [`crate::MAX_ERROR_MESSAGE_LEN`] bytes).
        message: String,
    },
}

/// The one-byte type tag of each body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// [`Body::Challenge`]
    Challenge = 0x01,
    /// [`Body::Hello`]
    Hello = 0x02,
    /// [`Body::Welcome`]
    Welcome = 0x03,
    /// [`Body::Send`]
    Send = 0x10,
    /// [`Body::Accepted`]
    Accepted = 0x11,
    /// [`Body::Deliver`]
    Deliver = 0x12,
    /// [`Body::Ack`]
    Ack = 0x13,
    /// [`Body::Acked`]
    Acked = 0x14,
    /// [`Body::AckBatch`]
    AckBatch = 0x18,
    /// [`Body::AckedBatch`]
    AckedBatch = 0x19,
    /// [`Body::Expired`]
    Expired = 0x15,
    /// [`Body::Dismiss`]
    Dismiss = 0x16,
    /// [`Body::Dismissed`]
    Dismissed = 0x17,
    /// [`Body::Publish`]
    Publish = 0x20,
    /// [`Body::Published`]
    Published = 0x21,
    /// [`Body::Lookup`]
    Lookup = 0x22,
    /// [`Body::Listing`]
    Listing = 0x23,
    /// [`Body::Error`]
    Error = 0x7f,
}

impl FrameType {
    /// Every frame type, in tag order.
    pub const ALL: [FrameType; 18] = [
        Self::Challenge,
        Self::Hello,
        Self::Welcome,
        Self::Send,
        Self::Accepted,
        Self::Deliver,
        Self::Ack,
        Self::Acked,
        Self::Expired,
        Self::Dismiss,
        Self::Dismissed,
        Self::AckBatch,
        Self::AckedBatch,
        Self::Publish,
        Self::Published,
        Self::Lookup,
        Self::Listing,
        Self::Error,
    ];

    /// The type for a tag byte.
    pub fn from_u8(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|ty| *ty as u8 == tag)
    }

    /// A stable snake_case name, used in logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Challenge => "challenge",
            Self::Hello => "hello",
            Self::Welcome => "welcome",
            Self::Send => "send",
            Self::Accepted => "accepted",
            Self::Deliver => "deliver",
            Self::Ack => "ack",
            Self::Acked => "acked",
            Self::Expired => "expired",
            Self::Dismiss => "dismiss",
            Self::Dismissed => "dismissed",
            Self::AckBatch => "ack_batch",
            Self::AckedBatch => "acked_batch",
            Self::Publish => "publish",
            Self::Published => "published",
            Self::Lookup => "lookup",
            Self::Listing => "listing",
            Self::Error => "error",
        }
    }

    /// Whether clients may send this type (the others only come from relays).
    pub fn is_client_to_relay(self) -> bool {
        matches!(
            self,
            Self::Hello
                | Self::Send
                | Self::Ack
                | Self::AckBatch
                | Self::Dismiss
                | Self::Publish
                | Self::Lookup
        )
    }
}

impl Body {
    /// This body's type tag.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::Challenge { .. } => FrameType::Challenge,
            Self::Hello { .. } => FrameType::Hello,
            Self::Welcome { .. } => FrameType::Welcome,
            Self::Send { .. } => FrameType::Send,
            Self::Accepted { .. } => FrameType::Accepted,
            Self::Deliver { .. } => FrameType::Deliver,
            Self::Ack { .. } => FrameType::Ack,
            Self::Acked { .. } => FrameType::Acked,
            Self::Expired { .. } => FrameType::Expired,
            Self::Dismiss { .. } => FrameType::Dismiss,
            Self::Dismissed { .. } => FrameType::Dismissed,
            Self::AckBatch { .. } => FrameType::AckBatch,
            Self::AckedBatch { .. } => FrameType::AckedBatch,
            Self::Publish { .. } => FrameType::Publish,
            Self::Published { .. } => FrameType::Published,
            Self::Lookup { .. } => FrameType::Lookup,
            Self::Listing { .. } => FrameType::Listing,
            Self::Error { .. } => FrameType::Error,
        }
    }
}

/// `Debug` prints payload and token lengths, never their bytes: payloads are
/// ciphertext nobody needs in a log, and the access token is a secret.
impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Challenge {
                relay_id,
                nonce,
                issued_at_ms,
            } => f
                .debug_struct("Challenge")
                .field("relay_id", relay_id)
                .field("nonce", nonce)
                .field("issued_at_ms", issued_at_ms)
                .finish(),
            Self::Hello {
                nonce,
                public_key,
                signature,
                access_token,
            } => f
                .debug_struct("Hello")
                .field("nonce", nonce)
                .field("public_key", public_key)
                .field("signature", signature)
                .field(
                    "access_token",
                    &format_args!("<{} bytes>", access_token.len()),
                )
                .finish(),
            Self::Welcome {
                relay_id,
                max_frame_bytes,
                envelope_ttl_secs,
                queued,
            } => f
                .debug_struct("Welcome")
                .field("relay_id", relay_id)
                .field("max_frame_bytes", max_frame_bytes)
                .field("envelope_ttl_secs", envelope_ttl_secs)
                .field("queued", queued)
                .finish(),
            Self::Send { to, id, payload } => f
                .debug_struct("Send")
                .field("to", to)
                .field("id", id)
                .field("payload", &format_args!("<{} bytes>", payload.len()))
                .finish(),
            Self::Accepted { id } => f.debug_struct("Accepted").field("id", id).finish(),
            Self::Deliver {
                id,
                from,
                received_at_ms,
                payload,
            } => f
                .debug_struct("Deliver")
                .field("id", id)
                .field("from", from)
                .field("received_at_ms", received_at_ms)
                .field("payload", &format_args!("<{} bytes>", payload.len()))
                .finish(),
            Self::Ack { id } => f.debug_struct("Ack").field("id", id).finish(),
            Self::Acked { id } => f.debug_struct("Acked").field("id", id).finish(),
            Self::Expired {
                id,
                to,
                expired_at_ms,
            } => f
                .debug_struct("Expired")
                .field("id", id)
                .field("to", to)
                .field("expired_at_ms", expired_at_ms)
                .finish(),
            Self::Dismiss { id, to } => f
                .debug_struct("Dismiss")
                .field("id", id)
                .field("to", to)
                .finish(),
            Self::Dismissed { id } => f.debug_struct("Dismissed").field("id", id).finish(),
            Self::AckBatch { ids } => f.debug_struct("AckBatch").field("ids", &ids.len()).finish(),
            Self::AckedBatch { count } => {
                f.debug_struct("AckedBatch").field("count", count).finish()
            }
            Self::Publish { entry } => f
                .debug_struct("Publish")
                .field("entry", &format_args!("<{} bytes>", entry.len()))
                .finish(),
            Self::Published { expires_at_ms } => f
                .debug_struct("Published")
                .field("expires_at_ms", expires_at_ms)
                .finish(),
            Self::Lookup { capability } => f
                .debug_struct("Lookup")
                .field("capability", capability)
                .finish(),
            Self::Listing { entries } => f
                .debug_struct("Listing")
                .field("entries", &entries.len())
                .finish(),
            Self::Error {
                code,
                limit,
                message,
            } => f
                .debug_struct("Error")
                .field("code", code)
                .field("limit", limit)
                .field("message", message)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_tokens_or_payloads() {
        let hello = Body::Hello {
            nonce: Nonce::from_bytes([1; 32]),
            public_key: PublicKey::from_bytes([2; 32]),
            signature: Signature::from_bytes([3; 64]),
            access_token: b"hunter2".to_vec(),
        };
        let printed = format!("{hello:?}");
        assert!(
            !printed.contains("hunter2") && printed.contains("<7 bytes>"),
            "{printed}"
        );
        let send = Body::Send {
            to: PublicKey::from_bytes([2; 32]),
            id: EnvelopeId::from_bytes([4; 16]),
            payload: b"ciphertext".to_vec(),
        };
        assert!(format!("{send:?}").contains("<10 bytes>"));
    }

    #[test]
    fn only_requests_go_from_client_to_relay() {
        let client_types: Vec<_> = FrameType::ALL
            .into_iter()
            .filter(|t| t.is_client_to_relay())
            .collect();
        assert_eq!(
            client_types,
            [
                FrameType::Hello,
                FrameType::Send,
                FrameType::Ack,
                FrameType::Dismiss,
                FrameType::AckBatch,
                FrameType::Publish,
                FrameType::Lookup,
            ]
        );
        for ty in FrameType::ALL {
            assert_eq!(FrameType::from_u8(ty as u8), Some(ty));
        }
    }
}
