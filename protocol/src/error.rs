//! Errors of the record batch format. Decoding never panics: every malformed input ends here.

/// Why bytes are not a valid record batch (or records section).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the structure being read needs.
    #[error("truncated: needed {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    /// The magic byte is not 2: not a v2 record batch.
    #[error("unsupported magic {magic}, expected 2")]
    BadMagic { magic: i8 },
    /// The batch length field is below the header size or above the limit.
    #[error("batch length {length} out of range")]
    BadLength { length: i64 },
    /// The buffer holds more or fewer bytes than the header's length says.
    #[error("batch length says {expected} bytes, buffer has {actual}")]
    LengthMismatch { expected: usize, actual: usize },
    /// The CRC-32C over attributes..end does not match the header's.
    #[error("crc mismatch: header says {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    /// Compression codec bits name a codec we do not support.
    #[error("unsupported compression codec {codec}")]
    UnsupportedCompression { codec: u8 },
    /// The header's counts disagree with each other or with the limits.
    #[error("invalid record count {record_count} with last offset delta {last_offset_delta}")]
    BadRecordCount {
        record_count: i32,
        last_offset_delta: i32,
    },
    /// A control or transactional batch where only plain data batches are accepted.
    #[error("control and transactional batches are not supported")]
    UnsupportedAttributes { attributes: i16 },
    /// A varint is longer than its type allows.
    #[error("malformed varint")]
    BadVarint,
    /// A record inside the batch is malformed.
    #[error("malformed record {index}: {reason}")]
    BadRecord { index: usize, reason: &'static str },
    /// The records section decoded to a different number of records than the header says.
    #[error("header says {expected} records, found {actual}")]
    RecordCountMismatch { expected: usize, actual: usize },
    /// Decompression failed or would exceed the decompressed-size limit.
    #[error("decompression failed: {reason}")]
    Decompression { reason: String },
}

/// Why a frame or message could not be decoded. The connection that sent it gets an error
/// response where possible, then is closed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the structure being read needs.
    #[error("truncated message: needed {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    /// Bytes left over after the message.
    #[error("{count} trailing bytes after the message")]
    TrailingBytes { count: usize },
    /// A field holds a value it cannot hold.
    #[error("invalid {what}")]
    Invalid { what: &'static str },
    /// A frame's length prefix is larger than this side accepts.
    #[error("frame of {length} bytes exceeds the limit of {limit}")]
    FrameTooLarge { length: u64, limit: usize },
    /// An API key this side does not know.
    #[error("unknown api key {api_key}")]
    UnknownApi { api_key: i16 },
    /// A version of an API this side does not speak.
    #[error("unsupported version {api_version} of api key {api_key}")]
    UnsupportedVersion { api_key: i16, api_version: i16 },
    /// An I/O error under the codec (needed by `tokio_util::codec`).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// An error code on the wire: per request, topic or partition. Where a meaning is one of
/// Kafka's, the number and name are Kafka's; our own start at 1000. A retired code is never
/// reused. Unknown codes (from a newer peer) are kept as numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub i16);

macro_rules! error_codes {
    ($($name:ident = $value:expr, $retriable:expr, $text:expr;)*) => {
        impl ErrorCode {
            $(
                #[doc = $text]
                pub const $name: ErrorCode = ErrorCode($value);
            )*

            /// The code's name, as in Kafka (`UNKNOWN_TOPIC_OR_PARTITION`); `UNKNOWN_CODE`
            /// for a number this side does not know.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $($value => stringify!($name),)*
                    _ => "UNKNOWN_CODE",
                }
            }

            /// What the code means, in a few words.
            pub fn description(self) -> &'static str {
                match self.0 {
                    $($value => $text,)*
                    _ => "an error code this client does not know",
                }
            }

            /// Whether retrying the same request may succeed.
            pub fn is_retriable(self) -> bool {
                match self.0 {
                    $($value => $retriable,)*
                    _ => false,
                }
            }
        }
    };
}

