//! Identities: a named vodozemac Olm account (an Ed25519 signing key and a
//! Curve25519 key). Its address is the Ed25519 public key.
//!
//! Secret state never leaves this module in the clear: it is persisted only as
//! a vodozemac pickle encrypted with a [`PickleKey`], and `Debug` shows the
//! name and a short key id, nothing secret.

use std::fmt;

use agentwire_wire::{PublicKey, Signature};
use vodozemac::olm::{Account, AccountPickle};
use zeroize::Zeroizing;

use crate::names::Name;

/// The key that encrypts pickled secret state at rest. Zeroized on drop;
/// `Debug` prints nothing of it.
pub struct PickleKey(Zeroizing<[u8; 32]>);

impl PickleKey {
    /// A fresh random key.
    pub fn generate() -> Result<PickleKey, getrandom::Error> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())?;
        Ok(PickleKey(bytes))
    }

    /// Wraps key bytes (e.g. read from the home's key file).
    pub fn from_bytes(bytes: [u8; 32]) -> PickleKey {
        PickleKey(Zeroizing::new(bytes))
    }

    /// The key bytes, for writing to a private file.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for PickleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PickleKey(<redacted>)")
    }
}

/// Why an identity could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The pickle does not decrypt with this key or is corrupt.
    #[error("cannot decrypt the identity {name}: {reason} (wrong key file, or a damaged store)")]
    Unpickle {
        /// The identity's name.
        name: String,
        /// What vodozemac reported.
        reason: String,
    },
}

/// A named identity.
pub struct Identity {
    name: Name,
    account: Account,
}

impl Identity {
    /// A new identity with fresh keys.
    pub fn generate(name: Name) -> Identity {
        Identity {
            name,
            account: Account::new(),
        }
    }

    /// Its name in this home.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Its address: the Ed25519 public key.
    pub fn address(&self) -> PublicKey {
        PublicKey::from_bytes(*self.account.ed25519_key().as_bytes())
    }

    /// Its Curve25519 identity key (for Olm sessions).
    pub fn curve25519(&self) -> [u8; 32] {
        self.account.curve25519_key().to_bytes()
    }

    /// An Ed25519 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature::from_bytes(self.account.sign(message).to_bytes())
    }

    /// The underlying account, for session set-up within this crate.
    pub(crate) fn account_mut(&mut self) -> &mut Account {
        &mut self.account
    }

    pub(crate) fn account(&self) -> &Account {
        &self.account
    }

    /// The secret state, encrypted with `key`, for storage.
    pub fn to_encrypted_pickle(&self, key: &PickleKey) -> String {
        self.account.pickle().encrypt(key.as_bytes())
    }

    /// Restores an identity from [`Identity::to_encrypted_pickle`]'s output.
    pub fn from_encrypted_pickle(
        name: Name,
        pickle: &str,
        key: &PickleKey,
    ) -> Result<Identity, IdentityError> {
        let pickle = AccountPickle::from_encrypted(pickle, key.as_bytes()).map_err(|error| {
            IdentityError::Unpickle {
                name: name.to_string(),
                reason: error.to_string(),
            }
        })?;
        Ok(Identity {
            name,
            account: Account::from_pickle(pickle),
        })
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

/// Verifies an Ed25519 signature by `signer` over `message` (strict).
pub fn verify_signature(signer: &PublicKey, message: &[u8], signature: &Signature) -> bool {
    let Ok(key) = vodozemac::Ed25519PublicKey::from_slice(signer.as_bytes()) else {
        return false;
    };
    let Ok(signature) = vodozemac::Ed25519Signature::from_slice(signature.as_bytes()) else {
        return false;
    };
    key.verify(message, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::new(text).unwrap()
    }

    #[test]
    fn an_identity_survives_an_encrypted_pickle_round_trip_and_only_with_its_key() {
        let identity = Identity::generate(name("planner"));
        let key = PickleKey::generate().unwrap();
        let pickle = identity.to_encrypted_pickle(&key);
        let restored = Identity::from_encrypted_pickle(name("planner"), &pickle, &key).unwrap();
        assert_eq!(restored.address(), identity.address());
        assert_eq!(restored.curve25519(), identity.curve25519());

        let wrong = PickleKey::generate().unwrap();
        let error = Identity::from_encrypted_pickle(name("planner"), &pickle, &wrong).unwrap_err();
        assert!(error.to_string().contains("wrong key file"), "{error}");
    }

    #[test]
    fn signatures_verify_for_their_signer_only() {
        let a = Identity::generate(name("a"));
        let b = Identity::generate(name("b"));
        let signature = a.sign(b"hello");
        assert!(verify_signature(&a.address(), b"hello", &signature));
        assert!(!verify_signature(&a.address(), b"hellO", &signature));
        assert!(!verify_signature(&b.address(), b"hello", &signature));
    }

    /// Snapshot of what `Debug` prints: a name and a short key id, nothing
    /// secret.
    #[test]
    fn debug_of_secret_types_is_redacted() {
        let key = PickleKey::from_bytes([0x42; 32]);
        assert_eq!(format!("{key:?}"), "PickleKey(<redacted>)");
        let identity = Identity::generate(name("coder"));
        let printed = format!("{identity:?}");
        let expected = format!(
            "Identity {{ name: Name(coder), address: PublicKey({}), .. }}",
            identity.address().short_id()
        );
        assert_eq!(printed, expected);
        let pickle = identity.to_encrypted_pickle(&key);
        assert!(!printed.contains(&pickle[..16]));
    }
}
