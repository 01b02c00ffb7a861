//! Change notifications. Every transition script publishes one JSON
//! message on the store's `events` channel; dispatchers use them to wake
//! launchers, finish attempts without polling, and answer long-polls.
//! Pub/sub is best effort: whoever acts on an event re-reads the record.

use serde::{Deserialize, Serialize};

use crate::model::{JobId, JobStatus};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The job's status changed to `status`.
    Status,
    /// The runner reported a result or an error for `attempt`.
    Report,
    /// The runner reported progress for `attempt`.
    Progress,
    /// Someone asked to cancel the job while it is on a machine.
    Cancel,
    /// A machine slot became free.
    Slot,
    /// A dispatcher handed an attempt back; a peer should take it over.
    Lease,
    /// A batch's counts changed (`id` is the batch's); without `status`,
    /// the batch completed.
    Batch,
    /// Never published by the store: a dispatcher's event hub hands it to
    /// every subscriber after it fell behind and dropped messages, so each
    /// re-reads from the store what it may have missed.
    Resync,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    pub id: JobId,
    #[serde(rename = "type")]
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

impl JobEvent {
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}
