//! The job domain: ids, kinds, statuses, attempt outcomes, and the job
//! record as the API shows it.
//!
//! Values that come from outside (`JobId`, `Kind`) are parsed into newtypes
//! at the boundary, so an invalid one cannot exist past it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// A job's id: a UUIDv7, so ids sort by creation time.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for JobId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| InvalidValue(format!("{s:?} is not a job id (a UUID)")))
    }
}

/// Why a value was refused at the boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// A job kind: which handler runs it. `[a-z0-9][a-z0-9_.-]{0,63}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$")]
pub struct Kind(String);

impl Kind {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
        if first_ok && rest_ok && s.len() <= 64 {
            Ok(Self(s.to_string()))
        } else {
            Err(InvalidValue(format!(
                "{s:?} is not a valid kind: use 1 to 64 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Kind::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where a job is in its life. Every change happens in exactly one script
/// of [`crate::Store`]; the names say what the job is waiting for. The
/// allowed moves are one table, `TRANSITIONS` in `scripts/prelude.lua`,
/// which the store enforces; [`JobStatus::successors`] mirrors it and
/// `docs/state-machine.md` draws it with the script and caller of each edge.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its run time: delayed, or backing off before a retry.
    /// Left by a dispatcher's launcher (`claim` queues it once due) or a
    /// client's cancel (`cancel`).
    Scheduled,
    /// Ready; waits for a free machine slot. Left by a dispatcher's
    /// launcher (`claim`: `starting`) or a client's cancel (`cancel`).
    Queued,
    /// A machine was requested for the current attempt. Left by the
    /// runner (`start_attempt`: `running`) or, when the attempt ends before
    /// the runner began (boot failure, crash, cancel, timeout), by the
    /// supervisor (`finish_attempt`).
    Starting,
    /// The runner on the machine claimed the attempt and is working. Left
    /// only by the supervisor that owns the attempt (`finish_attempt`),
    /// whatever the runner reported.
    Running,
    /// Final. Nothing moves a job out of it.
    Succeeded,
    /// Attempts exhausted or a permanent error: the dead-letter state.
    /// Final unless a client retries it (`retry`: `queued`).
    Failed,
    /// Final unless a client retries it (`retry`: `queued`).
    Cancelled,
    /// Waits for other jobs (`after`) or a batch (its `then` job) to
    /// finish. Left when the last of them is final, by whichever script
    /// made it final (`fan_in.lua`'s listener: `queued`, or `scheduled`
    /// while its delay is ahead; `cancelled` when one it needed did not
    /// succeed), or by a client's cancel (`cancel`).
    Waiting,
    /// Final: not started before its `expire_after_secs` passed (the
    /// launcher's `claim` ends it, from `queued`, `scheduled` or
    /// `waiting`). Final unless a client retries it (`retry`: `queued`).
    Expired,
}

impl JobStatus {
    pub const ALL: [JobStatus; 9] = [
        Self::Scheduled,
        Self::Queued,
        Self::Starting,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::Waiting,
        Self::Expired,
    ];

    /// The statuses a new job starts in (`enqueue`, `submit`): `scheduled`
    /// when delayed, `waiting` when it waits for other jobs, else `queued`.
    pub const INITIAL: [JobStatus; 3] = [Self::Queued, Self::Scheduled, Self::Waiting];

    /// The statuses a job may move to from this one: the Rust copy of the
    /// store's `TRANSITIONS` table (a store test keeps them equal).
    pub fn successors(self) -> &'static [JobStatus] {
        use JobStatus::*;
        match self {
            Scheduled => &[Queued, Cancelled, Expired],
            Queued => &[Starting, Cancelled, Expired],
            Starting => &[Running, Scheduled, Succeeded, Failed, Cancelled],
            Running => &[Scheduled, Succeeded, Failed, Cancelled],
            Succeeded => &[],
            Failed | Cancelled | Expired => &[Queued],
            Waiting => &[Queued, Scheduled, Cancelled, Expired],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Waiting => "waiting",
            Self::Expired => "expired",
        }
    }

    /// Final: only a client's retry (of `failed` or `cancelled`) moves a
    /// job on from here; the dispatcher's `on_terminal` follows these.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::Expired
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| InvalidValue(format!("{s:?} is not a job status")))
    }
}

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    /// The handler returned an error.
    Error,
    /// The process exited non-zero without reporting a result.
    Crashed,
    /// The platform killed the machine for using too much memory.
    Oom,
    TimedOut,
    /// The machine could not be created or started.
    BootFailed,
    /// No heartbeat and the machine is gone.
    Lost,
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Error => "error",
            Self::Crashed => "crashed",
            Self::Oom => "oom",
            Self::TimedOut => "timed_out",
            Self::BootFailed => "boot_failed",
            Self::Lost => "lost",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The machine a job's attempts run on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MachineSpec {
    pub cpu_kind: String,
    pub cpus: u32,
    pub memory_mb: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Regions to try, in order, when `region` is out of capacity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_regions: Vec<String>,
    /// Another image than the runner's default (from an allow-list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Extra environment for the job's machine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// A validated job, ready to be stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub kind: Kind,
    pub params: Value,
    pub priority: i32,
    pub max_attempts: u32,
    pub timeout_secs: u64,
    pub backoff: Backoff,
    pub machine: MachineSpec,
}

