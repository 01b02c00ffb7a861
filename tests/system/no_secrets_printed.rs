//! Secrets stay out of what the project prints and out of job code, with
//! the real binaries: the store's password is redacted when the store is
//! unreachable at startup, and under `dispatcher dev` a job that prints
//! its whole environment sees none of the dispatcher's secrets (the mock
//! gives a machine only its image's env, its own env and Fly's variables).

use std::process::Stdio;
use std::time::Duration;

use crate::support::{free_port, TempDir};
use dispatcher::cli::client::ApiClient;
use jobs::{Job, JobStatus};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio::time::Instant;

const WITHIN: Duration = Duration::from_secs(60);
const STORE_PASSWORD: &str = "store-password-hunter2";
const API_TOKEN: &str = "dev-api-token-must-stay-secret";
const CALLBACK_SECRET: &str = "callback-secret-must-stay-secret";
const FLY_TOKEN: &str = "fly-token-must-stay-secret";

/// Prints the job's environment as one JSON line: its result.
const PRINT_ENV: &str = "import json, os; print(json.dumps(dict(os.environ)))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_reported_without_its_password() {
    let closed = free_port().await;
    let url = format!("redis://default:{STORE_PASSWORD}@127.0.0.1:{closed}");
    let run = Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args(["serve", "--valkey-url", &url, "--api-tokens", API_TOKEN])
        .args(["--app", "a", "--fly-api-token", FLY_TOKEN, "--image", "i"])
        .args([
            "--port",
            &free_port().await.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .env_remove("VALKEY_URL")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WITHIN, run)
        .await
        .expect("serve gives up on an unreachable store")
        .unwrap();
    assert!(!output.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains(&format!("redis://default:***@127.0.0.1:{closed}")),
        "{printed}"
    );
    for secret in [STORE_PASSWORD, API_TOKEN, FLY_TOKEN] {
        assert!(!printed.contains(secret), "{secret} printed: {printed}");
    }
}

/// `dispatcher dev`, stopped with SIGTERM (so it stops the store it
/// started) when dropped.
struct Dev {
    child: Child,
    base: String,
    _dir: TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on the pid of a child we spawned and still own.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.start_kill();
    }
}

async fn start_dev() -> Dev {
    let dir = TempDir::new();
    let port = free_port().await;
    let commands = json!({"env": ["python3", "-c", PRINT_ENV]});
    let child = Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .arg("dev")
        .args(["--port", &port.to_string()])
        .args(["--machines-port", &free_port().await.to_string()])
        .arg(format!(
            "--valkey-url=redis://127.0.0.1:{}",
            free_port().await
        ))
        .current_dir(&dir.path)
        .env("DISPATCHER_API_TOKENS", API_TOKEN)
        .env("CALLBACK_SECRET", CALLBACK_SECRET)
        .env("FLY_API_TOKEN", FLY_TOKEN)
        // What an image's `ENV RUNNER_COMMANDS=...` sets.
        .env("RUNNER_COMMANDS", commands.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dev = Dev {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WITHIN;
    loop {
        let health = http.get(format!("{}/healthz", dev.base)).send().await;
        if health.is_ok_and(|h| h.status().is_success()) {
            return dev;
        }
        assert!(Instant::now() < deadline, "dispatcher dev did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_job_that_prints_its_environment_sees_no_dispatcher_secret() {
    let dev = start_dev().await;
    let http = reqwest::Client::new();
    let submitted = ApiClient::new(&dev.base, Some(API_TOKEN.into()))
        .submit_request(&json!({"kind": "env"}))
        .await
        .expect("submitted");
    let id = submitted.id.to_string();
    let job: Job = http
        .get(format!("{}/jobs/{id}?wait=60", dev.base))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Succeeded, "{job:#?}");
    let env = job.result.as_ref().and_then(Value::as_object);
    let env = env.expect("the environment");
    // It ran on a (mock) machine: Fly's variables and the runner's own.
    assert_eq!(env["JOB_ID"], id.as_str());
    assert!(env.contains_key("FLY_MACHINE_ID"), "{env:?}");
    for secret in [API_TOKEN, CALLBACK_SECRET, FLY_TOKEN] {
        let leaked: Vec<_> = env
            .iter()
            .filter(|(_, value)| value.as_str().is_some_and(|v| v.contains(secret)))
            .map(|(name, _)| name)
            .collect();
        assert!(
            leaked.is_empty(),
            "{secret} visible to job code as {leaked:?}"
        );
    }
    for name in ["DISPATCHER_API_TOKENS", "CALLBACK_SECRET", "FLY_API_TOKEN"] {
        assert!(!env.contains_key(name), "{name} visible to job code");
    }
}

/// Callbacks and the CLI report reqwest's errors, which name the URL:
/// reqwest itself moves a URL's user-info into an `Authorization` header
/// before sending, so its errors never carry the password. This guards
/// that behaviour of the dependency.
#[tokio::test]
async fn transport_errors_name_the_url_without_its_credentials() {
    let closed = free_port().await;
    let url = format!("http://hook-user:{STORE_PASSWORD}@127.0.0.1:{closed}/hook");
    let error = reqwest::Client::new().post(&url).send().await.unwrap_err();
    let printed = format!("{error} {error:?}");
    assert!(
        printed.contains(&format!("127.0.0.1:{closed}/hook")),
        "{printed}"
    );
    assert!(!printed.contains(STORE_PASSWORD), "{printed}");
}
