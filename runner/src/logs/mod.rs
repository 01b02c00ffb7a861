//! The attempt's log: what the job prints, shipped to the job store while
//! it runs, so it outlives the machine.
//!
//! - [`sink`]: [`LogSink`], where lines go (bounded, never blocks the job),
//!   and the shipper that sends them in batches.
//! - [`mask`]: [`Masker`], which blanks the job's secret values first.
//! - [`capture`]: [`CaptureLayer`], the `tracing` layer that copies a
//!   handler's events into its attempt's log.
//!
//! Where lines come from: a command's stdout and stderr (every line), a
//! Rust handler's `tracing` events inside its attempt's span and its
//! [`crate::Context::log`] lines, and the runner's own lines about the
//! attempt. Lines are batched ([`FLUSH_EVERY`] or [`BATCH_BYTES`],
//! whichever comes first) into one store command each; see
//! [`jobs::logs`] for how the store keeps them.

pub mod capture;
pub mod mask;
pub mod sink;

use std::time::Duration;

pub use capture::CaptureLayer;
pub use mask::Masker;
pub use sink::LogSink;

/// Lines buffered this long at most before they are shipped.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// A batch this large is shipped at once.
pub const BATCH_BYTES: usize = 64 << 10;

/// Limits of one attempt's log, from the runner's environment:
///
/// | variable | meaning | default |
/// | --- | --- | --- |
/// | `JOB_LOG_MAX_BYTES` | the attempt's cap; the log then ends with a truncation line | 4 MiB |
/// | `JOB_LOG_MAX_LINE_BYTES` | longer lines are cut | 16 KiB |
/// | `JOB_LOG_BUFFER_BYTES` | lines waiting for the store; beyond, new lines are dropped and counted | 8 MiB |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    pub max_bytes: u64,
    pub max_line_bytes: usize,
    pub buffer_bytes: usize,
    /// The job's secret values, masked in every line
    /// ([`Masker::MIN_SECRET_LEN`](mask::MIN_SECRET_LEN) bytes or longer).
    pub secrets: Vec<String>,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            max_bytes: 4 << 20,
            max_line_bytes: 16 << 10,
            buffer_bytes: 8 << 20,
            secrets: Vec::new(),
        }
    }
}

impl LogSettings {
    /// The limits from `get` (the environment), defaults for those unset.
    /// Returns the variable's name and the bad value on an error.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let defaults = Self::default();
        let number = |name: &str, default: u64| -> Result<u64, String> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("{name} is not a positive number: {v:?}")),
            }
        };
        Ok(Self {
            max_bytes: number("JOB_LOG_MAX_BYTES", defaults.max_bytes)?,
            max_line_bytes: number("JOB_LOG_MAX_LINE_BYTES", defaults.max_line_bytes as u64)?
                as usize,
            buffer_bytes: number("JOB_LOG_BUFFER_BYTES", defaults.buffer_bytes as u64)? as usize,
            secrets: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_from_the_environment() {
        let settings = LogSettings::from_lookup(|name| match name {
            "JOB_LOG_MAX_BYTES" => Some("1000".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(settings.max_bytes, 1000);
        assert_eq!(
            settings.max_line_bytes,
            LogSettings::default().max_line_bytes
        );
        let bad = LogSettings::from_lookup(|name| {
            (name == "JOB_LOG_MAX_LINE_BYTES").then(|| "0".to_string())
        });
        assert!(bad.unwrap_err().contains("JOB_LOG_MAX_LINE_BYTES"));
    }
}
