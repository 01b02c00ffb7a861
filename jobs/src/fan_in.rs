//! Fan-out and fan-in in the store: batches, jobs that wait for others
//! (`after`), and `then` jobs that run once what they wait for finished.
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `batch:{id}` | hash | total, `final` (members in a final status), `n:{status}` counts, `completed_at`, `then`, callback URL |
//! | `batch:{id}:jobs` | zset | the members (score 0, ordered by id) |
//! | `batch:{id}:status:{status}` | zset | the members in a status |
//! | `batches` | zset | every batch (score 0, ordered by id = creation order) |
//! | `batch_idempotency:{key}` | string | `{batch id} {request hash}`, expires after the retention window |
//! | `batch_callbacks` | list | completed batches whose callback is due (an outbox) |
//! | `dependents:{id}` | set | waiting jobs to tell when job `id` is final |
//!
//! The counters, the dependencies and a batch's completion are kept by
//! `scripts/fan_in.lua`, which every script includes: whatever moves a
//! job moves them in the same step. A batch's callback is queued in the
//! outbox by the step that completed it, once; each entry is popped by
//! exactly one dispatcher ([`Store::pop_batch_callback`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fred::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job_env::Secrets;
use crate::model::{millis_to_time, InvalidValue, JobId, JobSpec, JobStatus};
use crate::store::{Idempotency, Result, Store, StoreError};

/// A batch's id: a UUIDv7, like job ids.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct BatchId(Uuid);

impl BatchId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Batch events are published under the batch's id where job events
    /// carry the job's: the same UUID, so the event hub routes both.
    pub fn event_key(self) -> JobId {
        self.to_string().parse().expect("a batch id is a UUID")
    }
}

impl Default for BatchId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl FromStr for BatchId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| InvalidValue(format!("{s:?} is not a batch id (a UUID)")))
    }
}

/// What a `then` job (or a job with `after`) needs of what it waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunIf {
    /// Every one succeeded; otherwise the job is cancelled, with a reason
    /// naming the first that did not.
    #[default]
    AllSucceeded,
    /// Every one is final, whatever it ended as.
    AllFinished,
}

/// One job to store through [`Store::submit`].
#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: JobId,
    pub spec: JobSpec,
    pub delay: Duration,
    pub callback_url: Option<String>,
    pub idempotency: Option<Idempotency>,
    pub secrets: Secrets,
    /// Jobs it waits for: stored ones, or earlier jobs of the same call.
    pub after: Vec<JobId>,
    pub run_if: RunIf,
    /// Its `then` job, stored in the same call (shown on the job).
    pub then: Option<JobId>,
    /// Its flow-control key: it queues under it once admitted.
    pub concurrency_key: Option<crate::flow::FlowKey>,
    /// Tags, expiry, OOM ladder ([`crate::RunOptions`]).
    pub run: crate::RunOptions,
}

/// The batch part of a [`Submit`].
#[derive(Clone, Debug)]
pub struct NewBatch {
    pub id: BatchId,
    pub callback_url: Option<String>,
    pub idempotency: Option<Idempotency>,
    /// Waits for every member; its `run_if` is the batch's policy.
    pub then: Option<NewJob>,
    /// The running job that enqueues the batch, if one does
    /// ([`Store::enqueue_child_batch`](crate::Store::enqueue_child_batch)).
    pub parent: Option<BatchParent>,
}

/// The attempt of a running job that enqueues a batch, and the batch's key
/// within that job: the store stores the batch only while the attempt is
/// current, and once per key.
#[derive(Clone, Debug)]
pub struct BatchParent {
    pub attempt: crate::AttemptRef,
    pub key: String,
}

/// What [`Store::submit`] stores, all or nothing: a batch's members, or
/// one job and the `then` job that waits for it.
#[derive(Clone, Debug)]
pub struct Submit {
    pub jobs: Vec<NewJob>,
    pub batch: Option<NewBatch>,
}

