//! Jobs that enqueue jobs: the child's request is the body of `POST /jobs`
//! and passes the same parser ([`crate::api::request::JobRequest`]) against the
//! same [`JobDefaults`] (allowed images, regions, env allow-list, caps),
//! so a child can ask for nothing a client could not.
//!
//! Runners reach only the job store, never the dispatcher's API. So each
//! dispatcher publishes its [`JobDefaults`] in the store when it starts
//! ([`publish_policy`]), and the runner parses a child's request with
//! [`parse_child`] against it before the fenced write
//! ([`jobs::Store::enqueue_child`]). During a deploy the last dispatcher
//! to start wins; every dispatcher of one app runs with the same flags.

use chrono::{DateTime, Utc};
use jobs::{EnqueueOptions, JobSpec, Store, StoreError};
use serde_json::Value;

use crate::api::request::{field_error, FieldError};
use crate::configuration::JobDefaults;

/// Stores this dispatcher's submission policy for runners to read.
pub async fn publish_policy(store: &Store, defaults: &JobDefaults) -> Result<(), StoreError> {
    store
        .set_child_policy(&serde_json::to_string(defaults)?)
        .await
}

/// The policy the dispatchers published; `None` before any did.
pub async fn load_policy(store: &Store) -> Result<Option<JobDefaults>, StoreError> {
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
    defaults: &JobDefaults,
    now: DateTime<Utc>,
) -> Result<(JobSpec, EnqueueOptions), FieldError> {
    let request = crate::api::request::job_request(request)?;
    if request.idempotency_key.is_some() {
        return Err(field_error(
            "idempotency_key",
            "a child is deduplicated by its key within its parent; leave idempotency_key out",
        ));
    }
    let submission = request.into_submission(defaults, now)?;
    if submission.fans_in() {
        let field = if submission.then.is_some() {
            "then"
        } else {
            "after"
        };
        return Err(field_error(
            field,
            "a child cannot wait for other jobs; enqueue it when they are done",
        ));
    }
    if !submission.secrets.is_empty() {
        // Secrets are stored apart with SET, which the runner's store user
        // (least privilege: deploy/valkey-users.acl) may not run.
        return Err(field_error(
            "machine.secrets",
            "a child cannot carry secrets; give them to the app's machines instead",
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn children_pass_the_submit_parser() {
        let defaults = JobDefaults::default();
        let now = Utc::now();
        let (spec, options) = parse_child(
            json!({"kind": "echo", "tags": ["batch-7"], "machine": {"memory_mb": 512}}),
            &defaults,
            now,
        )
        .unwrap();
        assert_eq!(spec.machine.memory_mb, 512);
        assert_eq!(options.run.tags[0].as_str(), "batch-7");
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
        ] {
            assert_eq!(
                parse_child(body.clone(), &defaults, now).unwrap_err().field,
                field,
                "{body}"
            );
        }
    }

    #[test]
    fn the_policy_round_trips_through_json() {
        let defaults = JobDefaults {
            allowed_images: vec!["registry.fly.io/ml:v1".into()],
            callback_targets: crate::engine::callback_targets::CallbackTargets::allowing([
                "hooks.internal".to_string(),
            ]),
            ..JobDefaults::default()
        };
        let text = serde_json::to_string(&defaults).unwrap();
        let back: JobDefaults = serde_json::from_str(&text).unwrap();
        assert_eq!(back.allowed_images, defaults.allowed_images);
        assert_eq!(back.callback_targets, defaults.callback_targets);
        assert_eq!(back.regions, defaults.regions);
    }
}
