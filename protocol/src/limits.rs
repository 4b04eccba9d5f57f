//! Limits on everything that comes from outside, in one place, asserted against each other.

/// The largest record batch the format accepts: a batch's length must fit the log's 4-byte
/// file positions with room to spare, and a decoder never allocates more than this for one.
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The most records one batch may claim. Bounds allocations made from a batch's record count.
pub const BATCH_RECORDS_MAX: usize = 1 << 20;

/// The largest records section a compressed batch may expand to. Bounds decompression so that
/// a small hostile batch cannot make a consumer allocate without limit (a "zip bomb").
pub const DECOMPRESSED_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The largest key, value, or header value one record may carry.
pub const RECORD_FIELD_BYTES_MAX: usize = BATCH_BYTES_MAX;

/// The most headers one record may carry.
pub const RECORD_HEADERS_MAX: usize = 1 << 16;

/// The most array elements one request may hold, over all its arrays: every element
/// decodes into more memory than its bytes on the wire (an empty topic name is 2 bytes
/// there and a `String` here), so without this a frame of the maximum size could take
/// gigabytes once decoded. Ten topics of the largest size (10,000 partitions) fit.
pub const REQUEST_ELEMENTS_MAX: usize = 100_000;

const _: () = assert!(BATCH_BYTES_MAX <= i32::MAX as usize);
const _: () = assert!(BATCH_BYTES_MAX <= DECOMPRESSED_BYTES_MAX);
