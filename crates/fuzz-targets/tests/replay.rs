//! Replays the committed fuzz corpora (`fuzz/corpus/TARGET/`) through the
//! fuzz targets, and a fixed set of mutations of each corpus file, on the
//! stable compiler: every input that ever found a bug stays a regression
//! test. `AGENTWIRE_WRITE_CORPUS=1` writes the seed files (valid inputs of
//! every kind) into the corpora.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;

use agentwire_fuzz_targets::TARGETS;
use agentwire_session::{
    Identity, Invite, InviteSecret, Kind, MessageId, Name, Permissions, Plaintext, Priority,
    Receipt, SignedInvite, TaskStatus,
};
use agentwire_wire::{Body, ErrorCode, Frame, PublicKey, RelayId};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Valid inputs for each target: where fuzzing starts from.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let key = PublicKey::from_bytes([0xb0; 32]);
    let id = agentwire_wire::EnvelopeId::from_bytes([7; 16]);
    let frames = [
        (
            "send",
            Frame::new(
                9,
                Body::Send {
                    to: key,
                    id,
                    payload: b"sealed".to_vec(),
                },
            ),
        ),
        (
            "ack_batch",
            Frame::new(3, Body::AckBatch { ids: vec![id, id] }),
        ),
        (
            "error",
            Frame::new(
                4,
                Body::Error {
                    code: ErrorCode::QueueFull,
                    limit: 10,
                    message: "full".into(),
                },
            ),
        ),
        (
            "lookup",
            Frame::new(
                5,
                Body::Lookup {
                    capability: "rust".into(),
                },
            ),
        ),
    ];
    let mut seeds: Vec<(&'static str, &'static str, Vec<u8>)> = frames
        .into_iter()
        .map(|(name, f)| ("decode_frame", name, f.encode()))
        .collect();

    let inviter = Identity::generate(Name::new("alice").unwrap());
    let invite = SignedInvite::sign(
        Invite {
            inviter: inviter.address(),
            inviter_curve25519: inviter.curve25519(),
            one_time_key: [3; 32],
            secret: InviteSecret::from_bytes([4; 32]),
            expires_at_ms: 1_800_000_000_000,
            permissions: Permissions::from_bits(7),
            relay_url: "wss://relay.example:7878/v1/ws".into(),
            relay_id: RelayId::from_bytes([5; 16]),
            inviter_name: Name::new("alice").unwrap(),
        },
        &inviter,
    );
    seeds.push(("parse_invite", "invite", invite.to_token().into_bytes()));

    let message = Plaintext {
        id: MessageId::new_v7(),
        kind: Kind::Task,
        priority: Priority::Urgent,
        sent_at_ms: 1_800_000_000_000,
        reply_to: Some(MessageId::new_v7()),
        thread: None,
        chain: None,
        seq: Some(3),
        body: "run the tests ✓".as_bytes().to_vec(),
    };
    seeds.push(("decode_plaintext", "task", message.encode().unwrap()));
    let receipt = Receipt {
        state: agentwire_session::ReceiptState::Read,
        ids: vec![MessageId::new_v7(), MessageId::new_v7()],
    };
    seeds.push(("decode_inner", "receipt", receipt.encode()));
    let status = TaskStatus {
        state: agentwire_session::TaskState::Working,
        detail: "halfway".into(),
    };
    seeds.push(("decode_inner", "task_status", status.encode()));

    let lines: [(&str, &str); 3] = [
        (
            "send",
            r#"{"op":"send","to":"coder","body":"run the tests","kind":"task"}"#,
        ),
        (
            "recv",
            r#"{"op":"recv","max":10,"wait_ms":1000,"as":"coder"}"#,
        ),
        ("tasks", r#"{"op":"tasks","as":"coder"}"#),
    ];
    for (name, line) in lines {
        seeds.push(("parse_request", name, line.as_bytes().to_vec()));
        seeds.push(("parse_connect_line", name, line.as_bytes().to_vec()));
    }
    let accept = r#"{"op":"accept","token":"aw1:AAAA","allow":["chat"]}"#;
    seeds.push(("parse_request", "accept", accept.as_bytes().to_vec()));
    seeds
}

#[test]
fn write_seeds_when_asked() {
    if std::env::var_os("AGENTWIRE_WRITE_CORPUS").is_none() {
        return;
    }
    for (target, name, bytes) in seeds() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}

/// A fixed, repeatable stream of numbers (xorshift64).
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// One mutation of `input`: flipped bits, changed bytes, cut, grown.
    fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..=(self.next() % 4) {
            let at = if out.is_empty() {
                0
            } else {
                (self.next() as usize) % out.len()
            };
            match self.next() % 5 {
                0 if !out.is_empty() => out[at] ^= 1 << (self.next() % 8),
                1 if !out.is_empty() => out[at] = self.next() as u8,
                2 => out.truncate(at),
                3 => out.insert(at.min(out.len()), self.next() as u8),
                _ => {
                    let byte = [0x00, 0xff, b'"', b'\\', b'{', 0x80][(self.next() % 6) as usize];
                    out.insert(at.min(out.len()), byte);
                }
            }
        }
        out
    }
}

/// Every corpus file, and 200 mutations of each, through its target.
#[test]
fn the_fuzz_corpora_replay_without_a_crash() {
    let mut mutator = Mutator(0x9e37_79b9_7f4a_7c15);
    for (target, run) in TARGETS {
        let dir = corpus_dir(target);
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("no corpus for {target} at {}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        assert!(!files.is_empty(), "the corpus of {target} is empty");
        for file in &files {
            let input = std::fs::read(file).unwrap();
            run(&input);
            for _ in 0..200 {
                run(&mutator.mutate(&input));
            }
        }
        eprintln!("{target}: {} corpus files replayed", files.len());
    }
}

/// The seeds are valid inputs: each is accepted by its parser, so the
/// corpora start from the real formats.
#[test]
fn the_seeds_are_accepted() {
    for (target, name, bytes) in seeds() {
        let accepted = match target {
            "decode_frame" => Frame::decode(&bytes).is_ok(),
            "parse_invite" => SignedInvite::parse(std::str::from_utf8(&bytes).unwrap()).is_ok(),
            "decode_plaintext" => Plaintext::decode(&bytes).is_ok(),
            "decode_inner" => Receipt::decode(&bytes).is_ok() || TaskStatus::decode(&bytes).is_ok(),
            "parse_request" => serde_json::from_slice::<agentwire_api::Request>(&bytes).is_ok(),
            "parse_connect_line" => {
                serde_json::from_slice::<agentwire_api::connect::Command>(&bytes).is_ok()
            }
            other => panic!("no target {other}"),
        };
        assert!(accepted, "{target}/{name} is not accepted");
    }
}
