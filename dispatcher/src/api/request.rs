//! `POST /jobs` bodies: parsed and validated here, so that only a valid
//! [`JobSpec`] ever reaches the store.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::{Backoff, FlowKey, FlowOptions, JobId, JobSpec, Kind, MachineSpec, RunIf, Secrets};
use serde::Deserialize;
use serde_json::Value;

use crate::configuration::JobDefaults;
use crate::engine::callback_targets::CallbackTargets;

/// Priorities run from `MIN_PRIORITY` (first) to `MAX_PRIORITY` (last).
pub const MIN_PRIORITY: i32 = -1000;
pub const MAX_PRIORITY: i32 = 1000;
pub const MAX_ATTEMPTS: u32 = 100;
pub const MAX_DELAY_SECS: u64 = 365 * 24 * 3600;
pub const MAX_DEBOUNCE_SECS: u64 = 24 * 3600;

/// The JSON body of `POST /jobs`, as sent. Unknown fields are refused so
/// a typo (`max_attempt`) is an error, not a silently ignored option.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Which handler runs the job: `[a-z0-9][a-z0-9_.-]{0,63}`.
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
    pub kind: String,
    /// Handed to the handler as is (default `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub params: Option<Value>,
    #[serde(default)]
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i32>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// At most the dispatcher's `MAX_TIMEOUT_SECS`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub backoff: Option<BackoffRequest>,
    #[serde(default)]
    #[schema(maximum = 31536000)]
    pub delay_secs: Option<u64>,
    /// RFC 3339 time to run at (instead of `delay_secs`).
    #[serde(default)]
    pub run_at: Option<String>,
    #[serde(default)]
    pub machine: Option<MachineRequest>,
    /// Same as the `Idempotency-Key` header: 1 to 255 visible ASCII
    /// characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")]
    pub idempotency_key: Option<String>,
    /// Receives one POST with the final job view.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Ids of stored jobs this one waits for (at most 100): it stays
    /// `waiting` until they all succeeded, and is cancelled, naming the
    /// first that did not, when one fails for good. Ids must exist, so no
    /// cycle can be built.
    #[serde(default)]
    pub after: Option<Vec<String>>,
    /// A job stored with this one and run when it finished (see
    /// `then_policy`); it receives this job's id, status and result as
    /// its `inputs`.
    #[serde(default)]
    #[schema(no_recursion, value_type = Option<Object>)]
    pub then: Option<Box<JobRequest>>,
    /// When the `then` job runs: `all_finished` (whatever this job ended
    /// as) or `all_succeeded` (the default; otherwise it is cancelled).
    #[serde(default)]
    pub then_policy: Option<jobs::RunIf>,
    /// Flow control (docs/flow-control.md): the job's share of the fleet
    /// is its key's (a tenant id, say). Keys are served round-robin, each
    /// within its concurrency limit and rate limit.
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 128, pattern = "^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")]
    pub concurrency_key: Option<String>,
    /// At most one job waits under this key; `singleton_policy` says what
    /// a submit does to the one already waiting.
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 128, pattern = "^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")]
    pub singleton_key: Option<String>,
    /// `keep` (default), `replace`, `cancel_running`; needs
    /// `singleton_key`, not with `debounce_secs`.
    #[serde(default)]
    pub singleton_policy: Option<jobs::SingletonPolicy>,
    /// Runs the job this long after the last submit of a burst under
    /// `singleton_key`, with that submit's params (1 to 86400).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub debounce_secs: Option<u64>,
    /// Labels to find the job by (list filter `tag`, bulk actions): at
    /// most 16, each `^[A-Za-z0-9][A-Za-z0-9_.:=-]{0,63}$`.
    #[serde(default)]
    #[schema(max_items = 16)]
    pub tags: Option<Vec<String>>,
    /// Seconds from now after which the job, if no attempt has started,
    /// ends `expired`. Must be longer than `delay_secs` / `run_at`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31536000)]
    pub expire_after_secs: Option<u64>,
    /// Opt-in: an attempt killed for using too much memory is retried on
    /// twice the memory, up to `max_memory_mb`.
    #[serde(default)]
    pub oom_ladder: Option<crate::api::run_request::OomLadderRequest>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffRequest {
    pub base_ms: Option<u64>,
    pub max_ms: Option<u64>,
    pub jitter: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MachineRequest {
    #[schema(pattern = "^(shared|performance)$")]
    pub cpu_kind: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mb: Option<u32>,
    pub region: Option<String>,
    /// Regions in order of preference: the first is tried first, the
    /// others when it is out of capacity. Instead of `region`.
    pub regions: Option<Vec<String>>,
    pub image: Option<String>,
    /// Variables for the job's code, shown in every view of the job.
    /// Names: `^[A-Z_][A-Z0-9_]{0,127}$`, not reserved (see docs/security.md).
    pub env: Option<BTreeMap<String, String>>,
    /// Like `env`, but write-only: never shown, deleted when the job
    /// finishes.
    #[schema(write_only, value_type = Option<BTreeMap<String, String>>)]
    pub secrets: Option<Secrets>,
}

/// A validated submission: the spec plus how to store it.
#[derive(Debug)]
pub struct Submission {
    pub spec: JobSpec,
    pub delay: Duration,
    pub callback_url: Option<String>,
    pub idempotency_key: Option<String>,
    pub secrets: Secrets,
    /// Jobs it waits for (`after`), deduplicated.
    pub after: Vec<JobId>,
    /// The `then` job and when it runs.
    pub then: Option<(Box<Submission>, RunIf)>,
    pub flow: FlowOptions,
    /// Tags, expiry, OOM ladder ([`jobs::run_options`]).
    pub run: jobs::RunOptions,
}

/// Most ids one `after` may list.
pub const MAX_AFTER: usize = 100;

/// A request that parsed but makes no sense; names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// The field a serde error names: its path, or at the top level (path
/// "."), the name serde quotes in backticks in "missing field `kind`" or
/// "unknown field `x`, expected ..." (other messages quote types that way).
pub(crate) fn field_of(path: String, message: &str) -> Option<String> {
    if path != "." {
        return Some(path);
    }
    let names_field = message.starts_with("missing field") || message.starts_with("unknown field");
    names_field
        .then(|| message.split('`').nth(1).map(str::to_string))
        .flatten()
}

/// A `POST /jobs` body given as JSON inside another request (a batch
/// member, a child a job enqueues). The error's field is relative to the
/// body (`body` when serde names none).
pub fn job_request(value: Value) -> Result<JobRequest, FieldError> {
    from_json_value(value)
}

/// A request body already parsed as JSON (a job's, a batch's), read into
/// its request type, naming the field serde refused.
pub fn from_json_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let field = field_of(path, &message).unwrap_or_else(|| "body".into());
        field_error(&field, message)
    })
}

