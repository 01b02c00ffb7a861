//! Signal names as the API spells them, and the stop defaults.

use std::time::Duration;

use machines::MachineConfig;

use crate::error::ApiError;

/// How long a stop waits before SIGKILL when neither the request nor
/// `stop_config` says (Fly's default `kill_timeout`).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The signal number for `SIGTERM`, `TERM`, `15`, ... (400 if unknown).
pub fn parse(name: &str) -> Result<i32, ApiError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number = match bare {
        "ABRT" => libc::SIGABRT,
        "ALRM" => libc::SIGALRM,
        "FPE" => libc::SIGFPE,
        "HUP" => libc::SIGHUP,
        "ILL" => libc::SIGILL,
        "INT" => libc::SIGINT,
        "KILL" => libc::SIGKILL,
        "PIPE" => libc::SIGPIPE,
        "QUIT" => libc::SIGQUIT,
        "SEGV" => libc::SIGSEGV,
        "TERM" => libc::SIGTERM,
        "TRAP" => libc::SIGTRAP,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        number => number
            .parse::<i32>()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("unknown signal {name:?}")))?,
    };
    Ok(number)
}

/// The signal and grace period of a stop: the request's values, else the
/// machine's `stop_config`, else SIGINT and 5 s.
pub fn stop_defaults(
    config: &MachineConfig,
    signal: Option<&str>,
    timeout: Option<Duration>,
) -> Result<(i32, Duration), ApiError> {
    let stop_config = config.stop_config.as_ref();
    let signal = signal
        .or_else(|| stop_config.and_then(|s| s.signal.as_deref()))
        .map_or(Ok(libc::SIGINT), parse)?;
    let timeout = timeout
        .or_else(|| stop_config.and_then(|s| s.timeout).map(|t| t.0))
        .unwrap_or(DEFAULT_STOP_TIMEOUT);
    Ok((signal, timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!(parse("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse("kill").unwrap(), libc::SIGKILL);
        assert_eq!(parse("9").unwrap(), 9);
        assert!(parse("SIGNOPE").is_err());
    }
}
