//! What a client may put in a job machine's environment (`machine.env`
//! and `machine.secrets`): an allow-list, checked by the dispatcher when a
//! job is submitted and again by the runner before it hands the variables
//! to job code, so a record that reached the store some other way still
//! cannot configure the runner.
//!
//! A name must match `^[A-Z_][A-Z0-9_]{0,127}$` and must not be one that
//! configures the runner or the platform (`RUNNER_*`, `JOB_*`, `JOBS_*`,
//! `FLY_*`), the dynamic linker (`LD_*`, `GCONV_PATH`, ...), the shell and
//! the search path (`PATH`, `HOME`, `BASH_ENV`, `IFS`, ...) or an
//! interpreter's code loading (`PYTHONPATH`, `NODE_OPTIONS`, `PERL5OPT`,
//! ...): those would let a client choose which code runs, not only what
//! data it sees. `HOME` is refused too: programs read start-up files from
//! it. Values hold no NUL byte, and the counts and sizes are bounded.

use std::collections::BTreeMap;

use crate::model::InvalidValue;

/// The documented name pattern, for error messages and the OpenAPI document.
pub const NAME_PATTERN: &str = "^[A-Z_][A-Z0-9_]{0,127}$";
pub const MAX_NAME_LEN: usize = 128;
/// Variables in `env` and `secrets` together.
pub const MAX_VARS: usize = 64;
/// Names and values of `env` and `secrets` together, in bytes.
pub const MAX_TOTAL_BYTES: usize = 32 * 1024;

/// Prefixes of names a job may not set.
pub const RESERVED_PREFIXES: [&str; 6] = ["RUNNER_", "JOB_", "JOBS_", "FLY_", "LD_", "BASH_"];

/// Names a job may not set: the runner's and the platform's own, the
/// shell's, and those that make a loader or interpreter run other code.
pub const RESERVED_NAMES: [&str; 33] = [
    "PATH",
    "HOME",
    "SHELL",
    "USER",
    "LOGNAME",
    "PWD",
    "IFS",
    "ENV",
    "PS4",
    "SHELLOPTS",
    "CDPATH",
    "TMPDIR",
    "LOG_FORMAT",
    "RUST_LOG",
    "PRIMARY_REGION",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RES_OPTIONS",
    "LOCALDOMAIN",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PERL5OPT",
    "PERL5LIB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
];

/// Why `name` may not be set by a job, or `None` when it may.
pub fn refusal(name: &str) -> Option<String> {
    let shape_ok = name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !shape_ok {
        return Some(format!(
            "{name:?} is not an allowed variable name ({NAME_PATTERN})"
        ));
    }
    if RESERVED_NAMES.contains(&name) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Some(format!(
            "{name} configures the runner, the platform, the loader or the shell; a job may not set it"
        ));
    }
    None
}

/// Checks one map (`env` or `secrets`): names, values, and adds its size
/// to `budget` (count, bytes) shared by both maps.
pub fn check_map(
    map: &BTreeMap<String, String>,
    budget: &mut (usize, usize),
) -> Result<(), InvalidValue> {
    for (name, value) in map {
        if let Some(problem) = refusal(name) {
            return Err(InvalidValue(problem));
        }
        if value.contains('\0') {
            return Err(InvalidValue(format!(
                "{name}: a value may not hold a NUL byte"
            )));
        }
        budget.0 += 1;
        budget.1 += name.len() + value.len();
    }
    if budget.0 > MAX_VARS {
        return Err(InvalidValue(format!(
            "at most {MAX_VARS} variables in env and secrets together"
        )));
    }
    if budget.1 > MAX_TOTAL_BYTES {
        return Err(InvalidValue(format!(
            "env and secrets together may hold at most {MAX_TOTAL_BYTES} bytes of names and values"
        )));
    }
    Ok(())
}

/// The variables of `map` a job may set; the others are dropped with a
/// warning. The runner's second line of defence.
pub fn allowed(map: &BTreeMap<String, String>) -> impl Iterator<Item = (&String, &String)> {
    map.iter().filter(|(name, value)| {
        let refused = refusal(name).or_else(|| value.contains('\0').then(|| "NUL in value".into()));
        if let Some(problem) = &refused {
            tracing::warn!(variable = %name.escape_debug(), problem, "job variable ignored");
        }
        refused.is_none()
    })
}

/// A job's write-only variables: stored apart from the job (key
/// `secrets:{id}`), readable only by the attempt that holds the job's
/// fencing token, deleted when the job reaches a final status. `Debug`
/// shows the names only, so a stray `{:?}` cannot log a value.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secrets(pub BTreeMap<String, String>);

impl Secrets {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_pattern_and_avoid_the_reserved() {
        for ok in ["MODEL", "_X", "A1", "DATABASE_URL", &"A".repeat(128)] {
            assert_eq!(refusal(ok), None, "{ok}");
        }
        for bad in [
            "",
            "lower",
            "1A",
            "A-B",
            "A B",
            "A\0",
            &"A".repeat(129),
            "RUNNER_COMMANDS",
            "RUNNER_CONFIG",
            "JOB_TOKEN",
            "JOBS_STORE_URL",
            "FLY_API_TOKEN",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "PATH",
            "HOME",
            "BASH_ENV",
            "NODE_OPTIONS",
        ] {
            assert!(refusal(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn maps_are_bounded_together() {
        let many: BTreeMap<String, String> =
            (0..40).map(|i| (format!("V{i}"), "x".into())).collect();
        let mut budget = (0, 0);
        check_map(&many, &mut budget).unwrap();
        assert!(check_map(&many, &mut budget).is_err(), "80 variables");
        let big = BTreeMap::from([("BIG".to_string(), "x".repeat(MAX_TOTAL_BYTES))]);
        assert!(check_map(&big, &mut (0, 0)).is_err());
        let nul = BTreeMap::from([("A".to_string(), "a\0b".to_string())]);
        assert!(check_map(&nul, &mut (0, 0)).is_err());
    }

    #[test]
    fn the_runner_drops_what_the_api_refuses() {
        let map = BTreeMap::from([
            ("MODEL".to_string(), "small".to_string()),
            ("RUNNER_COMMANDS".to_string(), "{}".to_string()),
            ("PATH".to_string(), "/tmp".to_string()),
            ("NUL".to_string(), "a\0".to_string()),
        ]);
        let kept: Vec<&String> = allowed(&map).map(|(name, _)| name).collect();
        assert_eq!(kept, ["MODEL"]);
    }

    #[test]
    fn secrets_never_print_their_values() {
        let secrets = Secrets(BTreeMap::from([("API_KEY".into(), "hunter2".into())]));
        assert_eq!(format!("{secrets:?}"), r#"{"API_KEY"}"#);
    }
}
