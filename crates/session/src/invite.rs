//! Invites: signed, expiring, single-use capabilities to become a contact.
//!
//! An invite carries the inviter's keys, a fresh one-time key for the first
//! Olm message, the relay URL, a random secret, the expiry, the permissions
//! offered and a suggested petname, all signed by the inviter's Ed25519 key.
//! It travels as one line of text: `aw1:` followed by base64url (no padding)
//! of the layout in PROTOCOL.md ("Invites"). Single use is enforced by the
//! inviter's daemon, which remembers each invite until it is redeemed or
//! expires.

use std::fmt;

use agentwire_wire::{PublicKey, RelayId, Signature};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use crate::identity::{Identity, verify_signature};
use crate::names::Name;

/// Prefix of every invite token.
pub const TOKEN_PREFIX: &str = "aw1:";
/// Version byte of the invite layout.
pub const INVITE_VERSION: u8 = 1;
/// Longest invite token accepted, in characters.
pub const MAX_TOKEN_LEN: usize = 2048;
/// Longest relay URL in an invite, in bytes.
pub const MAX_RELAY_URL_LEN: usize = 512;
/// Domain separation of the inviter's signature.
pub const INVITE_CONTEXT: &[u8] = b"agentwire-invite-v1\0";

/// What an invite allows the new contact to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Permissions(u8);

impl Permissions {
    /// Exchange chat messages.
    pub const CHAT: Permissions = Permissions(0b001);
    /// Send tasks to the inviter.
    pub const TASKS: Permissions = Permissions(0b010);
    /// Send files.
    pub const FILES: Permissions = Permissions(0b100);
    /// What `agentwire invite` offers unless told otherwise.
    pub const DEFAULT: Permissions = Permissions(0b111);

    /// From the wire byte (unknown bits are kept, and ignored).
    pub fn from_bits(bits: u8) -> Permissions {
        Permissions(bits)
    }

    /// The wire byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether every permission in `other` is included.
    pub fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Every permission, with its name.
    pub const NAMED: [(Permissions, &'static str); 3] = [
        (Self::CHAT, "chat"),
        (Self::TASKS, "task"),
        (Self::FILES, "file"),
    ];

    /// Names of the known permissions included, e.g. `["chat", "task"]`.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMED
            .into_iter()
            .filter(|(p, _)| self.contains(*p))
            .map(|(_, name)| name)
            .collect()
    }

    /// The permission named `name` (`chat`, `task`, `file`; the plurals
    /// are taken too).
    pub fn named(name: &str) -> Option<Permissions> {
        let name = name.trim();
        let name = name.strip_suffix('s').unwrap_or(name);
        Self::NAMED
            .into_iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(p, _)| p)
    }

    /// Parses a list such as `chat,task` (`all` and `none` too); the error
    /// names the word not understood.
    pub fn parse_list<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Permissions, String> {
        let mut bits = 0;
        for word in words.into_iter().flat_map(|w| w.split(',')) {
            match word.trim() {
                "" | "none" => {}
                "all" => bits |= Self::DEFAULT.0,
                other => {
                    bits |= Self::named(other)
                        .ok_or_else(|| {
                            format!(
                                "unknown permission {other:?}; use chat, task, file, all or none"
                            )
                        })?
                        .0
                }
            }
        }
        Ok(Permissions(bits))
    }

    /// These permissions and `other`'s.
    pub fn with(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    /// These permissions without `other`'s.
    pub fn without(self, other: Permissions) -> Permissions {
        Permissions(self.0 & !other.0)
    }
}

/// The invite's random secret: whoever redeems the invite proves knowledge
/// of it. Zeroized on drop; `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteSecret(Zeroizing<[u8; 32]>);

impl InviteSecret {
    /// A fresh random secret.
    pub fn generate() -> Result<InviteSecret, getrandom::Error> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())?;
        Ok(InviteSecret(bytes))
    }

    /// Wraps secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> InviteSecret {
        InviteSecret(Zeroizing::new(bytes))
    }

    /// The secret bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for InviteSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InviteSecret(<redacted>)")
    }
}

