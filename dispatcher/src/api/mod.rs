//! The HTTP side of the dispatcher: the API, the dashboard, and what
//! guards them.
//!
//! - [`routes`]: the job API, `/metrics`, health, the OpenAPI document.
//! - [`request`]: requests parsed into domain types at the edge;
//!   [`batch_request`]: `POST /batches` bodies, each member parsed by the
//!   same [`request`] code as `POST /jobs`.
//! - [`dashboard`]: the HTML dashboard at `/`.
//! - [`auth`]: API tokens and dashboard sessions.
//! - [`server`]: the listener with connection, header and body bounds.
//! - [`limits`]: per-token rates and caps on streams and long-polls.

pub mod auth;
pub mod batch_request;
pub mod dashboard;
pub mod limits;
pub mod request;
pub mod routes;
pub mod server;