error_codes! {
    UNKNOWN_SERVER_ERROR = -1, false, "the server had an unexpected error";
    NONE = 0, false, "no error";
    OFFSET_OUT_OF_RANGE = 1, false, "the offset is outside the partition's log";
    CORRUPT_MESSAGE = 2, false, "the record batch failed validation (CRC, length or counts)";
    UNKNOWN_TOPIC_OR_PARTITION = 3, true, "the topic or partition does not exist";
    INVALID_FETCH_SIZE = 4, false, "the fetch size is invalid";
    LEADER_NOT_AVAILABLE = 5, true, "the partition has no leader right now";
    NOT_LEADER_OR_FOLLOWER = 6, true, "this broker does not lead the partition";
    REQUEST_TIMED_OUT = 7, true, "the request timed out";
    MESSAGE_TOO_LARGE = 10, false, "the record batch is larger than the broker accepts";
    INVALID_TOPIC_EXCEPTION = 17, false, "the topic name is invalid";
    RECORD_LIST_TOO_LARGE = 18, false, "the request's records are larger than the broker accepts";
    INVALID_REQUIRED_ACKS = 21, false, "acks must be 0, 1 or -1 (all)";
    UNSUPPORTED_VERSION = 35, false, "the broker does not speak this version of the api";
    TOPIC_ALREADY_EXISTS = 36, false, "the topic already exists";
    INVALID_PARTITIONS = 37, false, "the partition count is invalid";
    INVALID_REPLICATION_FACTOR = 38, false, "the replication factor is invalid";
    INVALID_CONFIG = 40, false, "a topic config key or value is invalid";
    INVALID_REQUEST = 42, false, "the request is malformed";
    POLICY_VIOLATION = 44, false, "the request violates the broker's policy";
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45, true, "the batch's sequence number does not follow the producer's last appended batch: resend the earlier batches first";
    DUPLICATE_SEQUENCE_NUMBER = 46, false, "the batch repeats sequence numbers already appended, but is not one of the producer's recent batches";
    OFFSET_METADATA_TOO_LARGE = 12, false, "the offset's metadata text is longer than the broker accepts";
    COORDINATOR_LOAD_IN_PROGRESS = 14, true, "the coordinator is still loading committed offsets";
    COORDINATOR_NOT_AVAILABLE = 15, true, "the group coordinator is not available";
    NOT_COORDINATOR = 16, true, "this broker does not coordinate the group";
    ILLEGAL_GENERATION = 22, false, "the member's generation is not the group's current one";
    INCONSISTENT_GROUP_PROTOCOL = 23, false, "the member shares no assignment strategy with the group";
    INVALID_GROUP_ID = 24, false, "the group id is invalid";
    UNKNOWN_MEMBER_ID = 25, false, "the coordinator does not know this member";
    INVALID_SESSION_TIMEOUT = 26, false, "the session timeout is outside the broker's bounds";
    REBALANCE_IN_PROGRESS = 27, false, "the group is rebalancing: rejoin";
    NOT_CONTROLLER = 41, true, "this node is not the controller";
    REASSIGNMENT_IN_PROGRESS = 60, false, "the partition is being moved already";
    INVALID_REPLICA_ASSIGNMENT = 39, false, "the replica assignment is invalid";
    BROKER_NOT_AVAILABLE = 8, true, "the broker is not available";
    FENCED_LEADER_EPOCH = 74, false, "the leader epoch in the request is older than the broker's";
    UNKNOWN_LEADER_EPOCH = 76, true, "the leader epoch in the request is newer than the broker's";
    STALE_BROKER_EPOCH = 77, false, "the broker epoch is not the broker's current registration";
    KAFKA_STORAGE_ERROR = 56, true, "the broker could not read or write the partition's log";
    NON_EMPTY_GROUP = 68, false, "the group has active members";
    GROUP_ID_NOT_FOUND = 69, false, "the group does not exist";
    GROUP_MAX_SIZE_REACHED = 81, false, "the group has as many members as the broker allows";
    UNKNOWN_API = 1000, false, "the broker does not know this api key";
    BROKER_SHUTTING_DOWN = 1001, true, "the broker is shutting down";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.name(), self.0, self.description())
    }
}

impl ErrorCode {
    /// Whether this is [`ErrorCode::NONE`].
    pub fn is_ok(self) -> bool {
        self == ErrorCode::NONE
    }
}
