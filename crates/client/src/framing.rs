//! Framing messages in journals: JSON lines, each message carrying its id.
//!
//! A journal is bytes; messages are records in it. With JSON lines, each message is one
//! JSON object on one line, and its [message id](crate::message_id) is the string field
//! [`ID_FIELD`] of that object. [`LineSplitter`] cuts the content a reader gets (in chunks
//! that end anywhere) back into whole lines.

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use uuid::Uuid;

/// The field of a JSON message that holds its id.
pub const ID_FIELD: &str = "uuid";

/// A message that cannot be framed or unframed.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// The message is not a JSON object (only objects can carry an id field).
    #[error("a JSON-lines message must be an object, not {0}")]
    NotAnObject(&'static str),
    /// The message did not serialize, or the line is not JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The line has no id field, or it is not a UUID.
    #[error("the message has no {ID_FIELD:?} field holding a UUID: {0}")]
    NoId(String),
}

/// `message` as one JSON line (with its trailing newline), its [`ID_FIELD`] set to `id`.
pub fn frame_json<T: Serialize>(message: &T, id: Uuid) -> Result<Bytes, FramingError> {
    let mut value = serde_json::to_value(message)?;
    let Some(object) = value.as_object_mut() else {
        return Err(FramingError::NotAnObject(kind(&value)));
    };
    object.insert(
        ID_FIELD.to_owned(),
        serde_json::Value::String(id.to_string()),
    );
    let mut line = serde_json::to_vec(&value)?;
    line.push(b'\n');
    Ok(Bytes::from(line))
}

/// The id and the message of one JSON line (with or without its newline).
pub fn unframe_json(line: &[u8]) -> Result<(Uuid, serde_json::Value), FramingError> {
    let value: serde_json::Value = serde_json::from_slice(line)?;
    if !value.is_object() {
        return Err(FramingError::NotAnObject(kind(&value)));
    }
    let id = value
        .get(ID_FIELD)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| FramingError::NoId("the field is missing or not a string".to_owned()))?;
    let id = Uuid::parse_str(id).map_err(|e| FramingError::NoId(format!("{id:?}: {e}")))?;
    Ok((id, value))
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Cuts content, in chunks that may end anywhere, into whole lines (each with its newline).
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: BytesMut,
}

impl LineSplitter {
    /// A splitter with nothing held.
    pub fn new() -> Self {
        Self::default()
    }

    /// The whole lines `chunk` completes, in order; the rest is held for the next chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        self.partial.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(at) = self.partial.iter().position(|&b| b == b'\n') {
            lines.push(self.partial.split_to(at + 1).freeze());
        }
        lines
    }

    /// Bytes of a line not ended yet.
    pub fn held(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message_id::{self, Clock, Flags, ProducerId};
    use proptest::prelude::*;

    fn id(clock: u64) -> Uuid {
        message_id::build(
            ProducerId::new([0, 1, 2, 3, 4, 5]),
            Clock(clock),
            Flags::OUTSIDE_TXN,
        )
        .expect("id")
    }

    #[test]
    fn json_messages_carry_their_id() {
        #[derive(Serialize)]
        struct Chunk {
            stream: &'static str,
            n: u32,
        }
        let line = frame_json(&Chunk { stream: "s1", n: 7 }, id(42)).expect("frame");
        assert!(line.ends_with(b"\n") && !line[..line.len() - 1].contains(&b'\n'));
        let (got, value) = unframe_json(&line).expect("unframe");
        assert_eq!(got, id(42));
        assert_eq!(value["stream"], "s1");
        assert_eq!(value["n"], 7);
    }

    #[test]
    fn bad_messages_and_lines_say_why() {
        let err = frame_json(&[1, 2], id(1)).expect_err("an array");
        assert_eq!(
            err.to_string(),
            "a JSON-lines message must be an object, not an array"
        );
        let err = unframe_json(b"{\"n\": 1}\n").expect_err("no id");
        assert!(err.to_string().contains("\"uuid\""), "{err}");
        let err = unframe_json(b"{\"uuid\": \"nope\"}").expect_err("not a uuid");
        assert!(err.to_string().contains("\"nope\""), "{err}");
        assert!(matches!(
            unframe_json(b"not json"),
            Err(FramingError::Json(_))
        ));
    }

    proptest! {
        /// However content is cut into chunks, the splitter gives back the same lines.
        #[test]
        fn lines_survive_any_chunking(
            lines in proptest::collection::vec("[a-z {}\":,0-9]{0,40}", 0..30),
            cuts in proptest::collection::vec(1usize..50, 0..40),
        ) {
            let content: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect();
            let mut splitter = LineSplitter::new();
            let mut got = Vec::new();
            let mut at = 0;
            for cut in cuts.iter().chain(std::iter::repeat(&7)) {
                if at >= content.len() {
                    break;
                }
                let end = (at + cut).min(content.len());
                got.extend(splitter.push(&content[at..end]));
                at = end;
            }
            prop_assert_eq!(splitter.held(), 0);
            let expected: Vec<Bytes> = lines.iter().map(|l| Bytes::from(format!("{l}\n"))).collect();
            prop_assert_eq!(got, expected);
        }
    }
}
