//! What development and tests run the system with, apart from the
//! products themselves, so a crate that only needs a store for its tests
//! (the runner) does not compile the dispatcher.
//!
//! - [`valkey`]: [`valkey::LocalValkey`], a Valkey-compatible server
//!   started as a child process (`dispatcher dev`, the tests, the
//!   benchmark).

pub mod valkey;
