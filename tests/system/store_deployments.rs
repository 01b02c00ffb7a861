//! The whole system on the store as production runs it: Valkey over TLS
//! with least-privilege ACL users (`deploy/valkey-users.acl`), and a
//! primary + replica under 3 sentinels losing its primary under load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::support::topology::{command, Sentinels, TlsServer};
use crate::support::{poll, spawn_system_with, Options, TestSystem};
use fred::prelude::*;
use futures::FutureExt;
use jobs::{CaCert, JobId, JobStatus, Store, StoreConfig};
use serde_json::json;
use tokio::time::Instant;

const DISPATCHER_PASSWORD: &str = "dispatcher-secret-1";
const RUNNER_PASSWORD: &str = "runner-secret-2";

/// The shipped ACL file with this test's passwords.
fn acl_file(dir: &std::path::Path) -> std::path::PathBuf {
    let shipped = include_str!("../../deploy/valkey-users.acl");
    let path = dir.join("users.acl");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        &path,
        shipped
            .replace("CHANGE-ME-dispatcher-password", DISPATCHER_PASSWORD)
            .replace("CHANGE-ME-runner-password", RUNNER_PASSWORD),
    )
    .unwrap();
    path
}

fn tls_url(user: &str, password: &str, port: u16) -> String {
    format!("rediss://{user}:{password}@127.0.0.1:{port}")
}

/// A raw client as `user`, over TLS, trusting the test's CA.
async fn raw_client(tls: &TlsServer, user: &str, password: &str) -> Store {
    let mut config = StoreConfig::new(tls_url(user, password, tls.tls_port).parse().unwrap());
    config.ca_cert = Some(CaCert::load(&tls.ca.ca_cert).unwrap());
    Store::connect(config).await.unwrap()
}

#[tokio::test]
async fn tls_store_with_least_privilege_users_runs_jobs() {
    let dir = crate::support::topology::scratch("acl");
    let tls = TlsServer::start(&acl_file(&dir)).await;
    let ca = tls.ca.ca_cert.display().to_string();
    let system = spawn_system_with(Options {
        store_url: Some(tls_url("dispatcher", DISPATCHER_PASSWORD, tls.tls_port)),
        runner_store_url: Some(tls_url("runner", RUNNER_PASSWORD, tls.tls_port)),
        extra_args: vec![format!("--valkey-ca-cert={ca}")],
        ..Options::default()
    })
    .await;

    // Runners (real processes) reach the store as `runner`, over TLS.
    let job = system
        .submit(json!({"kind": "echo", "params": {"hello": "tls"}}))
        .await;
    let done = system
        .wait_for(&job.id, JobStatus::Succeeded, Duration::from_secs(30))
        .await;
    assert_eq!(done.result, Some(json!({"hello": "tls"})));
    // A job enqueues children, and a batch with a then job, through the
    // runner's user too (parked: only the store writes count).
    let parked = json!({"kind": "echo", "delay_secs": 3600});
    for (kind, params, shows) in [
        (
            "fan_out",
            json!({"count": 3, "child": parked}),
            "/children/2",
        ),
        (
            "fan_out_batch",
            json!({"count": 3, "child": parked, "then": {"kind": "echo"}}),
            "/batch",
        ),
    ] {
        let parent = system.submit(json!({"kind": kind, "params": params})).await;
        let parent = system
            .wait_for(&parent.id, JobStatus::Succeeded, Duration::from_secs(30))
            .await;
        let result = parent.result.as_ref().expect("a result");
        assert!(
            result
                .pointer(shows)
                .is_some_and(serde_json::Value::is_string),
            "{kind}: {result}"
        );
    }
    system.assert_all_machines_destroyed().await;

    // The runner's user can touch nothing outside its namespace and run
    // nothing but what its scripts need.
    let runner = raw_client(&tls, "runner", RUNNER_PASSWORD).await;
    let refused = [
        ("SET", vec!["elsewhere", "x"]),
        ("GET", vec!["{other}:job:1"]),
        ("DEL", vec!["{jobs}:queue"]),
        ("FLUSHALL", vec![]),
        ("KEYS", vec!["*"]),
        ("CONFIG", vec!["GET", "*"]),
        ("EVAL", vec!["return 1", "0"]),
    ];
    for (name, args) in refused {
        let answer: Result<Value, _> = runner
            .raw_client()
            .custom(
                fred::types::CustomCommand::new_static(name, None, false),
                args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            )
            .await;
        let error = answer.expect_err(name).to_string();
        assert!(error.contains("NOPERM"), "{name}: {error}");
    }
    // ...but can read its job.
    assert!(runner.get(job.id).await.unwrap().is_some());

    // Without the CA the server's certificate is not trusted, and a bad
    // password is refused; neither error shows the password.
    let untrusted = StoreConfig::new(
        tls_url("runner", RUNNER_PASSWORD, tls.tls_port)
            .parse()
            .unwrap(),
    );
    let error = Store::connect(untrusted).await.err().expect("untrusted CA");
    assert!(!error.to_string().contains(RUNNER_PASSWORD), "{error}");
    let mut wrong = StoreConfig::new(tls_url("runner", "wrong-pw", tls.tls_port).parse().unwrap());
    wrong.ca_cert = Some(CaCert::load(&tls.ca.ca_cert).unwrap());
    let error = Store::connect(wrong).await.err().expect("bad password");
    assert!(!error.to_string().contains("wrong-pw"), "{error}");
    system.stop().await;
}

