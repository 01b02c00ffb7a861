//! [`Application`]: connects the parts and runs them until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use jobs::Store;
use machines::MachinesClient;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::api::routes::{self, AppState};
use crate::configuration::Settings;
use crate::engine::callbacks::Callbacks;
use crate::engine::hub::EventHub;
use crate::engine::launcher;
use crate::engine::leases::Leases;
use crate::engine::supervisor::Supervision;
use crate::engine::{schedules, sweeper};
use crate::shutdown::Shutdown;

/// The client's config with the create budget shared through the store.
fn machines_config(settings: &Settings, store: &Store) -> machines::ClientConfig {
    let mut config = settings.machines.clone();
    if config.pacing.is_some() {
        config.shared_budget = Some(std::sync::Arc::new(crate::engine::pacing::StoreBudget(
            store.clone(),
        )));
    }
    config
}

/// Default time a dispatcher keeps answering after SIGTERM
/// (`--shutdown-grace-secs`); fly.toml's `kill_timeout` must be longer.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// After the grace period, connections still open (SSE streams, long
/// polls) get this long to close before they are cut.
const CUT_OFF: Duration = Duration::from_secs(1);

pub struct Application {
    listener: TcpListener,
    settings: Settings,
    store: Store,
}

impl Application {
    /// Connects to the store and binds the listener (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = Store::connect(settings.store.clone())
            .await
            .with_context(|| {
                format!("connecting to the job store at {}", settings.store.address)
            })?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        Ok(Self {
            listener,
            settings,
            store,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves the API and runs the launcher and the sweeper until
    /// `shutdown` triggers. Then the launcher hands its leases back to
    /// peers at once, while the API keeps answering for `shutdown_grace`:
    /// new jobs get 503 + `Retry-After` and `/healthz` says draining, so
    /// clients and Fly's proxy move to a peer instead of meeting a refused
    /// connection mid-deploy; requests in progress finish. Then it exits.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let Self {
            listener,
            settings,
            store,
        } = self;
        crate::metrics::install();
        let hub = EventHub::start(&store, shutdown.clone()).await?;
        let policy = crate::api::children::ChildPolicy {
            defaults: settings.api.defaults.clone(),
            max_batch_jobs: settings.api.max_batch_jobs,
        };
        crate::api::children::publish_policy(&store, &policy).await?;
        let callbacks = Callbacks::new(
            settings.launch.callback_secret.clone(),
            settings.api.defaults.callback_targets.clone(),
        );
        let supervision = Arc::new(Supervision {
            store: store.clone(),
            machines: MachinesClient::new(machines_config(&settings, &store)),
            hub: hub.clone(),
            leases: Leases::new(store.clone(), settings.launch.lease),
            launch: settings.launch.clone(),
            owner: settings.owner.clone(),
            callbacks: callbacks.clone(),
            watches: Arc::new(Semaphore::new(settings.launch.max_watches)),
        });
        let launcher = tokio::spawn(launcher::run(supervision.clone(), shutdown.clone()));
        let pools = tokio::spawn(crate::engine::pool::upkeep::run(
            supervision.clone(),
            shutdown.clone(),
        ));
        let sweeper = tokio::spawn(sweeper::run(
            supervision,
            settings.upkeep.clone(),
            shutdown.clone(),
        ));

        tokio::spawn(crate::engine::batch_callbacks::run(
            store.clone(),
            hub.clone(),
            callbacks.clone(),
            shutdown.clone(),
        ));
        let api = Arc::new(settings.api.clone());
        let scheduler = tokio::spawn(schedules::run(
            store.clone(),
            api.clone(),
            hub.launcher_wakeup(),
            shutdown.clone(),
        ));
        let state = AppState {
            store: store.clone(),
            api,
            launcher_wakeup: hub.launcher_wakeup(),
            shutdown: shutdown.clone(),
            hub: hub.clone(),
            callbacks,
            limits: Arc::new(crate::api::limits::Limits::new(&settings.api.limits)),
        };
        tracing::info!(addr = %listener.local_addr()?, owner = %settings.owner, "dispatcher listening");
        let grace = settings.shutdown_grace;
        let draining = shutdown.clone();
        let limits = settings.api.limits.clone();
        let server =
            crate::api::server::serve(listener, routes::router(state), &limits, async move {
                draining.wait().await;
                tokio::time::sleep(grace).await;
            });
        let deadline = async {
            shutdown.wait().await;
            tokio::time::sleep(grace + CUT_OFF).await;
        };
        tokio::select! {
            _ = server => {},
            _ = deadline => tracing::warn!(?grace, "connections still open after the grace period; closing"),
        }
        launcher.await?;
        pools.await?;
        sweeper.await?;
        scheduler.await?;
        store.quit().await;
        tracing::info!("dispatcher stopped");
        Ok(())
    }
}
