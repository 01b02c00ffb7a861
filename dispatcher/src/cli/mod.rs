//! The `dispatcher` command line: `serve` (production), `dev` (the whole
//! system on a laptop) and `jobs` (a client of a running dispatcher, in
//! [`crate::cli::jobs_command`]). Every flag has an environment fallback, so a
//! `fly.toml` `[env]` section or secrets configure it.

pub mod batch_command;
pub mod client;
pub mod flow_command;
pub mod jobs_command;
pub mod output;
pub mod sse;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use jobs::{CaCert, MachineSpec, StoreAddress, StoreConfig};
use machines::ClientConfig;

use crate::configuration::{
    default_owner, ApiSettings, HttpLimits, JobDefaults, LaunchSettings, Settings, SubmitReplicas,
    UpkeepSettings,
};
use crate::telemetry::{self, LogFormat};

/// Machines API calls other than watches (create, get, short waits,
/// stop, destroy) that may be in flight at once.
const OTHER_CALLS_IN_FLIGHT: usize = 256;

#[derive(Debug, Parser)]
#[command(
    name = "dispatcher",
    version,
    about = "Runs each background job on a fresh Fly Machine."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the job API against the real Machines API (production).
    Serve(ServeArgs),
    /// Start everything locally: a Valkey-compatible server (when none
    /// answers at --valkey-url), the mock Machines API and the dispatcher.
    Dev(DevArgs),
    /// Submit, show, list, cancel, retry and wait for jobs of a running
    /// dispatcher (`--url`/`DISPATCHER_URL`, `--token`/`DISPATCHER_TOKEN`).
    Jobs(crate::cli::jobs_command::JobsArgs),
}

