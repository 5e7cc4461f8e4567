//! Entries of a relay's opt-in directory: what an identity that chose to be
//! found publishes (its capability tags, its card and an invite), signed by
//! its own key so that whoever finds it can check that the relay did not
//! make it up or change it.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! version:u8 (= 1)  key:32  published_at_ms:u64  expires_at_ms:u64
//! tag_count:u8  (tag_len:u8 tag)*  card_len:u16 card  invite_len:u16 invite
//! signature:64
//! ```
//!
//! The signature is Ed25519 by `key` over [`DIRECTORY_CONTEXT`] `|| relay_id
//! ||` every byte of the entry before the signature: an entry is good on one
//! relay only. An entry whose invite is empty (and so are its tags and card)
//! is a withdrawal: the relay keeps it, so that an older entry replayed
//! cannot list the key again, but lists it to no one.
//!
//! This module only lays entries out; checking the signature is left to the
//! two sides that hold a crypto library (the relay and the client).

use crate::{PublicKey, RelayId, Signature};

/// Version byte of the entry layout.
pub const ENTRY_VERSION: u8 = 1;
/// Domain separation of an entry's signature.
pub const DIRECTORY_CONTEXT: &[u8] = b"agentwire-directory-v1\0";
/// Largest entry, in bytes.
pub const MAX_ENTRY_BYTES: usize = 4096;
/// Most capability tags in an entry.
pub const MAX_ENTRY_TAGS: usize = 32;
/// Longest capability tag, in bytes.
pub const MAX_TAG_LEN: usize = 48;
/// Longest an entry may be listed after it was published: 30 days.
pub const MAX_ENTRY_LIFETIME_MS: u64 = 30 * 24 * 3600 * 1000;
/// How far an entry's `published_at_ms` may be from the relay's clock.
pub const MAX_ENTRY_CLOCK_SKEW_MS: u64 = 10 * 60 * 1000;
/// Most entries in one [`crate::Body::Listing`].
pub const MAX_LISTING: usize = 50;

/// Bytes of an entry without its variable fields.
const FIXED_LEN: usize = 1 + 32 + 8 + 8 + 1 + 2 + 2 + 64;

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Whose entry it is; the key that signs it.
    pub key: PublicKey,
    /// When it was made, Unix milliseconds; a newer entry replaces an older
    /// one of the same key, never the other way round.
    pub published_at_ms: u64,
    /// When it stops being listed, Unix milliseconds (at most
    /// [`MAX_ENTRY_LIFETIME_MS`] after `published_at_ms`).
    pub expires_at_ms: u64,
    /// Capability tags, for the relay to find it by: 1 to 48 of `a-z`,
    /// `0-9`, `-`, `_`, `.`, `+`, starting with a letter or digit.
    pub capabilities: Vec<String>,
    /// The identity's card, as its contacts receive it (opaque here).
    pub card: Vec<u8>,
    /// An invite to pair with it, as text (empty in a withdrawal).
    pub invite: Vec<u8>,
    /// Ed25519 by `key` over [`Entry::signed_bytes`].
    pub signature: Signature,
}

/// Why bytes are not a directory entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Longer than [`MAX_ENTRY_BYTES`].
    #[error("the entry is {0} bytes; at most {MAX_ENTRY_BYTES}")]
    TooLong(usize),
    /// Cut short, trailing bytes, or an unknown version.
    #[error("the entry is malformed: {0}")]
    Malformed(&'static str),
    /// A capability tag breaks the rules.
    #[error("the entry has an invalid capability tag")]
    BadTag,
}

impl Entry {
    /// Whether this entry withdraws the key's listing.
    pub fn is_withdrawal(&self) -> bool {
        self.invite.is_empty()
    }

