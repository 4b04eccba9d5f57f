//! Checks our record batch codec against batches made by an independent implementation
//! (kafka-python 3.0.12's `DefaultRecordBatchBuilder`, see `data/kafka-v2-batches/`).
//!
//! Goal: byte-for-byte agreement with Kafka's v2 format. Method: every `.bin` must validate and
//! decode to exactly the header fields and records listed in `cases.json`; for the
//! uncompressed cases, building a batch from those records and header fields must reproduce
//! the file; the zstd case checks decompression only (compressed bytes vary with zstd's
//! version and level). `cases.json` is read with the small parser at the bottom, so that the
//! crate needs no JSON dependency.

// Helpers outside #[test] fns fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use bytes::Bytes;
use mq_protocol::batch;
use mq_protocol::record::records;
use mq_protocol::{BatchBuilder, Compression, Header, Record, RecordView};

use json::Json;

/// kafka-python writes 0 as the partition leader epoch of a fresh batch; Kafka's Java
/// producer (and our [`BatchBuilder`] by default) writes -1. The field is not in `cases.json`.
const KAFKA_PYTHON_LEADER_EPOCH: i32 = 0;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/kafka-v2-batches")
}

fn cases() -> Vec<Json> {
    let text = std::fs::read_to_string(data_dir().join("cases.json")).unwrap();
    let root = json::parse(&text).unwrap();
    root.get("cases").array().to_vec()
}

fn optional_bytes(value: &Json) -> Option<Bytes> {
    match value {
        Json::Null => None,
        other => Some(Bytes::from(other.string().to_owned())),
    }
}

/// The records a case lists, with their offsets.
fn expected_records(case: &Json) -> Vec<RecordView> {
    let records = case.get("records").array();
    records
        .iter()
        .map(|record| RecordView {
            offset: record.get("offset").number(),
            timestamp: record.get("timestamp").number(),
            key: optional_bytes(record.get("key")),
            value: optional_bytes(record.get("value")),
            headers: record
                .get("headers")
                .array()
                .iter()
                .map(|pair| {
                    let pair = pair.array();
                    Header::new(pair[0].string(), optional_bytes(&pair[1]))
                })
                .collect(),
        })
        .collect()
}

fn check_header(case: &Json, header: &mq_protocol::BatchHeader) {
    let field = |name: &str| case.get(name).number();
    assert_eq!(header.base_offset, field("base_offset"));
    assert_eq!(i64::from(header.magic), field("magic"));
    assert_eq!(i64::from(header.crc), field("crc"));
    assert_eq!(i64::from(header.attributes), field("attributes"));
    assert_eq!(header.producer_id, field("producer_id"));
    assert_eq!(i64::from(header.producer_epoch), field("producer_epoch"));
    assert_eq!(i64::from(header.base_sequence), field("base_sequence"));
    assert_eq!(header.base_timestamp, field("first_timestamp"));
    assert_eq!(header.max_timestamp, field("max_timestamp"));
    assert_eq!(
        i64::from(header.last_offset_delta),
        field("last_offset_delta")
    );
    assert_eq!(i64::from(header.record_count), field("record_count"));
    assert_eq!(header.partition_leader_epoch, KAFKA_PYTHON_LEADER_EPOCH);
    let compression = match case.get("compression").string() {
        "none" => Compression::None,
        "zstd" => Compression::Zstd,
        other => panic!("unknown compression {other} in cases.json"),
    };
    assert_eq!(header.compression(), Ok(compression));
}

/// Builds a batch from the case's records and header fields, as a producer would.
fn rebuild(case: &Json, compression: Compression, expected: &[RecordView]) -> Bytes {
    let producer_epoch = i16::try_from(case.get("producer_epoch").number()).unwrap();
    let base_sequence = i32::try_from(case.get("base_sequence").number()).unwrap();
    let mut builder = BatchBuilder::new(compression)
        .with_producer(
            case.get("producer_id").number(),
            producer_epoch,
            base_sequence,
        )
        .with_partition_leader_epoch(KAFKA_PYTHON_LEADER_EPOCH);
    for record in expected {
        builder.append(&record.clone().into_record()).unwrap();
    }
    builder.seal(case.get("base_offset").number()).unwrap()
}

#[test]
fn kafka_python_batches_decode_and_uncompressed_ones_rebuild_byte_for_byte() {
    let cases = cases();
    assert_eq!(cases.len(), 3);
    for case in &cases {
        let file = case.get("file").string();
        let bytes = Bytes::from(std::fs::read(data_dir().join(file)).unwrap());
        assert_eq!(bytes.len() as i64, case.get("bytes").number(), "{file}");

        let header = batch::validate(&bytes).unwrap_or_else(|error| panic!("{file}: {error}"));
        check_header(case, &header);
        header.check_producible().unwrap();

        let expected = expected_records(case);
        let decoded: Vec<RecordView> = records(&bytes).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(decoded, expected, "{file}");

        let compression = header.compression().unwrap();
        let rebuilt = rebuild(case, compression, &expected);
        match compression {
            Compression::None => assert_eq!(rebuilt, bytes, "{file} rebuilt differently"),
            Compression::Zstd => {
                // Our own zstd batch of the same records must decode the same way.
                let decoded: Vec<RecordView> = records(&rebuilt)
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert_eq!(decoded, expected, "{file} rebuilt");
            }
        }
    }
}

