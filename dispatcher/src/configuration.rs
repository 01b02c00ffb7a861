//! [`Settings`]: everything the dispatcher needs, resolved from flags and
//! environment by [`crate::cli`] (or built directly by tests).

use std::net::SocketAddr;
use std::time::Duration;

use jobs::{Backoff, MachineSpec, StoreConfig};
use machines::ClientConfig;

use crate::engine::callback_targets::CallbackTargets;

#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    pub store: StoreConfig,
    pub machines: ClientConfig,
    pub launch: LaunchSettings,
    pub upkeep: UpkeepSettings,
    pub api: ApiSettings,
    /// After SIGTERM: how long the API keeps answering before the exit.
    pub shutdown_grace: Duration,
    /// This dispatcher's name in leases and logs.
    pub owner: String,
}

/// How machines are launched and supervised.
#[derive(Clone, Debug)]
pub struct LaunchSettings {
    /// The image job machines boot (default: the dispatcher's own
    /// `FLY_IMAGE_REF`, which contains the runner).
    pub image: String,
    /// `init.exec` of job machines: the runner's path inside the image.
    pub runner_exec: Vec<String>,
    /// The store URL as seen from inside a job machine.
    pub runner_store_url: String,
    /// Machines in flight at once, across all dispatchers sharing the store.
    pub max_machines: u32,
    /// Leases on attempts are renewed every third of this ([`crate::engine::leases`]).
    pub lease: Duration,
    /// Slack on top of a job's timeout before the dispatcher kills the
    /// machine (the runner's own guard fires first and reports why).
    pub timeout_grace: Duration,
    /// How often runners heartbeat (`JOB_HEARTBEAT_MS`).
    pub heartbeat: Duration,
    /// An attempt whose runner has not heartbeat for this long, and whose
    /// machine is not running, is `lost`.
    pub lost_after: Duration,
    /// Machines watched at once with a `wait` long-poll ([`crate::engine::supervisor`]).
    pub max_watches: usize,
    /// Extra environment for the runner (e.g. `LOG_FORMAT`).
    pub runner_env: Vec<(String, String)>,
    /// Per-kind machine caps as a JSON object (`{}` when none), on top of
    /// `max_machines`.
    pub kind_caps: String,
    /// Signs callback POSTs (HMAC-SHA256); unsigned when `None`.
    pub callback_secret: Option<String>,
    /// Test hook: sleep between creating a machine and recording it, so a
    /// test can kill the dispatcher exactly there.
    pub pause_after_create: Option<Duration>,
    /// Warm pools of stopped machines ([`crate::engine::pool`]); empty: every
    /// attempt creates its machine.
    pub pools: Vec<crate::engine::pool::PoolSpec>,
    /// A ready pooled machine idle this long is destroyed while its pool
    /// holds more than its target.
    pub pool_idle: Duration,
}

/// Background upkeep: orphaned machines and old job records.
#[derive(Clone, Debug)]
pub struct UpkeepSettings {
    /// How often the sweeper lists job machines and purges old records.
    pub sweep_every: Duration,
    /// A job machine no in-flight attempt owns is destroyed once it is at
    /// least this old (so a machine between "create" and "record" is safe).
    pub orphan_grace: Duration,
    /// Finished jobs are kept this long, then removed.
    pub retention: Duration,
}

/// Limits and defaults of the HTTP API.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// When non-empty, every route but `/healthz` needs one of these as a
    /// bearer token.
    pub tokens: Vec<String>,
    pub body_limit: usize,
    pub defaults: JobDefaults,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: Duration,
    pub limits: HttpLimits,
    /// Durability mode: a new job is acknowledged only once replicated.
    pub submit_replicas: Option<SubmitReplicas>,
    /// Most jobs one `POST /batches` may carry, and its largest body.
    pub max_batch_jobs: usize,
    pub batch_body_limit: usize,
}

/// Bounds on what clients may hold or ask for ([`crate::api::server`],
/// [`crate::api::limits`]). docs/configuration.md "Limits" lists them with their flags.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Open connections at once; more wait in the accept backlog.
    pub max_connections: usize,
    /// A request's headers must arrive within this (also between
    /// keep-alive requests).
    pub header_timeout: Duration,
    /// A request's whole body must arrive within this.
    pub body_timeout: Duration,
    /// Open `GET /jobs/{id}/events` streams: in all, and per token.
    pub max_streams: usize,
    pub max_streams_per_token: usize,
    /// Waiting long-polls (`GET /jobs/{id}?wait=N`): in all, and per token.
    pub max_long_polls: usize,
    pub max_long_polls_per_token: usize,
    /// Requests per second per token (sustained); 0 turns the limit off.
    pub rate_per_sec: u32,
    /// Requests a token may send at once above the sustained rate.
    pub rate_burst: u32,
    /// Login attempts per minute per client address.
    pub login_attempts_per_min: u32,
    /// How long a dashboard session lasts.
    pub session_ttl: Duration,
    /// Take the client's address from Fly's `Fly-Client-IP` header (set
    /// only behind Fly's proxy, which overwrites any value a client sent).
    pub trust_fly_client_ip: bool,
}

/// `POST /jobs` answers 202 only once the job reached `replicas` store
/// replicas (`WAIT`), or 503 after `timeout`.
#[derive(Clone, Copy, Debug)]
pub struct SubmitReplicas {
    pub replicas: u32,
    pub timeout: Duration,
}

/// Values a job gets when its request leaves them out, and what it may
/// ask for. Serializable: the dispatcher publishes it in the store, where
/// runners validate the children their jobs enqueue against it
/// ([`crate::api::children`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct JobDefaults {
    pub max_attempts: u32,
    pub timeout_secs: u64,
    pub max_timeout_secs: u64,
    pub backoff: Backoff,
    pub machine: MachineSpec,
    /// Images a job may ask for besides the runner's default.
    pub allowed_images: Vec<String>,
    /// Where a `callback_url` may point.
    pub callback_targets: CallbackTargets,
    /// Region codes `machine.region` may name ([`crate::regions`]).
    pub regions: Vec<String>,
}

impl Default for JobDefaults {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            timeout_secs: 600,
            max_timeout_secs: 24 * 3600,
            backoff: Backoff::default(),
            machine: MachineSpec::default(),
            allowed_images: Vec::new(),
            callback_targets: CallbackTargets::default(),
            regions: crate::regions::allowed(&[]),
        }
    }
}

/// A name for this dispatcher: the Fly machine id when on Fly, else host
/// and process id.
pub fn default_owner() -> String {
    std::env::var("FLY_MACHINE_ID").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}
