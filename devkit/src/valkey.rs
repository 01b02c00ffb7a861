//! [`LocalValkey`]: a Valkey-compatible server started as a child process,
//! for `dispatcher dev` and the tests. `valkey-server` is preferred;
//! Debian's `redis-server` (7.0, wire-compatible for what we use) works too.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The server binaries we know, in order of preference.
pub const SERVER_BINARIES: [&str; 2] = ["valkey-server", "redis-server"];

/// A server we started; it is killed when this is dropped.
pub struct LocalValkey {
    child: Child,
    port: u16,
}

impl LocalValkey {
    /// The server binary: `VALKEY_SERVER` when set (what
    /// `scripts/ensure-valkey` printed), else the first known one on
    /// `PATH` (or in `/usr/sbin`, `/usr/bin`).
    pub fn find_binary() -> Option<PathBuf> {
        if let Some(chosen) = std::env::var_os("VALKEY_SERVER").filter(|v| !v.is_empty()) {
            return Some(chosen.into());
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        dirs.extend(["/usr/sbin".into(), "/usr/bin".into()]);
        SERVER_BINARIES
            .iter()
            .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
            .find(|candidate| candidate.is_file())
    }

    /// Starts a server on `127.0.0.1:port` keeping its files in `dir`, and
    /// waits until it answers. With `append_only`, writes survive a restart
    /// (AOF, `appendfsync everysec`).
    pub async fn start(port: u16, dir: &Path, append_only: bool) -> anyhow::Result<Self> {
        let aof = ["--appendonly", if append_only { "yes" } else { "no" }];
        Self::start_with(port, dir, None, &aof.map(String::from)).await
    }

    /// [`LocalValkey::start`] on a free port. A free port can be taken
    /// between probing and binding, so a few tries, each on a fresh one.
    pub async fn start_on_free_port(dir: &Path, append_only: bool) -> anyhow::Result<Self> {
        let mut last_error = None;
        for _ in 0..5 {
            match Self::start(crate::port::free_port().await?, dir, append_only).await {
                Ok(server) => return Ok(server),
                Err(error) => last_error = Some(error),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last_error.expect("five tries failed"))
    }

    /// [`LocalValkey::start`] with a config file (e.g. Sentinel's, which
    /// it rewrites) and more options (`--cluster-enabled yes`, TLS, ...).
    pub async fn start_with(
        port: u16,
        dir: &Path,
        config_file: Option<&Path>,
        options: &[String],
    ) -> anyhow::Result<Self> {
        let binary = Self::find_binary().context(
            "no valkey-server or redis-server found; install one (scripts/ensure-valkey does, on Debian)",
        )?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut command = Command::new(&binary);
        // A config file can only be the first argument.
        if let Some(file) = config_file {
            command.arg(file);
        }
        let child = command
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendfsync", "everysec", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(dir)
            .args(options)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = Self { child, port };
        for _ in 0..100 {
            if answers_ping(port).await {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{} exited with {status} (is port {port} taken?)",
                    binary.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "{} did not answer on port {port} within 5 s",
            binary.display()
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn address(&self) -> jobs::StoreAddress {
        self.url().parse().expect("a loopback redis:// URL parses")
    }

    /// Kills the server at once (SIGKILL), as a crash would, and waits
    /// for it to be gone.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Stops the server cleanly (SIGTERM: it flushes its append-only file)
    /// and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on the pid of a child we spawned and still own.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let _ = self.child.wait().await;
    }
}

/// Whether a Valkey/Redis server answers `PING` on `127.0.0.1:port`.
pub async fn answers_ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 64];
        let n = stream.read(&mut reply).await.ok()?;
        Some(reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH"))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Some(true))
    )
}
