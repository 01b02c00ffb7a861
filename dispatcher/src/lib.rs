//! The dispatcher: runs each background job on a fresh machine.
//!
//! ```text
//! client ─POST /jobs─▶ routes ─enqueue─▶ Valkey ◀─claim── launcher
//!                                          ▲  │                │ spawns
//!                        runner reports ───┘  │ events         ▼
//!                                             └──────────▶ supervisor ─▶ Machines API
//!                                                          (one per attempt: create, wait,
//!                                                           finish the attempt, destroy)
//! ```
//!
//! - [`routes`]: the HTTP API. Requests are parsed into domain types at the
//!   edge ([`request`]); nothing slow happens in a request.
//! - [`launcher`]: takes queued jobs while a machine slot is free (the cap
//!   is counted in Valkey, so it holds across dispatchers) and starts a
//!   [`supervisor`] for each attempt.
//! - [`supervisor`]: boots the attempt's machine, learns how it ended (the
//!   runner's report, or the machine's exit for crashes), enforces the
//!   timeout and cancellation, records the outcome, destroys the machine.
//! - [`dashboard`]: the HTML dashboard at `/` (behind the same auth).
//! - [`callbacks`]: the signed POST of a finished job to its `callback_url`.
//! - [`callback_targets`]: where a `callback_url` may point (public hosts only, by default).
//! - [`run_request`]: the run management parts of a request (tags,
//!   expiry, OOM ladder) and of a retry with overrides.
//! - [`children`]: jobs that enqueue jobs, through their runner.
//! - [`schedules`]: recurring jobs; every dispatcher fires due ticks.
//! - [`pacing`]: the Machines API create budget shared through the store.
//! - [`placement`]: capacity errors retried, then the job's next region.
//! - [`pool`]: the warm pool of stopped machines (`--warm-pool`): fill,
//!   claim, return, replace.
//! - [`sweeper`]: destroys orphaned machines and purges old job records.
//! - [`metrics`]: Prometheus text at `/metrics`: the store's gauges plus
//!   this process's counters and histograms.
//! - [`hub`]: one pub/sub subscription per dispatcher, fanned out to the
//!   supervisors and the launcher, so nothing polls.
//! - [`leases`]: renews every lease this dispatcher holds in one store
//!   call per few hundred attempts, so a large fleet stays cheap.
//! - [`server`]: the listener with connection, header and body bounds;
//!   [`limits`]: per-token rates and caps on streams and long-polls.
//! - [`configuration`], [`startup`], [`telemetry`], [`shutdown`]: wiring.
//! - [`dev`]: `dispatcher dev`, the whole system on a laptop.
//! - [`jobs_command`]: `dispatcher jobs ...`, a command-line client built
//!   on [`client`] (typed HTTP, [`sse`] for `--wait`) and [`output`].

pub mod auth;
pub mod callback_targets;
pub mod callbacks;
pub mod children;
pub mod cli;
pub mod client;
pub mod configuration;
pub mod dashboard;
pub mod dev;
pub mod hub;
pub mod jobs_command;
pub mod launcher;
pub mod leases;
pub mod limits;
pub mod metrics;
pub mod output;
pub mod pacing;
pub mod placement;
pub mod pool;
pub mod regions;
pub mod request;
pub mod retry;
pub mod routes;
pub mod run_request;
pub mod schedules;
pub mod server;
pub mod shutdown;
pub mod sse;
pub mod startup;
pub mod supervisor;
pub mod sweeper;
pub mod telemetry;
pub mod valkey;
