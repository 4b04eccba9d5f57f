//! Newtypes for the domain's numbers, so that an offset is never confused with a byte position,
//! and how a broker's address is written.

use std::fmt;

/// A record's logical position in its partition: the first record ever appended is offset 0.
///
/// On the wire and in the batch header offsets are `i64` (as in Kafka); inside our code they
/// are never negative, so the newtype wraps a `u64`. Conversions from the wire go through
/// [`Offset::from_wire`], which rejects negative values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub u64);

impl Offset {
    /// The largest offset a batch header can carry.
    pub const MAX: Offset = Offset(i64::MAX as u64);

    /// Converts a wire value; `None` when it is negative.
    pub fn from_wire(value: i64) -> Option<Offset> {
        u64::try_from(value).ok().map(Offset)
    }

    /// The wire (and batch header) representation.
    pub fn to_wire(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// `self + delta`, saturating at [`Offset::MAX`].
    pub fn plus(self, delta: u64) -> Offset {
        Offset(self.0.saturating_add(delta).min(Offset::MAX.0))
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A broker's `host:port` as clients dial it, with an IPv6 host in brackets.
pub fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_brackets_bare_ipv6_hosts_only() {
        assert_eq!(host_port("127.0.0.1", 9092), "127.0.0.1:9092");
        assert_eq!(host_port("broker-1.example", 9092), "broker-1.example:9092");
        assert_eq!(host_port("::1", 9700), "[::1]:9700");
        assert_eq!(host_port("[::1]", 9700), "[::1]:9700");
    }
}
