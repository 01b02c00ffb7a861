//! The runner crate's tests: one binary, one module per area.

#[path = "../common/mod.rs"]
mod common;

mod commands;
mod examples;
mod handlers;
mod logs;
