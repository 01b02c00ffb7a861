//! The job model and the job store, shared by the dispatcher and the runner.
//!
//! - [`address`]: [`StoreAddress`], the store URL forms (standalone,
//!   TLS, Sentinel, cluster) parsed into a domain type.
//! - [`tls`]: [`CaCert`] and the TLS connector of `rediss://` URLs.
//! - [`model`]: `JobId`, `Kind`, `JobStatus`, `Outcome`, `JobSpec`, `Job`.
//! - [`store`]: [`Store`], whose methods are the job's state transitions,
//!   each one atomic Lua script in Valkey.
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
//! - [`children`]: jobs that enqueue jobs, fenced by the parent's attempt.
//! - [`redact`]: URLs with their credentials hidden, for logs.
//! - [`pacing`]: a token bucket shared by every dispatcher (the app's
//!   Machines API create budget).
//! - [`pool`]: the warm pool of stopped machines, claimed one attempt at
//!   a time.
//!
//! The lifecycle:
//!
//! ```text
//! scheduled ──due──▶ queued ──claim──▶ starting ──runner──▶ running
//!     ▲                ▲                  │                    │
//!     └──── retry ─────┼──────────────────┴──── finish ────────┤
//!        (backoff)     │                                       ▼
//!                      └──── retry by hand ──── failed | cancelled | succeeded
//! ```

pub mod address;
pub mod children;
pub mod events;
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

pub use address::{AddressError, StoreAddress, Topology};
pub use children::ChildEnqueued;
pub use events::{EventKind, JobEvent};
pub use job_env::Secrets;
pub use logs::{Appended, LogBatch, LogCursor, LogEntry, LogLine, LogStream, LogSummary};
pub use model::*;
pub use pool::{PoolMachineRef, PoolRecord, PoolStats, Released};
pub use redact::redact_url;
pub use run_options::{ChildOf, OomLadder, RunOptions, Tag};
pub use schedules::Schedule;
pub use store::{
    Activity, AttemptRef, CancelResult, Claim, EnqueueOptions, Enqueued, Fenced, Heartbeat,
    Idempotency, ListFilter, MinuteCounts, Owned, Page, Recorded, Report, ReportKind,
    RetryOverrides, RetryResult, Stats, Store, StoreConfig, StoreError, TakeOver,
    ACTIVITY_MAX_MINUTES,
};
pub use tls::{CaCert, CaCertError};
