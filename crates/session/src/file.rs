//! Files, sent as numbered parts and then an offer that names them.
//!
//! A file travels as `file_part` messages (kind 23), each carrying up to
//! [`PART_BYTES`] of it at its place, followed by one `file` message (kind 5)
//! whose body is a [`FileOffer`]: the file's id, name, size and SHA-256. The
//! session delivers them in order, so when the offer arrives every part is
//! there (or was lost, which the recipient reports). The recipient checks
//! the size and hash before it keeps the file.
//!
//! Layouts: part `file_id:[16] index:u32be data`; offer `file_id:[16]
//! size:u64be sha256:[32] name_len:u16be name` (UTF-8, at most
//! [`MAX_FILE_NAME`] bytes, as the sender named it: the recipient makes it
//! safe before use).

use crate::message::{MessageError, Reader};

/// Bytes of a file in one part (the last may hold fewer).
pub const PART_BYTES: usize = 120 * 1024;
/// Longest file name in an offer, in bytes.
pub const MAX_FILE_NAME: usize = 255;
/// The largest file any daemon accepts, whatever its settings (1 GiB).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Parts a file of `size` bytes takes.
pub fn parts_for(size: u64) -> u64 {
    size.div_ceil(PART_BYTES as u64)
}

/// The body of a `file` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileOffer {
    /// Names the file's parts.
    pub file_id: [u8; 16],
    /// Its length in bytes.
    pub size: u64,
    /// SHA-256 of its bytes.
    pub sha256: [u8; 32],
    /// Its name as the sender gave it (untrusted).
    pub name: String,
}

impl FileOffer {
    /// The body bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut end = self.name.len().min(MAX_FILE_NAME);
        while !self.name.is_char_boundary(end) {
            end -= 1;
        }
        let mut out = Vec::with_capacity(16 + 8 + 32 + 2 + end);
        out.extend_from_slice(&self.file_id);
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.sha256);
        out.extend_from_slice(&(end as u16).to_be_bytes());
        out.extend_from_slice(&self.name.as_bytes()[..end]);
        out
    }

    /// Parses a body.
    pub fn decode(bytes: &[u8]) -> Result<FileOffer, MessageError> {
        let short = MessageError::Malformed("file offer cut short");
        let mut r = Reader::new(bytes);
        let file_id = r.array().ok_or(short.clone())?;
        let size = u64::from_be_bytes(r.array().ok_or(short.clone())?);
        let sha256 = r.array().ok_or(short.clone())?;
        let len = usize::from(u16::from_be_bytes(r.array().ok_or(short.clone())?));
        if len > MAX_FILE_NAME {
            return Err(MessageError::Malformed("file name too long"));
        }
        let name = std::str::from_utf8(r.take(len).ok_or(short)?)
            .map_err(|_| MessageError::Malformed("file name is not UTF-8"))?
            .to_owned();
        if !r.rest().is_empty() {
            return Err(MessageError::Malformed("bytes after the file offer"));
        }
        Ok(FileOffer {
            file_id,
            size,
            sha256,
            name,
        })
    }
}

/// The body of a `file_part` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePart {
    /// The file it belongs to.
    pub file_id: [u8; 16],
    /// Its place: bytes `index * PART_BYTES ..`.
    pub index: u32,
    /// The bytes (1 to [`PART_BYTES`]).
    pub data: Vec<u8>,
}

impl FilePart {
    /// The body bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.data.len());
        out.extend_from_slice(&self.file_id);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.data);
        out
    }

    /// Parses a body.
    pub fn decode(bytes: &[u8]) -> Result<FilePart, MessageError> {
        let short = MessageError::Malformed("file part cut short");
        let mut r = Reader::new(bytes);
        let file_id = r.array().ok_or(short.clone())?;
        let index = u32::from_be_bytes(r.array().ok_or(short)?);
        let data = r.rest().to_vec();
        if data.is_empty() || data.len() > PART_BYTES {
            return Err(MessageError::Malformed("file part size out of bounds"));
        }
        Ok(FilePart {
            file_id,
            index,
            data,
        })
    }
}

/// A name that is safe to create in a directory of received files, from the
/// name a sender gave: its last path component only, letters, digits and
/// `. _ - + ( ) ,` and spaces kept (anything else becomes `_`), no leading
/// dot or dash, no name that a system reserves (`con`, `nul`, `com1`, …), at
/// most 100 bytes, never empty.
pub fn safe_file_name(given: &str) -> String {
    let last = given
        .rsplit(['/', '\\'])
        .find(|part| !part.trim().is_empty())
        .unwrap_or("");
    let mut name: String = last
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '(' | ')' | ',' | ' ') {
                c
            } else {
                '_'
            }
        })
        .collect();
    name = name
        .trim()
        .trim_start_matches(['.', '-', ' '])
        .trim_end_matches(['.', ' '])
        .to_owned();
    while name.len() > 100 {
        name.pop();
    }
    let stem = name.split('.').next().unwrap_or("").to_ascii_lowercase();
    let reserved = matches!(stem.as_str(), "con" | "prn" | "aux" | "nul")
        || ((stem.starts_with("com") || stem.starts_with("lpt"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        name = format!("_{name}");
    }
    if name.is_empty() {
        name = "file".to_owned();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_and_parts_round_trip_and_reject_damage() {
        let offer = FileOffer {
            file_id: [7; 16],
            size: 1_000_000,
            sha256: [9; 32],
            name: "report é.pdf".into(),
        };
        assert_eq!(FileOffer::decode(&offer.encode()), Ok(offer.clone()));
        let mut long = offer.encode();
        long.push(0);
        assert!(FileOffer::decode(&long).is_err());
        assert!(FileOffer::decode(&offer.encode()[..40]).is_err());
        let part = FilePart {
            file_id: [7; 16],
            index: 3,
            data: vec![1, 2, 3],
        };
        assert_eq!(FilePart::decode(&part.encode()), Ok(part));
        assert!(FilePart::decode(&[0; 20]).is_err(), "no data");
        assert!(FilePart::decode(&vec![0; 20 + PART_BYTES + 1]).is_err());
        assert_eq!(parts_for(0), 0);
        assert_eq!(parts_for(1), 1);
        assert_eq!(parts_for(PART_BYTES as u64), 1);
        assert_eq!(parts_for(PART_BYTES as u64 + 1), 2);
    }

    #[test]
    fn hostile_names_become_safe_ones() {
        for (given, safe) in [
            ("../../x", "x"),
            ("/etc/passwd", "passwd"),
            ("con", "_con"),
            ("CON.txt", "_CON.txt"),
            ("com1", "_com1"),
            ("", "file"),
            ("..", "file"),
            ("...", "file"),
            (".bashrc", "bashrc"),
            ("-rf", "rf"),
            ("a\u{0}b\nc", "a_b_c"),
            ("dir\\evil.exe", "evil.exe"),
            ("report (2).pdf", "report (2).pdf"),
            ("x/", "x"),
        ] {
            assert_eq!(safe_file_name(given), safe, "{given:?}");
        }
        assert!(safe_file_name(&"é".repeat(300)).len() <= 100);
    }
}
