//! Framing messages in journals: JSON lines, and length-prefixed protobuf.
//!
//! A journal is bytes; messages are records in it.
//! - With JSON lines, each message is one JSON object on one line, and its
//!   [message id](crate::message_id) is the string field [`ID_FIELD`] of that object.
//!   [`LineSplitter`] cuts the content a reader gets (in chunks that end anywhere) back
//!   into whole lines.
//! - With protobuf, each message is an 8-byte header (the magic word [`PROTO_MAGIC`], then
//!   the payload's length as a little-endian `u32`) and the encoded message, as Gazette
//!   frames them. [`FrameSplitter`] cuts content back into payloads; the magic word lets it
//!   find the next frame after bytes that are not one. Where a protobuf message keeps its
//!   id is up to its type.
//! - With CSV (RFC 4180), each record is one line of comma-separated fields, quoted when
//!   they hold a comma, a quote or a line break; [`CsvSplitter`] cuts content back into
//!   records, keeping quoted line breaks inside theirs.
//!
//! [`Framing`] names the three; [`RecordSplitter`] splits by any of them, and
//! [`RecordReader`] reads a journal back as records.

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
    /// A protobuf message is larger than a frame header can say.
    #[error("a protobuf message of {0} bytes is over the 4 GiB frame limit")]
    TooLarge(usize),
}

/// The first 4 bytes of every protobuf frame.
pub const PROTO_MAGIC: [u8; 4] = [0x66, 0x33, 0x93, 0x36];

/// Bytes of a protobuf frame's header: the magic word and the payload length.
pub const PROTO_HEADER: usize = 8;

/// `message` as one protobuf frame: [`PROTO_MAGIC`], the little-endian payload length,
/// the payload.
pub fn frame_proto<M: prost::Message>(message: &M) -> Result<Bytes, FramingError> {
    let len = message.encoded_len();
    let len32 = u32::try_from(len).map_err(|_| FramingError::TooLarge(len))?;
    let mut frame = BytesMut::with_capacity(PROTO_HEADER + len);
    frame.extend_from_slice(&PROTO_MAGIC);
    frame.extend_from_slice(&len32.to_le_bytes());
    message
        .encode(&mut frame)
        .expect("the buffer has the message's encoded length");
    Ok(frame.freeze())
}

/// Cuts content, in chunks that may end anywhere, into protobuf frame payloads.
///
/// Bytes that do not start a frame (a torn write, content that is not protobuf frames) are
/// skipped up to the next magic word and counted in [`skipped`](Self::skipped).
#[derive(Debug, Default)]
pub struct FrameSplitter {
    partial: BytesMut,
    skipped: u64,
}

impl FrameSplitter {
    /// A splitter with nothing held.
    pub fn new() -> Self {
        Self::default()
    }

    /// The payloads of the frames `chunk` completes, in order; the rest is held.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        self.partial.extend_from_slice(chunk);
        let mut payloads = Vec::new();
        loop {
            if self.partial.len() >= PROTO_MAGIC.len() && self.partial[..4] != PROTO_MAGIC {
                let next = self
                    .partial
                    .windows(PROTO_MAGIC.len())
                    .position(|w| w == PROTO_MAGIC)
                    .unwrap_or(self.partial.len() + 1 - PROTO_MAGIC.len());
                self.skipped += next as u64;
                let _ = self.partial.split_to(next);
                continue;
            }
            if self.partial.len() < PROTO_HEADER {
                break;
            }
            let len = u32::from_le_bytes(self.partial[4..8].try_into().expect("4 bytes")) as usize;
            if self.partial.len() < PROTO_HEADER + len {
                break;
            }
            let _ = self.partial.split_to(PROTO_HEADER);
            payloads.push(self.partial.split_to(len).freeze());
        }
        payloads
    }

    /// Bytes of a frame not ended yet.
    pub fn held(&self) -> usize {
        self.partial.len()
    }

    /// Bytes skipped because they did not start a frame.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
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

/// `message` as one JSON line, with its trailing newline (no id added; see [`frame_json`]
/// for messages that carry one).
pub fn json_line<T: Serialize>(message: &T) -> Result<Bytes, FramingError> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    Ok(Bytes::from(line))
}

