//! The deployment files (fly.toml, Dockerfile, .dockerignore) and the
//! configuration page (docs/configuration.md) agree with the code they
//! describe. Each test reads a file as Fly or Docker would and checks it
//! against the constant or flag it must match, so renaming a binary, moving
//! the health route, lengthening the shutdown grace, adding a flag or
//! dropping an env fallback breaks `cargo test`, not a deploy. The flags are
//! read through clap's own description of `dispatcher serve`
//! (`CommandFactory`), and Fly's durations through the project's own Go
//! duration parser (`machines::GoDuration`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use machines::GoDuration;

use clap::CommandFactory;
use dispatcher::api::routes::HEALTH_PATH;
use dispatcher::cli::{Cli, DEFAULT_PORT};
use dispatcher::startup::SHUTDOWN_GRACE;

// include_str! also makes cargo rebuild this test whenever one changes.
const FLY_TOML: &str = include_str!("../../fly.toml");
const DOCKERFILE: &str = include_str!("../../Dockerfile");
const DOCKERIGNORE: &str = include_str!("../../.dockerignore");
const CARGO_TOML: &str = include_str!("../../Cargo.toml");
const CONFIGURATION_PAGE: &str = include_str!("../../docs/configuration.md");

/// The binaries cargo built for this package, by `[[bin]]` name.
fn built_binaries() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("dispatcher", env!("CARGO_BIN_EXE_dispatcher")),
        ("runner", env!("CARGO_BIN_EXE_runner")),
        ("mock-machines", env!("CARGO_BIN_EXE_mock-machines")),
    ])
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------- fly.toml

fn fly() -> toml::Table {
    toml::from_str(FLY_TOML).expect("fly.toml is valid TOML")
}

fn table<'a>(parent: &'a toml::Table, key: &str) -> &'a toml::Table {
    parent
        .get(key)
        .and_then(toml::Value::as_table)
        .unwrap_or_else(|| panic!("fly.toml: [{key}] missing or not a table"))
}

/// A Fly duration: a TOML integer (`default_unit` each) or a Go duration
/// string such as "30s", "1m30s", "500ms".
fn fly_duration(value: &toml::Value, default_unit: Duration) -> Duration {
    match value {
        toml::Value::Integer(n) => {
            default_unit * u32::try_from(*n).expect("a small, non-negative number")
        }
        toml::Value::String(s) => {
            GoDuration::parse(s).unwrap_or_else(|| panic!("not a duration: {s:?}"))
        }
        other => panic!("not a duration: {other}"),
    }
}

#[test]
fn fly_durations_parse_what_fly_accepts_and_reject_the_rest() {
    assert_eq!(GoDuration::parse("30s"), Some(Duration::from_secs(30)));
    assert_eq!(GoDuration::parse("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(GoDuration::parse("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(GoDuration::parse("2h"), Some(Duration::from_secs(7200)));
    for bad in ["", "30", "s", "30 s", "thirty", "30sec", "-5s"] {
        assert_eq!(GoDuration::parse(bad), None, "{bad:?}");
    }
    let seconds = Duration::from_secs(1);
    assert_eq!(
        fly_duration(&toml::Value::Integer(25), seconds),
        Duration::from_secs(25)
    );
}

/// Every environment variable `dispatcher serve` reads, with its flag's
/// default as `--help` shows it (`None` when it has none), from clap's
/// description of the command.
fn serve_env() -> BTreeMap<String, Option<String>> {
    let cli = Cli::command();
    let serve = cli
        .find_subcommand("serve")
        .expect("dispatcher has a serve subcommand");
    serve
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_owned();
            let defaults: Vec<_> = arg
                .get_default_values()
                .iter()
                .map(|value| value.to_string_lossy().into_owned())
                .collect();
            Some((env, (!defaults.is_empty()).then(|| defaults.join(","))))
        })
        .collect()
}

#[test]
fn serve_env_reads_the_flags_clap_knows() {
    // Guards the helper the other tests trust: if it found nothing, the
    // env checks below would pass vacuously.
    let env = serve_env();
    for expected in [
        "PORT",
        "VALKEY_URL",
        "FLY_API_TOKEN",
        "MACHINES_API_URL",
        "RUNNER_EXEC",
    ] {
        assert!(env.contains_key(expected), "{expected} not in {env:?}");
    }
    assert!(!env.contains_key("NOT_A_SETTING"));
    assert_eq!(
        env["MACHINES_API_URL"].as_deref(),
        Some("https://api.machines.dev")
    );
    assert_eq!(env["FLY_APP_NAME"], None);
}

