//! The input side of hardening, against the real server: what a job may
//! set in its machine's environment, write-only secrets (never in a view,
//! list, event, callback or log; gone once the job finishes), bounded
//! schedules, and callbacks that never reach an internal address unless
//! allow-listed.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::support::{listener, spawn_system, spawn_system_with, Options, TestSystem};
use dispatcher::cli::client::ListQuery;
use jobs::JobStatus;
use serde_json::{json, Value};
use tokio::time::Instant;

const WITHIN: Duration = Duration::from_secs(60);
const SECRET: &str = "s3cret-7f1e9c-never-shown";

fn id(job: &Value) -> String {
    job["id"].as_str().unwrap().to_string()
}

/// Every log line of this test binary (dispatcher and mock run
/// in-process), at debug level.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .init();
        buffer
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

/// Waits until the log holds a line with every one of `needles`.
async fn wait_for_log(needles: &[&str]) {
    let deadline = Instant::now() + WITHIN;
    while !logged()
        .lines()
        .any(|line| needles.iter().all(|n| line.contains(n)))
    {
        assert!(Instant::now() < deadline, "no log line with {needles:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn post_json(system: &TestSystem, path: &str, body: &Value) -> (u16, Value) {
    let response = system
        .request(reqwest::Method::POST, path)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn job_count(system: &TestSystem) -> usize {
    let listed = system.api.list(&ListQuery::default()).await.unwrap();
    listed.jobs.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_that_configures_the_runner_loader_or_path_is_refused() {
    let system = spawn_system().await;
    let many: serde_json::Map<String, Value> =
        (0..5000).map(|i| (format!("V{i}"), json!("x"))).collect();
    let cases = [
        (
            json!({"RUNNER_COMMANDS": r#"{"x":["sh","-c","id -u"]}"#}),
            "machine.env",
        ),
        (json!({"RUNNER_CONFIG": "/tmp/evil.toml"}), "machine.env"),
        (json!({"PATH": "/tmp"}), "machine.env"),
        (json!({"LD_PRELOAD": "/tmp/evil.so"}), "machine.env"),
        (json!({"HOME": "/tmp"}), "machine.env"),
        (json!({"BASH_ENV": "$(id)"}), "machine.env"),
        (json!({"JOBS_STORE_URL": "redis://evil"}), "machine.env"),
        (json!({"FLY_API_TOKEN": "x"}), "machine.env"),
        (json!({"A": "nul\u{0}byte"}), "machine.env"),
        (Value::Object(many), "machine.env"),
        (json!({"BIG": "x".repeat(900_000)}), "machine.env"),
    ];
    for (env, field) in cases {
        let body = json!({"kind": "echo", "machine": {"env": env}});
        let (status, error) = post_json(&system, "/jobs", &body).await;
        assert_eq!(
            (status, error["field"].as_str()),
            (422, Some(field)),
            "{error}"
        );
    }
    let (status, error) = post_json(
        &system,
        "/jobs",
        &json!({"kind": "echo", "machine": {"secrets": {"LD_LIBRARY_PATH": "/tmp"}}}),
    )
    .await;
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("machine.secrets"))
    );
    let (status, error) = post_json(
        &system,
        "/jobs",
        &json!({"kind": "echo", "machine": {"region": "zzz"}}),
    )
    .await;
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("machine.region"))
    );
    assert_eq!(job_count(&system).await, 0, "nothing stored");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_never_echoed_and_are_deleted_when_the_job_ends() {
    logs();
    let hook = listener().await;
    let system = spawn_system_with(Options {
        extra_args: vec!["--callback-allow-hosts=127.0.0.1".into()],
        ..Options::default()
    })
    .await;
    let secrets_key = |job: &Value| format!("{{jobs}}:secrets:{}", id(job));

    // What each answer carries on the wire is what this test checks, so
    // the answers stay raw JSON text.
    let submitted = system
        .submit_raw(
            json!({"kind": "sleep", "params": {"ms": 300}, "callback_url": hook.url,
            "machine": {"env": {"MODEL": "small"}, "secrets": {"API_KEY": SECRET}}}),
        )
        .await;
    let job_id = id(&submitted);
    let mut events = system
        .request(reqwest::Method::GET, &format!("/jobs/{job_id}/events"))
        .send()
        .await
        .unwrap();
    let mut sse = String::new();
    tokio::time::timeout(WITHIN, async {
        while let Some(chunk) = events.chunk().await.unwrap() {
            sse.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the stream ends after `done`");
    assert!(sse.contains("event: done"), "{sse}");
    let done = system.wait_for_raw(&job_id, "succeeded", WITHIN).await;
    assert_eq!(done["machine"]["env"]["MODEL"], "small", "env is visible");
    wait_for_log(&["callback delivered", &job_id]).await;
    assert!(
        !system.key_exists(&secrets_key(&submitted)).await,
        "deleted at the end"
    );

    let list = system.get_json("/jobs?limit=100").await;
    let dashboard = system
        .request(reqwest::Method::GET, &format!("/jobs/{job_id}"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let callbacks: Vec<String> = hook
        .bodies()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(callbacks.len(), 1);
    for (what, text) in [
        ("the submit answer", submitted.to_string()),
        ("the job view", done.to_string()),
        ("the list", list.to_string()),
        ("the event stream", sse),
        ("the callback body", callbacks[0].clone()),
        ("the dashboard", dashboard),
        ("the logs", logged()),
    ] {
        assert!(!text.contains(SECRET), "the secret shows in {what}");
    }

    // A job that never runs: its secrets go when it is cancelled.
    let waiting = system
        .submit_raw(json!({"kind": "echo", "delay_secs": 3600,
            "machine": {"secrets": {"API_KEY": SECRET}}}))
        .await;
    assert!(
        system.key_exists(&secrets_key(&waiting)).await,
        "kept while it waits"
    );
    let (status, _) = post_json(
        &system,
        &format!("/jobs/{}/cancel", id(&waiting)),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        !system.key_exists(&secrets_key(&waiting)).await,
        "deleted on cancel"
    );
    let (status, error) = post_json(
        &system,
        &format!("/jobs/{}/retry", id(&waiting)),
        &json!({}),
    )
    .await;
    assert_eq!(
        status, 409,
        "a retry would run without its secrets: {error}"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_refuse_out_of_range_numbers_without_dropping_the_connection() {
    let system = spawn_system().await;
    for every in [
        json!(0),
        json!(31_622_401u64),
        json!(10_000_000_000_000u64),
        json!(u64::MAX),
    ] {
        let body = json!({"every_secs": every, "job": {"kind": "echo"}});
        let (status, error) = post_json(&system, "/schedules", &body).await;
        assert_eq!(
            (status, error["field"].as_str()),
            (422, Some("every_secs")),
            "{every}"
        );
    }
    let cases = [
        (
            json!({"name": "x".repeat(101), "every_secs": 60, "job": {"kind": "echo"}}),
            "name",
        ),
        (
            json!({"name": "a\nb", "every_secs": 60, "job": {"kind": "echo"}}),
            "name",
        ),
        (
            json!({"cron": "* ".repeat(200), "job": {"kind": "echo"}}),
            "cron",
        ),
        (
            json!({"every_secs": 60, "job": {"kind": "echo", "machine": {"secrets": {"K": "v"}}}}),
            "job.machine.secrets",
        ),
        (
            json!({"every_secs": 60, "job": {"kind": "echo", "machine": {"env": {"PATH": "/"}}}}),
            "job.machine.env",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = post_json(&system, "/schedules", &body).await;
        assert_eq!(
            (status, error["field"].as_str()),
            (422, Some(field)),
            "{body}"
        );
    }
    let plain = system
        .request(reqwest::Method::POST, "/schedules")
        .header("content-type", "text/plain")
        .body(json!({"every_secs": 60, "job": {"kind": "echo"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 415);
    assert!(plain.json::<Value>().await.unwrap()["error"].is_string());
    let huge =
        json!({"every_secs": 60, "job": {"kind": "echo", "params": {"x": "x".repeat(2 << 20)}}});
    let (status, error) = post_json(&system, "/schedules", &huge).await;
    assert_eq!(status, 413);
    assert!(error["error"].is_string(), "a JSON error: {error}");
    let listed = system.get_json("/schedules").await;
    assert_eq!(listed["schedules"], json!([]), "nothing stored");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_never_reach_a_loopback_listener_by_default() {
    logs();
    let hook = listener().await;
    let system = spawn_system().await;
    let port = hook
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    for url in [
        hook.url.clone(),
        format!("http://localhost:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
        format!("http://0x7f.1:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        "http://169.254.169.254/latest/meta-data".into(),
        "http://10.0.0.1/".into(),
        "http://[fdaa::3]:8080/".into(),
        "http://my-app.internal/".into(),
        "http://my-app.flycast/".into(),
    ] {
        let (status, error) = post_json(
            &system,
            "/jobs",
            &json!({"kind": "echo", "callback_url": url}),
        )
        .await;
        assert_eq!(
            (status, error["field"].as_str()),
            (422, Some("callback_url")),
            "{url}"
        );
    }
    assert_eq!(job_count(&system).await, 0);

    // A record that names the listener anyway (stored before an upgrade,
    // or by another path) is still not delivered.
    let spec = jobs::JobSpec {
        kind: jobs::Kind::parse("echo").unwrap(),
        params: json!({}),
        priority: 0,
        max_attempts: 1,
        timeout_secs: 60,
        backoff: jobs::Backoff::default(),
        machine: jobs::MachineSpec::default(),
    };
    let options = jobs::EnqueueOptions {
        callback_url: Some(hook.url.clone()),
        ..jobs::EnqueueOptions::default()
    };
    let jobs::Enqueued::Created(job) = system
        .store
        .enqueue(jobs::JobId::new(), &spec, &options)
        .await
        .unwrap()
    else {
        panic!("not created")
    };
    system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
    wait_for_log(&["callback not delivered", &job.id.to_string()]).await;
    assert_eq!(
        hook.hits.load(Ordering::SeqCst),
        0,
        "the listener was reached"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_do_not_follow_redirects() {
    logs();
    let target = listener().await;
    let location = target.url.clone();
    let app = axum::Router::new().fallback(move || {
        let location = location.clone();
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, location)],
            )
        }
    });
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector = format!("http://{}/hook", socket.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(socket, app).await });
    let system = spawn_system_with(Options {
        extra_args: vec!["--callback-allow-hosts=127.0.0.1".into()],
        ..Options::default()
    })
    .await;
    let job = system
        .submit(json!({"kind": "echo", "callback_url": redirector}))
        .await;
    system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
    wait_for_log(&["callback not delivered", &job.id.to_string(), "307"]).await;
    assert_eq!(
        target.hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    system.stop().await;
}
