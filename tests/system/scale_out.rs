//! Crash safety with several dispatcher processes sharing one store and one
//! mock Machines API: `kill -9` mid-run, a crash between "create" and
//! "record", a Valkey restart, SIGTERM under load, the global cap, fencing
//! (a dispatcher paused past its lease changes nothing when it wakes; a
//! cancel survives a takeover); the chaos run (`chaos.rs`) builds on its
//! cluster. Dispatchers are real `dispatcher serve`
//! processes; machines are real runner processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{
    free_port, pool_until, start_mock_with, start_valkey, TempDir, APP, FLY_TOKEN,
};
use devkit::serve::{wait_healthy, Serve};
use devkit::valkey::LocalValkey;
use fred::prelude::*;
use jobs::{Job, JobStatus, Outcome};
use machines::{ClientConfig, ListFilter, MachinesClient};
use mock_machines::MockServer;
use serde_json::{json, Value};
use tokio::process::Child;
use tokio::time::Instant;

/// A lease short enough that a dead dispatcher's attempts move on quickly.
const LEASE_SECS: &str = "3";

pub(crate) struct Cluster {
    pub(crate) store: LocalValkey,
    pub(crate) store_dir: PathBuf,
    pub(crate) mock: MockServer,
    pub(crate) http: reqwest::Client,
    pub(crate) dir: TempDir,
}

pub(crate) struct Dispatcher {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Cluster {
    pub(crate) async fn start() -> Self {
        Self::start_with_limits(false).await
    }

    /// `rate_limits`: the mock keeps Fly's published limits, so creates
    /// queue behind 429s as they do on Fly.
    pub(crate) async fn start_with_limits(rate_limits: bool) -> Self {
        let dir = TempDir::new();
        let store_dir = dir.path.join("valkey");
        let store = start_valkey(&store_dir, None).await;
        let mock = match rate_limits {
            true => start_mock_with(|config| config.rate_limits = true).await,
            false => start_mock_with(|_| {}).await,
        };
        Self {
            store,
            store_dir,
            mock,
            // A fresh connection per request: a dispatcher frozen past its
            // idle-connection timeout closes its kept-alive connections the
            // moment it wakes, and a request sent on one just then fails
            // (hyper's IncompleteMessage). Real clients retry that; these
            // tests count every request, so they never reuse one.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            dir,
        }
    }

    /// Starts a `dispatcher serve` process and waits until it is healthy.
    pub(crate) async fn dispatcher(&self, name: &str, extra: &[&str]) -> Dispatcher {
        let port = free_port().await;
        let log = std::fs::File::create(self.dir.path.join(format!("{name}.log"))).unwrap();
        let serve = Serve {
            binary: env!("CARGO_BIN_EXE_dispatcher").as_ref(),
            runner: env!("CARGO_BIN_EXE_runner").as_ref(),
            store_url: &self.store.url(),
            machines_url: &self.mock.base_url(),
            app: APP,
            token: FLY_TOKEN,
            image: "local/runner:test",
            port,
        };
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let child = serve
            .command(&extra)
            // Environment, not flags: a test's own `extra` flags override them.
            .env("LEASE_SECS", LEASE_SECS)
            .env("MACHINES_API_PACING", "off")
            .env("FLY_MACHINE_ID", name)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let base = serve.base_url();
        wait_healthy(&base, Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("dispatcher {name}: {e:#}"));
        Dispatcher { child, base }
    }

