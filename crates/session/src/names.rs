//! Names of identities and petnames of contacts: validated once, at the
//! edge, so that no other code ever sees an unchecked name. A [`Name`] is safe
//! to show in a terminal and to use as one path component.

use std::fmt;

/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A validated name: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `-`, `_` and
/// `.`, starting with a letter or digit. Hence never empty, never `.` or `..`,
/// never containing `/`, whitespace or control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

/// Why a string is not a valid name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty.
    #[error("a name cannot be empty")]
    Empty,
    /// Too long.
    #[error("name is {len} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A character outside the allowed set.
    #[error(
        "name contains {found}; use only letters, digits, '-', '_' and '.' (e.g. planner, coder-2)"
    )]
    BadCharacter {
        /// A printable description of the offending character.
        found: String,
    },
    /// Starts with `.`, `-` or `_`.
    #[error("a name must start with a letter or digit")]
    BadStart,
}

impl Name {
    /// Validates `text` as a name.
    pub fn new(text: &str) -> Result<Name, NameError> {
        if text.is_empty() {
            return Err(NameError::Empty);
        }
        if text.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong { len: text.len() });
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            let found = match bad {
                '/' => "'/'".to_owned(),
                c if c.is_control() => format!("a control character (U+{:04X})", u32::from(c)),
                c if c.is_whitespace() => "whitespace".to_owned(),
                c => format!("{c:?}"),
            };
            return Err(NameError::BadCharacter { found });
        }
        if !text.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(NameError::BadStart);
        }
        Ok(Name(text.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the name could be read as the start of a key (four or more
    /// hex digits and nothing else). Peers are named by petname or by the
    /// start of their key, so a petname like this could stand for another
    /// contact's key: such names are refused as petnames.
    pub fn looks_like_key(&self) -> bool {
        self.0.len() >= 4 && self.0.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({})", self.0)
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;

    fn from_str(text: &str) -> Result<Name, NameError> {
        Name::new(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_be_keys_are_told_apart() {
        for key_like in ["dead", "DEADBEEF", "0123", "a1b2c3d4e5f6"] {
            assert!(Name::new(key_like).unwrap().looks_like_key(), "{key_like}");
        }
        for name in ["bob", "abc", "dead-beef", "cafe.1", "coder-2", "face_"] {
            assert!(!Name::new(name).unwrap().looks_like_key(), "{name}");
        }
    }

    fn check(input: &str, expected: Result<(), NameError>) {
        assert_eq!(Name::new(input).map(|_| ()), expected, "{input:?}");
    }

    #[test]
    fn names_that_could_escape_a_directory_or_a_terminal_are_refused() {
        check("planner", Ok(()));
        check("coder-2.v1_x", Ok(()));
        check("7", Ok(()));
        check("", Err(NameError::Empty));
        check("..", Err(NameError::BadStart));
        check(".hidden", Err(NameError::BadStart));
        check("-rf", Err(NameError::BadStart));
        check(
            "../x",
            Err(NameError::BadCharacter {
                found: "'/'".into(),
            }),
        );
        check(
            "a/b",
            Err(NameError::BadCharacter {
                found: "'/'".into(),
            }),
        );
        check(
            "a\u{1b}[31m",
            Err(NameError::BadCharacter {
                found: "a control character (U+001B)".into(),
            }),
        );
        check(
            "two words",
            Err(NameError::BadCharacter {
                found: "whitespace".into(),
            }),
        );
        check(
            "caf\u{e9}",
            Err(NameError::BadCharacter {
                found: "'\u{e9}'".into(),
            }),
        );
        check(&"x".repeat(300), Err(NameError::TooLong { len: 300 }));
        check(&"x".repeat(MAX_NAME_LEN), Ok(()));
    }

    #[test]
    fn errors_say_what_to_do() {
        let message = Name::new("a/b").unwrap_err().to_string();
        assert!(message.contains("use only letters"), "{message}");
    }
}