pub(crate) fn field_error(field: &str, message: impl Into<String>) -> FieldError {
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
    /// Validates and fills defaults. `now` anchors `run_at`.
    pub fn into_submission(
        self,
        defaults: &JobDefaults,
        now: DateTime<Utc>,
    ) -> Result<Submission, FieldError> {
        let kind = Kind::parse(&self.kind).map_err(|e| field_error("kind", e.0))?;
        let flow = self.flow_options()?;
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
        let delay = match (self.delay_secs, &self.run_at) {
            (Some(_), Some(_)) => {
                return Err(field_error(
                    "run_at",
                    "give either delay_secs or run_at, not both",
                ))
            }
            (Some(secs), None) => {
                Duration::from_secs(in_range("delay_secs", secs, 0, MAX_DELAY_SECS)?)
            }
            (None, Some(at)) => {
                let at: DateTime<Utc> = DateTime::parse_from_rfc3339(at)
                    .map_err(|e| field_error("run_at", format!("not an RFC 3339 time: {e}")))?
                    .into();
                // A time in the past runs now.
                let delay = (at - now).to_std().unwrap_or_default();
                in_range("run_at", delay.as_secs(), 0, MAX_DELAY_SECS)?;
                delay
            }
            (None, None) => Duration::ZERO,
        };
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
        let (machine, secrets) = machine_spec(self.machine, &defaults.machine, defaults)?;
        let run = crate::api::run_request::run_options(
            self.tags,
            self.expire_after_secs,
            self.oom_ladder,
            delay,
            &machine,
            defaults,
        )?;
        let idempotency_key = self.idempotency_key.map(idempotency_key).transpose()?;
        let callback_url = self
            .callback_url
            .map(|url| callback_url(url, &defaults.callback_targets))
            .transpose()?;
        let after = after_ids(self.after.unwrap_or_default())?;
        let then = match (self.then, self.then_policy) {
            (None, Some(_)) => return Err(field_error("then_policy", "give it with then")),
            (None, None) => None,
            (Some(then), policy) => {
                if then.then.is_some() {
                    return Err(field_error(
                        "then.then",
                        "a then job cannot have its own then; give it to a job it waits for",
                    ));
                }
                if then.idempotency_key.is_some() {
                    return Err(field_error(
                        "then.idempotency_key",
                        "a then job comes and goes with its parent: give the parent the key",
                    ));
                }
                let then = then
                    .into_submission(defaults, now)
                    .and_then(Submission::admitted_later)
                    .map_err(|e| field_error(&format!("then.{}", e.field), e.message))?;
                Some((Box::new(then), policy.unwrap_or_default()))
            }
        };
        let spec = JobSpec {
            kind,
            params,
            priority,
            max_attempts,
            timeout_secs,
            backoff,
            machine,
        };
        let submission = Submission {
            spec,
            delay,
            callback_url,
            idempotency_key,
            secrets,
            after,
            then,
            flow,
            run,
        };
        if submission.fans_in() {
            return submission.admitted_later();
        }
        Ok(submission)
    }

    /// The flow-control fields: a debounce names its burst by the
    /// singleton key and sets the run time itself.
    fn flow_options(&self) -> Result<FlowOptions, FieldError> {
        let key = |field: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(FlowKey::parse)
                .transpose()
                .map_err(|e| field_error(field, e.0))
        };
        let concurrency_key = key("concurrency_key", &self.concurrency_key)?;
        let singleton_key = key("singleton_key", &self.singleton_key)?;
        let debounce = self
            .debounce_secs
            .map(|secs| in_range("debounce_secs", secs, 1, MAX_DEBOUNCE_SECS))
            .transpose()?
            .map(Duration::from_secs);
        if singleton_key.is_none() && (self.singleton_policy.is_some() || debounce.is_some()) {
            let field = match debounce {
                Some(_) => "debounce_secs",
                None => "singleton_policy",
            };
            return Err(field_error(field, "needs a singleton_key"));
        }
        if debounce.is_some() && self.singleton_policy.is_some() {
            return Err(field_error(
                "singleton_policy",
                "a debounce has its own behaviour: give one or the other",
            ));
        }
        if debounce.is_some() && (self.delay_secs.is_some() || self.run_at.is_some()) {
            return Err(field_error(
                "debounce_secs",
                "a debounce sets the run time: not with delay_secs or run_at",
            ));
        }
        let singleton_policy = match (&singleton_key, debounce) {
            (Some(_), None) => Some(self.singleton_policy.unwrap_or(jobs::SingletonPolicy::Keep)),
            _ => None,
        };
        Ok(FlowOptions {
            concurrency_key,
            singleton_key,
            singleton_policy,
            debounce,
        })
    }
}