/// The smallest machine Fly offers (`shared-cpu-1x`, 256 MB) in the
/// nearest region with the default image: the dispatcher's default size
/// unless configured otherwise.
impl Default for MachineSpec {
    fn default() -> Self {
        Self {
            cpu_kind: "shared".into(),
            cpus: 1,
            memory_mb: 256,
            region: None,
            fallback_regions: Vec::new(),
            image: None,
            env: BTreeMap::new(),
        }
    }
}

/// Exponential backoff between attempts, capped, with full jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Backoff {
    pub base_ms: u64,
    pub max_ms: u64,
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base_ms: 1_000,
            max_ms: 300_000,
            jitter: true,
        }
    }
}

/// One attempt to run a job, as the API shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub number: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// How much the attempt logged (`GET /jobs/{id}/logs` has the lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<crate::logs::LogSummary>,
    /// The last lines of its log, for an attempt that failed: what it
    /// printed before the error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
}

/// How far the running handler says it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// 0..=100.
    pub percent: u8,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A job as `GET /jobs/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: JobId,
    pub kind: Kind,
    pub status: JobStatus,
    /// Left out of listings unless asked for (`GET /jobs?full=true`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Value,
    pub priority: i32,
    pub max_attempts: u32,
    pub timeout_secs: u64,
    pub backoff: Backoff,
    pub machine: MachineSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    pub attempts: Vec<Attempt>,
    /// Flow control ([`crate::flow`]): the job's concurrency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<crate::flow::FlowKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub singleton_key: Option<crate::flow::FlowKey>,
    /// Why a queued job is held back beyond its turn (a pause, its key's
    /// concurrency limit, a rate limit); only in `GET /jobs/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<crate::flow::WaitingFor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<crate::Tag>,
    /// The job that enqueued this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<JobId>,
    /// This job's key among its parent's children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_key: Option<String>,
    /// When the job ends `expired` unless it has started by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_ladder: Option<crate::OomLadder>,
    /// Attempts before the last manual retry; they don't count against
    /// `max_attempts`.
    #[serde(skip)]
    pub attempt_base: u32,
    /// The batch this job is a member of, and its place in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<crate::fan_in::BatchId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_index: Option<u32>,
    /// The jobs it waits for (`after`), and the batch it is the `then`
    /// job of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_batch: Option<crate::fan_in::BatchId>,
    /// The job stored with this one to run after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<JobId>,
    /// Once what it waited for finished: their ids, statuses and results
    /// (`{"jobs": [...]}`, with `batch` and `counts` for a batch). Left
    /// out of listings unless asked for, like `params`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<Value>,
}

/// The fields of a job's hash, as the store keeps them: flat strings.
pub(crate) type Fields = BTreeMap<String, String>;

