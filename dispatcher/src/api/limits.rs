//! [`Limits`]: what one client may hold or ask for, counted in this
//! dispatcher's memory (each dispatcher enforces its own share; Fly's
//! proxy spreads clients over them).
//!
//! - A per-token request rate ([`governor`]'s token bucket, keyed by the
//!   token's position in the configured list): `429` + `Retry-After`.
//! - Login attempts per client address, so guessing tokens through the
//!   form is slow: `429` + `Retry-After`.
//! - [`Slots`] for event streams and long-polls, per token and in all:
//!   a token over its share gets `429`, a full dispatcher `503`, both
//!   with `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::api::auth::Caller;
use crate::api::routes::ApiError;
use crate::configuration::HttpLimits;

/// Login limiter entries kept before idle ones are forgotten.
const LOGIN_KEYS_KEPT: usize = 10_000;

/// A full stream or long-poll table frees up as clients leave; this is
/// how long a client is told to wait.
const SLOTS_RETRY_AFTER: Duration = Duration::from_secs(5);

pub struct Limits {
    requests: Option<DefaultKeyedRateLimiter<usize>>,
    logins: DefaultKeyedRateLimiter<IpAddr>,
    pub streams: Arc<Slots>,
    pub long_polls: Arc<Slots>,
}

impl Limits {
    pub fn new(limits: &HttpLimits) -> Self {
        let requests = NonZeroU32::new(limits.rate_per_sec).map(|rate| {
            let burst = NonZeroU32::new(limits.rate_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let attempts = NonZeroU32::new(limits.login_attempts_per_min).unwrap_or(NonZeroU32::MIN);
        Self {
            requests,
            logins: RateLimiter::keyed(Quota::per_minute(attempts)),
            streams: Arc::new(Slots::new(
                "event streams",
                limits.max_streams,
                limits.max_streams_per_token,
            )),
            long_polls: Arc::new(Slots::new(
                "long-polls",
                limits.max_long_polls,
                limits.max_long_polls_per_token,
            )),
        }
    }

    /// Counts one request of `caller` against its rate. Only tokens are
    /// limited: without tokens the API is on loopback (dev).
    pub fn admit(&self, caller: Caller) -> Result<(), Refusal> {
        let (Some(limiter), Caller::Token(index)) = (&self.requests, caller) else {
            return Ok(());
        };
        limiter.check_key(&index).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests with this token; slow down".into(),
                wait,
            )
        })
    }

    /// Counts one login attempt from `client`.
    pub fn admit_login(&self, client: IpAddr) -> Result<(), Refusal> {
        if self.logins.len() > LOGIN_KEYS_KEPT {
            self.logins.retain_recent();
        }
        self.logins.check_key(&client).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "too many login attempts from this address; wait before trying again".into(),
                wait,
            )
        })
    }
}

/// A request turned away until later: a JSON error with `Retry-After`.
#[derive(Debug)]
pub struct Refusal {
    error: ApiError,
    retry_after: Duration,
}

fn refuse(status: StatusCode, message: String, retry_after: Duration) -> Refusal {
    Refusal {
        error: ApiError::new(status, message),
        retry_after,
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        // Whole seconds, rounded up, at least 1.
        let wait = self.retry_after;
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        response
    }
}

/// A bounded number of long-lived requests of one sort.
pub struct Slots {
    what: &'static str,
    total: usize,
    per_caller: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_caller: HashMap<Caller, usize>,
}

/// One slot, given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    caller: Caller,
}

impl Slots {
    pub fn new(what: &'static str, total: usize, per_caller: usize) -> Self {
        Self {
            what,
            total,
            per_caller,
            held: Mutex::default(),
        }
    }

    pub fn acquire(self: &Arc<Self>, caller: Caller) -> Result<Slot, Refusal> {
        let mut held = self.held.lock().expect("slots lock");
        let mine = held.by_caller.get(&caller).copied().unwrap_or(0);
        if mine >= self.per_caller {
            return Err(refuse(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this token already holds {mine} open {}, the most allowed; close one first",
                    self.what
                ),
                SLOTS_RETRY_AFTER,
            ));
        }
        if held.total >= self.total {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this dispatcher holds {} open {}, its most; try again shortly",
                    held.total, self.what
                ),
                SLOTS_RETRY_AFTER,
            ));
        }
        held.total += 1;
        *held.by_caller.entry(caller).or_default() += 1;
        Ok(Slot {
            slots: self.clone(),
            caller,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().expect("slots lock");
        held.total -= 1;
        if let Some(count) = held.by_caller.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                held.by_caller.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_caller_and_in_all_and_given_back() {
        let slots = Arc::new(Slots::new("streams", 3, 2));
        let (a, b) = (Caller::Token(0), Caller::Token(1));
        let first = slots.acquire(a).unwrap();
        let _second = slots.acquire(a).unwrap();
        assert_eq!(
            slots.acquire(a).err().unwrap().error.status,
            StatusCode::TOO_MANY_REQUESTS
        );
        let _third = slots.acquire(b).unwrap();
        assert_eq!(
            slots.acquire(b).err().unwrap().error.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        drop(first);
        assert!(slots.acquire(b).is_ok());
    }
}