impl Submission {
    /// Checks a job that [`jobs::Store::submit`] stores (it waits for
    /// others, is a `then` job or a batch member): it is admitted when
    /// what it waits for is done, so a singleton or debounce, which
    /// decide at submit time, cannot apply. A concurrency key can.
    pub fn admitted_later(self) -> Result<Self, FieldError> {
        match self.flow.singleton_key {
            Some(_) => Err(field_error(
                "singleton_key",
                "not with after, then or in a batch: a singleton is decided at submit",
            )),
            None => Ok(self),
        }
    }

    /// Whether storing it takes [`jobs::Store::submit`] (it waits for
    /// others or brings a `then` job) rather than the plain enqueue.
    pub fn fans_in(&self) -> bool {
        !self.after.is_empty() || self.then.is_some()
    }

    /// The job as [`jobs::Store::submit`] stores it, followed by its `then`
    /// job (which waits for it) when it has one.
    pub fn into_new_jobs(
        mut self,
        request_hash: String,
        idempotency_ttl: Duration,
    ) -> Vec<jobs::NewJob> {
        let id = JobId::new();
        let then = self.then.take().map(|(then, run_if)| {
            let mut then = then.into_new_job(JobId::new(), None, idempotency_ttl);
            then.after.push(id);
            then.run_if = run_if;
            then
        });
        let mut first = self.into_new_job(id, Some(request_hash), idempotency_ttl);
        first.then = then.as_ref().map(|t| t.id);
        std::iter::once(first).chain(then).collect()
    }