#[test]
fn fly_service_targets_the_dispatchers_port_and_health_route() {
    let fly = fly();
    let service = table(&fly, "http_service");
    assert_eq!(
        service
            .get("internal_port")
            .and_then(toml::Value::as_integer),
        Some(i64::from(DEFAULT_PORT)),
        "http_service.internal_port must be the port the dispatcher listens on"
    );
    if let Some(port) = table(&fly, "env").get("PORT") {
        assert_eq!(
            port.as_str(),
            Some(DEFAULT_PORT.to_string().as_str()),
            "[env] PORT overrides the default port; it must match internal_port"
        );
    }

    let checks = service
        .get("checks")
        .and_then(toml::Value::as_array)
        .expect("[[http_service.checks]]");
    assert!(!checks.is_empty(), "at least one health check");
    for check in checks {
        let check = check.as_table().expect("a check is a table");
        assert_eq!(
            check.get("path").and_then(toml::Value::as_str),
            Some(HEALTH_PATH)
        );
        let method = check
            .get("method")
            .and_then(toml::Value::as_str)
            .unwrap_or("GET");
        assert!(
            method.eq_ignore_ascii_case("GET"),
            "the health route answers GET, not {method}"
        );
        // Check times without a unit are milliseconds in fly.toml.
        let ms = Duration::from_millis(1);
        let timeout = fly_duration(check.get("timeout").expect("check timeout"), ms);
        let interval = fly_duration(check.get("interval").expect("check interval"), ms);
        assert!(
            timeout < interval,
            "check timeout {timeout:?} must be shorter than its interval {interval:?}"
        );
        assert!(
            check.contains_key("grace_period"),
            "startup connects to the store first; set grace_period"
        );
    }
}

#[test]
fn fly_keeps_the_dispatcher_running_while_it_supervises_jobs() {
    let fly = fly();
    let service = table(&fly, "http_service");
    // The proxy only sees HTTP traffic; auto-stop would stop a dispatcher
    // whose API is idle while its job machines are still running.
    assert_eq!(
        service
            .get("auto_stop_machines")
            .and_then(toml::Value::as_str),
        Some("off")
    );
    let min = service
        .get("min_machines_running")
        .and_then(toml::Value::as_integer);
    assert!(min >= Some(1), "min_machines_running = {min:?}");
}

#[test]
fn fly_concurrency_stays_under_the_dispatchers_connection_cap() {
    use clap::Parser;
    let fly = fly();
    let concurrency = table(table(&fly, "http_service"), "concurrency");
    assert_eq!(
        concurrency.get("type").and_then(toml::Value::as_str),
        Some("connections"),
        "event streams hold connections, not requests"
    );
    let limit = |key: &str| {
        concurrency
            .get(key)
            .and_then(toml::Value::as_integer)
            .unwrap_or_else(|| panic!("[http_service.concurrency] {key}"))
    };
    assert!(limit("soft_limit") <= limit("hard_limit"));
    let cli =
        dispatcher::cli::Cli::parse_from(["dispatcher", "serve", "--app=a", "--fly-api-token=t"]);
    let dispatcher::cli::Command::Serve(serve) = cli.command else {
        unreachable!()
    };
    let own_cap = i64::try_from(serve.common.max_connections).unwrap();
    assert!(
        limit("hard_limit") < own_cap,
        "hard_limit {} must stay under MAX_CONNECTIONS {own_cap}",
        limit("hard_limit")
    );
}

#[test]
fn fly_kill_timeout_outlasts_the_shutdown_grace() {
    let fly = fly();
    assert_eq!(
        fly.get("kill_signal").and_then(toml::Value::as_str),
        Some("SIGTERM"),
        "the dispatcher drains on SIGTERM"
    );
    // Fly reads a bare integer kill_timeout as seconds.
    let kill_timeout = fly_duration(
        fly.get("kill_timeout").expect("kill_timeout"),
        Duration::from_secs(1),
    );
    assert!(
        kill_timeout > SHUTDOWN_GRACE,
        "kill_timeout {kill_timeout:?} must exceed SHUTDOWN_GRACE {SHUTDOWN_GRACE:?}, or Fly kills in-flight attempts"
    );
    assert!(
        kill_timeout <= Duration::from_secs(300),
        "Fly caps kill_timeout at 300 s"
    );
}

