//! The mock-machines crate's tests: one binary, one module per area.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod client;
mod conformance;
mod fly_go_replay;
mod realism;
