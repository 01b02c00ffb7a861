//! Recurring schedules in the store: a template job fired on a cron
//! expression or every N seconds.
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `schedules` | hash | schedule id → its definition (JSON) |
//! | `schedules_due` | zset | schedule id, scored by its next tick (ms) |
//! | `schedule_runs` | hash | schedule id → `{last job id} {tick ms}` |
//!
//! Every dispatcher fires due ticks. Exactly one job per tick comes from
//! two guards: the job is enqueued under the idempotency key
//! `schedule:{id}:{tick}`, and the tick advances by compare-and-set.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fred::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::model::{millis_to_time, JobId};
use crate::store::{Result, Store};

/// A schedule as stored and shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Schedule {
    pub id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_secs: Option<u64>,
    /// The body of the `POST /jobs` each tick submits.
    #[schema(value_type = Object)]
    pub job: Value,
    pub created_at: DateTime<Utc>,
    /// Filled in when read: when the next tick is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<DateTime<Utc>>,
    /// Filled in when read: the last job a tick submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job_id: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Stores a schedule whose first tick is at `first_ms`, unless the
    /// store holds `max` schedules already (then `false`).
    pub async fn create_schedule(
        &self,
        schedule: &Schedule,
        first_ms: i64,
        max: u64,
    ) -> Result<bool> {
        let args = vec![
            schedule.id.to_string(),
            serde_json::to_string(schedule)?,
            first_ms.to_string(),
            max.to_string(),
        ];
        let created: i64 = self.run(&self.scripts.create_schedule, args).await?;
        crate::store::yes_or_no("create_schedule", created)
    }

    pub async fn get_schedule(&self, id: Uuid) -> Result<Option<Schedule>> {
        let definition: Option<String> = self
            .client
            .hget(self.key("schedules"), id.to_string())
            .await?;
        match definition {
            Some(text) => Ok(Some(self.with_runs(serde_json::from_str(&text)?).await?)),
            None => Ok(None),
        }
    }

    /// All schedules, oldest first.
    pub async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        let all: BTreeMap<String, String> = self.client.hgetall(self.key("schedules")).await?;
        let mut schedules = Vec::with_capacity(all.len());
        for text in all.values() {
            schedules.push(self.with_runs(serde_json::from_str(text)?).await?);
        }
        schedules.sort_by_key(|s| s.id);
        Ok(schedules)
    }

    /// Removes a schedule; `false` when there was none. Jobs it already
    /// submitted are not touched.
    pub async fn delete_schedule(&self, id: Uuid) -> Result<bool> {
        let pipeline = self.client.pipeline();
        let _: () = pipeline.hdel(self.key("schedules"), id.to_string()).await?;
        let _: () = pipeline
            .zrem(self.key("schedules_due"), id.to_string())
            .await?;
        let _: () = pipeline
            .hdel(self.key("schedule_runs"), id.to_string())
            .await?;
        let (removed, _, _): (i64, i64, i64) = pipeline.all().await?;
        Ok(removed == 1)
    }

    /// Schedules whose tick is due by `now_ms`, with that tick.
    pub async fn due_schedules(&self, now_ms: i64, limit: usize) -> Result<Vec<(Schedule, i64)>> {
        let due: Vec<(String, f64)> = self
            .client
            .zrangebyscore(
                self.key("schedules_due"),
                "-inf",
                now_ms,
                true,
                Some((0, limit as i64)),
            )
            .await?;
        let mut out = Vec::with_capacity(due.len());
        for (id, tick) in due {
            let definition: Option<String> = self.client.hget(self.key("schedules"), &id).await?;
            if let Some(text) = definition {
                out.push((serde_json::from_str(&text)?, tick as i64));
            }
        }
        Ok(out)
    }

    /// The earliest next tick of any schedule (ms), to sleep until it.
    pub async fn next_schedule_tick(&self) -> Result<Option<i64>> {
        let first: Vec<(String, f64)> = self
            .client
            .zrange(self.key("schedules_due"), 0, 0, None, false, None, true)
            .await?;
        Ok(first.first().map(|(_, tick)| *tick as i64))
    }

    /// Moves a schedule from `tick` to `next`, unless someone already did.
    pub async fn advance_schedule(
        &self,
        id: Uuid,
        tick: i64,
        next: i64,
        job: JobId,
    ) -> Result<bool> {
        let args = vec![
            id.to_string(),
            tick.to_string(),
            next.to_string(),
            job.to_string(),
        ];
        let advanced: i64 = self.run(&self.scripts.advance_schedule, args).await?;
        crate::store::yes_or_no("advance_schedule", advanced)
    }

    async fn with_runs(&self, mut schedule: Schedule) -> Result<Schedule> {
        let id = schedule.id.to_string();
        let next: Option<f64> = self.client.zscore(self.key("schedules_due"), &id).await?;
        let runs: Option<String> = self.client.hget(self.key("schedule_runs"), &id).await?;
        schedule.next_run_at = next.map(|ms| millis_to_time(ms as i64));
        if let Some((job, tick)) = runs.as_deref().and_then(|r| r.split_once(' ')) {
            schedule.last_job_id = job.parse().ok();
            schedule.last_run_at = tick.parse().ok().map(millis_to_time);
        }
        Ok(schedule)
    }
}
