//! The wait before a job's next attempt: exponential, capped, with full
//! jitter (a uniform draw between zero and the capped exponential delay),
//! so retries of many jobs failing together spread out.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use jobs::Backoff;
use rand::Rng;

/// Delay before attempt `failed_attempts + 1`, after `failed_attempts`
/// failures (1 for the first retry).
pub fn delay(backoff: &Backoff, failed_attempts: u32) -> Duration {
    let capped = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(backoff.base_ms))
        .with_max_delay(Duration::from_millis(backoff.max_ms.max(backoff.base_ms)))
        .with_max_times(failed_attempts.max(1) as usize)
        .build()
        .last()
        .unwrap_or_default();
    if backoff.jitter {
        let ms = capped.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=ms))
    } else {
        capped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let backoff = Backoff {
            base_ms: 100,
            max_ms: 1_000,
            jitter: false,
        };
        let delays: Vec<u64> = (1..=6)
            .map(|n| delay(&backoff, n).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn full_jitter_stays_between_zero_and_the_capped_delay() {
        let backoff = Backoff {
            base_ms: 100,
            max_ms: 1_000,
            jitter: true,
        };
        let draws: Vec<u64> = (0..200)
            .map(|_| delay(&backoff, 3).as_millis() as u64)
            .collect();
        assert!(draws.iter().all(|&d| d <= 400), "{draws:?}");
        // 200 draws from 0..=400 are not all the same value.
        assert!(draws.iter().any(|&d| d != draws[0]));
    }
}