/// The contents of an invite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    /// The inviter's address (Ed25519), which signs the invite.
    pub inviter: PublicKey,
    /// The inviter's Curve25519 identity key.
    pub inviter_curve25519: [u8; 32],
    /// A fresh Curve25519 one-time key of the inviter, for the first message.
    pub one_time_key: [u8; 32],
    /// The capability secret.
    pub secret: InviteSecret,
    /// When the invite stops being valid, Unix milliseconds.
    pub expires_at_ms: u64,
    /// What the new contact may do.
    pub permissions: Permissions,
    /// The relay both sides use, `ws://` or `wss://`.
    pub relay_url: String,
    /// The id of the relay at that URL when the invite was made: an acceptor
    /// that finds another relay there refuses the invite.
    pub relay_id: RelayId,
    /// The inviter's suggested petname.
    pub inviter_name: Name,
}

/// An invite with the inviter's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedInvite {
    /// What the inviter offers.
    pub invite: Invite,
    /// The inviter's signature over [`INVITE_CONTEXT`] and the layout.
    pub signature: Signature,
}

/// Why an invite token cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    /// Not an invite at all, or damaged beyond reading.
    #[error("not a valid invite: {0}; copy the whole line starting with aw1:")]
    Malformed(String),
    /// Made by a newer agentwire.
    #[error("this invite uses format version {0}, which this agentwire does not read; upgrade")]
    UnsupportedVersion(u8),
    /// Altered or damaged: the signature does not verify.
    #[error("the invite's signature does not verify: it was altered or damaged in transit")]
    BadSignature,
    /// The relay at the invite's URL is not the one it was made for.
    #[error(
        "this invite is for another relay: the relay at {url} has id {found}, the invite was made for {expected}"
    )]
    WrongRelay {
        /// The URL.
        url: String,
        /// The relay id the invite names.
        expected: RelayId,
        /// The relay id found there.
        found: RelayId,
    },
    /// Past its expiry.
    #[error(
        "the invite expired at {} ({} ago); ask the inviter for a new one",
        utc(*expired_at_ms),
        ago(*expired_at_ms, *now_ms)
    )]
    Expired {
        /// When it expired, Unix milliseconds.
        expired_at_ms: u64,
        /// When it was checked, Unix milliseconds.
        now_ms: u64,
    },
}

/// A Unix time in milliseconds as an RFC 3339 UTC time, to the second.
fn utc(ms: u64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// How long before `now_ms` `then_ms` was, to the second.
fn ago(then_ms: u64, now_ms: u64) -> humantime::FormattedDuration {
    humantime::format_duration(std::time::Duration::from_secs(
        now_ms.saturating_sub(then_ms) / 1000,
    ))
}

impl SignedInvite {
    /// Signs `invite` with the inviter's identity (whose address must be
    /// `invite.inviter`).
    pub fn sign(invite: Invite, inviter: &Identity) -> SignedInvite {
        let mut message = INVITE_CONTEXT.to_vec();
        message.extend_from_slice(&encode_unsigned(&invite));
        let signature = inviter.sign(&message);
        SignedInvite { invite, signature }
    }

    /// The invite as one line of text.
    pub fn to_token(&self) -> String {
        let mut bytes = encode_unsigned(&self.invite);
        bytes.extend_from_slice(self.signature.as_bytes());
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Reads a token and checks its signature (not its expiry: see
    /// [`SignedInvite::check_unexpired`]).
    pub fn parse(token: &str) -> Result<SignedInvite, InviteError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(InviteError::Malformed(format!(
                "it is {} characters long; invites are at most {MAX_TOKEN_LEN}",
                token.len()
            )));
        }
        let encoded = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| InviteError::Malformed("it does not start with aw1:".into()))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|e| InviteError::Malformed(format!("bad base64url ({e})")))?;
        let (invite, signed_len) = decode_unsigned(&bytes)?;
        let signature: [u8; 64] = bytes[signed_len..]
            .try_into()
            .map_err(|_| InviteError::Malformed("the signature is missing or cut".into()))?;
        let signature = Signature::from_bytes(signature);
        let mut message = INVITE_CONTEXT.to_vec();
        message.extend_from_slice(&bytes[..signed_len]);
        if !verify_signature(&invite.inviter, &message, &signature) {
            return Err(InviteError::BadSignature);
        }
        Ok(SignedInvite { invite, signature })
    }

    /// Fails if the invite has expired at `now_ms`.
    pub fn check_unexpired(&self, now_ms: u64) -> Result<(), InviteError> {
        if now_ms >= self.invite.expires_at_ms {
            return Err(InviteError::Expired {
                expired_at_ms: self.invite.expires_at_ms,
                now_ms,
            });
        }
        Ok(())
    }
}

