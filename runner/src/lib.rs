//! The runner: the program booted in every job machine.
//!
//! It reads which attempt it is from its environment ([`RunnerEnv`]),
//! claims that attempt in the job store (`starting` → `running`), runs the
//! handler registered for the job's kind while it heartbeats, reports the
//! result or error, and exits. Heartbeats, fencing and result writing live
//! here, never in handler code: a handler is just
//! `async fn(Context, Value) -> Result<Value, JobError>`.
//!
//! ```no_run
//! use runner::{Context, JobError, Runner};
//! use serde_json::{json, Value};
//!
//! async fn thumbnail(ctx: Context, params: Value) -> Result<Value, JobError> {
//!     tracing::info!(job = %ctx.job_id(), "making a thumbnail");
//!     Ok(json!({"done": params}))
//! }
//!
//! fn main() {
//!     Runner::new().handler("thumbnail", thumbnail).main()
//! }
//! ```
//!
//! Exit codes: see [`exit`].

mod context;
pub mod demo;
mod env;
mod error;
mod run;

pub use context::Context;
pub use env::{EnvError, RunnerEnv};
pub use error::JobError;
pub use run::{exit, Runner};
