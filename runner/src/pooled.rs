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

use crate::env::{required, EnvError, MachineEnv};
use crate::RunnerEnv;

/// The environment of a runner on a pooled machine.
#[derive(Clone, Debug)]
pub struct PooledEnv {
    pub machine_id: String,
    pub machine: MachineEnv,
}

impl PooledEnv {
    /// `None` unless `JOB_POOLED=1`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, EnvError> {
        if get("JOB_POOLED").as_deref() != Some("1") {
            return Ok(None);
        }
        Ok(Some(Self {
            machine_id: required(&get, "FLY_MACHINE_ID")?,
            machine: MachineEnv::from_lookup(&get)?,
        }))
    }

    /// The attempt this machine was claimed for, as a [`RunnerEnv`];
    /// `None` when it has none to run.
    pub async fn assignment(&self, store: &Store) -> Result<Option<RunnerEnv>, jobs::StoreError> {
        let attempt: Option<AttemptRef> = store.pool_boot(&self.machine_id).await?;
        Ok(attempt.map(|attempt| RunnerEnv {
            attempt,
            machine: self.machine.clone(),
        }))
    }
}