impl Job {
    /// Rebuilds a job from the flat hash the scripts write. Attempt fields
    /// are stored as `a:{n}:{field}`, so one `HGETALL` reads everything.
    pub(crate) fn from_fields(fields: &Fields) -> Result<Self, InvalidValue> {
        let get = |name: &str| {
            fields
                .get(name)
                .ok_or_else(|| InvalidValue(format!("job record lacks {name:?}")))
        };
        let number = |name: &str| -> Result<i64, InvalidValue> {
            get(name)?
                .parse()
                .map_err(|_| InvalidValue(format!("job field {name:?} is not a number")))
        };
        let json = |name: &str| -> Result<Option<Value>, InvalidValue> {
            fields
                .get(name)
                .map(|text| serde_json::from_str(text))
                .transpose()
                .map_err(|e| InvalidValue(format!("job field {name:?}: {e}")))
        };
        let flow_key = |name: &str| {
            fields
                .get(name)
                .map(|k| crate::flow::FlowKey::parse(k))
                .transpose()
        };
        let time = |name: &str| {
            fields
                .get(name)
                .and_then(|t| t.parse().ok())
                .map(millis_to_time)
        };

        let mut attempts: BTreeMap<u32, Attempt> = BTreeMap::new();
        for (key, value) in fields {
            let Some(rest) = key.strip_prefix("a:") else {
                continue;
            };
            let Some((n, field)) = rest.split_once(':') else {
                continue;
            };
            let Ok(n) = n.parse::<u32>() else { continue };
            let attempt = attempts.entry(n).or_insert_with(|| Attempt {
                number: n,
                ..Attempt::default()
            });
            let as_time = || value.parse().ok().map(millis_to_time);
            match field {
                "outcome" => {
                    attempt.outcome = serde_json::from_value(Value::String(value.clone())).ok()
                }
                "machine_id" => attempt.machine_id = Some(value.clone()),
                "region" => attempt.region = Some(value.clone()),
                "exit_code" => attempt.exit_code = value.parse().ok(),
                "error" => attempt.error = Some(value.clone()),
                "claimed_at" => attempt.claimed_at = as_time(),
                "started_at" => attempt.started_at = as_time(),
                "heartbeat_at" => attempt.heartbeat_at = as_time(),
                "finished_at" => attempt.finished_at = as_time(),
                "log_tail" => attempt.log_tail = log_tail(value),
                log if log.starts_with("log_") => {
                    let summary = attempt.log.get_or_insert_with(Default::default);
                    let count = value.parse().unwrap_or_default();
                    match log {
                        "log_lines" => summary.lines = count,
                        "log_bytes" => summary.bytes = count,
                        "log_truncated" => summary.truncated = count == 1,
                        "log_dropped" => summary.dropped = count,
                        "log_batches" => summary.batches = count,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        // The tail explains a failure; a success or a running attempt has
        // the whole log one request away.
        for attempt in attempts.values_mut() {
            if matches!(attempt.outcome, None | Some(Outcome::Succeeded)) {
                attempt.log_tail.clear();
            }
        }

        let parse_json = |name: &str| -> Result<Value, InvalidValue> {
            json(name)?.ok_or_else(|| InvalidValue(format!("job record lacks {name:?}")))
        };
        Ok(Job {
            id: get("id")?.parse()?,
            kind: Kind::parse(get("kind")?)?,
            status: get("status")?.parse()?,
            params: parse_json("params")?,
            priority: number("priority")? as i32,
            max_attempts: number("max_attempts")? as u32,
            timeout_secs: number("timeout_secs")? as u64,
            backoff: serde_json::from_value(parse_json("backoff")?)
                .map_err(|e| InvalidValue(format!("job field \"backoff\": {e}")))?,
            machine: serde_json::from_value(parse_json("machine")?)
                .map_err(|e| InvalidValue(format!("job field \"machine\": {e}")))?,
            progress: fields
                .get("progress")
                .and_then(|p| p.parse().ok())
                .map(|percent| Progress {
                    percent,
                    message: fields.get("progress_message").cloned().unwrap_or_default(),
                }),
            result: json("result")?,
            error: fields.get("error").cloned(),
            created_at: millis_to_time(number("created_at")?),
            updated_at: millis_to_time(number("updated_at")?),
            run_at: time("run_at"),
            finished_at: time("finished_at"),
            cancel_requested: fields.contains_key("cancel_requested"),
            idempotency_key: fields.get("idempotency_key").cloned(),
            callback_url: fields.get("callback_url").cloned(),
            attempts: attempts.into_values().collect(),
            concurrency_key: flow_key("concurrency_key")?,
            singleton_key: flow_key("singleton_key")?,
            waiting_for: None,
            attempt_base: number("attempt_base")? as u32,
            batch_id: fields.get("batch").map(|b| b.parse()).transpose()?,
            batch_index: fields.get("batch_index").and_then(|i| i.parse().ok()),
            after: json("after")?
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| InvalidValue(format!("job field \"after\": {e}")))?
                .unwrap_or_default(),
            after_batch: fields.get("after_batch").map(|b| b.parse()).transpose()?,
            inputs: json("inputs")?,
            then: fields.get("then").map(|t| t.parse()).transpose()?,
            tags: json("tags")?
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| InvalidValue(format!("job field \"tags\": {e}")))?
                .unwrap_or_default(),
            parent: fields.get("parent").map(|p| p.parse()).transpose()?,
            child_key: fields.get("child_key").cloned(),
            expire_at: time("expire_at"),
            oom_ladder: fields
                .get("oom_max_memory_mb")
                .and_then(|mb| mb.parse().ok())
                .map(|max_memory_mb| crate::OomLadder { max_memory_mb }),
        })
    }

    /// The attempt currently (or last) in progress.
    pub fn current_attempt(&self) -> Option<&Attempt> {
        self.attempts.last()
    }
}

pub fn millis_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The lines of a stored `a:{n}:log_tail` (JSON log lines). A tail that
/// does not parse is left out: it is a courtesy, never worth failing the
/// job's view for.
fn log_tail(value: &str) -> Vec<String> {
    serde_json::from_str::<Vec<crate::logs::LogLine>>(value)
        .map(|lines| lines.into_iter().map(|l| l.line).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_documented_pattern() {
        for ok in ["echo", "a", "0report", "pdf.render-v2_x", &"a".repeat(64)] {
            assert!(Kind::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Echo", "-x", ".x", "has space", "ünï", &"a".repeat(65)] {
            assert!(Kind::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_round_trip_through_text() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>().unwrap(), status);
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert!("done".parse::<JobStatus>().is_err());
    }

    #[test]
    fn job_ids_must_be_uuids() {
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
        assert!("42".parse::<JobId>().is_err());
    }
}
