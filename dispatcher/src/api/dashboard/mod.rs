//! The dashboard: server-rendered HTML at `/` (jobs, filters, summary,
//! charts of the last hour)
//! and `/jobs/{id}` (one job, when a browser asks for HTML), `/batches` and
//! `/batches/{id}` ([`batches`]: progress and members), with a small
//! script for live updates, the job page's log pane (following the logs
//! endpoint's SSE), the Retry / Cancel buttons, and flow control's
//! pause and resume ([`flow`]). No build step:
//! the stylesheet and script are inlined from files beside this one.
//! Routes are in [`crate::api::routes`]; auth (the login cookie) in
//! [`crate::api::auth`].

pub mod batches;
pub mod charts;
pub mod flow;
pub mod html;
pub mod pages;