    /// The entry's bytes before the signature.
    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + self.card.len() + self.invite.len() + 256);
        out.push(ENTRY_VERSION);
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.published_at_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        let tags = &self.capabilities[..self.capabilities.len().min(MAX_ENTRY_TAGS)];
        out.push(tags.len() as u8);
        for tag in tags {
            let tag = &tag.as_bytes()[..tag.len().min(MAX_TAG_LEN)];
            out.push(tag.len() as u8);
            out.extend_from_slice(tag);
        }
        for field in [&self.card, &self.invite] {
            let field = &field[..field.len().min(MAX_ENTRY_BYTES)];
            out.extend_from_slice(&(field.len() as u16).to_be_bytes());
            out.extend_from_slice(field);
        }
        out
    }

    /// The exact bytes the key signs for `relay_id`.
    pub fn signed_bytes(&self, relay_id: &RelayId) -> Vec<u8> {
        let body = self.body();
        let mut out = Vec::with_capacity(DIRECTORY_CONTEXT.len() + 16 + body.len());
        out.extend_from_slice(DIRECTORY_CONTEXT);
        out.extend_from_slice(relay_id.as_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// The entry's bytes, signature included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(self.signature.as_bytes());
        out
    }

    /// Parses an entry (its signature is not checked here).
    pub fn decode(bytes: &[u8]) -> Result<Entry, EntryError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLong(bytes.len()));
        }
        let short = EntryError::Malformed("cut short");
        let mut rest = bytes;
        let mut take = |len: usize| -> Result<&[u8], EntryError> {
            if rest.len() < len {
                return Err(short.clone());
            }
            let (head, tail) = rest.split_at(len);
            rest = tail;
            Ok(head)
        };
        if take(1)?[0] != ENTRY_VERSION {
            return Err(EntryError::Malformed("unknown entry version"));
        }
        let key = PublicKey::from_bytes(to_array(take(32)?));
        let published_at_ms = u64::from_be_bytes(to_array(take(8)?));
        let expires_at_ms = u64::from_be_bytes(to_array(take(8)?));
        let count = usize::from(take(1)?[0]);
        if count > MAX_ENTRY_TAGS {
            return Err(EntryError::Malformed("too many capability tags"));
        }
        let mut capabilities = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(take(1)?[0]);
            let tag = std::str::from_utf8(take(len)?).map_err(|_| EntryError::BadTag)?;
            if !is_tag(tag) || capabilities.iter().any(|t: &String| t == tag) {
                return Err(EntryError::BadTag);
            }
            capabilities.push(tag.to_owned());
        }
        let card_len = usize::from(u16::from_be_bytes(to_array(take(2)?)));
        let card = take(card_len)?.to_vec();
        let invite_len = usize::from(u16::from_be_bytes(to_array(take(2)?)));
        let invite = take(invite_len)?.to_vec();
        let signature = Signature::from_bytes(to_array(take(64)?));
        if !rest.is_empty() {
            return Err(EntryError::Malformed("bytes after the signature"));
        }
        if invite.is_empty() && (!card.is_empty() || !capabilities.is_empty()) {
            return Err(EntryError::Malformed(
                "a withdrawal carries no tags and no card",
            ));
        }
        Ok(Entry {
            key,
            published_at_ms,
            expires_at_ms,
            capabilities,
            card,
            invite,
            signature,
        })
    }
}

/// Whether `tag` is a capability tag: 1 to [`MAX_TAG_LEN`] of `a-z`, `0-9`,
/// `-`, `_`, `.`, `+`, starting with a letter or digit.
pub fn is_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.+".contains(b))
}

fn to_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry() -> Entry {
        Entry {
            key: PublicKey::from_bytes([7; 32]),
            published_at_ms: 1_795_000_000_000,
            expires_at_ms: 1_795_000_000_000 + MAX_ENTRY_LIFETIME_MS,
            capabilities: vec!["code-review".into(), "rust".into()],
            card: vec![1, 0, 0, 0, 0, 0],
            invite: b"aw1:xyz".to_vec(),
            signature: Signature::from_bytes([9; 64]),
        }
    }

    #[test]
    fn entries_round_trip_and_bind_the_relay() {
        let entry = entry();
        assert_eq!(Entry::decode(&entry.encode()), Ok(entry.clone()));
        let a = entry.signed_bytes(&RelayId::from_bytes([1; 16]));
        let b = entry.signed_bytes(&RelayId::from_bytes([2; 16]));
        assert_ne!(a, b);
        assert!(a.starts_with(DIRECTORY_CONTEXT));
        assert!(!entry.is_withdrawal());
    }

    #[test]
    fn bad_entries_are_refused() {
        let good = entry().encode();
        assert_eq!(
            Entry::decode(&good[..good.len() - 1]),
            Err(EntryError::Malformed("cut short"))
        );
        let mut long = good.clone();
        long.push(0);
        assert!(Entry::decode(&long).is_err());
        let mut version = good.clone();
        version[0] = 2;
        assert!(Entry::decode(&version).is_err());
        for tag in ["", "Rust", "-x", "a b", "é"] {
            let mut bad = entry();
            bad.capabilities = vec![tag.to_owned()];
            assert_eq!(
                Entry::decode(&bad.encode()),
                Err(EntryError::BadTag),
                "{tag}"
            );
        }
        let mut twice = entry();
        twice.capabilities = vec!["a".into(), "a".into()];
        assert_eq!(Entry::decode(&twice.encode()), Err(EntryError::BadTag));
        let mut withdrawal_with_card = entry();
        withdrawal_with_card.invite.clear();
        assert!(Entry::decode(&withdrawal_with_card.encode()).is_err());
        assert_eq!(
            Entry::decode(&vec![1; MAX_ENTRY_BYTES + 1]),
            Err(EntryError::TooLong(MAX_ENTRY_BYTES + 1))
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(entry) = Entry::decode(&bytes) {
                prop_assert_eq!(entry.encode(), bytes);
            }
        }
    }
}