/// `fields` as one CSV record (RFC 4180), with its trailing newline: a field is quoted
/// when it holds a comma, a quote, or a line break, and its quotes are doubled.
pub fn csv_record<F: AsRef<[u8]>>(fields: &[F]) -> Bytes {
    let mut record = BytesMut::new();
    for (n, field) in fields.iter().enumerate() {
        if n > 0 {
            record.extend_from_slice(b",");
        }
        let field = field.as_ref();
        if field
            .iter()
            .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
        {
            record.extend_from_slice(b"\"");
            for &b in field {
                if b == b'"' {
                    record.extend_from_slice(b"\"\"");
                } else {
                    record.extend_from_slice(&[b]);
                }
            }
            record.extend_from_slice(b"\"");
        } else {
            record.extend_from_slice(field);
        }
    }
    record.extend_from_slice(b"\n");
    record.freeze()
}

/// The fields of one CSV record (with or without its line ending), quotes undone.
pub fn csv_fields(record: &[u8]) -> Vec<Vec<u8>> {
    let record = record.strip_suffix(b"\n").unwrap_or(record);
    let record = record.strip_suffix(b"\r").unwrap_or(record);
    let mut fields = vec![Vec::new()];
    let mut quoted = false;
    let mut at = 0;
    while at < record.len() {
        let b = record[at];
        match (quoted, b) {
            (true, b'"') if record.get(at + 1) == Some(&b'"') => {
                fields.last_mut().expect("never empty").push(b'"');
                at += 1;
            }
            (_, b'"') => quoted = !quoted,
            (false, b',') => fields.push(Vec::new()),
            _ => fields.last_mut().expect("never empty").push(b),
        }
        at += 1;
    }
    fields
}

/// Cuts content, in chunks that may end anywhere, into whole CSV records (each with its
/// newline); a line break inside a quoted field does not end a record.
#[derive(Debug, Default)]
pub struct CsvSplitter {
    partial: BytesMut,
    /// Bytes of `partial` scanned, and whether that much leaves a quote open.
    scanned: usize,
    quoted: bool,
}

impl CsvSplitter {
    /// A splitter with nothing held.
    pub fn new() -> Self {
        Self::default()
    }

    /// The whole records `chunk` completes, in order; the rest is held for the next chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        self.partial.extend_from_slice(chunk);
        let mut records = Vec::new();
        let mut at = self.scanned;
        while at < self.partial.len() {
            match self.partial[at] {
                // A doubled quote inside a quoted field toggles twice: no change overall.
                b'"' => self.quoted = !self.quoted,
                b'\n' if !self.quoted => {
                    records.push(self.partial.split_to(at + 1).freeze());
                    at = 0;
                    continue;
                }
                _ => {}
            }
            at += 1;
        }
        self.scanned = self.partial.len();
        records
    }

    /// Bytes of a record not ended yet.
    pub fn held(&self) -> usize {
        self.partial.len()
    }
}

/// How records are laid out in a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One JSON value per line ([`json_line`], [`frame_json`]).
    JsonLines,
    /// Length-prefixed protobuf frames, as Gazette writes them ([`frame_proto`]).
    Protobuf,
    /// CSV records, one per line, quoted line breaks allowed ([`csv_record`]).
    Csv,
}

impl Framing {
    /// A splitter for content in this framing.
    pub fn splitter(self) -> RecordSplitter {
        match self {
            Framing::JsonLines => RecordSplitter::Lines(LineSplitter::new()),
            Framing::Protobuf => RecordSplitter::Protobuf(FrameSplitter::new()),
            Framing::Csv => RecordSplitter::Csv(CsvSplitter::new()),
        }
    }
}

impl std::str::FromStr for Framing {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "json" | "json-lines" | "jsonl" => Ok(Framing::JsonLines),
            "protobuf" | "proto" => Ok(Framing::Protobuf),
            "csv" => Ok(Framing::Csv),
            other => Err(format!(
                "unknown framing {other:?}: expected json-lines, protobuf or csv"
            )),
        }
    }
}

/// A splitter for any [`Framing`]. Lines and CSV records come with their newline;
/// protobuf frames as their payload (the 8-byte header removed).
#[derive(Debug)]
pub enum RecordSplitter {
    /// JSON lines.
    Lines(LineSplitter),
    /// Protobuf frames.
    Protobuf(FrameSplitter),
    /// CSV records.
    Csv(CsvSplitter),
}

