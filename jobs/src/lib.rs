//! The job model and the job store, shared by the dispatcher and the runner.
//!
//! - [`address`]: [`StoreAddress`], the store URL forms (standalone,
//!   TLS, Sentinel, cluster) parsed into a domain type.
//! - [`tls`]: [`CaCert`] and the TLS connector of `rediss://` URLs.
//! - [`model`]: `JobId`, `Kind`, `JobStatus`, `Outcome`, `JobSpec`, `Job`.
//! - [`store`]: [`Store`], whose methods are the job's state transitions,
//!   each one atomic Lua script in Valkey.
//! - [`events`]: the change notifications those scripts publish.
//! - [`schedules`]: recurring jobs (cron or every N seconds).
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
pub mod events;
pub mod model;
pub mod schedules;
pub mod store;
pub mod tls;

pub use address::{AddressError, StoreAddress, Topology};
pub use events::{EventKind, JobEvent};
pub use model::*;
pub use schedules::Schedule;
pub use store::{
    AttemptRef, CancelResult, Claim, EnqueueOptions, Enqueued, Heartbeat, Idempotency, ListFilter,
    Page, Report, ReportKind, RetryResult, Stats, Store, StoreConfig, StoreError, TakeOver,
};
pub use tls::{CaCert, CaCertError};
