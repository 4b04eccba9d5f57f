//! The integration tests, in one binary so that they link once.
//!
//! For now: the tidy checks. Tests that start real broker processes join them with the
//! broker's server.

mod tidy;