/// What [`Store::submit`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Stored: each job's id, in order. `existing` lists the indexes whose
    /// idempotency key named a job stored before (its id is given).
    Stored {
        ids: Vec<JobId>,
        existing: Vec<usize>,
    },
    /// No batch: the first job repeats one stored under its key.
    Existing(JobId),
    /// The batch repeats one stored under its key.
    BatchExisting(BatchId),
    BatchConflict(BatchId),
    /// Job `index`'s idempotency key was used for another request by `id`.
    Conflict {
        index: usize,
        id: JobId,
    },
    /// Job `index` (`None`: the batch's `then` job) waits for a job that
    /// does not exist.
    Missing {
        index: Option<usize>,
        id: JobId,
    },
    /// The batch's parent attempt is no longer current: nothing stored.
    Stale,
}

/// A batch as `GET /batches/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Batch {
    pub id: BatchId,
    /// Members stored by the batch (a member whose idempotency key named
    /// an earlier job is that job, and not counted here).
    pub total: u64,
    /// Members per status; every status is listed, zeros included.
    pub counts: BTreeMap<JobStatus, u64>,
    /// Members in a final status (succeeded, failed, cancelled).
    pub finished: u64,
    /// `finished` / `total`, 0 to 100 (100 for an empty batch).
    pub progress_percent: f64,
    /// Set once every member was final.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The job that runs after the batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub then: Option<JobId>,
    pub then_policy: RunIf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The job that enqueued the batch, when a running job did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<JobId>,
    /// The batch's key among the batches its parent enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_key: Option<String>,
}

impl Batch {
    fn from_fields(fields: &BTreeMap<String, String>) -> Result<Self, InvalidValue> {
        let get = |name: &str| {
            fields
                .get(name)
                .ok_or_else(|| InvalidValue(format!("batch record lacks {name:?}")))
        };
        let number = |name: &str| -> Result<u64, InvalidValue> {
            get(name)?
                .parse()
                .map_err(|_| InvalidValue(format!("batch field {name:?} is not a number")))
        };
        let mut counts: BTreeMap<JobStatus, u64> = JobStatus::ALL.iter().map(|&s| (s, 0)).collect();
        for (name, value) in fields {
            if let Some(status) = name.strip_prefix("n:") {
                // A status this build does not know (a newer peer's) is
                // left out rather than failing the view.
                if let Ok(status) = status.parse() {
                    counts.insert(status, value.parse().unwrap_or(0));
                }
            }
        }
        let total = number("total")?;
        let finished = number("final")?;
        Ok(Self {
            id: get("id")?.parse()?,
            total,
            counts,
            finished,
            progress_percent: if total == 0 {
                100.0
            } else {
                (finished as f64 * 10_000.0 / total as f64).round() / 100.0
            },
            completed_at: fields
                .get("completed_at")
                .and_then(|t| t.parse().ok())
                .map(millis_to_time),
            created_at: millis_to_time(number("created_at")? as i64),
            then: fields.get("then").map(|t| t.parse()).transpose()?,
            then_policy: serde_json::from_value(serde_json::Value::String(
                get("then_policy")?.clone(),
            ))
            .map_err(|e| InvalidValue(format!("batch field \"then_policy\": {e}")))?,
            callback_url: fields.get("callback_url").cloned(),
            idempotency_key: fields.get("idempotency_key").cloned(),
            parent: fields.get("parent").map(|p| p.parse()).transpose()?,
            child_key: fields.get("child_key").cloned(),
        })
    }

    pub fn is_complete(&self) -> bool {
        self.completed_at.is_some()
    }
}

/// One page of batches, newest first.
#[derive(Debug)]
pub struct BatchPage {
    pub batches: Vec<Batch>,
    pub next: Option<BatchId>,
}

/// The script's view of a [`NewJob`] (see `scripts/submit.lua`).
#[derive(Serialize)]
struct ScriptJob {
    id: String,
    fields: BTreeMap<&'static str, String>,
    delay_ms: u128,
    secrets: String,
    idempotency: Option<ScriptIdempotency>,
    after: Vec<String>,
    run_if: RunIf,
    run: crate::RunOptions,
}

