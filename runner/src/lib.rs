//! The runner: the program booted in every job machine, and the library to
//! write job handlers with.
//!
//! ## What it does
//! It reads which attempt it is from its environment ([`RunnerEnv`]),
//! claims that attempt in the job store (`starting` → `running`), runs the
//! handler registered for the job's kind while a watchdog heartbeats,
//! reports the result or error, and exits with one of the [`exit`] codes.
//! Heartbeats, fencing and result writing live here, never in handler code:
//! a handler only computes, so it cannot get the protocol wrong, and job
//! code never holds the attempt's token.
//!
//! On a pooled machine (`JOB_POOLED=1`, see [`PooledEnv`]) it asks the
//! store which attempt its machine was claimed for instead, and exits at
//! once when there is none. The job's `machine.env` reaches handlers
//! through [`Context::env`] and commands through their environment.
//!
//! ## Handlers in Rust
//! A handler is an async function of a [`Context`] and its params that
//! returns a result or a [`JobError`]. The params are anything
//! [`FromParams`]: the raw [`serde_json::Value`], or [`Json<T>`] for any
//! `T: Deserialize` (params that don't fit fail the attempt permanently,
//! naming the field). The result is anything `Serialize`.
//!
//! ```no_run
//! use runner::{Context, JobError, Json, Runner};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Resize { image: String, width: u32 }
//!
//! #[derive(Serialize)]
//! struct Resized { path: String }
//!
//! async fn resize(ctx: Context, Json(p): Json<Resize>) -> Result<Resized, JobError> {
//!     ctx.progress(50, "resizing").await;
//!     tracing::info!(image = %p.image, "resizing");
//!     Ok(Resized { path: format!("{}-{}w.png", p.image, p.width) })
//! }
//!
//! fn main() {
//!     Runner::new().handler("resize", resize).main()
//! }
//! ```
//!
//! ## Jobs that enqueue jobs
//! [`Context::enqueue`] and [`Context::enqueue_keyed`] store child jobs
//! (each a `POST /jobs` body, validated the same way), fenced by the
//! attempt and deduplicated by a key within the parent, so a retried
//! parent ends with each child once. [`Context::enqueue_batch`] and
//! [`Context::enqueue_batch_keyed`] do the same for a whole batch (a
//! `POST /batches` body). Commands do both through a unix socket
//! ([`command`]).
//!
//! ## Commands, in any language
//! A kind may instead run a program ([`Runner::command`], or configuration
//! read by [`Runner::main`]: see [`Commands`]); [`command`] documents the
//! contract: params on stdin, the result as the last JSON line on stdout,
//! `PROGRESS` lines on stderr, exit code 65 for a permanent failure.
//!
//! ## Logs
//! Everything an attempt prints is kept with the job ([`logs`]): a
//! command's stdout and stderr lines, a Rust handler's `tracing` events in
//! its attempt's span and its [`Context::log`] lines. They are shipped to
//! the store in batches while the job runs and flushed before the report,
//! so they survive the machine; `GET /jobs/{id}/logs` reads them.
//!
//! ## Stopping
//! [`Context::cancelled`] resolves when the job is cancelled, when the
//! machine is being stopped (SIGTERM), when the attempt was superseded, and
//! [`wrap_up_window`] before the job's timeout, so a handler can save its
//! work and return. At the timeout itself the runner stops waiting, drops
//! the handler (killing a command's process group) and reports the timeout.

mod children;
pub mod command;
mod config;
mod context;
pub mod demo;
mod env;
mod error;
mod extract;
pub mod logs;
mod pooled;
mod run;
mod stop;

pub use children::{Child, ChildBatch, EnqueueError};
pub use config::{Commands, ConfigError, COMMANDS_VAR, CONFIG_VAR, DEFAULT_CONFIG_PATH};
pub use context::Context;
pub use env::{EnvError, MachineEnv, RunnerEnv, DISPATCHER_SECRETS};
pub use error::JobError;
pub use extract::{FromParams, Json};
pub use pooled::PooledEnv;
pub use run::{exit, Runner};
pub use stop::{wrap_up_window, StopReason};
