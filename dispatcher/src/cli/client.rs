//! [`ApiClient`]: a typed client of the dispatcher's own HTTP API, used by
//! the `dispatcher jobs ...` commands. It speaks the same JSON as the
//! routes ([`jobs::Job`]), so the two cannot drift apart silently.

use jobs::{Job, JobStatus};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::api::routes::logs::LogEntry;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The dispatcher answered with an error body.
    #[error("{status}: {message}{}", field.as_deref().map(|f| format!(" (field `{f}`)")).unwrap_or_default())]
    Api {
        status: StatusCode,
        message: String,
        field: Option<String>,
    },
    #[error("talking to the dispatcher")]
    Transport(#[from] reqwest::Error),
    #[error("unexpected answer from the dispatcher: {0}")]
    Decode(String),
}

/// One page of `GET /jobs`.
#[derive(Debug, Deserialize, serde::Serialize)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub next_cursor: Option<String>,
}

/// Job options `submit` may set, by their `POST /jobs` field names; each
/// left out takes the dispatcher's default.
#[derive(Debug, Default, Clone, clap::Args, serde::Serialize)]
pub struct SubmitOptions {
    /// Lower runs first (FIFO within a priority).
    #[arg(long, allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Attempts before the job is dead-lettered.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Each attempt's time limit.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Wait in `scheduled` this long before queueing.
    #[arg(long, conflicts_with = "run_at")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_secs: Option<u64>,
    /// RFC 3339 time to queue the job at.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    /// A second submit with the same key returns the first job.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Receives one POST with the final job view.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// The job's concurrency key (a tenant id): keys share the fleet
    /// round-robin, each within its limits (docs/flow-control.md).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// At most one job waits under this key.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub singleton_key: Option<String>,
    /// What a submit does to the job waiting under the singleton key.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub singleton_policy: Option<SingletonPolicyArg>,
    /// Run once this long after the last submit of a burst under the
    /// singleton key, with its params.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debounce_secs: Option<u64>,
    /// A label to find the job by (repeat for more).
    #[arg(long = "tag")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The job ends `expired` unless an attempt started within this.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_after_secs: Option<u64>,
    /// Opt into the OOM ladder: after an out-of-memory kill, retry on
    /// twice the memory, up to this.
    #[arg(long = "oom-max-memory-mb")]
    #[serde(
        rename = "oom_ladder",
        skip_serializing_if = "Option::is_none",
        serialize_with = "oom_ladder"
    )]
    pub oom_max_memory_mb: Option<u32>,
}

/// `--singleton-policy`, as the API spells it.
#[derive(Debug, Clone, Copy, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SingletonPolicyArg {
    Keep,
    Replace,
    CancelRunning,
}

/// See [`ApiClient::flow_change`].
pub enum FlowChange {
    Put(Option<Value>),
    Remove,
}

/// The answer of `POST /batches` (a repeat under the batch's idempotency
/// key has no `job_ids`).
#[derive(Debug, Deserialize, serde::Serialize)]
pub struct BatchSubmitted {
    pub batch: jobs::Batch,
    #[serde(default)]
    pub job_ids: Vec<jobs::JobId>,
    #[serde(default)]
    pub existing: Vec<usize>,
}

/// `--oom-max-memory-mb N` as the request's `{"max_memory_mb": N}`.
fn oom_ladder<S: serde::Serializer>(cap: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(
        &cap.map(|max_memory_mb| serde_json::json!({"max_memory_mb": max_memory_mb})),
        s,
    )
}

/// What `retry` may change, by the `POST /jobs/{id}/retry` field names.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct RetryOptions {
    /// The new attempts' memory (a multiple of 256).
    #[arg(long)]
    pub memory_mb: Option<u32>,
    #[arg(long)]
    pub cpus: Option<u32>,
    /// `shared` or `performance`.
    #[arg(long)]
    pub cpu_kind: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    /// `NAME=value`, added to the job's env (repeat for more).
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Each new attempt's time limit.
    #[arg(long)]
    pub timeout_secs: Option<u64>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .ok_or_else(|| format!("{text:?} is not NAME=value"))
}

impl RetryOptions {
    /// The request body: only what was given.
    pub fn body(&self) -> Value {
        let mut machine = serde_json::Map::new();
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                machine.insert(name.to_string(), value);
            }
        };
        put("memory_mb", self.memory_mb.map(Value::from));
        put("cpus", self.cpus.map(Value::from));
        put("cpu_kind", self.cpu_kind.clone().map(Value::from));
        put("region", self.region.clone().map(Value::from));
        if !self.env.is_empty() {
            let env: serde_json::Map<String, Value> = self
                .env
                .iter()
                .map(|(name, value)| (name.clone(), Value::from(value.clone())))
                .collect();
            put("env", Some(Value::Object(env)));
        }
        let mut body = serde_json::Map::new();
        if !machine.is_empty() {
            body.insert("machine".into(), Value::Object(machine));
        }
        if let Some(secs) = self.timeout_secs {
            body.insert("timeout_secs".into(), secs.into());
        }
        Value::Object(body)
    }
}

