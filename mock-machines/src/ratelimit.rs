//! Fly's published rate limits as token buckets.
//!
//! Fly's docs (`machines/api/working-with-machines-api`, superfly/docs PRs
//! #1630 and #1966) give every action 1 request/s with bursts of 3, except
//! Get Machine: 5/s with bursts of 10. Limits apply per action and per key:
//! the app for create and list, the machine for everything else.
//!
//! Where the docs are silent the mock picks the stricter reading, so code
//! that passes here does not meet 429s on Fly:
//! - Every read other than Get Machine (list, events, versions, metadata,
//!   lease lookups, ps) is "an action" and gets 1/s, burst 3.
//! - `wait` is counted as its own action (1/s, burst 3 per machine):
//!   whether Fly limits it is unverified. A long poll of up to 60 s uses
//!   little of that budget; polling with short timeouts is refused.
//! - `uncordon` shares `cordon`'s bucket (one action in Fly's list).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Gcra};

use crate::error::ApiError;

/// The action Fly names "Get Machine", the one with a larger budget.
const GET_MACHINE: &str = "get";

/// (tokens per second, burst) of `action`, before scaling.
fn limits(action: &str) -> (f64, f64) {
    if action == GET_MACHINE {
        (5.0, 10.0)
    } else {
        (1.0, 3.0)
    }
}

/// Keyed by (action name, app or machine id): `governor`'s GCRA, the
/// token bucket the dispatcher's own rate limits use. On the std
/// monotonic clock, the one the dispatcher's pacing (`machines::pacing`)
/// measures its waits with: governor's default TSC clock can run a hair
/// slow against it, and a client pacing exactly at the refill time would
/// then draw 429s.
type Key = (&'static str, String);
type Buckets =
    Gcra<Key, DefaultKeyedStateStore<Key>, MonotonicClock, NoOpMiddleware<std::time::Instant>>;

/// Token buckets per action and key; `None` when limits are off.
pub struct RateLimiter {
    /// Get Machine's budget, then every other action's.
    buckets: Option<(Buckets, Buckets)>,
}

impl RateLimiter {
    /// `scale` multiplies every rate and burst (a burst is at least 1).
    pub fn new(enabled: bool, scale: f64) -> Self {
        let scale = if scale > 0.0 { scale } else { 1.0 };
        let buckets = |action: &str| {
            let (rate, burst) = limits(action);
            let burst =
                NonZeroU32::new((burst * scale).round().max(1.0) as u32).expect("at least 1");
            let period = Duration::from_secs_f64(1.0 / (rate * scale));
            Buckets::new(
                Quota::with_period(period)
                    .expect("a positive period")
                    .allow_burst(burst),
                DefaultKeyedStateStore::default(),
                MonotonicClock,
            )
        };
        Self {
            buckets: enabled.then(|| (buckets(GET_MACHINE), buckets("create"))),
        }
    }

    /// Takes a token for `action` on `key`, or says how long to wait.
    pub fn check(&self, action: &'static str, key: &str) -> Result<(), ApiError> {
        let Some((get, other)) = &self.buckets else {
            return Ok(());
        };
        let buckets = if action == GET_MACHINE { get } else { other };
        buckets
            .check_key(&(action, key.to_string()))
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(MonotonicClock.now());
                ApiError::RateLimited {
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes tokens until refused; returns how many were granted.
    fn burst(limiter: &RateLimiter, action: &'static str, key: &str) -> usize {
        (0..100)
            .take_while(|_| limiter.check(action, key).is_ok())
            .count()
    }

    #[test]
    fn every_action_bursts_three_but_get_machine_ten() {
        let limiter = RateLimiter::new(true, 1.0);
        for action in ["create", "list", "events", "wait", "get_lease", "ps"] {
            assert_eq!(burst(&limiter, action, "key"), 3, "{action}");
        }
        assert_eq!(burst(&limiter, "get", "key"), 10);
        let err = limiter.check("create", "key").unwrap_err();
        assert!(matches!(
            err,
            ApiError::RateLimited {
                retry_after_secs: 1
            }
        ));
        // Other keys have their own buckets.
        limiter.check("create", "other").unwrap();
    }

    #[test]
    fn disabled_never_limits() {
        let limiter = RateLimiter::new(false, 1.0);
        assert_eq!(burst(&limiter, "create", "app"), 100);
    }
}
