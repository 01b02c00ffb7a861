//! Run management end to end: jobs that enqueue jobs (keyed, fenced by
//! the parent's attempt), tags, bulk cancel and retry by filter, expiry,
//! retry with overrides and the OOM ladder on the mock's enforced memory.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{spawn_system, spawn_system_with, Options, TestSystem};
use dispatcher::cli::client::{BulkFilter, ListQuery};
use jobs::{AttemptRef, ChildEnqueued, EnqueueOptions, Job, JobId, JobStatus, Outcome};
use reqwest::Method;
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(60);

fn id(job: &Value) -> String {
    job["id"].as_str().unwrap().to_string()
}

/// `POST path` with a JSON body: status and answer, as on the wire (for
/// refusals naming a field, and options the typed client has no call for).
async fn post(system: &TestSystem, path: &str, body: Value) -> (u16, Value) {
    let response = system
        .request(Method::POST, path)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Every job a listing filter matches, following its cursor.
pub(crate) async fn list_all(system: &TestSystem, query: ListQuery) -> Vec<Job> {
    let mut query = ListQuery {
        limit: Some(200),
        ..query
    };
    let mut jobs = Vec::new();
    loop {
        let page = system.api.list(&query).await.unwrap();
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(next) => query.cursor = Some(next),
            None => return jobs,
        }
    }
}

fn by_tag(tag: &str) -> ListQuery {
    ListQuery {
        tag: Some(tag.into()),
        ..ListQuery::default()
    }
}

fn by_tag_and_status(tag: &str, status: JobStatus) -> ListQuery {
    ListQuery {
        status: Some(status),
        ..by_tag(tag)
    }
}

pub(crate) fn children_of(parent: JobId) -> ListQuery {
    ListQuery {
        parent: Some(parent.to_string()),
        ..ListQuery::default()
    }
}

/// A child that waits an hour: children stay stored without each needing
/// a machine, so a test with a hundred of them stays quick.
fn parked_child() -> Value {
    json!({"kind": "echo", "delay_secs": 3600, "tags": ["child"]})
}

