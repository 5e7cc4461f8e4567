//! The plaintext format of a message: what travels inside the end-to-end
//! encryption. Kind, ids, thread, time and body are all in here; the relay sees
//! only the padded ciphertext.
//!
//! Layout (PROTOCOL.md, "Messages inside the encryption"): `version:u8
//! kind:u8 flags:u8 priority:u8 id:[16] sent_at_ms:u64be [reply_to:[16]]
//! [thread:[16]] [chain:[16] hops:u8] [seq:u64be] body_len:u32be body`
//! followed by zero bytes up to the next size bucket, so that the
//! ciphertext's length says little about the body's.

use std::fmt;

use uuid::Uuid;

/// Version byte of the plaintext layout.
pub const MESSAGE_VERSION: u8 = 1;
/// Largest body, in bytes (128 KiB).
pub const MAX_BODY_BYTES: usize = 128 * 1024;
/// Plaintext sizes are padded up to the first of these that fits.
pub const PADDING_BUCKETS: [usize; 6] = [256, 1024, 4096, 16 * 1024, 64 * 1024, 192 * 1024];

const FLAG_REPLY_TO: u8 = 0b001;
const FLAG_THREAD: u8 = 0b010;
const FLAG_CHAIN: u8 = 0b100;
const FLAG_SEQ: u8 = 0b1000;
const FIXED_LEN: usize = 1 + 1 + 1 + 1 + 16 + 8 + 4;

/// A message id: a UUIDv7, so ids sort by creation time. Also the relay
/// envelope id of the message.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId([u8; 16]);

impl MessageId {
    /// A new time-ordered id.
    pub fn new_v7() -> MessageId {
        MessageId(*Uuid::now_v7().as_bytes())
    }

    /// Wraps raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> MessageId {
        MessageId(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the hyphenated (or plain hex) UUID form.
    pub fn parse(text: &str) -> Option<MessageId> {
        Uuid::parse_str(text).ok().map(|u| MessageId(*u.as_bytes()))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Uuid::from_bytes(self.0).hyphenated().fmt(f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// What a message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Conversation.
    Chat,
    /// A task for the peer to carry out.
    Task,
    /// The result of a task.
    Result,
    /// A question expecting an answer.
    Query,
    /// A file.
    File,
    /// A delivery or read receipt.
    Receipt,
    /// The first message of a pairing, redeeming an invite. Never shown to an
    /// agent.
    Redeem,
    /// The sender removed the recipient from its contacts: the session ends
    /// and nothing more from the recipient is read. Never shown to an agent.
    Unpair,
    /// A worker's report on a task it was given (`reply_to` names the task):
    /// a [`crate::TaskStatus`] body. Never shown to an agent.
    Status,
    /// The requester asks to stop a task (`reply_to` names it); empty body.
    /// Never shown to an agent.
    Cancel,
    /// A piece of a task's output while it runs (`reply_to` names the
    /// task): a [`crate::TaskChunk`] body. Never shown as a message.
    Chunk,
    /// The sender's card (a [`crate::Card`] body), kept as what the contact
    /// says of itself. Never shown as a message.
    Card,
    /// Asks whether the contact's daemon is there: answered with a
    /// `delivered` receipt, and with the recipient's card if the body is
    /// `[1]`. Never shown as a message.
    Ping,
    /// A part of a file (a [`crate::file::FilePart`] body); the `file`
    /// message that follows the parts names them. Never shown as a message.
    FilePart,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 14] = [
        Kind::Chat,
        Kind::Task,
        Kind::Result,
        Kind::Query,
        Kind::File,
        Kind::Receipt,
        Kind::Redeem,
        Kind::Unpair,
        Kind::Status,
        Kind::Cancel,
        Kind::Chunk,
        Kind::Card,
        Kind::Ping,
        Kind::FilePart,
    ];

    /// Its byte in the layout.
    pub fn to_u8(self) -> u8 {
        match self {
            Kind::Chat => 1,
            Kind::Task => 2,
            Kind::Result => 3,
            Kind::Query => 4,
            Kind::File => 5,
            Kind::Receipt => 6,
            Kind::Redeem => 16,
            Kind::Unpair => 17,
            Kind::Status => 18,
            Kind::Cancel => 19,
            Kind::Chunk => 20,
            Kind::Card => 21,
            Kind::Ping => 22,
            Kind::FilePart => 23,
        }
    }

    /// The kind for a byte.
    pub fn from_u8(byte: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.to_u8() == byte)
    }

    /// Its name, as used by the CLI and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Task => "task",
            Kind::Result => "result",
            Kind::Query => "query",
            Kind::File => "file",
            Kind::Receipt => "receipt",
            Kind::Redeem => "redeem",
            Kind::Unpair => "unpair",
            Kind::Status => "status",
            Kind::Cancel => "cancel",
            Kind::Chunk => "chunk",
            Kind::Card => "card",
            Kind::Ping => "ping",
            Kind::FilePart => "file_part",
        }
    }

    /// The kind with this name.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Where a message stands in a chain of replies: the id of the message that
