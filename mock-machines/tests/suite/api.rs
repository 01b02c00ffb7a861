//! The core API against a real mock server: auth, lifecycle, wait, delete,
//! list, events, leases, memory watchdog and process-group cleanup.

use std::time::{Duration, Instant};

use crate::common::{eventually, exec_config, last_exit, live_group_members, start, TOKEN};
use machines::{CreateMachineRequest, MachineState, WaitOutcome};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn auth_accepts_three_forms_and_rejects_others() {
    let mock = start().await;
    let url = mock.url("/v1/apps/a/machines");
    for header in [
        format!("Bearer {TOKEN}"),
        format!("FlyV1 {TOKEN}"),
        format!("Bearer FlyV1 {TOKEN}"),
    ] {
        let response = mock
            .http
            .get(&url)
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().contains_key("fly-request-id"));
    }
    for header in [
        None,
        Some("Bearer wrong".to_string()),
        Some(TOKEN.to_string()),
    ] {
        let mut request = mock.http.get(&url);
        if let Some(header) = header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key("fly-request-id"));
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": "Authenticate: token validation error"})
        );
    }
    // The mock's own endpoints are guarded too.
    let response = mock
        .http
        .get(mock.url("/_mock/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn machine_runs_exits_and_records_the_exit_code() {
    let mock = start().await;
    let machine = mock
        .create(
            "app",
            json!({"name": "job-1", "config": exec_config(&["sh", "-c", "exit 3"])}),
        )
        .await;
    assert_eq!(machine["state"], "created");
    let id = machine["id"].as_str().unwrap();
    assert_eq!(id.len(), 14);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(machine["instance_id"].as_str().unwrap().len(), 26);
    assert!(machine["private_ip"].as_str().unwrap().starts_with("fdaa:"));
    assert_eq!(machine["events"][0]["type"], "launch");
    assert_eq!(machine["events"][0]["status"], "created");
    assert_eq!(machine["events"][0]["source"], "user");

    let waited = mock.wait_for("app", id, "stopped").await;
    assert_eq!(waited["ok"], true);
    assert_eq!(waited["state"], "stopped");
    assert_eq!(waited["version"], machine["instance_id"]);
    assert_eq!(waited["event_id"].as_str().unwrap().len(), 26);

    let machine = mock.get("app", id).await;
    assert_eq!(machine["state"], "stopped");
    let exit = last_exit(&machine);
    assert_eq!(exit["exit_code"], 3);
    assert_eq!(exit["signal"], -1);
    assert_eq!(exit["oom_killed"], false);
    assert_eq!(exit["requested_stop"], false);
    assert!(exit["exited_at"].as_str().unwrap().ends_with('Z'));
    let kinds: Vec<(String, String)> = machine["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().into(),
                e["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("exit", "stopped"),
        ("start", "started"),
        ("start", "starting"),
        ("launch", "created"),
    ];
    assert_eq!(kinds, expected.map(|(a, b)| (a.to_string(), b.to_string())));
    assert!(machine["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["source"] != ""));
}

#[tokio::test]
async fn the_project_client_drives_the_mock() {
    let mock = start().await;
    let client = mock.client("client-app");
    let request: CreateMachineRequest = serde_json::from_value(json!({
        "config": exec_config(&["sh", "-c", "exit 0"])
    }))
    .unwrap();
    let machine = client.create(&request).await.unwrap();
    assert_eq!(machine.state, MachineState::Created);
    let outcome = client
        .wait(&machine.id, None, &["stopped", "destroyed"], 30)
        .await
        .unwrap();
    assert!(
        matches!(outcome, WaitOutcome::Reached(ref r) if r.state.as_deref() == Some("stopped")),
        "{outcome:?}"
    );
    let machine = client.get(&machine.id).await.unwrap();
    assert_eq!(machine.last_exit().unwrap().exit_code, 0);
    let events = client.events(&machine.id, 2).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, "exit");
    client.destroy(&machine.id, false).await.unwrap();
    // Gone is fine for the client.
    client.destroy(&machine.id, false).await.unwrap();
    assert_eq!(
        client
            .wait(&machine.id, None, &["started"], 1)
            .await
            .unwrap(),
        WaitOutcome::Gone
    );
    assert!(client.list(&Default::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn fly_environment_is_injected() {
    let mock = start().await;
    let script = r#"test -n "$FLY_MACHINE_ID" && test "$FLY_ALLOC_ID" = "$FLY_MACHINE_ID" \
        && test "$FLY_APP_NAME" = envapp && test "$FLY_REGION" = lcl && test "$FOO" = bar \
        && test "$FLY_PROCESS_GROUP" = worker && test "$FLY_VM_MEMORY_MB" = 512 \
        && test -n "$FLY_MACHINE_VERSION" && test -n "$FLY_PRIVATE_IP" && test -n "$PATH" \
        && test "$FLY_IMAGE_REF" = registry.fly.io/test:latest && test "$PRIMARY_REGION" = lcl"#;
    let mut config = exec_config(&["sh", "-c", script]);
    config["env"] = json!({"FOO": "bar"});
    config["metadata"] = json!({"fly_process_group": "worker"});
    config["guest"] = json!({"cpu_kind": "shared", "cpus": 1, "memory_mb": 512});
    let id = mock.create("envapp", json!({"config": config})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    mock.wait_for("envapp", &id, "stopped").await;
    assert_eq!(last_exit(&mock.get("envapp", &id).await)["exit_code"], 0);
}

#[tokio::test]
async fn auto_destroy_destroys_after_a_clean_exit() {
    let mock = start().await;
    let mut config = exec_config(&["true"]);
    config["auto_destroy"] = json!(true);
    let first = mock.create("app", json!({"config": config.clone()})).await;
    let second = mock.create("app", json!({"config": config})).await;
    // A waiter for `stopped` sees the passing state; one for `destroyed` the end.
    let stopped = mock
        .wait_for("app", first["id"].as_str().unwrap(), "stopped")
        .await;
    assert_eq!(stopped["state"], "stopped");
    let destroyed = mock
        .wait_for("app", second["id"].as_str().unwrap(), "destroyed")
        .await;
    assert_eq!(destroyed["state"], "destroyed");
    let machine = mock.get("app", second["id"].as_str().unwrap()).await;
    assert_eq!(machine["state"], "destroyed");
    assert_eq!(machine["events"][0]["type"], "destroy");
    assert_eq!(machine["events"][1]["type"], "exit");
    mock.wait_for("app", first["id"].as_str().unwrap(), "destroyed")
        .await;
    let stats = mock.server.stats();
    assert_eq!(
        (stats.live, stats.created, stats.destroyed, stats.peak_live),
        (0, 2, 2, 2)
    );
}

#[tokio::test]
async fn wait_semantics() {
    let mock = start().await;
    let idle = mock
        .create(
            "app",
            json!({"skip_launch": true, "config": exec_config(&["true"])}),
        )
        .await;
    let idle = idle["id"].as_str().unwrap();

    let (status, body) = mock.wait("app", idle, "state=started&timeout=1").await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(
        body["error"],
        "deadline_exceeded: machine failed to reach desired state, started, currently created"
    );
    for bad in ["timeout=61", "timeout=1.5", "timeout=abc", "state=running"] {
        let (status, body) = mock.wait("app", idle, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].is_string());
    }
    let (status, _) = mock.wait("app", "00000000000000", "state=started").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let id = mock.run("app", &["sleep", "100"]).await;
    let started = mock.wait_for("app", &id, "started").await;
    // Repeated and comma-separated states.
    let (status, body) = mock
        .wait("app", &id, "state=stopped&state=started&timeout=5")
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("started"))
    );
    let (status, body) = mock
        .wait("app", &id, "state=stopped,started&timeout=5")
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("started"))
    );
    let (status, _) = mock
        .wait(
            "app",
            &id,
            "state=started&version=01ARZ3NDEKTSV4RRFFQ69G5FAV",
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let version = started["version"].as_str().unwrap();
    let (status, _) = mock
        .wait("app", &id, &format!("state=started&instance_id={version}"))
        .await;
    assert_eq!(status, StatusCode::OK);

    // A waiter wakes as soon as the machine stops, long before its timeout.
    let waiter = {
        let url = mock.url(&format!(
            "/v1/apps/app/machines/{id}/wait?state=stopped&timeout=60"
        ));
        let http = mock.http.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let response = http.get(url).bearer_auth(TOKEN).send().await.unwrap();
            (response.status(), began.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = mock
        .call(
            Method::POST,
            &format!("/v1/apps/app/machines/{id}/stop"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, elapsed) = waiter.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(elapsed < Duration::from_secs(20), "wait took {elapsed:?}");
}

#[tokio::test]
async fn stop_signals_then_kills_after_the_timeout() {
    let mock = start().await;
    let id = mock.run("app", &["sleep", "100"]).await;
    mock.wait_for("app", &id, "started").await;
    let (status, body) = mock
        .call(
            Method::POST,
            &format!("/v1/apps/app/machines/{id}/stop"),
            None,
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"ok": true})));
    mock.wait_for("app", &id, "stopped").await;
    let exit = last_exit(&mock.get("app", &id).await);
    assert_eq!(
        (exit["signal"].as_i64(), exit["requested_stop"].as_bool()),
        (Some(2), Some(true)),
        "default SIGINT: {exit}"
    );

    // A process that ignores SIGTERM gets SIGKILL after the timeout.
    let ready = std::env::temp_dir().join(format!("mock-machines-trap-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let script = format!(
        "trap '' TERM INT; touch {}; while true; do sleep 0.1; done",
        ready.display()
    );
    let id = mock.run("app", &["sh", "-c", &script]).await;
    mock.wait_for("app", &id, "started").await;
    // Only once the trap is set does the test of the timeout mean anything.
    eventually(Duration::from_secs(10), || ready.exists().then_some(())).await;
    let _ = std::fs::remove_file(&ready);
    let (status, _) = mock
        .call(
            Method::POST,
            &format!("/v1/apps/app/machines/{id}/stop"),
            Some(json!({"signal": "SIGTERM", "timeout": "1s"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mock.get("app", &id).await["state"], "stopping");
    mock.wait_for("app", &id, "stopped").await;
    let exit = last_exit(&mock.get("app", &id).await);
    assert_eq!(
        (exit["signal"].as_i64(), exit["exit_code"].as_i64()),
        (Some(9), Some(137))
    );

    // Stopped machines start again; created ones cannot be started.
    let (status, body) = mock
        .call(
            Method::POST,
            &format!("/v1/apps/app/machines/{id}/start"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["previous_state"], "stopped");
    mock.wait_for("app", &id, "started").await;
    let (status, _) = mock
        .call(
            Method::POST,
            &format!("/v1/apps/app/machines/{id}/start"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (status, _) = mock
        .call(
            Method::POST,
            &format!("/v1/apps/app/machines/{id}/signal"),
            Some(json!({"signal": "SIGKILL"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    mock.wait_for("app", &id, "stopped").await;
    assert_eq!(last_exit(&mock.get("app", &id).await)["signal"], 9);
}

#[tokio::test]
async fn restart_policy_on_failure_retries_then_rests() {
    let mock = start().await;
    let mut config = exec_config(&["sh", "-c", "exit 1"]);
    config["restart"] = json!({"policy": "on-failure", "max_retries": 2});
    let id = mock.create("app", json!({"config": config})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    mock.wait_for("app", &id, "stopped").await;
    let machine = mock.get("app", &id).await;
    let exits: Vec<_> = machine["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "exit")
        .collect();
    assert_eq!(exits.len(), 3, "{machine}");
    assert_eq!(exits[0]["request"]["exit_event"]["restarting"], false);
    assert_eq!(exits[1]["request"]["exit_event"]["restarting"], true);
    assert_eq!(exits[0]["request"]["restart_count"], 2);

    // `always` restarts even clean exits.
    let mut config = exec_config(&["true"]);
    config["restart"] = json!({"policy": "always"});
    let id = mock.create("app", json!({"config": config})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The machine never rests in `stopped`: it keeps exiting and restarting.
    for _ in 0..2 {
        let (status, body) = mock.wait("app", &id, "state=started&timeout=30").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, _) = mock.wait("app", &id, "state=stopped&timeout=1").await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    }
    let machine = mock.get("app", &id).await;
    let exits = machine["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "exit")
        .count();
    assert!(exits >= 2, "{machine}");
    let (status, _) = mock
        .call(
            Method::DELETE,
            &format!("/v1/apps/app/machines/{id}?force=true"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn delete_needs_force_for_running_machines() {
    let mock = start().await;
    let (status, _) = mock
        .call(Method::DELETE, "/v1/apps/app/machines/0123456789abcd", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    for flag in ["force=true", "kill=true"] {
        let id = mock.run("app", &["sleep", "100"]).await;
        mock.wait_for("app", &id, "started").await;
        let (status, body) = mock
            .call(Method::DELETE, &format!("/v1/apps/app/machines/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        assert!(body["error"]
            .as_str()
            .unwrap()
            .starts_with("failed_precondition:"));
        let (status, body) = mock
            .call(
                Method::DELETE,
                &format!("/v1/apps/app/machines/{id}?{flag}"),
                None,
            )
            .await;
        assert_eq!((status, body), (StatusCode::OK, json!({"ok": true})));
        // Destroyed before the answer, and still visible.
        assert_eq!(mock.get("app", &id).await["state"], "destroyed");
        let (status, _) = mock
            .call(Method::DELETE, &format!("/v1/apps/app/machines/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    // A stopped machine needs no force.
    let id = mock.run("app", &["true"]).await;
    mock.wait_for("app", &id, "stopped").await;
    let (status, _) = mock
        .call(
            Method::DELETE,
            &format!("/v1/apps/app/machines/{id}?force=false"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// Starts a machine whose shell backgrounds a child and runs another, so
/// its process group has three members; returns `(id, pgid)` once all run.
async fn machine_with_children(mock: &crate::common::Mock, label: &str) -> (String, i32) {
    let pid_file =
        std::env::temp_dir().join(format!("mock-machines-{label}-{}.pid", std::process::id()));
    let _ = std::fs::remove_file(&pid_file);
    let script = format!("echo $$ > {}; sleep 100 & sleep 100", pid_file.display());
    let id = mock.run("app", &["sh", "-c", &script]).await;
    mock.wait_for("app", &id, "started").await;
    let pgid: i32 = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await;
    let _ = std::fs::remove_file(&pid_file);
    eventually(Duration::from_secs(10), || {
        (live_group_members(pgid).len() >= 3).then_some(())
    })
    .await;
    (id, pgid)
}

#[tokio::test]
async fn destroy_kills_and_reaps_the_whole_process_group() {
    let mock = start().await;
    let (id, pgid) = machine_with_children(&mock, "destroy").await;
    let (status, _) = mock
        .call(
            Method::DELETE,
            &format!("/v1/apps/app/machines/{id}?force=true"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        live_group_members(pgid),
        Vec::<i32>::new(),
        "stray processes survived destroy"
    );
}

#[tokio::test]
async fn shutdown_kills_every_machine() {
    let mock = start().await;
    let (_, pgid) = machine_with_children(&mock, "shutdown").await;
    mock.server.shutdown().await;
    assert_eq!(live_group_members(pgid), Vec::<i32>::new());
}

#[tokio::test]
async fn memory_watchdog_kills_machines_over_their_memory() {
    let mock = start().await;
    let mut config = exec_config(&[
        "python3",
        "-c",
        "import time\nx = b'\\x01' * (400 * 1024 * 1024)\ntime.sleep(30)",
    ]);
    config["guest"] = json!({"cpu_kind": "shared", "cpus": 1, "memory_mb": 256});
    let id = mock.create("app", json!({"config": config})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    mock.wait_for("app", &id, "stopped").await;
    let exit = last_exit(&mock.get("app", &id).await);
    assert_eq!(exit["oom_killed"], true, "{exit}");
    assert_eq!(exit["exit_code"], 137);
    assert_eq!(mock.server.stats().oom_kills, 1);
}

#[tokio::test]
async fn list_filters() {
    let mock = start().await;
    let app = "listing";
    let make = |role: &'static str, region: &'static str| {
        let mut config = exec_config(&["true"]);
        config["metadata"] = json!({"role": role, "team": "a"});
        json!({"skip_launch": true, "region": region, "config": config})
    };
    let job1 = mock.create(app, make("job", "lcl")).await;
    let job2 = mock.create(app, make("job", "ams")).await;
    let other = mock.create(app, make("other", "lcl")).await;
    let (status, _) = mock
        .call(
            Method::DELETE,
            &format!("/v1/apps/{app}/machines/{}", job2["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let mock = &mock;
    let ids = |query: &'static str| async move {
        let (status, body) = mock
            .call(
                Method::GET,
                &format!("/v1/apps/{app}/machines{query}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let mut ids: Vec<String> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let sorted = |list: &[&serde_json::Value]| {
        let mut ids: Vec<String> = list
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids("").await, sorted(&[&job1, &other]));
    assert_eq!(
        ids("?include_deleted=true").await,
        sorted(&[&job1, &job2, &other])
    );
    assert_eq!(ids("?metadata.role=job").await, sorted(&[&job1]));
    assert_eq!(
        ids("?metadata.role=job&include_deleted=true").await,
        sorted(&[&job1, &job2])
    );
    assert_eq!(
        ids("?metadata.role=job&metadata.team=b").await,
        Vec::<String>::new()
    );
    assert_eq!(
        ids("?region=ams&include_deleted=true").await,
        sorted(&[&job2])
    );
    assert_eq!(
        ids("?state=created,started").await,
        sorted(&[&job1, &other])
    );
    assert_eq!(
        ids("?state=destroyed&include_deleted=true").await,
        sorted(&[&job2])
    );
    let (_, body) = mock
        .call(
            Method::GET,
            &format!("/v1/apps/{app}/machines?summary=true"),
            None,
        )
        .await;
    assert!(body[0].get("config").is_none() && body[0]["id"].is_string());
    // Apps are separate.
    let (_, body) = mock
        .call(Method::GET, "/v1/apps/elsewhere/machines", None)
        .await;
    assert_eq!(body, json!([]));
}

#[tokio::test]
async fn create_validates_its_body() {
    let mock = start().await;
    let path = "/v1/apps/app/machines";
    let (status, body) = mock
        .call(Method::POST, path, Some(json!({"config": {}})))
        .await;
    // A missing image reads as empty (the config type is lenient), then
    // fails validation like an empty one.
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"].as_str().unwrap().contains("image"));
    let (status, _) = mock
        .call(Method::POST, path, Some(json!({"config": {"image": ""}})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let guest = json!({"image": "x", "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 300}});
    let (status, body) = mock
        .call(Method::POST, path, Some(json!({"config": guest})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"].as_str().unwrap().contains("256"));
    let (status, _) = mock
        .call(
            Method::POST,
            path,
            Some(json!({"config": {"image": "x", "restart": {"policy": "sometimes"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = mock
        .call(Method::POST, path, Some(json!("not an object")))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let named = json!({"name": "unique", "skip_launch": true, "config": {"image": "x"}});
    mock.create("app", named.clone()).await;
    let (status, body) = mock.call(Method::POST, path, Some(named.clone())).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Names are unique per app only.
    mock.create("other-app", named.clone()).await;
}

#[tokio::test]
async fn machines_without_a_command_fail() {
    let mock = start().await;
    let machine = mock
        .create("app", json!({"config": {"image": "nothing-known"}}))
        .await;
    let id = machine["id"].as_str().unwrap();
    mock.wait_for("app", id, "failed").await;
    let machine = mock.get("app", id).await;
    assert_eq!(machine["state"], "failed");
    assert!(last_exit(&machine)["error"]
        .as_str()
        .unwrap()
        .contains("no command"));
}

#[tokio::test]
async fn skip_launch_machines_boot_on_update() {
    let mock = start().await;
    let machine = mock
        .create(
            "app",
            json!({"skip_launch": true, "config": exec_config(&["sleep", "100"])}),
        )
        .await;
    let id = machine["id"].as_str().unwrap();
    let (status, body) = mock
        .call(
            Method::POST,
            &format!("/v1/apps/app/machines/{id}/start"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        body["error"],
        "failed_precondition: unable to start machine from current state: 'created'"
    );
    let mut config = exec_config(&["sleep", "100"]);
    config["env"] = json!({"V": "2"});
    let (status, updated) = mock
        .call(
            Method::POST,
            &format!("/v1/apps/app/machines/{id}"),
            Some(json!({"config": config.clone()})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_ne!(updated["instance_id"], machine["instance_id"]);
    assert_eq!(updated["config"]["env"]["V"], "2");
    let started = mock.wait_for("app", id, "started").await;
    assert_eq!(started["version"], updated["instance_id"]);
    // Updating a running machine re-boots it with the new version.
    let (status, again) = mock
        .call(
            Method::POST,
            &format!("/v1/apps/app/machines/{id}"),
            Some(json!({"config": config})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = mock
        .wait(
            "app",
            id,
            &format!(
                "state=started&timeout=30&version={}",
                again["instance_id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], again["instance_id"]);
    let (_, versions) = mock
        .call(
            Method::GET,
            &format!("/v1/apps/app/machines/{id}/versions"),
            None,
        )
        .await;
    assert_eq!(versions.as_array().unwrap().len(), 3);
    let (status, _) = mock
        .call(
            Method::DELETE,
            &format!("/v1/apps/app/machines/{id}?force=true"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn events_are_newest_first_with_millisecond_timestamps() {
    let mock = start().await;
    let id = mock.run("app", &["true"]).await;
    mock.wait_for("app", &id, "stopped").await;
    let (status, events) = mock
        .call(
            Method::GET,
            &format!("/v1/apps/app/machines/{id}/events"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 4);
    let now_ms = chrono_free_now_ms();
    for pair in events.windows(2) {
        assert!(pair[0]["timestamp"].as_i64() >= pair[1]["timestamp"].as_i64());
        assert!(pair[0]["id"].as_str() > pair[1]["id"].as_str());
    }
    for event in events {
        let ts = event["timestamp"].as_i64().unwrap();
        assert!(
            (now_ms - 60_000..=now_ms + 1000).contains(&ts),
            "not ms: {ts}"
        );
    }
    let (_, limited) = mock
        .call(
            Method::GET,
            &format!("/v1/apps/app/machines/{id}/events?limit=1"),
            None,
        )
        .await;
    assert_eq!(limited.as_array().unwrap().len(), 1);
    assert_eq!(limited[0]["type"], "exit");
    let (status, _) = mock
        .call(
            Method::GET,
            &format!("/v1/apps/app/machines/{id}/events?limit=x"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

fn chrono_free_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn leases_guard_mutations() {
    let mock = start().await;
    let id = mock.run("app", &["sleep", "100"]).await;
    mock.wait_for("app", &id, "started").await;
    let lease_path = format!("/v1/apps/app/machines/{id}/lease");
    let (status, lease) = mock
        .call(
            Method::POST,
            &lease_path,
            Some(json!({"description": "dispatcher", "ttl": 30})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    assert_eq!(lease["status"], "success");
    let nonce = lease["data"]["nonce"].as_str().unwrap().to_string();
    let expires = lease["data"]["expires_at"].as_i64().unwrap();
    let now = chrono_free_now_ms() / 1000;
    assert!(
        (now + 25..=now + 35).contains(&expires),
        "expires_at in seconds: {expires}"
    );
    assert_eq!(lease["data"]["description"], "dispatcher");

    let (status, _) = mock
        .call(Method::POST, &format!("{lease_path}?ttl=10"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let header = [(machines::LEASE_NONCE_HEADER, nonce.as_str())];
    let (status, refreshed) = mock
        .call_with(Method::POST, &format!("{lease_path}?ttl=60"), None, &header)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(refreshed["data"]["nonce"], nonce.as_str());
    assert!(refreshed["data"]["expires_at"].as_i64().unwrap() > expires);
    let (status, shown) = mock.call(Method::GET, &lease_path, None).await;
    assert_eq!(
        (status, &shown["data"]["nonce"]),
        (StatusCode::OK, &json!(nonce))
    );

    let stop = format!("/v1/apps/app/machines/{id}/stop");
    let (status, _) = mock.call(Method::POST, &stop, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = mock
        .call_with(
            Method::POST,
            &stop,
            None,
            &[(machines::LEASE_NONCE_HEADER, "wrong")],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Metadata is not guarded.
    let (status, _) = mock
        .call(
            Method::POST,
            &format!("/v1/apps/app/machines/{id}/metadata/k"),
            Some(json!({"value": "v"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = mock.call_with(Method::POST, &stop, None, &header).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = mock.call(Method::DELETE, &lease_path, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = mock
        .call_with(Method::DELETE, &lease_path, None, &header)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = mock.call(Method::GET, &lease_path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Create with lease_ttl answers with the nonce.
    let machine = mock
        .create(
            "app",
            json!({"lease_ttl": 30, "skip_launch": true, "config": exec_config(&["true"])}),
        )
        .await;
    assert_eq!(machine["nonce"].as_str().map(str::len), Some(12));
}

#[tokio::test]
async fn metadata_endpoints() {
    let mock = start().await;
    let mut config = exec_config(&["true"]);
    config["metadata"] = json!({"a": "1"});
    let machine = mock
        .create("app", json!({"skip_launch": true, "config": config}))
        .await;
    let id = machine["id"].as_str().unwrap();
    let path = format!("/v1/apps/app/machines/{id}/metadata");
    let (status, _) = mock
        .call(
            Method::POST,
            &format!("{path}/b"),
            Some(json!({"value": "2"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = mock.call(Method::DELETE, &format!("{path}/a"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = mock.call(Method::GET, &path, None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"b": "2"})));
    // Metadata changes keep the version.
    assert_eq!(
        mock.get("app", id).await["instance_id"],
        machine["instance_id"]
    );
}

#[tokio::test]
async fn stats_endpoint_counts() {
    let mock = start().await;
    let id = mock.run("app", &["true"]).await;
    mock.wait_for("app", &id, "stopped").await;
    let (status, stats) = mock.call(Method::GET, "/_mock/stats", None).await;
    assert_eq!(status, StatusCode::OK);
    let stats: mock_machines::Stats = serde_json::from_value(stats).unwrap();
    assert_eq!(
        (stats.live, stats.peak_live, stats.created, stats.destroyed),
        (1, 1, 1, 0)
    );
    assert_eq!(stats.calls["POST /v1/apps/{app}/machines"], 1);
    assert!(stats.boots >= 1 && stats.exits >= 1);
}

#[tokio::test]
async fn restart_and_suspend() {
    let mock = start().await;
    let id = mock.run("app", &["sleep", "100"]).await;
    mock.wait_for("app", &id, "started").await;
    let base = format!("/v1/apps/app/machines/{id}");
    let (status, _) = mock
        .call(
            Method::POST,
            &format!("{base}/restart?signal=SIGTERM&timeout=5"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    mock.wait_for("app", &id, "started").await;
    let machine = mock.get("app", &id).await;
    assert_eq!(machine["state"], "started");
    let exit = last_exit(&machine);
    assert_eq!(
        (
            exit["signal"].as_i64(),
            exit["requested_stop"].as_bool(),
            exit["restarting"].as_bool()
        ),
        (Some(15), Some(true), Some(true))
    );
    assert!(machine["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "restart"));

    let (status, _) = mock
        .call(Method::POST, &format!("{base}/suspend"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    mock.wait_for("app", &id, "suspended").await;
    let (status, body) = mock
        .call(Method::POST, &format!("{base}/start"), None)
        .await;
    assert_eq!(
        (status, body["previous_state"].as_str()),
        (StatusCode::OK, Some("suspended"))
    );
    mock.wait_for("app", &id, "started").await;
    let (status, _) = mock
        .call(Method::POST, &format!("{base}/cordon"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = mock
        .call(Method::DELETE, &format!("{base}?kill=true"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = mock
        .call(Method::POST, &format!("{base}/start"), None)
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
}