    /// One job for [`jobs::Store::submit`]; its idempotency key (if any)
    /// remembers `request_hash` (a `then` job has none of its own: it
    /// comes and goes with its parent).
    pub fn into_new_job(
        self,
        id: JobId,
        request_hash: Option<String>,
        idempotency_ttl: Duration,
    ) -> jobs::NewJob {
        let idempotency = match (self.idempotency_key, request_hash) {
            (Some(key), Some(request_hash)) => Some(jobs::Idempotency {
                key,
                request_hash,
                ttl: idempotency_ttl,
            }),
            _ => None,
        };
        jobs::NewJob {
            id,
            spec: self.spec,
            delay: self.delay,
            callback_url: self.callback_url,
            idempotency,
            secrets: self.secrets,
            after: self.after,
            run_if: RunIf::AllSucceeded,
            then: None,
            concurrency_key: self.flow.concurrency_key,
            run: self.run,
        }
    }

    /// Stores the job. `request_hash` tells a repeat of this request
    /// apart from another one under the same idempotency key.
    pub async fn enqueue(
        self,
        store: &jobs::Store,
        request_hash: String,
        idempotency_ttl: Duration,
    ) -> Result<jobs::Enqueued, jobs::StoreError> {
        let idempotency = self.idempotency_key.map(|key| jobs::Idempotency {
            key,
            request_hash,
            ttl: idempotency_ttl,
        });
        let options = jobs::EnqueueOptions {
            delay: self.delay,
            callback_url: self.callback_url,
            idempotency,
            secrets: self.secrets,
            flow: self.flow,
            run: self.run,
        };
        store
            .enqueue(jobs::JobId::new(), &self.spec, &options)
            .await
    }
}

/// `after`: job ids, deduplicated, at most [`MAX_AFTER`].
fn after_ids(list: Vec<String>) -> Result<Vec<JobId>, FieldError> {
    if list.len() > MAX_AFTER {
        return Err(field_error(
            "after",
            format!("list at most {MAX_AFTER} job ids, got {}", list.len()),
        ));
    }
    let mut ids = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        let id: JobId = text
            .parse()
            .map_err(|e: jobs::InvalidValue| field_error(&format!("after[{i}]"), e.0))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Idempotency keys: 1 to 255 visible ASCII characters.
pub fn idempotency_key(key: String) -> Result<String, FieldError> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(field_error(
            "idempotency_key",
            "use 1 to 255 visible ASCII characters",
        ));
    }
    Ok(key)
}

pub(crate) fn callback_url(url: String, targets: &CallbackTargets) -> Result<String, FieldError> {
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| field_error("callback_url", format!("not a URL: {e}")))?;
    match targets.refusal(&parsed) {
        Some(problem) => Err(field_error("callback_url", problem)),
        None => Ok(url),
    }
}

