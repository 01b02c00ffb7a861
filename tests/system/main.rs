//! The system tests: one binary, one module per area. Every test starts
//! its own Valkey, mock Machines API and dispatcher on random loopback
//! ports, so tests share nothing but this process; none of them changes
//! the process environment. (`tests/metrics.rs` stays a binary of its own:
//! it asserts exact values of the process-wide metrics counters.)

#[path = "../../runner/tests/common/mod.rs"]
mod common;
mod support;

mod api;
mod batches;
mod browser;
mod chaos;
mod child_batches;
mod cli;
mod dashboard;
mod dashboard_sessions;
mod deploy_files;
mod failures;
mod flow_control;
mod fly_fidelity;
mod job_logs;
mod job_options;
mod logs;
mod no_secrets_printed;
mod openapi;
mod pacing;
mod placement;
mod run_management;
mod runner_process;
mod runner_system;
mod scale_out;
mod security;
mod server_limits;
mod store;
mod store_deployments;
mod upkeep;
mod walking_skeleton;
mod warm_pool;
