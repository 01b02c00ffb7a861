//! How [`ListFilter`] picks the index a listing reads, and which of its
//! jobs it keeps.

use crate::model::Job;
use crate::store::ListFilter;

impl ListFilter {
    /// The one sorted set to page through: a batch's members (all, or in
    /// `status`), else the children of `parent`, else the jobs with `tag`,
    /// else the status and kind indexes. Whatever the index does not
    /// narrow, [`ListFilter::matches`] does.
    pub(crate) fn index(&self, prefix: &str) -> String {
        if let Some(batch) = self.batch {
            return crate::fan_in::batch_index(prefix, batch, self.status);
        }
        match (&self.parent, &self.tag, &self.status, &self.kind) {
            (Some(parent), ..) => format!("{prefix}children:{parent}"),
            (None, Some(tag), ..) => format!("{prefix}tag:{tag}"),
            (None, None, None, None) => format!("{prefix}jobs"),
            (None, None, Some(status), None) => format!("{prefix}status:{status}"),
            (None, None, None, Some(kind)) => format!("{prefix}kind:{kind}"),
            (None, None, Some(status), Some(kind)) => format!("{prefix}status:{status}:{kind}"),
        }
    }

    /// Whether `job` passes every filter.
    pub fn matches(&self, job: &Job) -> bool {
        self.status.is_none_or(|s| s == job.status)
            && self.kind.as_ref().is_none_or(|k| *k == job.kind)
            && self.tag.as_ref().is_none_or(|t| job.tags.contains(t))
            && self.parent.is_none_or(|p| job.parent == Some(p))
            && self.batch.is_none_or(|b| job.batch_id == Some(b))
    }
}
