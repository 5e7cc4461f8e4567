//! Olm sessions between two identities, and how a message becomes an
//! envelope payload and back.
//!
//! An envelope payload is `olm_type:u8 || olm_ciphertext`: type 0 is a
//! pre-key message (the first messages of a session, which carry what the
//! receiver needs to create its side), type 1 a normal message. The sender of
//! a message is whoever owns the session that decrypts it; nothing inside a
//! message can claim otherwise.

use std::fmt;

use vodozemac::Curve25519PublicKey;
use vodozemac::olm::{OlmMessage, PreKeyMessage, Session, SessionConfig, SessionPickle};

use crate::identity::{Identity, PickleKey};
use crate::message::{MessageError, Plaintext};

/// Why a payload could not be sealed or opened, or a session made or
/// restored. Each variant keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The payload is empty: there is no message type.
    #[error("not an encrypted agentwire message: the payload is empty")]
    Empty,
    /// The payload is not an Olm message.
    #[error("not an encrypted agentwire message: {0}")]
    Malformed(#[source] vodozemac::DecodeError),
    /// A session was to start from a payload that is not a first message.
    #[error("not the first message of a session")]
    NotFirst,
    /// The session could not be created from the keys offered.
    #[error("cannot set up an encrypted session: {0}")]
    Setup(#[source] vodozemac::olm::SessionCreationError),
    /// Encryption failed.
    #[error("cannot encrypt: {0}")]
    Encrypt(#[source] vodozemac::olm::EncryptionError),
    /// Decryption failed: not encrypted for this session (a forged or
    /// misaddressed message), or a replay of an old one.
    #[error("cannot decrypt: {0}")]
    Decrypt(#[source] vodozemac::olm::DecryptionError),
    /// The decrypted bytes are not a message, or a message is too large.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A stored session does not decrypt with the key.
    #[error("cannot restore a session: {0}")]
    Unpickle(#[source] vodozemac::PickleError),
    /// The account made no one-time key.
    #[error("the account made no one-time key")]
    NoOneTimeKey,
    /// A stored session's message numbers are damaged.
    #[error("cannot restore a session: its message numbers are damaged")]
    Numbers,
}

/// One side of an Olm session with one contact, with the numbering of the
/// messages sealed and opened in it.
pub struct PeerSession {
    session: Session,
    numbers: Numbers,
}

/// Gaps this side keeps track of, at most: a peer that skips more (a
/// corrupt or hostile one) has the rest counted, not listed.
const MAX_TRACKED_GAPS: usize = 256;

/// The sequence numbers of a session: the last one sealed here, and which of
/// the peer's have not arrived.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Numbers {
    /// The number of the last message sealed in this session.
    sealed: u64,
    /// The number expected next from the peer; 0 when unknown (a session
    /// stored before messages were numbered), so that the first numbered
    /// message sets it without reporting a gap.
    next: u64,
    /// Numbers below `next` that have not arrived (yet).
    missing: std::collections::BTreeSet<u64>,
    /// Gaps beyond [`MAX_TRACKED_GAPS`], counted only.
    uncounted: u64,
}

impl Numbers {
    /// A new session's: the peer's first message is number 1.
    fn fresh() -> Numbers {
        Numbers {
            next: 1,
            ..Numbers::default()
        }
    }

    /// Notes that the peer's message `seq` arrived.
    fn arrived(&mut self, seq: u64) {
        if self.next == 0 {
            self.next = seq.saturating_add(1);
        } else if seq >= self.next {
            let skipped = seq - self.next;
            let tracked = skipped.min(MAX_TRACKED_GAPS as u64);
            self.missing.extend(seq - tracked..seq);
            self.uncounted = self.uncounted.saturating_add(skipped - tracked);
            while self.missing.len() > MAX_TRACKED_GAPS {
                self.missing.pop_first();
                self.uncounted = self.uncounted.saturating_add(1);
            }
            self.next = seq.saturating_add(1);
        } else {
            self.missing.remove(&seq);
        }
    }

    /// `s1:SEALED:NEXT:UNCOUNTED:MISSING,...:` in front of a pickle.
    fn prefix(&self) -> String {
        let missing: Vec<String> = self.missing.iter().map(u64::to_string).collect();
        format!(
            "{PICKLE_PREFIX}{}:{}:{}:{}:",
            self.sealed,
            self.next,
            self.uncounted,
            missing.join(",")
        )
    }

    /// Splits a stored session into its numbers and its pickle; a pickle
    /// stored without numbers has unknown ones.
    fn split(stored: &str) -> Option<(Numbers, &str)> {
        let Some(rest) = stored.strip_prefix(PICKLE_PREFIX) else {
            return Some((Numbers::default(), stored));
        };
        let mut fields = rest.splitn(5, ':');
        let mut number = || fields.next()?.parse::<u64>().ok();
        let (sealed, next, uncounted) = (number()?, number()?, number()?);
        let missing_field = fields.next()?;
        let pickle = fields.next()?;
        let missing = if missing_field.is_empty() {
            std::collections::BTreeSet::new()
        } else {
            missing_field
                .split(',')
                .map(|n| n.parse().ok())
                .collect::<Option<_>>()?
        };
        Some((
            Numbers {
                sealed,
                next,
                missing,
                uncounted,
            },
            pickle,
        ))
    }
}

/// Marks a stored session that carries its numbers.
const PICKLE_PREFIX: &str = "s1:";

impl fmt::Debug for PeerSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerSession({})", self.session.session_id())
    }
}

impl PeerSession {
    fn new(session: Session) -> PeerSession {
        PeerSession {
            session,
            numbers: Numbers::fresh(),
        }
    }

    /// Encrypts a message into an envelope payload, numbered next in this
    /// session.
    pub fn seal(&mut self, message: &Plaintext) -> Result<Vec<u8>, SessionError> {
        let seq = self.numbers.sealed.saturating_add(1);
        let bytes = message.encode_numbered(Some(seq))?;
        let sealed = self.session.encrypt(bytes).map_err(SessionError::Encrypt)?;
        self.numbers.sealed = seq;
        let (olm_type, ciphertext) = sealed.to_parts();
        let mut payload = Vec::with_capacity(1 + ciphertext.len());
        payload.push(olm_type as u8);
        payload.extend_from_slice(&ciphertext);
        Ok(payload)
    }

    /// Decrypts an envelope payload sent in this session, and notes its
    /// number.
    pub fn open(&mut self, payload: &[u8]) -> Result<Plaintext, SessionError> {
        let message = parse_payload(payload)?;
        let bytes = self
            .session
            .decrypt(&message)
            .map_err(SessionError::Decrypt)?;
        let plaintext = Plaintext::decode(&bytes)?;
        if let Some(seq) = plaintext.seq {
            self.numbers.arrived(seq);
        }
        Ok(plaintext)
    }

    /// How many of the peer's messages in this session have not arrived,
    /// though a later one has: dropped on the way, or still coming.
    pub fn missing(&self) -> u64 {
        (self.numbers.missing.len() as u64).saturating_add(self.numbers.uncounted)
    }

    /// [`PeerSession::missing`] of a stored session, read without the key.
    pub fn missing_in_pickle(stored: &str) -> u64 {
        Numbers::split(stored).map_or(0, |(numbers, _)| {
            (numbers.missing.len() as u64).saturating_add(numbers.uncounted)
        })
    }

    /// Whether `payload` is a pre-key message that starts this very session
    /// (so a redelivered first message can be recognised).
    pub fn started_by(&self, payload: &[u8]) -> bool {
        matches!(parse_payload(payload), Ok(OlmMessage::PreKey(m)) if m.session_id() == self.session.session_id())
    }

    /// The session's state, encrypted with `key`, for storage, behind its
    /// numbers (which are not secret).
    pub fn to_encrypted_pickle(&self, key: &PickleKey) -> String {
        let mut stored = self.numbers.prefix();
        stored.push_str(&self.session.pickle().encrypt(key.as_bytes()));
        stored
    }

    /// Restores a session from [`PeerSession::to_encrypted_pickle`]'s output.
    pub fn from_encrypted_pickle(
        pickle: &str,
        key: &PickleKey,
    ) -> Result<PeerSession, SessionError> {
        let (numbers, pickle) = Numbers::split(pickle).ok_or(SessionError::Numbers)?;
        SessionPickle::from_encrypted(pickle, key.as_bytes())
            .map(|p| PeerSession {
                session: Session::from_pickle(p),
                numbers,
            })
            .map_err(SessionError::Unpickle)
    }
}

fn parse_payload(payload: &[u8]) -> Result<OlmMessage, SessionError> {
    let (olm_type, ciphertext) = payload.split_first().ok_or(SessionError::Empty)?;
    OlmMessage::from_parts(usize::from(*olm_type), ciphertext).map_err(SessionError::Malformed)
}

/// The one-time key a pre-key payload was encrypted to, if it is one: lets a
/// receiver find the invite it redeems before creating any session.
pub fn prekey_one_time_key(payload: &[u8]) -> Option<[u8; 32]> {
    match parse_payload(payload) {
        Ok(OlmMessage::PreKey(message)) => Some(message.one_time_key().to_bytes()),
        _ => None,
    }
}

/// The sender's Curve25519 identity key in a pre-key payload, if it is one.
pub fn prekey_identity_key(payload: &[u8]) -> Option<[u8; 32]> {
    match parse_payload(payload) {
        Ok(OlmMessage::PreKey(message)) => Some(message.identity_key().to_bytes()),
        _ => None,
    }
}

impl Identity {
    /// A fresh one-time key for someone to open a session with (an invite's,
    /// or a sibling's). The private half stays in this identity until a
    /// session consumes it.
    pub fn new_one_time_key(&mut self) -> Result<[u8; 32], SessionError> {
        let generated = self.account_mut().generate_one_time_keys(1);
        self.account_mut().mark_keys_as_published();
        generated
            .created
            .first()
            .map(|key| key.to_bytes())
            .ok_or(SessionError::NoOneTimeKey)
    }

    /// Opens a session to a peer from its identity key and one of its
    /// one-time keys.
    pub fn open_session(
        &self,
        their_curve25519: [u8; 32],
        their_one_time_key: [u8; 32],
    ) -> Result<PeerSession, SessionError> {
        self.account()
            .create_outbound_session(
                SessionConfig::version_1(),
                Curve25519PublicKey::from_bytes(their_curve25519),
                Curve25519PublicKey::from_bytes(their_one_time_key),
            )
            .map(PeerSession::new)
            .map_err(SessionError::Setup)
    }

    /// Creates this side of a session from a peer's first (pre-key) payload,
    /// consuming the one-time key it used, and returns the first message.
    /// Fails unless the payload comes from `their_curve25519`.
    pub fn accept_session(
        &mut self,
        their_curve25519: [u8; 32],
        payload: &[u8],
    ) -> Result<(PeerSession, Plaintext), SessionError> {
        let OlmMessage::PreKey(message) = parse_payload(payload)? else {
            return Err(SessionError::NotFirst);
        };
        let message: PreKeyMessage = message;
        let created = self
            .account_mut()
            .create_inbound_session(
                SessionConfig::version_1(),
                Curve25519PublicKey::from_bytes(their_curve25519),
                &message,
            )
            .map_err(SessionError::Setup)?;
        let plaintext = Plaintext::decode(&created.plaintext)?;
        let mut session = PeerSession::new(created.session);
        if let Some(seq) = plaintext.seq {
            session.numbers.arrived(seq);
        }
        Ok((session, plaintext))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Kind, MessageId};
    use crate::names::Name;

    fn identity(name: &str) -> Identity {
        Identity::generate(Name::new(name).unwrap())
    }

    fn chat(body: &str) -> Plaintext {
        Plaintext {
            id: MessageId::new_v7(),
            kind: Kind::Chat,
            priority: crate::message::Priority::Normal,
            sent_at_ms: 1,
            reply_to: None,
            thread: None,
            chain: None,
            seq: None,
            body: body.as_bytes().to_vec(),
        }
    }

    /// Alice opens a session to Bob with one of Bob's one-time keys.
    fn pair() -> (Identity, PeerSession, Identity, PeerSession) {
        let alice = identity("alice");
        let mut bob = identity("bob");
        let otk = bob.new_one_time_key().unwrap();
        let mut to_bob = alice.open_session(bob.curve25519(), otk).unwrap();
        let first = chat("hello bob");
        let payload = to_bob.seal(&first).unwrap();
        assert_eq!(prekey_one_time_key(&payload), Some(otk));
        assert_eq!(prekey_identity_key(&payload), Some(alice.curve25519()));
        let (to_alice, opened) = bob.accept_session(alice.curve25519(), &payload).unwrap();
        assert_eq!(opened, numbered(first, 1));
        (alice, to_bob, bob, to_alice)
    }

    /// `message` as it opens: numbered `seq` by the session that sealed it.
    fn numbered(message: Plaintext, seq: u64) -> Plaintext {
        Plaintext {
            seq: Some(seq),
            ..message
        }
    }

    #[test]
    fn a_message_that_never_arrives_is_missing_until_it_does() {
        let (_alice, mut to_bob, _bob, mut to_alice) = pair();
        let sealed: Vec<Vec<u8>> = (2..=5)
            .map(|n| to_bob.seal(&chat(&format!("m{n}"))).unwrap())
            .collect();
        assert_eq!(to_alice.open(&sealed[0]).unwrap().seq, Some(2));
        assert_eq!(to_alice.missing(), 0);
        // 3 and 4 are held back: 5 shows them missing.
        assert_eq!(to_alice.open(&sealed[3]).unwrap().seq, Some(5));
        assert_eq!(to_alice.missing(), 2);
        // Stored and restored, the numbers stay.
        let key = PickleKey::generate().unwrap();
        let stored = to_alice.to_encrypted_pickle(&key);
        assert_eq!(PeerSession::missing_in_pickle(&stored), 2);
        let mut to_alice = PeerSession::from_encrypted_pickle(&stored, &key).unwrap();
        assert_eq!(to_alice.missing(), 2);
        to_alice.open(&sealed[1]).unwrap();
        assert_eq!(to_alice.missing(), 1);
        to_alice.open(&sealed[2]).unwrap();
        assert_eq!(to_alice.missing(), 0);
        // The other way, numbering starts at 1 on its own.
        assert_eq!(
            to_bob
                .open(&to_alice.seal(&chat("hi")).unwrap())
                .unwrap()
                .seq,
            Some(1)
        );
    }

    #[test]
    fn numbers_are_bounded_against_a_peer_that_skips_billions() {
        let mut numbers = Numbers::fresh();
        numbers.arrived(u64::MAX);
        assert_eq!(numbers.missing.len(), MAX_TRACKED_GAPS);
        assert_eq!(numbers.uncounted, u64::MAX - 1 - MAX_TRACKED_GAPS as u64);
        numbers.arrived(u64::MAX);
        numbers.arrived(3);
        assert_eq!(numbers.missing.len(), MAX_TRACKED_GAPS);
        // A session stored before numbering learns where it stands from the
        // first numbered message, without a gap.
        let mut legacy = Numbers::default();
        legacy.arrived(41);
        legacy.arrived(42);
        assert_eq!((legacy.missing.len(), legacy.uncounted), (0, 0));
        // Stored numbers round-trip; damaged ones are refused.
        let mut stored = numbers.prefix();
        stored.push_str("PICKLE");
        assert_eq!(Numbers::split(&stored), Some((numbers, "PICKLE")));
        assert_eq!(
            Numbers::split("no prefix"),
            Some((Numbers::default(), "no prefix"))
        );
        for damaged in ["s1:1:2:3", "s1:x:2:3::P", "s1:1:2:3:4,y:P"] {
            assert_eq!(Numbers::split(damaged), None, "{damaged}");
        }
    }

    #[test]
    fn messages_flow_both_ways_and_the_ciphertext_hides_the_body() {
        let (_alice, mut to_bob, _bob, mut to_alice) = pair();
        let reply = chat("hello alice, SECRET-MARKER");
        let payload = to_alice.seal(&reply).unwrap();
        assert!(!payload.windows(13).any(|w| w == b"SECRET-MARKER"));
        assert_eq!(to_bob.open(&payload).unwrap(), numbered(reply, 1));
        let next = chat("again");
        assert_eq!(
            to_alice.open(&to_bob.seal(&next).unwrap()).unwrap(),
            numbered(next, 2)
        );
    }

    #[test]
    fn a_message_sealed_by_someone_else_does_not_open_in_a_contacts_session() {
        // Carol knows Bob's keys and has her own session to him, then sends
        // a payload as if it came from Alice: it does not decrypt in Bob's
        // session with Alice.
        let (_alice, _to_bob, mut bob, mut bob_to_alice) = pair();
        let carol = identity("carol");
        let otk = bob.new_one_time_key().unwrap();
        let mut carol_to_bob = carol.open_session(bob.curve25519(), otk).unwrap();
        let forged = carol_to_bob.seal(&chat("I am alice")).unwrap();
        assert!(matches!(
            bob_to_alice.open(&forged),
            Err(SessionError::Decrypt(_))
        ));
        // Nor can Carol's pre-key message pass as Alice's.
        let alice_curve = _alice.curve25519();
        assert!(bob.accept_session(alice_curve, &forged).is_err());
    }

    /// The replaced tools' bug class "a signature that does not cover the
    /// ciphertext": a flipped bit anywhere in a sealed message never opens as
    /// anything but what was sealed. In a normal message every byte is
    /// authenticated; a first (pre-key) message also carries the keys that
    /// set a session up, which an established session does not use (a
    /// wrong one there sets up no session at all), so its content is still
    /// exactly what was sealed.
    #[test]
    fn a_flipped_bit_anywhere_in_a_sealed_message_never_opens_as_something_else() {
        let key = PickleKey::generate().unwrap();
        let (_alice, mut to_bob, _bob, mut to_alice) = pair();
        // Still a pre-key message: Bob has not answered yet.
        let first = chat("transfer 10 to carol");
        let payload = to_bob.seal(&first).unwrap();
        assert_eq!(payload[0], 0, "a pre-key message");
        let saved = to_alice.to_encrypted_pickle(&key);
        let mut refused = 0;
        for at in 0..payload.len() {
            for bit in [0x01, 0x80] {
                let mut damaged = payload.clone();
                damaged[at] ^= bit;
                let mut receiver = PeerSession::from_encrypted_pickle(&saved, &key).unwrap();
                match receiver.open(&damaged) {
                    Err(_) => refused += 1,
                    Ok(opened) => assert_eq!(opened, numbered(first.clone(), 2), "byte {at}"),
                }
            }
        }
        assert!(
            refused > payload.len(),
            "{refused} of {} refused",
            2 * payload.len()
        );
        assert_eq!(to_alice.open(&payload).unwrap(), numbered(first, 2));
        // Once Bob answers, Alice's messages are normal ones: every bit counts.
        let _ = to_bob.open(&to_alice.seal(&chat("ok")).unwrap()).unwrap();
        let second = chat("transfer 20 to carol");
        let payload = to_bob.seal(&second).unwrap();
        assert_eq!(payload[0], 1, "a normal message");
        for at in 0..payload.len() {
            for bit in [0x01, 0x80] {
                let mut damaged = payload.clone();
                damaged[at] ^= bit;
                assert!(
                    to_alice.open(&damaged).is_err(),
                    "byte {at} of {} flipped ({bit:#x}) still opened",
                    payload.len()
                );
            }
        }
        assert_eq!(to_alice.open(&payload).unwrap(), numbered(second, 3));
    }

    #[test]
    fn a_replayed_payload_does_not_decrypt_twice() {
        let (_alice, mut to_bob, _bob, mut to_alice) = pair();
        let _ = to_alice.open(&to_bob.seal(&chat("warm up")).unwrap());
        let payload = to_alice.seal(&chat("once")).unwrap();
        assert!(to_bob.open(&payload).is_ok());
        assert!(to_bob.open(&payload).is_err());
    }

    #[test]
    fn sessions_survive_an_encrypted_pickle_round_trip() {
        let (_alice, to_bob, _bob, mut to_alice) = pair();
        let key = PickleKey::generate().unwrap();
        let pickle = to_bob.to_encrypted_pickle(&key);
        let mut restored = PeerSession::from_encrypted_pickle(&pickle, &key).unwrap();
        let message = chat("after restore");
        assert_eq!(
            to_alice.open(&restored.seal(&message).unwrap()).unwrap(),
            numbered(message, 2)
        );
        assert!(
            PeerSession::from_encrypted_pickle(&pickle, &PickleKey::generate().unwrap()).is_err()
        );
    }

    #[test]
    fn garbage_payloads_are_refused_not_panicked_on() {
        let (_alice, _to_bob, _bob, mut to_alice) = pair();
        for payload in [&[][..], &[0][..], &[1, 2, 3][..], &[9; 100][..]] {
            assert!(to_alice.open(payload).is_err());
            assert_eq!(prekey_one_time_key(payload), None);
        }
    }
}