/// One job submission's fate, as its client saw it.
struct Submitted {
    id: JobId,
    /// When the try that was accepted was sent.
    sent_at: Instant,
    accepted_at: Instant,
}

/// Submits job `i` until it is accepted, with the same idempotency key on
/// every try: a submission that failed in the failover is retried, never
/// doubled. Only 503 (no replica acknowledged it in time) and 500 (the
/// store went away mid-call) may come before the 202.
async fn submit_until_accepted(system: &TestSystem, i: usize, deadline: Instant) -> Submitted {
    loop {
        assert!(Instant::now() < deadline, "submissions stalled at job {i}");
        let sent_at = Instant::now();
        let response = system
            .request(reqwest::Method::POST, "/jobs")
            .header("Idempotency-Key", format!("failover-{i}"))
            .json(&json!({"kind": "echo", "params": {"i": i}}))
            .send()
            .await;
        match response {
            Ok(r) if r.status() == 202 || r.status() == 200 => {
                let job: jobs::Job = r.json().await.unwrap();
                return Submitted {
                    id: job.id,
                    sent_at,
                    accepted_at: Instant::now(),
                };
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                eprintln!("job {i}: {status} {body}");
                assert!(
                    status == 503 || status == 500,
                    "unexpected answer {status} {body}"
                );
            }
            Err(e) => panic!("dispatcher unreachable: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sentinel_failover_under_load_loses_no_accepted_job() {
    const JOBS: usize = 300;
    const KILL_AFTER: usize = 150;
    const SUBMITTERS: usize = 8;
    // Two replicas: with durability on, intake needs one left after the
    // other is promoted.
    let mut sentinels = Sentinels::start(2).await;
    let system = spawn_system_with(Options {
        max_machines: 16,
        store_url: Some(sentinels.url()),
        extra_args: vec![
            "--submit-replicas=1".into(),
            "--submit-replicas-timeout-ms=1000".into(),
        ],
        ..Options::default()
    })
    .await;

    // Eight clients submit at once; the primary is killed the moment the
    // 150th job is accepted, with the others' submissions in flight, and
    // they go on through the failover.
    let deadline = Instant::now() + Duration::from_secs(60);
    let next = AtomicUsize::new(0);
    let accepted: Mutex<Vec<Submitted>> = Mutex::new(Vec::with_capacity(JOBS));
    // notify_one keeps its permit until the killer waits for it.
    let kill = tokio::sync::Notify::new();
    let (next, accepted_ref, kill, system_ref) = (&next, &accepted, &kill, &system);
    let submitter = move || async move {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= JOBS {
                return;
            }
            let submitted = submit_until_accepted(system_ref, i, deadline).await;
            let mut accepted = accepted_ref.lock().unwrap();
            accepted.push(submitted);
            if accepted.len() == KILL_AFTER {
                kill.notify_one();
            }
        }
    };
    let primary = &mut sentinels.primary;
    let killer = async move {
        kill.notified().await;
        primary.kill().await;
        Instant::now()
    };
    let (killed_at, ()) = tokio::join!(
        killer,
        futures::future::join_all((0..SUBMITTERS).map(|_| submitter())).map(drop)
    );
    let accepted = accepted.into_inner().unwrap();
    assert_eq!(accepted.len(), JOBS);
    let first_after_kill = accepted
        .iter()
        .filter(|s| s.sent_at >= killed_at)
        .map(|s| s.accepted_at - killed_at)
        .min()
        .expect("jobs were submitted after the kill");

    // Every accepted job finishes, on the promoted replica. One at a time:
    // they run in parallel, so by the time one is final most are.
    let finish_deadline = Instant::now() + Duration::from_secs(90);
    for submitted in &accepted {
        let id = submitted.id;
        let left = finish_deadline.saturating_duration_since(Instant::now());
        let job = poll(
            &format!("accepted job {id} final"),
            left,
            || system.store.get(id),
            |job| matches!(job, Ok(Some(job)) if job.status.is_terminal()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(job.status, JobStatus::Succeeded, "{id}: {job:?}");
    }
    let all_succeeded_after_kill = killed_at.elapsed();
    let promoted = sentinels.primary_port().await;
    assert!(sentinels.replicas.iter().any(|r| r.port() == promoted));
    system.assert_all_machines_destroyed().await;
    println!(
        "failover: {JOBS} jobs accepted and succeeded; after kill -9 of the primary the first 202 to a request sent after it came {:.2} s later, all had succeeded {:.1} s after it",
        first_after_kill.as_secs_f64(),
        all_succeeded_after_kill.as_secs_f64()
    );
    let role: Vec<Value> = command(promoted, "ROLE", vec![]).await.convert().unwrap();
    assert_eq!(role[0].as_str().as_deref(), Some("master"));
    system.stop().await;
}

#[tokio::test]
async fn durability_mode_refuses_to_acknowledge_a_job_no_replica_has() {
    // The test's store has no replica, so `WAIT 1` can never be satisfied.
    let system = spawn_system_with(Options {
        max_machines: 0,
        extra_args: vec![
            "--submit-replicas=1".into(),
            "--submit-replicas-timeout-ms=200".into(),
        ],
        ..Options::default()
    })
    .await;
    for _ in 0..2 {
        let response = system
            .request(reqwest::Method::POST, "/jobs")
            .header("Idempotency-Key", "durable-1")
            .json(&json!({"kind": "echo", "params": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        let body: serde_json::Value = response.json().await.unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("retry with the same Idempotency-Key"),
            "{error}"
        );
    }
    system.stop().await;
}

#[test]
fn a_bad_store_url_is_refused_at_startup_naming_the_part() {
    use clap::Parser;
    let settings = |url: &str| {
        let cli = dispatcher::cli::Cli::parse_from(["dispatcher", "dev", "--valkey-url", url]);
        let dispatcher::cli::Command::Dev(args) = cli.command else {
            unreachable!()
        };
        let machines = machines::ClientConfig::new("http://127.0.0.1:1", "app", "token");
        args.common
            .settings(
                "127.0.0.1:0".parse().unwrap(),
                machines,
                "image".into(),
                vec!["runner".into()],
                url.into(),
            )
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    };
    let error = settings("redis-sentinel://jobs:hunter2@s1.internal").unwrap_err();
    assert!(error.starts_with("--valkey-url (VALKEY_URL): "), "{error}");
    assert!(
        error.contains("master: a Sentinel URL names its master set"),
        "{error}"
    );
    assert!(error.contains("jobs:***@s1.internal"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
    let error = settings("redis://u:hunter2@[fdaa::3]:6379?nodes=x").unwrap_err();
    assert!(error.contains("unknown parameter `nodes`"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
    settings("redis-cluster://[fdaa::3]:6379?node=[fdaa::4]:6379").unwrap();
}