/// Flags shared by `serve` and `dev`.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The job store: `redis://[user:password@]host[:port][/db]`,
    /// `rediss://` for TLS, `redis-sentinel://[user:password@]sentinel[:26379]?master=NAME&node=sentinel2:26379`
    /// or `redis-cluster://host:port?node=host2:port` (docs/store.md: "The job
    /// store in production").
    #[arg(
        long,
        env = "VALKEY_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub valkey_url: String,
    /// PEM file of the CA that signed the store's TLS certificate; when
    /// set, only it is trusted (else the system and bundled public roots).
    /// Job machines get the same path.
    #[arg(long, env = "VALKEY_CA_CERT")]
    pub valkey_ca_cert: Option<std::path::PathBuf>,
    /// Durability mode: `POST /jobs` answers 202 only once the job reached
    /// this many store replicas (Valkey `WAIT`), so losing the primary
    /// right after the answer loses no accepted job. 0 turns it off.
    #[arg(long, env = "SUBMIT_REPLICAS", default_value_t = 0)]
    pub submit_replicas: u32,
    /// How long `POST /jobs` waits for those replicas; past it the answer
    /// is 503 and the client retries with its idempotency key.
    #[arg(long, env = "SUBMIT_REPLICAS_TIMEOUT_MS", default_value_t = 2000)]
    pub submit_replicas_timeout_ms: u64,
    /// Key namespace in the store; dispatchers sharing it share the queue.
    #[arg(long, env = "JOBS_NAMESPACE", default_value = "jobs")]
    pub namespace: String,
    /// Machines in flight at once, across all dispatchers on this store.
    /// 0 launches nothing: jobs are accepted and queued (intake only, e.g.
    /// while draining the fleet), and attempts in flight still finish.
    #[arg(long, env = "MAX_MACHINES", default_value_t = 10)]
    pub max_machines: u32,
    /// Comma-separated API tokens. When set, every route but /healthz needs
    /// `Authorization: Bearer <one of them>`.
    #[arg(
        long,
        env = "DISPATCHER_API_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_tokens: Vec<String>,
    /// Largest accepted request body.
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 1 << 20)]
    pub body_limit_bytes: usize,
    /// Open HTTP connections at once; more wait until one closes.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 2048)]
    pub max_connections: usize,
    /// A request's headers must arrive within this many seconds (idle
    /// keep-alive connections are closed after it too).
    #[arg(long, env = "HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// A request's whole body must arrive within this many seconds (408).
    #[arg(long, env = "BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,
    /// Open event streams (`GET /jobs/{id}/events`) at once, in all (503
    /// past it).
    #[arg(long, env = "MAX_EVENT_STREAMS", default_value_t = 1024)]
    pub max_event_streams: usize,
    /// Open event streams per API token (429 past it).
    #[arg(long, env = "MAX_EVENT_STREAMS_PER_TOKEN", default_value_t = 256)]
    pub max_event_streams_per_token: usize,
    /// Waiting long-polls (`GET /jobs/{id}?wait=N`) at once, in all (503).
    #[arg(long, env = "MAX_LONG_POLLS", default_value_t = 1024)]
    pub max_long_polls: usize,
    /// Waiting long-polls per API token (429).
    #[arg(long, env = "MAX_LONG_POLLS_PER_TOKEN", default_value_t = 256)]
    pub max_long_polls_per_token: usize,
    /// Requests per second each API token may make, sustained (429 with
    /// Retry-After past it); 0 turns the limit off. Without tokens (dev on
    /// loopback) there is no limit.
    #[arg(long, env = "RATE_LIMIT_PER_SEC", default_value_t = 100)]
    pub rate_limit_per_sec: u32,
    /// Requests a token may send in a burst above the sustained rate.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 200)]
    pub rate_limit_burst: u32,
    /// Dashboard login attempts per minute per client address (429 past it).
    #[arg(long, env = "LOGIN_ATTEMPTS_PER_MINUTE", default_value_t = 10)]
    pub login_attempts_per_minute: u32,
    /// How long a dashboard session lasts.
    #[arg(long, env = "SESSION_TTL_SECS", default_value_t = 12 * 3600)]
    pub session_ttl_secs: u64,
    /// Take the client address (login slow-down) from `Fly-Client-IP`.
    /// Set it only behind Fly's proxy, which sets that header itself.
    #[arg(long, env = "TRUST_FLY_CLIENT_IP")]
    pub trust_fly_client_ip: bool,
    /// Attempts a job gets unless its request says otherwise.
    #[arg(long, env = "DEFAULT_MAX_ATTEMPTS", default_value_t = 3)]
    pub default_max_attempts: u32,
    /// Per-attempt timeout unless the request says otherwise.
    #[arg(long, env = "DEFAULT_TIMEOUT_SECS", default_value_t = 600)]
    pub default_timeout_secs: u64,
    /// The largest `timeout_secs` a request may ask for.
    #[arg(long, env = "MAX_TIMEOUT_SECS", default_value_t = 86_400)]
    pub max_timeout_secs: u64,
    /// Default machine size of job machines.
    #[arg(long, env = "JOB_CPU_KIND", default_value = "shared")]
    pub cpu_kind: String,
    #[arg(long, env = "JOB_CPUS", default_value_t = 1)]
    pub cpus: u32,
    #[arg(long, env = "JOB_MEMORY_MB", default_value_t = 256)]
    pub memory_mb: u32,
    /// Default region of job machines (the API's choice when unset).
    #[arg(long, env = "JOB_REGION")]
    pub region: Option<String>,
    /// Per-kind machine caps on top of --max-machines, e.g. `report=2,pdf=4`.
    #[arg(long, env = "KIND_CAPS", value_delimiter = ',', value_parser = parse_kind_cap)]
    pub kind_caps: Vec<(String, u32)>,
    /// Images a job's `machine.image` may name (comma-separated).
    #[arg(long, env = "ALLOWED_IMAGES", value_delimiter = ',')]
    pub allowed_images: Vec<String>,
    /// How long an idempotency key is remembered.
    #[arg(long, env = "IDEMPOTENCY_TTL_SECS", default_value_t = 24 * 3600)]
    pub idempotency_ttl_secs: u64,
    /// Most jobs one `POST /batches` may carry.
    #[arg(long, env = "MAX_BATCH_JOBS", default_value_t = crate::api::batch_request::DEFAULT_MAX_BATCH_JOBS)]
    pub max_batch_jobs: usize,
    /// Largest accepted `POST /batches` body (other routes take
    /// --body-limit-bytes).
    #[arg(long, env = "BATCH_BODY_LIMIT_BYTES", default_value_t = 16 << 20)]
    pub batch_body_limit_bytes: usize,
    /// Signs callback POSTs with HMAC-SHA256 (header `x-signature-256`).
    #[arg(long, env = "CALLBACK_SECRET", hide_env_values = true)]
    pub callback_secret: Option<String>,
    /// Hosts (names or IP literals, comma-separated) a `callback_url` may
    /// name even though they are loopback, private or internal; by default
    /// callbacks go to public addresses only.
    #[arg(long, env = "CALLBACK_ALLOW_HOSTS", value_delimiter = ',')]
    pub callback_allow_hosts: Vec<String>,
    /// Region codes a job's `machine.region` may name (comma-separated);
    /// Fly's published list when unset.
    #[arg(long, env = "ALLOWED_REGIONS", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Lease on an in-flight attempt; a dead dispatcher's attempts are taken
    /// over once it runs out.
    #[arg(long, env = "LEASE_SECS", default_value_t = 15)]
    pub lease_secs: u64,
    /// Slack after a job's timeout before the dispatcher stops its machine
    /// (the runner's own guard fires at the timeout itself).
    #[arg(long, env = "TIMEOUT_GRACE_SECS", default_value_t = 10)]
    pub timeout_grace_secs: u64,
    /// A runner silent this long has its machine checked; if the machine
    /// is down, the attempt ends as its exit says (crashed, oom, lost).
    #[arg(long, env = "LOST_AFTER_SECS", default_value_t = 30)]
    pub lost_after_secs: u64,
    /// How often runners heartbeat (at most a third of --lost-after-secs).
    /// Each heartbeat is a store command, so this sets the store traffic
    /// of a long job; a cancel reaches the runner at once either way (its
    /// machine is stopped).
    #[arg(long, env = "HEARTBEAT_SECS", default_value_t = 5)]
    pub heartbeat_secs: u64,
    /// Each attempt's log cap in bytes, handed to the runners (their
    /// default: 4 MiB); past it the log ends with a truncation line.
    #[arg(long, env = "JOB_LOG_MAX_BYTES")]
    pub job_log_max_bytes: Option<u64>,
    /// Longest log line in bytes, handed to the runners (their default:
    /// 16 KiB); longer lines are cut.
    #[arg(long, env = "JOB_LOG_MAX_LINE_BYTES")]
    pub job_log_max_line_bytes: Option<u64>,
    /// Machines watched at once through a Machines API `wait` long-poll,
    /// which learns of a crash or OOM kill the moment it happens. Each is
    /// an open connection, so a large fleet watches only this many; the
    /// others learn of a crash from their runner's silence
    /// (--lost-after-secs). A finished job is seen at once either way.
    #[arg(long, env = "MAX_WATCHES", default_value_t = 500)]
    pub max_watches: usize,
    /// Client-side pacing of Machines API calls: `fly` (Fly's published
    /// limits: 1 call/s per action with bursts of 3, reads 5/s with bursts
    /// of 10, per machine, or per app for creates, the create budget shared
    /// by all dispatchers through the store), a number (those limits times
    /// it, e.g. `2`), or `off`.
    #[arg(long, env = "MACHINES_API_PACING", default_value = "fly", value_parser = parse_pacing)]
    pub api_pacing: Pacing,
    /// How long Machines API calls are retried (429, 5xx, connection errors).
    #[arg(long, env = "MACHINES_RETRY_SECS", default_value_t = 60)]
    pub machines_retry_secs: u64,
    /// How often to sweep for orphaned machines and purge old jobs.
    #[arg(long, env = "SWEEP_INTERVAL_SECS", default_value_t = 60)]
    pub sweep_interval_secs: u64,
    /// Job machines no attempt owns are destroyed once this old.
    #[arg(long, env = "ORPHAN_GRACE_SECS", default_value_t = 120)]
    pub orphan_grace_secs: u64,
    /// Finished jobs are kept this long (default 7 days), then removed.
    #[arg(long, env = "RETENTION_SECS", default_value_t = 7 * 24 * 3600)]
    pub retention_secs: u64,
    /// After SIGTERM, the API keeps answering this long (503 to new jobs,
    /// draining health) so clients move to a peer, then the process exits;
    /// fly.toml's `kill_timeout` must be longer.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = crate::startup::SHUTDOWN_GRACE.as_secs())]
    pub shutdown_grace_secs: u64,
    /// Warm pools of stopped machines: `N` keeps N machines of the default
    /// size and region created and stopped, so a job starts one (well
    /// under a second) instead of creating one (seconds, and at most about
    /// one per second per app on Fly). More pools, comma-separated:
    /// `cpu_kind:cpus:memory_mb[@region]=N`, e.g. `8,performance:2:4096=2`.
    /// Stopped machines bill only their root filesystem. Default: none for
    /// `serve`, 8 for `dev`; 0 turns it off.
    #[arg(long, env = "WARM_POOL", value_delimiter = ',', value_parser = check_warm_pool)]
    pub warm_pool: Vec<String>,
    /// A pooled machine idle this long is destroyed while its pool holds
    /// more than its target (after the target was lowered).
    #[arg(long, env = "WARM_POOL_IDLE_SECS", default_value_t = 600)]
    pub warm_pool_idle_secs: u64,
    /// Test hook: pause between creating a machine and recording it (or
    /// between claiming a pooled machine and starting it).
    #[arg(long, hide = true)]
    pub test_pause_after_create_ms: Option<u64>,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

