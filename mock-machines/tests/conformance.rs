//! Conformance: every body the mock answers with is checked against the
//! schemas of Fly's published OpenAPI description (`tests/spec/openapi.yaml`,
//! a copy of `shared/spec/openapi.yaml`, 2023). Newer fields are allowed, as
//! the spec does not forbid additional properties. Bodies the 2023 spec
//! leaves undescribed (wait, start, the lease envelope) are checked against
//! small schemas written after the newer spec and the docs.

mod common;

use std::collections::HashMap;

use common::{exec_config, start};
use jsonschema::Validator;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SPEC: &str = include_str!("spec/openapi.yaml");

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
