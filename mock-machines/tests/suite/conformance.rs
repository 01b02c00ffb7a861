//! Conformance: every body the mock answers with is checked against the
//! schemas of Fly's published OpenAPI description (`tests/spec/openapi.yaml`,
//! a copy of `shared/spec/openapi.yaml`, 2023). Newer fields are allowed, as
//! the spec does not forbid additional properties. Bodies the 2023 spec
//! leaves undescribed (wait, start, the lease envelope) are checked against
//! small schemas written after the newer spec and the docs.
//!
//! The request side too: every request the `machines` client sends is
//! captured and checked against the operation's request schema and query
//! parameters, newer fields only where `NEWER_THAN_THE_SPEC` lists them.

use std::collections::HashMap;

use crate::common::{exec_config, start};
use jsonschema::Validator;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SPEC: &str = include_str!("../spec/openapi.yaml");

struct Schemas {
    components: Value,
    cache: HashMap<String, Validator>,
}

impl Schemas {
    fn load() -> Self {
        let spec: Value = serde_norway::from_str(SPEC).expect("the spec is valid YAML");
        Self {
            components: spec["components"].clone(),
            cache: HashMap::new(),
        }
    }

    /// Checks `instance` against `schema`, which may `$ref` the spec's
    /// `#/components/schemas/...`.
    fn check(&mut self, label: &str, schema: Value, instance: &Value) {
        let key = schema.to_string();
        let components = self.components.clone();
        let validator = self.cache.entry(key).or_insert_with(|| {
            let mut root = schema;
            root["components"] = components;
            jsonschema::draft7::new(&root).expect("schema compiles")
        });
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{label} does not match the spec: {errors:#?}\n{instance:#}"
        );
    }

    fn component(&mut self, label: &str, name: &str, instance: &Value) {
        self.check(
            label,
            json!({"$ref": format!("#/components/schemas/{name}")}),
            instance,
        );
    }

