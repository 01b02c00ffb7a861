//! [`RunnerEnv`]: what the dispatcher tells a runner through its machine's
//! environment.

use jobs::{AttemptRef, JobId};

use crate::logs::LogSettings;

/// The runner's environment, parsed: the attempt it runs, and what every
/// runner reads ([`MachineEnv`]).
///
/// | variable | meaning |
/// | --- | --- |
/// | `JOB_ID` | the job to run |
/// | `JOB_ATTEMPT` | the attempt number |
/// | `JOB_TOKEN` | the attempt's fencing token |
/// | `JOBS_STORE_URL` | the Valkey URL, e.g. `redis://host:6379` |
/// | `JOBS_NAMESPACE` | key namespace (default `jobs`) |
/// | `VALKEY_CA_CERT` | PEM file of the store's CA (`rediss://`), when private |
/// | `JOB_HEARTBEAT_MS` | heartbeat interval (default 1000) |
/// | `JOB_LOG_*` | the attempt log's limits: see [`LogSettings`] |
#[derive(Clone, Debug)]
pub struct RunnerEnv {
    pub attempt: AttemptRef,
    pub machine: MachineEnv,
}

/// What every runner reads from its machine's environment, whether the
/// environment names an attempt or (on a pooled machine) not: the store
/// and how to report to it.
#[derive(Clone, Debug)]
pub struct MachineEnv {
    pub store_url: String,
    pub namespace: String,
    pub ca_cert: Option<std::path::PathBuf>,
    pub heartbeat_ms: u64,
    pub logs: LogSettings,
}

/// The variables a command does not inherit from the runner: with the
/// token and the store's URL job code could write to the store, and the
/// other two are the runner's business only.
pub(crate) const RUNNER_ONLY: [&str; 4] = [
    "JOB_TOKEN",
    "JOBS_STORE_URL",
    "JOBS_NAMESPACE",
    "JOB_HEARTBEAT_MS",
];

/// The dispatcher's secrets (its own settings, and what it sends as
/// `--token`). Fly puts an app's secrets in every machine created through
/// the API unless the create says `skip_secrets`, whose effect Fly does not
/// document; job machines share the dispatcher's app. The runner needs none
/// of these (its store URL comes as `JOBS_STORE_URL`), so it removes them
/// from its environment before anything runs: neither handlers nor
/// commands can read them. Keep in step with the dispatcher's
/// `hide_env_values` flags (a test in `tests/system/fly_fidelity.rs` checks).
pub const DISPATCHER_SECRETS: [&str; 6] = [
    "FLY_API_TOKEN",
    "DISPATCHER_API_TOKENS",
    "DISPATCHER_TOKEN",
    "CALLBACK_SECRET",
    "VALKEY_URL",
    "RUNNER_VALKEY_URL",
];

/// Removes [`DISPATCHER_SECRETS`] from the process environment and returns
/// the names that were present (never the values). Call before any other
/// thread exists: changing the environment races with threads reading it.
pub(crate) fn remove_dispatcher_secrets() -> Vec<&'static str> {
    DISPATCHER_SECRETS
        .into_iter()
        .filter(|name| std::env::var_os(name).is_some())
        .inspect(|name| std::env::remove_var(name))
        .collect()
}

#[derive(Debug, thiserror::Error)]
#[error("incomplete environment: {0}")]
pub struct EnvError(String);

impl RunnerEnv {
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses from any lookup, so tests need not touch the process env.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let required = |name: &str| required(&get, name);
        let job_id: JobId = required("JOB_ID")?
            .parse()
            .map_err(|e| EnvError(format!("JOB_ID: {e}")))?;
        let attempt = required("JOB_ATTEMPT")?
            .parse()
            .map_err(|_| EnvError("JOB_ATTEMPT is not a number".into()))?;
        Ok(Self {
            attempt: AttemptRef {
                job_id,
                attempt,
                token: required("JOB_TOKEN")?,
            },
            machine: MachineEnv::from_lookup(&get)?,
        })
    }
}

impl MachineEnv {
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        Ok(Self {
            store_url: required(get, "JOBS_STORE_URL")?,
            namespace: get("JOBS_NAMESPACE").unwrap_or_else(|| "jobs".into()),
            ca_cert: get("VALKEY_CA_CERT")
                .filter(|v| !v.is_empty())
                .map(Into::into),
            heartbeat_ms: heartbeat_ms(get)?,
            logs: LogSettings::from_lookup(get).map_err(EnvError)?,
        })
    }
}

/// A variable that must be set and non-empty.
pub(crate) fn required(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<String, EnvError> {
    get(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| EnvError(format!("{name} is not set")))
}

/// `JOB_HEARTBEAT_MS`, 1000 when unset.
pub(crate) fn heartbeat_ms(get: &impl Fn(&str) -> Option<String>) -> Result<u64, EnvError> {
    match get("JOB_HEARTBEAT_MS") {
        Some(v) => v
            .parse()
            .map_err(|_| EnvError("JOB_HEARTBEAT_MS is not a number".into())),
        None => Ok(1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn names_the_missing_variable() {
        let id = JobId::new().to_string();
        let err =
            RunnerEnv::from_lookup(lookup(&[("JOB_ID", &id), ("JOB_ATTEMPT", "1")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "incomplete environment: JOB_TOKEN is not set"
        );
        let err = RunnerEnv::from_lookup(lookup(&[("JOB_ID", "nope")])).unwrap_err();
        assert!(err.to_string().contains("JOB_ID"), "{err}");
    }

    #[test]
    fn parses_a_complete_environment() {
        let id = JobId::new().to_string();
        let env = RunnerEnv::from_lookup(lookup(&[
            ("JOB_ID", &id),
            ("JOB_ATTEMPT", "2"),
            ("JOB_TOKEN", "t"),
            ("JOBS_STORE_URL", "redis://127.0.0.1:1"),
        ]))
        .unwrap();
        assert_eq!(env.attempt.attempt, 2);
        assert_eq!(env.machine.namespace, "jobs");
        assert_eq!(env.machine.heartbeat_ms, 1000);
    }
}
