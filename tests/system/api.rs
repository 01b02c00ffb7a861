//! The HTTP API's edges: authentication and bad input. Bad input gets a
//! JSON error naming the problem, and nothing is stored.

use crate::support::{spawn_system, spawn_system_with, Options};
use dispatcher::cli::client::ListQuery;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_when_configured() {
    let system = spawn_system_with(Options {
        api_tokens: vec!["alpha".into(), "beta".into()],
        ..Options::default()
    })
    .await;
    let jobs = system.url("/jobs");
    let body = json!({"kind": "echo"});

    let none = system.http.post(&jobs).json(&body).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let error: Value = none.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("token"));

    let wrong = system
        .http
        .get(&jobs)
        .bearer_auth("gamma")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let other_scheme = system
        .http
        .get(&jobs)
        .basic_auth("alpha", None::<&str>)
        .send()
        .await
        .unwrap();
    assert_eq!(other_scheme.status(), 401);

    let ok = system
        .http
        .post(&jobs)
        .bearer_auth("beta")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);
    let id = ok.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let get = system
        .http
        .get(system.url(&format!("/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 401);
    let get = system
        .http
        .get(system.url(&format!("/jobs/{id}")))
        .bearer_auth("alpha")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);

    // Health checks need no token.
    let health = system
        .http
        .get(system.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    system.stop().await;
}

/// Sends a raw body and returns (status, JSON error body).
async fn send_raw(
    system: &crate::support::TestSystem,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = system.http.post(system.url("/jobs")).body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_clear_error_and_nothing_is_stored() {
    let system = spawn_system_with(Options {
        body_limit: 4096,
        ..Options::default()
    })
    .await;
    let json_ct = Some("application/json");
    // (content type, body, expected status, expected `field`)
    type Case = (Option<&'static str>, Vec<u8>, u16, Option<&'static str>);
    let cases: Vec<Case> = vec![
        (
            json_ct,
            br#"{"kind":"echo","color":"red"}"#.to_vec(),
            422,
            Some("color"),
        ),
        (json_ct, br#"{"kind":5}"#.to_vec(), 422, Some("kind")),
        (json_ct, br#"{"params":{}}"#.to_vec(), 422, Some("kind")),
        (
            json_ct,
            br#"{"kind":"Not A Kind!"}"#.to_vec(),
            422,
            Some("kind"),
        ),
        (
            json_ct,
            br#"{"kind":"echo","max_attempts":"three"}"#.to_vec(),
            422,
            Some("max_attempts"),
        ),
        (
            json_ct,
            br#"{"kind":"echo","timeout_secs":0}"#.to_vec(),
            422,
            Some("timeout_secs"),
        ),
        (
            json_ct,
            br#"{"kind":"echo","machine":{"memory_mb":100}}"#.to_vec(),
            422,
            Some("machine.memory_mb"),
        ),
        (json_ct, br#"{"kind":"echo""#.to_vec(), 400, None),
        (json_ct, b"not json".to_vec(), 400, None),
        (json_ct, br#"{"kind":"echo"} trailing"#.to_vec(), 400, None),
        (
            Some("text/plain"),
            br#"{"kind":"echo"}"#.to_vec(),
            415,
            None,
        ),
        (None, br#"{"kind":"echo"}"#.to_vec(), 415, None),
    ];
    for (content_type, body, status, field) in cases {
        let text = String::from_utf8_lossy(&body).to_string();
        let (got, error) = send_raw(&system, content_type, body).await;
        assert_eq!(got, status, "{text}: {error}");
        assert!(error["error"].is_string(), "{text}: {error}");
        match field {
            Some(field) => assert_eq!(error["field"], field, "{text}: {error}"),
            None => assert!(error.get("field").is_none(), "{text}: {error}"),
        }
    }
    let big = json!({"kind": "echo", "params": {"blob": "x".repeat(8192)}})
        .to_string()
        .into_bytes();
    let (status, error) = send_raw(&system, json_ct, big).await;
    assert_eq!(status, 413, "{error}");

    let listed: Value = system.get_json("/jobs").await;
    assert_eq!(listed["jobs"], json!([]), "a refused job was stored");
    assert_eq!(system.mock_stats().created, 0);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_ids_and_queries() {
    let system = spawn_system().await;
    let missing = system
        .http
        .get(system.url("/jobs/0190a3f4-0000-7000-8000-000000000000"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let bad = system
        .http
        .get(system.url("/jobs/42"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["field"], "id");
    let bad_status = system
        .http
        .get(system.url("/jobs?status=done"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_status.status(), 400);
    assert_eq!(bad_status.json::<Value>().await.unwrap()["field"], "status");
    let bad_limit = system
        .http
        .get(system.url("/jobs?limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_limit.status(), 400);
    let no_route = system.http.get(system.url("/nope")).send().await.unwrap();
    assert_eq!(no_route.status(), 404);
    assert!(no_route.json::<Value>().await.unwrap()["error"].is_string());
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_newest_first_with_a_limit() {
    let system = spawn_system().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let job = system
            .submit(json!({"kind": "echo", "params": {"i": i}, "delay_secs": 3600}))
            .await;
        assert_eq!(job.status, jobs::JobStatus::Scheduled);
        ids.push(job.id);
    }
    let first_two = ListQuery {
        limit: Some(2),
        ..ListQuery::default()
    };
    let listed = system.api.list(&first_two).await.unwrap();
    let got: Vec<jobs::JobId> = listed.jobs.iter().map(|j| j.id).collect();
    assert_eq!(got, [ids[2], ids[1]]);
    system.stop().await;
}

/// A record the store cannot read back is the dispatcher's problem, not the
/// client's: a `500` with a plain message, and what was wrong (keys,
/// values) only in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_is_a_500_that_keeps_its_detail_from_the_client() {
    use fred::interfaces::{ClientLike as _, HashesInterface as _};
    let system = spawn_system().await;
    let job = system
        .submit_raw(json!({"kind": "echo", "delay_secs": 3600}))
        .await;
    let id = job["id"].as_str().unwrap();
    let raw = system.raw_store().await;
    let _: () = raw
        .hset(
            format!("{{{}}}:job:{id}", system.store.namespace()),
            ("priority", "not-a-number-7f3a"),
        )
        .await
        .unwrap();
    let _ = raw.quit().await;

    let answer = system
        .http
        .get(system.url(&format!("/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 500);
    let body: Value = answer.json().await.unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("internal error"), "{body}");
    assert!(
        !body.to_string().contains("not-a-number-7f3a") && !body.to_string().contains("priority"),
        "the corrupt value leaked to the client: {body}"
    );
    system.stop().await;
}
