//! The bodies of the task messages: a worker's [`TaskStatus`] (kind
//! `status`) about a task it was given, and the requester's cancel (kind
//! `cancel`, empty body). Both name their task by `reply_to`: the task
//! message's id.
//!
//! Layout of a status body: `state:u8` then the detail as UTF-8 (the rest of
//! the body, at most [`MAX_DETAIL_BYTES`]): why it failed, was rejected or
//! needs input.

use crate::message::MessageError;

/// Longest detail of a status, in bytes.
pub const MAX_DETAIL_BYTES: usize = 4096;

/// Where a task is, as its worker reports it. `submitted` is implied by the
/// task message itself and is never sent; `completed` comes with the
/// `result` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// The worker runs it.
    Working,
    /// The worker needs more from the requester (the detail says what).
    InputRequired,
    /// Done; the result is the `result` message that answers the task.
    Completed,
    /// It ran and failed (the detail says how).
    Failed,
    /// Stopped at the requester's request.
    Canceled,
    /// Refused without running (the detail says why).
    Rejected,
}

impl TaskState {
    /// Every state a status carries.
    pub const ALL: [TaskState; 6] = [
        TaskState::Working,
        TaskState::InputRequired,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Canceled,
        TaskState::Rejected,
    ];

    /// Its byte in a status body.
    pub fn to_u8(self) -> u8 {
        match self {
            TaskState::Working => 2,
            TaskState::InputRequired => 3,
            TaskState::Completed => 4,
            TaskState::Failed => 5,
            TaskState::Canceled => 6,
            TaskState::Rejected => 7,
        }
    }

    /// The state for a byte.
    pub fn from_u8(byte: u8) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|s| s.to_u8() == byte)
    }
}

/// The body of a `status` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskStatus {
    /// The task's new state.
    pub state: TaskState,
    /// Why, for a person (may be empty).
    pub detail: String,
}

impl TaskStatus {
    /// The body bytes; a detail over the limit is cut at a character
    /// boundary.
    pub fn encode(&self) -> Vec<u8> {
        let mut end = self.detail.len().min(MAX_DETAIL_BYTES);
        while !self.detail.is_char_boundary(end) {
            end -= 1;
        }
        let mut out = Vec::with_capacity(1 + end);
        out.push(self.state.to_u8());
        out.extend_from_slice(&self.detail.as_bytes()[..end]);
        out
    }

    /// Parses a body.
    pub fn decode(bytes: &[u8]) -> Result<TaskStatus, MessageError> {
        let (&state, detail) = bytes
            .split_first()
            .ok_or(MessageError::Malformed("empty task status"))?;
        let state =
            TaskState::from_u8(state).ok_or(MessageError::Malformed("unknown task state"))?;
        if detail.len() > MAX_DETAIL_BYTES {
            return Err(MessageError::Malformed("task status detail too long"));
        }
        let detail = std::str::from_utf8(detail)
            .map_err(|_| MessageError::Malformed("task status detail is not UTF-8"))?
            .to_owned();
        Ok(TaskStatus { state, detail })
    }
}

/// Largest piece of output one `chunk` message carries, in bytes.
pub const MAX_CHUNK_BYTES: usize = 16 * 1024;

/// The body of a `chunk` message: a piece of a task's output, streamed by
/// the worker while the task runs. Chunks of a task are numbered from 0; in
/// order they make up the output that the `result` carries whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskChunk {
    /// Its place: 0, 1, 2, ...
    pub seq: u32,
    /// The text (UTF-8, at most [`MAX_CHUNK_BYTES`]).
    pub text: String,
}

impl TaskChunk {
    /// The body bytes: `seq:u32be` then the text.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.text.len());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(self.text.as_bytes());
        out
    }

    /// Parses a body.
    pub fn decode(bytes: &[u8]) -> Result<TaskChunk, MessageError> {
        let (seq, text) = bytes
            .split_first_chunk::<4>()
            .ok_or(MessageError::Malformed("task chunk cut short"))?;
        if text.len() > MAX_CHUNK_BYTES {
            return Err(MessageError::Malformed("task chunk too long"));
        }
        let text = std::str::from_utf8(text)
            .map_err(|_| MessageError::Malformed("task chunk is not UTF-8"))?
            .to_owned();
        Ok(TaskChunk {
            seq: u32::from_be_bytes(*seq),
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_reject_damage() {
        let chunk = TaskChunk {
            seq: 7,
            text: "line 1\n".into(),
        };
        let bytes = chunk.encode();
        assert_eq!(&bytes[..4], &[0, 0, 0, 7]);
        assert_eq!(TaskChunk::decode(&bytes), Ok(chunk));
        assert!(TaskChunk::decode(&[0, 0, 1]).is_err());
        assert!(TaskChunk::decode(&[0, 0, 0, 1, 0xff]).is_err());
        let mut over = vec![0, 0, 0, 0];
        over.extend(std::iter::repeat_n(b'x', MAX_CHUNK_BYTES + 1));
        assert!(TaskChunk::decode(&over).is_err());
    }

    #[test]
    fn statuses_round_trip_and_reject_damage() {
        for state in TaskState::ALL {
            assert_eq!(TaskState::from_u8(state.to_u8()), Some(state));
            let status = TaskStatus {
                state,
                detail: "exit code 2: no such file".into(),
            };
            assert_eq!(TaskStatus::decode(&status.encode()), Ok(status));
        }
        assert!(TaskStatus::decode(&[]).is_err());
        assert!(TaskStatus::decode(&[1]).is_err(), "submitted is never sent");
        assert!(TaskStatus::decode(&[9]).is_err());
        assert!(TaskStatus::decode(&[5, 0xff, 0xfe]).is_err());
        let long = TaskStatus {
            state: TaskState::Failed,
            detail: "é".repeat(MAX_DETAIL_BYTES),
        };
        let bytes = long.encode();
        assert!(bytes.len() <= 1 + MAX_DETAIL_BYTES);
        assert!(TaskStatus::decode(&bytes).is_ok());
        let mut over = vec![5];
        over.extend(std::iter::repeat_n(b'x', MAX_DETAIL_BYTES + 1));
        assert!(TaskStatus::decode(&over).is_err());
    }
}
