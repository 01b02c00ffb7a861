//! [`System`]: the real system on loopback ports, one per scenario: a
//! Valkey-compatible server, the mock Machines API in this process (zero
//! latency, rate limits and memory enforcement off, unless the scenario
//! asks for the mock's own defaults, which follow Fly) and the release
//! `dispatcher serve` binary as its own process, so its memory and CPU
//! can be read from `/proc`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use devkit::mock::Limits;
use devkit::serve::{wait_healthy, Serve};
use devkit::valkey::LocalValkey;
use fred::prelude::*;
use jobs::{JobStatus, Store, StoreConfig};
use machines::{ClientConfig, MachinesClient};
use mock_machines::{Boot, MockServer};
use tokio::process::{Child, Command};

use crate::commands::CommandCounter;
use crate::usage::Usage;

const FLY_TOKEN: &str = "bench-token";
const APP: &str = "bench";

/// What a scenario needs from the system.
pub struct SystemOptions {
    /// `--max-machines`; 0 launches nothing (intake only).
    pub max_machines: u32,
    /// How the mock boots machines: real runner processes or virtual ones.
    /// Virtual guests need the store, so they are built from it.
    pub boot: BootWith,
    /// Count store commands through `MONITOR`. Only where the count is
    /// wanted: the server formats every command, Lua's included, for the
    /// feed, which costs it as much CPU as the commands themselves and
    /// would slow what the other parts measure.
    pub count_commands: bool,
    /// The mock with its command line's defaults (Fly's rate limits,
    /// create and start latencies) and the dispatcher pacing its calls,
    /// instead of everything turned off.
    pub faithful_mock: bool,
    /// More `dispatcher serve` flags.
    pub extra_args: Vec<String>,
    /// Start a replica of the store and run the dispatcher in durability
    /// mode (`--submit-replicas 1`).
    pub durable: bool,
    /// More variables of the machines' image (as its `ENV` lines would
    /// set them), e.g. the runner's `RUNNER_COMMANDS`.
    pub image_env: Vec<(String, String)>,
}

impl SystemOptions {
    /// A system that takes jobs in and launches none: for the parts that
    /// measure intake (submits, batches, claims).
    pub fn intake_only() -> Self {
        Self {
            max_machines: 0,
            boot: BootWith::Process,
            count_commands: false,
            faithful_mock: false,
            extra_args: Vec::new(),
            durable: false,
            image_env: Vec::new(),
        }
    }
}

pub enum BootWith {
    Process,
    Virtual(Box<dyn FnOnce(Store) -> Boot>),
}

/// Where the binaries are and where logs go.
#[derive(Clone)]
pub struct Binaries {
    pub dir: PathBuf,
    /// When set, the dispatcher's log goes to a file here.
    pub log_dir: Option<PathBuf>,
}

/// Store commands, by who sent them.
pub struct Commands {
    pub dispatcher: u64,
    /// Runners on the bench's store connection: virtual machines only.
    pub runners: u64,
    /// Every client's, by command name.
    pub by_name: std::collections::BTreeMap<String, u64>,
}

/// The `MONITOR` feed, and the client addresses of the bench's `store`
/// and `probe` connections: whatever the counter saw after each connected
/// and before the dispatcher started.
struct Counting {
    counter: CommandCounter,
    store_clients: Vec<String>,
    probe_clients: Vec<String>,
}

pub struct System {
    pub base: String,
    /// The bench's own connection to the store (events; virtual runners).
    pub store: Store,
    /// The bench's connection for its polls.
    probe: Client,
    counting: Option<Counting>,
    pub mock: MockServer,
    pub machines: MachinesClient,
    dispatcher: Child,
    valkey: LocalValkey,
    replica: Option<LocalValkey>,
    data_dir: PathBuf,
}

impl System {
    pub async fn start(binaries: &Binaries, options: SystemOptions) -> anyhow::Result<Self> {
        let data_dir = std::env::temp_dir().join(format!(
            "dispatcher-bench-{}-{}",
            std::process::id(),
            devkit::port::free_port().await?
        ));
        let valkey = LocalValkey::start_on_free_port(&data_dir, false).await?;
        let replica = match options.durable {
            true => Some(start_replica(&valkey, &data_dir.join("replica")).await?),
            false => None,
        };
        let counter = match options.count_commands {
            true => Some(CommandCounter::start(valkey.port()).await?),
            false => None,
        };
        let clients = async || -> anyhow::Result<Vec<String>> {
            Ok(match &counter {
                Some(counter) => counter.snapshot().await?.clients(),
                None => Vec::new(),
            })
        };
        let store = Store::connect(StoreConfig::new(valkey.address())).await?;
        store.ping().await?;
        let store_clients = clients().await?;
        let probe = Client::new(Config::from_url(&valkey.url())?, None, None, None);
        probe.init().await?;
        probe.ping::<()>(None).await?;
        let mut probe_clients = clients().await?;
        probe_clients.retain(|c| !store_clients.contains(c));
        let counting = counter.map(|counter| Counting {
            counter,
            store_clients,
            probe_clients,
        });
        // Against a mock without rate limits, no pacing either.
        let pacing = if options.faithful_mock { "fly" } else { "off" };
        let mut dispatcher_args = vec![
            "--max-machines".to_string(),
            options.max_machines.to_string(),
            "--api-pacing".to_string(),
            pacing.to_string(),
        ];
        dispatcher_args.extend(options.extra_args.iter().cloned());
        let boot = match options.boot {
            BootWith::Process => Boot::Process,
            BootWith::Virtual(build) => build(store.clone()),
        };
        let limits = match options.faithful_mock {
            true => Limits::FlyWithLatency,
            false => Limits::Off,
        };
        let mut config = devkit::mock::config(FLY_TOKEN, limits)?;
        // Unless faithful, machines may use any memory: what the bench
        // measures is the dispatcher, not the mock's watchdog.
        config.enforce_memory = options.faithful_mock;
        config.boot = boot;
        config.image_env.extend(options.image_env.iter().cloned());
        let mock = devkit::mock::start(config, 0).await?;
        let port = devkit::port::free_port().await?;
        let durability = if options.durable { "1" } else { "0" };
        let dispatcher = spawn_dispatcher(binaries, &dispatcher_args, &valkey.url(), &mock, port)?
            .env("SUBMIT_REPLICAS", durability)
            .spawn()
            .context("starting the dispatcher")?;
        let base = format!("http://127.0.0.1:{port}");
        wait_healthy(&base, Duration::from_secs(10)).await?;
        Ok(Self {
            base,
            store,
            probe,
            counting,
            machines: MachinesClient::new(ClientConfig::new(mock.base_url(), APP, FLY_TOKEN)),
            mock,
            dispatcher,
            valkey,
            replica,
            data_dir,
        })
    }

