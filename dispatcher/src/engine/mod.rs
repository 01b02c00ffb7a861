//! What runs the jobs: claims, machines, leases, and what follows.
//!
//! - [`launcher`]: takes queued jobs while a machine slot is free.
//! - [`supervisor`]: one per attempt: create, wait, finish, destroy.
//! - [`terminal`]: what follows a job's final state.
//! - [`callbacks`], [`callback_targets`]: the signed POST of a finished
//!   job, and where it may go; [`batch_callbacks`]: the outbox of
//!   completed batches' callbacks.
//! - [`leases`]: renews this dispatcher's leases in bulk.
//! - [`hub`]: one pub/sub subscription, fanned out.
//! - [`pool`]: the warm pool of stopped machines.
//! - [`placement`]: capacity errors retried, then the next region.
//! - [`pacing`]: the Machines API create budget shared through the store.
//! - [`schedules`]: recurring jobs.
//! - [`sweeper`]: orphaned machines and old records.
//! - [`machine_name`]: `job-{id}-{attempt}`, written and read back.
//! - [`retry`]: the backoff between attempts.

pub mod batch_callbacks;
pub mod callback_targets;
pub mod callbacks;
pub mod hub;
pub mod launcher;
pub mod leases;
pub mod machine_name;
pub mod pacing;
pub mod placement;
pub mod pool;
pub mod retry;
pub mod schedules;
pub mod supervisor;
pub mod sweeper;
pub mod terminal;
