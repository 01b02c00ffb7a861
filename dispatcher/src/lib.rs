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
//! Three groups, and the wiring they share:
//!
//! - [`api`]: the HTTP side. [`api::routes`] (the API; requests parsed
//!   into domain types at the edge in [`api::request`], nothing slow in a
//!   request), [`api::dashboard`] (the HTML dashboard at `/`, behind the
//!   same auth), [`api::auth`], [`api::server`] (the listener with
//!   connection, header and body bounds) and [`api::limits`] (per-token
//!   rates and caps on streams and long-polls).
//! - [`engine`]: what runs the jobs. [`engine::launcher`] takes queued jobs
//!   while a machine slot is free (the cap is counted in Valkey, so it
//!   holds across dispatchers) and starts a [`engine::supervisor`] for each
//!   attempt, which boots the machine, learns how it ended, enforces the
//!   timeout and cancellation, records the outcome and destroys the
//!   machine; [`engine::terminal`] follows a job's final state (counter,
//!   callback through [`engine::callbacks`], to hosts
//!   [`engine::callback_targets`] allows); [`engine::leases`],
//!   [`engine::hub`] (one pub/sub subscription, fanned out), the warm
//!   [`engine::pool`], [`engine::placement`] (capacity errors, then the next
//!   region), [`engine::pacing`], [`engine::schedules`], [`engine::sweeper`]
//!   (orphaned machines, old records), [`engine::machine_name`] and
//!   [`engine::retry`].
//! - [`cli`]: the command line: `serve`, `dev` (composed by the root
//!   package's binary, `src/bin/dispatcher/dev.rs`, with the mock), and
//!   `jobs ...`, a client built on [`cli::client`] (typed HTTP,
//!   [`cli::sse`] for `--wait`) and [`cli::output`].
//! - [`configuration`], [`startup`], [`telemetry`], [`shutdown`],
//!   [`metrics`] (Prometheus text at `/metrics`; [`flow_metrics`]: per-key
//!   gauges of the busiest concurrency keys only), [`regions`]: wiring.

pub mod api;
pub mod cli;
pub mod configuration;
pub mod engine;
pub mod flow_metrics;
pub mod metrics;
pub mod regions;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
