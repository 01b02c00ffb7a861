//! [`MockConfig`]: everything that shapes how the mock behaves.
//!
//! `MockConfig::default()` is made for tests: no latency, no faults, but
//! Fly's documented rate limits and memory enforcement switched on (turn
//! them off with `rate_limits: false` / `enforce_memory: false`). The CLI
//! picks defaults closer to the real platform (see [`crate::cli`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rand::Rng;
use tokio::sync::mpsc;

use crate::faults::FaultSettings;

/// How the mock behaves. Every field has a default; see the module docs.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// The only token accepted, as `Bearer X`, `FlyV1 X` or `Bearer FlyV1 X`.
    pub token: String,
    /// Image ref → local command, for machines without `init.exec`.
    pub images: BTreeMap<String, Vec<String>>,
    /// The app's secrets (`fly secrets set`): Fly puts them in the
    /// environment of machines created through the API ("Machines inherit
    /// secrets from the app", DOCS `machines/api/apps-resource`), unless
    /// the create says `skip_secrets: true`. Empty by default.
    pub app_secrets: BTreeMap<String, String>,
    /// Whether `skip_secrets: true` keeps `app_secrets` out. What Fly does
    /// with the flag is undocumented; `false` plays a platform that ignores
    /// it, to prove job code stays clean anyway.
    pub honour_skip_secrets: bool,
    /// Command for images not in `images` when the config names none.
    pub default_command: Option<Vec<String>>,
    /// Region of machines created without one, e.g. `lcl`.
    pub region: String,
    /// Enforce Fly's documented per-action rate limits (429 + `Retry-After`).
    pub rate_limits: bool,
    /// Multiplies every rate and burst (2.0 = twice as permissive).
    pub rate_limit_scale: f64,
    /// How long machines take to leave `created` and `starting`.
    pub latency: LatencyModel,
    /// Injected failures; can be changed at run time via `POST /_mock/faults`.
    pub faults: FaultSettings,
    /// Kill machines whose processes use more RSS than `guest.memory_mb`.
    pub enforce_memory: bool,
    /// How often the memory watchdog samples RSS.
    pub watchdog_interval: Duration,
    /// What "booting a machine" means: a local process or an in-process task.
    pub boot: Boot,
    /// Make the mock a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`), so
    /// processes orphaned inside a machine's process group are reparented
    /// to the mock and reaped by it rather than left to PID 1. This is a
    /// process-wide setting of the hosting process.
    pub reap_orphans: bool,
    /// The environment the machine's image would set (its `ENV` lines):
    /// a machine process starts with this, then the machine's
    /// `config.env`, then the variables Fly injects, and nothing of the
    /// mock's own environment (its tokens and secrets). Defaults to
    /// [`image_env_from_host`].
    pub image_env: BTreeMap<String, String>,
}

/// Host variables that stand in for an image's `ENV` lines, since a local
/// "machine" runs the host's binaries: the search path and locale, the
/// runner's image-level command configuration, and Rust's diagnostics
/// switches. Nothing else of the host's environment reaches a machine.
pub const IMAGE_ENV_FROM_HOST: [&str; 9] = [
    "PATH",
    "HOME",
    "LANG",
    "TZ",
    "RUNNER_COMMANDS",
    "RUNNER_CONFIG",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "LLVM_PROFILE_FILE",
];

/// The host's values of [`IMAGE_ENV_FROM_HOST`] that are set.
pub fn image_env_from_host() -> BTreeMap<String, String> {
    IMAGE_ENV_FROM_HOST
        .iter()
        .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
        .collect()
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            token: "mock-token".to_string(),
            images: BTreeMap::new(),
            app_secrets: BTreeMap::new(),
            honour_skip_secrets: true,
            default_command: None,
            region: "lcl".to_string(),
            rate_limits: true,
            rate_limit_scale: 1.0,
            latency: LatencyModel::default(),
            faults: FaultSettings::default(),
            enforce_memory: true,
            watchdog_interval: Duration::from_millis(50),
            boot: Boot::Process,
            reap_orphans: true,
            image_env: image_env_from_host(),
        }
    }
}

/// Time a machine spends in `created` before its first boot (image pull,
/// rootfs build: seconds on Fly) and in `starting` before `started`
/// (well under a second on Fly). Both zero by default.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencyModel {
    pub create: DelayRange,
    pub start: DelayRange,
}

/// A delay drawn uniformly from `min..=max`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DelayRange {
    pub min: Duration,
    pub max: Duration,
}

impl DelayRange {
    pub fn fixed(delay: Duration) -> Self {
        Self {
            min: delay,
            max: delay,
        }
    }

    pub fn draw(&self) -> Duration {
        if self.max <= self.min {
            return self.min;
        }
        rand::rng().random_range(self.min..=self.max)
    }
}

/// How a machine's main process is brought to life.
#[derive(Clone, Default)]
pub enum Boot {
    /// Spawn the machine's command as a local process in its own process
    /// group (the host filesystem plays the image's rootfs).
    #[default]
    Process,
    /// Run an in-process task instead: cheap enough for thousands of
    /// machines, and scriptable from tests.
    Virtual(VirtualFn),
}

impl fmt::Debug for Boot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Process => f.write_str("Process"),
            Self::Virtual(_) => f.write_str("Virtual(..)"),
        }
    }
}

/// The body of a virtual machine: receives its environment, returns the
/// exit code of its "main process".
pub type VirtualFn = Arc<dyn Fn(VirtualMachineEnv) -> BoxFuture<'static, i32> + Send + Sync>;

/// What a virtual machine gets instead of a process environment.
#[derive(Debug)]
pub struct VirtualMachineEnv {
    pub app: String,
    pub machine_id: String,
    /// The command the machine would have run, if one could be resolved.
    pub command: Option<Vec<String>>,
    /// `config.env` plus the `FLY_*` variables a real machine sees.
    pub env: BTreeMap<String, String>,
    /// Signals sent to the machine (stop, signal, ...) other than SIGKILL.
    /// While this receiver lives the machine decides what a signal means;
    /// once it is dropped, any signal ends the machine at once with exit
    /// code `128 + signal`, like a process with default handlers.
    /// SIGKILL (and a stop timeout) always ends the machine.
    pub signals: mpsc::UnboundedReceiver<i32>,
}
