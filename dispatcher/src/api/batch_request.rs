//! `POST /batches` bodies: every member is a `POST /jobs` body, parsed by
//! the same [`JobRequest`] code, so a batch member and a single job cannot
//! disagree on what is valid. A bad member is refused naming
//! `jobs[i].field`, and nothing of the batch is stored.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::{BatchId, JobId, RunIf};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::request::{idempotency_key, FieldError, JobRequest};
use crate::configuration::JobDefaults;

/// `MAX_BATCH_JOBS` unless set: the most members one batch may carry.
pub const DEFAULT_MAX_BATCH_JOBS: usize = 10_000;

/// The JSON body of `POST /batches`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The members: `POST /jobs` bodies, 1 to the dispatcher's
    /// `MAX_BATCH_JOBS` (default 10,000). A member may carry its own
    /// `idempotency_key` and `after`, not a `then`.
    #[schema(value_type = Vec<JobRequest>)]
    pub jobs: Vec<Value>,
    /// A repeat of the same body under this key answers the first batch.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")]
    pub idempotency_key: Option<String>,
    /// Receives one POST with the batch's view once every member is final.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// A job run once every member is final (see `then_policy`); it
    /// receives the batch's counts and each member's id, index, status and
    /// result as its `inputs`.
    #[serde(default)]
    #[schema(value_type = Option<JobRequest>)]
    pub then: Option<Value>,
    /// `all_finished`: the `then` job runs whatever the members ended as;
    /// `all_succeeded` (default): it is cancelled unless every member
    /// succeeded.
    #[serde(default)]
    pub then_policy: Option<RunIf>,
}

impl BatchRequest {
    /// Validates every member and the `then` job; `body_hash` identifies
    /// the whole request for the batch's idempotency key.
    pub fn into_submit(
        self,
        defaults: &JobDefaults,
        max_jobs: usize,
        idempotency_ttl: Duration,
        body_hash: String,
        now: DateTime<Utc>,
    ) -> Result<jobs::Submit, FieldError> {
        if self.jobs.is_empty() || self.jobs.len() > max_jobs {
            return Err(FieldError {
                field: "jobs".into(),
                message: format!("give 1 to {max_jobs} jobs, got {}", self.jobs.len()),
            });
        }
        let mut members = Vec::with_capacity(self.jobs.len());
        for (i, value) in self.jobs.into_iter().enumerate() {
            let field = format!("jobs[{i}]");
            // A member's own idempotency key tells repeats apart by the
            // member's JSON (keys sorted), not the whole body.
            let hash = crate::engine::callbacks::hex(&Sha256::digest(value.to_string()));
            let submission = member(value, defaults, now, &field)?;
            if submission.then.is_some() {
                return Err(FieldError {
                    field: format!("{field}.then"),
                    message: "a batch member cannot have a then job; give the batch one".into(),
                });
            }
            members.push(submission.into_new_job(JobId::new(), Some(hash), idempotency_ttl));
        }
        let then = match (self.then, self.then_policy) {
            (None, Some(_)) => {
                return Err(FieldError {
                    field: "then_policy".into(),
                    message: "give it with then".into(),
                })
            }
            (None, None) => None,
            (Some(value), policy) => {
                let submission = member(value, defaults, now, "then")?;
                if submission.then.is_some() || submission.idempotency_key.is_some() {
                    return Err(FieldError {
                        field: "then".into(),
                        message: "the batch's then job has no then or idempotency_key of its own"
                            .into(),
                    });
                }
                let mut then = submission.into_new_job(JobId::new(), None, idempotency_ttl);
                then.run_if = policy.unwrap_or_default();
                Some(then)
            }
        };
        let idempotency = self
            .idempotency_key
            .map(idempotency_key)
            .transpose()?
            .map(|key| jobs::Idempotency {
                key,
                request_hash: body_hash,
                ttl: idempotency_ttl,
            });
        let callback_url = self
            .callback_url
            .map(|url| crate::api::request::callback_url(url, &defaults.callback_targets))
            .transpose()?;
        Ok(jobs::Submit {
            jobs: members,
            batch: Some(jobs::NewBatch {
                id: BatchId::new(),
                callback_url,
                idempotency,
                then,
                parent: None,
            }),
        })
    }
}

/// One `POST /jobs` body inside a batch, its errors named under `field`.
fn member(
    value: Value,
    defaults: &JobDefaults,
    now: DateTime<Utc>,
    field: &str,
) -> Result<crate::api::request::Submission, FieldError> {
    let request = crate::api::request::job_request(value).map_err(|e| FieldError {
        field: match e.field.as_str() {
            "body" => field.to_string(),
            inner => format!("{field}.{inner}"),
        },
        message: e.message,
    })?;
    request
        .into_submission(defaults, now)
        .and_then(crate::api::request::Submission::admitted_later)
        .map_err(|e| FieldError {
            field: format!("{field}.{}", e.field),
            message: e.message,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<jobs::Submit, FieldError> {
        let request: BatchRequest = serde_json::from_value(body).unwrap();
        request.into_submit(
            &JobDefaults::default(),
            3,
            Duration::from_secs(60),
            "hash".into(),
            Utc::now(),
        )
    }

    #[test]
    fn names_the_bad_member_and_field() {
        let cases = [
            (json!({"jobs": []}), "jobs"),
            (
                json!({"jobs": [{"kind": "a"}, {"kind": "a"}, {"kind": "a"}, {"kind": "a"}]}),
                "jobs",
            ),
            (
                json!({"jobs": [{"kind": "a"}, {"kind": "Bad"}]}),
                "jobs[1].kind",
            ),
            (
                json!({"jobs": [{"kind": "a", "priority": 1e9}]}),
                "jobs[0].priority",
            ),
            (
                json!({"jobs": [{"kind": "a", "machine": {"cpus": 3}}]}),
                "jobs[0].machine.cpus",
            ),
            (json!({"jobs": [{"kind": "a", "typo": 1}]}), "jobs[0].typo"),
            (json!({"jobs": [{"params": {}}]}), "jobs[0].kind"),
            (json!({"jobs": [{"kind": "a"}, 1]}), "jobs[1]"),
            (json!({"jobs": [{"kind": "a"}, "x"]}), "jobs[1]"),
            (
                json!({"jobs": [{"kind": "a", "after": ["x"]}]}),
                "jobs[0].after[0]",
            ),
            (
                json!({"jobs": [{"kind": "a", "then": {"kind": "b"}}]}),
                "jobs[0].then",
            ),
            (
                json!({"jobs": [{"kind": "a"}], "then": {"kind": "B"}}),
                "then.kind",
            ),
            (
                json!({"jobs": [{"kind": "a"}], "then_policy": "all_finished"}),
                "then_policy",
            ),
            (
                json!({"jobs": [{"kind": "a"}], "idempotency_key": ""}),
                "idempotency_key",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(parse(body.clone()).unwrap_err().field, field, "{body}");
        }
    }

    #[test]
    fn members_keep_their_order_and_the_batch_its_then() {
        let submit = parse(json!({
            "jobs": [{"kind": "a"}, {"kind": "b", "idempotency_key": "k"}],
            "then": {"kind": "sum"},
            "then_policy": "all_finished",
        }))
        .unwrap();
        let kinds: Vec<_> = submit
            .jobs
            .iter()
            .map(|j| j.spec.kind.to_string())
            .collect();
        assert_eq!(kinds, ["a", "b"]);
        assert!(submit.jobs[1].idempotency.is_some());
        let then = submit.batch.unwrap().then.unwrap();
        assert_eq!(then.run_if, RunIf::AllFinished);
    }
}
