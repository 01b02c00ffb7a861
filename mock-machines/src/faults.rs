//! Fault injection: errors, capacity shortages, machines that never boot,
//! crash or run out of memory, dropped connections and slow answers.
//!
//! Settings come from [`MockConfig::faults`](crate::MockConfig::faults) and
//! can be changed while the mock runs with `POST /_mock/faults`, whose JSON
//! body is merged into the current settings (`GET /_mock/faults` shows
//! them). Rates are probabilities in `0.0..=1.0`, drawn per event; the
//! deterministic `fail_next_creates` makes "a create that fails twice, then
//! succeeds" testable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The current fault settings. All zero (no faults) by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSettings {
    /// Probability that a create fails with `create_error_status`.
    pub create_error_rate: f64,
    pub create_error_status: u16,
    /// Probability that a create fails with 412 `insufficient_capacity`.
    pub capacity_error_rate: f64,
    /// Probability that a boot hangs: the machine stays `created` forever.
    pub never_boot_rate: f64,
    /// Probability that a booted machine's process is SIGKILLed soon after
    /// it started (exit code 137, signal 9).
    pub crash_rate: f64,
    /// Like `crash_rate`, but the exit event says `oom_killed: true`.
    pub oom_rate: f64,
    /// Probability that a request's connection is closed before the
    /// request is handled (nothing happened).
    pub drop_connection_rate: f64,
    /// Probability that a request is handled and then its connection is
    /// closed without the answer: a create made a machine the client never
    /// hears of, the ambiguous failure a client must survive.
    pub drop_answer_rate: f64,
    /// The next N creates make their machine, then the connection is
    /// closed without the answer (a deterministic `drop_answer_rate`).
    pub drop_next_create_answers: u32,
    /// `summary=true` lists leave out `name` and `created_at`: Fly's spec
    /// does not promise them there.
    pub lean_summaries: bool,
    /// Machine bodies are written as Go's `omitempty` writes them: an exit
    /// code of 0 is left out, an empty `env` or `metadata` is `null` (as in
    /// Fly's docs examples).
    pub go_omitempty: bool,
    /// `GET .../{id}` answers lack `state`: a machine a client cannot
    /// judge, which it must report, not guess at.
    pub stateless_gets: bool,
    /// Extra delay added to every API answer.
    pub slow_response_ms: u64,
    /// The next N creates fail with `fail_status`, then creates work again.
    pub fail_next_creates: u32,
    pub fail_status: u16,
    /// Regions out of capacity: every create there fails with 412
    /// `insufficient_capacity` (so a client's region fallback shows).
    #[serde(default)]
    pub full_regions: Vec<String>,
}

