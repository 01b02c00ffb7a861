//! The mock held to Fly's own client: the exact requests fly-go (the Go
//! client flyctl uses, superfly/fly-go `flaps/flaps_machines.go` and
//! `flaps_machines_wait.go` @ 22d6e518) sends for launch, wait, lease,
//! list, stop, start, kill and destroy, replayed byte for byte as raw HTTP:
//! Go's `encoding/json` field order and `omitempty`, `skip_secrets`
//! always present, `?kill=` on delete, `version=` on wait (query keys
//! sorted, as `url.Values.Encode` writes them), `{"signal": 9}` for kill,
//! the lease `ttl` in the query and the nonce in a header.

use crate::common::{start, Mock, TOKEN};
use machines::{LeaseEnvelope, Machine, MachineState, WaitResponse, LEASE_NONCE_HEADER};
use reqwest::StatusCode;
use serde_json::Value;

const APP: &str = "flygo";

/// Sends one request the way fly-go's `_sendRequest` does: JSON bodies
/// with `Content-Type: application/json`, none otherwise.
async fn send(
    mock: &Mock,
    method: &str,
    endpoint: &str,
    body: Option<&str>,
    nonce: Option<&str>,
) -> (StatusCode, String) {
    let url = mock.url(&format!("/v1/apps/{APP}/machines{endpoint}"));
    let mut request = mock
        .http
        .request(method.parse().unwrap(), url)
        .header("Authorization", format!("Bearer {TOKEN}"));
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    if let Some(nonce) = nonce {
        request = request.header(LEASE_NONCE_HEADER, nonce);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Asserts a 2xx (fly-go treats anything above 299 as an error) and
/// returns the body.
async fn ok(
    mock: &Mock,
    method: &str,
    endpoint: &str,
    body: Option<&str>,
    nonce: Option<&str>,
) -> String {
    let (status, text) = send(mock, method, endpoint, body, nonce).await;
    assert!(status.is_success(), "{method} {endpoint}: {status} {text}");
    text
}

async fn wait(mock: &Mock, id: &str, state: &str, version: &str) -> WaitResponse {
    let endpoint = format!("/{id}/wait?state={state}&timeout=60&version={version}");
    serde_json::from_str(&ok(mock, "GET", &endpoint, None, None).await).unwrap()
}

/// `LaunchMachineInput` as fly-go marshals it: config, region, name,
/// skip_secrets (never omitted), and `MachineConfig` in declaration order
/// with `init` always present.
fn launch_input(name: &str, command: &str) -> String {
    format!(
        r#"{{"config":{{"env":{{"A":"b"}},"init":{{"exec":["sh","-c","{command}"]}},"guest":{{"cpu_kind":"shared","cpus":1,"memory_mb":256}},"metadata":{{"role":"replay"}},"image":"registry.fly.io/app:deployment-01H","auto_destroy":false,"restart":{{"policy":"no"}}}},"region":"lcl","name":"{name}","skip_secrets":false}}"#
    )
}

#[tokio::test]
async fn fly_go_requests_are_understood() {
    let mock = start().await;

    // Launch: 200 and a machine fly-go can decode.
    let body = ok(
        &mock,
        "POST",
        "",
        Some(&launch_input("replay-1", "sleep 300")),
        None,
    )
    .await;
    let machine: Machine = serde_json::from_str(&body).unwrap();
    let (id, version) = (machine.id.clone(), machine.instance_id.clone());
    assert_eq!(machine.name, "replay-1");
    assert_eq!(machine.state, MachineState::Created);
    assert_eq!(
        wait(&mock, &id, "started", &version).await.state.as_deref(),
        Some("started")
    );

    // Processes (GetProcesses).
    let ps: Value =
        serde_json::from_str(&ok(&mock, "GET", &format!("/{id}/ps"), None, None).await).unwrap();
    assert!(ps[0]["pid"].as_i64().unwrap() > 0, "{ps}");

    // Leases: AcquireLease (ttl in the query, no body), FindLease.
    let lease = ok(&mock, "POST", &format!("/{id}/lease?ttl=30"), None, None).await;
    let lease: LeaseEnvelope = serde_json::from_str(&lease).unwrap();
    let nonce = lease.data.nonce.clone();
    let found = ok(&mock, "GET", &format!("/{id}/lease"), None, None).await;
    assert_eq!(
        serde_json::from_str::<LeaseEnvelope>(&found)
            .unwrap()
            .data
            .nonce,
        nonce
    );

    // List (no filters).
    let list: Vec<Machine> = serde_json::from_str(&ok(&mock, "GET", "", None, None).await).unwrap();
    assert_eq!(list.len(), 1);

    // Stop under the lease: StopMachineInput carries the id too.
    let stop = format!(r#"{{"id":"{id}","signal":"SIGTERM","timeout":"10s"}}"#);
    ok(
        &mock,
        "POST",
        &format!("/{id}/stop"),
        Some(&stop),
        Some(&nonce),
    )
    .await;
    wait(&mock, &id, "stopped", &version).await;

    // ReleaseLease, then Start (no body) and Kill (`{"signal": 9}`).
    ok(&mock, "DELETE", &format!("/{id}/lease"), None, Some(&nonce)).await;
    ok(&mock, "POST", &format!("/{id}/start"), None, None).await;
    wait(&mock, &id, "started", &version).await;
    ok(
        &mock,
        "POST",
        &format!("/{id}/signal"),
        Some(r#"{"signal":9}"#),
        None,
    )
    .await;
    wait(&mock, &id, "stopped", &version).await;

    // Destroy: `?kill=false` for a stopped machine, `?kill=true` for a
    // running one.
    ok(&mock, "DELETE", &format!("/{id}?kill=false"), None, None).await;
    let body = ok(
        &mock,
        "POST",
        "",
        Some(&launch_input("replay-2", "sleep 300")),
        None,
    )
    .await;
    let running: Machine = serde_json::from_str(&body).unwrap();
    wait(&mock, &running.id, "started", &running.instance_id).await;
    ok(
        &mock,
        "DELETE",
        &format!("/{}?kill=true", running.id),
        None,
        None,
    )
    .await;
    assert_eq!(mock.server.stats().live, 0);
    mock.server.shutdown().await;
}

/// flyctl tells "gone" from other failures by the error text.
#[tokio::test]
async fn not_found_answers_carry_the_texts_flyctl_matches() {
    let mock = start().await;
    let (status, body) = send(&mock, "GET", "/0123456789abcd", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("machine not found"), "{body}");

    let body = ok(
        &mock,
        "POST",
        "",
        Some(&launch_input("replay-3", "sleep 300")),
        None,
    )
    .await;
    let machine: Machine = serde_json::from_str(&body).unwrap();
    let (status, body) = send(&mock, "GET", &format!("/{}/lease", machine.id), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("lease not found"), "{body}");

    // Unknown routes and methods answer JSON errors too.
    for (method, endpoint, expected) in [
        (
            "GET",
            format!("/{}/nonsense", machine.id),
            StatusCode::NOT_FOUND,
        ),
        (
            "PUT",
            format!("/{}/stop", machine.id),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ] {
        let (status, body) = send(&mock, method, &endpoint, None, None).await;
        assert_eq!(status, expected, "{method} {endpoint}");
        let error: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
        assert!(error["error"].is_string(), "{body}");
    }
    mock.server.shutdown().await;
}
