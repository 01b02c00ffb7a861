//! Command mode's configuration: which job kinds run which commands.
//!
//! Two sources, both read once when the runner starts:
//!
//! - a TOML file baked into the image: `RUNNER_CONFIG`, or
//!   `/etc/runner.toml` when that variable is unset (a missing default
//!   file means no commands; a missing named file is an error):
//!
//!   ```toml
//!   [commands]
//!   report = ["python3", "/app/report.py"]
//!   ```
//!
//! - `RUNNER_COMMANDS`, a JSON object of the same shape:
//!   `{"report": ["python3", "/app/report.py"]}`. Its entries replace the
//!   file's for the same kind, so one deployment can override an image.
//!
//! A command is an argv array (program, then arguments), never a shell
//! line: nothing is split or quoted behind your back. Use
//! `["sh", "-c", "..."]` when you want a shell.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use jobs::Kind;
use serde::Deserialize;

/// The variable holding commands as JSON.
pub const COMMANDS_VAR: &str = "RUNNER_COMMANDS";
/// The variable naming the TOML config file.
pub const CONFIG_VAR: &str = "RUNNER_CONFIG";
/// The config file read when [`CONFIG_VAR`] is unset, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/runner.toml";

/// Job kinds mapped to the commands that run them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commands(BTreeMap<String, Vec<String>>);

/// Why the command configuration was refused. The runner exits with
/// [`crate::exit::BAD_ENVIRONMENT`] and this message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the runner config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `origin` is [`COMMANDS_VAR`] or the file's path.
    #[error("{origin}: {problem}")]
    Invalid { origin: String, problem: String },
    #[error("kind {0:?} has both a Rust handler and a command; remove one of them")]
    Conflict(String),
}

/// The TOML file's shape. Unknown keys are refused: a misspelt section
/// would otherwise silently configure nothing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    commands: BTreeMap<String, Vec<String>>,
}

impl Commands {
    /// Reads the file and `RUNNER_COMMANDS`, as described in the module docs.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::load(
            |name| std::env::var(name).ok(),
            Path::new(DEFAULT_CONFIG_PATH),
        )
    }

    fn load(
        get: impl Fn(&str) -> Option<String>,
        default_path: &Path,
    ) -> Result<Self, ConfigError> {
        let named = get(CONFIG_VAR).filter(|path| !path.is_empty());
        let file = match &named {
            Some(path) => Some(read(Path::new(path))?),
            None => match read(default_path) {
                Err(ConfigError::Read { source, .. })
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    None
                }
                other => Some(other?),
            },
        };
        let mut commands = match file {
            Some((path, text)) => parse_toml(&text, &path.display().to_string())?,
            None => Self::default(),
        };
        if let Some(json) = get(COMMANDS_VAR).filter(|json| !json.trim().is_empty()) {
            commands.0.extend(parse_json(&json)?.0);
        }
        Ok(commands)
    }

    /// Checks every kind is one the API accepts (anything else is a typo:
    /// no job could ever have it) and every command names a program.
    fn validated(
        commands: BTreeMap<String, Vec<String>>,
        origin: &str,
    ) -> Result<Self, ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            origin: origin.to_string(),
            problem,
        };
        for (kind, argv) in &commands {
            Kind::parse(kind).map_err(|e| invalid(e.to_string()))?;
            if argv.first().is_none_or(String::is_empty) {
                return Err(invalid(format!(
                    "the command for kind {kind:?} is empty: give at least a program"
                )));
            }
        }
        Ok(Self(commands))
    }
}