impl Default for FaultSettings {
    fn default() -> Self {
        Self {
            create_error_rate: 0.0,
            create_error_status: 503,
            capacity_error_rate: 0.0,
            never_boot_rate: 0.0,
            crash_rate: 0.0,
            oom_rate: 0.0,
            drop_connection_rate: 0.0,
            drop_answer_rate: 0.0,
            drop_next_create_answers: 0,
            lean_summaries: false,
            go_omitempty: false,
            stateless_gets: false,
            slow_response_ms: 0,
            fail_next_creates: 0,
            fail_status: 503,
            full_regions: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FaultSettingsError {
    #[error("invalid fault settings: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid fault settings: {0} is not a probability in 0..=1")]
    Rate(&'static str),
    #[error("invalid fault settings: {0} is not an HTTP error status")]
    Status(&'static str),
}

impl FaultSettings {
    /// These settings with the fields of `patch` (a JSON object) replaced.
    pub fn merged(&self, patch: serde_json::Value) -> Result<Self, FaultSettingsError> {
        let mut current = serde_json::to_value(self)?;
        if let (Some(current), serde_json::Value::Object(patch)) = (current.as_object_mut(), patch)
        {
            current.extend(patch);
        }
        let merged: Self = serde_json::from_value(current)?;
        merged.validate()?;
        Ok(merged)
    }

    fn validate(&self) -> Result<(), FaultSettingsError> {
        let rates = [
            ("create_error_rate", self.create_error_rate),
            ("capacity_error_rate", self.capacity_error_rate),
            ("never_boot_rate", self.never_boot_rate),
            ("crash_rate", self.crash_rate),
            ("oom_rate", self.oom_rate),
            ("drop_connection_rate", self.drop_connection_rate),
            ("drop_answer_rate", self.drop_answer_rate),
        ];
        if let Some((name, _)) = rates.iter().find(|(_, r)| !(0.0..=1.0).contains(r)) {
            return Err(FaultSettingsError::Rate(name));
        }
        for (name, status) in [
            ("create_error_status", self.create_error_status),
            ("fail_status", self.fail_status),
        ] {
            if !(400..=599).contains(&status) {
                return Err(FaultSettingsError::Status(name));
            }
        }
        Ok(())
    }
}

/// What goes wrong with one boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootFault {
    None,
    /// Stay in `created` forever.
    NeverBoot,
    /// SIGKILL the process shortly after it started.
    Crash,
    /// SIGKILL it and call it an out-of-memory kill.
    Oom,
}

/// The live fault settings plus a count of injected faults.
#[derive(Debug, Default)]
pub struct Faults {
    settings: Mutex<FaultSettings>,
    injected: AtomicU64,
}

impl Faults {
    pub fn new(settings: FaultSettings) -> Self {
        Self {
            settings: Mutex::new(settings),
            injected: AtomicU64::new(0),
        }
    }

    pub fn settings(&self) -> FaultSettings {
        self.lock().clone()
    }

    pub fn update(&self, patch: serde_json::Value) -> Result<FaultSettings, FaultSettingsError> {
        let mut settings = self.lock();
        *settings = settings.merged(patch)?;
        Ok(settings.clone())
    }

    /// How many faults have been injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// `Err` when this create (in `region`) must fail.
    pub fn check_create(&self, region: &str) -> Result<(), ApiError> {
        let mut settings = self.lock();
        let error = if settings.full_regions.iter().any(|r| r == region) {
            Some(ApiError::InsufficientCapacity)
        } else if settings.fail_next_creates > 0 {
            settings.fail_next_creates -= 1;
            Some(injected_error(settings.fail_status))
        } else if chance(settings.capacity_error_rate) {
            Some(ApiError::InsufficientCapacity)
        } else if chance(settings.create_error_rate) {
            Some(injected_error(settings.create_error_status))
        } else {
            None
        };
        match error {
            Some(error) => {
                self.count();
                Err(error)
            }
            None => Ok(()),
        }
    }

    /// Draws what goes wrong with the boot that is about to happen.
    pub fn draw_boot_fault(&self) -> BootFault {
        let settings = self.lock();
        let fault = if chance(settings.never_boot_rate) {
            BootFault::NeverBoot
        } else if chance(settings.crash_rate) {
            BootFault::Crash
        } else if chance(settings.oom_rate) {
            BootFault::Oom
        } else {
            BootFault::None
        };
        if fault != BootFault::None {
            self.count();
        }
        fault
    }

    /// Whether to close this request's connection without handling it.
    pub fn drop_connection(&self) -> bool {
        self.draw(|s| s.drop_connection_rate)
    }

    /// Whether this create's answer is to be dropped
    /// (`drop_next_create_answers`, counting down).
    pub fn drop_create_answer(&self) -> bool {
        let mut settings = self.lock();
        if settings.drop_next_create_answers == 0 {
            return false;
        }
        settings.drop_next_create_answers -= 1;
        drop(settings);
        self.count();
        true
    }

    /// Whether to close this handled request's connection unanswered.
    pub fn drop_answer(&self) -> bool {
        self.draw(|s| s.drop_answer_rate)
    }

    /// Draws the fault whose rate `rate` picks, counting it if it happens.
    fn draw(&self, rate: impl Fn(&FaultSettings) -> f64) -> bool {
        let happens = chance(rate(&self.lock()));
        if happens {
            self.count();
        }
        happens
    }

    /// Extra delay before answering.
    pub fn response_delay(&self) -> Duration {
        Duration::from_millis(self.lock().slow_response_ms)
    }

    fn count(&self) {
        self.injected.fetch_add(1, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultSettings> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn chance(rate: f64) -> bool {
    rate > 0.0 && rand::rng().random_bool(rate.min(1.0))
}

/// The error an injected create failure answers with. A 429 looks exactly
/// like a real rate limit (with `Retry-After`).
fn injected_error(status: u16) -> ApiError {
    match StatusCode::from_u16(status) {
        Ok(StatusCode::TOO_MANY_REQUESTS) => ApiError::RateLimited {
            retry_after_secs: 1,
        },
        Ok(status) => ApiError::Injected {
            status,
            message: format!("mock fault: injected {status} on create"),
        },
        Err(_) => ApiError::Injected {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "mock fault: injected error on create".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_merge_and_validate() {
        let settings = FaultSettings::default();
        let merged = settings
            .merged(serde_json::json!({"fail_next_creates": 2, "fail_status": 429}))
            .unwrap();
        assert_eq!(merged.fail_next_creates, 2);
        assert_eq!(merged.create_error_status, 503);
        assert!(settings
            .merged(serde_json::json!({"crash_rate": 2.0}))
            .is_err());
        assert!(settings.merged(serde_json::json!({"bogus": 1})).is_err());
    }

    #[test]
    fn fail_next_creates_counts_down() {
        let faults = Faults::new(FaultSettings {
            fail_next_creates: 2,
            fail_status: 429,
            ..Default::default()
        });
        assert!(matches!(
            faults.check_create("lcl"),
            Err(ApiError::RateLimited { .. })
        ));
        assert!(faults.check_create("lcl").is_err());
        assert!(faults.check_create("lcl").is_ok());
        assert_eq!(faults.injected(), 2);
    }
}