#[derive(Serialize)]
struct ScriptIdempotency {
    key: String,
    hash: String,
    ttl_ms: u128,
}

#[derive(Serialize)]
struct ScriptBatch {
    id: String,
    callback_url: String,
    then_policy: RunIf,
    idempotency: Option<ScriptIdempotency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<ScriptParent>,
}

/// A [`BatchParent`] as `child_fence.lua` and `submit.lua` take it.
#[derive(Serialize)]
struct ScriptParent {
    job: String,
    attempt: u32,
    token: String,
    key: String,
}

#[derive(Serialize)]
struct ScriptRequest {
    jobs: Vec<ScriptJob>,
    batch: Option<ScriptBatch>,
    batch_then: Option<ScriptJob>,
}

fn script_idempotency(i: &Option<Idempotency>) -> Option<ScriptIdempotency> {
    i.as_ref().map(|i| ScriptIdempotency {
        key: i.key.clone(),
        hash: i.request_hash.clone(),
        ttl_ms: i.ttl.as_millis(),
    })
}

impl NewJob {
    fn to_script(&self) -> Result<ScriptJob> {
        let spec = &self.spec;
        let mut fields = BTreeMap::from([
            ("kind", spec.kind.to_string()),
            ("params", spec.params.to_string()),
            ("priority", spec.priority.to_string()),
            ("max_attempts", spec.max_attempts.to_string()),
            ("timeout_secs", spec.timeout_secs.to_string()),
            ("backoff", serde_json::to_string(&spec.backoff)?),
            ("machine", serde_json::to_string(&spec.machine)?),
        ]);
        if let Some(url) = &self.callback_url {
            fields.insert("callback_url", url.clone());
        }
        if let Some(then) = self.then {
            fields.insert("then", then.to_string());
        }
        if let Some(key) = &self.concurrency_key {
            fields.insert("concurrency_key", key.to_string());
        }
        Ok(ScriptJob {
            id: self.id.to_string(),
            fields,
            delay_ms: self.delay.as_millis(),
            secrets: if self.secrets.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&self.secrets.0)?
            },
            idempotency: script_idempotency(&self.idempotency),
            after: self.after.iter().map(JobId::to_string).collect(),
            run_if: self.run_if,
            run: self.run.clone(),
        })
    }
}

