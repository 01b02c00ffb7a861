//! The mock Machines API as development, the tests and the benchmark run
//! it: on loopback, requiring one token, booting each machine as a local
//! process of the command the dispatcher puts in the machine's config (the
//! `runner` binary). What differs between them is how much of Fly's
//! pacing it imitates: [`Limits`].

use anyhow::Context as _;
use mock_machines::{MockConfig, MockServer};
use tokio::net::TcpListener;

/// How much of Fly's pacing the mock keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limits {
    /// Fly's published rate limits (one create per second per app);
    /// machines boot at once. `dispatcher dev`: a newcomer sees the
    /// limits the dispatcher paces at.
    Fly,
    /// Fly's rate limits and its create and start latencies: the
    /// `mock-machines` command's defaults (a faithful benchmark).
    FlyWithLatency,
    /// No rate limits: tests and benchmarks create machines faster than
    /// Fly allows.
    Off,
}

/// The mock's configuration for `token` with `limits`; everything else is
/// the mock's default (memory enforced, machines see the host's
/// image-level variables), for the caller to change.
pub fn config(token: &str, limits: Limits) -> anyhow::Result<MockConfig> {
    let base = match limits {
        Limits::Fly => MockConfig::default(),
        Limits::FlyWithLatency => {
            use clap::Parser as _;
            mock_machines::cli::Args::parse_from(["mock-machines", "--token", token]).config()?
        }
        Limits::Off => MockConfig {
            rate_limits: false,
            ..MockConfig::default()
        },
    };
    Ok(MockConfig {
        token: token.to_string(),
        ..base
    })
}

/// Starts the mock on `127.0.0.1:port` (`0`: any free port).
pub async fn start(config: MockConfig, port: u16) -> anyhow::Result<MockServer> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding the mock Machines API to port {port}"))?;
    Ok(MockServer::start(config, listener).await?)
}
