//! A runner on a pooled machine: created before any job existed, so its
//! environment names no attempt. It asks the store which attempt its
//! machine (`FLY_MACHINE_ID`, injected by Fly) was claimed for.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `JOB_POOLED` | `1`: this machine belongs to a warm pool |
//! | `FLY_MACHINE_ID` | the machine's id (set by the platform) |
//! | `JOBS_STORE_URL`, `JOBS_NAMESPACE`, `JOB_HEARTBEAT_MS` | as in [`crate::RunnerEnv`] |
//!
//! The answer is given once per claim (`Store::pool_boot`): the first
//! boot of a pooled machine (while it warms up) and a second boot for the
//! same claim find nothing and exit at once, so a machine started twice
//! never runs the job's code twice.

use jobs::{AttemptRef, Store};

use crate::env::{required, EnvError};
use crate::RunnerEnv;

/// The environment of a runner on a pooled machine.
#[derive(Clone, Debug)]
pub struct PooledEnv {
    pub machine_id: String,
    pub store_url: String,
    pub namespace: String,
    pub ca_cert: Option<std::path::PathBuf>,
    pub heartbeat_ms: u64,
    pub logs: crate::logs::LogSettings,
}

impl PooledEnv {
    /// `None` unless `JOB_POOLED=1`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, EnvError> {
        if get("JOB_POOLED").as_deref() != Some("1") {
            return Ok(None);
        }
        // Everything but the attempt, read as an ordinary runner reads it.
        let placeholder = |name: &str| match name {
            "JOB_ID" => Some(jobs::JobId::new().to_string()),
            "JOB_ATTEMPT" => Some("0".into()),
            "JOB_TOKEN" => Some("-".into()),
            _ => get(name),
        };
        let RunnerEnv {
            store_url,
            namespace,
            ca_cert,
            heartbeat_ms,
            logs,
            ..
        } = RunnerEnv::from_lookup(placeholder)?;
        Ok(Some(Self {
            machine_id: required(&get, "FLY_MACHINE_ID")?,
            store_url,
            namespace,
            ca_cert,
            heartbeat_ms,
            logs,
        }))
    }

    /// The attempt this machine was claimed for, as a [`RunnerEnv`];
    /// `None` when it has none to run.
    pub async fn assignment(&self, store: &Store) -> Result<Option<RunnerEnv>, jobs::StoreError> {
        let attempt: Option<AttemptRef> = store.pool_boot(&self.machine_id).await?;
        Ok(attempt.map(|attempt| RunnerEnv {
            attempt,
            store_url: self.store_url.clone(),
            namespace: self.namespace.clone(),
            ca_cert: self.ca_cert.clone(),
            heartbeat_ms: self.heartbeat_ms,
            logs: self.logs.clone(),
        }))
    }
}