#[test]
fn zstd_case_values_are_slices_of_one_decompressed_buffer() {
    let bytes = Bytes::from(std::fs::read(data_dir().join("zstd-10-records.bin")).unwrap());
    let decoded: Vec<RecordView> = records(&bytes).unwrap().collect::<Result<_, _>>().unwrap();
    let first = decoded[0].value.as_ref().unwrap().as_ptr() as usize;
    let last = decoded[9].value.as_ref().unwrap().as_ptr() as usize;
    // Ten 57-byte values and their framing sit in one buffer, in order.
    assert!(last > first && last - first < 1024);
    let record: Record = decoded[3].clone().into_record();
    assert_eq!(record.key.as_deref(), Some(&b"key-3"[..]));
}

/// Just enough JSON for `cases.json`: objects, arrays, strings, integers and null.
mod json {
    #[derive(Clone, Debug, PartialEq)]
    pub(crate) enum Json {
        Null,
        Number(i64),
        String(String),
        Array(Vec<Json>),
        Object(Vec<(String, Json)>),
    }

    impl Json {
        pub(crate) fn get(&self, key: &str) -> &Json {
            match self {
                Json::Object(fields) => fields
                    .iter()
                    .find(|(name, _)| name == key)
                    .map(|(_, value)| value)
                    .unwrap_or_else(|| panic!("no field {key}")),
                other => panic!("not an object: {other:?}"),
            }
        }

        pub(crate) fn array(&self) -> &[Json] {
            match self {
                Json::Array(items) => items,
                other => panic!("not an array: {other:?}"),
            }
        }

        pub(crate) fn string(&self) -> &str {
            match self {
                Json::String(text) => text,
                other => panic!("not a string: {other:?}"),
            }
        }

        pub(crate) fn number(&self) -> i64 {
            match self {
                Json::Number(number) => *number,
                other => panic!("not a number: {other:?}"),
            }
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Json, String> {
        let mut parser = Parser {
            chars: text.chars().collect(),
            position: 0,
        };
        let value = parser.value()?;
        parser.skip_whitespace();
        if parser.position != parser.chars.len() {
            return Err(format!("trailing input at {}", parser.position));
        }
        Ok(value)
    }

    struct Parser {
        /// The whole document.
        chars: Vec<char>,
        /// Index of the next unread char.
        position: usize,
    }

    impl Parser {
        fn peek(&self) -> Option<char> {
            self.chars.get(self.position).copied()
        }

        fn next(&mut self) -> Result<char, String> {
            let next = self.peek().ok_or("unexpected end")?;
            self.position += 1;
            Ok(next)
        }

        fn expect(&mut self, expected: char) -> Result<(), String> {
            let found = self.next()?;
            if found == expected {
                Ok(())
            } else {
                Err(format!(
                    "expected {expected:?}, found {found:?} at {}",
                    self.position
                ))
            }
        }

        fn skip_whitespace(&mut self) {
            while self.peek().is_some_and(char::is_whitespace) {
                self.position += 1;
            }
        }

        fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
            for expected in word.chars() {
                self.expect(expected)?;
            }
            Ok(value)
        }

        fn value(&mut self) -> Result<Json, String> {
            self.skip_whitespace();
            match self.peek().ok_or("unexpected end")? {
                '{' => self.object(),
                '[' => self.array(),
                '"' => self.string().map(Json::String),
                'n' => self.literal("null", Json::Null),
                _ => self.number(),
            }
        }

        fn object(&mut self) -> Result<Json, String> {
            self.expect('{')?;
            let mut fields = Vec::new();
            self.skip_whitespace();
            if self.peek() == Some('}') {
                self.position += 1;
                return Ok(Json::Object(fields));
            }
            loop {
                self.skip_whitespace();
                let name = self.string()?;
                self.skip_whitespace();
                self.expect(':')?;
                fields.push((name, self.value()?));
                self.skip_whitespace();
                match self.next()? {
                    ',' => continue,
                    '}' => return Ok(Json::Object(fields)),
                    other => return Err(format!("unexpected {other:?} in object")),
                }
            }
        }

        fn array(&mut self) -> Result<Json, String> {
            self.expect('[')?;
            let mut items = Vec::new();
            self.skip_whitespace();
            if self.peek() == Some(']') {
                self.position += 1;
                return Ok(Json::Array(items));
            }
            loop {
                items.push(self.value()?);
                self.skip_whitespace();
                match self.next()? {
                    ',' => continue,
                    ']' => return Ok(Json::Array(items)),
                    other => return Err(format!("unexpected {other:?} in array")),
                }
            }
        }

        fn string(&mut self) -> Result<String, String> {
            self.expect('"')?;
            let mut text = String::new();
            loop {
                match self.next()? {
                    '"' => return Ok(text),
                    '\\' => match self.next()? {
                        'n' => text.push('\n'),
                        't' => text.push('\t'),
                        'u' => {
                            let hex: String =
                                (0..4).map(|_| self.next()).collect::<Result<_, _>>()?;
                            let code = u32::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
                            text.push(char::from_u32(code).ok_or("surrogate escapes unsupported")?);
                        }
                        other => text.push(other),
                    },
                    other => text.push(other),
                }
            }
        }

        fn number(&mut self) -> Result<Json, String> {
            let start = self.position;
            while self.peek().is_some_and(|c| c == '-' || c.is_ascii_digit()) {
                self.position += 1;
            }
            let digits: String = self.chars[start..self.position].iter().collect();
            digits
                .parse()
                .map(Json::Number)
                .map_err(|_| format!("bad number {digits:?} at {start}"))
        }
    }
}