/// The API's port unless `--port`/`PORT` says otherwise (fly.toml's
/// `internal_port` must match).
pub const DEFAULT_PORT: u16 = 8080;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    #[arg(long, env = "BIND", default_value_t = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))]
    pub bind: IpAddr,
    /// The Fly app job machines are created in.
    #[arg(long, env = "FLY_APP_NAME")]
    pub app: String,
    /// A Machines API token for that app (`fly tokens create deploy`).
    #[arg(long, env = "FLY_API_TOKEN", hide_env_values = true)]
    pub fly_api_token: String,
    /// Inside Fly, `http://_api.internal:4280` avoids the public internet.
    #[arg(
        long,
        env = "MACHINES_API_URL",
        default_value = "https://api.machines.dev"
    )]
    pub machines_api_url: String,
    /// Image of job machines; defaults to this machine's own `FLY_IMAGE_REF`.
    #[arg(long, env = "RUNNER_IMAGE")]
    pub image: Option<String>,
    /// The runner's path inside the image (`init.exec`).
    #[arg(long, env = "RUNNER_EXEC", default_value = "/usr/local/bin/runner")]
    pub runner_exec: String,
    /// The store URL job machines use, when it differs from --valkey-url.
    #[arg(long, env = "RUNNER_VALKEY_URL", hide_env_values = true)]
    pub runner_valkey_url: Option<String>,
    /// Serve the API without tokens. Refused otherwise: a public job API
    /// lets anyone boot machines on your account.
    #[arg(long, env = "DISPATCHER_NO_AUTH")]
    pub no_auth: bool,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Port of the in-process mock Machines API.
    #[arg(long, default_value_t = 4280)]
    pub machines_port: u16,
}

