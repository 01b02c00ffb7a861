//! The realism knobs: rate limits, latency, fault injection and virtual
//! machines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{exec_config, last_exit, start, start_with, TOKEN};
use futures::FutureExt;
use machines::CreateMachineRequest;
use mock_machines::{Boot, DelayRange, LatencyModel, MockConfig, VirtualMachineEnv};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn config() -> MockConfig {
    MockConfig {
        token: TOKEN.to_string(),
        rate_limits: false,
        ..MockConfig::default()
    }
}

/// Sends requests until one is rate-limited; returns how many got through
/// and the 429 response. Tolerant of slow machines: tokens refill while the
/// requests are sent, so callers bound the count using the elapsed time.
async fn count_until_limited(
    mock: &crate::common::Mock,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u32, f64, reqwest::Response) {
    let began = Instant::now();
    for passed in 0..200 {
        let mut request = mock
            .http
            .request(method.clone(), mock.url(path))
            .bearer_auth(TOKEN);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            return (passed, began.elapsed().as_secs_f64(), response);
        }
        assert!(response.status().is_success(), "{}", response.status());
    }
    panic!("{method} {path} was never rate-limited");
}

/// `burst` requests pass at once, plus what the rate refilled meanwhile.
fn assert_burst(passed: u32, elapsed_secs: f64, burst: u32, rate: f64) {
    let most = burst + (elapsed_secs * rate).ceil() as u32 + 1;
    assert!(
        (burst..=most).contains(&passed),
        "{passed} passed; expected {burst}..={most}"
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let mock = start_with(MockConfig {
        rate_limits: true,
        ..config()
    })
    .await;
    let body = json!({"skip_launch": true, "config": exec_config(&["true"])});
    let path = "/v1/apps/limited/machines";
    let (passed, elapsed, response) =
        count_until_limited(&mock, Method::POST, path, Some(body.clone())).await;
    assert_burst(passed, elapsed, 3, 1.0);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after));
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({"error": "rate limit exceeded"})
    );

    // Create is limited per app; get per machine, 5/s with bursts of 10.
    let ids: Vec<String> = mock
        .call(Method::GET, path, None)
        .await
        .1
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    let done = mock.run("waits", &["true"]).await;
    let get = format!("{path}/{}", ids[0]);
    let (passed, elapsed, _) = count_until_limited(&mock, Method::GET, &get, None).await;
    assert_burst(passed, elapsed, 10, 5.0);
    assert_eq!(mock.get("limited", &ids[1]).await["id"], ids[1].as_str());
    // Every other action, wait and list included: 1/s, burst 3.
    mock.wait_for("waits", &done, "stopped").await;
    let wait = format!("/v1/apps/waits/machines/{done}/wait?state=stopped&timeout=30");
    let (passed, elapsed, _) = count_until_limited(&mock, Method::GET, &wait, None).await;
    assert_burst(passed, elapsed, 2, 1.0);
    let list = "/v1/apps/waits/machines";
    let (passed, elapsed, _) = count_until_limited(&mock, Method::GET, list, None).await;
    assert_burst(passed, elapsed, 3, 1.0);
    assert!(mock.server.stats().rate_limited >= 4);
}

#[tokio::test]
async fn rate_limit_scale_multiplies_the_burst() {
    let mock = start_with(MockConfig {
        rate_limits: true,
        rate_limit_scale: 2.0,
        ..config()
    })
    .await;
    let body = json!({"skip_launch": true, "config": exec_config(&["true"])});
    let (passed, elapsed, _) =
        count_until_limited(&mock, Method::POST, "/v1/apps/scaled/machines", Some(body)).await;
    assert_burst(passed, elapsed, 6, 2.0);
}

