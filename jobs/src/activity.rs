//! What the last hours looked like, minute by minute, across dispatchers:
//! the dashboard's charts.
//!
//! ## Layout
//! One hash `minute:{minutes since the epoch}` per minute of the store's
//! clock, each expiring two hours after its last write
//! (`MINUTE_TTL_SECS` in `prelude.lua`), so at most ~121 exist whatever
//! the load. Its fields:
//!
//! | field | written by | what |
//! | --- | --- | --- |
//! | `started`, `succeeded`, `failed`, `cancelled` | claims, final transitions | counts ([`MinuteCounts`]) |
//! | `queue_max`, `in_flight_max` | every claim (each launcher claims at least once a second) | the highest queue depth and machines in flight sampled in the minute |
//! | `wait_le_<ms>`, `wait_le_inf` | claims | how many claims waited in the queue up to that long: a fixed histogram, not a list of samples |
//!
//! [`Store::activity`] reads them all in one script call.

use std::sync::LazyLock;

use fred::types::scripts::Script;
use serde::Deserialize;

use crate::store::{with_prelude, Result, Store};

/// How many minutes [`Store::activity`] can look back: the counters expire
/// after two hours (`MINUTE_TTL_SECS` in `prelude.lua`).
pub const ACTIVITY_MAX_MINUTES: u32 = 120;

static ACTIVITY: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/activity.lua")));

/// What happened in one minute of the store's clock, across dispatchers:
/// attempts started (claimed) and jobs that reached each final status.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct MinuteCounts {
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// How loaded one minute was: gauges sampled by claims, and the queue wait
/// of the attempts claimed in it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct MinuteLoad {
    /// The most jobs queued at once, as sampled. `None`: no dispatcher
    /// was running to sample it.
    #[serde(default)]
    pub queue_depth: Option<u64>,
    /// The most machines in flight at once, as sampled.
    #[serde(default)]
    pub in_flight: Option<u64>,
    /// Claims per queue-wait bucket: `queue_wait[i]` waited at most
    /// [`Activity::wait_bounds_ms`]`[i]`, the last one longer than all.
    pub queue_wait: Vec<u64>,
}

/// [`Store::activity`]: one [`MinuteCounts`] and one [`MinuteLoad`] per
/// minute, oldest first; the last is the current, partial minute.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Activity {
    /// The first minute's start, in minutes since the Unix epoch.
    pub first_minute: i64,
    pub minutes: Vec<MinuteCounts>,
    #[serde(default)]
    pub load: Vec<MinuteLoad>,
    /// The upper bounds of the queue-wait buckets, in milliseconds (the
    /// store's, so the two never disagree).
    #[serde(default)]
    pub wait_bounds_ms: Vec<u64>,
}

impl Activity {
    /// The `q` quantile (0 to 1) of a queue-wait histogram, in
    /// milliseconds: linear within the bucket it falls in, as Prometheus'
    /// `histogram_quantile` does. In the last, open bucket it is that
    /// bucket's lower bound (all that is known). `None` without claims.
    pub fn wait_quantile_ms(&self, histogram: &[u64], q: f64) -> Option<f64> {
        let total: u64 = histogram.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &count) in histogram.iter().enumerate() {
            let lower = if i == 0 {
                0.0
            } else {
                self.wait_bounds_ms.get(i - 1).copied().unwrap_or(0) as f64
            };
            if count > 0 && (below + count) as f64 >= rank {
                let Some(&upper) = self.wait_bounds_ms.get(i) else {
                    return Some(lower);
                };
                let within = (rank - below as f64) / count as f64;
                return Some(lower + (upper as f64 - lower) * within);
            }
            below += count;
        }
        None
    }

    /// Every minute's queue-wait histogram added up: the whole window's.
    pub fn total_queue_wait(&self) -> Vec<u64> {
        let mut total = vec![0; self.wait_bounds_ms.len() + 1];
        for minute in &self.load {
            for (sum, count) in total.iter_mut().zip(&minute.queue_wait) {
                *sum += count;
            }
        }
        total
    }
}

impl Store {
    /// The last `minutes` minutes' counters and samples (1 to
    /// [`ACTIVITY_MAX_MINUTES`], clamped), in one round trip: the
    /// dashboard's charts.
    pub async fn activity(&self, minutes: u32) -> Result<Activity> {
        let minutes = minutes.clamp(1, ACTIVITY_MAX_MINUTES);
        let text: String = self.run(&ACTIVITY, vec![minutes.to_string()]).await?;
        Ok(serde_json::from_str(&text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity() -> Activity {
        Activity {
            wait_bounds_ms: vec![100, 1000, 10_000],
            ..Activity::default()
        }
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let a = activity();
        // 10 claims: 4 within 100 ms, 4 within 1 s, 2 within 10 s.
        let h = [4, 4, 2, 0];
        assert_eq!(a.wait_quantile_ms(&h, 0.2), Some(50.0));
        assert_eq!(a.wait_quantile_ms(&h, 0.5), Some(100.0 + 900.0 * 0.25));
        assert_eq!(a.wait_quantile_ms(&h, 0.95), Some(1000.0 + 9000.0 * 0.75));
        assert_eq!(a.wait_quantile_ms(&h, 1.0), Some(10_000.0));
        assert_eq!(a.wait_quantile_ms(&[0, 0, 0, 0], 0.5), None);
        assert_eq!(a.wait_quantile_ms(&[], 0.5), None);
    }

    #[test]
    fn the_open_bucket_gives_its_lower_bound() {
        let a = activity();
        assert_eq!(a.wait_quantile_ms(&[0, 0, 1, 3], 0.95), Some(10_000.0));
        // Empty buckets in between are skipped, not interpolated into.
        assert_eq!(a.wait_quantile_ms(&[1, 0, 0, 1], 0.5), Some(100.0));
    }

    #[test]
    fn histograms_add_up_over_the_window() {
        let mut a = activity();
        a.load = vec![
            MinuteLoad {
                queue_wait: vec![1, 0, 2, 0],
                ..MinuteLoad::default()
            },
            MinuteLoad {
                queue_wait: vec![0, 1, 1, 5],
                ..MinuteLoad::default()
            },
        ];
        assert_eq!(a.total_queue_wait(), vec![1, 1, 3, 5]);
    }
}