/// Runs the command line. `dev` is handed in by the binary, which composes
/// the dispatcher with the mock Machines API (the library does not depend
/// on the mock).
pub fn main(
    dev: impl FnOnce(DevArgs) -> futures::future::BoxFuture<'static, anyhow::Result<()>>,
) -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => {
            telemetry::init(args.common.log_format);
            args.common.check_region()?;
            runtime.block_on(serve(args))?;
        }
        Command::Dev(args) => {
            telemetry::init(args.common.log_format);
            args.common.check_region()?;
            runtime.block_on(dev(args))?;
        }
        // A client prints its answers on stdout: no log lines among them.
        Command::Jobs(args) => return Ok(runtime.block_on(crate::cli::jobs_command::run(args))),
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.common.api_tokens.iter().all(|t| t.is_empty()) && !args.no_auth {
        anyhow::bail!("set DISPATCHER_API_TOKENS (or --api-tokens); pass --no-auth to serve the API without tokens");
    }
    let image = args
        .image
        .clone()
        .or_else(|| std::env::var("FLY_IMAGE_REF").ok())
        .context("no runner image: set RUNNER_IMAGE (FLY_IMAGE_REF is set on Fly machines)")?;
    let machines = ClientConfig::new(&args.machines_api_url, &args.app, &args.fly_api_token);
    let runner_store_url = args
        .runner_valkey_url
        .clone()
        .unwrap_or_else(|| args.common.valkey_url.clone());
    let listen = SocketAddr::new(args.bind, args.port);
    let settings = args.common.settings(
        listen,
        machines,
        image,
        vec![args.runner_exec],
        runner_store_url,
    )?;
    let shutdown = crate::shutdown::Shutdown::new();
    shutdown.trigger_on_signals();
    let app = crate::startup::Application::build(settings).await?;
    app.run_until_stopped(shutdown).await
}

