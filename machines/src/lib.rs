//! The Fly.io Machines REST API, as this project uses it.
//!
//! Two halves share one set of wire types so that the client and the mock
//! server can never disagree about a field name:
//!
//! - [`types`]: the JSON bodies (`Machine`, `CreateMachineRequest`, events,
//!   leases, errors), written after Fly's published OpenAPI description and
//!   the facts collected in `shared/fly-machines-api.md`.
//! - [`client`]: [`MachinesClient`], a small `reqwest` client that retries
//!   429, 5xx and connection errors with backoff (honouring `Retry-After`)
//!   where a call may be repeated, never sends a create twice blindly (it
//!   adopts the machine of a lost answer or a taken name instead), never
//!   retries other 4xx, and puts a timeout on every call.
//! - [`pacing`]: token buckets at Fly's published rate limits, so calls
//!   wait their turn here instead of drawing 429s.
//! - [`metrics`]: what the client counts (calls by endpoint and status,
//!   retries and their waits).

pub mod client;
pub mod metrics;
pub mod pacing;
pub mod types;

pub use client::{ClientConfig, ListFilter, MachinesClient, MachinesError, WaitOutcome};
pub use types::*;