/// started the chain and how many replies lead from it to this one. A reply
/// carries its parent's chain with one more hop, so two agents that answer
/// each other automatically can see how long their exchange has run and stop
/// (`serve` does, past its `--max-hops`). It travels inside the encryption:
/// the relay sees none of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Chain {
    /// The first message of the chain.
    pub id: MessageId,
    /// Replies from that message to this one (1 for a direct answer).
    pub hops: u8,
}

impl Chain {
    /// The chain of a reply to a message with `id` and `chain`.
    pub fn reply_to(id: MessageId, chain: Option<Chain>) -> Chain {
        match chain {
            Some(chain) => Chain {
                id: chain.id,
                hops: chain.hops.saturating_add(1),
            },
            None => Chain { id, hops: 1 },
        }
    }
}

/// How soon the recipient's agent should see a message: `recv` and `inbox`
/// surface urgent first, then normal, then low, the senders taking turns
/// within each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Before everything else.
    Urgent,
    /// The default.
    #[default]
    Normal,
    /// After everything else.
    Low,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 3] = [Priority::Urgent, Priority::Normal, Priority::Low];

    /// Its byte in the layout (also its sort rank).
    pub fn to_u8(self) -> u8 {
        match self {
            Priority::Urgent => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }

    /// The priority for a byte.
    pub fn from_u8(byte: u8) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.to_u8() == byte)
    }

    /// Its name, as used by the CLI and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// The priority with this name.
    pub fn from_name(name: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// A message as its sender wrote it. The sender is not in here: it is the
/// contact whose session decrypted it, which no message can claim otherwise.
#[derive(Clone, PartialEq, Eq)]
pub struct Plaintext {
    /// Unique, time-ordered id.
    pub id: MessageId,
    /// What it is for.
    pub kind: Kind,
    /// How soon it should be seen.
    pub priority: Priority,
    /// When the sender wrote it, Unix milliseconds (the sender's clock).
    pub sent_at_ms: u64,
    /// The message this answers.
    pub reply_to: Option<MessageId>,
    /// The conversation thread.
    pub thread: Option<MessageId>,
    /// The chain of replies this one belongs to, if it is a reply.
    pub chain: Option<Chain>,
    /// Its number in the sender's session, 1 for the first message sealed in
    /// it: a gap tells the recipient that a message never arrived. Set by
    /// [`crate::PeerSession::seal`] (whatever the caller put here), and
    /// `None` only from a sender that does not number its messages.
    pub seq: Option<u64>,
    /// The content.
    pub body: Vec<u8>,
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plaintext")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("priority", &self.priority)
            .field("sent_at_ms", &self.sent_at_ms)
            .field("reply_to", &self.reply_to)
            .field("thread", &self.thread)
            .field("chain", &self.chain)
            .field("seq", &self.seq)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

/// Why bytes are not a valid plaintext message, or a body is too big.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The body is over [`MAX_BODY_BYTES`].
    #[error("the message body is {len} bytes; the limit is {MAX_BODY_BYTES} bytes (128 KiB)")]
    BodyTooLarge {
        /// Its length.
        len: usize,
    },
    /// The bytes do not follow the layout.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A newer layout.
    #[error("message format version {0} is not supported")]
    UnsupportedVersion(u8),
}

impl Plaintext {
    /// The padded bytes to encrypt.
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        self.encode_numbered(self.seq)
    }

    /// The padded bytes to encrypt, numbered `seq` in place of `self.seq`.
    pub(crate) fn encode_numbered(&self, seq: Option<u64>) -> Result<Vec<u8>, MessageError> {
        if self.body.len() > MAX_BODY_BYTES {
            return Err(MessageError::BodyTooLarge {
                len: self.body.len(),
            });
        }
        let mut flags = 0;
        if self.reply_to.is_some() {
            flags |= FLAG_REPLY_TO;
        }
        if self.thread.is_some() {
            flags |= FLAG_THREAD;
        }
        if self.chain.is_some() {
            flags |= FLAG_CHAIN;
        }
        if seq.is_some() {
            flags |= FLAG_SEQ;
        }
        let mut out = Vec::with_capacity(FIXED_LEN + 32 + self.body.len());
        out.push(MESSAGE_VERSION);
        out.push(self.kind.to_u8());
        out.push(flags);
        out.push(self.priority.to_u8());
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.sent_at_ms.to_be_bytes());
        for id in [self.reply_to, self.thread].into_iter().flatten() {
            out.extend_from_slice(id.as_bytes());
        }
        if let Some(chain) = self.chain {
            out.extend_from_slice(chain.id.as_bytes());
            out.push(chain.hops);
        }
        if let Some(seq) = seq {
            out.extend_from_slice(&seq.to_be_bytes());
        }
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.body);
        let padded = PADDING_BUCKETS
            .into_iter()
            .find(|bucket| *bucket >= out.len())
            .unwrap_or(out.len());
        out.resize(padded, 0);
        Ok(out)
    }

    /// Parses decrypted bytes (padding included).
    pub fn decode(bytes: &[u8]) -> Result<Plaintext, MessageError> {
        let mut r = Reader::new(bytes);
        let short = MessageError::Malformed("cut short");
        let version = r.u8().ok_or(short.clone())?;
        if version != MESSAGE_VERSION {
            return Err(MessageError::UnsupportedVersion(version));
        }
        let kind = Kind::from_u8(r.u8().ok_or(short.clone())?)
            .ok_or(MessageError::Malformed("unknown kind"))?;
        let flags = r.u8().ok_or(short.clone())?;
        if flags & !(FLAG_REPLY_TO | FLAG_THREAD | FLAG_CHAIN | FLAG_SEQ) != 0 {
            return Err(MessageError::Malformed("unknown flags"));
        }
        let priority = Priority::from_u8(r.u8().ok_or(short.clone())?)
            .ok_or(MessageError::Malformed("unknown priority"))?;
        let id = MessageId(r.array().ok_or(short.clone())?);
        let sent_at_ms = u64::from_be_bytes(r.array().ok_or(short.clone())?);
        let mut optional_id = |flag: u8| -> Result<Option<MessageId>, MessageError> {
            if flags & flag == 0 {
                return Ok(None);
            }
            Ok(Some(MessageId(r.array().ok_or(short.clone())?)))
        };
        let reply_to = optional_id(FLAG_REPLY_TO)?;
        let thread = optional_id(FLAG_THREAD)?;
        let chain = match optional_id(FLAG_CHAIN)? {
            Some(id) => Some(Chain {
                id,
                hops: r.u8().ok_or(short.clone())?,
            }),
            None => None,
        };
        let seq = if flags & FLAG_SEQ == 0 {
            None
        } else {
            Some(u64::from_be_bytes(r.array().ok_or(short.clone())?))
        };
        let body_len = u32::from_be_bytes(r.array().ok_or(short.clone())?) as usize;
        if body_len > MAX_BODY_BYTES {
            return Err(MessageError::BodyTooLarge { len: body_len });
        }
        let body = r.take(body_len).ok_or(short)?.to_vec();
        if r.rest().iter().any(|b| *b != 0) {
            return Err(MessageError::Malformed("non-zero bytes after the body"));
        }
        Ok(Plaintext {
            id,
            kind,
            priority,
            sent_at_ms,
            reply_to,
            thread,
            chain,
            seq,
            body,
        })
    }
}