    pub(crate) async fn submit(&self, via: &Dispatcher, body: Value) -> String {
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

    /// Waits until every job is final; returns them by id. It long-polls
    /// them one at a time through `via` (`GET /jobs/{id}?wait=`): the jobs
    /// run in parallel, so each costs about one request. Polling all of
    /// them every 100 ms was most of these tests' CPU (300 requests a
    /// round, each on a new connection, to a debug build).
    pub(crate) async fn wait_all(
        &self,
        via: &Dispatcher,
        ids: &[String],
        within: Duration,
    ) -> HashMap<String, Job> {
        let deadline = Instant::now() + within;
        let mut done = HashMap::new();
        for id in ids {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(
                    !left.is_zero(),
                    "{} of {} jobs finished in {within:?}; logs in {}",
                    done.len(),
                    ids.len(),
                    self.dir.path.display()
                );
                let wait = left.as_secs().clamp(1, 30);
                let response = self
                    .http
                    .get(format!("{}/jobs/{id}?wait={wait}", via.base))
                    .send()
                    .await;
                let job: Job = match response {
                    Ok(r) if r.status() == 200 => r.json().await.unwrap(),
                    // A dispatcher restarting, or the store failing over.
                    _ => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if job.status.is_terminal() {
                    done.insert(id.clone(), job);
                    break;
                }
            }
        }
        done
    }

    pub(crate) async fn job(&self, via: &Dispatcher, id: &str) -> Job {
        let response = self
            .http
            .get(format!("{}/jobs/{id}", via.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Polls `check` until it holds; `what` names it in the failure.
    pub(crate) async fn until<F, Fut>(&self, what: &str, within: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        while !check().await {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; logs in {}",
                self.dir.path.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Which dispatcher owns attempt `attempt` of each job, read from the
    /// store (the API does not show owners).
    pub(crate) async fn owners(&self, ids: &[String], attempt: u32) -> Vec<Option<String>> {
        let client = Builder::from_config(Config::from_url(&self.store.url()).unwrap())
            .build()
            .unwrap();
        client.init().await.unwrap();
        let mut owners = Vec::new();
        for id in ids {
            let owner: Option<String> = client
                .hget(format!("{{jobs}}:job:{id}"), format!("a:{attempt}:owner"))
                .await
                .unwrap();
            owners.push(owner);
        }
        let _ = client.quit().await;
        owners
    }

    /// Every machine the mock ever had, destroyed ones included, counted
    /// by name: one name per attempt.
    pub(crate) async fn machines_per_attempt(&self) -> HashMap<String, usize> {
        let lives = self.machine_lives().await;
        lives.into_iter().map(|(name, l)| (name, l.len())).collect()
    }

    /// When each machine the mock ever had was alive (its first event to
    /// its destroy, in ms), by name: one name per attempt.
    pub(crate) async fn machine_lives(&self) -> HashMap<String, Vec<(i64, i64)>> {
        let client = MachinesClient::new(ClientConfig::new(self.mock.base_url(), APP, FLY_TOKEN));
        let filter = ListFilter {
            include_deleted: true,
            ..ListFilter::default()
        };
        let mut lives: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
        for machine in client.list(&filter).await.unwrap() {
            let born = machine
                .events
                .iter()
                .map(|e| e.timestamp)
                .min()
                .unwrap_or(0);
            let gone = machine
                .events
                .iter()
                .filter(|e| e.kind == "destroy")
                .map(|e| e.timestamp)
                .max()
                .unwrap_or(i64::MAX);
            lives.entry(machine.name).or_default().push((born, gone));
        }
        lives
    }

    /// Waits until the mock holds no live machine.
    pub(crate) async fn assert_no_live_machines(&self) {
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

pub(crate) fn kill_9(dispatcher: &Dispatcher) {
    signal(dispatcher, libc::SIGKILL);
}

pub(crate) fn signal(dispatcher: &Dispatcher, signal: i32) {
    let pid = dispatcher.child.id().expect("running") as i32;
    // SAFETY: kill(2) with a pid we spawned.
    unsafe { libc::kill(pid, signal) };
}

impl Dispatcher {
    /// The sum of one counter in this dispatcher's `/metrics`, over all
    /// its label sets.
    pub(crate) async fn counter(&self, http: &reqwest::Client, name: &str) -> f64 {
        let text = http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|line| line.starts_with(name) && !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

/// Handler runs, from the `sleep` handler's trace files, per job.
fn trace_files(dir: &Path) -> HashMap<String, usize> {
    handler_runs(dir, false)
}

/// Handler runs per job (`"{id}"`) or, `per_attempt`, per attempt
/// (`"{id}-{attempt}"`).
pub(crate) fn handler_runs(dir: &Path, per_attempt: bool) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        // "{job uuid}-{attempt}-{pid}": the uuid has 5 dash-separated parts.
        let parts = if per_attempt { 6 } else { 5 };
        let key: Vec<&str> = name.splitn(7, '-').take(parts).collect();
        *runs.entry(key.join("-")).or_default() += 1;
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
    // Once the run is under way (jobs done, machines up, every dispatcher
    // holding some), kill one dispatcher outright and start it again.
    cluster
        .until("the run under way", Duration::from_secs(60), || async {
            trace_files(&traces).len() >= 24 && cluster.mock.stats().created >= 36
        })
        .await;
    kill_9(&dispatchers[0]);
    let _ = dispatchers[0].child.wait().await;
    dispatchers[0] = cluster.dispatcher("d0-restarted", &args).await;

    let jobs = cluster
        .wait_all(&dispatchers[1], &ids, Duration::from_secs(240))
        .await;
    for (id, job) in &jobs {
        assert_eq!(job.status, JobStatus::Succeeded, "{job:#?}");
        assert_eq!(
            job.attempts.len(),
            1,
            "job {id} needed a second attempt: {job:#?}"
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
    let job = cluster.job(&paused, &id).await;
    assert!(
        job.attempts
            .first()
            .and_then(|a| a.machine_id.as_ref())
            .is_none(),
        "not recorded yet: {job:#?}"
    );
    kill_9(&paused);

    let peer = cluster.dispatcher("peer", &[]).await;
    let jobs = cluster
        .wait_all(&peer, std::slice::from_ref(&id), Duration::from_secs(60))
        .await;
    let job = &jobs[&id];
    assert_eq!(job.status, JobStatus::Succeeded, "{job:#?}");
    assert_eq!(
        job.attempts.len(),
        1,
        "the machine was adopted, not replaced"
    );
    assert!(job.attempts[0].machine_id.is_some());
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
    cluster
        .until("machines running", Duration::from_secs(30), || async {
            cluster.mock.stats().created >= 6
        })
        .await;

    // A clean stop flushes the append-only file, as a restart would.
    let port = cluster.store.port();
    cluster.store.stop().await;
    // Both wait out the store's timeouts (2 s for the health check, 5 s
    // for a command), so they are asked at once.
    let (health, refused) = tokio::join!(
        cluster
            .http
            .get(format!("{}/healthz", dispatcher.base))
            .send(),
        cluster
            .http
            .post(format!("{}/jobs", dispatcher.base))
            .json(&json!({"kind": "echo"}))
            .send()
    );
    let (health, refused) = (health.unwrap(), refused.unwrap());
    assert_eq!(health.status(), 503, "the outage is reported, not hidden");
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    // Wall time is the point here: an outage that lasts a while, with
    // machines finishing and runners failing to report meanwhile.
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
        assert_eq!(job.status, JobStatus::Succeeded, "{job:#?}");
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
    // Once the leaving dispatcher runs the first jobs, start its peer.
    cluster
        .until("the first machines", Duration::from_secs(30), || async {
            cluster.mock.stats().created >= 8
        })
        .await;
    let peer = cluster.dispatcher("peer", &args).await;

    let pid = leaving.child.id().unwrap() as i32;
    let asked = Instant::now();
    // SAFETY: kill(2) with a pid we spawned.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    // Draining, not gone: the health check turns so the proxy moves on,
    // and clients are told to go elsewhere, not refused a connection.
    cluster
        .until(
            "the health check says draining",
            Duration::from_secs(4),
            || async {
                let health = cluster
                    .http
                    .get(format!("{}/healthz", leaving.base))
                    .send()
                    .await;
                health.expect("still answering while draining").status() == 503
            },
        )
        .await;
    let refused = cluster
        .http
        .post(format!("{}/jobs", leaving.base))
        .json(&json!({"kind": "echo"}))
        .send()
        .await
        .expect("still answering while draining");
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let status = tokio::time::timeout(Duration::from_secs(10), leaving.child.wait())
        .await
        .expect("exited within the grace period")
        .unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(8)).contains(&asked.elapsed()),
        "answered for the 5 s grace period, then exited: took {:?}",
        asked.elapsed()
    );

    let jobs = cluster.wait_all(&peer, &ids, Duration::from_secs(60)).await;
    for job in jobs.values() {
        assert_eq!(job.status, JobStatus::Succeeded, "{job:#?}");
        assert_eq!(job.attempts.len(), 1, "resumed, not re-run: {job:#?}");
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
    assert!(jobs.values().all(|j| j.status == JobStatus::Succeeded));
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

/// Issue 15, defect 1: a dispatcher frozen (SIGSTOP) while its creates
/// wait behind Fly's create rate limit, past its lease. A peer takes its
/// attempts over and runs them; when the frozen one wakes, every write it
/// tries is refused: it records no `boot_failed`, creates no second
/// machine, and every `max_attempts: 1` job succeeds once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_paused_past_its_lease_changes_nothing_when_it_wakes() {
    let cluster = Cluster::start_with_limits(true).await;
    let frozen = cluster.dispatcher("frozen", &["--max-machines", "8"]).await;
    let traces = cluster.dir.path.join("traces");
    std::fs::create_dir_all(&traces).unwrap();
    let mut ids = Vec::new();
    for _ in 0..8 {
        let body = json!({"kind": "sleep", "max_attempts": 1,
            "params": {"ms": 6000, "trace_dir": traces}});
        ids.push(cluster.submit(&frozen, body).await);
    }
    // Creates go out at Fly's pace (1/s, burst 3): once the frozen-to-be
    // dispatcher holds every attempt and a few machines exist, the rest of
    // its creates are waiting out 429s. Freeze then. (Waiting for the
    // claims too matters on a slow box: a job it had not claimed yet would
    // simply be the peer's, with nothing to fence.)
    cluster
        .until(
            "every attempt claimed and a first machine",
            Duration::from_secs(20),
            || async {
                cluster.mock.stats().created >= 2
                    && cluster
                        .owners(&ids, 1)
                        .await
                        .iter()
                        .all(|o| o.as_deref() == Some("frozen"))
            },
        )
        .await;
    signal(&frozen, libc::SIGSTOP);
    let created_before = cluster.mock.stats().created;
    assert!(created_before < 8, "the freeze came mid-create");

    let peer = cluster.dispatcher("peer", &["--max-machines", "8"]).await;
    cluster
        .until(
            "the peer owns every attempt",
            Duration::from_secs(60),
            || async {
                cluster
                    .owners(&ids, 1)
                    .await
                    .iter()
                    .all(|o| o.as_deref() == Some("peer"))
            },
        )
        .await;
    // Wake the frozen dispatcher while the peer's machines still run.
    signal(&frozen, libc::SIGCONT);

    let jobs = cluster
        .wait_all(&peer, &ids, Duration::from_secs(120))
        .await;
    for (id, job) in &jobs {
        assert_eq!(job.status, JobStatus::Succeeded, "{id}: {job:#?}");
        let attempts = &job.attempts;
        assert_eq!(attempts.len(), 1, "{id}: {job:#?}");
        assert_eq!(
            attempts[0].outcome,
            Some(Outcome::Succeeded),
            "{id}: {job:#?}"
        );
    }
    // The frozen dispatcher woke, tried, and was refused for every one of
    // its attempts (a renewal, a create, a record...).
    cluster
        .until(
            "the frozen dispatcher gave its attempts up",
            Duration::from_secs(30),
            || async {
                frozen
                    .counter(&cluster.http, "dispatcher_fence_refusals_total")
                    .await
                    >= 8.0
            },
        )
        .await;
    let runs = trace_files(&traces);
    assert!(
        runs.values().all(|&n| n == 1) && runs.len() == 8,
        "{runs:?}"
    );
    let machines = cluster.machines_per_attempt().await;
    assert!(
        machines.values().all(|&n| n == 1),
        "one machine per attempt: {machines:?}"
    );
    assert_eq!(
        cluster.mock.stats().created,
        8,
        "no second machine for any attempt"
    );
    cluster.assert_no_live_machines().await;
}

/// Issue 15, defect 2: cancels sent through a peer right after the
/// owning dispatcher died are honoured by whoever takes the attempts
/// over: every job ends `cancelled`, and no machine boots after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_survives_the_death_of_the_dispatcher_running_the_job() {
    let cluster = Cluster::start().await;
    let owner = cluster.dispatcher("owner", &["--max-machines", "8"]).await;
    // Intake only: it launches nothing itself, it only takes over.
    let peer = cluster.dispatcher("peer", &["--max-machines", "0"]).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let body = json!({"kind": "sleep", "max_attempts": 3, "params": {"ms": 60000}});
        ids.push(cluster.submit(&owner, body).await);
    }
    cluster
        .until("every job running", Duration::from_secs(60), || async {
            let mut running = 0;
            for id in &ids {
                let job = cluster.job(&peer, id).await;
                running += usize::from(job.status == JobStatus::Running);
            }
            running == ids.len()
        })
        .await;
    kill_9(&owner);

    for id in &ids {
        let response = cluster
            .http
            .post(format!("{}/jobs/{id}/cancel", peer.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{id}");
    }
    let jobs = cluster.wait_all(&peer, &ids, Duration::from_secs(90)).await;
    for (id, job) in &jobs {
        assert_eq!(job.status, JobStatus::Cancelled, "{id}: {job:#?}");
        let attempts = &job.attempts;
        assert_eq!(attempts.len(), 1, "no attempt after the cancel: {job:#?}");
        assert_eq!(attempts[0].outcome, Some(Outcome::Cancelled), "{job:#?}");
    }
    assert_eq!(
        cluster.mock.stats().created,
        6,
        "no machine booted after the cancels"
    );
    cluster.assert_no_live_machines().await;
}

/// kill -9 a dispatcher after it claimed a pooled machine for an attempt
/// (`stage` "claimed": before it started it) or while the job runs on it
/// ("running"). The successor finishes the attempt on that same machine:
/// the job's code runs once, the machine boots once for it, no other
/// machine is created, and it goes back to the pool.
async fn kill_9_with_a_pooled_machine(stage: &str) {
    let cluster = Cluster::start().await;
    let store = jobs::Store::connect(jobs::StoreConfig::new(cluster.store.address()))
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
    assert_eq!(job.status, JobStatus::Succeeded, "{job:#?}");
    assert_eq!(job.attempts.len(), 1, "{job:#?}");
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
