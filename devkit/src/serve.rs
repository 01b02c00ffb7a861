//! `dispatcher serve` as a child process wired to the local mock Machines
//! API: the production binary, as the benchmark (which measures the
//! process) and the crash tests (which kill it) run it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::bail;
use tokio::process::Command;

/// Where a served dispatcher finds its store, the mock and its machines'
/// program.
pub struct Serve<'a> {
    /// The `dispatcher` binary.
    pub binary: &'a Path,
    /// The `runner` binary each machine runs.
    pub runner: &'a Path,
    pub store_url: &'a str,
    /// The mock Machines API's base URL.
    pub machines_url: &'a str,
    /// The Fly app and the token the mock requires.
    pub app: &'a str,
    pub token: &'a str,
    /// The image name machines are created with.
    pub image: &'a str,
    /// The loopback port it serves on.
    pub port: u16,
}

impl Serve<'_> {
    /// `dispatcher serve` on `127.0.0.1:port` without API tokens, then
    /// `extra` flags; killed when dropped. Its output is the caller's to
    /// direct.
    pub fn command(&self, extra: &[String]) -> Command {
        let mut command = Command::new(self.binary);
        command
            .arg("serve")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--no-auth", "--valkey-url", self.store_url])
            .args(["--app", self.app, "--fly-api-token", self.token])
            .args(["--machines-api-url", self.machines_url])
            .args(["--image", self.image])
            .arg("--runner-exec")
            .arg(self.runner)
            .args(extra)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Waits until `GET {base}/healthz` answers 200 (a fresh connection each
/// try), for at most `within`.
pub async fn wait_healthy(base: &str, within: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        let answer = http.get(format!("{base}/healthz")).send().await;
        if answer.is_ok_and(|a| a.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the dispatcher did not become healthy at {base} within {within:?}")
}
