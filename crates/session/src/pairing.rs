//! Redeeming an invite: the body of the first message an acceptor sends.
//!
//! It proves knowledge of the invite's secret and binds the acceptor's
//! Ed25519 address (what the relay routes by) to the Curve25519 key of the
//! Olm session that carries it, with a signature by that Ed25519 key. The
//! inviter creates a contact only when the signature verifies, the session's
//! key matches, and the secret belongs to a valid, unused, unexpired invite.

use agentwire_wire::{PublicKey, Signature};

use crate::identity::{Identity, verify_signature};
use crate::invite::{Invite, InviteError, InviteSecret};
use crate::message::Reader;
use crate::names::Name;

/// Domain separation of the acceptor's signature.
pub const REDEEM_CONTEXT: &[u8] = b"agentwire-redeem-v1\0";

/// The redemption of an invite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redeem {
    /// The invite's secret.
    pub secret: InviteSecret,
    /// The acceptor's address.
    pub acceptor: PublicKey,
    /// The acceptor's Curve25519 identity key.
    pub acceptor_curve25519: [u8; 32],
    /// The acceptor's suggested petname.
    pub acceptor_name: Name,
    /// The acceptor's signature over all of the above and the inviter's
    /// address.
    pub signature: Signature,
}

impl Redeem {
    /// The acceptor's redemption of `invite`.
    pub fn new(invite: &Invite, acceptor: &Identity) -> Redeem {
        let mut redeem = Redeem {
            secret: invite.secret.clone(),
            acceptor: acceptor.address(),
            acceptor_curve25519: acceptor.curve25519(),
            acceptor_name: acceptor.name().clone(),
            signature: Signature::from_bytes([0; 64]),
        };
        redeem.signature = acceptor.sign(&redeem.signed_bytes(&invite.inviter));
        redeem
    }

    fn signed_bytes(&self, inviter: &PublicKey) -> Vec<u8> {
        let mut out = REDEEM_CONTEXT.to_vec();
        out.extend_from_slice(inviter.as_bytes());
        out.extend_from_slice(self.secret.as_bytes());
        out.extend_from_slice(self.acceptor.as_bytes());
        out.extend_from_slice(&self.acceptor_curve25519);
        out.extend_from_slice(self.acceptor_name.as_str().as_bytes());
        out
    }

    /// Whether the acceptor signed this for `inviter`, and the Olm session
    /// that carried it belongs to the same acceptor.
    pub fn verify(&self, inviter: &PublicKey, session_curve25519: &[u8; 32]) -> bool {
        self.acceptor_curve25519 == *session_curve25519
            && verify_signature(&self.acceptor, &self.signed_bytes(inviter), &self.signature)
    }

    /// The message body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 * 3 + 64 + 65);
        out.extend_from_slice(self.secret.as_bytes());
        out.extend_from_slice(self.acceptor.as_bytes());
        out.extend_from_slice(&self.acceptor_curve25519);
        let name = self.acceptor_name.as_str().as_bytes();
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(self.signature.as_bytes());
        out
    }

    /// Parses a message body.
    pub fn decode(bytes: &[u8]) -> Result<Redeem, InviteError> {
        let malformed = || InviteError::Malformed("the redemption message is damaged".into());
        let mut r = Reader::new(bytes);
        let secret = InviteSecret::from_bytes(r.array().ok_or_else(malformed)?);
        let acceptor = PublicKey::from_bytes(r.array().ok_or_else(malformed)?);
        let acceptor_curve25519 = r.array().ok_or_else(malformed)?;
        let name_len = usize::from(r.u8().ok_or_else(malformed)?);
        let name = std::str::from_utf8(r.take(name_len).ok_or_else(malformed)?)
            .map_err(|_| malformed())?;
        let acceptor_name = Name::new(name).map_err(|_| malformed())?;
        let signature = Signature::from_bytes(r.array().ok_or_else(malformed)?);
        if r.remaining() != 0 {
            return Err(malformed());
        }
        Ok(Redeem {
            secret,
            acceptor,
            acceptor_curve25519,
            acceptor_name,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invite::{Permissions, SignedInvite};
    use crate::message::{Kind, MessageId, Plaintext};
    use crate::session::{prekey_identity_key, prekey_one_time_key};

    fn identity(name: &str) -> Identity {
        Identity::generate(Name::new(name).unwrap())
    }

    /// The whole pairing, as the two daemons run it.
    #[test]
    fn an_invite_is_redeemed_over_a_fresh_session() {
        let mut alice = identity("alice");
        let bob = identity("bob");
        let otk = alice.new_one_time_key().unwrap();
        let invite = SignedInvite::sign(
            Invite {
                inviter: alice.address(),
                inviter_curve25519: alice.curve25519(),
                one_time_key: otk,
                secret: InviteSecret::generate().unwrap(),
                expires_at_ms: u64::MAX,
                permissions: Permissions::DEFAULT,
                relay_url: "ws://127.0.0.1:7878/v1/ws".into(),
                relay_id: agentwire_wire::RelayId::from_bytes([1; 16]),
                inviter_name: alice.name().clone(),
            },
            &alice,
        );

        // Bob accepts: parse, open a session to the invite's keys, redeem.
        let parsed = SignedInvite::parse(&invite.to_token()).unwrap();
        let mut bob_to_alice = bob
            .open_session(parsed.invite.inviter_curve25519, parsed.invite.one_time_key)
            .unwrap();
        let redeem = Redeem::new(&parsed.invite, &bob);
        let payload = bob_to_alice
            .seal(&Plaintext {
                id: MessageId::new_v7(),
                kind: Kind::Redeem,
                priority: crate::message::Priority::Normal,
                sent_at_ms: 0,
                reply_to: None,
                thread: None,
                chain: None,
                seq: None,
                body: redeem.encode(),
            })
            .unwrap();

        // Alice finds the invite by its one-time key, then opens the message.
        assert_eq!(prekey_one_time_key(&payload), Some(otk));
        let their_curve = prekey_identity_key(&payload).unwrap();
        let (_session, first) = alice.accept_session(their_curve, &payload).unwrap();
        assert_eq!(first.kind, Kind::Redeem);
        let received = Redeem::decode(&first.body).unwrap();
        assert_eq!(received, redeem);
        assert_eq!(received.secret, invite.invite.secret);
        assert!(received.verify(&alice.address(), &their_curve));
        assert_eq!(received.acceptor, bob.address());

        // Bound to this inviter and this session key.
        assert!(!received.verify(&identity("mallory").address(), &their_curve));
        assert!(!received.verify(&alice.address(), &[9; 32]));
        let mut tampered = received.clone();
        tampered.acceptor_name = Name::new("boss").unwrap();
        assert!(!tampered.verify(&alice.address(), &their_curve));
    }

    #[test]
    fn damaged_redemptions_are_refused() {
        let alice = identity("alice");
        let bob = identity("bob");
        let invite = Invite {
            inviter: alice.address(),
            inviter_curve25519: alice.curve25519(),
            one_time_key: [1; 32],
            secret: InviteSecret::generate().unwrap(),
            expires_at_ms: 0,
            permissions: Permissions::DEFAULT,
            relay_url: "ws://x".into(),
            relay_id: agentwire_wire::RelayId::from_bytes([1; 16]),
            inviter_name: alice.name().clone(),
        };
        let bytes = Redeem::new(&invite, &bob).encode();
        for len in 0..bytes.len() {
            assert!(Redeem::decode(&bytes[..len]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Redeem::decode(&longer).is_err());
    }
}