/// The filters of a bulk action (`POST /jobs/bulk/...`).
#[derive(Debug, Default, Clone, clap::Args, serde::Serialize)]
pub struct BulkFilter {
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Only the children of this job.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// One page of a bulk action, as the dispatcher answers it.
#[derive(Debug, Deserialize, serde::Serialize)]
pub struct BulkPage {
    pub dry_run: bool,
    pub matched: u64,
    pub changed: u64,
    pub next_cursor: Option<String>,
}

/// Filters of `GET /jobs`.
#[derive(Debug, Default)]
pub struct ListQuery {
    pub status: Option<JobStatus>,
    pub kind: Option<String>,
    pub tag: Option<String>,
    pub parent: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// What a job stream tells about the job (see [`ApiClient::follow`]).
pub enum Update {
    /// The job changed status or reported progress.
    Changed(Job),
    /// The job is finished; the stream ends.
    Done(Job),
}

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ApiClient {
    /// `base` is e.g. `http://127.0.0.1:8080`; `token` one of the
    /// dispatcher's API tokens, when it has any.
    pub fn new(base: &str, token: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
        }
    }

    pub async fn submit(
        &self,
        kind: &str,
        params: Value,
        options: &SubmitOptions,
    ) -> Result<Job, ClientError> {
        let mut body = serde_json::to_value(options).expect("options serialize");
        body["kind"] = kind.into();
        body["params"] = params;
        self.submit_request(&body).await
    }

    /// `POST /jobs` with a whole request body (any field of the route,
    /// e.g. `machine`, `env`, `secrets`, which `submit` has no options for).
    pub async fn submit_request(&self, body: &Value) -> Result<Job, ClientError> {
        self.send(self.request(Method::POST, "/jobs").json(body))
            .await
    }

    pub async fn get(&self, id: &str) -> Result<Job, ClientError> {
        self.send(self.request(Method::GET, &format!("/jobs/{id}")))
            .await
    }

