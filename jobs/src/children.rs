//! Jobs that enqueue jobs: [`Store::enqueue_child`] and
//! [`Store::enqueue_child_batch`].
//!
//! A running attempt enqueues a child under a key unique within its
//! parent. The write is fenced by the parent's attempt (number and token):
//! a zombie attempt, superseded or finished, stores nothing. The key makes
//! it idempotent: a parent that crashed after enqueuing half its children
//! and is retried enqueues them all again and finds the first half, so it
//! ends with exactly one child per key. The child is validated before it
//! gets here, by the same parser as `POST /jobs`.
//!
//! A batch is enqueued the same way, under a key of its own (batch keys
//! and child keys are apart): one `submit.lua` call stores the batch, its
//! members and its `then` job, each recording the parent, after the same
//! fence (`child_fence.lua`) passed.

use crate::fan_in::{BatchId, BatchParent, Submit, Submitted};
use crate::model::{InvalidValue, Job, JobId, JobSpec};
use crate::store::{enqueue_args, enqueued, EnqueueAnswer, EnqueueOptions, Enqueued, Store};
use crate::store::{Result, StoreError};
use crate::{AttemptRef, ChildOf};

/// What [`Store::enqueue_child`] did.
#[derive(Debug)]
pub enum ChildEnqueued {
    Created(Box<Job>),
    /// The parent already has a child under this key.
    Existing(JobId),
    /// The parent's attempt is no longer current: nothing was stored.
    Stale,
    /// The child's idempotency key was used by job `id` for another
    /// request: nothing was stored.
    Conflict(JobId),
}

impl ChildEnqueued {
    /// The child's id, unless nothing was stored.
    pub fn id(&self) -> Option<JobId> {
        match self {
            Self::Created(job) => Some(job.id),
            Self::Existing(id) => Some(*id),
            Self::Stale | Self::Conflict(_) => None,
        }
    }
}

/// What [`Store::enqueue_child_batch`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum ChildBatchEnqueued {
    /// Stored: the batch, and its members' ids in order.
    Created { batch: BatchId, jobs: Vec<JobId> },
    /// The parent already enqueued a batch under this key.
    Existing(BatchId),
    /// The parent's attempt is no longer current: nothing was stored.
    Stale,
}

/// The key holding the dispatchers' submission policy (JSON), which
/// runners validate children against.
const POLICY_KEY: &str = "child_policy";

impl Store {
    /// Publishes the submission policy children are validated against.
    pub async fn set_child_policy(&self, policy: &str) -> Result<()> {
        use fred::interfaces::KeysInterface;
        let _: () = self
            .client
            .set(self.key(POLICY_KEY), policy, None, None, false)
            .await?;
        Ok(())
    }

    /// The published submission policy, if a dispatcher published one.
    pub async fn child_policy(&self) -> Result<Option<String>> {
        use fred::interfaces::KeysInterface;
        Ok(self.client.get(self.key(POLICY_KEY)).await?)
    }

    /// Stores `spec` as a child of the job `parent` is an attempt of,
    /// under `key`. `options.run.child_of` is set here; its idempotency
    /// key, if any, still applies.
    pub async fn enqueue_child(
        &self,
        parent: &AttemptRef,
        key: &str,
        spec: &JobSpec,
        options: &EnqueueOptions,
    ) -> Result<ChildEnqueued> {
        #[derive(serde::Serialize)]
        struct Fence<'a> {
            attempt: u32,
            token: &'a str,
        }
        let mut options = options.clone();
        options.run.child_of = Some(ChildOf {
            parent: parent.job_id,
            key: key.to_string(),
        });
        let mut args = enqueue_args(JobId::new(), spec, &options)?;
        args.push(serde_json::to_string(&Fence {
            attempt: parent.attempt,
            token: &parent.token,
        })?);
        let text: String = self.run(&self.scripts.enqueue_child, args).await?;
        Ok(match enqueued(&text)? {
            EnqueueAnswer::Stale => ChildEnqueued::Stale,
            EnqueueAnswer::Stored(Enqueued::Created(job)) => ChildEnqueued::Created(job),
            EnqueueAnswer::Stored(Enqueued::Existing(id)) => ChildEnqueued::Existing(id),
            // Its singleton key's waiting job took it: that job is the child's.
            EnqueueAnswer::Stored(Enqueued::Joined(job)) => ChildEnqueued::Existing(job.id),
            EnqueueAnswer::Stored(Enqueued::Conflict(id)) => ChildEnqueued::Conflict(id),
        })
    }

    /// Stores the batch `submit` carries as enqueued by the job `parent`
    /// is an attempt of, under `key`. The batch carries no idempotency
    /// key, and neither its members nor its `then` job wait for other
    /// jobs (the parser refuses them): the key and the fence are all that
    /// can stop it.
    pub async fn enqueue_child_batch(
        &self,
        parent: &AttemptRef,
        key: &str,
        mut submit: Submit,
    ) -> Result<ChildBatchEnqueued> {
        let batch = submit.batch.as_mut().ok_or_else(|| {
            StoreError::Corrupt(InvalidValue("a child batch without its batch".into()))
        })?;
        batch.parent = Some(BatchParent {
            attempt: parent.clone(),
            key: key.to_string(),
        });
        let id = batch.id;
        Ok(match self.submit(&submit).await? {
            Submitted::Stored { ids, .. } => ChildBatchEnqueued::Created {
                batch: id,
                jobs: ids,
            },
            Submitted::BatchExisting(id) => ChildBatchEnqueued::Existing(id),
            Submitted::Stale => ChildBatchEnqueued::Stale,
            other => {
                return Err(StoreError::Corrupt(InvalidValue(format!(
                    "unexpected answer to a child batch: {other:?}"
                ))))
            }
        })
    }
}