impl CommonArgs {
    /// The default region (`JOB_REGION`) must be one jobs may name too:
    /// otherwise every job without a region would fail to launch.
    pub fn check_region(&self) -> anyhow::Result<()> {
        let allowed = crate::regions::allowed(&self.regions);
        match &self.region {
            Some(region) if !allowed.contains(region) => anyhow::bail!(
                "JOB_REGION {region:?} is not one of the allowed region codes ({}); see --regions",
                allowed.join(", ")
            ),
            _ => Ok(()),
        }
    }

    /// Turns the flags into [`Settings`]; `serve` and `dev` differ only in
    /// where the Machines API is and what the runner is.
    pub fn settings(
        &self,
        listen: SocketAddr,
        mut machines: ClientConfig,
        image: String,
        runner_exec: Vec<String>,
        runner_store_url: String,
    ) -> anyhow::Result<Settings> {
        let address: StoreAddress = self
            .valkey_url
            .parse()
            .context("--valkey-url (VALKEY_URL)")?;
        runner_store_url
            .parse::<StoreAddress>()
            .context("--runner-valkey-url (RUNNER_VALKEY_URL)")?;
        let mut store = StoreConfig::new(address);
        store.namespace = self.namespace.clone();
        let mut runner_env = vec![(
            "LOG_FORMAT".to_string(),
            match self.log_format {
                LogFormat::Human => "human",
                LogFormat::Json => "json",
            }
            .to_string(),
        )];
        // A machine gets only its own env (as on Fly): the runners' log
        // limits travel in it.
        let log_limits = [
            ("JOB_LOG_MAX_BYTES", self.job_log_max_bytes),
            ("JOB_LOG_MAX_LINE_BYTES", self.job_log_max_line_bytes),
        ];
        for (name, value) in log_limits {
            if let Some(value) = value {
                runner_env.push((name.to_string(), value.to_string()));
            }
        }
        if let Some(path) = &self.valkey_ca_cert {
            store.ca_cert = Some(CaCert::load(path).context("--valkey-ca-cert (VALKEY_CA_CERT)")?);
            runner_env.push(("VALKEY_CA_CERT".into(), path.display().to_string()));
        }
        let defaults = JobDefaults {
            max_attempts: self.default_max_attempts,
            timeout_secs: self.default_timeout_secs,
            max_timeout_secs: self.max_timeout_secs,
            machine: MachineSpec {
                cpu_kind: self.cpu_kind.clone(),
                cpus: self.cpus,
                memory_mb: self.memory_mb,
                region: self.region.clone(),
                fallback_regions: Vec::new(),
                image: None,
                env: Default::default(),
            },
            allowed_images: self
                .allowed_images
                .iter()
                .filter(|i| !i.is_empty())
                .cloned()
                .collect(),
            regions: crate::regions::allowed(&self.regions),
            callback_targets: crate::engine::callback_targets::CallbackTargets::allowing(
                self.callback_allow_hosts.iter().cloned(),
            ),
            ..JobDefaults::default()
        };
        machines.retry_deadline = Duration::from_secs(self.machines_retry_secs);
        machines.pacing = self.api_pacing.0;
        // Watches never take the connections creates and destroys need.
        machines.max_in_flight = self.max_watches + OTHER_CALLS_IN_FLIGHT;
        let lost_after = Duration::from_secs(self.lost_after_secs.max(1));
        Ok(Settings {
            listen,
            store,
            machines,
            launch: LaunchSettings {
                image,
                runner_exec,
                runner_store_url,
                max_machines: self.max_machines,
                lease: Duration::from_secs(self.lease_secs.max(3)),
                timeout_grace: Duration::from_secs(self.timeout_grace_secs),
                heartbeat: Duration::from_secs(self.heartbeat_secs.max(1)).min(lost_after / 3),
                lost_after,
                max_watches: self.max_watches,
                pause_after_create: self.test_pause_after_create_ms.map(Duration::from_millis),
                kind_caps: serde_json::to_string(
                    &self.kind_caps.iter().cloned().collect::<BTreeMap<_, _>>(),
                )
                .expect("caps serialize"),
                callback_secret: self.callback_secret.clone().filter(|s| !s.is_empty()),
                runner_env,
                pools: self.pools(&defaults.machine),
                pool_idle: Duration::from_secs(self.warm_pool_idle_secs),
            },
            upkeep: UpkeepSettings {
                sweep_every: Duration::from_secs(self.sweep_interval_secs.max(1)),
                orphan_grace: Duration::from_secs(self.orphan_grace_secs),
                retention: Duration::from_secs(self.retention_secs),
            },
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            api: ApiSettings {
                tokens: self
                    .api_tokens
                    .iter()
                    .filter(|t| !t.is_empty())
                    .cloned()
                    .collect(),
                body_limit: self.body_limit_bytes,
                defaults,
                idempotency_ttl: Duration::from_secs(self.idempotency_ttl_secs.max(1)),
                max_batch_jobs: self.max_batch_jobs.max(1),
                batch_body_limit: self.batch_body_limit_bytes,
                limits: HttpLimits {
                    max_connections: self.max_connections.max(1),
                    header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
                    body_timeout: Duration::from_secs(self.body_timeout_secs.max(1)),
                    max_streams: self.max_event_streams,
                    max_streams_per_token: self.max_event_streams_per_token,
                    max_long_polls: self.max_long_polls,
                    max_long_polls_per_token: self.max_long_polls_per_token,
                    rate_per_sec: self.rate_limit_per_sec,
                    rate_burst: self.rate_limit_burst.max(1),
                    login_attempts_per_min: self.login_attempts_per_minute.max(1),
                    session_ttl: Duration::from_secs(self.session_ttl_secs.max(60)),
                    trust_fly_client_ip: self.trust_fly_client_ip,
                },
                submit_replicas: (self.submit_replicas > 0).then(|| SubmitReplicas {
                    replicas: self.submit_replicas,
                    timeout: Duration::from_millis(self.submit_replicas_timeout_ms.max(1)),
                }),
            },
            owner: default_owner(),
        })
    }
}

