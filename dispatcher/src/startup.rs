//! [`Application`]: connects the parts and runs them until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use jobs::Store;
use machines::MachinesClient;
use tokio::net::TcpListener;

use crate::configuration::Settings;
use crate::hub::EventHub;
use crate::launcher;
use crate::routes::{self, AppState};
use crate::shutdown::Shutdown;
use crate::supervisor::Supervision;

/// How long in-flight supervisors get to finish after shutdown begins.
/// fly.toml's `kill_timeout` must leave room for it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

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
            .with_context(|| format!("connecting to the job store at {}", settings.store.url))?;
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

    /// Serves the API and runs the launcher until `shutdown` triggers, then
    /// finishes in-flight requests and gives supervisors a grace period.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let Self {
            listener,
            settings,
            store,
        } = self;
        let hub = EventHub::start(&store, shutdown.clone()).await?;
        let supervision = Arc::new(Supervision {
            store: store.clone(),
            machines: MachinesClient::new(settings.machines.clone()),
            hub: hub.clone(),
            launch: settings.launch.clone(),
            owner: settings.owner.clone(),
        });
        let launcher = tokio::spawn(launcher::run(supervision, shutdown.clone()));

        let state = AppState {
            store: store.clone(),
            api: Arc::new(settings.api.clone()),
            launcher_wakeup: hub.launcher_wakeup(),
        };
        tracing::info!(addr = %listener.local_addr()?, owner = %settings.owner, "dispatcher listening");
        let stopping = shutdown.clone();
        axum::serve(listener, routes::router(state))
            .with_graceful_shutdown(async move { stopping.wait().await })
            .await?;

        let mut supervisors = launcher.await?;
        if !supervisors.is_empty() {
            tracing::info!(
                in_flight = supervisors.len(),
                "waiting for in-flight attempts"
            );
            let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
                while supervisors.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!(
                    left = supervisors.len(),
                    "grace period over; leaving attempts to their leases"
                );
                supervisors.abort_all();
            }
        }
        store.quit().await;
        Ok(())
    }
}
