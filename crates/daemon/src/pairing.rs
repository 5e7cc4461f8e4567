//! The inviter's answer to a redemption: a small notice signed by the
//! inviter, sent as an envelope payload that cannot be mistaken for an Olm
//! message (its first byte is [`NOTICE_TAG`]; Olm payloads start with 0 or 1).
//!
//! It is signed rather than encrypted because an invite that was already used
//! cannot open a new session (its one-time key is gone), yet the second
//! acceptor deserves a precise answer. Layout: `tag:u8 status:u8
//! one_time_key:[32] signature:[64]`, the signature by the inviter over
//! [`NOTICE_CONTEXT`] `|| one_time_key || acceptor || status`.

use agentwire_session::{Identity, verify_signature};
use agentwire_wire::{PublicKey, Signature};

/// First byte of a pairing notice.
pub(crate) const NOTICE_TAG: u8 = 0xf0;
/// Domain separation of the inviter's signature.
pub(crate) const NOTICE_CONTEXT: &[u8] = b"agentwire-pairing-v1\0";

/// The inviter's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The contact exists on both sides now.
    Accepted,
    /// The invite was already redeemed by someone else.
    Spent,
    /// The invite had expired when the redemption arrived.
    Expired,
    /// The acceptor already is the inviter's contact.
    AlreadyContact,
}

impl Answer {
    fn to_u8(self) -> u8 {
        match self {
            Answer::Accepted => 0,
            Answer::Spent => 1,
            Answer::Expired => 2,
            Answer::AlreadyContact => 3,
        }
    }

    fn from_u8(byte: u8) -> Option<Answer> {
        match byte {
            0 => Some(Answer::Accepted),
            1 => Some(Answer::Spent),
            2 => Some(Answer::Expired),
            3 => Some(Answer::AlreadyContact),
            _ => None,
        }
    }
}

fn signed_bytes(one_time_key: &[u8; 32], acceptor: &PublicKey, status: u8) -> Vec<u8> {
    let mut out = NOTICE_CONTEXT.to_vec();
    out.extend_from_slice(one_time_key);
    out.extend_from_slice(acceptor.as_bytes());
    out.push(status);
    out
}

/// The inviter's notice to `acceptor` about the invite with `one_time_key`.
pub(crate) fn notice(
    inviter: &Identity,
    one_time_key: &[u8; 32],
    acceptor: &PublicKey,
    answer: Answer,
) -> Vec<u8> {
    let status = answer.to_u8();
    let signature = inviter.sign(&signed_bytes(one_time_key, acceptor, status));
    let mut out = Vec::with_capacity(2 + 32 + 64);
    out.push(NOTICE_TAG);
    out.push(status);
    out.extend_from_slice(one_time_key);
    out.extend_from_slice(signature.as_bytes());
    out
}

/// Reads a notice for `acceptor`, checking it is signed by `inviter` about
/// the invite with `one_time_key`.
pub(crate) fn read_notice(
    payload: &[u8],
    inviter: &PublicKey,
    acceptor: &PublicKey,
    one_time_key: &[u8; 32],
) -> Option<Answer> {
    if payload.len() != 2 + 32 + 64 || payload[0] != NOTICE_TAG {
        return None;
    }
    let status = payload[1];
    let key: [u8; 32] = payload[2..34].try_into().ok()?;
    let signature = Signature::from_bytes(payload[34..].try_into().ok()?);
    if key != *one_time_key
        || !verify_signature(inviter, &signed_bytes(&key, acceptor, status), &signature)
    {
        return None;
    }
    Answer::from_u8(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentwire_session::Name;

    #[test]
    fn notices_verify_only_for_their_inviter_acceptor_and_invite() {
        let inviter = Identity::generate(Name::new("alice").unwrap());
        let acceptor = PublicKey::from_bytes([2; 32]);
        let otk = [3; 32];
        let payload = notice(&inviter, &otk, &acceptor, Answer::Spent);
        assert_eq!(
            read_notice(&payload, &inviter.address(), &acceptor, &otk),
            Some(Answer::Spent)
        );
        assert_eq!(
            read_notice(&payload, &PublicKey::from_bytes([9; 32]), &acceptor, &otk),
            None
        );
        assert_eq!(
            read_notice(
                &payload,
                &inviter.address(),
                &PublicKey::from_bytes([8; 32]),
                &otk
            ),
            None
        );
        assert_eq!(
            read_notice(&payload, &inviter.address(), &acceptor, &[4; 32]),
            None
        );
        let mut forged = payload.clone();
        forged[1] = 0;
        assert_eq!(
            read_notice(&forged, &inviter.address(), &acceptor, &otk),
            None
        );
    }
}
