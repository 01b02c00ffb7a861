//! The job model and the job store, shared by the dispatcher and the runner.
//!
//! - [`address`]: [`StoreAddress`], the store URL forms (standalone,
//!   TLS, Sentinel, cluster) parsed into a domain type.
//! - [`tls`]: [`CaCert`] and the TLS connector of `rediss://` URLs.
//! - [`model`]: `JobId`, `Kind`, `JobStatus`, `Outcome`, `JobSpec`, `Job`.
//! - [`store`]: [`Store`], whose methods are the job's state transitions,
//!   each one atomic Lua script in Valkey.
//! - [`activity`]: per-minute counters and samples of the last hours,
//!   for the dashboard's charts.
//! - [`events`]: the change notifications those scripts publish.
//! - [`logs`]: each attempt's log lines, appended by the runner in batches.
//! - [`job_env`]: which variables a job may set (`env`, `secrets`).
//! - [`schedules`]: recurring jobs (cron or every N seconds).
//! - [`sessions`]: the dashboard's login sessions.
//! - [`run_options`]: tags, expiry, the OOM ladder and a child's parent:
//!   what a job carries for run management (`run_options.lua` keeps
//!   their indexes; `claim.lua` ends jobs past their expiry `expired`
//!   before it picks one, and every launcher claims at least once a
//!   second, even with every slot taken).
//! - [`children`]: jobs that enqueue jobs and batches, fenced by the
//!   parent's attempt.
//! - [`redact`]: URLs with their credentials hidden, for logs.
//! - [`pacing`]: a token bucket shared by every dispatcher (the app's
//!   Machines API create budget).
//! - [`flow`]: flow control: concurrency keys and limits, fair queueing
//!   across keys, rate limits, singletons, debounce, pause and resume.
//! - [`pool`]: the warm pool of stopped machines, claimed one attempt at
//!   a time.
//! - [`fan_in`]: batches, jobs that wait for others (`after`), and `then`
//!   jobs run once what they wait for finished.
//!
//! The job lifecycle is one table the store enforces (`TRANSITIONS` in
//! `scripts/prelude.lua`, mirrored by [`JobStatus::successors`]), drawn with
//! every edge's script and caller in `docs/state-machine.md`. A job that
//! waits for others (`after`, or a batch's `then` job) starts `waiting`,
//! and moves to `queued` (or `scheduled`) once they are final, or to
//! `cancelled` when one it needed did not succeed ([`fan_in`]).

pub mod activity;
pub mod address;
pub mod children;
pub mod events;
pub mod fan_in;
pub mod flow;
pub mod job_env;
mod list_filter;
pub mod logs;
pub mod model;
pub mod pacing;
pub mod pool;
pub mod redact;
pub mod run_options;
pub mod schedules;
pub mod sessions;
pub mod store;
pub mod tls;

pub use activity::{Activity, MinuteCounts, MinuteLoad, ACTIVITY_MAX_MINUTES};
pub use address::{AddressError, StoreAddress, Topology};
pub use children::{ChildBatchEnqueued, ChildEnqueued};
pub use events::{EventKind, JobEvent};
pub use fan_in::{
    Batch, BatchId, BatchPage, BatchParent, NewBatch, NewJob, RunIf, Submit, Submitted,
};
pub use flow::{FlowKey, FlowOptions, FlowOverview, RateLimit, Scope, SingletonPolicy, WaitingFor};
pub use job_env::Secrets;
pub use logs::{
    Appended, LogBatch, LogCursor, LogEncoder, LogEntry, LogLine, LogStream, LogSummary,
};
pub use model::*;
pub use pool::{PoolMachineRef, PoolRecord, PoolStats, Released};
pub use redact::redact_url;
pub use run_options::{ChildOf, OomLadder, RunOptions, Tag};
pub use schedules::Schedule;
pub use store::{
    AttemptRef, CancelResult, Claim, EnqueueOptions, Enqueued, Fenced, Finished, Heartbeat,
    Idempotency, ListFilter, Owned, Page, Recorded, Report, ReportKind, RetryOverrides,
    RetryResult, Stats, Store, StoreConfig, StoreError, TakeOver,
};
pub use tls::{CaCert, CaCertError};
