//! Jobs that enqueue jobs: the child's request is the body of `POST /jobs`
//! and passes the same parser ([`crate::api::request::JobRequest`]) against the
//! same [`JobDefaults`] (allowed images, regions, env allow-list, caps),
//! so a child can ask for nothing a client could not. A batch a job
//! enqueues is the body of `POST /batches`, parsed by the same
//! [`BatchRequest::into_submit`] against the same cap on members.
//!
//! Runners reach only the job store, never the dispatcher's API. So each
//! dispatcher publishes its [`ChildPolicy`] in the store when it starts
//! ([`publish_policy`]), and the runner parses a child's request with
//! [`parse_child`] (a batch's with [`parse_child_batch`]) against it
//! before the fenced write ([`jobs::Store::enqueue_child`],
//! [`jobs::Store::enqueue_child_batch`]). During a deploy the last
//! dispatcher to start wins; every dispatcher of one app runs with the
//! same flags.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jobs::{EnqueueOptions, JobSpec, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::batch_request::{BatchRequest, DEFAULT_MAX_BATCH_JOBS};
use crate::api::request::{field_error, FieldError};
use crate::configuration::JobDefaults;

/// What the jobs a running job enqueues are validated against: the
/// dispatchers' job defaults and limits, and the cap on a batch's members.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChildPolicy {
    #[serde(flatten)]
    pub defaults: JobDefaults,
    /// `MAX_BATCH_JOBS`. A dispatcher from before jobs could enqueue
    /// batches published no cap: then its default.
    #[serde(default = "default_max_batch_jobs")]
    pub max_batch_jobs: usize,
}

fn default_max_batch_jobs() -> usize {
    DEFAULT_MAX_BATCH_JOBS
}

/// Stores this dispatcher's submission policy for runners to read.
pub async fn publish_policy(store: &Store, policy: &ChildPolicy) -> Result<(), StoreError> {
    store
        .set_child_policy(&serde_json::to_string(policy)?)
        .await
}

/// The policy the dispatchers published; `None` before any did.
pub async fn load_policy(store: &Store) -> Result<Option<ChildPolicy>, StoreError> {
    store
        .child_policy()
        .await?
        .map(|text| serde_json::from_str(&text).map_err(StoreError::from))
        .transpose()
}

/// Parses a child's request (the JSON body `POST /jobs` takes) into what
/// [`jobs::Store::enqueue_child`] stores. A child is deduplicated by its
/// key within its parent, so it takes no idempotency key.
pub fn parse_child(
    request: Value,
    policy: &ChildPolicy,
    now: DateTime<Utc>,
) -> Result<(JobSpec, EnqueueOptions), FieldError> {
    let request = crate::api::request::job_request(request)?;
    let keyed = request.idempotency_key.is_some();
    let submission = request.into_submission(&policy.defaults, now)?;
    as_child(
        "",
        Carries {
            idempotency_key: keyed,
            after: !submission.after.is_empty(),
            then: submission.then.is_some(),
            secrets: !submission.secrets.is_empty(),
        },
    )?;
    let options = EnqueueOptions {
        delay: submission.delay,
        callback_url: submission.callback_url,
        idempotency: None,
        secrets: submission.secrets,
        flow: submission.flow,
        run: submission.run,
    };
    Ok((submission.spec, options))
}

/// Parses a batch a job enqueues (the JSON body `POST /batches` takes)
/// into what [`jobs::Store::enqueue_child_batch`] stores. The batch is
/// deduplicated by its key within its parent, so it takes no
/// `idempotency_key`, and its members and `then` job follow the rules of
/// children ([`parse_child`]), but the batch may have a `then` job.
pub fn parse_child_batch(
    request: Value,
    policy: &ChildPolicy,
    now: DateTime<Utc>,
) -> Result<jobs::Submit, FieldError> {
    let request: BatchRequest = crate::api::request::from_json_value(request)?;
    if request.idempotency_key.is_some() {
        return Err(field_error("idempotency_key", KEYED_BY_PARENT));
    }
    // With the batch's key refused above and the members' below, no
    // idempotency record is written: it needs no body hash or lifetime.
    let submit = request.into_submit(
        &policy.defaults,
        policy.max_batch_jobs,
        Duration::ZERO,
        String::new(),
        now,
    )?;
    let then = submit.batch.as_ref().and_then(|b| b.then.as_ref());
    let jobs = submit.jobs.iter().enumerate();
    for (at, job) in jobs
        .map(|(i, job)| (format!("jobs[{i}]."), job))
        .chain(then.map(|job| ("then.".to_string(), job)))
    {
        as_child(
            &at,
            Carries {
                idempotency_key: job.idempotency.is_some(),
                after: !job.after.is_empty(),
                then: false,
                secrets: !job.secrets.is_empty(),
            },
        )?;
    }
    Ok(submit)
}

const KEYED_BY_PARENT: &str =
    "what a job enqueues is deduplicated by its key within the job; leave idempotency_key out";

/// What a job a running job enqueues (alone or in a batch) asks for,
/// of what it may not.
struct Carries {
    idempotency_key: bool,
    after: bool,
    then: bool,
    secrets: bool,
}

