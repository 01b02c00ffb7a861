//! The HTTP side of the dispatcher: the API, the dashboard, and what
//! guards them.
//!
//! - [`routes`]: the job API, `/metrics`, health, the OpenAPI document.
//! - [`request`]: requests parsed into domain types at the edge;
//!   [`batch_request`]: `POST /batches` bodies, each member parsed by the
//!   same [`request`] code as `POST /jobs`; [`run_request`]: the run
//!   management parts (tags, expiry, OOM ladder) and a retry's overrides;
//!   [`children`]: jobs that enqueue jobs, parsed by runners against the
//!   policy the dispatchers publish in the store.
//! - [`dashboard`]: the HTML dashboard at `/`.
//! - [`auth`]: API tokens and dashboard sessions.
//! - [`server`]: the listener with connection, header and body bounds.
//! - [`limits`]: per-token rates and caps on streams and long-polls.

pub mod auth;
pub mod batch_request;
pub mod children;
pub mod dashboard;
pub mod limits;
pub mod request;
pub mod routes;
pub mod run_request;
pub mod server;
