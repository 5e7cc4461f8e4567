//! The end-to-end layer of agentwire: identities, names, invites, Olm
//! sessions and the plaintext message format that travels inside the
//! encryption.
//!
//! Olm sessions are vodozemac's (Olm version 1, the Matrix default). The flow:
//! an inviter makes a one-time key and a [`SignedInvite`]; the acceptor opens a
//! [`PeerSession`] to the invite's keys and seals a [`Redeem`] as its first
//! message; the inviter finds the invite by the one-time key the pre-key
//! message used, accepts the session, and verifies the redemption.
//!
//! Nothing here does IO. The daemon persists what this crate hands it
//! (encrypted pickles, invite records) and moves the ciphertext over the
//! relay; the relay never links this crate, so it has nothing to decrypt with.

pub mod card;
pub mod file;
pub mod identity;
pub mod invite;
pub mod message;
pub mod names;
pub mod pairing;
pub mod session;
pub mod task;

pub use card::Card;
pub use identity::{Identity, IdentityError, PickleKey, verify_signature};
pub use invite::{Invite, InviteError, InviteSecret, Permissions, SignedInvite};
pub use message::{
    Chain, Kind, MessageError, MessageId, Plaintext, Priority, Receipt, ReceiptState,
};
pub use names::{Name, NameError};
pub use pairing::Redeem;
pub use session::{PeerSession, SessionError, prekey_identity_key, prekey_one_time_key};
pub use task::{MAX_CHUNK_BYTES, TaskChunk, TaskState, TaskStatus};
