//! Flow control (docs/flow-control.md): fair queueing across concurrency
//! keys with its starvation bound counted in claims, per-key limits held
//! across owners and released with the slot (takeover included), rate
//! limits across three dispatchers, each singleton policy, debounce, and
//! pause/resume across two dispatchers.
//!
//! The fairness tests drive the store the way launchers do (claim, then
//! release the slot when its machine is gone) so they count slot
//! turnovers exactly; the rest run the real system.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{poll, spawn_system_with, start_valkey, Options, TempDir, TestSystem};
use dispatcher::cli::client::ListQuery;
use futures::StreamExt as _;
use jobs::{
    Backoff, Claim, EnqueueOptions, Enqueued, FlowKey, FlowOptions, Job, JobId, JobSpec, JobStatus,
    Kind, MachineSpec, Owned, Store, StoreConfig,
};
use reqwest::Method;
use serde_json::{json, Value};

const LEASE: Duration = Duration::from_secs(30);
const WITHIN: Duration = Duration::from_secs(60);

/// A store on its own server, for the tests that count claims.
struct StoreOnly {
    store: Store,
    _server: devkit::valkey::LocalValkey,
    _dir: TempDir,
}

async fn store_only() -> StoreOnly {
    let dir = TempDir::new();
    let server = start_valkey(&dir.path.join("valkey"), None).await;
    let store = Store::connect(StoreConfig::new(server.address()))
        .await
        .unwrap();
    StoreOnly {
        store,
        _server: server,
        _dir: dir,
    }
}

fn spec(kind: &str) -> JobSpec {
    JobSpec {
        kind: Kind::parse(kind).unwrap(),
        params: json!({}),
        priority: 0,
        max_attempts: 1,
        timeout_secs: 60,
        backoff: Backoff::default(),
        machine: MachineSpec::default(),
    }
}

async fn enqueue_keyed(store: &Store, kind: &str, key: &str) -> JobId {
    let options = EnqueueOptions {
        flow: FlowOptions {
            concurrency_key: Some(FlowKey::parse(key).unwrap()),
            ..FlowOptions::default()
        },
        ..EnqueueOptions::default()
    };
    match store
        .enqueue(JobId::new(), &spec(kind), &options)
        .await
        .unwrap()
    {
        Enqueued::Created(job) => job.id,
        other => panic!("not created: {other:?}"),
    }
}