/// Kinds and their commands (argv), in kind order.
impl IntoIterator for Commands {
    type Item = (String, Vec<String>);
    type IntoIter = std::collections::btree_map::IntoIter<String, Vec<String>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

fn read(path: &Path) -> Result<(PathBuf, String), ConfigError> {
    std::fs::read_to_string(path)
        .map(|text| (path.to_path_buf(), text))
        .map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn parse_toml(text: &str, origin: &str) -> Result<Commands, ConfigError> {
    let file: File = toml::from_str(text).map_err(|e| {
        // One line with the line number, rather than TOML's multi-line
        // snippet: it goes into a log line.
        let line = e
            .span()
            .map(|span| text[..span.start].matches('\n').count() + 1);
        ConfigError::Invalid {
            origin: match line {
                Some(line) => format!("{origin}, line {line}"),
                None => origin.to_string(),
            },
            problem: e.message().to_string(),
        }
    })?;
    Commands::validated(file.commands, origin)
}

fn parse_json(text: &str) -> Result<Commands, ConfigError> {
    let commands = serde_json::from_str(text).map_err(|e| ConfigError::Invalid {
        origin: COMMANDS_VAR.into(),
        problem: format!(
            "{e}; expected a JSON object of kind to command, e.g. {{\"report\": [\"python3\", \"/app/report.py\"]}}"
        ),
    })?;
    Commands::validated(commands, COMMANDS_VAR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands(pairs: &[(&str, &[&str])]) -> Commands {
        Commands(
            pairs
                .iter()
                .map(|(kind, argv)| {
                    (
                        kind.to_string(),
                        argv.iter().map(|a| a.to_string()).collect(),
                    )
                })
                .collect(),
        )
    }

    /// A scratch file, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(text: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "runner-config-{}-{:?}.toml",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn load(vars: &[(&str, &str)], default_path: &Path) -> Result<Commands, ConfigError> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Commands::load(|name| vars.get(name).cloned(), default_path)
    }

    #[test]
    fn reads_json_and_toml() {
        let expected = commands(&[("report", &["python3", "/app/report.py"])]);
        assert_eq!(
            parse_json(r#"{"report": ["python3", "/app/report.py"]}"#).unwrap(),
            expected
        );
        let toml = "[commands]\nreport = [\"python3\", \"/app/report.py\"]\n";
        assert_eq!(parse_toml(toml, "f").unwrap(), expected);
        assert_eq!(parse_toml("", "f").unwrap(), Commands::default());
    }

    #[test]
    fn refuses_what_could_never_run() {
        let problem = |result: Result<Commands, ConfigError>| result.unwrap_err().to_string();
        assert!(problem(parse_json(r#"{"Report": ["x"]}"#))
            .starts_with("RUNNER_COMMANDS: \"Report\" is not a valid kind"));
        assert!(problem(parse_json(r#"{"report": []}"#))
            .contains("command for kind \"report\" is empty"));
        assert!(problem(parse_json(r#"{"report": [""]}"#)).contains("is empty"));
        assert!(problem(parse_json(r#"{"report": "python3 r.py"}"#))
            .contains("expected a JSON object of kind to command"));
        assert!(problem(parse_json("[1]")).starts_with("RUNNER_COMMANDS: invalid type"));
        assert!(
            problem(parse_toml("[command]\nreport = [\"x\"]", "/etc/r.toml"))
                .starts_with("/etc/r.toml, line 1: unknown field `command`")
        );
        assert_eq!(
            problem(parse_toml(
                "[commands]\nreport = \"python3 r.py\"",
                "r.toml"
            )),
            "r.toml, line 2: invalid type: string \"python3 r.py\", expected a sequence"
        );
    }

    #[test]
    fn the_variable_overrides_the_file_kind_by_kind() {
        let file = Scratch::new("[commands]\na = [\"from-file\"]\nb = [\"from-file\"]\n");
        let path = file.0.to_str().unwrap();
        let loaded = load(
            &[(CONFIG_VAR, path), (COMMANDS_VAR, r#"{"b": ["from-env"]}"#)],
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(
            loaded,
            commands(&[("a", &["from-file"]), ("b", &["from-env"])])
        );
        // The default path is read when RUNNER_CONFIG is unset.
        assert_eq!(load(&[], &file.0).unwrap().0.len(), 2);
    }

    #[test]
    fn only_a_missing_default_file_is_fine() {
        let missing = Path::new("/nonexistent/runner.toml");
        assert_eq!(load(&[], missing).unwrap(), Commands::default());
        let err = load(&[(CONFIG_VAR, "/nonexistent/runner.toml")], missing).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read the runner config /nonexistent/runner.toml"),
            "{err}"
        );
    }
}