#[tokio::test]
async fn latency_model_delays_boots() {
    let mock = start_with(MockConfig {
        latency: LatencyModel {
            create: DelayRange::fixed(Duration::from_millis(400)),
            start: DelayRange {
                min: Duration::from_millis(100),
                max: Duration::from_millis(200),
            },
        },
        ..config()
    })
    .await;
    let began = Instant::now();
    let id = mock.run("app", &["sleep", "100"]).await;
    assert_eq!(mock.get("app", &id).await["state"], "created");
    mock.wait_for("app", &id, "started").await;
    assert!(
        began.elapsed() >= Duration::from_millis(500),
        "{:?}",
        began.elapsed()
    );
    // A stop during the create delay calls the boot off at once.
    let id = mock.run("app", &["sleep", "100"]).await;
    let (status, _) = mock
        .call(
            Method::POST,
            &format!("/v1/apps/app/machines/{id}/stop"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mock.get("app", &id).await["state"], "stopped");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(mock.get("app", &id).await["state"], "stopped");
}

/// API faults (create errors, 429s, slow and dropped answers), set and
/// cleared at run time. Boot faults are [`boot_faults_are_settable_at_run_time`].
#[tokio::test]
async fn api_faults_are_settable_at_run_time() {
    let mock = start().await;
    let (status, defaults) = mock.call(Method::GET, "/_mock/faults", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(defaults["create_error_rate"], 0.0);
    assert_eq!(defaults["fail_next_creates"], 0);
    let set = |patch| mock.set_faults(patch);
    let body = json!({"skip_launch": true, "config": exec_config(&["true"])});
    let path = "/v1/apps/app/machines";

    set(json!({"create_error_rate": 1.0, "create_error_status": 503})).await;
    let (status, error) = mock.call(Method::POST, path, Some(body.clone())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error["error"].is_string());

    let settings = set(json!({"create_error_rate": 0.0, "capacity_error_rate": 1.0})).await;
    assert_eq!(settings["create_error_status"], 503, "patches merge");
    let (status, error) = mock.call(Method::POST, path, Some(body.clone())).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(error["status"], "insufficient_capacity");

    set(json!({"capacity_error_rate": 0.0, "fail_next_creates": 2, "fail_status": 429})).await;
    for _ in 0..2 {
        let response = mock
            .http
            .post(mock.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().contains_key("retry-after"));
    }
    let id = mock.create("app", body.clone()).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The project's client gets through two injected 429s.
    set(json!({"fail_next_creates": 2, "fail_status": 429})).await;
    let request: CreateMachineRequest = serde_json::from_value(body.clone()).unwrap();
    mock.client("app").create(&request).await.unwrap();

    for bad in [
        json!({"crash_rate": 1.5}),
        json!({"no_such_knob": 1}),
        json!({"fail_status": 200}),
    ] {
        let (status, _) = mock.call(Method::POST, "/_mock/faults", Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    set(json!({"slow_response_ms": 300})).await;
    let began = Instant::now();
    mock.get("app", &id).await;
    assert!(began.elapsed() >= Duration::from_millis(300));

    set(json!({"slow_response_ms": 0, "drop_connection_rate": 1.0})).await;
    let dropped = mock
        .http
        .get(mock.url(&format!("{path}/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await;
    assert!(
        dropped.is_err(),
        "connection should have been dropped: {dropped:?}"
    );
    // The controls are never dropped, so the fault can be turned off again.
    set(json!({"drop_connection_rate": 0.0})).await;
    mock.get("app", &id).await;
    // 503, capacity, two 429s, two more the client got through, the drop.
    assert_eq!(mock.server.stats().faults_injected, 7);
}

/// Machines that never boot, crash or are OOM-killed, by the fault
/// settings of the moment.
#[tokio::test]
async fn boot_faults_are_settable_at_run_time() {
    let mock = start().await;
    let set = |patch| mock.set_faults(patch);
    let path = "/v1/apps/app/machines";
    set(json!({"never_boot_rate": 1.0})).await;
    let id = mock.run("app", &["sleep", "100"]).await;
    let (status, error) = mock.wait("app", &id, "state=started&timeout=1").await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert!(error["error"]
        .as_str()
        .unwrap()
        .ends_with("currently created"));
    let (status, _) = mock
        .call(Method::DELETE, &format!("{path}/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    set(json!({"never_boot_rate": 0.0, "crash_rate": 1.0})).await;
    let id = mock.run("app", &["sleep", "100"]).await;
    mock.wait_for("app", &id, "stopped").await;
    let exit = last_exit(&mock.get("app", &id).await);
    assert_eq!(
        (
            exit["exit_code"].as_i64(),
            exit["signal"].as_i64(),
            exit["oom_killed"].as_bool()
        ),
        (Some(137), Some(9), Some(false))
    );

    set(json!({"crash_rate": 0.0, "oom_rate": 1.0})).await;
    let id = mock.run("app", &["sleep", "100"]).await;
    mock.wait_for("app", &id, "stopped").await;
    assert_eq!(last_exit(&mock.get("app", &id).await)["oom_killed"], true);

    assert_eq!(mock.server.stats().faults_injected, 3);
}

#[tokio::test]
async fn faults_from_the_config() {
    let mock = start_with(MockConfig {
        faults: mock_machines::FaultSettings {
            fail_next_creates: 1,
            fail_status: 500,
            ..Default::default()
        },
        ..config()
    })
    .await;
    let body = json!({"skip_launch": true, "config": exec_config(&["true"])});
    let (status, _) = mock
        .call(Method::POST, "/v1/apps/app/machines", Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    mock.create("app", body).await;
}

/// A virtual machine that exits with the length of its machine id, or
/// with 0 on the first signal when its command is `["wait-for-signal"]`.
fn virtual_body(mut env: VirtualMachineEnv) -> futures::future::BoxFuture<'static, i32> {
    async move {
        match env.command.as_deref() {
            Some([first]) if first == "wait-for-signal" => {
                env.signals.recv().await;
                0
            }
            Some([first]) if first == "sleep-forever" => {
                drop(env.signals);
                futures::future::pending::<i32>().await
            }
            _ => env.env["FLY_MACHINE_ID"].len() as i32,
        }
    }
    .boxed()
}

#[tokio::test]
async fn virtual_machines_run_in_process() {
    let mock = start_with(MockConfig {
        boot: Boot::Virtual(Arc::new(virtual_body)),
        ..config()
    })
    .await;
    let id = mock.run("app", &["exit-with-id-length"]).await;
    mock.wait_for("app", &id, "stopped").await;
    assert_eq!(last_exit(&mock.get("app", &id).await)["exit_code"], 14);

    // Keeps its signal receiver: the signal is the machine's to handle.
    let id = mock.run("app", &["wait-for-signal"]).await;
    mock.wait_for("app", &id, "started").await;
    let stop = format!("/v1/apps/app/machines/{id}/stop");
    mock.call(Method::POST, &stop, Some(json!({"signal": "SIGTERM"})))
        .await;
    mock.wait_for("app", &id, "stopped").await;
    let exit = last_exit(&mock.get("app", &id).await);
    assert_eq!(
        (exit["exit_code"].as_i64(), exit["requested_stop"].as_bool()),
        (Some(0), Some(true))
    );

    // Dropped its receiver: any signal ends it like a default handler.
    let id = mock.run("app", &["sleep-forever"]).await;
    mock.wait_for("app", &id, "started").await;
    mock.call(
        Method::POST,
        &format!("/v1/apps/app/machines/{id}/stop"),
        None,
    )
    .await;
    mock.wait_for("app", &id, "stopped").await;
    assert_eq!(last_exit(&mock.get("app", &id).await)["exit_code"], 130);

    // Force-destroy works on virtual machines too; no image command is needed.
    let machine = mock
        .create(
            "app",
            json!({"config": {"image": "virtual", "restart": {"policy": "no"}}}),
        )
        .await;
    let id = machine["id"].as_str().unwrap();
    mock.wait_for("app", id, "settled").await;
    let (status, _) = mock
        .call(
            Method::DELETE,
            &format!("/v1/apps/app/machines/{id}?force=true"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// A start is a fresh boot: a file one run wrote in its scratch root
/// (`$HOME`, `$TMPDIR`) is gone on the next run, as job B on a pooled
/// machine must never see what job A left there.
#[tokio::test]
async fn a_start_wipes_the_machines_scratch_root() {
    let mock = start_with(config()).await;
    // Exit 3 if an earlier run's file is there; else leave one and exit 0.
    let script = r#"test -e "$HOME/left-by-a" && exit 3; test "$TMPDIR" = "$HOME" || exit 4; echo secret > "$HOME/left-by-a""#;
    let id = mock.run("app", &["sh", "-c", script]).await;
    mock.wait_for("app", &id, "stopped").await;
    assert_eq!(last_exit(&mock.get("app", &id).await)["exit_code"], 0);

    for _ in 0..2 {
        let (status, body) = mock
            .call(
                Method::POST,
                &format!("/v1/apps/app/machines/{id}/start"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // The start answers once the machine is starting, so this waits
        // for the end of this run, not the previous one.
        mock.wait_for("app", &id, "stopped").await;
        let machine = mock.get("app", &id).await;
        assert_eq!(
            last_exit(&machine)["exit_code"],
            0,
            "the second run saw the first run's file: {machine}"
        );
    }
}
