//! What development and tests run the system with, apart from the
//! products themselves. Dev-only: the production dispatcher does not
//! depend on it.
//!
//! - [`valkey`]: [`valkey::LocalValkey`], a Valkey-compatible server
//!   started as a child process (`dispatcher dev`, the tests, the
//!   benchmark). Always built, so a crate that only needs a store for its
//!   tests (the runner) does not compile the dispatcher.
//! - [`port`]: [`port::free_port`], a free loopback port.
//! - [`mock`] (feature `system`): the mock Machines API as dev, the tests
//!   and the benchmark run it; [`mock::Limits`] is what differs.
//! - [`system`] (feature `system`): [`system::System`], the dispatcher in
//!   process against that mock: `dispatcher dev` and the system tests.
//! - [`serve`] (feature `system`): [`serve::Serve`], the `dispatcher serve`
//!   binary as a child process against that mock: the benchmark and the
//!   crash tests.

#[cfg(feature = "system")]
pub mod mock;
pub mod port;
#[cfg(feature = "system")]
pub mod serve;
#[cfg(feature = "system")]
pub mod system;
pub mod valkey;
