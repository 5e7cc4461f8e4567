//! Encoding frames to bytes and decoding bytes to frames.
//!
//! The decoder is total: any input yields a frame or a [`DecodeError`], never
//! a panic, and it never allocates more than the input's length.

use crate::directory::{MAX_ENTRY_BYTES, MAX_LISTING, MAX_TAG_LEN};
use crate::{
    Body, EnvelopeId, ErrorCode, Frame, FrameType, HEADER_LEN, MAX_ACCESS_TOKEN_LEN, MAX_ACK_BATCH,
    MAX_ERROR_MESSAGE_LEN, Nonce, PROTOCOL_VERSION, PublicKey, RelayId, RequestId, Signature,
};

/// Why bytes are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("frame of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    ShortHeader {
        /// Bytes received.
        len: usize,
    },
    /// The version byte names a version this crate does not speak.
    #[error(
        "protocol version {found} is not supported (this side speaks version {PROTOCOL_VERSION})"
    )]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// The frame's request id.
        request_id: RequestId,
    },
    /// The type byte is not a known frame type.
    #[error("unknown frame type 0x{tag:02x}")]
    UnknownType {
        /// The type byte found.
        tag: u8,
        /// The frame's request id.
        request_id: RequestId,
    },
    /// The body ends before all its fields.
    #[error("{} frame is truncated: its body ended before field `{field}`", .frame_type.name())]
    Truncated {
        /// The frame's type.
        frame_type: FrameType,
        /// The first field that did not fit.
        field: &'static str,
        /// The frame's request id.
        request_id: RequestId,
    },
    /// The body has bytes after its last field.
    #[error("{} frame has {extra} unexpected trailing bytes", .frame_type.name())]
    TrailingBytes {
        /// The frame's type.
        frame_type: FrameType,
        /// How many bytes were left over.
        extra: usize,
        /// The frame's request id.
        request_id: RequestId,
    },
    /// A length-prefixed field is longer than its limit.
    #[error("field `{field}` is {len} bytes, more than the limit of {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its declared length.
        len: usize,
        /// Its limit.
        max: usize,
        /// The frame's request id.
        request_id: RequestId,
    },
    /// A text field is not UTF-8.
    #[error("field `{field}` is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
        /// The frame's request id.
        request_id: RequestId,
    },
}

impl DecodeError {
    /// The request id of the offending frame, when its header could be read,
    /// so that the error answer can echo it.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            Self::ShortHeader { .. } => None,
            Self::UnsupportedVersion { request_id, .. }
            | Self::UnknownType { request_id, .. }
            | Self::Truncated { request_id, .. }
            | Self::TrailingBytes { request_id, .. }
            | Self::FieldTooLong { request_id, .. }
            | Self::InvalidUtf8 { request_id, .. } => Some(*request_id),
        }
    }
}