#[test]
fn fly_env_holds_only_settings_the_dispatcher_reads_and_no_secrets() {
    let fly = fly();
    let env = table(&fly, "env");
    assert!(!env.is_empty(), "[env] configures the dispatcher");
    let known = serve_env();
    for (key, value) in env {
        assert!(
            known.contains_key(key),
            "[env] {key} is not read by `dispatcher serve` (typo?)"
        );
        assert!(
            value.is_str(),
            "[env] {key}: Fly env values must be strings, got {value}"
        );
        assert!(
            !key.starts_with("FLY_"),
            "[env] {key}: FLY_* names are reserved for the platform"
        );
    }
    // These carry credentials; they belong in `fly secrets`, never in a file.
    for secret in [
        "FLY_API_TOKEN",
        "DISPATCHER_API_TOKENS",
        "VALKEY_URL",
        "RUNNER_VALKEY_URL",
    ] {
        assert!(
            !env.contains_key(secret),
            "[env] must not contain the secret {secret}"
        );
    }
    // Inside Fly the Machines API is reachable on the private network.
    assert_eq!(
        env.get("MACHINES_API_URL").and_then(toml::Value::as_str),
        Some("http://_api.internal:4280")
    );
}

#[test]
fn fly_env_keys_are_flags_of_the_built_serve_command() {
    // Cross-checks clap's description against the real binary: clap lists
    // every env fallback of `serve` in its help as `[env: NAME=...]`.
    let output = Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args(["serve", "--help"])
        .env_clear()
        .output()
        .expect("running dispatcher serve --help");
    assert!(
        output.status.success(),
        "`dispatcher serve --help` failed: {output:?}"
    );
    let help = String::from_utf8(output.stdout).expect("utf-8 help");
    for key in table(&fly(), "env").keys() {
        assert!(
            help.contains(&format!("[env: {key}=")) || help.contains(&format!("[env: {key}]")),
            "`dispatcher serve` has no flag reading {key}:\n{help}"
        );
    }
}

#[test]
fn fly_builds_the_checked_dockerfile() {
    let fly = fly();
    let build = table(&fly, "build");
    let dockerfile = build
        .get("dockerfile")
        .and_then(toml::Value::as_str)
        .unwrap_or("Dockerfile");
    assert_eq!(
        Path::new(dockerfile),
        Path::new("Dockerfile"),
        "these tests check ./Dockerfile"
    );
    assert!(repo_root().join(dockerfile).is_file());
}

// -------------------------------------------------------- configuration.md

