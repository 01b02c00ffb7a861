//! Jobs that enqueue jobs: [`Context::enqueue`] and
//! [`Context::enqueue_keyed`].
//!
//! A child's request is the JSON body `POST /jobs` takes, validated by the
//! same parser against the policy the dispatchers publish
//! ([`dispatcher::api::children`]), then stored with a write fenced by this
//! attempt's token: once the attempt is no longer current (cancelled,
//! timed out, superseded), nothing is stored. Each child has a key unique
//! within its parent, given, or `#1`, `#2`, ... in the order of the
//! unkeyed calls; a retried attempt enqueuing the same children finds
//! those an earlier attempt stored instead of adding more.

use std::sync::atomic::Ordering;

use jobs::{ChildEnqueued, JobId, StoreError};
use serde_json::Value;

use crate::Context;

/// Why a child was not enqueued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The request is not one `POST /jobs` would take; `field` names the
    /// problem.
    #[error("invalid child job: {field}: {message}")]
    Invalid { field: String, message: String },
    /// This attempt is no longer current: it may enqueue nothing.
    #[error("the attempt is no longer current; no child was enqueued")]
    Stale,
    /// No dispatcher has published its submission policy yet.
    #[error("no dispatcher has published its submission policy to the store")]
    NoPolicy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EnqueueError {
    /// The field a refused request got wrong, for [`Self::Invalid`].
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// A child that is enqueued: its id, and whether an earlier attempt had
/// already enqueued it under the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Child {
    pub id: JobId,
    pub existing: bool,
}

impl Context {
    /// Enqueues a child job (`request` as `POST /jobs` takes it) under the
    /// key `#n`, `n` counting this attempt's unkeyed calls from 1: call in
    /// the same order on every attempt, or use
    /// [`Context::enqueue_keyed`].
    pub async fn enqueue(&self, request: Value) -> Result<Child, EnqueueError> {
        self.enqueue_in_order(request).await.1
    }

    /// [`Context::enqueue`], telling the key it used.
    pub(crate) async fn enqueue_in_order(
        &self,
        request: Value,
    ) -> (String, Result<Child, EnqueueError>) {
        let n = self.child_order.fetch_add(1, Ordering::SeqCst) + 1;
        let key = format!("#{n}");
        let enqueued = self.enqueue_keyed(&key, request).await;
        (key, enqueued)
    }

    /// Enqueues a child job under `key` (1 to 200 visible ASCII
    /// characters, unique within this job).
    pub async fn enqueue_keyed(&self, key: &str, request: Value) -> Result<Child, EnqueueError> {
        let invalid = |field: &str, message: String| EnqueueError::Invalid {
            field: field.to_string(),
            message,
        };
        let key = jobs::run_options::child_key(key).map_err(|e| invalid("key", e.0))?;
        let policy = dispatcher::api::children::load_policy(self.store())
            .await?
            .ok_or(EnqueueError::NoPolicy)?;
        let (spec, options) =
            dispatcher::api::children::parse_child(request, &policy, chrono::Utc::now())
                .map_err(|e| invalid(&e.field, e.message))?;
        let enqueued = self
            .store()
            .enqueue_child(self.attempt_ref(), &key, &spec, &options)
            .await?;
        match enqueued {
            ChildEnqueued::Created(job) => {
                tracing::info!(child = %job.id, %key, kind = %job.kind, "child enqueued");
                Ok(Child {
                    id: job.id,
                    existing: false,
                })
            }
            ChildEnqueued::Existing(id) => Ok(Child { id, existing: true }),
            ChildEnqueued::Stale => Err(EnqueueError::Stale),
            // Children take no idempotency key, so none can conflict.
            ChildEnqueued::Conflict(id) => Err(invalid(
                "idempotency_key",
                format!("already used by job {id}"),
            )),
        }
    }
}
