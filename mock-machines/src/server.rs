//! [`MockServer`]: the shared state and the accept loop.
//!
//! Connections are served with hyper directly (rather than `axum::serve`)
//! so that the `drop_connection_rate` fault can close a connection without
//! answering, and so that shutdown can cut long-polling `wait`s short.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::config::MockConfig;
use crate::error::ApiError;
use crate::faults::Faults;
use crate::process;
use crate::ratelimit::RateLimiter;
use crate::routes;
use crate::scratch::Scratch;
use crate::state::MachineEntry;
use crate::stats::{Counters, Stats};
use crate::watchdog::Watchdog;

/// Machines by app, then by id. An app exists once it has a machine.
type Apps = HashMap<String, BTreeMap<String, MachineEntry>>;

/// Everything the routes and machine tasks share.
pub(crate) struct Shared {
    pub config: MockConfig,
    apps: Mutex<Apps>,
    pub counters: Arc<Counters>,
    pub faults: Faults,
    limiter: RateLimiter,
    pub watchdog: Watchdog,
    pub scratch: Scratch,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Apps> {
        self.apps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the machines of `app` (creating the app on first use).
    pub fn with_app<R>(
        &self,
        app: &str,
        f: impl FnOnce(&mut BTreeMap<String, MachineEntry>) -> R,
    ) -> R {
        let mut apps = self.lock();
        f(apps.entry(app.to_string()).or_default())
    }

    /// Runs `f` on machine `id` of `app`; `None` if there is no such machine.
    pub fn with_machine<R>(
        &self,
        app: &str,
        id: &str,
        f: impl FnOnce(&mut MachineEntry) -> R,
    ) -> Option<R> {
        self.lock().get_mut(app)?.get_mut(id).map(f)
    }

    /// Like [`Self::with_machine`], answering 404 for unknown machines.
    pub fn with_machine_result<R>(
        &self,
        app: &str,
        id: &str,
        f: impl FnOnce(&mut MachineEntry) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        self.with_machine(app, id, f)
            .unwrap_or_else(|| Err(ApiError::machine_not_found()))
    }

    /// Takes a rate-limit token, counting refusals.
    pub fn rate_limit(&self, action: &'static str, key: &str) -> Result<(), ApiError> {
        self.limiter.check(action, key).inspect_err(|_| {
            self.counters.rate_limited();
        })
    }

    pub fn stats(&self) -> Stats {
        self.counters.snapshot(self.faults.injected())
    }

    /// SIGKILLs every machine's process group and abandons the runs.
    /// Returns receivers that complete once each run has reaped its processes.
    fn kill_all(&self) -> Vec<watch::Receiver<bool>> {
        let mut apps = self.lock();
        let mut pending = Vec::new();
        for entry in apps.values_mut().flat_map(|machines| machines.values_mut()) {
            entry.generation += 1;
            if let Some(run) = entry.run.take() {
                if let Some(guest) = run.guest {
                    guest.signal(libc::SIGKILL);
                    pending.push(run.done);
                }
            }
        }
        pending
    }
}

/// A running mock. Dropping it kills every machine's processes; prefer
/// [`MockServer::shutdown`], which also waits until they are reaped.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop_accepting: watch::Sender<bool>,
    accept_task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Bind and serve on `listener` in a background tokio task.
    pub async fn start(config: MockConfig, listener: TcpListener) -> std::io::Result<MockServer> {
        let addr = listener.local_addr()?;
        if config.reap_orphans {
            process::become_subreaper();
        }
        let shared = Arc::new(Shared {
            limiter: RateLimiter::new(config.rate_limits, config.rate_limit_scale),
            faults: Faults::new(config.faults.clone()),
            watchdog: Watchdog::start(config.watchdog_interval),
            counters: Arc::new(Counters::default()),
            apps: Mutex::new(HashMap::new()),
            scratch: Scratch::new(&addr.port().to_string()),
            config,
        });
        let router = routes::router(shared.clone());
        let (stop_accepting, stopped) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(listener, router, shared.clone(), stopped));
        tracing::info!(%addr, "mock Machines API listening");
        Ok(MockServer {
            addr,
            shared,
            stop_accepting,
            accept_task: Some(accept_task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the base URL for clients (without `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Live counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Stops serving (open connections are cut), then kills every machine's
    /// process group and waits (up to 10 s) until all are reaped.
    pub async fn shutdown(mut self) {
        self.stop_accepting.send_replace(true);
        if let Some(task) = self.accept_task.take() {
            let _ = task.await;
        }
        let pending = self.shared.kill_all();
        let all_reaped =
            futures::future::join_all(pending.into_iter().map(|mut done| async move {
                let _ = done.wait_for(|finished| *finished).await;
            }));
        if tokio::time::timeout(Duration::from_secs(10), all_reaped)
            .await
            .is_err()
        {
            tracing::warn!("some machine processes were not reaped within 10 s of shutdown");
        }
        self.shared.scratch.remove_all();
        tracing::info!(addr = %self.addr, "mock Machines API stopped");
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(task) = self.accept_task.take() {
            task.abort();
        }
        // Best effort without awaiting: the processes get SIGKILL now and
        // are reaped by their tasks if the runtime lives on.
        drop(self.shared.kill_all());
        self.shared.scratch.remove_all();
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, router.clone(), shared.clone()));
                }
                Err(error) => {
                    // Usually out of file descriptors: back off briefly.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            // A change (or a dropped sender) means stop.
            _ = stopped.changed() => break,
        }
    }
    // Dropping the JoinSet aborts every open connection.
}

/// Marks a response that a handler has decided (by fault injection) must
/// never reach the client: the work is done, the answer is lost.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropAnswer;

/// The error that makes hyper close a connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
struct DroppedConnection;

async fn serve_connection(stream: TcpStream, router: Router, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let router = router.clone();
        let shared = shared.clone();
        async move {
            let controls = request.uri().path().starts_with("/_mock/");
            if !controls && shared.faults.drop_connection() {
                return Err(DroppedConnection);
            }
            let response = router
                .oneshot(request.map(axum::body::Body::new))
                .await
                .unwrap_or_else(|never| match never {});
            let marked = response.extensions().get::<DropAnswer>().is_some();
            if marked || (!controls && shared.faults.drop_answer()) {
                return Err(DroppedConnection);
            }
            Ok(response)
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(error) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%error, "connection ended with an error");
    }
}