/// Names written as `` `UPPER_CASE` `` in a table cell.
fn variables(cell: &str) -> Vec<&str> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| {
            word.starts_with(|c: char| c.is_ascii_uppercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}

/// Every variable the configuration page's tables document, with the
/// default cell's entry for it: `` `x` `` is a literal default; anything
/// else (`–`, prose, or another variable it falls back to) is not a
/// literal to compare.
fn documented_variables() -> BTreeMap<String, Option<String>> {
    let mut rows = BTreeMap::new();
    for line in CONFIGURATION_PAGE
        .lines()
        .filter(|line| line.starts_with("| `"))
    {
        let cells: Vec<&str> = line.split(" | ").collect();
        let names = variables(cells[0].trim_start_matches("| "));
        let defaults: Vec<&str> = cells[1].split(", ").collect();
        for (i, name) in names.iter().enumerate() {
            let default = match defaults.get(i).or(defaults.last()) {
                Some(d) if d.starts_with('`') && d.ends_with('`') && variables(d).is_empty() => {
                    Some(d.trim_matches('`').to_owned())
                }
                _ => None,
            };
            rows.insert((*name).to_owned(), default);
        }
    }
    rows
}

#[test]
fn the_configuration_page_lists_exactly_the_serve_flags() {
    let flags = serve_env();
    let documented = documented_variables();
    let undocumented: Vec<_> = flags
        .keys()
        .filter(|k| !documented.contains_key(*k))
        .collect();
    let unknown: Vec<_> = documented
        .keys()
        .filter(|k| !flags.contains_key(*k))
        .collect();
    assert!(
        undocumented.is_empty(),
        "flags missing from docs/configuration.md: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents variables `dispatcher serve` does not read: {unknown:?}"
    );
}

#[test]
fn the_configuration_page_shows_each_literal_default_the_flag_has() {
    let flags = serve_env();
    let documented = documented_variables();
    assert!(
        documented.values().filter(|d| d.is_some()).count() > 20,
        "the page's defaults were not found"
    );
    let wrong: Vec<_> = documented
        .into_iter()
        .filter_map(|(name, written)| {
            let real = flags.get(&name).cloned().flatten();
            (written.is_some() && written != real).then_some((name, written, real))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "docs/configuration.md defaults (variable, page, flag): {wrong:?}"
    );
}

// -------------------------------------------------------------- Dockerfile

#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    name: Option<String>,
    workdir: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    fn last<'a>(&'a self, keyword: &'a str) -> Option<&'a str> {
        self.all(keyword).last()
    }
}

/// Splits a Dockerfile into stages of instructions: comment lines dropped,
/// backslash continuations joined, WORKDIR tracked (and inherited by a stage
/// built `FROM` an earlier one).
fn parse_dockerfile(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(
        current.trim().is_empty(),
        "Dockerfile ends inside a continuation"
    );

    let mut stages: Vec<Stage> = Vec::new();
    for line in logical.iter().filter(|l| !l.trim().is_empty()) {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args = args.trim().to_string();
        if keyword == "FROM" {
            let words: Vec<&str> = args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let base = words.first().expect("FROM names an image").to_string();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            let inherited = stages
                .iter()
                .find(|s| s.name.as_deref() == Some(&base))
                .and_then(|s| s.workdir.clone());
            stages.push(Stage {
                name,
                workdir: inherited,
                instructions: Vec::new(),
            });
            continue;
        }
        let stage = stages
            .last_mut()
            .expect("an instruction before the first FROM");
        if keyword == "WORKDIR" {
            stage.workdir = Some(match (&stage.workdir, args.starts_with('/')) {
                (Some(dir), false) => format!("{}/{args}", dir.trim_end_matches('/')),
                _ => args.clone(),
            });
        }
        stage.instructions.push(Instruction { keyword, args });
    }
    stages
}

/// A JSON (exec) form argument list, e.g. `CMD ["dispatcher", "serve"]`.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|_| panic!("use the exec (JSON) form so signals reach the process: {args}"))
}

/// `COPY --from=STAGE SRC DEST` in `stage`, as (stage, src, dest).
fn copies_from_stages(stage: &Stage) -> Vec<(String, String, String)> {
    stage
        .all("COPY")
        .filter_map(|args| {
            let mut from = None;
            let mut paths = Vec::new();
            for word in args.split_whitespace() {
                match word.strip_prefix("--from=") {
                    Some(source) => from = Some(source.to_string()),
                    None if word.starts_with("--") => {}
                    None => paths.push(word.to_string()),
                }
            }
            let from = from?;
            assert_eq!(paths.len(), 2, "one file per COPY --from, please: {args}");
            Some((from, paths[0].clone(), paths[1].clone()))
        })
        .collect()
}

/// `[[bin]]` names of the root package.
fn cargo_bin_names() -> BTreeSet<String> {
    let manifest: toml::Table = toml::from_str(CARGO_TOML).expect("Cargo.toml");
    manifest
        .get("bin")
        .and_then(toml::Value::as_array)
        .expect("[[bin]] in Cargo.toml")
        .iter()
        .map(|bin| {
            bin.get("name")
                .and_then(toml::Value::as_str)
                .expect("bin name")
                .to_string()
        })
        .collect()
}

/// Binaries the runtime image installs from the builder: name → install path.
fn installed_binaries(stages: &[Stage]) -> BTreeMap<String, String> {
    let runtime = stages.last().expect("a stage");
    let mut installed = BTreeMap::new();
    for (from, src, dest) in copies_from_stages(runtime) {
        let builder = stages
            .iter()
            .find(|s| s.name.as_deref() == Some(from.as_str()))
            .unwrap_or_else(|| panic!("COPY --from={from}: no such stage"));
        let workdir = builder
            .workdir
            .as_deref()
            .expect("the builder sets WORKDIR");
        let release_dir = format!("{}/target/release/", workdir.trim_end_matches('/'));
        let name = src.strip_prefix(&release_dir).unwrap_or_else(|| {
            panic!("{src} is not in the builder's release output {release_dir}")
        });
        let dest = if dest.ends_with('/') {
            format!("{dest}{name}")
        } else {
            dest
        };
        installed.insert(name.to_string(), dest);
    }
    installed
}