impl RecordSplitter {
    /// The whole records `chunk` completes, in order; the rest is held.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Bytes> {
        match self {
            RecordSplitter::Lines(s) => s.push(chunk),
            RecordSplitter::Protobuf(s) => s.push(chunk),
            RecordSplitter::Csv(s) => s.push(chunk),
        }
    }

    /// Bytes of a record not ended yet.
    pub fn held(&self) -> usize {
        match self {
            RecordSplitter::Lines(s) => s.held(),
            RecordSplitter::Protobuf(s) => s.held(),
            RecordSplitter::Csv(s) => s.held(),
        }
    }
}

/// Reads a journal back as records: a [`Reader`](crate::Reader)'s chunks through a
/// [`RecordSplitter`].
///
/// When the reader jumps (content was removed by retention, or a gap was skipped), the
/// partial record before the jump is dropped and splitting starts afresh at the new
/// offset. [`offset`](Self::offset) is the journal offset just past the last record
/// returned, where a later read resumes with the next one (bytes skipped between protobuf
/// frames count as the start of the frame after them).
#[derive(Debug)]
pub struct RecordReader {
    reader: crate::Reader,
    framing: Framing,
    splitter: RecordSplitter,
    /// Whole records not returned yet, each with the offset just past it.
    ready: std::collections::VecDeque<(Bytes, i64)>,
    /// Offset just past the content pushed into the splitter.
    pushed_to: i64,
    offset: i64,
}

impl RecordReader {
    /// Records of `reader`'s content, which starts at `offset` (the read's start).
    pub fn new(reader: crate::Reader, framing: Framing) -> Self {
        let offset = reader.offset();
        Self {
            reader,
            framing,
            splitter: framing.splitter(),
            ready: std::collections::VecDeque::new(),
            pushed_to: offset,
            offset,
        }
    }

    /// The next whole record, or `None` at the end of the read.
    pub async fn next(&mut self) -> Option<crate::Result<Bytes>> {
        use futures::StreamExt;
        loop {
            if let Some((record, end)) = self.ready.pop_front() {
                self.offset = end;
                return Some(Ok(record));
            }
            let chunk = match self.reader.next().await? {
                Ok(chunk) => chunk,
                Err(err) => return Some(Err(err)),
            };
            if chunk.offset != self.pushed_to {
                self.splitter = self.framing.splitter();
            }
            let records = self.splitter.push(&chunk.content);
            self.pushed_to = chunk.end();
            // Ends, from the last record's (where the held bytes start) backwards.
            let header = match self.framing {
                Framing::Protobuf => PROTO_HEADER as i64,
                Framing::JsonLines | Framing::Csv => 0,
            };
            let mut end = self.pushed_to - self.splitter.held() as i64;
            let mut ends = Vec::with_capacity(records.len());
            for record in records.iter().rev() {
                ends.push(end);
                end -= record.len() as i64 + header;
            }
            self.ready
                .extend(records.into_iter().zip(ends.into_iter().rev()));
        }
    }

    /// The journal offset just past the last record [`next`](Self::next) returned (the
    /// read's start before the first).
    pub fn offset(&self) -> i64 {
        self.offset
    }
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
    /// Bytes of `partial` known to hold no newline.
    scanned: usize,
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
        while let Some(at) = self.partial[self.scanned..]
            .iter()
            .position(|&b| b == b'\n')
        {
            lines.push(self.partial.split_to(self.scanned + at + 1).freeze());
            self.scanned = 0;
        }
        self.scanned = self.partial.len();
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

    #[test]
    fn protobuf_frames_match_gazettes_layout_and_resync() {
        // The header is the magic word and the payload length, little-endian.
        let payload = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        };
        let frame = frame_proto(&payload).expect("frame");
        assert_eq!(&frame[..4], &[0x66, 0x33, 0x93, 0x36]);
        let len = prost::Message::encoded_len(&payload) as u32;
        assert_eq!(&frame[4..8], &len.to_le_bytes());

