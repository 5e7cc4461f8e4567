//! Every parser that reads bytes someone else chose, as a fuzz target: a
//! function that must not panic on any input, and that checks what it
//! accepts. `fuzz/` runs them under cargo-fuzz (libFuzzer); the test suite
//! replays the committed corpora (`fuzz/corpus/TARGET/`) through the same
//! functions, so every input that ever found a bug stays a regression test.

// A fuzz target reports a bug by panicking: that is what these are for.
#![allow(clippy::expect_used, clippy::panic)]

use agentwire_api::Request;
use agentwire_api::connect::Command;
use agentwire_session::file::{FileOffer, FilePart};
use agentwire_session::{Card, Plaintext, Receipt, Redeem, SignedInvite, TaskChunk, TaskStatus};
use agentwire_wire::Frame;
use agentwire_wire::directory::Entry;

/// A fuzz target: its name (the directory of its corpus) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("decode_frame", decode_frame),
    ("parse_invite", parse_invite),
    ("decode_plaintext", decode_plaintext),
    ("decode_inner", decode_inner),
    ("parse_request", parse_request),
    ("parse_connect_line", parse_connect_line),
];

/// The relay's frame decoder: whatever it accepts re-encodes to exactly the
/// input (one encoding per value).
pub fn decode_frame(data: &[u8]) {
    if let Ok(frame) = Frame::decode(data) {
        assert_eq!(frame.encode(), data, "a frame with two encodings");
    }
    let _ = Frame::peek_header(data);
    if let Ok(entry) = Entry::decode(data) {
        assert_eq!(entry.encode(), data, "a directory entry with two encodings");
    }
}

/// The invite link parser (`aw1:…`): an invite it accepts survives a round
/// trip through its link.
pub fn parse_invite(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(invite) = SignedInvite::parse(text) {
        let again = SignedInvite::parse(&invite.to_token()).expect("its own link parses");
        assert_eq!(again.to_token(), invite.to_token());
    }
}

/// The plaintext format inside the encryption (what a contact's daemon
/// sends): a message it accepts re-encodes to what decodes the same.
pub fn decode_plaintext(data: &[u8]) {
    if let Ok(message) = Plaintext::decode(data) {
        let bytes = message.encode().expect("a decoded message encodes");
        assert_eq!(
            Plaintext::decode(&bytes).expect("and decodes again"),
            message
        );
    }
}

/// The bodies carried inside a plaintext: receipts, cards, files, tasks,
/// redemptions.
pub fn decode_inner(data: &[u8]) {
    if let Ok(receipt) = Receipt::decode(data) {
        assert_eq!(Receipt::decode(&receipt.encode()).ok(), Some(receipt));
    }
    if let Ok(card) = Card::decode(data) {
        assert_eq!(Card::decode(&card.encode()).ok(), Some(card));
    }
    if let Ok(offer) = FileOffer::decode(data) {
        assert_eq!(FileOffer::decode(&offer.encode()).ok(), Some(offer));
    }
    if let Ok(part) = FilePart::decode(data) {
        assert_eq!(FilePart::decode(&part.encode()).ok(), Some(part));
    }
    if let Ok(status) = TaskStatus::decode(data) {
        assert_eq!(TaskStatus::decode(&status.encode()).ok(), Some(status));
    }
    if let Ok(chunk) = TaskChunk::decode(data) {
        assert_eq!(TaskChunk::decode(&chunk.encode()).ok(), Some(chunk));
    }
    let _ = Redeem::decode(data);
}

/// A request line on the daemon's socket: one it accepts serializes and
/// parses back to the same request.
pub fn parse_request(data: &[u8]) {
    if let Ok(request) = serde_json::from_slice::<Request>(data) {
        let text = serde_json::to_string(&request).expect("a request serializes");
        let again: Request = serde_json::from_str(&text).expect("and parses again");
        assert_eq!(serde_json::to_string(&again).ok(), Some(text));
    }
}

/// A `connect --json` line, which is also the body of the bridge's
/// `POST /v1/op`.
pub fn parse_connect_line(data: &[u8]) {
    if let Ok(command) = serde_json::from_slice::<Command>(data) {
        let text = serde_json::to_string(&command).expect("a command serializes");
        let again: Command = serde_json::from_str(&text).expect("and parses again");
        assert_eq!(serde_json::to_string(&again).ok(), Some(text));
    }
}