    pub fn dispatcher_usage(&self) -> anyhow::Result<Usage> {
        Usage::of(self.dispatcher.id().context("the dispatcher exited")?)
    }

    /// The commands sent so far by the dispatcher, and by the bench's
    /// store connection (which virtual machines' runners share).
    pub async fn valkey_commands(&self) -> anyhow::Result<Commands> {
        let counting = self
            .counting
            .as_ref()
            .context("this system was started without counting commands")?;
        let counted = counting.counter.snapshot().await?;
        let runners = counted.of(&counting.store_clients);
        let bench = runners + counted.of(&counting.probe_clients);
        Ok(Commands {
            dispatcher: counted.total - bench,
            runners,
            by_name: counted.by_name,
        })
    }

    /// How many jobs are in `status` now.
    pub async fn jobs_in(&self, status: JobStatus) -> anyhow::Result<u64> {
        let key = format!("{{{}}}:status:{status}", self.store.namespace());
        Ok(self.probe.zcard(key).await?)
    }

    /// Machine slots still held (`in_flight`): each is freed once its
    /// supervisor has destroyed the machine, its last step.
    pub async fn slots_held(&self) -> anyhow::Result<u64> {
        let key = format!("{{{}}}:in_flight", self.store.namespace());
        Ok(self.probe.zcard(key).await?)
    }

    /// Machines API calls the mock has answered, all routes together.
    pub fn machines_api_calls(&self) -> u64 {
        self.mock.stats().calls.values().sum()
    }

    pub async fn stop(mut self) {
        let _ = self.dispatcher.kill().await;
        self.store.quit().await;
        let _ = self.probe.quit().await;
        self.mock.shutdown().await;
        self.valkey.stop().await;
        if let Some(mut replica) = self.replica {
            replica.stop().await;
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn spawn_dispatcher(
    binaries: &Binaries,
    args: &[String],
    valkey_url: &str,
    mock: &MockServer,
    port: u16,
) -> anyhow::Result<Command> {
    let binary = binaries.dir.join("dispatcher");
    let runner = binaries.dir.join("runner");
    for needed in [&binary, &runner] {
        if !needed.is_file() {
            bail!(
                "{} not found: build the binaries first (scripts/bench does)",
                needed.display()
            );
        }
    }
    let (stdout, stderr) = match &binaries.log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let log = std::fs::File::create(dir.join(format!("dispatcher-{port}.log")))?;
            (Stdio::from(log.try_clone()?), Stdio::from(log))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    let serve = Serve {
        binary: &binary,
        runner: &runner,
        store_url: valkey_url,
        machines_url: &mock.base_url(),
        app: APP,
        token: FLY_TOKEN,
        image: "local/runner:bench",
        port,
    };
    let mut command = serve.command(args);
    command.stdout(stdout).stderr(stderr);
    Ok(command)
}

/// A replica of `primary`, in sync before it returns.
async fn start_replica(primary: &LocalValkey, dir: &Path) -> anyhow::Result<LocalValkey> {
    // A diskless full sync waits 5 s by default for more replicas to join
    // it; there is only this one.
    let primary_client = Client::new(Config::from_url(&primary.url())?, None, None, None);
    primary_client.init().await?;
    let config = fred::types::CustomCommand::new_static("CONFIG", None, false);
    let _: Value = primary_client
        .custom(config, vec!["SET", "repl-diskless-sync-delay", "0"])
        .await?;
    let _ = primary_client.quit().await;
    let replicaof = ["--replicaof", "127.0.0.1", &primary.port().to_string()].map(String::from);
    let replica =
        LocalValkey::start_with(devkit::port::free_port().await?, dir, None, &replicaof).await?;
    let client = Client::new(Config::from_url(&replica.url())?, None, None, None);
    client.init().await?;
    for _ in 0..200 {
        let info: String = client
            .info(Some(fred::types::InfoKind::Replication))
            .await?;
        if info.contains("master_link_status:up") {
            let _ = client.quit().await;
            return Ok(replica);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the replica did not sync within 10 s")
}