/// A cursor over bytes for the decoders of this crate; every read is checked.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.rest.len() < len {
            return None;
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Some(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_id() -> impl Strategy<Value = MessageId> {
        any::<[u8; 16]>().prop_map(MessageId)
    }

    fn arb_plaintext() -> impl Strategy<Value = Plaintext> {
        (
            arb_id(),
            proptest::sample::select(Kind::ALL.to_vec()),
            proptest::sample::select(Priority::ALL.to_vec()),
            any::<u64>(),
            proptest::option::of(arb_id()),
            proptest::option::of(arb_id()),
            proptest::option::of((arb_id(), any::<u8>())),
            proptest::option::of(any::<u64>()),
            proptest::collection::vec(any::<u8>(), 0..3000),
        )
            .prop_map(
                |(id, kind, priority, sent_at_ms, reply_to, thread, chain, seq, body)| Plaintext {
                    id,
                    kind,
                    priority,
                    sent_at_ms,
                    reply_to,
                    thread,
                    chain: chain.map(|(id, hops)| Chain { id, hops }),
                    seq,
                    body,
                },
            )
    }

    proptest! {
        #[test]
        fn every_message_round_trips_padded_to_a_bucket(message in arb_plaintext()) {
            let bytes = message.encode().unwrap();
            prop_assert!(PADDING_BUCKETS.contains(&bytes.len()));
            prop_assert_eq!(Plaintext::decode(&bytes), Ok(message));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Plaintext::decode(&bytes);
        }
    }

    #[test]
    fn the_body_limit_is_enforced_with_a_clear_error() {
        let message = Plaintext {
            id: MessageId::new_v7(),
            kind: Kind::Chat,
            priority: crate::message::Priority::Normal,
            sent_at_ms: 0,
            reply_to: None,
            thread: None,
            chain: None,
            seq: None,
            body: vec![b'x'; MAX_BODY_BYTES + 1],
        };
        let error = message.encode().unwrap_err();
        assert!(
            error.to_string().contains("limit is 131072 bytes"),
            "{error}"
        );
        let fits = Plaintext {
            body: vec![b'x'; MAX_BODY_BYTES],
            ..message
        };
        assert_eq!(fits.encode().unwrap().len(), 192 * 1024);
    }

    #[test]
    fn a_reply_carries_its_parents_chain_one_hop_further() {
        let (first, second) = (MessageId::new_v7(), MessageId::new_v7());
        let one = Chain::reply_to(first, None);
        assert_eq!(one, Chain { id: first, hops: 1 });
        let two = Chain::reply_to(second, Some(one));
        assert_eq!(two, Chain { id: first, hops: 2 });
        let last = Chain::reply_to(
            second,
            Some(Chain {
                id: first,
                hops: 255,
            }),
        );
        assert_eq!(last.hops, 255, "the count stops, never wraps");
        // On the wire: flag bit 2, then the chain id and the hop count.
        let message = Plaintext {
            id: second,
            kind: Kind::Chat,
            priority: Priority::Normal,
            sent_at_ms: 0,
            reply_to: Some(first),
            thread: None,
            chain: Some(two),
            seq: None,
            body: b"hi".to_vec(),
        };
        let bytes = message.encode().unwrap();
        assert_eq!(bytes[2], 0b101);
        assert_eq!(&bytes[44..60], first.as_bytes());
        assert_eq!(bytes[60], 2);
        assert_eq!(Plaintext::decode(&bytes).unwrap().chain, Some(two));
    }

    #[test]
    fn ids_are_time_ordered_and_print_as_uuids() {
        let first = MessageId::new_v7();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = MessageId::new_v7();
        assert!(first < second);
        let text = first.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(MessageId::parse(&text), Some(first));
    }

    #[test]
    fn kinds_round_trip_by_byte_and_name() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_u8(kind.to_u8()), Some(kind));
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
    }
}

