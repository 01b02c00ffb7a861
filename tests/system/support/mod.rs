//! `spawn_system()`: the real system on random loopback ports, for tests.
//!
//! Each test gets its own Valkey-compatible server (a child process), its
//! own mock Machines API and its own dispatcher, so tests never share
//! state. Machines are real `runner` processes (the binary this package
//! builds). The system is started by `devkit::system::System` from
//! `dispatcher dev` flags, exactly as `dispatcher dev` starts it.
//!
//! Tests speak to it through the CLI's typed client ([`TestSystem::api`]):
//! `submit`, `job`, `wait_for` and `jobs_in` give `jobs::Job`s. The
//! `*_raw` helpers (and `get_json`, `send_json`) are for tests of what is
//! on the wire: status codes, headers, error bodies naming fields.

#![allow(dead_code)] // each test binary uses a different part of this

pub mod topology;
pub mod webdriver;

/// The tests' temporary directory (kept when a test fails).
pub use topology::Scratch as TempDir;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use devkit::mock::Limits;
use devkit::system::{Setup, System};
use devkit::valkey::LocalValkey;
use dispatcher::cli::client::{ApiClient, ListQuery};
use dispatcher::configuration::Settings;
use dispatcher::shutdown::Shutdown;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use jobs::{Job, JobId, JobStatus, Store};
use machines::{ListFilter, Machine, MachinesClient};
use mock_machines::{MockConfig, MockServer, Stats};
use serde_json::Value;

pub const FLY_TOKEN: &str = "test-fly-token";
pub const APP: &str = "test-app";

/// Knobs a test may turn.
#[derive(Clone, Debug)]
pub struct Options {
    pub max_machines: u32,
    pub api_tokens: Vec<String>,
    pub body_limit: usize,
    /// More `dispatcher` flags, e.g. `--timeout-grace-secs=1`.
    pub extra_args: Vec<String>,
    /// Changes to the mock's configuration (app secrets, ...).
    pub mock: fn(&mut MockConfig),
    /// The dispatcher's `--valkey-url`, when not the test's own server
    /// (a Sentinel set, a TLS server: see [`topology`]).
    pub store_url: Option<String>,
    /// The store URL runners get, when not `store_url`.
    pub runner_store_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_machines: 8,
            api_tokens: Vec::new(),
            body_limit: 1 << 20,
            extra_args: Vec::new(),
            mock: |_| {},
            store_url: None,
            runner_store_url: None,
        }
    }
}

pub struct TestSystem {
    pub base: String,
    pub http: reqwest::Client,
    /// The typed client of the system's API (the CLI's), with its token.
    pub api: ApiClient,
    pub store: Store,
    pub machines: MachinesClient,
    pub shutdown: Shutdown,
    /// The first of `Options::api_tokens`: the helpers below send it.
    pub token: Option<String>,
    system: System,
    _dir: TempDir,
}

pub async fn spawn_system() -> TestSystem {
    spawn_system_with(Options::default()).await
}

pub async fn spawn_system_with(options: Options) -> TestSystem {
    // Quiet by default; TEST_LOG=1 shows the system's logs.
    if std::env::var_os("TEST_LOG").is_some() {
        dispatcher::telemetry::init(dispatcher::telemetry::LogFormat::Human);
    }
    let dir = TempDir::new();
    let valkey = start_valkey(&dir.path.join("valkey"), None).await;
    let store_url = options.store_url.clone().unwrap_or_else(|| valkey.url());
    let setup = Setup {
        app: APP.into(),
        token: FLY_TOKEN.into(),
        mock: mock_config(options.mock),
        image: "local/runner:test".into(),
        runner: env!("CARGO_BIN_EXE_runner").into(),
        runner_store_url: options.runner_store_url.clone(),
        local_store: Some(valkey),
    };
    let system = System::start(&dev_args(&options, &store_url), setup, |_| {})
        .await
        .expect("the system starts");
    let store = Store::connect(system.settings.store.clone()).await.unwrap();
    TestSystem {
        base: system.base_url(),
        http: reqwest::Client::new(),
        api: system.api(),
        store,
        machines: MachinesClient::new(system.machines.clone()),
        shutdown: system.shutdown.clone(),
        token: options.api_tokens.first().cloned(),
        system,
        _dir: dir,
    }
}

/// `dispatcher dev` flags for `options`: tests parse real flags, so they
/// run the binary's defaults.
fn dev_args(options: &Options, store_url: &str) -> dispatcher::cli::DevArgs {
    use clap::Parser;
    let mut argv = vec![
        "dispatcher".to_string(),
        "dev".to_string(),
        "--port=0".to_string(),
        "--machines-port=0".to_string(),
        format!("--valkey-url={store_url}"),
        format!("--max-machines={}", options.max_machines),
        format!("--body-limit-bytes={}", options.body_limit),
        "--lease-secs=5".to_string(),
        // Tests that stop a system need no drain window (scale_out tests it).
        "--shutdown-grace-secs=0".to_string(),
    ];
    if !mock_config(options.mock).rate_limits {
        // No limits to pace at.
        argv.push("--api-pacing=off".to_string());
    }
    if !options.api_tokens.is_empty() {
        argv.push(format!("--api-tokens={}", options.api_tokens.join(",")));
    }
    argv.extend(options.extra_args.iter().cloned());
    let cli = dispatcher::cli::Cli::parse_from(argv);
    let dispatcher::cli::Command::Dev(args) = cli.command else {
        unreachable!()
    };
    args
}