/// Enqueues `count` jobs for tenant A, spread round-robin over `keys`
/// keys, 64 at a time.
async fn enqueue_tenant_a(store: &Store, count: usize, keys: usize) {
    futures::stream::iter(0..count)
        .map(|i| {
            let key = format!("tenant-a-{}", i % keys);
            async move { enqueue_keyed(store, "echo", &key).await }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
}

async fn claim(store: &Store, slots: u32, owner: &str, lease: Duration) -> Option<(JobId, Owned)> {
    match store.claim(slots, "{}", owner, lease).await.unwrap() {
        Claim::Claimed { job, attempt } => Some((job.id, attempt)),
        Claim::Full | Claim::Empty { .. } => None,
    }
}

/// Tenant A enqueues `a_jobs` over `a_keys` keys and fills both slots;
/// then tenant B enqueues one job. Slots turn over (the oldest is
/// released, one claim) until B's job is claimed. Answers how many claims
/// that took, B's included.
async fn claims_until_b_starts(a_jobs: usize, a_keys: usize) -> usize {
    const SLOTS: u32 = 2;
    let s = store_only().await;
    enqueue_tenant_a(&s.store, a_jobs, a_keys).await;
    let mut held = std::collections::VecDeque::new();
    for _ in 0..SLOTS {
        held.push_back(claim(&s.store, SLOTS, "d1", LEASE).await.unwrap().1);
    }
    assert!(
        claim(&s.store, SLOTS, "d1", LEASE).await.is_none(),
        "the slots are full"
    );
    let b = enqueue_keyed(&s.store, "echo", "tenant-b").await;
    for claims in 1..=a_jobs {
        let oldest = held.pop_front().unwrap();
        s.store.release(&oldest).await.unwrap();
        let (id, attempt) = claim(&s.store, SLOTS, "d1", LEASE).await.unwrap();
        if id == b {
            return claims;
        }
        held.push_back(attempt);
    }
    panic!("tenant B never started");
}

#[tokio::test]
async fn one_job_of_a_second_tenant_starts_within_two_slot_turnovers() {
    let claims = claims_until_b_starts(5_000, 1).await;
    assert!(
        claims <= 2,
        "B started after {claims} claims behind A's 5,000 jobs"
    );
}

#[tokio::test]
async fn a_tenant_over_100_keys_gets_100_shares_and_b_waits_at_most_one_turn_each() {
    // Fairness is per key: each of A's 100 keys has a turn before B's
    // new key at worst (docs/flow-control.md, "Starvation bound").
    let claims = claims_until_b_starts(5_000, 100).await;
    assert!(
        claims <= 101,
        "B started after {claims} claims behind A's 100 keys"
    );
}

#[tokio::test]
async fn priority_is_honoured_within_a_key_and_keys_take_turns() {
    let s = store_only().await;
    let key = |k: &str| FlowOptions {
        concurrency_key: Some(FlowKey::parse(k).unwrap()),
        ..FlowOptions::default()
    };
    let mut ids = BTreeMap::new();
    for (name, k, priority) in [("a-low", "a", 5), ("a-high", "a", -5), ("b-low", "b", 5)] {
        let options = EnqueueOptions {
            flow: key(k),
            ..EnqueueOptions::default()
        };
        let spec = JobSpec {
            priority,
            ..spec("echo")
        };
        let Enqueued::Created(job) = s
            .store
            .enqueue(JobId::new(), &spec, &options)
            .await
            .unwrap()
        else {
            panic!("not created")
        };
        ids.insert(job.id, name);
    }
    let mut order = Vec::new();
    while let Some((id, _)) = claim(&s.store, 10, "d1", LEASE).await {
        order.push(ids[&id]);
    }
    // a's best first (a joined the ring first), then b's turn, then a's rest.
    assert_eq!(order, ["a-high", "b-low", "a-low"]);
}

#[tokio::test]
async fn a_key_limit_holds_across_owners_until_the_slot_is_released_even_after_a_takeover() {
    let s = store_only().await;
    let limited = FlowKey::parse("tenant-l").unwrap();
    s.store.set_key_limit(&limited, Some(2)).await.unwrap();
    for _ in 0..4 {
        enqueue_keyed(&s.store, "echo", "tenant-l").await;
    }
    let other = enqueue_keyed(&s.store, "echo", "tenant-o").await;
    // Two owners claim; the key gets its two slots and no more.
    let short = Duration::from_millis(1);
    let mut limited_claims = Vec::new();
    let mut others = Vec::new();
    for owner in ["d1", "d2", "d1"] {
        let (id, attempt) = claim(&s.store, 10, owner, short).await.unwrap();
        match id == other {
            true => others.push(id),
            false => limited_claims.push(attempt),
        }
    }
    assert_eq!((limited_claims.len(), others.len()), (2, 1));
    let first = limited_claims.swap_remove(0);
    assert!(claim(&s.store, 10, "d2", LEASE).await.is_none());
    let view = s.store.flow_overview(10).await.unwrap();
    let load = view.top_keys.iter().find(|k| k.key == "tenant-l").unwrap();
    assert_eq!((load.in_flight, load.queued, load.limit), (2, 2, 2));

    // d1's lease runs out and d2 takes the attempt over: the slot is
    // still held, so the key still may not start a third.
    let taken = loop {
        if let Some(taken) = s
            .store
            .take_over(first.job_id, first.attempt, "d2", LEASE)
            .await
            .unwrap()
        {
            break taken;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(claim(&s.store, 10, "d2", LEASE).await.is_none());
    // The old owner cannot release it; the new one can, and then the key
    // gets exactly one more slot.
    assert_eq!(s.store.release(&first).await.unwrap(), jobs::Fenced::Lost);
    assert!(claim(&s.store, 10, "d2", LEASE).await.is_none());
    s.store.release(&taken.owned).await.unwrap();
    assert!(claim(&s.store, 10, "d2", LEASE).await.is_some());
    assert!(claim(&s.store, 10, "d2", LEASE).await.is_none());
}

#[tokio::test]
async fn a_rate_limited_kind_answers_when_the_next_token_is_due() {
    let s = store_only().await;
    let kind = jobs::Scope::Kind(Kind::parse("echo").unwrap());
    let limit = jobs::RateLimit {
        per: 1,
        interval_ms: 60_000,
        burst: 1,
    };
    s.store.set_rate_limit(&kind, Some(limit)).await.unwrap();
    enqueue_keyed(&s.store, "echo", "t1").await;
    enqueue_keyed(&s.store, "echo", "t2").await;
    assert!(claim(&s.store, 10, "d1", LEASE).await.is_some());
    // The launcher sleeps until then instead of spinning.
    match s.store.claim(10, "{}", "d1", LEASE).await.unwrap() {
        Claim::Empty {
            next_due_in: Some(due),
        } => assert!(due > Duration::from_secs(50) && due <= Duration::from_secs(60)),
        other => panic!("expected a due hint, got {other:?}"),
    }
    let waiting = s
        .store
        .waiting_for(&Kind::parse("echo").unwrap(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (waiting.reason.as_str(), waiting.scope.as_str()),
        ("rate_limit", "kind:echo")
    );
}

#[tokio::test]
async fn jobs_queued_before_flow_control_are_still_claimed() {
    use fred::interfaces::KeysInterface as _;
    let s = store_only().await;
    let mut queued = Vec::new();
    for key in ["t1", "t2", "t1"] {
        queued.push(enqueue_keyed(&s.store, "echo", key).await);
    }
    // What a store written by the previous version holds: only `queue`.
    let client = s.store.raw_client();
    let prefix = format!("{{{}}}:fq:", s.store.namespace());
    let legacy: Vec<String> = ["q:t1", "q:t2", "ring", "turn", "adopted"]
        .iter()
        .map(|k| format!("{prefix}{k}"))
        .collect();
    let _: i64 = client.del(legacy).await.unwrap();
    let mut claimed = Vec::new();
    while let Some((id, _)) = claim(&s.store, 10, "d1", LEASE).await {
        claimed.push(id);
    }
    claimed.sort();
    queued.sort();
    assert_eq!(claimed, queued);
}

// ----- the real system -----

async fn system(max_machines: u32) -> TestSystem {
    spawn_system_with(Options {
        max_machines,
        ..Options::default()
    })
    .await
}

/// `method path` on the dispatcher at `base`, with a JSON body when given;
/// checks the status.
async fn call(
    system: &TestSystem,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let mut request = system.http.request(method.clone(), format!("{base}{path}"));
    if let Some(body) = &body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let got = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "{method} {path} {body:?}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Submits to the dispatcher at `base`, checking the answer's status
/// (202 a new job, 200 an existing one: the singleton contract).
async fn submit_to(system: &TestSystem, base: &str, body: Value, status: u16) -> Job {
    let job = call(system, base, Method::POST, "/jobs", Some(body), status).await;
    serde_json::from_value(job).unwrap()
}

/// The reason a queued job gives for waiting, if any.
fn waiting_reason(job: &Job) -> Option<&str> {
    job.waiting_for.as_ref().map(|w| w.reason.as_str())
}

#[tokio::test]
async fn a_rate_limit_of_5_per_second_holds_across_three_dispatchers() {
    const JOBS: usize = 40;
    let system = system(JOBS as u32).await;
    let (peer_1, base_1) = system.spawn_peer_with(|_| {}).await;
    let (peer_2, base_2) = system.spawn_peer_with(|_| {}).await;
    let bases = [system.base.clone(), base_1, base_2];
    call(
        &system,
        &bases[1],
        Method::PUT,
        "/rate-limits/kind/echo",
        Some(json!({"per": 5, "interval_secs": 1})),
        200,
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let base = &bases[i % 3];
        let job = submit_to(
            &system,
            base,
            json!({"kind": "echo", "concurrency_key": format!("t{}", i % 4)}),
            202,
        )
        .await;
        ids.push(job.id);
    }
    // A job held back says why.
    let deadline = tokio::time::Instant::now() + WITHIN;
    'seen: loop {
        for id in ids.iter().rev() {
            let job = system.job(id).await;
            if waiting_reason(&job) == Some("rate_limit") {
                assert_eq!(job.status, JobStatus::Queued);
                assert_eq!(job.waiting_for.unwrap().scope, "kind:echo");
                break 'seen;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no job ever showed it waits for the rate limit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut starts = Vec::new();
    for id in &ids {
        let job = system.wait_for(id, JobStatus::Succeeded, WITHIN).await;
        let claimed = job.attempts[0].claimed_at.unwrap();
        starts.push(claimed.timestamp_millis());
    }
    starts.sort();
    let mut per_second: BTreeMap<i64, usize> = BTreeMap::new();
    for start in &starts {
        *per_second.entry(start / 1000).or_default() += 1;
    }
    assert!(
        per_second.values().all(|&n| n <= 5),
        "more than 5 starts in a second: {per_second:?}"
    );
    // Any window of one second, not only whole seconds.
    for pair in starts.windows(6) {
        assert!(
            pair[5] - pair[0] >= 1000,
            "6 starts within a second: {pair:?}"
        );
    }
    // The limit, not the fleet (40 machines), paced the starts.
    assert!(starts[JOBS - 1] - starts[0] >= (JOBS as i64 - 1) * 200 - 1);
    peer_1.trigger();
    peer_2.trigger();
    system.stop().await;
}

#[tokio::test]
async fn singleton_keep_answers_the_waiting_job_and_replace_cancels_it() {
    // No machines: submitted jobs stay queued.
    let system = system(0).await;
    let base = system.base.clone();
    let first = submit_to(
        &system,
        &base,
        json!({"kind": "echo", "singleton_key": "report-7", "params": {"n": 1}}),
        202,
    )
    .await;
    let kept = submit_to(&system, &base, json!({"kind": "echo", "singleton_key": "report-7", "singleton_policy": "keep", "params": {"n": 2}}), 200).await;
    assert_eq!(kept.id, first.id);
    assert_eq!(
        kept.params,
        json!({"n": 1}),
        "keep leaves the waiting job as it was"
    );

    let newest = submit_to(&system, &base, json!({"kind": "echo", "singleton_key": "report-7", "singleton_policy": "replace", "params": {"n": 3}}), 202).await;
    assert_ne!(newest.id, first.id);
    let replaced = system.job(&first.id).await;
    assert_eq!(replaced.status, JobStatus::Cancelled);
    assert!(replaced
        .error
        .as_deref()
        .unwrap()
        .contains("replaced by a newer job"));
    assert_eq!(system.job(&newest.id).await.status, JobStatus::Queued);
    // Another key is another singleton.
    submit_to(
        &system,
        &base,
        json!({"kind": "echo", "singleton_key": "report-8"}),
        202,
    )
    .await;
    system.stop().await;
}

#[tokio::test]
async fn singleton_cancel_running_stops_the_running_job_and_runs_the_newest() {
    let system = system(4).await;
    let base = system.base.clone();
    let long = submit_to(
        &system,
        &base,
        json!({"kind": "sleep", "singleton_key": "sync-1", "params": {"ms": 60000}}),
        202,
    )
    .await;
    system.wait_for(&long.id, JobStatus::Running, WITHIN).await;
    let newest = submit_to(&system, &base, json!({"kind": "sleep", "singleton_key": "sync-1", "singleton_policy": "cancel_running", "params": {"ms": 1}}), 202).await;
    system
        .wait_for(&long.id, JobStatus::Cancelled, WITHIN)
        .await;
    system
        .wait_for(&newest.id, JobStatus::Succeeded, WITHIN)
        .await;
    system.stop().await;
}

#[tokio::test]
async fn a_debounced_burst_runs_once_with_the_last_params() {
    let system = system(4).await;
    let base = system.base.clone();
    let first = submit_to(&system, &base, json!({"kind": "echo", "singleton_key": "reindex-9", "debounce_secs": 2, "params": {"n": 0}}), 202).await;
    assert_eq!(first.status, JobStatus::Scheduled);
    for n in 1..=4 {
        let joined = submit_to(&system, &base, json!({"kind": "echo", "singleton_key": "reindex-9", "debounce_secs": 2, "params": {"n": n}}), 200).await;
        assert_eq!(joined.id, first.id);
    }
    let done = system
        .wait_for(&first.id, JobStatus::Succeeded, WITHIN)
        .await;
    assert_eq!(done.result, Some(json!({"n": 4})));
    assert_eq!(done.attempts.len(), 1);
    let echo_jobs = ListQuery {
        kind: Some("echo".into()),
        ..ListQuery::default()
    };
    let listed = system.api.list(&echo_jobs).await.unwrap();
    assert_eq!(listed.jobs.len(), 1, "one job for the burst");
    // A submit after the run opens a new debounce.
    let later = submit_to(
        &system,
        &base,
        json!({"kind": "echo", "singleton_key": "reindex-9", "debounce_secs": 1}),
        202,
    )
    .await;
    assert_ne!(later.id, first.id);
    system.stop().await;
}

#[tokio::test]
async fn pause_and_resume_a_kind_and_a_key_across_two_dispatchers() {
    let system = system(4).await;
    let (peer, peer_base) = system.spawn_peer_with(|_| {}).await;
    let base = system.base.clone();

    // A kind, paused on one dispatcher, submitted to and resumed on the other.
    call(&system, &base, Method::PUT, "/pauses/kind/echo", None, 204).await;
    let held = submit_to(&system, &peer_base, json!({"kind": "echo"}), 202).await;
    let other = submit_to(
        &system,
        &peer_base,
        json!({"kind": "print", "params": {"lines": 1}}),
        202,
    )
    .await;
    system
        .wait_for(&other.id, JobStatus::Succeeded, WITHIN)
        .await;
    let job = system.job(&held.id).await;
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(waiting_reason(&job), Some("paused_kind"));
    let flow = call(&system, &peer_base, Method::GET, "/flow", None, 200).await;
    assert_eq!(flow["paused_kinds"], json!(["echo"]));
    call(
        &system,
        &peer_base,
        Method::DELETE,
        "/pauses/kind/echo",
        None,
        204,
    )
    .await;
    system
        .wait_for(&held.id, JobStatus::Succeeded, WITHIN)
        .await;

    // A key: its jobs wait, another key's run.
    call(
        &system,
        &peer_base,
        Method::PUT,
        "/pauses/key/tenant-p",
        None,
        204,
    )
    .await;
    let paused = submit_to(
        &system,
        &base,
        json!({"kind": "echo", "concurrency_key": "tenant-p"}),
        202,
    )
    .await;
    let free = submit_to(
        &system,
        &base,
        json!({"kind": "echo", "concurrency_key": "tenant-q"}),
        202,
    )
    .await;
    system
        .wait_for(&free.id, JobStatus::Succeeded, WITHIN)
        .await;
    let job = poll(
        "shows its pause",
        WITHIN,
        || system.job(&paused.id),
        |j| waiting_reason(j) == Some("paused_key"),
    )
    .await;
    assert_eq!(job.status, JobStatus::Queued);
    let page = system
        .request(Method::GET, &format!("/jobs/{}", paused.id))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<dd>paused_key (key:tenant-p)</dd>"),
        "{page}"
    );
    assert!(page.contains("<dd>tenant-p</dd>"));
    let metrics = system
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("dispatcher_flow_paused{scope=\"key\"} 1"),
        "{metrics}"
    );
    call(
        &system,
        &base,
        Method::DELETE,
        "/pauses/key/tenant-p",
        None,
        204,
    )
    .await;
    system
        .wait_for(&paused.id, JobStatus::Succeeded, WITHIN)
        .await;
    peer.trigger();
    system.stop().await;
}

#[tokio::test]
async fn flow_inputs_are_validated_at_the_edge() {
    let system = system(0).await;
    let base = system.base.clone();
    for (body, field) in [
        (
            json!({"kind": "echo", "concurrency_key": "has space"}),
            "concurrency_key",
        ),
        (
            json!({"kind": "echo", "concurrency_key": "k".repeat(129)}),
            "concurrency_key",
        ),
        (
            json!({"kind": "echo", "singleton_policy": "keep"}),
            "singleton_policy",
        ),
        (json!({"kind": "echo", "debounce_secs": 5}), "debounce_secs"),
        (
            json!({"kind": "echo", "singleton_key": "s", "debounce_secs": 0}),
            "debounce_secs",
        ),
        (
            json!({"kind": "echo", "singleton_key": "s", "debounce_secs": 5, "delay_secs": 1}),
            "debounce_secs",
        ),
        (
            json!({"kind": "echo", "singleton_key": "s", "debounce_secs": 5, "singleton_policy": "replace"}),
            "singleton_policy",
        ),
        (
            json!({"kind": "echo", "singleton_key": "s", "singleton_policy": "newest"}),
            "singleton_policy",
        ),
    ] {
        let error = call(
            &system,
            &base,
            Method::POST,
            "/jobs",
            Some(body.clone()),
            422,
        )
        .await;
        assert_eq!(error["field"], field, "{body}");
    }
    let error = call(
        &system,
        &base,
        Method::PUT,
        "/concurrency/t1",
        Some(json!({"limit": 0})),
        422,
    )
    .await;
    assert_eq!(error["field"], "limit");
    let error = call(
        &system,
        &base,
        Method::PUT,
        "/concurrency/bad%20key",
        Some(json!({"limit": 1})),
        400,
    )
    .await;
    assert_eq!(error["field"], "key");
    let error = call(&system, &base, Method::PUT, "/pauses/tenant/x", None, 400).await;
    assert_eq!(error["field"], "scope");
    let error = call(
        &system,
        &base,
        Method::PUT,
        "/rate-limits/kind/echo",
        Some(json!({"per": 0, "interval_secs": 1})),
        422,
    )
    .await;
    assert_eq!(error["field"], "per");
    let error = call(
        &system,
        &base,
        Method::PUT,
        "/rate-limits/key/t1",
        Some(json!({"per": 1, "interval_secs": 1, "burst": 0})),
        422,
    )
    .await;
    assert_eq!(error["field"], "burst");
    // Nothing was stored.
    let flow = call(&system, &base, Method::GET, "/flow", None, 200).await;
    assert_eq!(flow["limits"], json!({}));
    assert_eq!(flow["rates"], json!({}));
    assert_eq!(flow["paused_kinds"], json!([]));
    // And the settings that are valid read back.
    call(
        &system,
        &base,
        Method::PUT,
        "/concurrency/t1",
        Some(json!({"limit": 3})),
        200,
    )
    .await;
    call(
        &system,
        &base,
        Method::PUT,
        "/concurrency",
        Some(json!({"limit": 2})),
        200,
    )
    .await;
    call(
        &system,
        &base,
        Method::PUT,
        "/rate-limits/key/t1",
        Some(json!({"per": 10, "interval_secs": 60, "burst": 2})),
        200,
    )
    .await;
    let flow = call(&system, &base, Method::GET, "/flow", None, 200).await;
    assert_eq!(flow["limits"], json!({"t1": 3}));
    assert_eq!(flow["default_limit"], 2);
    assert_eq!(
        flow["rates"]["key:t1"],
        json!({"per": 10, "interval_ms": 60000, "burst": 2})
    );
    system.stop().await;
}

/// `dispatcher jobs ARGS` against `system`; checks it exits 0 and
/// answers its stdout.
async fn cli(system: &TestSystem, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .arg("jobs")
        .args(args)
        .env("DISPATCHER_URL", &system.base)
        .env_remove("DISPATCHER_TOKEN")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "jobs {args:?}: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_cli_pauses_limits_and_shows_flow_control() {
    let system = system(0).await;
    cli(&system, &["flow", "pause", "kind", "echo"]).await;
    cli(&system, &["flow", "pause", "key", "tenant-1"]).await;
    cli(&system, &["flow", "limit", "--key", "tenant-1", "4"]).await;
    cli(&system, &["flow", "limit", "--default", "2"]).await;
    cli(&system, &["flow", "rate", "kind", "echo", "--per", "5"]).await;
    let shown: Value =
        serde_json::from_str(&cli(&system, &["flow", "show", "--json"]).await).unwrap();
    assert_eq!(shown["paused_kinds"], json!(["echo"]));
    assert_eq!(shown["paused_keys"], json!(["tenant-1"]));
    assert_eq!(shown["limits"], json!({"tenant-1": 4}));
    assert_eq!(shown["default_limit"], 2);
    assert_eq!(
        shown["rates"]["kind:echo"],
        json!({"per": 5, "interval_ms": 1000, "burst": 1})
    );
    let text = cli(&system, &["flow", "show"]).await;
    assert!(text.contains("paused kind:       echo"), "{text}");
    // The dashboard offers to resume each.
    let page = system
        .request(Method::GET, "/")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (scope, name) in [("kind", "echo"), ("key", "tenant-1")] {
        let button = format!("data-flow=\"resume\" data-scope=\"{scope}\" data-name=\"{name}\"");
        assert!(
            page.contains(&button),
            "no resume button for {scope} {name}"
        );
    }
    assert!(page.contains("id=\"pause-form\""));

    cli(&system, &["flow", "resume", "kind", "echo"]).await;
    cli(&system, &["flow", "limit", "--key", "tenant-1", "--clear"]).await;
    cli(&system, &["flow", "limit", "--default", "--clear"]).await;
    cli(&system, &["flow", "rate", "kind", "echo", "--clear"]).await;
    let submitted: Value = serde_json::from_str(
        &cli(
            &system,
            &["submit", "echo", "--concurrency-key", "tenant-1", "--json"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(submitted["concurrency_key"], "tenant-1");
    let shown: Value =
        serde_json::from_str(&cli(&system, &["flow", "show", "--json"]).await).unwrap();
    assert_eq!(shown["paused_kinds"], json!([]));
    assert_eq!(shown["limits"], json!({}));
    assert_eq!(shown["default_limit"], 0);
    assert_eq!(shown["rates"], json!({}));
    system.stop().await;
}