/// Sizes the Machines API accepts: shared CPUs 1–8 with 256 MB steps up to
/// 2 GB per CPU; performance CPUs 1–16 with 2–8 GB per CPU. Images must be
/// on the allow-list; env and secrets follow [`jobs::job_env`].
/// What `request` leaves out comes from `fallback` (the defaults for a
/// new job, the job's own machine for a retry with overrides).
pub(crate) fn machine_spec(
    request: Option<MachineRequest>,
    fallback: &MachineSpec,
    defaults: &JobDefaults,
) -> Result<(MachineSpec, Secrets), FieldError> {
    let Some(request) = request else {
        return Ok((fallback.clone(), Secrets::default()));
    };
    let cpu_kind = request
        .cpu_kind
        .unwrap_or_else(|| fallback.cpu_kind.clone());
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
    let cpus = request.cpus.unwrap_or(fallback.cpus);
    if !cpu_choices.contains(&cpus) {
        return Err(field_error(
            "machine.cpus",
            format!("{cpu_kind} machines have {cpu_choices:?} CPUs, got {cpus}"),
        ));
    }
    let memory_mb = request
        .memory_mb
        .unwrap_or(fallback.memory_mb.max(mb_per_cpu.0 * cpus));
    let (min, max) = (mb_per_cpu.0 * cpus, mb_per_cpu.1 * cpus);
    if memory_mb % 256 != 0 || memory_mb < min || memory_mb > max {
        return Err(field_error(
            "machine.memory_mb",
            format!("{cpus} {cpu_kind} CPU(s) take a multiple of 256 between {min} and {max}, got {memory_mb}"),
        ));
    }
    let region_code = |field: &str, r: String| {
        if defaults.regions.contains(&r) {
            Ok(r)
        } else {
            Err(field_error(
                field,
                format!(
                    "{r:?} is not one of this dispatcher's region codes ({}; see --regions)",
                    defaults.regions.join(", ")
                ),
            ))
        }
    };
    let (region, fallback_regions) = match (request.region, request.regions) {
        (Some(_), Some(_)) => {
            return Err(field_error(
                "machine.regions",
                "give machine.region or machine.regions, not both".to_string(),
            ))
        }
        (Some(r), None) => (Some(region_code("machine.region", r)?), Vec::new()),
        (None, Some(list)) => {
            let mut codes = Vec::with_capacity(list.len());
            for r in list {
                let code = region_code("machine.regions", r)?;
                if !codes.contains(&code) {
                    codes.push(code);
                }
            }
            if codes.is_empty() || codes.len() > 8 {
                return Err(field_error(
                    "machine.regions",
                    "list 1 to 8 regions".to_string(),
                ));
            }
            let first = codes.remove(0);
            (Some(first), codes)
        }
        (None, None) => (fallback.region.clone(), fallback.fallback_regions.clone()),
    };
    let image = match request.image {
        Some(image) if defaults.allowed_images.contains(&image) => Some(image),
        Some(image) => {
            return Err(field_error(
                "machine.image",
                format!("{image:?} is not on this dispatcher's allow-list (ALLOWED_IMAGES)"),
            ))
        }
        None => fallback.image.clone(),
    };
    let env = request.env.unwrap_or_default();
    let secrets = request.secrets.unwrap_or_default();
    let mut budget = (0, 0);
    jobs::job_env::check_map(&env, &mut budget).map_err(|e| field_error("machine.env", e.0))?;
    jobs::job_env::check_map(&secrets.0, &mut budget)
        .map_err(|e| field_error("machine.secrets", e.0))?;
    if let Some(name) = secrets.0.keys().find(|name| env.contains_key(*name)) {
        return Err(field_error(
            "machine.secrets",
            format!("{name} is in env too; give it in one of them"),
        ));
    }
    let spec = MachineSpec {
        cpu_kind,
        cpus,
        memory_mb,
        region,
        fallback_regions,
        image,
        env,
    };
    Ok((spec, secrets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<(JobSpec, Duration), FieldError> {
        let request: JobRequest =
            serde_json::from_value(body).map_err(|e| field_error("body", e.to_string()))?;
        let defaults = JobDefaults {
            allowed_images: vec!["registry.fly.io/ml:v1".into()],
            ..JobDefaults::default()
        };
        let now = "2026-01-01T00:00:00Z".parse().unwrap();
        request
            .into_submission(&defaults, now)
            .map(|s| (s.spec, s.delay))
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
                json!({"kind": "x", "machine": {"region": "zzz"}}),
                "machine.region",
            ),
            (
                json!({"kind": "x", "backoff": {"base_ms": 0}}),
                "backoff.base_ms",
            ),
            (
                json!({"kind": "x", "machine": {"image": "evil/miner"}}),
                "machine.image",
            ),
            (
                json!({"kind": "x", "machine": {"env": {"JOB_TOKEN": "x"}}}),
                "machine.env",
            ),
            (
                json!({"kind": "x", "machine": {"env": {"FLY_APP_NAME": "x"}}}),
                "machine.env",
            ),
            (
                json!({"kind": "x", "machine": {"env": {"lower": "x"}}}),
                "machine.env",
            ),
            (
                json!({"kind": "x", "machine": {"env": {"RUNNER_COMMANDS": "{}"}}}),
                "machine.env",
            ),
            (
                json!({"kind": "x", "machine": {"env": {"LD_PRELOAD": "/x.so"}}}),
                "machine.env",
            ),
            (
                json!({"kind": "x", "machine": {"env": {"PATH": "/tmp"}}}),
                "machine.env",
            ),
            (
                json!({"kind": "x", "machine": {"env": {"A": "a\0b"}}}),
                "machine.env",
            ),
            (
                json!({"kind": "x", "machine": {"secrets": {"RUNNER_CONFIG": "/x"}}}),
                "machine.secrets",
            ),
            (
                json!({"kind": "x", "machine": {"env": {"A": "1"}, "secrets": {"A": "2"}}}),
                "machine.secrets",
            ),
            (
                json!({"kind": "x", "delay_secs": 5, "run_at": "2026-01-01T00:00:10Z"}),
                "run_at",
            ),
            (json!({"kind": "x", "run_at": "tomorrow"}), "run_at"),
            (
                json!({"kind": "x", "callback_url": "ftp://x"}),
                "callback_url",
            ),
            (
                json!({"kind": "x", "callback_url": "http://169.254.169.254/"}),
                "callback_url",
            ),
            (
                json!({"kind": "x", "idempotency_key": ""}),
                "idempotency_key",
            ),
            (json!({"kind": "x", "after": ["nope"]}), "after[0]"),
            (
                json!({"kind": "x", "then_policy": "all_finished"}),
                "then_policy",
            ),
            (json!({"kind": "x", "then": {"kind": "Y"}}), "then.kind"),
            (
                json!({"kind": "x", "then": {"kind": "y", "then": {"kind": "z"}}}),
                "then.then",
            ),
            (
                json!({"kind": "x", "then": {"kind": "y", "idempotency_key": "k"}}),
                "then.idempotency_key",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(parse(body.clone()).unwrap_err().field, field, "{body}");
        }
    }

    #[test]
    fn run_at_becomes_a_delay() {
        let (_, delay) =
            parse(json!({"kind": "x", "run_at": "2026-01-01T00:01:30+00:00"})).unwrap();
        assert_eq!(delay, Duration::from_secs(90));
        let (_, delay) = parse(json!({"kind": "x", "run_at": "2025-12-31T00:00:00Z"})).unwrap();
        assert_eq!(delay, Duration::ZERO, "a time in the past runs now");
    }

    #[test]
    fn allowed_images_and_plain_env_pass() {
        let body = json!({"kind": "x", "machine": {"image": "registry.fly.io/ml:v1", "env": {"MODEL": "small"}}});
        let (spec, _) = parse(body).unwrap();
        assert_eq!(spec.machine.image.as_deref(), Some("registry.fly.io/ml:v1"));
        assert_eq!(spec.machine.env["MODEL"], "small");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let body = json!({"kind": "x", "machine": {"secrets": {"API_KEY": "hunter2"}}});
        let request: JobRequest = serde_json::from_value(body).unwrap();
        assert!(!format!("{request:?}").contains("hunter2"));
        let submission = request
            .into_submission(&JobDefaults::default(), Utc::now())
            .unwrap();
        assert!(!format!("{submission:?}").contains("hunter2"));
        assert_eq!(submission.secrets.0["API_KEY"], "hunter2");
    }

    #[test]
    fn accepts_valid_machine_sizes() {
        let body = json!({"kind": "x", "machine": {"cpus": 2, "memory_mb": 1024, "region": "ams"}});
        let (spec, _) = parse(body).unwrap();
        assert_eq!((spec.machine.cpus, spec.machine.memory_mb), (2, 1024));
        assert_eq!(spec.machine.region.as_deref(), Some("ams"));
    }
}