impl CommonArgs {
    /// The pools `--warm-pool` asks for (entries were checked when parsed).
    fn pools(&self, machine: &MachineSpec) -> Vec<crate::engine::pool::PoolSpec> {
        let default = default_pool(machine, 0);
        self.warm_pool
            .iter()
            .filter(|e| !e.trim().is_empty())
            .filter_map(|e| crate::engine::pool::parse_entry(e, &default).ok())
            .collect()
    }
}

/// A `--warm-pool` entry, checked (its default-size form is completed
/// later, once the default machine size is known).
fn check_warm_pool(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Ok(String::new());
    }
    let placeholder = default_pool(&MachineSpec::default(), 0);
    crate::engine::pool::parse_entry(text, &placeholder).map(|_| text.to_string())
}

/// The pool of the default machine size and region, with `size` machines.
pub fn default_pool(machine: &MachineSpec, size: u32) -> crate::engine::pool::PoolSpec {
    crate::engine::pool::PoolSpec {
        cpu_kind: machine.cpu_kind.clone(),
        cpus: machine.cpus,
        memory_mb: machine.memory_mb,
        region: machine.region.clone(),
        size,
    }
}

/// `--api-pacing`: the limits to pace at, if any.
#[derive(Clone, Copy, Debug)]
pub struct Pacing(pub Option<machines::pacing::Limits>);

fn parse_pacing(text: &str) -> Result<Pacing, String> {
    use machines::pacing::Limits;
    match text.trim() {
        "off" => Ok(Pacing(None)),
        "fly" => Ok(Pacing(Some(Limits::fly(1.0)))),
        scale => match scale.parse::<f64>() {
            Ok(scale) if scale > 0.0 && scale.is_finite() => Ok(Pacing(Some(Limits::fly(scale)))),
            _ => Err(format!("{text:?}: expected fly, off or a positive number")),
        },
    }
}

/// `kind=N`, as `--kind-caps` takes it.
fn parse_kind_cap(text: &str) -> Result<(String, u32), String> {
    let (kind, cap) = text.split_once('=').ok_or("expected kind=N")?;
    let kind = jobs::Kind::parse(kind.trim()).map_err(|e| e.to_string())?;
    let cap = cap
        .trim()
        .parse()
        .map_err(|_| format!("{cap:?} is not a number"))?;
    Ok((kind.to_string(), cap))
}

/// The loopback address dev binds to when its API runs without a token.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