fn encode_unsigned(invite: &Invite) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(INVITE_VERSION);
    out.extend_from_slice(invite.inviter.as_bytes());
    out.extend_from_slice(&invite.inviter_curve25519);
    out.extend_from_slice(&invite.one_time_key);
    out.extend_from_slice(invite.secret.as_bytes());
    out.extend_from_slice(&invite.expires_at_ms.to_be_bytes());
    out.push(invite.permissions.bits());
    let url = &invite.relay_url.as_bytes()[..invite.relay_url.len().min(MAX_RELAY_URL_LEN)];
    out.extend_from_slice(&(url.len() as u16).to_be_bytes());
    out.extend_from_slice(url);
    out.extend_from_slice(invite.relay_id.as_bytes());
    let name = invite.inviter_name.as_str().as_bytes();
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out
}

/// Decodes the signed part; returns the invite and the signed part's length.
fn decode_unsigned(bytes: &[u8]) -> Result<(Invite, usize), InviteError> {
    let mut r = crate::message::Reader::new(bytes);
    let short = |what: &str| InviteError::Malformed(format!("it is cut short (in {what})"));
    let version = r.u8().ok_or_else(|| short("version"))?;
    if version != INVITE_VERSION {
        return Err(InviteError::UnsupportedVersion(version));
    }
    let inviter = PublicKey::from_bytes(r.array().ok_or_else(|| short("inviter key"))?);
    let inviter_curve25519 = r.array().ok_or_else(|| short("inviter key"))?;
    let one_time_key = r.array().ok_or_else(|| short("one-time key"))?;
    let secret = InviteSecret::from_bytes(r.array().ok_or_else(|| short("secret"))?);
    let expires_at_ms = u64::from_be_bytes(r.array().ok_or_else(|| short("expiry"))?);
    let permissions = Permissions::from_bits(r.u8().ok_or_else(|| short("permissions"))?);
    let url_len = usize::from(u16::from_be_bytes(
        r.array().ok_or_else(|| short("relay URL"))?,
    ));
    if url_len > MAX_RELAY_URL_LEN {
        return Err(InviteError::Malformed(format!(
            "its relay URL is {url_len} bytes; the limit is {MAX_RELAY_URL_LEN}"
        )));
    }
    let relay_url = std::str::from_utf8(r.take(url_len).ok_or_else(|| short("relay URL"))?)
        .map_err(|_| InviteError::Malformed("its relay URL is not UTF-8".into()))?
        .to_owned();
    if !(relay_url.starts_with("ws://") || relay_url.starts_with("wss://")) {
        return Err(InviteError::Malformed(
            "its relay URL is not a ws:// or wss:// URL".into(),
        ));
    }
    let relay_id = RelayId::from_bytes(r.array().ok_or_else(|| short("relay id"))?);
    let name_len = usize::from(r.u8().ok_or_else(|| short("name"))?);
    let name = std::str::from_utf8(r.take(name_len).ok_or_else(|| short("name"))?)
        .map_err(|_| InviteError::Malformed("its name is not UTF-8".into()))?;
    let inviter_name = Name::new(name)
        .map_err(|e| InviteError::Malformed(format!("its suggested name is invalid: {e}")))?;
    let signed_len = bytes.len() - r.remaining();
    Ok((
        Invite {
            inviter,
            inviter_curve25519,
            one_time_key,
            secret,
            expires_at_ms,
            permissions,
            relay_url,
            relay_id,
            inviter_name,
        },
        signed_len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_lists_parse_and_name_what_they_do_not_know() {
        let parse = |text: &str| Permissions::parse_list([text]);
        assert_eq!(parse("chat"), Ok(Permissions::CHAT));
        assert_eq!(
            parse("chat,tasks"),
            Ok(Permissions::CHAT.with(Permissions::TASKS))
        );
        assert_eq!(parse("all"), Ok(Permissions::DEFAULT));
        assert_eq!(parse("none"), Ok(Permissions::from_bits(0)));
        assert_eq!(
            parse("Task, FILE").map(|p| p.names()),
            Ok(vec!["task", "file"])
        );
        let error = parse("chat,admin").unwrap_err();
        assert!(error.contains("\"admin\""), "{error}");
        assert_eq!(
            Permissions::DEFAULT.without(Permissions::TASKS).names(),
            vec!["chat", "file"]
        );
    }

    fn sample(inviter: &Identity) -> SignedInvite {
        let invite = Invite {
            inviter: inviter.address(),
            inviter_curve25519: inviter.curve25519(),
            one_time_key: [7; 32],
            secret: InviteSecret::generate().unwrap(),
            expires_at_ms: 2_000_000_000_000,
            permissions: Permissions::DEFAULT,
            relay_url: "wss://relay.example:7878/v1/ws".into(),
            relay_id: RelayId::from_bytes([5; 16]),
            inviter_name: Name::new("alice").unwrap(),
        };
        SignedInvite::sign(invite, inviter)
    }

    #[test]
    fn a_token_round_trips_and_verifies() {
        let alice = Identity::generate(Name::new("alice").unwrap());
        let signed = sample(&alice);
        let token = signed.to_token();
        assert!(token.starts_with("aw1:"));
        assert!(!token.contains(['+', '/', '=', '\n']));
        assert_eq!(SignedInvite::parse(&token), Ok(signed.clone()));
        assert_eq!(SignedInvite::parse(&format!("  {token}\n")), Ok(signed));
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let alice = Identity::generate(Name::new("alice").unwrap());
        let token = sample(&alice).to_token();
        let bytes = URL_SAFE_NO_PAD.decode(&token[4..]).unwrap();
        for at in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut damaged = bytes.clone();
                damaged[at] ^= bit;
                let damaged = format!("aw1:{}", URL_SAFE_NO_PAD.encode(&damaged));
                assert!(
                    SignedInvite::parse(&damaged).is_err(),
                    "flipping bit {bit:#x} of byte {at} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn specific_errors_for_specific_damage() {
        let alice = Identity::generate(Name::new("alice").unwrap());
        let signed = sample(&alice);
        let token = signed.to_token();
        let check = |input: &str, expected: &str| {
            let error = SignedInvite::parse(input).unwrap_err().to_string();
            assert!(error.contains(expected), "{input:.20}: {error}");
        };
        check("hello", "does not start with aw1:");
        check("aw1:***", "bad base64url");
        let bytes = URL_SAFE_NO_PAD.decode(&token[4..]).unwrap();
        let cut = |len: usize| format!("aw1:{}", URL_SAFE_NO_PAD.encode(&bytes[..len]));
        check(&cut(bytes.len() - 20), "signature is missing");
        check(&cut(30), "cut short");
        check(&"aw1:".repeat(600), "at most 2048");
        let mut bytes = bytes.clone();
        bytes[0] = 9;
        check(
            &format!("aw1:{}", URL_SAFE_NO_PAD.encode(&bytes)),
            "format version 9",
        );
        // Expiry is checked separately, with the caller's clock.
        assert_eq!(
            signed.check_unexpired(2_000_000_000_000),
            Err(InviteError::Expired {
                expired_at_ms: 2_000_000_000_000,
                now_ms: 2_000_000_000_000,
            })
        );
        assert_eq!(signed.check_unexpired(1_999_999_999_999), Ok(()));
    }

    #[test]
    fn a_secret_never_shows_in_debug() {
        let secret = InviteSecret::from_bytes([0xaa; 32]);
        assert_eq!(format!("{secret:?}"), "InviteSecret(<redacted>)");
        let alice = Identity::generate(Name::new("alice").unwrap());
        let printed = format!("{:?}", sample(&alice));
        assert!(printed.contains("InviteSecret(<redacted>)"), "{printed}");
    }
}
