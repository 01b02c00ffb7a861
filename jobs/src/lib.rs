//! The job model and the job store, shared by the dispatcher and the runner.
//!
//! - [`model`]: `JobId`, `Kind`, `JobStatus`, `Outcome`, `JobSpec`, `Job`.
//! - [`store`]: [`Store`], whose methods are the job's state transitions,
//!   each one atomic Lua script in Valkey.
//! - [`events`]: the change notifications those scripts publish.
//! - [`schedules`]: recurring jobs (cron or every N seconds).
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

pub mod events;
pub mod model;
pub mod pacing;
pub mod pool;
pub mod schedules;
pub mod store;

pub use events::{EventKind, JobEvent};
pub use model::*;
pub use pool::{PoolMachineRef, PoolRecord, PoolStats, Released};
pub use schedules::Schedule;
pub use store::{
    AttemptRef, CancelResult, Claim, EnqueueOptions, Enqueued, Heartbeat, Idempotency, ListFilter,
    Page, Report, ReportKind, RetryResult, Stats, Store, StoreConfig, StoreError, TakeOver,
};