    fn array_of(&mut self, label: &str, name: &str, instance: &Value) {
        assert!(instance.is_array(), "{label} is not an array: {instance}");
        self.check(
            label,
            json!({"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}}),
            instance,
        );
    }

    fn error(&mut self, label: &str, (status, body): (StatusCode, Value), expected: StatusCode) {
        assert_eq!(status, expected, "{label}: {body}");
        assert!(
            body["error"].is_string(),
            "{label}: no error message in {body}"
        );
        self.component(label, "ErrorResponse", &body);
    }
}

#[tokio::test]
async fn every_answer_matches_the_published_schemas() {
    let mut schemas = Schemas::load();
    let mock = start().await;
    let base = "/v1/apps/conf/machines";

    // Create, then a full lifecycle, checking each machine body on the way.
    let mut config = exec_config(&["sh", "-c", "exit 3"]);
    config["guest"] = json!({"cpu_kind": "shared", "cpus": 1, "memory_mb": 256});
    config["metadata"] = json!({"role": "job"});
    config["env"] = json!({"A": "b"});
    config["stop_config"] = json!({"signal": "SIGTERM", "timeout": "3s"});
    config["services"] = json!([]);
    let created = mock
        .create(
            "conf",
            json!({"name": "conf-1", "region": "lcl", "config": config}),
        )
        .await;
    schemas.component("create", "Machine", &created);
    let id = created["id"].as_str().unwrap().to_string();

    let (status, waited) = mock.wait("conf", &id, "state=stopped&timeout=30").await;
    assert_eq!(status, StatusCode::OK);
    let wait_schema = json!({
        "type": "object",
        "required": ["ok"],
        "properties": {
            "ok": {"type": "boolean"},
            "state": {"type": "string"},
            "version": {"type": "string"},
            "event_id": {"type": "string"}
        }
    });
    schemas.check("wait", wait_schema, &waited);

    let stopped = mock.get("conf", &id).await;
    schemas.component("get (stopped, with exit event)", "Machine", &stopped);
    let (_, events) = mock
        .call(Method::GET, &format!("{base}/{id}/events"), None)
        .await;
    schemas.array_of("events", "MachineEvent", &events);
    let (_, versions) = mock
        .call(Method::GET, &format!("{base}/{id}/versions"), None)
        .await;
    schemas.array_of("versions", "MachineVersion", &versions);
    let (status, metadata) = mock
        .call(Method::GET, &format!("{base}/{id}/metadata"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    schemas.check(
        "metadata",
        json!({"type": "object", "additionalProperties": {"type": "string"}}),
        &metadata,
    );

    let (status, started) = mock
        .call(Method::POST, &format!("{base}/{id}/start"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let start_schema = json!({
        "type": "object",
        "properties": {
            "previous_state": {"type": "string"},
            "migrated": {"type": "boolean"},
            "new_host": {"type": "string"}
        }
    });
    schemas.check("start", start_schema, &started);

    // Leases come wrapped; `data` is the spec's Lease.
    let (status, lease) = mock
        .call(
            Method::POST,
            &format!("{base}/{id}/lease"),
            Some(json!({"ttl": 30})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let envelope = json!({
        "type": "object",
        "required": ["status", "data"],
        "properties": {
            "status": {"type": "string", "enum": ["success"]},
            "data": {"$ref": "#/components/schemas/Lease"}
        }
    });
    schemas.check("lease acquire", envelope.clone(), &lease);
    let (_, shown) = mock
        .call(Method::GET, &format!("{base}/{id}/lease"), None)
        .await;
    schemas.check("lease show", envelope, &shown);
    let nonce = lease["data"]["nonce"].as_str().unwrap().to_string();
    schemas.error(
        "lease conflict",
        mock.call(Method::POST, &format!("{base}/{id}/lease"), None)
            .await,
        StatusCode::CONFLICT,
    );
    let header = [(machines::LEASE_NONCE_HEADER, nonce.as_str())];
    let (status, _) = mock
        .call_with(Method::DELETE, &format!("{base}/{id}/lease"), None, &header)
        .await;
    assert_eq!(status, StatusCode::OK);

    let (_, list) = mock
        .call(Method::GET, &format!("{base}?include_deleted=true"), None)
        .await;
    schemas.array_of("list", "Machine", &list);
    let (_, summary) = mock
        .call(Method::GET, &format!("{base}?summary=true"), None)
        .await;
    schemas.array_of("list summary", "Machine", &summary);

    // Error bodies.
    let unauthorized = mock
        .http
        .get(mock.url(base))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    let status = unauthorized.status();
    schemas.error(
        "401",
        (status, unauthorized.json().await.unwrap()),
        StatusCode::UNAUTHORIZED,
    );
    schemas.error(
        "404",
        mock.call(Method::GET, &format!("{base}/00000000000000"), None)
            .await,
        StatusCode::NOT_FOUND,
    );
    schemas.error(
        "400",
        mock.wait("conf", &id, "timeout=61").await,
        StatusCode::BAD_REQUEST,
    );
    schemas.error(
        "408",
        mock.wait("conf", &id, "state=suspended&timeout=1").await,
        StatusCode::REQUEST_TIMEOUT,
    );
    let duplicate = json!({"name": "conf-1", "skip_launch": true, "config": {"image": "x"}});
    schemas.error(
        "409",
        mock.call(Method::POST, base, Some(duplicate)).await,
        StatusCode::CONFLICT,
    );
    let bad_memory = json!({"config": {"image": "x", "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 100}}});
    schemas.error(
        "422",
        mock.call(Method::POST, base, Some(bad_memory)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    let running = mock.run("conf", &["sleep", "100"]).await;
    mock.wait_for("conf", &running, "started").await;
    let (status, ps) = mock
        .call(Method::GET, &format!("{base}/{running}/ps"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!ps.as_array().unwrap().is_empty(), "{ps}");
    schemas.array_of("ps", "ProcessStat", &ps);
    schemas.error(
        "404 unknown route",
        mock.call(Method::GET, &format!("{base}/{running}/nonsense"), None)
            .await,
        StatusCode::NOT_FOUND,
    );
    schemas.error(
        "412",
        mock.call(Method::DELETE, &format!("{base}/{running}"), None)
            .await,
        StatusCode::PRECONDITION_FAILED,
    );
    mock.call(
        Method::POST,
        "/_mock/faults",
        Some(json!({"capacity_error_rate": 1.0})),
    )
    .await;
    let capacity = mock
        .call(Method::POST, base, Some(json!({"config": {"image": "x"}})))
        .await;
    assert_eq!(capacity.1["status"], "insufficient_capacity");
    schemas.error("412 capacity", capacity, StatusCode::PRECONDITION_FAILED);
    mock.call(
        Method::POST,
        "/_mock/faults",
        Some(json!({"capacity_error_rate": 0.0, "fail_next_creates": 1, "fail_status": 429})),
    )
    .await;
    schemas.error(
        "429",
        mock.call(Method::POST, base, Some(json!({"config": {"image": "x"}})))
            .await,
        StatusCode::TOO_MANY_REQUESTS,
    );

    // Destroy answers {"ok": true}; the destroyed machine is still a Machine.
    let (status, ok) = mock
        .call(
            Method::DELETE,
            &format!("{base}/{running}?force=true"),
            None,
        )
        .await;
    assert_eq!((status, ok), (StatusCode::OK, json!({"ok": true})));
    schemas.component(
        "get (destroyed)",
        "Machine",
        &mock.get("conf", &running).await,
    );
}

#[test]
fn the_checker_catches_wrong_shapes() {
    let mut schemas = Schemas::load();
    let wrong = json!({"id": 5, "state": "started", "events": [{"timestamp": "yesterday"}]});
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        schemas.component("wrong", "Machine", &wrong);
    }));
    assert!(result.is_err(), "a machine with a numeric id must not pass");
}

// ---- Request side: what the client sends -------------------------------

/// Request fields and query parameters this client sends that the 2023
/// spec does not describe, each with where the newer API documents it.
/// Anything else outside the spec fails the test.
const NEWER_THAN_THE_SPEC: &[&str] = &[
    // SPEC26 and fly-go `LaunchMachineInput`: keep app secrets out.
    "POST /apps/{app_name}/machines body.skip_secrets",
    // SPEC26 list filters: `metadata.{key}=value` and `summary=true`.
    "GET /apps/{app_name}/machines query.metadata.*",
    "GET /apps/{app_name}/machines query.summary",
    // SPEC26 and the docs' delete example: `force=true`.
    "DELETE /apps/{app_name}/machines/{machine_id} query.force",
    // SPEC26: `limit` (default 20, at most 50).
    "GET /apps/{app_name}/machines/{machine_id}/events query.limit",
];

/// One request as the capturing server saw it.
#[derive(Clone, Debug)]
struct Captured {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    body: Option<Value>,
}

const APP: &str = "conf-app";
const MACHINE: &str = "1857156b526dd8";

/// A server that records every request and answers it with a plausible
/// success body, so the client goes through all of its calls.
async fn capturing_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Captured>>>) {
    use axum::extract::{Request, State};
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<Captured>>> = Arc::default();
    async fn capture(
        State(seen): State<Arc<Mutex<Vec<Captured>>>>,
        request: Request,
    ) -> axum::Json<Value> {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let query = parts
            .uri
            .query()
            .map(|q| {
                q.split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let captured = Captured {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query,
            body: (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).unwrap()),
        };
        let machine = json!({"id": MACHINE, "name": "job-x-1", "state": "created",
                             "instance_id": "01HEPA330HZ37A78TK080NAK1M", "config": {"image": "i"}});
        let answer = match (captured.method.as_str(), captured.path.as_str()) {
            ("POST", p) if p.ends_with("/machines") => machine,
            ("GET", p) if p.ends_with("/machines") || p.ends_with("/events") => json!([]),
            ("GET", p) if p.ends_with(MACHINE) => machine,
            _ => json!({"ok": true}),
        };
        seen.lock().unwrap().push(captured);
        axum::Json(answer)
    }
    let app = axum::Router::new()
        .fallback(capture)
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

/// Object keys of `instance` that `schema` (after `$ref` and `allOf`)
/// does not name, as `prefix.key` paths.
fn unknown_keys(components: &Value, schema: &Value, instance: &Value, prefix: &str) -> Vec<String> {
    let resolve = |schema: &Value| -> Value {
        match schema["$ref"].as_str() {
            Some(r) => components["schemas"][r.trim_start_matches("#/components/schemas/")].clone(),
            None => schema.clone(),
        }
    };
    let schema = resolve(schema);
    let mut properties = serde_json::Map::new();
    for part in std::iter::once(&schema).chain(schema["allOf"].as_array().into_iter().flatten()) {
        if let Some(props) = resolve(part)["properties"].as_object() {
            properties.extend(props.clone());
        }
    }
    let mut unknown = Vec::new();
    match instance {
        Value::Object(object) if !properties.is_empty() => {
            for (key, value) in object {
                let path = format!("{prefix}.{key}");
                match properties.get(key) {
                    Some(sub) => unknown.extend(unknown_keys(components, sub, value, &path)),
                    None => unknown.push(path),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                unknown.extend(unknown_keys(components, &schema["items"], item, prefix));
            }
        }
        _ => {}
    }
    unknown
}

/// Every request the client sends, body and query, validates against the
/// request side of Fly's spec: bodies against the operation's request
/// schema, with no field the spec does not name (unless listed in
/// [`NEWER_THAN_THE_SPEC`]), and only declared query parameters.
#[tokio::test]
async fn every_client_request_matches_the_published_schemas() {
    use machines::*;
    let mut schemas = Schemas::load();
    let spec: Value = serde_norway::from_str(SPEC).unwrap();
    let (base, seen) = capturing_server().await;
    let client = MachinesClient::new(ClientConfig::new(base, APP, "token"));

    // The dispatcher's create request, field for field (see
    // `dispatcher/src/supervisor.rs`, `machine_request`).
    let create: CreateMachineRequest = serde_json::from_value(json!({
        "name": "job-0190d6e5-2a5b-7c4e-9a43-5b8a3f0e6c21-1",
        "region": "iad",
        "skip_secrets": true,
        "config": {
            "image": "registry.fly.io/app:deployment-01H",
            "env": {"JOB_ID": "0190d6e5", "JOB_ATTEMPT": "1", "JOB_TOKEN": "t"},
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
            "auto_destroy": true,
            "restart": {"policy": "no"},
            "init": {"exec": ["/usr/local/bin/runner"]},
            "metadata": {"role": "job", "job_id": "0190d6e5", "attempt": "1"},
            "stop_config": {"signal": "SIGTERM", "timeout": "30s"}
        }
    }))
    .unwrap();
    client.create(&create).await.unwrap();
    client.get(MACHINE).await.unwrap();
    let filter = ListFilter {
        include_deleted: true,
        region: Some("iad".into()),
        metadata: vec![("role".into(), "job".into())],
    };
    client.list(&filter).await.unwrap();
    client.list_summaries(&filter).await.unwrap();
    client
        .wait(
            MACHINE,
            Some("01HEPA330HZ37A78TK080NAK1M"),
            &["stopped", "destroyed"],
            60,
        )
        .await
        .unwrap();
    client
        .stop(
            MACHINE,
            &StopRequest {
                signal: Some("SIGTERM".into()),
                timeout: Some(GoDuration(std::time::Duration::from_secs(5))),
            },
        )
        .await
        .unwrap();
    client.signal(MACHINE, "SIGKILL").await.unwrap();
    client.events(MACHINE, 20).await.unwrap();
    client.destroy(MACHINE, true).await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 9, "one request per call: {seen:#?}");
    let mut outside = Vec::new();
    for request in &seen {
        let template = request
            .path
            .trim_start_matches("/v1")
            .replace(APP, "{app_name}")
            .replace(MACHINE, "{machine_id}");
        let method = request.method.to_lowercase();
        let operation = &spec["paths"][&template][&method];
        let label = format!("{} {template}", request.method);
        assert!(operation.is_object(), "{label} is not in the spec");
        let declared: Vec<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        for (name, _) in &request.query {
            if !declared.contains(&name.as_str()) {
                let name = match name.split_once('.') {
                    Some((head, _)) => format!("{head}.*"),
                    None => name.clone(),
                };
                outside.push(format!("{label} query.{name}"));
            }
        }
        let body_schema = &operation["requestBody"]["content"]["application/json"]["schema"];
        match &request.body {
            Some(body) => {
                assert!(
                    body_schema.is_object(),
                    "{label} sends a body the spec does not take"
                );
                schemas.check(&label, body_schema.clone(), body);
                outside.extend(
                    unknown_keys(&spec["components"], body_schema, body, "body")
                        .into_iter()
                        .map(|key| format!("{label} {key}")),
                );
            }
            None => assert!(
                !request.method.eq_ignore_ascii_case("post") || body_schema.is_null(),
                "{label} sends no body"
            ),
        }
    }
    outside.sort();
    outside.dedup();
    let unexplained: Vec<&String> = outside
        .iter()
        .filter(|o| !NEWER_THAN_THE_SPEC.contains(&o.as_str()))
        .collect();
    assert!(
        unexplained.is_empty(),
        "requests carry fields the spec does not name: {unexplained:#?}"
    );
    let stale: Vec<&&str> = NEWER_THAN_THE_SPEC
        .iter()
        .filter(|n| !outside.iter().any(|o| o == *n))
        .collect();
    assert!(stale.is_empty(), "listed but never sent: {stale:#?}");
}
