//! The run management parts of a request, parsed at the edge like the
//! rest of [`crate::api::request`]: `tags`, `expire_after_secs` and
//! `oom_ladder` of a new job, and the body of a retry with overrides.

use std::time::Duration;

use jobs::{MachineSpec, OomLadder, RetryOverrides, RunOptions, Tag};
use serde::Deserialize;

use crate::api::request::{field_error, machine_spec, FieldError, MachineRequest, MAX_DELAY_SECS};
use crate::configuration::JobDefaults;

/// `oom_ladder` of a job request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OomLadderRequest {
    /// The most memory an attempt may be given: a valid size for the
    /// job's CPUs, above its `machine.memory_mb`.
    pub max_memory_mb: u32,
}

/// Validates the run options of a job whose machine is `machine` and
/// which waits `delay` before it may run.
pub fn run_options(
    tags: Option<Vec<String>>,
    expire_after_secs: Option<u64>,
    oom_ladder: Option<OomLadderRequest>,
    delay: Duration,
    machine: &MachineSpec,
    defaults: &JobDefaults,
) -> Result<RunOptions, FieldError> {
    let tags = Tag::parse_list(&tags.unwrap_or_default()).map_err(|e| field_error("tags", e.0))?;
    let expire_after_ms = match expire_after_secs {
        None => None,
        Some(secs) if secs == 0 || secs > MAX_DELAY_SECS => {
            return Err(field_error(
                "expire_after_secs",
                format!("must be between 1 and {MAX_DELAY_SECS}, got {secs}"),
            ))
        }
        Some(secs) if Duration::from_secs(secs) <= delay => {
            return Err(field_error(
                "expire_after_secs",
                "must be later than the job's delay_secs or run_at: it could never start",
            ))
        }
        Some(secs) => Some(secs * 1000),
    };
    let oom_ladder = oom_ladder
        .map(|ladder| oom_ladder_cap(ladder.max_memory_mb, machine, defaults))
        .transpose()?;
    Ok(RunOptions {
        tags,
        expire_after_ms,
        oom_ladder,
        child_of: None,
    })
}

/// The cap must be a size the job's CPUs can have (the same check as
/// `machine.memory_mb`) and above where the job starts.
fn oom_ladder_cap(
    max_memory_mb: u32,
    machine: &MachineSpec,
    defaults: &JobDefaults,
) -> Result<OomLadder, FieldError> {
    let field = "oom_ladder.max_memory_mb";
    if max_memory_mb <= machine.memory_mb {
        return Err(field_error(
            field,
            format!(
                "must be above machine.memory_mb ({}), got {max_memory_mb}",
                machine.memory_mb
            ),
        ));
    }
    let same_cpus = MachineRequest {
        cpu_kind: Some(machine.cpu_kind.clone()),
        cpus: Some(machine.cpus),
        memory_mb: Some(max_memory_mb),
        region: None,
        regions: None,
        image: None,
        env: None,
        secrets: None,
    };
    machine_spec(Some(same_cpus), machine, defaults).map_err(|e| field_error(field, e.message))?;
    Ok(OomLadder { max_memory_mb })
}

/// The body of `POST /jobs/{id}/retry`: what to change for the new
/// attempts. Each part is optional; an empty body retries as is.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Changes to the job's machine, checked as in `POST /jobs`: what is
    /// left out stays as it was; `env` adds to (or replaces single
    /// variables of) the job's env. `secrets` cannot be given.
    #[serde(default)]
    pub machine: Option<MachineRequest>,
    /// At most the dispatcher's `MAX_TIMEOUT_SECS`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub timeout_secs: Option<u64>,
}

impl RetryRequest {
    /// Validates the overrides against the job's current `machine`.
    pub fn into_overrides(
        self,
        machine: &MachineSpec,
        defaults: &JobDefaults,
    ) -> Result<RetryOverrides, FieldError> {
        let machine = match self.machine {
            None => None,
            Some(request) if request.secrets.is_some() => {
                return Err(field_error(
                    "machine.secrets",
                    "a retry cannot add secrets; submit the job again with them",
                ))
            }
            Some(mut request) => {
                let mut env = machine.env.clone();
                env.extend(request.env.take().unwrap_or_default());
                request.env = Some(env);
                Some(machine_spec(Some(request), machine, defaults)?.0)
            }
        };
        let timeout_secs = match self.timeout_secs {
            Some(secs) if secs == 0 || secs > defaults.max_timeout_secs => {
                return Err(field_error(
                    "timeout_secs",
                    format!(
                        "must be between 1 and {}, got {secs}",
                        defaults.max_timeout_secs
                    ),
                ))
            }
            other => other,
        };
        Ok(RetryOverrides {
            machine,
            timeout_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn machine() -> MachineSpec {
        MachineSpec::default()
    }

    #[test]
    fn names_the_bad_run_option() {
        let defaults = JobDefaults::default();
        let bad = |tags: Option<Vec<String>>, expire: Option<u64>, cap: Option<u32>, delay: u64| {
            run_options(
                tags,
                expire,
                cap.map(|max_memory_mb| OomLadderRequest { max_memory_mb }),
                Duration::from_secs(delay),
                &machine(),
                &defaults,
            )
            .unwrap_err()
            .field
        };
        assert_eq!(bad(Some(vec!["no spaces".into()]), None, None, 0), "tags");
        assert_eq!(bad(None, Some(0), None, 0), "expire_after_secs");
        assert_eq!(bad(None, Some(10), None, 10), "expire_after_secs");
        for cap in [256, 300, 4096] {
            assert_eq!(bad(None, None, Some(cap), 0), "oom_ladder.max_memory_mb");
        }
        let ok = run_options(
            Some(vec!["a".into()]),
            Some(5),
            Some(OomLadderRequest {
                max_memory_mb: 1024,
            }),
            Duration::ZERO,
            &machine(),
            &defaults,
        )
        .unwrap();
        assert_eq!(ok.expire_after_ms, Some(5000));
        assert_eq!(ok.oom_ladder.unwrap().max_memory_mb, 1024);
    }

    #[test]
    fn retry_overrides_keep_what_is_left_out() {
        let defaults = JobDefaults::default();
        let mut job_machine = machine();
        job_machine.env.insert("KEEP".into(), "1".into());
        let request: RetryRequest = serde_json::from_value(
            json!({"machine": {"memory_mb": 512, "env": {"NEW": "2"}}, "timeout_secs": 30}),
        )
        .unwrap();
        let overrides = request.into_overrides(&job_machine, &defaults).unwrap();
        let machine = overrides.machine.unwrap();
        assert_eq!(machine.memory_mb, 512);
        assert_eq!(machine.env.len(), 2);
        assert_eq!(overrides.timeout_secs, Some(30));
        let bad: RetryRequest =
            serde_json::from_value(json!({"machine": {"env": {"LD_PRELOAD": "x"}}})).unwrap();
        assert_eq!(
            bad.into_overrides(&job_machine, &defaults)
                .unwrap_err()
                .field,
            "machine.env"
        );
    }
}