#[test]
fn dockerfile_parser_understands_stages_continuations_and_copies() {
    let stages = parse_dockerfile(
        "FROM rust:1 AS base\nWORKDIR /src\n# a comment\nFROM base AS b\nWORKDIR sub\nRUN a \\\n  # inner comment\n  && b\n\
         FROM debian\nCOPY --from=b /src/sub/target/release/x /usr/local/bin/\nCMD [\"x\", \"y\"]\n",
    );
    assert_eq!(stages.len(), 3);
    assert_eq!(stages[1].workdir.as_deref(), Some("/src/sub"));
    let run: Vec<&str> = stages[1].last("RUN").unwrap().split_whitespace().collect();
    assert_eq!(run, ["a", "&&", "b"]);
    assert_eq!(stages[2].name, None);
    assert_eq!(
        installed_binaries(&stages),
        BTreeMap::from([("x".to_string(), "/usr/local/bin/x".to_string())])
    );
    assert_eq!(exec_form(stages[2].last("CMD").unwrap()), ["x", "y"]);
}

#[test]
fn dockerfile_ships_this_packages_binaries_where_the_dispatcher_expects_them() {
    let stages = parse_dockerfile(DOCKERFILE);
    assert!(stages.len() >= 2, "a multi-stage build");
    let installed = installed_binaries(&stages);
    let bins = cargo_bin_names();
    let built = built_binaries();
    for name in installed.keys() {
        assert!(
            bins.contains(name),
            "the image copies {name}, which is not a [[bin]] of Cargo.toml ({bins:?})"
        );
        let exe = built
            .get(name.as_str())
            .unwrap_or_else(|| panic!("no CARGO_BIN_EXE for {name}"));
        assert!(Path::new(exe).is_file(), "cargo did not build {exe}");
    }
    assert_eq!(
        installed.get("dispatcher").map(String::as_str),
        Some("/usr/local/bin/dispatcher")
    );
    // Job machines boot the same image with init.exec = [RUNNER_EXEC].
    let runner_exec = serve_env()
        .remove("RUNNER_EXEC")
        .flatten()
        .expect("RUNNER_EXEC has a default");
    assert_eq!(
        installed.get("runner"),
        Some(&runner_exec),
        "the runner must be installed at RUNNER_EXEC's default"
    );

    // The builder builds (at least) what the runtime copies, in release mode.
    let builds: Vec<&str> = stages
        .iter()
        .flat_map(|s| s.all("RUN"))
        .filter(|r| r.contains("cargo build"))
        .collect();
    assert!(
        builds.iter().any(|run| {
            run.contains("--release")
                && (run.contains("--bins")
                    || installed
                        .keys()
                        .all(|name| run.contains(&format!("--bin {name}"))))
        }),
        "no `cargo build --release` of the copied binaries in: {builds:?}"
    );
}

#[test]
fn dockerfile_runs_dispatcher_serve_as_a_non_root_user() {
    let stages = parse_dockerfile(DOCKERFILE);
    let runtime = stages.last().unwrap();
    let mut command: Vec<String> = runtime
        .last("ENTRYPOINT")
        .map(exec_form)
        .unwrap_or_default();
    command.extend(exec_form(runtime.last("CMD").expect("a CMD")));
    assert_eq!(command, ["dispatcher", "serve"]);
    // A bare program name is looked up in PATH; Debian's default PATH has
    // /usr/local/bin.
    let installed = installed_binaries(&stages);
    let dispatcher = Path::new(&installed["dispatcher"]);
    assert_eq!(dispatcher.parent(), Some(Path::new("/usr/local/bin")));

    // `serve` is a real subcommand of the binary that will be installed.
    let help = Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args(&command[1..])
        .arg("--help")
        .output()
        .expect("running the dispatcher");
    assert!(
        help.status.success(),
        "`dispatcher {} --help` failed: {help:?}",
        command[1..].join(" ")
    );

    let exposed: Vec<&str> = runtime
        .all("EXPOSE")
        .flat_map(str::split_whitespace)
        .collect();
    assert!(
        exposed.contains(&DEFAULT_PORT.to_string().as_str()),
        "EXPOSE {DEFAULT_PORT}, got {exposed:?}"
    );

    let user = runtime.last("USER").expect("the runtime stage sets USER");
    let account = user.split(':').next().unwrap();
    assert!(!["root", "0"].contains(&account), "USER {user} is root");
}

