//! The OpenAPI description: generated from the handlers as the router
//! registers them, served at /openapi.json, every documented operation
//! really routed, and a committed copy (`dispatcher/openapi.json`) that
//! must match, so an API change shows up in review.
//! Regenerate it with `UPDATE_OPENAPI=1 cargo test --test system openapi::`.

use std::collections::BTreeSet;

use crate::support::spawn_system;
use serde_json::Value;

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dispatcher/openapi.json");

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_description_matches_the_routes() {
    let system = spawn_system().await;
    let doc: Value = system.get_json("/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    let expected: BTreeSet<(String, String)> = [
        ("POST", "/jobs"),
        ("GET", "/jobs"),
        ("GET", "/jobs/{id}"),
        ("DELETE", "/jobs/{id}"),
        ("POST", "/jobs/{id}/cancel"),
        ("POST", "/jobs/{id}/retry"),
        ("POST", "/jobs/bulk/cancel"),
        ("POST", "/jobs/bulk/retry"),
        ("GET", "/jobs/{id}/events"),
        ("GET", "/jobs/events"),
        ("GET", "/jobs/{id}/logs"),
        ("POST", "/batches"),
        ("GET", "/batches"),
        ("GET", "/batches/{id}"),
        ("GET", "/batches/{id}/jobs"),
        ("GET", "/batches/{id}/events"),
        ("POST", "/schedules"),
        ("GET", "/schedules"),
        ("GET", "/schedules/{id}"),
        ("DELETE", "/schedules/{id}"),
        ("GET", "/metrics"),
        ("GET", "/"),
        ("GET", "/login"),
        ("POST", "/login"),
        ("POST", "/logout"),
        ("GET", "/healthz"),
        ("GET", "/flow"),
        ("PUT", "/concurrency"),
        ("DELETE", "/concurrency"),
        ("PUT", "/concurrency/{key}"),
        ("DELETE", "/concurrency/{key}"),
        ("PUT", "/rate-limits/{scope}/{name}"),
        ("DELETE", "/rate-limits/{scope}/{name}"),
        ("PUT", "/pauses/{scope}/{name}"),
        ("DELETE", "/pauses/{scope}/{name}"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(operations(&doc), expected);

    // Every documented operation is routed: the fallback's "no such route"
    // never answers it.
    for (method, path) in operations(&doc) {
        let path = path.replace("{id}", "0190a3f4-0000-7000-8000-000000000000");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = system
            .http
            .request(method.clone(), system.url(&path))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        // A stream (`GET /jobs/events`) never ends: its answer is proof
        // enough that it is routed (the fallback answers JSON).
        let streaming = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if streaming {
            continue;
        }
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("no such route"),
            "{method} {path} is documented but not routed"
        );
    }
    let job = &doc["components"]["schemas"]["Job"]["properties"];
    for field in ["id", "status", "attempts", "result", "progress"] {
        assert!(job.get(field).is_some(), "Job schema lacks {field}");
    }

    let generated = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(SNAPSHOT, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        committed == generated,
        "dispatcher/openapi.json is out of date; run UPDATE_OPENAPI=1 cargo test --test system openapi:: and review the diff"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_description_lists_every_answer_the_server_gives() {
    let system = spawn_system().await;
    let doc: Value = system.get_json("/openapi.json").await;
    let open = ["/healthz", "/login", "/logout"];
    for (method, path) in operations(&doc) {
        let operation = &doc["paths"][&path][method.to_lowercase()];
        let responses = operation["responses"].as_object().unwrap();
        if !open.contains(&path.as_str()) {
            for status in ["401", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
        }
        if path.contains("{id}") {
            let id = operation["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "id")
                .unwrap();
            assert_eq!(id["schema"]["format"], "uuid", "{method} {path}");
            assert!(responses.contains_key("400") && responses.contains_key("404"));
        }
        if operation["requestBody"]["content"]
            .get("application/json")
            .is_some()
        {
            for status in ["400", "413", "415", "422"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
        }
    }
    let events = &doc["paths"]["/jobs/{id}/events"]["get"]["responses"]["200"]["content"];
    assert!(events.get("text/event-stream").is_some(), "{events}");
    assert!(events.get("application/json").is_none());
    let kind = &doc["components"]["schemas"]["JobRequest"]["properties"]["kind"];
    assert_eq!(kind["pattern"], "^[a-z0-9][a-z0-9_.-]{0,63}$");

    // A wrong method is a JSON 405, like every other error.
    let response = system.http.put(system.url("/jobs")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert!(response.json::<Value>().await.unwrap()["error"].is_string());
    system.stop().await;
}
