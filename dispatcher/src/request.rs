//! `POST /jobs` bodies: parsed and validated here, so that only a valid
//! [`JobSpec`] ever reaches the store.

use std::time::Duration;

use jobs::{Backoff, JobSpec, Kind, MachineSpec};
use serde::Deserialize;
use serde_json::Value;

use crate::configuration::JobDefaults;

/// Priorities run from `MIN_PRIORITY` (first) to `MAX_PRIORITY` (last).
pub const MIN_PRIORITY: i32 = -1000;
pub const MAX_PRIORITY: i32 = 1000;
pub const MAX_ATTEMPTS: u32 = 100;
pub const MAX_DELAY_SECS: u64 = 365 * 24 * 3600;

/// The JSON body of `POST /jobs`, as sent. Unknown fields are refused so
/// a typo (`max_attempt`) is an error, not a silently ignored option.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub kind: String,
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub backoff: Option<BackoffRequest>,
    #[serde(default)]
    pub delay_secs: Option<u64>,
    #[serde(default)]
    pub machine: Option<MachineRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffRequest {
    pub base_ms: Option<u64>,
    pub max_ms: Option<u64>,
    pub jitter: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineRequest {
    pub cpu_kind: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mb: Option<u32>,
    pub region: Option<String>,
}

/// A request that parsed but makes no sense; names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, FieldError> {
    if value < min || value > max {
        Err(field_error(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ))
    } else {
        Ok(value)
    }
}

impl JobRequest {
    /// Validates and fills defaults. Returns the spec and the start delay.
    pub fn into_spec(self, defaults: &JobDefaults) -> Result<(JobSpec, Duration), FieldError> {
        let kind = Kind::parse(&self.kind).map_err(|e| field_error("kind", e.0))?;
        let params = self
            .params
            .unwrap_or_else(|| Value::Object(Default::default()));
        let priority = in_range(
            "priority",
            self.priority.unwrap_or(0),
            MIN_PRIORITY,
            MAX_PRIORITY,
        )?;
        let max_attempts = in_range(
            "max_attempts",
            self.max_attempts.unwrap_or(defaults.max_attempts),
            1,
            MAX_ATTEMPTS,
        )?;
        let timeout_secs = in_range(
            "timeout_secs",
            self.timeout_secs.unwrap_or(defaults.timeout_secs),
            1,
            defaults.max_timeout_secs,
        )?;
        let delay_secs = in_range(
            "delay_secs",
            self.delay_secs.unwrap_or(0),
            0,
            MAX_DELAY_SECS,
        )?;
        let backoff = match self.backoff {
            None => defaults.backoff,
            Some(b) => {
                let base_ms = in_range(
                    "backoff.base_ms",
                    b.base_ms.unwrap_or(defaults.backoff.base_ms),
                    1,
                    3_600_000,
                )?;
                let max_ms = in_range(
                    "backoff.max_ms",
                    b.max_ms.unwrap_or(defaults.backoff.max_ms.max(base_ms)),
                    base_ms,
                    86_400_000,
                )?;
                Backoff {
                    base_ms,
                    max_ms,
                    jitter: b.jitter.unwrap_or(defaults.backoff.jitter),
                }
            }
        };
        let machine = machine_spec(self.machine, &defaults.machine)?;
        let spec = JobSpec {
            kind,
            params,
            priority,
            max_attempts,
            timeout_secs,
            backoff,
            machine,
        };
        Ok((spec, Duration::from_secs(delay_secs)))
    }
}

/// Sizes the Machines API accepts: shared CPUs 1–8 with 256 MB steps up to
/// 2 GB per CPU; performance CPUs 1–16 with 2–8 GB per CPU.
fn machine_spec(
    request: Option<MachineRequest>,
    defaults: &MachineSpec,
) -> Result<MachineSpec, FieldError> {
    let Some(request) = request else {
        return Ok(defaults.clone());
    };
    let cpu_kind = request
        .cpu_kind
        .unwrap_or_else(|| defaults.cpu_kind.clone());
    let (cpu_choices, mb_per_cpu): (&[u32], (u32, u32)) = match cpu_kind.as_str() {
        "shared" => (&[1, 2, 4, 6, 8], (256, 2048)),
        "performance" => (&[1, 2, 4, 8, 16], (2048, 8192)),
        _ => {
            return Err(field_error(
                "machine.cpu_kind",
                "must be \"shared\" or \"performance\"",
            ))
        }
    };
    let cpus = request.cpus.unwrap_or(defaults.cpus);
    if !cpu_choices.contains(&cpus) {
        return Err(field_error(
            "machine.cpus",
            format!("{cpu_kind} machines have {cpu_choices:?} CPUs, got {cpus}"),
        ));
    }
    let memory_mb = request
        .memory_mb
        .unwrap_or(defaults.memory_mb.max(mb_per_cpu.0 * cpus));
    let (min, max) = (mb_per_cpu.0 * cpus, mb_per_cpu.1 * cpus);
    if memory_mb % 256 != 0 || memory_mb < min || memory_mb > max {
        return Err(field_error(
            "machine.memory_mb",
            format!("{cpus} {cpu_kind} CPU(s) take a multiple of 256 between {min} and {max}, got {memory_mb}"),
        ));
    }
    let region = match request.region {
        Some(r) if r.len() == 3 && r.chars().all(|c| c.is_ascii_lowercase()) => Some(r),
        Some(r) => {
            return Err(field_error(
                "machine.region",
                format!("{r:?} is not a region code like \"iad\""),
            ))
        }
        None => defaults.region.clone(),
    };
    Ok(MachineSpec {
        cpu_kind,
        cpus,
        memory_mb,
        region,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<(JobSpec, Duration), FieldError> {
        let request: JobRequest =
            serde_json::from_value(body).map_err(|e| field_error("body", e.to_string()))?;
        request.into_spec(&JobDefaults::default())
    }

    #[test]
    fn fills_defaults() {
        let (spec, delay) = parse(json!({"kind": "echo"})).unwrap();
        assert_eq!(spec.max_attempts, 3);
        assert_eq!(spec.timeout_secs, 600);
        assert_eq!(spec.params, json!({}));
        assert_eq!(spec.machine.memory_mb, 256);
        assert_eq!(delay, Duration::ZERO);
    }

    #[test]
    fn names_the_bad_field() {
        let cases = [
            (json!({"kind": "Bad Kind"}), "kind"),
            (json!({"kind": "x", "priority": 5000}), "priority"),
            (json!({"kind": "x", "max_attempts": 0}), "max_attempts"),
            (json!({"kind": "x", "timeout_secs": 0}), "timeout_secs"),
            (
                json!({"kind": "x", "machine": {"memory_mb": 300}}),
                "machine.memory_mb",
            ),
            (
                json!({"kind": "x", "machine": {"cpu_kind": "gpu"}}),
                "machine.cpu_kind",
            ),
            (json!({"kind": "x", "machine": {"cpus": 3}}), "machine.cpus"),
            (
                json!({"kind": "x", "backoff": {"base_ms": 0}}),
                "backoff.base_ms",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(parse(body.clone()).unwrap_err().field, field, "{body}");
        }
    }

    #[test]
    fn accepts_valid_machine_sizes() {
        let (spec, _) =
            parse(json!({"kind": "x", "machine": {"cpus": 2, "memory_mb": 1024, "region": "ams"}}))
                .unwrap();
        assert_eq!((spec.machine.cpus, spec.machine.memory_mb), (2, 1024));
        assert_eq!(spec.machine.region.as_deref(), Some("ams"));
    }
}
