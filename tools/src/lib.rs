//! Shared code of the command-line tools (`mq-produce`, `mq-consume`, `mq-admin`, `mq-bench`).
//!
//! Not built yet: the tools arrive with the single-node broker issue, on top of `mq-client`.

#![forbid(unsafe_code)]
