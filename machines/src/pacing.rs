//! Client-side pacing at Fly's published rate limits, so a burst of work
//! waits its turn here instead of drawing 429s from the API.
//!
//! Fly limits every action to 1 request/s with bursts of 3 (list, events
//! and `wait` included), except Get Machine (5/s, burst 10), keyed by the
//! machine id, or by the app for create and list. The [`Pacer`] keeps one
//! token bucket per (action, key) in the same shape.
//!
//! The buckets are reservations: a caller takes a token at once, even one
//! not yet refilled, and sleeps until its turn. Concurrent callers thus
//! queue in arrival order and never retry against each other. Creates and
//! lists draw on one budget per app shared by every dispatcher: a [`SharedBudget`]
//! (the job store's token bucket, in the dispatcher) reserves there, so two
//! dispatchers together stay under the app's create limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

/// A token bucket's refill rate and size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
}

/// The limits to pace at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Create, start, stop, destroy, signal, ...
    pub mutate: Rate,
    /// Get, list, events.
    pub read: Rate,
}

/// Tokens of Fly's burst the pacer leaves unused. Paced exactly at the
/// limit, Fly's bucket runs empty, and then a request delayed on its way
/// (a busy host, a slow connection) followed by one on time arrive closer
/// than the refill interval: Fly refuses the second. One spare token
/// absorbs up to a refill interval of such jitter and costs nothing once
/// the burst is spent (the rate is Fly's own).
const HEADROOM: f64 = 1.0;

impl Limits {
    /// Fly's published numbers, times `scale` (2.0 = twice as permissive),
    /// with [`HEADROOM`] kept out of each burst.
    pub fn fly(scale: f64) -> Self {
        let scale = if scale > 0.0 { scale } else { 1.0 };
        let burst = |fly: f64| (fly * scale - HEADROOM).max(1.0);
        Self {
            mutate: Rate {
                per_sec: scale,
                burst: burst(3.0),
            },
            read: Rate {
                per_sec: 5.0 * scale,
                burst: burst(10.0),
            },
        }
    }
}

/// A budget several clients share (the per-app create budget).
pub trait SharedBudget: Send + Sync {
    /// Reserves one token of bucket `key`; resolves to how long the caller
    /// must wait before using it. An error in the budget's own storage
    /// should resolve to zero: pacing is a courtesy, the API still limits.
    fn reserve(&self, key: String, rate: Rate) -> BoxFuture<'static, Duration>;
}

/// An action's rate class: Get Machine's (`Read`), or every other
/// action's (`Mutate`, list and `wait` included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionKind {
    Read,
    Mutate,
}

struct Bucket {
    /// May go negative: tokens reserved ahead of their refill.
    tokens: f64,
    updated: Instant,
}

/// Buckets beyond which full ones (idle for a while) are dropped.
const PRUNE_ABOVE: usize = 4096;

/// Token buckets per (action, key).
pub struct Pacer {
    limits: Limits,
    buckets: Mutex<HashMap<(&'static str, String), Bucket>>,
    shared: Option<Arc<dyn SharedBudget>>,
}

impl Pacer {
    pub fn new(limits: Limits, shared: Option<Arc<dyn SharedBudget>>) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
            shared,
        }
    }

    /// Waits until `action` on `key` (a machine id, or the app) may go.
    pub async fn pace(&self, action: &'static str, kind: ActionKind, key: &str) {
        let rate = match kind {
            ActionKind::Read => self.limits.read,
            ActionKind::Mutate => self.limits.mutate,
        };
        // The app-wide actions draw on budgets every dispatcher shares.
        let wait = match (&self.shared, action) {
            (Some(shared), "create" | "list") => {
                shared.reserve(format!("{action}:{key}"), rate).await
            }
            _ => self.reserve_local(action, key, rate),
        };
        if !wait.is_zero() {
            crate::metrics::record_pacing(action, wait);
            tokio::time::sleep(wait).await;
        }
    }

    fn reserve_local(&self, action: &'static str, key: &str, rate: Rate) -> Duration {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate.per_sec < rate.burst
            });
        }
        let bucket = buckets.entry((action, key.to_string())).or_insert(Bucket {
            tokens: rate.burst,
            updated: now,
        });
        take(bucket, rate, now)
    }
}

/// Refills `bucket` to `now`, takes a token and says how long until it
/// is really there.
fn take(bucket: &mut Bucket, rate: Rate, now: Instant) -> Duration {
    let elapsed = now.duration_since(bucket.updated).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * rate.per_sec).min(rate.burst) - 1.0;
    bucket.updated = now;
    if bucket.tokens >= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(-bucket.tokens / rate.per_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_callers_queue_one_refill_apart() {
        let rate = Rate {
            per_sec: 1.0,
            burst: 3.0,
        };
        let now = Instant::now();
        let mut bucket = Bucket {
            tokens: rate.burst,
            updated: now,
        };
        let waits: Vec<u64> = (0..5)
            .map(|_| take(&mut bucket, rate, now).as_millis() as u64)
            .collect();
        assert_eq!(waits, [0, 0, 0, 1000, 2000]);
        // Three seconds later the queue has drained and one token is back.
        let later = now + Duration::from_secs(3);
        assert_eq!(take(&mut bucket, rate, later), Duration::ZERO);
    }
}