        let mut splitter = FrameSplitter::new();
        let mut content = b"junk".to_vec();
        content.extend_from_slice(&frame);
        content.extend_from_slice(&frame);
        let got = splitter.push(&content);
        assert_eq!(got.len(), 2);
        let decoded: prost_types::Timestamp =
            prost::Message::decode(got[0].clone()).expect("decode");
        assert_eq!(decoded, payload);
        assert_eq!(splitter.skipped(), 4);
        assert_eq!(splitter.held(), 0);
    }

    proptest! {
        /// However content is cut into chunks, the frame splitter gives back the payloads.
        #[test]
        fn frames_survive_any_chunking(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 0..20),
            cuts in proptest::collection::vec(1usize..50, 0..40),
        ) {
            let content: Vec<u8> = payloads
                .iter()
                .flat_map(|p| frame_proto(&bytes_message(p)).expect("frame").to_vec())
                .collect();
            let mut splitter = FrameSplitter::new();
            let got = push_in_cuts(|c| splitter.push(c), &content, &cuts, 7);
            prop_assert_eq!(splitter.held(), 0);
            prop_assert_eq!(splitter.skipped(), 0);
            let expected: Vec<Bytes> = payloads.iter().map(|p| {
                Bytes::from(prost::Message::encode_to_vec(&bytes_message(p)))
            }).collect();
            prop_assert_eq!(got, expected);
        }
    }

    /// Pushes `content` through `push` in pieces of the lengths in `cuts`, then of `rest`
    /// bytes, and gathers what comes back.
    fn push_in_cuts(
        mut push: impl FnMut(&[u8]) -> Vec<Bytes>,
        content: &[u8],
        cuts: &[usize],
        rest: usize,
    ) -> Vec<Bytes> {
        let mut got = Vec::new();
        let mut at = 0;
        for cut in cuts.iter().copied().chain(std::iter::repeat(rest)) {
            if at >= content.len() {
                break;
            }
            let end = (at + cut).min(content.len());
            got.extend(push(&content[at..end]));
            at = end;
        }
        got
    }

    /// A protobuf message with one bytes field.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Blob {
        #[prost(bytes = "vec", tag = "1")]
        value: Vec<u8>,
    }

    fn bytes_message(bytes: &[u8]) -> Blob {
        Blob {
            value: bytes.to_vec(),
        }
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
            let got = push_in_cuts(|c| splitter.push(c), &content, &cuts, 7);
            prop_assert_eq!(splitter.held(), 0);
            let expected: Vec<Bytes> = lines.iter().map(|l| Bytes::from(format!("{l}\n"))).collect();
            prop_assert_eq!(got, expected);
        }
    }

    proptest! {
        /// Any fields (commas, quotes, line breaks included) survive framing as CSV, any
        /// chunking of the content, and splitting back.
        #[test]
        fn csv_records_survive_any_chunking(
            records in proptest::collection::vec(
                proptest::collection::vec("[a-z ,\"\n\r0-9]{0,12}", 1..5), 0..20),
            cuts in proptest::collection::vec(1usize..30, 0..40),
        ) {
            let framed: Vec<Bytes> = records.iter().map(|r| csv_record(r)).collect();
            let content: Vec<u8> = framed.iter().flat_map(|r| r.iter().copied()).collect();
            let mut splitter = Framing::Csv.splitter();
            let got = push_in_cuts(|c| splitter.push(c), &content, &cuts, 5);
            prop_assert_eq!(splitter.held(), 0);
            prop_assert_eq!(&got, &framed);
            for (record, fields) in got.iter().zip(&records) {
                let want: Vec<Vec<u8>> = fields.iter().map(|f| f.as_bytes().to_vec()).collect();
                prop_assert_eq!(csv_fields(record), want);
            }
        }
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        assert_eq!(&csv_record(&["a", "b c", ""])[..], b"a,b c,\n");
        assert_eq!(
            &csv_record(&["x,y", "say \"hi\"", "two\nlines"])[..],
            b"\"x,y\",\"say \"\"hi\"\"\",\"two\nlines\"\n"
        );
        assert_eq!(
            csv_fields(b"a,\"b,\"\"c\"\"\"\r\n"),
            vec![b"a".to_vec(), b"b,\"c\"".to_vec()]
        );
    }

    #[test]
    fn framings_are_named_and_unknown_ones_say_which() {
        assert_eq!("json-lines".parse::<Framing>(), Ok(Framing::JsonLines));
        assert_eq!("protobuf".parse::<Framing>(), Ok(Framing::Protobuf));
        assert_eq!("csv".parse::<Framing>(), Ok(Framing::Csv));
        let err = "xml".parse::<Framing>().expect_err("unknown");
        assert!(err.contains("\"xml\"") && err.contains("csv"), "{err}");
        assert_eq!(
            &json_line(&serde_json::json!({"n": 1})).expect("json")[..],
            b"{\"n\":1}\n"
        );
    }
}