/// Refuses what no job a running job enqueues may carry, naming the
/// field under `at` (`""`, `jobs[3].`, `then.`).
fn as_child(at: &str, carries: Carries) -> Result<(), FieldError> {
    let refused = if carries.idempotency_key {
        Some(("idempotency_key", KEYED_BY_PARENT))
    } else if carries.then || carries.after {
        let field = if carries.then { "then" } else { "after" };
        Some((
            field,
            "a job a running job enqueues cannot wait for other jobs; enqueue it when they are done",
        ))
    } else if carries.secrets {
        // Secrets are stored apart with SET, which the runner's store user
        // (least privilege: deploy/valkey-users.acl) may not run.
        Some((
            "machine.secrets",
            "a job a running job enqueues cannot carry secrets; give them to the app's machines instead",
        ))
    } else {
        None
    };
    match refused {
        Some((field, message)) => Err(field_error(&format!("{at}{field}"), message)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(max_batch_jobs: usize) -> ChildPolicy {
        ChildPolicy {
            defaults: JobDefaults::default(),
            max_batch_jobs,
        }
    }

    #[test]
    fn children_pass_the_submit_parser() {
        let policy = policy(10);
        let now = Utc::now();
        let (spec, options) = parse_child(
            json!({"kind": "echo", "tags": ["batch-7"], "machine": {"memory_mb": 512}}),
            &policy,
            now,
        )
        .unwrap();
        assert_eq!(spec.machine.memory_mb, 512);
        assert_eq!(options.run.tags[0].as_str(), "batch-7");
        let stored = jobs::JobId::new().to_string();
        for (body, field) in [
            (
                json!({"kind": "echo", "machine": {"env": {"LD_PRELOAD": "/x"}}}),
                "machine.env",
            ),
            (
                json!({"kind": "echo", "machine": {"image": "evil/miner"}}),
                "machine.image",
            ),
            (json!({"kind": "Bad"}), "kind"),
            (json!({"params": {}}), "kind"),
            (json!({"kind": "echo", "typo": 1}), "typo"),
            (
                json!({"kind": "echo", "idempotency_key": "k"}),
                "idempotency_key",
            ),
            (
                json!({"kind": "echo", "machine": {"secrets": {"KEY": "v"}}}),
                "machine.secrets",
            ),
            (json!({"kind": "echo", "after": [stored]}), "after"),
            (json!({"kind": "echo", "then": {"kind": "echo"}}), "then"),
        ] {
            assert_eq!(
                parse_child(body.clone(), &policy, now).unwrap_err().field,
                field,
                "{body}"
            );
        }
    }

    #[test]
    fn batches_pass_the_batch_parser_and_the_rules_of_children() {
        let policy = policy(3);
        let now = Utc::now();
        let submit = parse_child_batch(
            json!({"jobs": [{"kind": "a"}, {"kind": "b", "tags": ["t"]}],
                   "then": {"kind": "sum"}, "then_policy": "all_finished"}),
            &policy,
            now,
        )
        .unwrap();
        assert_eq!(submit.jobs.len(), 2);
        let batch = submit.batch.unwrap();
        assert!(batch.parent.is_none(), "the store sets the parent");
        assert_eq!(batch.then.unwrap().run_if, jobs::RunIf::AllFinished);

        let stored = jobs::JobId::new().to_string();
        let four = json!([{"kind": "a"}, {"kind": "a"}, {"kind": "a"}, {"kind": "a"}]);
        for (body, field) in [
            (json!({"jobs": four}), "jobs"),
            (json!({"jobs": []}), "jobs"),
            (
                json!({"jobs": [{"kind": "a"}, {"kind": "Bad"}]}),
                "jobs[1].kind",
            ),
            (json!({"jobs": [{"kind": "a"}], "typo": 1}), "typo"),
            (
                json!({"jobs": [{"kind": "a"}], "idempotency_key": "k"}),
                "idempotency_key",
            ),
            (
                json!({"jobs": [{"kind": "a"}, {"kind": "a", "idempotency_key": "k"}]}),
                "jobs[1].idempotency_key",
            ),
            (
                json!({"jobs": [{"kind": "a", "after": [stored]}]}),
                "jobs[0].after",
            ),
            (
                json!({"jobs": [{"kind": "a"}, {"kind": "a"}, {"kind": "a", "machine": {"secrets": {"K": "v"}}}]}),
                "jobs[2].machine.secrets",
            ),
            (
                json!({"jobs": [{"kind": "a"}], "then": {"kind": "b", "after": [stored]}}),
                "then.after",
            ),
            (
                json!({"jobs": [{"kind": "a"}], "then": {"kind": "b", "machine": {"secrets": {"K": "v"}}}}),
                "then.machine.secrets",
            ),
            (
                json!({"jobs": [{"kind": "a", "then": {"kind": "b"}}]}),
                "jobs[0].then",
            ),
            (json!("not a batch"), "body"),
        ] {
            let error = parse_child_batch(body.clone(), &policy, now).unwrap_err();
            assert_eq!(error.field, field, "{body}: {}", error.message);
        }
    }

    #[test]
    fn the_policy_round_trips_through_json() {
        let policy = ChildPolicy {
            defaults: JobDefaults {
                allowed_images: vec!["registry.fly.io/ml:v1".into()],
                callback_targets: crate::engine::callback_targets::CallbackTargets::allowing([
                    "hooks.internal".to_string(),
                ]),
                ..JobDefaults::default()
            },
            max_batch_jobs: 500,
        };
        let text = serde_json::to_string(&policy).unwrap();
        let back: ChildPolicy = serde_json::from_str(&text).unwrap();
        assert_eq!(back.max_batch_jobs, 500);
        assert_eq!(back.defaults.allowed_images, policy.defaults.allowed_images);
        assert_eq!(
            back.defaults.callback_targets,
            policy.defaults.callback_targets
        );
        assert_eq!(back.defaults.regions, policy.defaults.regions);
        // A dispatcher from before batches published its defaults alone.
        let old = serde_json::to_string(&policy.defaults).unwrap();
        let back: ChildPolicy = serde_json::from_str(&old).unwrap();
        assert_eq!(back.max_batch_jobs, DEFAULT_MAX_BATCH_JOBS);
    }
}