    pub async fn list(&self, query: &ListQuery) -> Result<JobPage, ClientError> {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(status) = query.status {
            pairs.push(("status", status.to_string()));
        }
        if let Some(kind) = &query.kind {
            pairs.push(("kind", kind.clone()));
        }
        if let Some(tag) = &query.tag {
            pairs.push(("tag", tag.clone()));
        }
        if let Some(parent) = &query.parent {
            pairs.push(("parent", parent.clone()));
        }
        if let Some(limit) = query.limit {
            pairs.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = &query.cursor {
            pairs.push(("cursor", cursor.clone()));
        }
        self.send(self.request(Method::GET, "/jobs").query(&pairs))
            .await
    }

    pub async fn cancel(&self, id: &str) -> Result<Job, ClientError> {
        self.send(self.request(Method::POST, &format!("/jobs/{id}/cancel")))
            .await
    }

    /// Retries a job, with `options` changed for the new attempts.
    pub async fn retry(&self, id: &str, options: &RetryOptions) -> Result<Job, ClientError> {
        self.send(
            self.request(Method::POST, &format!("/jobs/{id}/retry"))
                .json(&options.body()),
        )
        .await
    }

    /// One page of `POST /jobs/bulk/{action}` (`cancel` or `retry`).
    pub async fn bulk(
        &self,
        action: &str,
        filter: &BulkFilter,
        dry_run: bool,
        cursor: Option<&str>,
    ) -> Result<BulkPage, ClientError> {
        let mut body = serde_json::to_value(filter).expect("a filter serializes");
        body["dry_run"] = dry_run.into();
        if let Some(cursor) = cursor {
            body["cursor"] = cursor.into();
        }
        self.send(
            self.request(Method::POST, &format!("/jobs/bulk/{action}"))
                .json(&body),
        )
        .await
    }

    /// `POST /batches` with `jobs` (each a `POST /jobs` body) and the
    /// batch's own fields in `batch` (`idempotency_key`, `callback_url`,
    /// `then`, `then_policy`).
    pub async fn submit_batch(
        &self,
        jobs: Vec<Value>,
        mut batch: serde_json::Map<String, Value>,
    ) -> Result<BatchSubmitted, ClientError> {
        batch.insert("jobs".into(), Value::Array(jobs));
        self.send(self.request(Method::POST, "/batches").json(&batch))
            .await
    }

    pub async fn batch(&self, id: &str) -> Result<jobs::Batch, ClientError> {
        self.send(self.request(Method::GET, &format!("/batches/{id}")))
            .await
    }

    /// Follows `GET /batches/{id}/events`, calling `on_update` with each
    /// view, and returns the completed batch.
    pub async fn follow_batch(
        &self,
        id: &str,
        mut on_update: impl FnMut(&jobs::Batch),
    ) -> Result<jobs::Batch, ClientError> {
        let request = self
            .request(Method::GET, &format!("/batches/{id}/events"))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        read_events(request, "the batch completed", |event| {
            let batch: jobs::Batch = serde_json::from_str(&event.data)
                .map_err(|e| ClientError::Decode(format!("event {}: {e}", event.name)))?;
            on_update(&batch);
            Ok((event.name == "done").then_some(batch))
        })
        .await
    }

    /// Follows `GET /jobs/{id}/events` (Server-Sent Events), calling
    /// `on_update` for each event, and returns the finished job.
    pub async fn follow(
        &self,
        id: &str,
        mut on_update: impl FnMut(&Update),
    ) -> Result<Job, ClientError> {
        let request = self
            .request(Method::GET, &format!("/jobs/{id}/events"))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        read_events(request, "the job finished", |event| {
            let job: Job = serde_json::from_str(&event.data)
                .map_err(|e| ClientError::Decode(format!("event {}: {e}", event.name)))?;
            let update = if event.name == "done" {
                Update::Done(job)
            } else {
                Update::Changed(job)
            };
            on_update(&update);
            Ok(match update {
                Update::Done(job) => Some(job),
                Update::Changed(_) => None,
            })
        })
        .await
    }

    /// Every line of the job's logs (of one `attempt`, or all), page by
    /// page; with `follow`, then the new ones as they come until the
    /// attempt (or job) ends. Calls `on_line` for each.
    pub async fn logs(
        &self,
        id: &str,
        attempt: Option<u32>,
        follow: bool,
        mut on_line: impl FnMut(&LogEntry),
    ) -> Result<(), ClientError> {
        let path = format!("/jobs/{id}/logs");
        let mut query: Vec<(&str, String)> = vec![("format", "jsonl".into())];
        if let Some(n) = attempt {
            query.push(("attempt", n.to_string()));
        }
        if follow {
            query.push(("follow", "true".into()));
            let request = self.request(Method::GET, &path).query(&query);
            return read_events(request, "the attempt ended", |event| {
                if event.name == "end" {
                    return Ok(Some(()));
                }
                on_line(&decode_entry(&event.data)?);
                Ok(None)
            })
            .await;
        }
        let mut cursor: Option<String> = None;
        loop {
            let mut page = query.clone();
            page.extend(cursor.take().map(|c| ("cursor", c)));
            let response = self.request(Method::GET, &path).query(&page).send().await?;
            if !response.status().is_success() {
                return Err(api_error(response).await);
            }
            cursor = response
                .headers()
                .get(crate::api::routes::logs::NEXT_CURSOR)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let text = response.text().await?;
            if text.is_empty() || cursor.is_none() {
                return Ok(());
            }
            for line in text.lines() {
                on_line(&decode_entry(line)?);
            }
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `GET /flow`: the flow-control settings and the busiest keys.
    pub async fn flow(&self) -> Result<jobs::FlowOverview, ClientError> {
        self.send(self.request(Method::GET, "/flow")).await
    }

    /// A flow-control change: `PUT path` with `body` (`None` for no
    /// body), or `DELETE path` when `body` is `Remove`.
    pub async fn flow_change(&self, path: &str, change: FlowChange) -> Result<(), ClientError> {
        let request = match change {
            FlowChange::Put(None) => self.request(Method::PUT, path),
            FlowChange::Put(Some(body)) => self.request(Method::PUT, path).json(&body),
            FlowChange::Remove => self.request(Method::DELETE, path),
        };
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(api_error(response).await);
        }
        Ok(())
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(api_error(response).await);
        }
        let text = response.text().await?;
        serde_json::from_str(&text).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

fn decode_entry(text: &str) -> Result<LogEntry, ClientError> {
    serde_json::from_str(text).map_err(|e| ClientError::Decode(format!("log line: {e}")))
}

/// The dispatcher's `{"error": ..., "field": ...}` body, or the raw text.
/// Reads a Server-Sent Events answer, handing each event to `on_event`
/// until it returns a value; a stream that ends first is an error naming
/// what it ended before (`before`).
async fn read_events<T>(
    request: RequestBuilder,
    before: &str,
    mut on_event: impl FnMut(crate::cli::sse::Event) -> Result<Option<T>, ClientError>,
) -> Result<T, ClientError> {
    let mut response = request.send().await?;
    if !response.status().is_success() {
        return Err(api_error(response).await);
    }
    let mut events = crate::cli::sse::Parser::default();
    while let Some(chunk) = response.chunk().await? {
        for event in events.push(&chunk) {
            if let Some(done) = on_event(event)? {
                return Ok(done);
            }
        }
    }
    Err(ClientError::Decode(format!(
        "the event stream ended before {before}"
    )))
}

async fn api_error(response: reqwest::Response) -> ClientError {
    #[derive(Deserialize)]
    struct Body {
        error: String,
        field: Option<String>,
    }
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let (message, field) = match serde_json::from_str::<Body>(&text) {
        Ok(body) => (body.error, body.field),
        Err(_) => (text, None),
    };
    ClientError::Api {
        status,
        message,
        field,
    }
}
