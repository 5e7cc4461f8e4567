//! The identities of a home and the names in requests: which identity a
//! request is for, which contact a petname or key prefix means, and the
//! checks of names and message ids.

use std::sync::{Arc, Mutex as StdMutex};

use agentwire_session::{Identity, MessageId, Name};

use crate::api::{ApiError, ErrorCode};
use crate::store::Contact;

/// The identities of the home, in creation order (the first is the default).
pub(crate) struct Identities(pub(crate) Vec<(Name, Arc<StdMutex<Identity>>)>);

impl Identities {
    pub(crate) fn identity(&self, name: &Name) -> Option<Arc<StdMutex<Identity>>> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, i)| i.clone())
    }

    /// The identity named, or the default one.
    pub(crate) fn pick(
        &self,
        name: Option<&str>,
    ) -> Result<(Name, Arc<StdMutex<Identity>>), ApiError> {
        match name {
            None => self.0.first().cloned().ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotInitialized,
                    "no identity in this home yet; run `agentwire init`",
                )
            }),
            Some(name) => {
                let name = parse_name(name)?;
                self.identity(&name).map(|i| (name.clone(), i)).ok_or_else(|| {
                    let known: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
                    ApiError::new(
                        ErrorCode::UnknownIdentity,
                        format!("no identity named {name} in this home (have: {}); create it with `agentwire init --name {name}`", known.join(", ")),
                    )
                })
            }
        }
    }

    /// `agent`, or `agent-2`, `agent-3`, … when taken.
    pub(crate) fn free_name(&self) -> Result<Name, ApiError> {
        let taken = |candidate: &str| self.0.iter().any(|(n, _)| n.as_str() == candidate);
        let mut candidate = "agent".to_owned();
        let mut n = 2;
        while taken(&candidate) {
            candidate = format!("agent-{n}");
            n += 1;
        }
        parse_name(&candidate)
    }
}

/// The contact named `peer`, or whose key starts with it (hex), among
/// `contacts`.
pub(crate) fn resolve_peer(contacts: &[Contact], peer: &str) -> Result<Contact, ApiError> {
    let prefix = peer.to_ascii_lowercase();
    let by_key: Vec<&Contact> =
        if prefix.len() >= 4 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            contacts
                .iter()
                .filter(|c| c.address.to_hex().starts_with(&prefix))
                .collect()
        } else {
            Vec::new()
        };
    if let Some(contact) = contacts.iter().find(|c| c.petname.as_str() == peer) {
        // A name that looks like another contact's key must not capture
        // messages meant for that key.
        if by_key.iter().any(|c| c.address != contact.address) {
            return Err(ApiError::new(
                ErrorCode::AmbiguousPeer,
                format!(
                    "{peer:?} is both a contact's name and the start of another contact's key; use more of the key, or rename the contact"
                ),
            ));
        }
        return Ok(contact.clone());
    }
    match by_key.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::new(
            ErrorCode::UnknownPeer,
            format!(
                "no contact named {peer:?} (or with a key starting so); see `agentwire contacts`"
            ),
        )),
        many => Err(ApiError::new(
            ErrorCode::AmbiguousPeer,
            format!(
                "{peer:?} matches {} contacts ({}); give more of the key or the petname",
                many.len(),
                many.iter()
                    .map(|c| c.petname.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// A name from a request.
pub(crate) fn parse_name(text: &str) -> Result<Name, ApiError> {
    Name::new(text)
        .map_err(|e| ApiError::new(ErrorCode::BadName, format!("invalid name {text:?}: {e}")))
}

/// A petname from a request: a valid name that does not look like a key
/// (peers are named by petname or by the start of their key, so such a
/// name could stand for another contact's key).
pub(crate) fn parse_petname(text: &str) -> Result<Name, ApiError> {
    let name = parse_name(text)?;
    if name.looks_like_key() {
        return Err(ApiError::new(
            ErrorCode::BadName,
            format!(
                "{text:?} looks like the start of a key (hex digits only); give a petname with a letter from g to z or a '-', e.g. {text}-bot"
            ),
        ));
    }
    Ok(name)
}

/// The petname to offer for a name the other side suggested: the name
/// itself, or `contact` when it looks like a key.
pub(crate) fn petname_hint(suggested: &Name) -> Name {
    if suggested.looks_like_key() {
        Name::new("contact").unwrap_or_else(|_| suggested.clone())
    } else {
        suggested.clone()
    }
}

/// Permissions from a request's list (`chat`, `task`, `file`, `all`,
/// `none`); `None` is everything.
pub(crate) fn parse_permissions(
    list: Option<&[String]>,
) -> Result<agentwire_session::Permissions, ApiError> {
    match list {
        None => Ok(agentwire_session::Permissions::DEFAULT),
        Some(words) => agentwire_session::Permissions::parse_list(words.iter().map(String::as_str))
            .map_err(ApiError::invalid),
    }
}

/// A message id from a request; `field` names it in the error.
pub(crate) fn parse_message_id(field: &str, text: &str) -> Result<MessageId, ApiError> {
    MessageId::parse(text).ok_or_else(|| {
        ApiError::invalid(format!(
            "{field} {text:?} is not a message id (a UUID as printed by send and recv)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentwire_api::{ContactState, Via};
    use agentwire_wire::PublicKey;

    fn contact(petname: &str, key: u8) -> Contact {
        Contact {
            address: PublicKey::from_bytes([key; 32]),
            curve25519: [key; 32],
            petname: Name::new(petname).unwrap(),
            via: Via::Invited,
            state: ContactState::Active,
            invite_key: None,
            permissions: agentwire_session::Permissions::DEFAULT,
            created_at_ms: 0,
        }
    }

    /// A petname that is the start of another contact's key (one stored
    /// before such names were refused) is ambiguous, never captures it.
    #[test]
    fn a_name_that_is_another_contacts_key_prefix_is_ambiguous() {
        let contacts = [contact("abab", 0x11), contact("c", 0xab)];
        let error = resolve_peer(&contacts, "abab").unwrap_err();
        assert_eq!(error.code, ErrorCode::AmbiguousPeer);
        assert!(error.message.contains("both a contact's name"), "{error:?}");
        assert_eq!(
            resolve_peer(&contacts, "ababab").unwrap().petname.as_str(),
            "c"
        );
        assert_eq!(resolve_peer(&contacts, "c").unwrap().petname.as_str(), "c");
        assert_eq!(parse_petname("abab").unwrap_err().code, ErrorCode::BadName);
        assert_eq!(
            petname_hint(&Name::new("abab").unwrap()).as_str(),
            "contact"
        );
        assert_eq!(petname_hint(&Name::new("bob").unwrap()).as_str(), "bob");
    }
}
