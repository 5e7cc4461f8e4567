//! Fixed-size values that appear on the wire.
//!
//! Each is a thin newtype over a byte array so that a recipient key can never
//! be passed where an envelope id is expected. None of them is secret.

use std::fmt;

/// Identifies a request; the answer or error frame echoes it. Frames the relay
/// sends on its own (challenge, deliveries, expiry notices) carry 0.
pub type RequestId = u32;

macro_rules! byte_newtype {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length of the value in bytes.
            pub const LEN: usize = $len;

            /// Wraps raw bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lower-case hex of all bytes.
            pub fn to_hex(&self) -> String {
                hex(&self.0)
            }

            /// Parses lower- or upper-case hex of exactly the right length.
            pub fn from_hex(text: &str) -> Option<Self> {
                let text = text.as_bytes();
                if text.len() != $len * 2 {
                    return None;
                }
                let mut out = [0u8; $len];
                for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
                    *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
                }
                Some(Self(out))
            }
        }

        impl From<[u8; $len]> for $name {
            fn from(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

byte_newtype!(
    /// An Ed25519 public key: the address of an identity on a relay.
    PublicKey,
    32
);
byte_newtype!(
    /// The sender-chosen id of an envelope (for agentwire clients, the
    /// message's UUIDv7). Unique per recipient.
    EnvelopeId,
    16
);
byte_newtype!(
    /// A fresh random challenge nonce, one per connection.
    Nonce,
    32
);
byte_newtype!(
    /// A relay's stable random id, bound into every authentication signature.
    RelayId,
    16
);

impl PublicKey {
    /// The short id used in logs and for people: the first 8 hex digits.
    pub fn short_id(&self) -> String {
        hex(&self.0[..4])
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short_id())
    }
}

impl fmt::Debug for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvelopeId({})", self.to_hex())
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", hex(&self.0[..4]))
    }
}

impl fmt::Debug for RelayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayId({})", self.to_hex())
    }
}

/// An Ed25519 signature (64 bytes). Public, but long: `Debug` shows a prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; 64]);

impl Signature {
    /// Length of a signature in bytes.
    pub const LEN: usize = 64;

    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex(&self.0[..4]))
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        let id = EnvelopeId::from_bytes([0xab; 16]);
        assert_eq!(EnvelopeId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(EnvelopeId::from_hex("abc"), None);
        assert_eq!(EnvelopeId::from_hex(&"zz".repeat(16)), None);
        assert_eq!(
            PublicKey::from_hex(&"AB".repeat(32)),
            Some(PublicKey([0xab; 32]))
        );
    }

    #[test]
    fn debug_of_a_key_shows_only_its_short_id() {
        let key = PublicKey::from_bytes([0x12; 32]);
        assert_eq!(format!("{key:?}"), "PublicKey(12121212)");
    }
}
