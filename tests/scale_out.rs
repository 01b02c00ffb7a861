//! Crash safety with several dispatcher processes sharing one store and one
//! mock Machines API: `kill -9` mid-run, a crash between "create" and
//! "record", a Valkey restart, SIGTERM under load, and the global cap.
//! Dispatchers are real `dispatcher serve` processes; machines are real
//! runner processes.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dispatcher::valkey::LocalValkey;
use mock_machines::MockServer;
use serde_json::{json, Value};
use support::{free_port, start_mock, start_valkey, TempDir, APP, FLY_TOKEN};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// A lease short enough that a dead dispatcher's attempts move on quickly.
const LEASE_SECS: &str = "3";

struct Cluster {
    store: LocalValkey,
    store_dir: PathBuf,
    mock: MockServer,
    http: reqwest::Client,
    dir: TempDir,
}

struct Dispatcher {
    child: Child,
    base: String,
}

impl Cluster {
    async fn start() -> Self {
        let dir = TempDir::new();
        let store_dir = dir.path.join("valkey");
        let store = start_valkey(&store_dir, None).await;
        let mock = start_mock().await;
        Self {
            store,
            store_dir,
            mock,
            http: reqwest::Client::new(),
            dir,
        }
    }

    /// Starts a `dispatcher serve` process and waits until it is healthy.
    async fn dispatcher(&self, name: &str, extra: &[&str]) -> Dispatcher {
        let port = free_port().await;
        let log = std::fs::File::create(self.dir.path.join(format!("{name}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dispatcher"))
            .args([
                "serve",
                "--no-auth",
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .args(extra)
            .env("VALKEY_URL", self.store.url())
            .env("FLY_APP_NAME", APP)
            .env("FLY_API_TOKEN", FLY_TOKEN)
            .env("MACHINES_API_URL", self.mock.base_url())
            .env("RUNNER_IMAGE", "local/runner:test")
            .env("RUNNER_EXEC", env!("CARGO_BIN_EXE_runner"))
            .env("LEASE_SECS", LEASE_SECS)
            .env("MACHINES_API_PACING", "off")
            .env("FLY_MACHINE_ID", name)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(format!("{base}/healthz")).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "dispatcher {name} did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Dispatcher { child, base }
    }

    async fn submit(&self, via: &Dispatcher, body: Value) -> String {
        let response = self
            .http
            .post(format!("{}/jobs", via.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits until every job is terminal; returns them by id.
    async fn wait_all(
        &self,
        via: &Dispatcher,
        ids: &[String],
        within: Duration,
    ) -> HashMap<String, Value> {
        let deadline = Instant::now() + within;
        let mut done = HashMap::new();
        while done.len() < ids.len() {
            let pending: Vec<&String> = ids.iter().filter(|id| !done.contains_key(*id)).collect();
            for id in pending {
                let job: Value = match self
                    .http
                    .get(format!("{}/jobs/{id}", via.base))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => r.json().await.unwrap(),
                    _ => continue,
                };
                if ["succeeded", "failed", "cancelled"].contains(&job["status"].as_str().unwrap()) {
                    done.insert(id.clone(), job);
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} jobs finished in {within:?}; logs in {}",
                done.len(),
                ids.len(),
                self.dir.path.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        done
    }

    /// Waits until the mock holds no live machine.
    async fn assert_no_live_machines(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.mock.stats().live > 0 {
            assert!(
                Instant::now() < deadline,
                "machines left: {:?}",
                self.mock.stats()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn kill_9(dispatcher: &Dispatcher) {
    let pid = dispatcher.child.id().expect("running") as i32;
    // SAFETY: kill(2) with a pid we spawned.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn trace_files(dir: &Path) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        // "{job uuid}-{attempt}-{pid}": the uuid has 5 dash-separated parts.
        let job: Vec<&str> = name.splitn(6, '-').take(5).collect();
        *runs.entry(job.join("-")).or_default() += 1;
    }
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_a_dispatcher_mid_run_and_every_job_runs_exactly_once() {
    let cluster = Cluster::start().await;
    let cap = "12";
    let args = ["--max-machines", cap];
    let mut dispatchers = [
        cluster.dispatcher("d0", &args).await,
        cluster.dispatcher("d1", &args).await,
        cluster.dispatcher("d2", &args).await,
    ];
    let traces = cluster.dir.path.join("traces");
    std::fs::create_dir_all(&traces).unwrap();

    let mut ids = Vec::new();
    for i in 0..300u64 {
        let ms = 50 + (i * 37) % 400;
        let via = &dispatchers[i as usize % 3];
        let body = json!({"kind": "sleep", "params": {"ms": ms, "trace_dir": traces}});
        ids.push(cluster.submit(via, body).await);
    }
    // Let the run get going, then kill one dispatcher outright.
    tokio::time::sleep(Duration::from_secs(2)).await;
    kill_9(&dispatchers[0]);
    let _ = dispatchers[0].child.wait().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    dispatchers[0] = cluster.dispatcher("d0-restarted", &args).await;

    let jobs = cluster
        .wait_all(&dispatchers[1], &ids, Duration::from_secs(240))
        .await;
    for (id, job) in &jobs {
        assert_eq!(job["status"], "succeeded", "{job:#}");
        let attempts = job["attempts"].as_array().unwrap();
        assert_eq!(
            attempts.len(),
            1,
            "job {id} needed a second attempt: {job:#}"
        );
    }
    let runs = trace_files(&traces);
    assert_eq!(runs.len(), 300);
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "jobs whose handler ran more than once: {twice:?}"
    );

    let stats = cluster.mock.stats();
    assert!(
        stats.peak_live <= 12,
        "the global cap held across dispatchers: peak {}",
        stats.peak_live
    );
    assert_eq!(stats.created, 300);
    cluster.assert_no_live_machines().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_create_and_record_leaves_no_orphan() {
    let cluster = Cluster::start().await;
    let paused = cluster
        .dispatcher("paused", &["--test-pause-after-create-ms", "600000"])
        .await;
    let id = cluster
        .submit(&paused, json!({"kind": "sleep", "params": {"ms": 1500}}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.mock.stats().created == 0 {
        assert!(Instant::now() < deadline, "no machine was created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let job: Value = cluster
        .http
        .get(format!("{}/jobs/{id}", paused.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        job["attempts"][0].get("machine_id").is_none(),
        "not recorded yet: {job:#}"
    );
    kill_9(&paused);

    let peer = cluster.dispatcher("peer", &[]).await;
    let jobs = cluster
        .wait_all(&peer, std::slice::from_ref(&id), Duration::from_secs(60))
        .await;
    let job = &jobs[&id];
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(
        job["attempts"].as_array().unwrap().len(),
        1,
        "the machine was adopted, not replaced"
    );
    assert!(job["attempts"][0]["machine_id"].is_string());
    assert_eq!(cluster.mock.stats().created, 1);
    cluster.assert_no_live_machines().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_finish_across_a_valkey_restart() {
    let mut cluster = Cluster::start().await;
    let dispatcher = cluster.dispatcher("d", &["--max-machines", "6"]).await;
    let mut ids = Vec::new();
    for i in 0..30u64 {
        ids.push(
            cluster
                .submit(
                    &dispatcher,
                    json!({"kind": "sleep", "params": {"ms": 200 + i * 20}}),
                )
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;

    // A clean stop flushes the append-only file, as a restart would.
    let port = cluster.store.port();
    cluster.store.stop().await;
    let health = cluster
        .http
        .get(format!("{}/healthz", dispatcher.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503, "the outage is reported, not hidden");
    let refused = cluster
        .http
        .post(format!("{}/jobs", dispatcher.base))
        .json(&json!({"kind": "echo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.store = start_valkey(&cluster.store_dir, Some(port)).await;

    let jobs = cluster
        .wait_all(&dispatcher, &ids, Duration::from_secs(120))
        .await;
    assert_eq!(
        jobs.len(),
        30,
        "no job acknowledged before the outage was lost"
    );
    for job in jobs.values() {
        assert_eq!(job["status"], "succeeded", "{job:#}");
    }
    cluster.assert_no_live_machines().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_work_to_a_peer_and_exits_within_the_grace_period() {
    let cluster = Cluster::start().await;
    let args = ["--max-machines", "8", "--shutdown-grace-secs", "5"];
    let mut leaving = cluster.dispatcher("leaving", &args).await;
    let mut ids = Vec::new();
    for _ in 0..16 {
        ids.push(
            cluster
                .submit(&leaving, json!({"kind": "sleep", "params": {"ms": 2500}}))
                .await,
        );
    }
    // Let the leaving dispatcher take the first jobs on, then start its peer.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let peer = cluster.dispatcher("peer", &args).await;

    let pid = leaving.child.id().unwrap() as i32;
    let asked = Instant::now();
    // SAFETY: kill(2) with a pid we spawned.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(10), leaving.child.wait())
        .await
        .expect("exited within the grace period")
        .unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(7),
        "took {:?}",
        asked.elapsed()
    );

    let jobs = cluster.wait_all(&peer, &ids, Duration::from_secs(60)).await;
    for job in jobs.values() {
        assert_eq!(job["status"], "succeeded", "{job:#}");
        assert_eq!(
            job["attempts"].as_array().unwrap().len(),
            1,
            "resumed, not re-run: {job:#}"
        );
    }
    cluster.assert_no_live_machines().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_across_three_dispatchers() {
    let cluster = Cluster::start().await;
    let args = ["--max-machines", "3"];
    let dispatchers = [
        cluster.dispatcher("a", &args).await,
        cluster.dispatcher("b", &args).await,
        cluster.dispatcher("c", &args).await,
    ];
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            cluster
                .submit(
                    &dispatchers[i % 3],
                    json!({"kind": "sleep", "params": {"ms": 100}}),
                )
                .await,
        );
    }
    let jobs = cluster
        .wait_all(&dispatchers[0], &ids, Duration::from_secs(120))
        .await;
    assert!(jobs.values().all(|j| j["status"] == "succeeded"));
    let stats = cluster.mock.stats();
    assert!(
        stats.peak_live <= 3,
        "peak {} machines for a global cap of 3",
        stats.peak_live
    );
    assert!(
        stats.peak_live >= 2,
        "the cap was never approached: peak {}",
        stats.peak_live
    );
    cluster.assert_no_live_machines().await;
}

/// The (only) pool's counts, once they satisfy `done`.
async fn pool_until(
    store: &jobs::Store,
    what: &str,
    done: impl Fn(&jobs::PoolStats) -> bool,
) -> jobs::PoolStats {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = store.pool_stats().await.unwrap();
        let pool = stats.values().next().copied().unwrap_or_default();
        if done(&pool) {
            return pool;
        }
        assert!(
            Instant::now() < deadline,
            "pool never got {what}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// kill -9 a dispatcher after it claimed a pooled machine for an attempt
/// (`stage` "claimed": before it started it) or while the job runs on it
/// ("running"). The successor finishes the attempt on that same machine:
/// the job's code runs once, the machine boots once for it, no other
/// machine is created, and it goes back to the pool.
async fn kill_9_with_a_pooled_machine(stage: &str) {
    let cluster = Cluster::start().await;
    let store = jobs::Store::connect(jobs::StoreConfig::new(cluster.store.url()))
        .await
        .unwrap();
    let pool = ["--warm-pool", "1", "--max-machines", "1"];
    let mut first_args = pool.to_vec();
    if stage == "claimed" {
        first_args.extend(["--test-pause-after-create-ms", "600000"]);
    }
    let mut first = cluster.dispatcher("first", &first_args).await;
    pool_until(&store, "1 ready", |p| p.ready == 1).await;
    let traces = cluster.dir.path.join("traces");
    std::fs::create_dir_all(&traces).unwrap();
    let body = json!({"kind": "sleep", "params": {"ms": 2000, "trace_dir": traces}});
    let id = cluster.submit(&first, body).await;
    pool_until(&store, "its machine claimed", |p| p.in_use == 1).await;
    if stage == "running" {
        let deadline = Instant::now() + Duration::from_secs(20);
        while trace_files(&traces).is_empty() {
            assert!(Instant::now() < deadline, "the job never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let boots_before = cluster.mock.stats().boots;
    kill_9(&first);
    let _ = first.child.wait().await;

    let successor = cluster.dispatcher("successor", &pool).await;
    let jobs = cluster
        .wait_all(
            &successor,
            std::slice::from_ref(&id),
            Duration::from_secs(60),
        )
        .await;
    let job = &jobs[&id];
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1, "{job:#}");
    assert_eq!(trace_files(&traces).get(&id), Some(&1), "the job ran once");
    let stats = cluster.mock.stats();
    assert_eq!(
        stats.created, 1,
        "no machine besides the pooled one: {stats:?}"
    );
    let boots_for_job = stats.boots - boots_before + u64::from(stage == "running");
    assert_eq!(
        boots_for_job, 1,
        "the machine booted once for the job: {stats:?}"
    );
    pool_until(&store, "the machine back", |p| {
        p.ready == 1 && p.in_use == 0
    })
    .await;
    let _ = successor;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_pool_claim_and_start_leaves_the_machine_to_the_successor() {
    kill_9_with_a_pooled_machine("claimed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_pooled_machine_runs_its_job_loses_nothing() {
    kill_9_with_a_pooled_machine("running").await;
}
