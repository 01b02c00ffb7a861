//! Fly's documented rate limits as token buckets.
//!
//! Limits apply per action and per key: the app for create and list, the
//! machine for everything else. Mutating actions get 1 request/s with bursts
//! of 3; reads (get, list, events, metadata, lease lookups) get 5/s with
//! bursts of 10, Fly's published "Get Machine" limit. `wait` is a long poll
//! that Fly recommends over polling, so it is not limited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::ApiError;

/// Whether an action reads or changes state; decides the bucket size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Read,
    Mutate,
}

impl ActionKind {
    /// (tokens per second, burst) before scaling.
    fn limits(self) -> (f64, f64) {
        match self {
            Self::Read => (5.0, 10.0),
            Self::Mutate => (1.0, 3.0),
        }
    }
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by (action name, app or machine id).
pub struct RateLimiter {
    enabled: bool,
    scale: f64,
    buckets: Mutex<HashMap<(&'static str, String), Bucket>>,
}

impl RateLimiter {
    pub fn new(enabled: bool, scale: f64) -> Self {
        Self {
            enabled,
            scale: if scale > 0.0 { scale } else { 1.0 },
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `action` on `key`, or says how long to wait.
    pub fn check(&self, action: &'static str, kind: ActionKind, key: &str) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let (rate, burst) = kind.limits();
        let (rate, burst) = (rate * self.scale, (burst * self.scale).max(1.0));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry((action, key.to_string())).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / rate;
            Err(ApiError::RateLimited {
                retry_after_secs: wait.ceil().max(1.0) as u64,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_burst_three_then_limit() {
        let limiter = RateLimiter::new(true, 1.0);
        for _ in 0..3 {
            limiter.check("create", ActionKind::Mutate, "app").unwrap();
        }
        let err = limiter
            .check("create", ActionKind::Mutate, "app")
            .unwrap_err();
        assert!(matches!(
            err,
            ApiError::RateLimited {
                retry_after_secs: 1
            }
        ));
        // Other keys and other actions have their own buckets.
        limiter
            .check("create", ActionKind::Mutate, "other")
            .unwrap();
        limiter.check("get", ActionKind::Read, "app").unwrap();
    }

    #[test]
    fn disabled_never_limits() {
        let limiter = RateLimiter::new(false, 1.0);
        for _ in 0..100 {
            limiter.check("create", ActionKind::Mutate, "app").unwrap();
        }
    }
}
