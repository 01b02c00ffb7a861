//! [`System`]: the dispatcher in this process against the local mock
//! Machines API, each machine a local `runner` process, on a store named
//! by `--valkey-url` (a [`LocalValkey`] it owns, or one already running).
//! `dispatcher dev` and the system tests start it the same way, from the
//! same `dispatcher dev` flags, so tests run what a laptop runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dispatcher::cli::client::ApiClient;
use dispatcher::cli::{DevArgs, LOOPBACK};
use dispatcher::configuration::Settings;
use dispatcher::shutdown::Shutdown;
use dispatcher::startup::Application;
use machines::ClientConfig;
use mock_machines::{MockConfig, MockServer};
use tokio::task::JoinHandle;

use crate::valkey::LocalValkey;

/// What the flags do not say: who the machines belong to and what they run.
pub struct Setup {
    /// The Fly app the machines belong to.
    pub app: String,
    /// The Machines API token: the one the mock requires and the
    /// dispatcher sends.
    pub token: String,
    /// The mock's configuration (its token is [`Setup::token`]).
    pub mock: MockConfig,
    /// The image name machines are created with.
    pub image: String,
    /// The `runner` binary each machine runs.
    pub runner: PathBuf,
    /// The store URL runners get, when not the dispatcher's `--valkey-url`.
    pub runner_store_url: Option<String>,
    /// The server behind `--valkey-url` when the caller started it: it
    /// lives as long as the system.
    pub local_store: Option<LocalValkey>,
}

/// A running system; [`System::stop`] (or dropping it) ends it.
pub struct System {
    pub mock: MockServer,
    /// How to reach the mock as the dispatcher does.
    pub machines: ClientConfig,
    pub settings: Settings,
    /// Fires to stop the dispatcher.
    pub shutdown: Shutdown,
    addr: SocketAddr,
    app: JoinHandle<anyhow::Result<()>>,
    local_store: Option<LocalValkey>,
}

impl System {
    /// Starts the mock on `--machines-port` and the dispatcher on
    /// `--port` (both on loopback; `0` is any free port), the
    /// dispatcher's settings read from `args` and then changed by
    /// `adjust`.
    pub async fn start(
        args: &DevArgs,
        setup: Setup,
        adjust: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<Self> {
        let mock = crate::mock::start(
            MockConfig {
                token: setup.token.clone(),
                ..setup.mock
            },
            args.machines_port,
        )
        .await?;
        let machines = ClientConfig::new(mock.base_url(), &setup.app, &setup.token);
        let runner_store_url = setup
            .runner_store_url
            .unwrap_or_else(|| args.common.valkey_url.clone());
        let mut settings = args.common.settings(
            SocketAddr::new(LOOPBACK, args.port),
            machines.clone(),
            setup.image,
            vec![setup.runner.display().to_string()],
            runner_store_url,
        )?;
        adjust(&mut settings);
        let application = Application::build(settings.clone()).await?;
        let addr = application.local_addr();
        let shutdown = Shutdown::new();
        let app = tokio::spawn(application.run_until_stopped(shutdown.clone()));
        Ok(Self {
            mock,
            machines,
            settings,
            shutdown,
            addr,
            app,
            local_store: setup.local_store,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` and the dispatcher's address.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client of the dispatcher's API sending its first API token, when
    /// it has any.
    pub fn api(&self) -> ApiClient {
        ApiClient::new(&self.base_url(), self.settings.api.tokens.first().cloned())
    }

    /// The store server this system owns, if it started one.
    pub fn local_store(&self) -> Option<&LocalValkey> {
        self.local_store.as_ref()
    }

    /// Starts another dispatcher on the same store and mock (a peer, as
    /// with `fly scale count 2`), its settings changed by `change` (e.g.
    /// another runner image: a deploy). It runs until the returned
    /// handle fires.
    pub async fn spawn_peer(
        &self,
        change: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<(Shutdown, SocketAddr)> {
        let mut settings = self.settings.clone();
        change(&mut settings);
        let application = Application::build(settings).await?;
        let addr = application.local_addr();
        let shutdown = Shutdown::new();
        tokio::spawn(application.run_until_stopped(shutdown.clone()));
        Ok((shutdown, addr))
    }

    /// Waits until the dispatcher stops ([`System::shutdown`] fired, or
    /// it failed), then stops the mock.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = match self.app.await {
            Ok(result) => result,
            Err(panicked) => Err(anyhow::anyhow!("the dispatcher task failed: {panicked}")),
        };
        self.mock.shutdown().await;
        result
    }

    /// Stops the dispatcher (waiting up to 30 s for it), then the mock.
    pub async fn stop(self) {
        self.shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.app).await;
        self.mock.shutdown().await;
    }
}