impl Frame {
    /// Reads only the header: `(version, type tag, request id)`. Lets a relay
    /// answer a frame it will not decode (too large, wrong version) with the
    /// right request id.
    pub fn peek_header(bytes: &[u8]) -> Option<(u8, u8, RequestId)> {
        let header: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        let request_id = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        Some((header[0], header[1], request_id))
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.body_len_hint());
        out.push(PROTOCOL_VERSION);
        out.push(self.body.frame_type() as u8);
        out.extend_from_slice(&self.request_id.to_be_bytes());
        match &self.body {
            Body::Challenge {
                relay_id,
                nonce,
                issued_at_ms,
            } => {
                out.extend_from_slice(relay_id.as_bytes());
                out.extend_from_slice(nonce.as_bytes());
                out.extend_from_slice(&issued_at_ms.to_be_bytes());
            }
            Body::Hello {
                nonce,
                public_key,
                signature,
                access_token,
            } => {
                out.extend_from_slice(nonce.as_bytes());
                out.extend_from_slice(public_key.as_bytes());
                out.extend_from_slice(signature.as_bytes());
                put_short_bytes(&mut out, access_token);
            }
            Body::Welcome {
                relay_id,
                max_frame_bytes,
                envelope_ttl_secs,
                queued,
            } => {
                out.extend_from_slice(relay_id.as_bytes());
                out.extend_from_slice(&max_frame_bytes.to_be_bytes());
                out.extend_from_slice(&envelope_ttl_secs.to_be_bytes());
                out.extend_from_slice(&queued.to_be_bytes());
            }
            Body::Send { to, id, payload } => {
                out.extend_from_slice(to.as_bytes());
                out.extend_from_slice(id.as_bytes());
                put_long_bytes(&mut out, payload);
            }
            Body::Accepted { id }
            | Body::Ack { id }
            | Body::Acked { id }
            | Body::Dismissed { id } => out.extend_from_slice(id.as_bytes()),
            Body::Deliver {
                id,
                from,
                received_at_ms,
                payload,
            } => {
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(from.as_bytes());
                out.extend_from_slice(&received_at_ms.to_be_bytes());
                put_long_bytes(&mut out, payload);
            }
            Body::Expired {
                id,
                to,
                expired_at_ms,
            } => {
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(to.as_bytes());
                out.extend_from_slice(&expired_at_ms.to_be_bytes());
            }
            Body::Dismiss { id, to } => {
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(to.as_bytes());
            }
            Body::AckBatch { ids } => {
                let ids = &ids[..ids.len().min(MAX_ACK_BATCH)];
                out.extend_from_slice(&(ids.len() as u16).to_be_bytes());
                for id in ids {
                    out.extend_from_slice(id.as_bytes());
                }
            }
            Body::AckedBatch { count } => out.extend_from_slice(&count.to_be_bytes()),
            Body::Publish { entry } => put_short_bytes(&mut out, entry),
            Body::Published { expires_at_ms } => {
                out.extend_from_slice(&expires_at_ms.to_be_bytes());
            }
            Body::Lookup { capability } => put_short_bytes(&mut out, capability.as_bytes()),
            Body::Listing { entries } => {
                let entries = &entries[..entries.len().min(MAX_LISTING)];
                out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
                for entry in entries {
                    put_short_bytes(&mut out, entry);
                }
            }
            Body::Error {
                code,
                limit,
                message,
            } => {
                out.extend_from_slice(&code.to_u16().to_be_bytes());
                out.extend_from_slice(&limit.to_be_bytes());
                put_short_bytes(&mut out, truncate_utf8(message, MAX_ERROR_MESSAGE_LEN));
            }
        }
        out
    }

    fn body_len_hint(&self) -> usize {
        match &self.body {
            Body::Send { payload, .. } | Body::Deliver { payload, .. } => payload.len() + 64,
            Body::Publish { entry } => entry.len() + 2,
            Body::AckBatch { ids } => ids.len() * 16 + 2,
            Body::Listing { entries } => entries.iter().map(|e| e.len() + 2).sum::<usize>() + 2,
            _ => 128,
        }
    }

    /// Parses one frame. Fails on any deviation from the layout: wrong
    /// version, unknown type, truncated or over-long fields, trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        let (version, tag, request_id) =
            Self::peek_header(bytes).ok_or(DecodeError::ShortHeader { len: bytes.len() })?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                request_id,
            });
        }
        let frame_type =
            FrameType::from_u8(tag).ok_or(DecodeError::UnknownType { tag, request_id })?;
        let mut r = Reader {
            rest: &bytes[HEADER_LEN..],
            frame_type,
            request_id,
        };
        let body = match frame_type {
            FrameType::Challenge => Body::Challenge {
                relay_id: RelayId::from_bytes(r.array("relay_id")?),
                nonce: Nonce::from_bytes(r.array("nonce")?),
                issued_at_ms: r.u64("issued_at_ms")?,
            },
            FrameType::Hello => Body::Hello {
                nonce: Nonce::from_bytes(r.array("nonce")?),
                public_key: PublicKey::from_bytes(r.array("public_key")?),
                signature: Signature::from_bytes(r.array("signature")?),
                access_token: r
                    .short_bytes("access_token", MAX_ACCESS_TOKEN_LEN)?
                    .to_vec(),
            },
            FrameType::Welcome => Body::Welcome {
                relay_id: RelayId::from_bytes(r.array("relay_id")?),
                max_frame_bytes: r.u32("max_frame_bytes")?,
                envelope_ttl_secs: r.u64("envelope_ttl_secs")?,
                queued: r.u32("queued")?,
            },
            FrameType::Send => Body::Send {
                to: PublicKey::from_bytes(r.array("to")?),
                id: EnvelopeId::from_bytes(r.array("id")?),
                payload: r.long_bytes("payload")?.to_vec(),
            },
            FrameType::Accepted => Body::Accepted { id: r.id()? },
            FrameType::Deliver => Body::Deliver {
                id: r.id()?,
                from: PublicKey::from_bytes(r.array("from")?),
                received_at_ms: r.u64("received_at_ms")?,
                payload: r.long_bytes("payload")?.to_vec(),
            },
            FrameType::Ack => Body::Ack { id: r.id()? },
            FrameType::Acked => Body::Acked { id: r.id()? },
            FrameType::Expired => Body::Expired {
                id: r.id()?,
                to: PublicKey::from_bytes(r.array("to")?),
                expired_at_ms: r.u64("expired_at_ms")?,
            },
            FrameType::Dismiss => Body::Dismiss {
                id: r.id()?,
                to: PublicKey::from_bytes(r.array("to")?),
            },
            FrameType::Dismissed => Body::Dismissed { id: r.id()? },
            FrameType::AckBatch => Body::AckBatch {
                ids: r.list("ids", 1..=MAX_ACK_BATCH, Reader::id)?,
            },
            FrameType::AckedBatch => Body::AckedBatch {
                count: r.u16("count")?,
            },
            FrameType::Publish => Body::Publish {
                entry: r.short_bytes("entry", MAX_ENTRY_BYTES)?.to_vec(),
            },
            FrameType::Published => Body::Published {
                expires_at_ms: r.u64("expires_at_ms")?,
            },
            FrameType::Lookup => Body::Lookup {
                capability: r.text("capability", MAX_TAG_LEN)?,
            },
            FrameType::Listing => Body::Listing {
                entries: r.list("entries", 0..=MAX_LISTING, |r| {
                    Ok(r.short_bytes("entry", MAX_ENTRY_BYTES)?.to_vec())
                })?,
            },
            FrameType::Error => Body::Error {
                code: ErrorCode::from_u16(r.u16("code")?),
                limit: r.u64("limit")?,
                message: r.text("message", MAX_ERROR_MESSAGE_LEN)?,
            },
        };
        r.finish()?;
        Ok(Frame { request_id, body })
    }
}