/// A Valkey-compatible server with AOF, its files in `dir`, on `port` (a
/// free one when `None`).
pub async fn start_valkey(dir: &std::path::Path, port: Option<u16>) -> LocalValkey {
    let started = match port {
        None => LocalValkey::start_on_free_port(dir, true).await,
        Some(port) => {
            // The port may still be held by the server it replaces: a few tries.
            let mut started = LocalValkey::start(port, dir, true).await;
            for _ in 0..4 {
                if started.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                started = LocalValkey::start(port, dir, true).await;
            }
            started
        }
    };
    started.expect("a Valkey-compatible server starts (scripts/ensure-valkey installs one)")
}

/// Sends `request` and parses the answer as JSON (whatever the status).
pub async fn send_json(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Sends `request` and returns the answer's body as text.
pub async fn send_text(request: reqwest::RequestBuilder) -> String {
    request.send().await.unwrap().text().await.unwrap()
}

pub async fn free_port() -> u16 {
    devkit::port::free_port().await.unwrap()
}

/// The mock Machines API on a free port, rate limits off (tests create
/// machines faster than Fly's 1/s per app) unless `tweak` turns them on.
pub async fn start_mock_with(tweak: fn(&mut MockConfig)) -> MockServer {
    devkit::mock::start(mock_config(tweak), 0).await.unwrap()
}

/// The tests' mock configuration: rate limits off unless `tweak` turns
/// them on.
fn mock_config(tweak: fn(&mut MockConfig)) -> MockConfig {
    let mut config = devkit::mock::config(FLY_TOKEN, Limits::Off).unwrap();
    tweak(&mut config);
    config
}

impl TestSystem {
    /// Starts another dispatcher on the same store and mock (a peer, as
    /// with `fly scale count 2`). It runs until the returned handle fires.
    pub async fn spawn_peer(&self) -> Shutdown {
        self.spawn_peer_with(|_| {}).await.0
    }

    /// A peer whose settings differ as `change` says (e.g. another
    /// runner image: a deploy). Returns its handle and base URL.
    pub async fn spawn_peer_with(&self, change: impl FnOnce(&mut Settings)) -> (Shutdown, String) {
        let (shutdown, addr) = self.system.spawn_peer(change).await.expect("peer starts");
        (shutdown, format!("http://{addr}"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request carrying the system's API token, when it has one.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Submits a job (`POST /jobs` with `body`) through the typed client.
    pub async fn submit(&self, body: Value) -> Job {
        match self.api.submit_request(&body).await {
            Ok(job) => job,
            Err(error) => panic!("submit {body}: {error}"),
        }
    }

    /// `POST /jobs` as bytes on the wire: checks the 202 answer and its
    /// `Location`, and returns the job as JSON (for tests of the API's
    /// shape).
    pub async fn submit_raw(&self, body: Value) -> Value {
        let response = self
            .request(reqwest::Method::POST, "/jobs")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            202,
            "submit {body}: {:?}",
            response.text().await
        );
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let job: Value = response.json().await.unwrap();
        assert_eq!(location, format!("/jobs/{}", job["id"].as_str().unwrap()));
        job
    }

    /// `GET path` decoded as `T`, checking the 200: for routes and query
    /// parameters the typed client has no call for (`?wait=`, `?full=`).
    pub async fn get_typed<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// `GET path`, parsed as JSON (whatever the status).
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    /// `GET /jobs/{id}` through the typed client.
    pub async fn job(&self, id: &JobId) -> Job {
        self.api.get(&id.to_string()).await.unwrap()
    }

    /// The first page of the jobs in `status`, newest first.
    pub async fn jobs_in(&self, status: JobStatus) -> Vec<Job> {
        let query = ListQuery {
            status: Some(status),
            ..ListQuery::default()
        };
        self.api.list(&query).await.unwrap().jobs
    }

    /// Polls until the job is in `status` (panics after `within`).
    pub async fn wait_for(&self, id: &JobId, status: JobStatus, within: Duration) -> Job {
        let what = format!("job {id} {status}");
        poll(&what, within, || self.job(id), |job| job.status == status).await
    }

    /// [`TestSystem::wait_for`] by the JSON view (for tests of the API's
    /// shape).
    pub async fn wait_for_raw(&self, id: &str, status: &str, within: Duration) -> Value {
        let what = format!("job {id} {status}");
        let path = format!("/jobs/{id}");
        let view = || self.get_typed::<Value>(&path);
        poll(&what, within, view, |job| job["status"] == status).await
    }

    pub async fn machines(&self, include_deleted: bool) -> Vec<Machine> {
        let filter = ListFilter {
            include_deleted,
            ..ListFilter::default()
        };
        self.machines.list(&filter).await.unwrap()
    }

    /// Changes the mock's fault injection (`POST /_mock/faults`).
    pub async fn set_faults(&self, faults: Value) {
        let response = self
            .http
            .post(format!("{}/_mock/faults", self.system.mock.base_url()))
            .bearer_auth(FLY_TOKEN)
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
    }

    pub fn mock_stats(&self) -> Stats {
        self.system.mock.stats()
    }

    /// Every machine the mock ever booted is destroyed (after a settle time
    /// for the supervisor's final destroy call).
    pub async fn assert_all_machines_destroyed(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let live = self.machines(false).await;
            if live.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "machines left: {live:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for machine in self.machines(true).await {
            assert_eq!(
                machine.state,
                machines::MachineState::Destroyed,
                "{machine:#?}"
            );
        }
    }

    /// Whether the store holds `key` (for keys no `Store` method reads).
    pub async fn key_exists(&self, key: &str) -> bool {
        let client = self.raw_store().await;
        let found: u32 = client.exists(key).await.unwrap();
        let _ = client.quit().await;
        found == 1
    }

    /// A plain client of the system's store, to look at keys directly.
    pub async fn raw_store(&self) -> fred::clients::Client {
        let valkey = self.system.local_store().expect("the test's own store");
        let config = fred::types::config::Config::from_url(&valkey.url()).unwrap();
        let client = fred::types::Builder::from_config(config).build().unwrap();
        client.init().await.unwrap();
        client
    }

    /// Records every status a job passes through, from the store's events.
    pub async fn record_statuses(&self) -> StatusRecorder {
        let subscriber = self.store.subscriber().await.unwrap();
        let rx = subscriber.message_rx();
        subscriber
            .subscribe(self.store.events_channel())
            .await
            .unwrap();
        StatusRecorder {
            _subscriber: subscriber,
            rx,
        }
    }

    pub async fn stop(self) {
        self.system.stop().await;
    }
}

pub struct StatusRecorder {
    _subscriber: SubscriberClient,
    rx: tokio::sync::broadcast::Receiver<fred::types::Message>,
}

impl StatusRecorder {
    /// Collects the statuses of job `id` until it reaches `last`.
    pub async fn until(mut self, id: &JobId, last: JobStatus, within: Duration) -> Vec<JobStatus> {
        let rx = &mut self.rx;
        let mut seen = Vec::new();
        let id = id.to_string();
        let collect = async {
            while let Ok(message) = rx.recv().await {
                let text: String = message.value.convert().unwrap();
                let event: Value = serde_json::from_str(&text).unwrap();
                if event["id"] == id && event["type"] == "status" {
                    let status: JobStatus =
                        serde_json::from_value(event["status"].clone()).unwrap();
                    seen.push(status);
                    if status == last {
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(within, collect).await;
        seen
    }
}

/// Calls `fetch` every 25 ms until what it returns satisfies `done`;
/// panics, showing the last value, once `within` has passed.
pub async fn poll<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    what: &str,
    within: Duration,
    mut fetch: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let value = fetch().await;
        if done(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what} within {within:?}: {value:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The (only) warm pool's counts, once they satisfy `done`.
pub async fn pool_until(
    store: &Store,
    what: &str,
    done: impl Fn(&jobs::PoolStats) -> bool,
) -> jobs::PoolStats {
    let stats = poll(
        &format!("pool {what}"),
        Duration::from_secs(60),
        || async { store.pool_stats().await.unwrap() },
        |stats| done(&stats.values().next().copied().unwrap_or_default()),
    )
    .await;
    stats.values().next().copied().unwrap_or_default()
}

/// A loopback HTTP listener that records every request it gets, headers
/// and body (a callback target).
pub struct Listener {
    pub url: String,
    pub calls: Arc<Mutex<Vec<(axum::http::HeaderMap, Bytes)>>>,
    pub hits: Arc<AtomicUsize>,
}

impl Listener {
    /// The bodies received so far.
    pub fn bodies(&self) -> Vec<Bytes> {
        let calls = self.calls.lock().unwrap();
        calls.iter().map(|(_, body)| body.clone()).collect()
    }
}

pub async fn listener() -> Listener {
    let calls: Arc<Mutex<Vec<(axum::http::HeaderMap, Bytes)>>> = Default::default();
    let hits: Arc<AtomicUsize> = Default::default();
    let (sink, count) = (calls.clone(), hits.clone());
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: Bytes| {
        let (sink, count) = (sink.clone(), count.clone());
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            sink.lock().unwrap().push((headers, body));
            "ok"
        }
    });
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", socket.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(socket, app).await });
    Listener { url, calls, hits }
}
