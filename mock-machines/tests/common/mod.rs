//! Shared helpers: a real mock on 127.0.0.1:0 and a few request shortcuts.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use mock_machines::{MockConfig, MockServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const TOKEN: &str = "test-token";

pub struct Mock {
    pub server: MockServer,
    pub http: reqwest::Client,
}

/// A mock with test-friendly settings: no rate limits, no latency.
pub async fn start() -> Mock {
    start_with(MockConfig {
        token: TOKEN.to_string(),
        rate_limits: false,
        ..MockConfig::default()
    })
    .await
}

pub async fn start_with(config: MockConfig) -> Mock {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = MockServer::start(config, listener).await.unwrap();
    Mock {
        server,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap(),
    }
}

impl Mock {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    /// An authenticated request to `path` (relative to the server).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(method, path, body, &[]).await
    }

    /// Changes the fault settings (`POST /_mock/faults`); returns them all.
    pub async fn set_faults(&self, patch: Value) -> Value {
        let (status, body) = self.call(Method::POST, "/_mock/faults", Some(patch)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Creates a machine in `app` and returns its JSON (asserting 200).
    pub async fn create(&self, app: &str, body: Value) -> Value {
        let (status, machine) = self
            .call(
                Method::POST,
                &format!("/v1/apps/{app}/machines"),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "create failed: {machine}");
        machine
    }

    /// Creates a machine running `command` with restart policy `no`.
    pub async fn run(&self, app: &str, command: &[&str]) -> String {
        let machine = self
            .create(app, json!({"config": exec_config(command)}))
            .await;
        machine["id"].as_str().unwrap().to_string()
    }

    pub async fn wait(&self, app: &str, id: &str, query: &str) -> (StatusCode, Value) {
        self.call(
            Method::GET,
            &format!("/v1/apps/{app}/machines/{id}/wait?{query}"),
            None,
        )
        .await
    }

    /// Waits (asserting success) until the machine reaches `state`.
    pub async fn wait_for(&self, app: &str, id: &str, state: &str) -> Value {
        let (status, body) = self
            .wait(app, id, &format!("state={state}&timeout=30"))
            .await;
        assert_eq!(status, StatusCode::OK, "waiting for {state}: {body}");
        body
    }

    pub async fn get(&self, app: &str, id: &str) -> Value {
        let (status, machine) = self
            .call(Method::GET, &format!("/v1/apps/{app}/machines/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "get failed: {machine}");
        machine
    }

    pub fn client(&self, app: &str) -> machines::MachinesClient {
        machines::MachinesClient::new(machines::ClientConfig::new(
            self.server.base_url(),
            app,
            TOKEN,
        ))
    }
}

/// A config that execs `command` and never restarts.
pub fn exec_config(command: &[&str]) -> Value {
    json!({
        "image": "registry.fly.io/test:latest",
        "init": {"exec": command},
        "restart": {"policy": "no"},
    })
}

/// The newest exit event of a machine's JSON.
pub fn last_exit(machine: &Value) -> Value {
    machine["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "exit")
        .map(|e| e["request"]["exit_event"].clone())
        .unwrap_or_else(|| panic!("no exit event in {machine}"))
}

/// Pids of live (non-zombie) processes in process group `pgid`.
pub fn live_group_members(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields[2].parse::<i32>().ok() == Some(pgid) && fields[0] != "Z" {
            members.push(pid);
        }
    }
    members
}

/// Polls `check` every 20 ms for up to `limit` (only for observing the
/// host, e.g. a pid file a child writes; never for mock state).
pub async fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