/// Writes `len:u16be || bytes`, cutting at `u16::MAX` bytes (callers bound
/// their fields far below that).
fn put_short_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

/// Writes `len:u32be || bytes`, cutting at `u32::MAX` bytes (frames are
/// bounded far below that).
fn put_long_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..len as usize]);
}

fn truncate_utf8(text: &str, max: usize) -> &[u8] {
    if text.len() <= max {
        return text.as_bytes();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text.as_bytes()[..end]
}

struct Reader<'a> {
    rest: &'a [u8],
    frame_type: FrameType,
    request_id: RequestId,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < len {
            return Err(DecodeError::Truncated {
                frame_type: self.frame_type,
                field,
                request_id: self.request_id,
            });
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn id(&mut self) -> Result<EnvelopeId, DecodeError> {
        Ok(EnvelopeId::from_bytes(self.array("id")?))
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn short_bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(DecodeError::FieldTooLong {
                field,
                len,
                max,
                request_id: self.request_id,
            });
        }
        self.take(len, field)
    }

    /// `count:u16be` within `allowed`, then that many items; a count out of
    /// range is [`DecodeError::FieldTooLong`] (its limit the largest
    /// allowed).
    fn list<T>(
        &mut self,
        field: &'static str,
        allowed: std::ops::RangeInclusive<usize>,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let count = usize::from(self.u16(field)?);
        if !allowed.contains(&count) {
            return Err(DecodeError::FieldTooLong {
                field,
                len: count,
                max: *allowed.end(),
                request_id: self.request_id,
            });
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(item(self)?);
        }
        Ok(items)
    }

    fn long_bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(field)? as usize;
        self.take(len, field)
    }

    fn text(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let bytes = self.short_bytes(field, max)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8 {
            field,
            request_id: self.request_id,
        })
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                frame_type: self.frame_type,
                extra: self.rest.len(),
                request_id: self.request_id,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_array<const N: usize>() -> impl Strategy<Value = [u8; N]> {
        proptest::collection::vec(any::<u8>(), N).prop_map(|v| {
            let mut out = [0u8; N];
            out.copy_from_slice(&v);
            out
        })
    }

    fn arb_body() -> impl Strategy<Value = Body> {
        let key = || arb_array::<32>().prop_map(PublicKey::from_bytes);
        let id = || arb_array::<16>().prop_map(EnvelopeId::from_bytes);
        let payload = || proptest::collection::vec(any::<u8>(), 0..512);
        prop_oneof![
            (arb_array::<16>(), arb_array::<32>(), any::<u64>()).prop_map(|(r, n, t)| {
                Body::Challenge {
                    relay_id: RelayId::from_bytes(r),
                    nonce: Nonce::from_bytes(n),
                    issued_at_ms: t,
                }
            }),
            (
                arb_array::<32>(),
                key(),
                arb_array::<64>(),
                proptest::collection::vec(any::<u8>(), 0..=MAX_ACCESS_TOKEN_LEN)
            )
                .prop_map(|(n, k, s, t)| Body::Hello {
                    nonce: Nonce::from_bytes(n),
                    public_key: k,
                    signature: Signature::from_bytes(s),
                    access_token: t,
                }),
            (arb_array::<16>(), any::<u32>(), any::<u64>(), any::<u32>()).prop_map(
                |(r, m, t, q)| Body::Welcome {
                    relay_id: RelayId::from_bytes(r),
                    max_frame_bytes: m,
                    envelope_ttl_secs: t,
                    queued: q,
                }
            ),
            (key(), id(), payload()).prop_map(|(to, id, payload)| Body::Send { to, id, payload }),
            id().prop_map(|id| Body::Accepted { id }),
            (id(), key(), any::<u64>(), payload()).prop_map(|(id, from, t, payload)| {
                Body::Deliver {
                    id,
                    from,
                    received_at_ms: t,
                    payload,
                }
            }),
            id().prop_map(|id| Body::Ack { id }),
            id().prop_map(|id| Body::Acked { id }),
            (id(), key(), any::<u64>()).prop_map(|(id, to, t)| Body::Expired {
                id,
                to,
                expired_at_ms: t
            }),
            (id(), key()).prop_map(|(id, to)| Body::Dismiss { id, to }),
            id().prop_map(|id| Body::Dismissed { id }),
            proptest::collection::vec(id(), 1..=40).prop_map(|ids| Body::AckBatch { ids }),
            any::<u16>().prop_map(|count| Body::AckedBatch { count }),
            proptest::collection::vec(any::<u8>(), 0..=MAX_ENTRY_BYTES)
                .prop_map(|entry| Body::Publish { entry }),
            any::<u64>().prop_map(|expires_at_ms| Body::Published { expires_at_ms }),
            "[a-z0-9.+_-]{0,48}".prop_map(|capability| Body::Lookup { capability }),
            proptest::collection::vec(payload(), 0..=4)
                .prop_map(|entries| Body::Listing { entries }),
            (any::<u16>(), any::<u64>(), "\\PC{0,200}").prop_map(|(c, limit, message)| {
                Body::Error {
                    code: ErrorCode::from_u16(c),
                    limit,
                    message,
                }
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn every_frame_round_trips(request_id in any::<u32>(), body in arb_body()) {
            let frame = Frame::new(request_id, body);
            let bytes = frame.encode();
            prop_assert_eq!(Frame::decode(&bytes), Ok(frame.clone()));
            prop_assert_eq!(Frame::peek_header(&bytes).map(|h| h.2), Some(request_id));
        }

        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..1024)
        ) {
            if let Ok(frame) = Frame::decode(&bytes) {
                // Whatever decodes has exactly one encoding: the input.
                prop_assert_eq!(frame.encode(), bytes);
            }
        }

        #[test]
        fn decoder_never_panics_on_mutated_valid_frames(
            request_id in any::<u32>(),
            body in arb_body(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            xor in 1u8..=255,
        ) {
            let valid = Frame::new(request_id, body).encode();
            let mut bytes = valid.clone();
            let at = flip.index(bytes.len());
            bytes[at] ^= xor;
            let _ = Frame::decode(&bytes);
            // A cut-short valid frame is always refused. (A cut-short
            // mutated one may be valid: the flip can shorten its length.)
            let truncated = &valid[..cut.index(valid.len())];
            prop_assert!(Frame::decode(truncated).is_err());
        }
    }

    #[test]
    fn specific_errors_name_what_is_wrong() {
        let good = Frame::new(
            9,
            Body::Ack {
                id: EnvelopeId::from_bytes([3; 16]),
            },
        )
        .encode();

        let check = |bytes: &[u8], expected: DecodeError| {
            assert_eq!(Frame::decode(bytes), Err(expected));
        };
        check(&good[..3], DecodeError::ShortHeader { len: 3 });
        let mut wrong_version = good.clone();
        wrong_version[0] = 2;
        check(
            &wrong_version,
            DecodeError::UnsupportedVersion {
                found: 2,
                request_id: 9,
            },
        );
        let mut unknown = good.clone();
        unknown[1] = 0x55;
        check(
            &unknown,
            DecodeError::UnknownType {
                tag: 0x55,
                request_id: 9,
            },
        );
        check(
            &good[..10],
            DecodeError::Truncated {
                frame_type: FrameType::Ack,
                field: "id",
                request_id: 9,
            },
        );
        let mut trailing = good.clone();
        trailing.push(0);
        check(
            &trailing,
            DecodeError::TrailingBytes {
                frame_type: FrameType::Ack,
                extra: 1,
                request_id: 9,
            },
        );
    }

    #[test]
    fn over_long_token_is_refused() {
        let mut bytes = vec![PROTOCOL_VERSION, FrameType::Hello as u8, 0, 0, 0, 1];
        bytes.extend_from_slice(&[0; 128]);
        bytes.extend_from_slice(&600u16.to_be_bytes());
        bytes.extend_from_slice(&[b'x'; 600]);
        assert_eq!(
            Frame::decode(&bytes),
            Err(DecodeError::FieldTooLong {
                field: "access_token",
                len: 600,
                max: MAX_ACCESS_TOKEN_LEN,
                request_id: 1,
            })
        );
    }

    #[test]
    fn long_error_messages_are_cut_at_a_char_boundary() {
        let message = "é".repeat(MAX_ERROR_MESSAGE_LEN);
        let frame = Frame::new(
            0,
            Body::Error {
                code: ErrorCode::Internal,
                limit: 0,
                message,
            },
        );
        let Body::Error { message, .. } = Frame::decode(&frame.encode()).unwrap().body else {
            panic!("not an error frame");
        };
        assert_eq!(message.len(), MAX_ERROR_MESSAGE_LEN);
    }

    /// The worked examples in PROTOCOL.md, checked against the codec so the
    /// document cannot drift from the code.
    #[test]
    fn protocol_md_examples_decode_as_documented() {
        let doc = include_str!("../../../PROTOCOL.md");
        for (name, frame) in crate::examples::all() {
            let hex = crate::examples::to_hex(&frame.encode());
            assert!(
                doc.contains(&hex),
                "PROTOCOL.md lacks the example for {name}; expected hex:\n{hex}"
            );
        }
    }
}
