//! An identity's card: what it tells its contacts about itself (a display
//! name, a description, free capability tags such as `code-review`, and
//! whether it takes tasks). It travels inside the encryption as the body of
//! a `card` message, sent to every contact when it changes and to a new
//! contact when it pairs.
//!
//! Layout: `version:u8 flags:u8 name_len:u8 name desc_len:u16be desc
//! count:u8 (tag_len:u8 tag)*`; flags bit 0: takes tasks. Every string is
//! UTF-8 and checked by [`Card::check`] on both sides.

use crate::message::{MessageError, Reader};

/// Version byte of the layout.
pub const CARD_VERSION: u8 = 1;
/// Longest display name, in bytes.
pub const MAX_CARD_NAME: usize = 64;
/// Longest description, in bytes.
pub const MAX_CARD_DESCRIPTION: usize = 1024;
/// Most capability tags.
pub const MAX_CAPABILITIES: usize = 32;
/// Longest capability tag, in bytes.
pub const MAX_CAPABILITY_LEN: usize = 48;

const FLAG_TAKES_TASKS: u8 = 0b1;

/// An identity's card.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Card {
    /// How it presents itself (free text, one line).
    pub name: String,
    /// What it does (free text).
    pub description: String,
    /// Capability tags: 1 to 48 of `a-z`, `0-9`, `-`, `_`, `.`, `+`,
    /// starting with a letter or digit; lowercase, no duplicates.
    pub capabilities: Vec<String>,
    /// Whether it takes tasks.
    pub takes_tasks: bool,
}

impl Card {
    /// Why the card cannot be used, if it cannot: the first field out of
    /// bounds, said so that its author can fix it.
    pub fn check(&self) -> Result<(), String> {
        if self.name.len() > MAX_CARD_NAME {
            return Err(format!(
                "the card's name is {} bytes; at most {MAX_CARD_NAME}",
                self.name.len()
            ));
        }
        if self.name.chars().any(char::is_control) {
            return Err("the card's name is one line of text, without control characters".into());
        }
        if self.description.len() > MAX_CARD_DESCRIPTION {
            return Err(format!(
                "the card's description is {} bytes; at most {MAX_CARD_DESCRIPTION}",
                self.description.len()
            ));
        }
        if self
            .description
            .chars()
            .any(|c| c.is_control() && c != '\n')
        {
            return Err("the card's description has control characters".into());
        }
        if self.capabilities.len() > MAX_CAPABILITIES {
            return Err(format!(
                "{} capabilities; at most {MAX_CAPABILITIES}",
                self.capabilities.len()
            ));
        }
        for (i, tag) in self.capabilities.iter().enumerate() {
            check_capability(tag)?;
            if self.capabilities[..i].contains(tag) {
                return Err(format!("capability {tag:?} is given twice"));
            }
        }
        Ok(())
    }

    /// The body bytes (the card must pass [`Card::check`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.name.len() + self.description.len());
        out.push(CARD_VERSION);
        out.push(if self.takes_tasks {
            FLAG_TAKES_TASKS
        } else {
            0
        });
        out.push(self.name.len().min(MAX_CARD_NAME) as u8);
        out.extend_from_slice(&self.name.as_bytes()[..self.name.len().min(MAX_CARD_NAME)]);
        let description =
            &self.description.as_bytes()[..self.description.len().min(MAX_CARD_DESCRIPTION)];
        out.extend_from_slice(&(description.len() as u16).to_be_bytes());
        out.extend_from_slice(description);
        let tags = &self.capabilities[..self.capabilities.len().min(MAX_CAPABILITIES)];
        out.push(tags.len() as u8);
        for tag in tags {
            let tag = &tag.as_bytes()[..tag.len().min(MAX_CAPABILITY_LEN)];
            out.push(tag.len() as u8);
            out.extend_from_slice(tag);
        }
        out
    }

    /// Parses and checks a body.
    pub fn decode(bytes: &[u8]) -> Result<Card, MessageError> {
        let short = MessageError::Malformed("card cut short");
        let mut r = Reader::new(bytes);
        if r.u8().ok_or(short.clone())? != CARD_VERSION {
            return Err(MessageError::Malformed("unknown card version"));
        }
        let flags = r.u8().ok_or(short.clone())?;
        if flags & !FLAG_TAKES_TASKS != 0 {
            return Err(MessageError::Malformed("unknown card flags"));
        }
        let text = |bytes: &[u8]| {
            std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|_| MessageError::Malformed("card text is not UTF-8"))
        };
        let name_len = usize::from(r.u8().ok_or(short.clone())?);
        let name = text(r.take(name_len).ok_or(short.clone())?)?;
        let description_len = usize::from(u16::from_be_bytes(r.array().ok_or(short.clone())?));
        let description = text(r.take(description_len).ok_or(short.clone())?)?;
        let count = usize::from(r.u8().ok_or(short.clone())?);
        let mut capabilities = Vec::with_capacity(count.min(MAX_CAPABILITIES));
        for _ in 0..count {
            let len = usize::from(r.u8().ok_or(short.clone())?);
            capabilities.push(text(r.take(len).ok_or(short.clone())?)?);
        }
        if !r.rest().is_empty() {
            return Err(MessageError::Malformed("bytes after the card"));
        }
        let card = Card {
            name,
            description,
            capabilities,
            takes_tasks: flags & FLAG_TAKES_TASKS != 0,
        };
        card.check()
            .map_err(|_| MessageError::Malformed("a card field is out of bounds"))?;
        Ok(card)
    }
}

/// Why `tag` is not a capability tag, if it is not.
pub fn check_capability(tag: &str) -> Result<(), String> {
    let valid = !tag.is_empty()
        && tag.len() <= MAX_CAPABILITY_LEN
        && tag.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && tag.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.' | '+')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "capability {tag:?}: use 1 to {MAX_CAPABILITY_LEN} of a-z, 0-9, '-', '_', '.', '+', starting with a letter or digit (e.g. code-review, python3)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Card {
        Card {
            name: "Reviewer é".into(),
            description: "Reviews Rust diffs.\nFast.".into(),
            capabilities: vec!["code-review".into(), "rust".into()],
            takes_tasks: true,
        }
    }

    #[test]
    fn cards_round_trip_and_bad_ones_are_refused_with_the_reason() {
        let card = sample();
        assert_eq!(Card::decode(&card.encode()), Ok(card.clone()));
        assert_eq!(Card::decode(&Card::default().encode()), Ok(Card::default()));
        for (bad, why) in [
            (
                Card {
                    capabilities: vec!["Code Review".into()],
                    ..sample()
                },
                "capability",
            ),
            (
                Card {
                    capabilities: vec!["rust".into(), "rust".into()],
                    ..sample()
                },
                "twice",
            ),
            (
                Card {
                    name: "x".repeat(65),
                    ..sample()
                },
                "at most 64",
            ),
            (
                Card {
                    name: "two\nlines".into(),
                    ..sample()
                },
                "one line",
            ),
        ] {
            let error = bad.check().unwrap_err();
            assert!(error.contains(why), "{error}");
            if why != "at most 64" {
                assert!(Card::decode(&bad.encode()).is_err(), "{why}");
            }
        }
        let mut trailing = card.encode();
        trailing.push(0);
        assert!(Card::decode(&trailing).is_err());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Card::decode(&bytes);
        }
    }
}