/// What a receipt reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReceiptState {
    /// Stored in the recipient's daemon.
    Delivered,
    /// Consumed by the recipient's agent.
    Read,
}

/// The body of a [`Kind::Receipt`] message: `state:u8 count:u16be ids:[16]*count`
/// (state 1 delivered, 2 read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// What happened to the messages.
    pub state: ReceiptState,
    /// Which messages (ids of the receipt's recipient's messages).
    pub ids: Vec<MessageId>,
}

/// Most ids in one receipt.
pub const MAX_RECEIPT_IDS: usize = 1000;

impl Receipt {
    /// The body bytes.
    pub fn encode(&self) -> Vec<u8> {
        let ids = &self.ids[..self.ids.len().min(MAX_RECEIPT_IDS)];
        let mut out = Vec::with_capacity(3 + 16 * ids.len());
        out.push(match self.state {
            ReceiptState::Delivered => 1,
            ReceiptState::Read => 2,
        });
        out.extend_from_slice(&(ids.len() as u16).to_be_bytes());
        for id in ids {
            out.extend_from_slice(id.as_bytes());
        }
        out
    }

    /// Parses a body.
    pub fn decode(bytes: &[u8]) -> Result<Receipt, MessageError> {
        let mut r = Reader::new(bytes);
        let state = match r.u8() {
            Some(1) => ReceiptState::Delivered,
            Some(2) => ReceiptState::Read,
            _ => return Err(MessageError::Malformed("unknown receipt state")),
        };
        let count = usize::from(u16::from_be_bytes(
            r.array().ok_or(MessageError::Malformed("cut short"))?,
        ));
        if count > MAX_RECEIPT_IDS || r.remaining() != count * 16 {
            return Err(MessageError::Malformed(
                "receipt ids do not match their count",
            ));
        }
        let ids = (0..count)
            .filter_map(|_| r.array().map(MessageId))
            .collect();
        Ok(Receipt { state, ids })
    }
}

#[cfg(test)]
mod receipt_tests {
    use super::*;

    #[test]
    fn receipts_round_trip_and_reject_damage() {
        let receipt = Receipt {
            state: ReceiptState::Read,
            ids: vec![MessageId::new_v7(), MessageId::new_v7()],
        };
        let bytes = receipt.encode();
        assert_eq!(Receipt::decode(&bytes), Ok(receipt));
        assert!(Receipt::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Receipt::decode(&[9, 0, 0]).is_err());
    }
}
