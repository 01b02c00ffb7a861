//! The shipped `runner` binary as a process: it refuses an invalid command
//! configuration with exit code 78, a machine stop (SIGTERM) stops its
//! command's whole process group before it reports, and its command cannot
//! read the attempt's token from it.

use std::process::Stdio;
use std::time::Duration;

use crate::common::{processes_with, spec, wait_until, TestStore};
use runner::{exit, RunnerEnv};
use serde_json::json;

/// The runner binary with a complete environment for `env` (or a made-up
/// one), the given command configuration and nothing else inherited.
fn runner_process(env: Option<&RunnerEnv>, config: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_runner"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match env {
        Some(env) => command
            .env("JOB_ID", env.attempt.job_id.to_string())
            .env("JOB_ATTEMPT", env.attempt.attempt.to_string())
            .env("JOB_TOKEN", &env.attempt.token)
            .env("JOBS_STORE_URL", &env.machine.store_url)
            .env("JOB_HEARTBEAT_MS", env.machine.heartbeat_ms.to_string()),
        None => command
            .env("JOB_ID", jobs::JobId::new().to_string())
            .env("JOB_ATTEMPT", "1")
            .env("JOB_TOKEN", "t")
            // Never reached: the configuration is checked first.
            .env("JOBS_STORE_URL", "redis://127.0.0.1:1"),
    };
    command.envs(config.iter().copied());
    command
}

#[tokio::test]
async fn an_invalid_command_configuration_exits_78_naming_the_problem() {
    let missing = "/nonexistent/runner.toml";
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[
                ("RUNNER_CONFIG", "/dev/null"),
                ("RUNNER_COMMANDS", "report.py"),
            ],
            "RUNNER_COMMANDS: expected value",
        ),
        (
            &[
                ("RUNNER_CONFIG", "/dev/null"),
                ("RUNNER_COMMANDS", r#"{"report": []}"#),
            ],
            r#"the command for kind "report" is empty"#,
        ),
        (
            &[
                ("RUNNER_CONFIG", "/dev/null"),
                ("RUNNER_COMMANDS", r#"{"echo": ["cat"]}"#),
            ],
            r#"kind "echo" has both a Rust handler and a command"#,
        ),
        (
            &[("RUNNER_CONFIG", missing)],
            "cannot read the runner config /nonexistent/runner.toml",
        ),
    ];
    for (config, expected) in cases {
        let output = runner_process(None, config).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(exit::BAD_ENVIRONMENT),
            "{config:?}: {stderr}"
        );
        assert!(stderr.contains(expected), "{config:?}: {stderr}");
        assert!(stderr.contains("runner cannot start"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_command_group_and_the_runner_reports() {
    let store = TestStore::start().await;
    let commands = json!({
        "endless": ["sh", "-c", r#"sh -c 'sleep 300; :' "stray-$JOB_ID" & wait"#],
    });
    let id = store.submit(&spec("endless", json!({}))).await;
    let env = store.claim().await;
    let mut runner = runner_process(
        Some(&env),
        &[
            ("RUNNER_CONFIG", "/dev/null"),
            ("RUNNER_COMMANDS", &commands.to_string()),
        ],
    )
    .spawn()
    .unwrap();
    let marker = format!("stray-{id}");
    wait_until("the command's child runs", || async {
        !processes_with(&marker).is_empty()
    })
    .await;

    // What the Machines API does to stop a machine.
    let pid = runner.id().unwrap() as i32;
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(20), runner.wait())
        .await
        .expect("the runner exits")
        .unwrap();
    assert_eq!(status.code(), Some(exit::HANDLER_FAILED));
    wait_until("the command's child is killed", || async {
        processes_with(&marker).is_empty()
    })
    .await;
    let job = store.job(id).await;
    assert_eq!(
        job.attempts[0].error.as_deref(),
        Some("stopped because the machine is stopping: killed by signal 15 (SIGTERM)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_cannot_read_the_token_from_the_runner() {
    let store = TestStore::start().await;
    // $PPID is the runner.
    let commands = json!({
        "peek": ["sh", "-c", r#"if cat "/proc/$PPID/environ" >/dev/null 2>&1; then echo true; else echo false; fi"#],
    });
    let id = store.submit(&spec("peek", json!({}))).await;
    let env = store.claim().await;
    let mut runner = runner_process(
        Some(&env),
        &[
            ("RUNNER_CONFIG", "/dev/null"),
            ("RUNNER_COMMANDS", &commands.to_string()),
        ],
    );
    // Root reads any process's memory: run the runner as an ordinary user,
    // as the job image does.
    // SAFETY: getuid(2) has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        runner.uid(65534).gid(65534);
    }
    let output = runner.output().await.unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(exit::SUCCEEDED), "{log}");
    let attempt = &env.attempt;
    let job = store.finish(attempt, exit::SUCCEEDED).await;
    assert_eq!(job.id, id);
    assert_eq!(
        job.result,
        Some(json!(false)),
        "the command read the runner's environment"
    );
}