// ------------------------------------------------------------ .dockerignore

/// Docker's .dockerignore matching for the patterns it matters here: path
/// components with `*`/`?` globs, `**` for any number of components, `!` to
/// re-include, the last matching line winning. A path is also excluded when
/// one of its parent directories is.
fn dockerignored(patterns: &str, path: &str) -> bool {
    let rules: Vec<(bool, Vec<&str>)> = patterns
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.strip_prefix('!') {
            Some(p) => (false, p),
            None => (true, l),
        })
        .map(|(exclude, p)| {
            (
                exclude,
                p.trim_matches('/')
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .collect(),
            )
        })
        .collect();
    let components: Vec<&str> = path.split('/').collect();
    (1..=components.len()).any(|len| {
        let prefix = &components[..len];
        rules
            .iter()
            .rev()
            .find(|(_, pattern)| glob_path(pattern, prefix))
            .is_some_and(|(exclude, _)| *exclude)
    })
}

fn glob_path(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            glob_path(&pattern[1..], path) || (!path.is_empty() && glob_path(pattern, &path[1..]))
        }
        (Some(p), Some(c)) => {
            glob_component(p.as_bytes(), c.as_bytes()) && glob_path(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

fn glob_component(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_component(&pattern[1..], name)
                || (!name.is_empty() && glob_component(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_component(&pattern[1..], &name[1..]),
        (Some(p), Some(c)) => p == c && glob_component(&pattern[1..], &name[1..]),
        _ => false,
    }
}

#[test]
fn dockerignore_matcher_follows_dockers_rules() {
    let rules = "# c\ntarget/\n**/*.md\n!keep.md\n/.git\n";
    assert!(dockerignored(rules, "target"));
    assert!(dockerignored(rules, "target/release/dispatcher"));
    assert!(!dockerignored(rules, "jobs/target2"));
    assert!(dockerignored(rules, "README.md"));
    assert!(dockerignored(rules, "jobs/src/notes.md"));
    assert!(!dockerignored(rules, "keep.md"));
    assert!(dockerignored(rules, ".git/HEAD"));
    assert!(!dockerignored(rules, "src/main.rs"));
}

/// Every file below `dir`, relative to the repository root.
fn files_under(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files_under(&path, into);
        } else {
            into.push(
                path.strip_prefix(repo_root())
                    .expect("inside the repo")
                    .to_path_buf(),
            );
        }
    }
}

#[test]
fn dockerignore_keeps_build_output_out_and_every_build_input_in() {
    assert!(
        dockerignored(DOCKERIGNORE, "target"),
        ".dockerignore must exclude target/"
    );
    assert!(dockerignored(DOCKERIGNORE, "target/release/dispatcher"));
    assert!(
        dockerignored(DOCKERIGNORE, ".git"),
        ".dockerignore should exclude .git"
    );

    // What `cargo build --locked` reads: the lock file, every manifest and
    // every file under each crate's src/ (include_str! reaches into it).
    let manifest: toml::Table = toml::from_str(CARGO_TOML).expect("Cargo.toml");
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("workspace members");
    let mut crates = vec![String::new()];
    crates.extend(
        members
            .iter()
            .map(|m| format!("{}/", m.as_str().expect("member path"))),
    );
    let mut inputs = vec![PathBuf::from("Cargo.lock")];
    for krate in &crates {
        inputs.push(PathBuf::from(format!("{krate}Cargo.toml")));
        files_under(&repo_root().join(format!("{krate}src")), &mut inputs);
    }
    assert!(
        inputs.len() > crates.len() * 2,
        "found no sources: {inputs:?}"
    );
    for input in inputs {
        let path = input.to_str().expect("utf-8 path");
        assert!(
            !dockerignored(DOCKERIGNORE, path),
            ".dockerignore excludes the build input {path}"
        );
    }
}
