//! Jobs that enqueue jobs: [`Context::enqueue`] and
//! [`Context::enqueue_keyed`] for one child, [`Context::enqueue_batch`]
//! and [`Context::enqueue_batch_keyed`] for a batch.
//!
//! A child's request is the JSON body `POST /jobs` takes, a batch's the
//! body `POST /batches` takes, each validated by the route's own parser
//! against the policy the dispatchers publish
//! ([`dispatcher::api::children`]), then stored with a write fenced by this
//! attempt's token: once the attempt is no longer current (cancelled,
//! timed out, superseded), nothing is stored. Each child, and each batch,
//! has a key unique within its parent, given, or `#1`, `#2`, ... in the
//! order of the unkeyed calls (children and batches are counted and keyed
//! apart); a retried attempt enqueuing the same children or batches finds
//! those an earlier attempt stored instead of adding more.

use std::sync::atomic::{AtomicU32, Ordering};

use dispatcher::api::children::ChildPolicy;
use jobs::{BatchId, ChildBatchEnqueued, ChildEnqueued, JobId, StoreError};
use serde_json::Value;

use crate::Context;

/// Why a child or a batch was not enqueued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The request is not one `POST /jobs` (for a batch, `POST /batches`)
    /// would take; `field` names the problem (`jobs[3].kind` in a batch).
    #[error("invalid child job: {field}: {message}")]
    Invalid { field: String, message: String },
    /// This attempt is no longer current: it may enqueue nothing.
    #[error("the attempt is no longer current; nothing was enqueued")]
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

    fn invalid(field: &str, message: String) -> Self {
        Self::Invalid {
            field: field.to_string(),
            message,
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

/// A batch that is enqueued: its id, and whether an earlier attempt had
/// already enqueued it under the same key (then nothing new was stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildBatch {
    pub id: BatchId,
    pub existing: bool,
}

/// The key of the next unkeyed call counted by `order`: `#1`, `#2`, ...
fn next_key(order: &AtomicU32) -> String {
    format!("#{}", order.fetch_add(1, Ordering::SeqCst) + 1)
}

impl Context {
    /// Enqueues a child job (`request` as `POST /jobs` takes it) under the
    /// key `#n`, `n` counting this attempt's unkeyed children from 1: call
    /// in the same order on every attempt, or use
    /// [`Context::enqueue_keyed`].
    pub async fn enqueue(&self, request: Value) -> Result<Child, EnqueueError> {
        self.enqueue_keyed(&self.next_child_key(), request).await
    }

    /// The key [`Context::enqueue`] gives its next child.
    pub(crate) fn next_child_key(&self) -> String {
        next_key(&self.child_order)
    }

    /// Enqueues a child job under `key` (1 to 200 visible ASCII
    /// characters, unique among this job's children).
    pub async fn enqueue_keyed(&self, key: &str, request: Value) -> Result<Child, EnqueueError> {
        let (key, policy) = self.key_and_policy(key).await?;
        let (spec, options) =
            dispatcher::api::children::parse_child(request, &policy, chrono::Utc::now())
                .map_err(|e| EnqueueError::invalid(&e.field, e.message))?;
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
            ChildEnqueued::Conflict(id) => Err(EnqueueError::invalid(
                "idempotency_key",
                format!("already used by job {id}"),
            )),
        }
    }

    /// Enqueues a batch (`request` as `POST /batches` takes it: `jobs`,
    /// and optionally `then`, `then_policy`, `callback_url`) under the key
    /// `#n`, `n` counting this attempt's unkeyed batches from 1: call in
    /// the same order on every attempt, or use
    /// [`Context::enqueue_batch_keyed`]. The batch, its members and its
    /// `then` job record this job as their parent.
    pub async fn enqueue_batch(&self, request: Value) -> Result<ChildBatch, EnqueueError> {
        self.enqueue_batch_keyed(&self.next_batch_key(), request)
            .await
    }

    /// The key [`Context::enqueue_batch`] gives its next batch.
    pub(crate) fn next_batch_key(&self) -> String {
        next_key(&self.batch_order)
    }

    /// Enqueues a batch under `key` (1 to 200 visible ASCII characters,
    /// unique among this job's batches). All of it is stored, or nothing.
    pub async fn enqueue_batch_keyed(
        &self,
        key: &str,
        request: Value,
    ) -> Result<ChildBatch, EnqueueError> {
        let (key, policy) = self.key_and_policy(key).await?;
        let submit =
            dispatcher::api::children::parse_child_batch(request, &policy, chrono::Utc::now())
                .map_err(|e| EnqueueError::invalid(&e.field, e.message))?;
        let members = submit.jobs.len();
        let enqueued = self
            .store()
            .enqueue_child_batch(self.attempt_ref(), &key, submit)
            .await?;
        match enqueued {
            ChildBatchEnqueued::Created { batch, .. } => {
                tracing::info!(%batch, %key, members, "batch enqueued");
                Ok(ChildBatch {
                    id: batch,
                    existing: false,
                })
            }
            ChildBatchEnqueued::Existing(id) => Ok(ChildBatch { id, existing: true }),
            ChildBatchEnqueued::Stale => Err(EnqueueError::Stale),
        }
    }

    /// `key` checked, and the policy requests are validated against.
    async fn key_and_policy(&self, key: &str) -> Result<(String, ChildPolicy), EnqueueError> {
        let key =
            jobs::run_options::child_key(key).map_err(|e| EnqueueError::invalid("key", e.0))?;
        let policy = dispatcher::api::children::load_policy(self.store())
            .await?
            .ok_or(EnqueueError::NoPolicy)?;
        Ok((key, policy))
    }
}