impl Store {
    /// Stores a batch, or a job with `after` or a `then` job, in one
    /// script: every check (idempotency keys, the jobs waited for exist)
    /// passes before anything is written.
    pub async fn submit(&self, submit: &Submit) -> Result<Submitted> {
        #[derive(Deserialize)]
        struct Index {
            index: i64,
            id: String,
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            ids: Option<Vec<String>>,
            #[serde(default)]
            existing: Option<serde_json::Value>,
            #[serde(default)]
            batch_existing: Option<String>,
            #[serde(default)]
            batch_conflict: Option<String>,
            #[serde(default)]
            conflict: Option<Index>,
            #[serde(default)]
            missing: Option<Index>,
            #[serde(default)]
            stale: bool,
        }
        let request = ScriptRequest {
            jobs: submit
                .jobs
                .iter()
                .map(NewJob::to_script)
                .collect::<Result<_>>()?,
            batch: submit.batch.as_ref().map(|b| ScriptBatch {
                id: b.id.to_string(),
                callback_url: b.callback_url.clone().unwrap_or_default(),
                then_policy: b.then.as_ref().map(|t| t.run_if).unwrap_or_default(),
                idempotency: script_idempotency(&b.idempotency),
                parent: b.parent.as_ref().map(|p| ScriptParent {
                    job: p.attempt.job_id.to_string(),
                    attempt: p.attempt.attempt,
                    token: p.attempt.token.clone(),
                    key: p.key.clone(),
                }),
            }),
            batch_then: submit
                .batch
                .as_ref()
                .and_then(|b| b.then.as_ref())
                .map(NewJob::to_script)
                .transpose()?,
        };
        let text: String = self
            .run(&self.scripts.submit, vec![serde_json::to_string(&request)?])
            .await?;
        let answer: Answer = serde_json::from_str(&text)?;
        let job_id = |t: &str| t.parse::<JobId>().map_err(StoreError::from);
        let batch_id = |t: &str| t.parse::<BatchId>().map_err(StoreError::from);
        if answer.stale {
            return Ok(Submitted::Stale);
        }
        if let Some(ids) = answer.ids {
            // An empty list comes back as `{}` or not at all (cjson).
            let existing = match answer.existing {
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .filter_map(|i| i.as_u64().map(|i| i as usize))
                    .collect(),
                _ => Vec::new(),
            };
            return Ok(Submitted::Stored {
                ids: ids.iter().map(|i| job_id(i)).collect::<Result<_>>()?,
                existing,
            });
        }
        if let Some(id) = answer.batch_existing {
            return Ok(Submitted::BatchExisting(batch_id(&id)?));
        }
        if let Some(id) = answer.batch_conflict {
            return Ok(Submitted::BatchConflict(batch_id(&id)?));
        }
        if let Some(Index { index, id }) = answer.conflict {
            return Ok(Submitted::Conflict {
                index: index as usize,
                id: job_id(&id)?,
            });
        }
        if let Some(Index { index, id }) = answer.missing {
            return Ok(Submitted::Missing {
                index: usize::try_from(index).ok(),
                id: job_id(&id)?,
            });
        }
        match answer.existing {
            Some(serde_json::Value::String(id)) => Ok(Submitted::Existing(job_id(&id)?)),
            _ => Err(StoreError::Corrupt(InvalidValue(format!(
                "unexpected submit answer {text}"
            )))),
        }
    }

    pub async fn batch(&self, id: BatchId) -> Result<Option<Batch>> {
        let fields: BTreeMap<String, String> = self
            .client
            .hgetall(self.key(&format!("batch:{id}")))
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(Some(Batch::from_fields(&fields)?))
    }

    /// Batches newest first; `after` is the previous page's last id.
    pub async fn batches(&self, after: Option<BatchId>, limit: usize) -> Result<BatchPage> {
        let max = after.map_or("+".to_string(), |a| format!("({a}"));
        let limit = limit.max(1);
        let ids: Vec<String> = self
            .client
            .zrevrangebylex(self.key("batches"), max, "-", Some((0, limit as i64)))
            .await?;
        let pipeline = self.client.pipeline();
        for id in &ids {
            let _: () = pipeline.hgetall(self.key(&format!("batch:{id}"))).await?;
        }
        let records: Vec<BTreeMap<String, String>> = if ids.is_empty() {
            Vec::new()
        } else {
            pipeline.all().await?
        };
        let batches = records
            .iter()
            .filter(|fields| !fields.is_empty())
            .map(|fields| Batch::from_fields(fields).map_err(StoreError::from))
            .collect::<Result<Vec<_>>>()?;
        let next = (ids.len() == limit)
            .then(|| ids.last().and_then(|id| id.parse().ok()))
            .flatten();
        Ok(BatchPage { batches, next })
    }

    /// Takes the next completed batch whose callback is due, if any. Each
    /// entry goes to exactly one caller (`LPOP`), so each batch's callback
    /// is sent by one dispatcher however many poll.
    pub async fn pop_batch_callback(&self) -> Result<Option<BatchId>> {
        let id: Option<String> = self.client.lpop(self.key("batch_callbacks"), None).await?;
        id.map(|id| id.parse().map_err(StoreError::from))
            .transpose()
    }
}

/// The listing index of a batch's members (all, or in one status), for
/// [`Store::list`] (keys as `fan_in.lua` writes them).
pub(crate) fn batch_index(prefix: &str, id: BatchId, status: Option<JobStatus>) -> String {
    match status {
        None => format!("{prefix}batch:{id}:jobs"),
        Some(status) => format!("{prefix}batch:{id}:status:{status}"),
    }
}
