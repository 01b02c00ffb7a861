//! A real job store for library-level tests, with the dispatcher's part
//! played by the test: it enqueues a job, claims its attempt (which gives
//! the runner's environment), runs `Runner::run` in-process, then closes
//! the attempt from the runner's report as the supervisor would.

#![allow(dead_code)] // each test binary uses a different part of this

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use devkit::valkey::LocalValkey;
use jobs::{
    AttemptRef, Backoff, Claim, EnqueueOptions, Job, JobId, JobSpec, JobStatus, Kind, MachineSpec,
    Outcome, Owned, ReportKind, Store, StoreConfig,
};
use runner::{Runner, RunnerEnv};
use serde_json::Value;

/// Upper bound of every wait in these tests; reaching it is a failure.
pub const WITHIN: Duration = Duration::from_secs(20);

pub struct TestStore {
    pub store: Store,
    /// The epoch of each attempt claimed, as its dispatcher would hold it.
    epochs: Mutex<HashMap<(JobId, u32), u64>>,
    url: String,
    _server: LocalValkey,
    dir: PathBuf,
}

/// A job that gets one attempt and 30 s, unless the test says otherwise.
pub fn spec(kind: &str, params: Value) -> JobSpec {
    JobSpec {
        kind: Kind::parse(kind).unwrap(),
        params,
        priority: 0,
        max_attempts: 1,
        timeout_secs: 30,
        backoff: Backoff::default(),
        machine: MachineSpec::default(),
    }
}

/// How a job ended, with the runner's exit code of each attempt.
pub struct Ended {
    pub job: Job,
    pub exit_codes: Vec<i32>,
}

impl Ended {
    /// The error of the last attempt.
    pub fn error(&self) -> &str {
        self.job.error.as_deref().unwrap_or_default()
    }
}

impl TestStore {
    pub async fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("runner-test-{}", uuid::Uuid::new_v4().simple()));
        let server = LocalValkey::start_on_free_port(&dir, false)
            .await
            .expect("a Valkey-compatible server starts (scripts/ensure-valkey installs one)");
        let url = server.url();
        let store = Store::connect(StoreConfig::new(url.parse().unwrap()))
            .await
            .unwrap();
        Self {
            store,
            epochs: Mutex::default(),
            url,
            _server: server,
            dir,
        }
    }

    pub async fn submit(&self, spec: &JobSpec) -> JobId {
        self.submit_with(spec, &EnqueueOptions::default()).await
    }

    pub async fn submit_with(&self, spec: &JobSpec, options: &EnqueueOptions) -> JobId {
        let id = JobId::new();
        self.store.enqueue(id, spec, options).await.unwrap();
        id
    }

    /// Claims the next queued job, as the launcher does, and returns the
    /// environment its runner would get.
    pub async fn claim(&self) -> RunnerEnv {
        match self
            .store
            .claim(100, "{}", "test", Duration::from_secs(60))
            .await
            .unwrap()
        {
            Claim::Claimed { attempt, .. } => RunnerEnv {
                attempt: {
                    let mut epochs = self.epochs.lock().unwrap();
                    epochs.insert((attempt.job_id, attempt.attempt), attempt.epoch);
                    attempt.attempt_ref
                },
                machine: runner::MachineEnv {
                    store_url: self.url.clone(),
                    ca_cert: None,
                    namespace: "jobs".into(),
                    heartbeat_ms: 50,
                    logs: runner::logs::LogSettings::default(),
                },
            },
            other => panic!("nothing to claim: {other:?}"),
        }
    }

    /// Closes the attempt from the runner's report, as the supervisor
    /// does: no report means the runner crashed. Retries come due at once.
    pub async fn finish(&self, attempt: &AttemptRef, exit_code: i32) -> Job {
        let outcome = match self.store.report_kind(attempt).await.unwrap() {
            Some(ReportKind::Result) => Outcome::Succeeded,
            Some(ReportKind::Error) => Outcome::Error,
            Some(ReportKind::TimedOut) => Outcome::TimedOut,
            None => Outcome::Crashed,
        };
        let epoch = self.epochs.lock().unwrap()[&(attempt.job_id, attempt.attempt)];
        let owned = Owned {
            attempt_ref: attempt.clone(),
            epoch,
        };
        self.store
            .finish_attempt(&owned, outcome, Some(exit_code), None, Duration::ZERO)
            .await
            .unwrap();
        self.job(attempt.job_id).await
    }

    pub async fn job(&self, id: JobId) -> Job {
        self.store.get(id).await.unwrap().expect("the job exists")
    }

    /// Runs every attempt of a new job with `runner` until the job ends.
    pub async fn run_to_end(&self, runner: &Runner, spec: &JobSpec) -> Ended {
        self.submit(spec).await;
        let mut exit_codes = Vec::new();
        loop {
            let env = self.claim().await;
            let code = tokio::time::timeout(WITHIN, runner.run(env.clone()))
                .await
                .expect("the attempt ends");
            exit_codes.push(code);
            let job = self.finish(&env.attempt, code).await;
            if job.status.is_terminal() {
                return Ended { job, exit_codes };
            }
            assert_eq!(job.status, JobStatus::Scheduled, "{job:#?}");
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `condition` until it holds; panics after [`WITHIN`].
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {WITHIN:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pids of live processes whose command line contains `marker`. (A zombie
/// has an empty command line, so only processes still running count.)
pub fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(marker)
                .then_some(pid)
        })
        .collect()
}