/// Runs a demo job of `kind` that crashes on its first attempt: the job,
/// succeeded on its second.
pub(crate) async fn crashed_once(system: &TestSystem, kind: &str, params: Value) -> Job {
    let parent = system
        .submit(json!({
            "kind": kind,
            "params": params,
            "max_attempts": 2,
            "backoff": {"base_ms": 100, "max_ms": 100, "jitter": false}
        }))
        .await;
    let parent = system
        .wait_for(&parent.id, JobStatus::Succeeded, WITHIN)
        .await;
    let attempts = &parent.attempts;
    assert_eq!(attempts.len(), 2, "{parent:#?}");
    assert_eq!(attempts[0].outcome, Some(Outcome::Crashed), "{parent:#?}");
    parent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_that_crashes_half_way_ends_with_exactly_100_children() {
    let system = spawn_system().await;
    let parent = crashed_once(
        &system,
        "fan_out",
        json!({"count": 100, "crash_after": 50, "child": parked_child()}),
    )
    .await;

    let children = list_all(&system, children_of(parent.id)).await;
    assert_eq!(children.len(), 100, "exactly one child per key");
    let keys: BTreeSet<&str> = children
        .iter()
        .map(|c| c.child_key.as_deref().unwrap())
        .collect();
    assert_eq!(keys.len(), 100);
    assert!(children.iter().all(|c| c.parent == Some(parent.id)));
    let result = parent.result.as_ref().expect("a result");
    let returned: BTreeSet<String> = result["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let listed: BTreeSet<String> = children.iter().map(|c| c.id.to_string()).collect();
    assert_eq!(returned, listed, "the retry found the first 50 again");
    // Children are jobs like any other: the tag filter finds them too.
    assert_eq!(list_all(&system, by_tag("child")).await.len(), 100);
    system.stop().await;
}

/// A parent in its first attempt (a 1.5 s sleep), as a runner holds it,
/// and the policy the dispatchers published: to enqueue as it, or as a
/// zombie of it.
pub(crate) struct RunningParent {
    pub id: JobId,
    pub token: String,
    pub policy: dispatcher::api::children::ChildPolicy,
}

impl RunningParent {
    pub async fn start(system: &TestSystem) -> Self {
        let parent = system
            .submit(json!({"kind": "sleep", "params": {"ms": 1500}}))
            .await;
        let id = system
            .wait_for(&parent.id, JobStatus::Running, WITHIN)
            .await
            .id;
        let store = system.raw_store().await;
        let token: String =
            fred::interfaces::HashesInterface::hget(&store, format!("{{jobs}}:job:{id}"), "token")
                .await
                .unwrap();
        let _ = fred::interfaces::ClientLike::quit(&store).await;
        let policy = dispatcher::api::children::load_policy(&system.store)
            .await
            .unwrap()
            .expect("the dispatcher published its policy");
        Self { id, token, policy }
    }

    /// Its attempt, proven by `token`.
    pub fn attempt(&self, token: &str) -> AttemptRef {
        AttemptRef {
            job_id: self.id,
            attempt: 1,
            token: token.to_string(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_attempt_cannot_enqueue_children() {
    let system = spawn_system().await;
    let parent = RunningParent::start(&system).await;
    let (parent_id, token) = (parent.id, parent.token.clone());
    let attempt = |token: &str| parent.attempt(token);
    let (spec, options) =
        dispatcher::api::children::parse_child(parked_child(), &parent.policy, chrono::Utc::now())
            .unwrap();
    let enqueue = |a: AttemptRef, key: &'static str, options: EnqueueOptions| {
        let (store, spec) = (system.store.clone(), spec.clone());
        async move { store.enqueue_child(&a, key, &spec, &options).await.unwrap() }
    };

    let current = enqueue(attempt(&token), "a", options.clone()).await;
    assert!(matches!(current, ChildEnqueued::Created(_)), "{current:?}");
    let again = enqueue(attempt(&token), "a", options.clone()).await;
    assert_eq!(
        again.id(),
        current.id(),
        "the same key finds the same child"
    );
    let forged = enqueue(attempt("not-the-token"), "b", options.clone()).await;
    assert!(matches!(forged, ChildEnqueued::Stale), "{forged:?}");

    system
        .wait_for(&parent_id, JobStatus::Succeeded, WITHIN)
        .await;
    let late = enqueue(attempt(&token), "c", options).await;
    assert!(matches!(late, ChildEnqueued::Stale), "{late:?}");
    let children = list_all(&system, children_of(parent.id)).await;
    assert_eq!(children.len(), 1, "{children:#?}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_filter_listings_and_bulk_actions_go_page_by_page() {
    let system = spawn_system().await;
    let mut nightly = Vec::new();
    for n in 0..5 {
        let job = system
            .submit(
                json!({"kind": "echo", "delay_secs": 3600, "params": {"n": n},
                "tags": ["nightly", format!("n={n}")]}),
            )
            .await;
        nightly.push(job.id);
    }
    let other = system
        .submit(json!({"kind": "echo", "delay_secs": 3600, "tags": ["adhoc"]}))
        .await;
    let listed = list_all(&system, by_tag("nightly")).await;
    assert_eq!(listed.len(), 5);
    let tags: Vec<&str> = listed[0].tags.iter().map(|t| t.as_str()).collect();
    assert_eq!(tags, ["nightly", "n=4"]);
    let one = list_all(&system, by_tag_and_status("n=2", JobStatus::Scheduled)).await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id, nightly[2]);
    // The dashboard shows tags as links and filters by one.
    let page = crate::support::send_text(
        system
            .request(Method::GET, "/?tag=n%3D2")
            .header("accept", "text/html"),
    )
    .await;
    assert!(page.contains(&nightly[2].to_string()), "{page}");
    assert!(
        !page.contains(&nightly[1].to_string()) && !page.contains(&other.id.to_string()),
        "{page}"
    );
    assert!(page.contains("href=\"/?tag=nightly\""), "{page}");

    let nightly_filter = BulkFilter {
        tag: Some("nightly".into()),
        ..BulkFilter::default()
    };
    let dry = system
        .api
        .bulk("cancel", &nightly_filter, true, None)
        .await
        .unwrap();
    assert_eq!((dry.matched, dry.changed), (5, 5), "{dry:?}");
    assert_eq!(
        list_all(&system, by_tag_and_status("nightly", JobStatus::Scheduled))
            .await
            .len(),
        5
    );

    // Two jobs per request: three requests, following the cursor (`limit`
    // has no typed call: raw).
    let mut cursor = Value::Null;
    let mut cancelled = 0;
    let mut requests = 0;
    loop {
        let (status, page) = post(
            &system,
            "/jobs/bulk/cancel",
            json!({"tag": "nightly", "limit": 2, "cursor": cursor}),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        requests += 1;
        cancelled += page["changed"].as_u64().unwrap();
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!((cancelled, requests), (5, 3));
    assert_eq!(
        list_all(&system, by_tag_and_status("nightly", JobStatus::Cancelled))
            .await
            .len(),
        5
    );
    assert_eq!(system.job(&other.id).await.status, JobStatus::Scheduled);

    let cancelled_filter = BulkFilter {
        status: Some(JobStatus::Cancelled),
        ..nightly_filter
    };
    let retried = system
        .api
        .bulk("retry", &cancelled_filter, false, None)
        .await
        .unwrap();
    assert_eq!(retried.changed, 5, "{retried:?}");
    system
        .wait_for(&nightly[0], JobStatus::Succeeded, WITHIN)
        .await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_not_started_in_time_expires() {
    let system = spawn_system_with(Options {
        max_machines: 1,
        ..Options::default()
    })
    .await;
    let blocker = system
        .submit(json!({"kind": "sleep", "params": {"ms": 4000}}))
        .await;
    system
        .wait_for(&blocker.id, JobStatus::Running, WITHIN)
        .await;
    let late = system
        .submit(json!({"kind": "echo", "expire_after_secs": 1}))
        .await;
    assert!(late.expire_at.is_some(), "{late:#?}");
    let late = system.wait_for(&late.id, JobStatus::Expired, WITHIN).await;
    assert!(late.attempts.is_empty(), "{late:#?}");
    assert!(
        late.error.as_deref().unwrap().contains("expired"),
        "{late:#?}"
    );
    let metrics = crate::support::send_text(system.request(Method::GET, "/metrics")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("status=\"expired\"") && l.ends_with(" 1")),
        "{metrics}"
    );
    // Started in time, a job with an expiry runs as any other.
    let prompt = system
        .submit(json!({"kind": "echo", "expire_after_secs": 60}))
        .await;
    system
        .wait_for(&prompt.id, JobStatus::Succeeded, WITHIN)
        .await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_retries_with_overrides() {
    let system = spawn_system().await;
    let job = system
        .submit(json!({"kind": "fail", "params": {"permanent": true},
            "machine": {"env": {"KEEP": "1"}}}))
        .await;
    system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    // The refusals' fields and the answer's status are the contract: raw.
    let path = format!("/jobs/{}/retry", job.id);

    let (status, refused) = post(&system, &path, json!({"machine": {"memory_mb": 300}})).await;
    assert_eq!(
        (status, refused["field"].clone()),
        (422, json!("machine.memory_mb"))
    );
    let (status, refused) = post(
        &system,
        &path,
        json!({"machine": {"env": {"LD_PRELOAD": "/x.so"}}}),
    )
    .await;
    assert_eq!(
        (status, refused["field"].clone()),
        (422, json!("machine.env"))
    );
    assert_eq!(
        system.job(&job.id).await.status,
        JobStatus::Failed,
        "nothing changed"
    );

    let (status, retried) = post(
        &system,
        &path,
        json!({"machine": {"memory_mb": 512, "env": {"ADDED": "2"}}, "timeout_secs": 30}),
    )
    .await;
    assert_eq!(status, 200, "{retried}");
    let retried: Job = serde_json::from_value(retried).unwrap();
    assert_eq!(retried.machine.memory_mb, 512);
    let env: Vec<(&str, &str)> = retried
        .machine
        .env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    assert_eq!(env, [("ADDED", "2"), ("KEEP", "1")]);
    assert_eq!(retried.timeout_secs, 30);
    let job = system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    assert_eq!(job.attempts.len(), 2);
    let second = job.attempts[1].machine_id.as_deref().unwrap();
    let machine = system
        .machines(true)
        .await
        .into_iter()
        .find(|m| m.id == second)
        .expect("the second attempt's machine");
    assert_eq!(machine.config.guest.unwrap().memory_mb, 512);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oom_ladder_moves_from_256_to_512_mb() {
    let system = spawn_system().await;
    let job = system
        .submit(json!({
            "kind": "allocate", "params": {"mb": 300, "hold_ms": 1000},
            "machine": {"memory_mb": 256},
            "oom_ladder": {"max_memory_mb": 512},
            "backoff": {"base_ms": 100, "max_ms": 100, "jitter": false}
        }))
        .await;
    let job = system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
    let attempts = &job.attempts;
    assert_eq!(attempts.len(), 2, "{job:#?}");
    assert_eq!(attempts[0].outcome, Some(Outcome::Oom), "{job:#?}");
    assert_eq!(attempts[1].outcome, Some(Outcome::Succeeded), "{job:#?}");
    assert_eq!(job.machine.memory_mb, 512);
    assert_eq!(job.result.as_ref().unwrap()["allocated_mb"], 300);
    assert!(system.mock_stats().oom_kills >= 1);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_run_management_input_is_refused_and_nothing_is_stored() {
    let system = spawn_system().await;
    for (body, field) in [
        (json!({"kind": "echo", "tags": ["has space"]}), "tags"),
        (
            json!({"kind": "echo", "tags": (0..17).map(|n| format!("t{n}")).collect::<Vec<_>>()}),
            "tags",
        ),
        (
            json!({"kind": "echo", "expire_after_secs": 0}),
            "expire_after_secs",
        ),
        (
            json!({"kind": "echo", "delay_secs": 10, "expire_after_secs": 5}),
            "expire_after_secs",
        ),
        (
            json!({"kind": "echo", "oom_ladder": {"max_memory_mb": 256}}),
            "oom_ladder.max_memory_mb",
        ),
        (
            json!({"kind": "echo", "oom_ladder": {"max_memory_mb": 9999}}),
            "oom_ladder.max_memory_mb",
        ),
        (
            json!({"kind": "echo", "oom_ladder": {"max": 512}}),
            "oom_ladder.max",
        ),
    ] {
        let (status, answer) = post(&system, "/jobs", body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    for (body, field) in [
        (json!({"dry_run": true}), "status"),
        (json!({"tag": "x", "limit": 501}), "limit"),
        (json!({"tag": "bad tag"}), "tag"),
        (json!({"status": "done"}), "status"),
    ] {
        let (status, answer) = post(&system, "/jobs/bulk/cancel", body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    let bad_list = system
        .request(Method::GET, "/jobs?tag=no%20spaces")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_list.status(), 400);
    let queued = ListQuery {
        status: Some(JobStatus::Queued),
        ..ListQuery::default()
    };
    assert!(list_all(&system, queued).await.is_empty());
    assert!(list_all(&system, ListQuery::default()).await.is_empty());
    system.stop().await;
}

/// A command that sends each of its params' `requests` as one line on
/// the runner's children socket, and returns the answers.
const SOCKET_PY: &str = r#"
import json, os, socket, sys
requests = json.load(sys.stdin)["requests"]
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["JOB_CHILDREN_SOCKET"])
f = s.makefile("rw")
answers = []
for request in requests:
    f.write(json.dumps(request) + "\n")
    f.flush()
    answers.append(json.loads(f.readline()))
print(json.dumps(answers))
"#;

/// A system whose runners run [`SOCKET_PY`] for the kind `socket-py`;
/// `extra_args` go to its dispatcher.
pub(crate) async fn system_with_socket_command(extra_args: Vec<String>) -> TestSystem {
    spawn_system_with(Options {
        extra_args,
        mock: |config| {
            let commands = json!({"socket-py": ["python3", "-c", SOCKET_PY]});
            // As the job image's `ENV RUNNER_COMMANDS=...` would.
            config
                .image_env
                .insert("RUNNER_COMMANDS".into(), commands.to_string());
        },
        ..Options::default()
    })
    .await
}

/// Runs a job sending `requests` over the socket: the job, succeeded, and
/// the answers.
pub(crate) async fn over_the_socket(system: &TestSystem, requests: Value) -> (Job, Vec<Value>) {
    let parent = system
        .submit(json!({"kind": "socket-py", "params": {"requests": requests}}))
        .await;
    let parent = system
        .wait_for(&parent.id, JobStatus::Succeeded, WITHIN)
        .await;
    // The socket's answers are its wire format: JSON.
    let answers = parent
        .result
        .as_ref()
        .and_then(Value::as_array)
        .expect("answers")
        .clone();
    (parent, answers)
}

/// A command enqueuing children over the runner's socket: a good one
/// without a key, the same key twice, and one the parser refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_enqueues_children_through_the_runners_socket() {
    let system = system_with_socket_command(Vec::new()).await;
    let parked = json!({"kind": "echo", "delay_secs": 3600});
    let (parent, answers) = over_the_socket(
        &system,
        json!([
            {"job": parked},
            {"key": "k", "job": parked},
            {"key": "k", "job": parked},
            {"job": {"kind": "echo", "machine": {"image": "evil/miner"}}},
            "not a request",
        ]),
    )
    .await;
    assert_eq!(answers[0]["key"], "#1", "{answers:#?}");
    assert_eq!(answers[0]["existing"], false);
    assert_eq!(answers[1]["existing"], false);
    assert_eq!(answers[2]["existing"], true, "the same key, the same child");
    assert_eq!(answers[2]["id"], answers[1]["id"]);
    assert_eq!(answers[3]["field"], "machine.image", "{answers:#?}");
    assert!(answers[4]["error"].is_string());
    let children = list_all(&system, children_of(parent.id)).await;
    assert_eq!(children.len(), 2);
    system.stop().await;
}

/// Runs `dispatcher jobs ARGS --json` against `system`; its JSON answer.
async fn cli(system: &TestSystem, args: &[&str]) -> Value {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .arg("jobs")
        .args(args)
        .arg("--json")
        .env("DISPATCHER_URL", &system.base)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {err}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_tags_filters_bulk_cancels_and_retries_with_overrides() {
    let system = spawn_system().await;
    let submitted = cli(
        &system,
        &[
            "submit",
            "echo",
            "--tag",
            "cli",
            "--tag",
            "team=a",
            "--delay-secs",
            "3600",
            "--expire-after-secs",
            "7200",
            "--oom-max-memory-mb",
            "1024",
        ],
    )
    .await;
    assert_eq!(submitted["tags"], json!(["cli", "team=a"]));
    assert_eq!(submitted["oom_ladder"]["max_memory_mb"], 1024);
    let page = cli(&system, &["list", "--tag", "team=a"]).await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);

    let dry = cli(&system, &["cancel-all", "--tag", "cli", "--dry-run"]).await;
    assert_eq!(dry, json!({"dry_run": true, "matched": 1, "changed": 1}));
    let submitted_id = id(&submitted).parse().unwrap();
    assert_eq!(system.job(&submitted_id).await.status, JobStatus::Scheduled);
    let done = cli(&system, &["cancel-all", "--tag", "cli"]).await;
    assert_eq!(done["changed"], 1);
    assert_eq!(system.job(&submitted_id).await.status, JobStatus::Cancelled);

    let retried = cli(
        &system,
        &[
            "retry",
            &id(&submitted),
            "--memory-mb",
            "512",
            "--env",
            "MODE=fast",
            "--timeout-secs",
            "45",
        ],
    )
    .await;
    assert_eq!(retried["machine"]["memory_mb"], 512);
    assert_eq!(retried["machine"]["env"]["MODE"], "fast");
    assert_eq!(retried["timeout_secs"], 45);
    system
        .wait_for(&submitted_id, JobStatus::Succeeded, WITHIN)
        .await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_follows_every_job_with_a_tag_and_no_other() {
    let system = spawn_system().await;
    let mut stream = system
        .request(Method::GET, "/jobs/events?tag=watched")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let other = system.submit(json!({"kind": "echo"})).await;
    let watched = system
        .submit(json!({"kind": "echo", "tags": ["watched"]}))
        .await;
    let watched_id = watched.id.to_string();
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                    .unwrap_or("{}");
                let job: Value = serde_json::from_str(data).unwrap();
                if let (Some(job_id), Some(status)) = (job["id"].as_str(), job["status"].as_str()) {
                    seen.push((job_id.to_string(), status.to_string()));
                    if job_id == watched_id && status == "succeeded" {
                        return;
                    }
                }
            }
        }
    };
    tokio::time::timeout(WITHIN, read)
        .await
        .expect("the watched job's events");
    assert!(
        seen.iter().all(|(job_id, _)| *job_id == watched_id),
        "{seen:?}"
    );
    let statuses: Vec<&str> = seen.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(statuses.first(), Some(&"queued"), "{seen:?}");
    system
        .wait_for(&other.id, JobStatus::Succeeded, WITHIN)
        .await;
    system.stop().await;
}
