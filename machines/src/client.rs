//! [`MachinesClient`]: the subset of the Machines API the dispatcher calls.
//!
//! Every call has a timeout. Calls that fail with 429, a 5xx or a
//! connection error are retried with exponential backoff and jitter until a
//! deadline; a `Retry-After` header replaces the computed delay. Other 4xx
//! answers are the caller's mistake and are returned at once.
//!
//! At most [`ClientConfig::max_in_flight`] exchanges run at once; the rest
//! queue in order. Each exchange is an HTTP/1.1 connection with its own
//! buffers, so the cap bounds the client's memory and sockets (starting ten
//! thousand machines at once would otherwise open ten thousand
//! connections) and keeps a burst from hammering the API's rate limits.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::metrics;
use crate::pacing::{ActionKind, Limits, Pacer, SharedBudget};
use crate::types::*;

/// Where the API is and how patient to be with it.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// e.g. `https://api.machines.dev`, or `http://_api.internal:4280`
    /// from inside Fly's private network. Without the `/v1`.
    pub base_url: String,
    pub app: String,
    pub token: String,
    /// Timeout of one HTTP exchange (a `wait` adds its own timeout to it).
    pub call_timeout: Duration,
    /// Give up retrying once this much time has been spent sleeping.
    pub retry_deadline: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Exchanges in flight at once (a `wait` holds one while it blocks).
    pub max_in_flight: usize,
    /// Pace calls at these limits ([`crate::pacing`]); `None` (the
    /// default): no pacing.
    pub pacing: Option<Limits>,
    /// The budget creates share with other clients (other dispatchers).
    pub shared_budget: Option<Arc<dyn SharedBudget>>,
}

impl std::fmt::Debug for dyn SharedBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedBudget")
    }
}

impl ClientConfig {
    pub fn new(
        base_url: impl Into<String>,
        app: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            app: app.into(),
            token: token.into(),
            call_timeout: Duration::from_secs(30),
            retry_deadline: Duration::from_secs(60),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_in_flight: 256,
            pacing: None,
            shared_budget: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MachinesError {
    #[error("Machines API answered {status}: {message}")]
    Api {
        status: u16,
        message: String,
        /// The `status` field of the error body (`insufficient_capacity`, ...).
        code: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("Machines API unreachable: {0}")]
    Transport(#[from] reqwest::Error),
}

impl MachinesError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::Transport(e) => e.status().map(|s| s.as_u16()),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// 429, 5xx and failures to talk at all are worth another try;
    /// other 4xx answers will not change by asking again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { status, .. } => *status == 429 || *status >= 500,
            Self::Transport(e) => !e.is_decode() && !e.is_builder(),
        }
    }

    /// Fly is out of capacity for this request (not a rate limit): 412
    /// "insufficient resources", 409 "insufficient memory", 403 "over the
    /// allowed quota", 400/422 "no capacity", or any answer whose `status`
    /// is `insufficient_capacity`. Worth retrying later, or elsewhere.
    pub fn is_capacity(&self) -> bool {
        let Self::Api {
            status,
            message,
            code,
            ..
        } = self
        else {
            return false;
        };
        if code.as_deref() == Some("insufficient_capacity") {
            return true;
        }
        let message = message.to_ascii_lowercase();
        let says = |words: &[&str]| words.iter().any(|w| message.contains(w));
        match status {
            412 => says(&["insufficient resources", "capacity"]),
            409 => says(&["insufficient memory", "capacity"]),
            403 => says(&["quota"]),
            400 | 422 => says(&["no capacity", "capacity"]),
            _ => false,
        }
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            Self::Transport(_) => None,
        }
    }
}

/// How a `wait` call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The machine reached (one of) the requested state(s).
    Reached(WaitResponse),
    /// The server's wait timed out (408); the caller loops.
    TimedOut,
    /// The machine does not exist (any more).
    Gone,
}

/// Filters of `GET /v1/apps/{app}/machines`.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub include_deleted: bool,
    pub region: Option<String>,
    /// `metadata.{key}=value`; all must match.
    pub metadata: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct MachinesClient {
    http: reqwest::Client,
    config: Arc<ClientConfig>,
    in_flight: Arc<Semaphore>,
    pacer: Option<Arc<Pacer>>,
}

impl MachinesClient {
    pub fn new(config: ClientConfig) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(config.max_in_flight)
            .build()
            .expect("a TLS backend is compiled in");
        Self {
            http,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            pacer: config
                .pacing
                .map(|limits| Arc::new(Pacer::new(limits, config.shared_budget.clone()))),
            config: Arc::new(config),
        }
    }

    pub fn app(&self) -> &str {
        &self.config.app
    }

    pub async fn create(&self, request: &CreateMachineRequest) -> Result<Machine, MachinesError> {
        self.call(
            Method::POST,
            Route::new("/v1/apps/{app}/machines", None),
            None,
            |r| r.json(request),
        )
        .await
    }

    pub async fn get(&self, id: &str) -> Result<Machine, MachinesError> {
        self.call(
            Method::GET,
            Route::new("/v1/apps/{app}/machines/{id}", Some(id)),
            None,
            |r| r,
        )
        .await
    }

    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Machine>, MachinesError> {
        self.list_as(filter, false).await
    }

    /// Lists with `summary=true`: no config, events or checks, so listing
    /// thousands of machines stays small on the wire and in memory.
    pub async fn list_summaries(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<MachineSummary>, MachinesError> {
        self.list_as(filter, true).await
    }

    async fn list_as<T: DeserializeOwned>(
        &self,
        filter: &ListFilter,
        summary: bool,
    ) -> Result<Vec<T>, MachinesError> {
        let mut query: Vec<(String, String)> = Vec::new();
        if filter.include_deleted {
            query.push(("include_deleted".into(), "true".into()));
        }
        if let Some(region) = &filter.region {
            query.push(("region".into(), region.clone()));
        }
        for (key, value) in &filter.metadata {
            query.push((format!("metadata.{key}"), value.clone()));
        }
        if summary {
            query.push(("summary".into(), "true".into()));
        }
        self.call(
            Method::GET,
            Route::new("/v1/apps/{app}/machines", None),
            None,
            |r| r.query(&query),
        )
        .await
    }

    /// Blocks until the machine reaches one of `states` or `timeout_secs`
    /// (1..=60, the API's cap) pass. Several states go as repeated `state`
    /// parameters, as Fly's own Go client sends them.
    pub async fn wait(
        &self,
        id: &str,
        states: &[&str],
        timeout_secs: u64,
    ) -> Result<WaitOutcome, MachinesError> {
        let timeout_secs = timeout_secs.clamp(1, 60);
        let mut query: Vec<(&str, String)> =
            states.iter().map(|s| ("state", s.to_string())).collect();
        query.push(("timeout", timeout_secs.to_string()));
        let extra = Duration::from_secs(timeout_secs);
        match self
            .call::<WaitResponse>(
                Method::GET,
                Route::new("/v1/apps/{app}/machines/{id}/wait", Some(id)),
                Some(extra),
                |r| r.query(&query),
            )
            .await
        {
            Ok(answer) => Ok(WaitOutcome::Reached(answer)),
            Err(e) if e.status() == Some(408) => Ok(WaitOutcome::TimedOut),
            Err(e) if e.is_not_found() => Ok(WaitOutcome::Gone),
            Err(e) => Err(e),
        }
    }

    /// Boots a stopped machine again (fresh from its image: a start
    /// resets the root filesystem). A warm pool's claim.
    pub async fn start(&self, id: &str) -> Result<(), MachinesError> {
        self.call::<serde_json::Value>(
            Method::POST,
            Route::new("/v1/apps/{app}/machines/{id}/start", Some(id)),
            None,
            |r| r,
        )
        .await
        .map(drop)
    }

    pub async fn stop(&self, id: &str, request: &StopRequest) -> Result<(), MachinesError> {
        self.call::<serde_json::Value>(
            Method::POST,
            Route::new("/v1/apps/{app}/machines/{id}/stop", Some(id)),
            None,
            |r| r.json(request),
        )
        .await
        .map(drop)
    }

    pub async fn signal(&self, id: &str, signal: &str) -> Result<(), MachinesError> {
        let body = SignalRequest {
            signal: signal.to_string(),
        };
        self.call::<serde_json::Value>(
            Method::POST,
            Route::new("/v1/apps/{app}/machines/{id}/signal", Some(id)),
            None,
            |r| r.json(&body),
        )
        .await
        .map(drop)
    }

    /// Destroys the machine, killing it first when `force`. A machine that
    /// is already gone counts as destroyed.
    pub async fn destroy(&self, id: &str, force: bool) -> Result<(), MachinesError> {
        let query = [("force", force.to_string())];
        match self
            .call::<serde_json::Value>(
                Method::DELETE,
                Route::new("/v1/apps/{app}/machines/{id}", Some(id)),
                None,
                |r| r.query(&query),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn events(&self, id: &str, limit: u32) -> Result<Vec<MachineEvent>, MachinesError> {
        let query = [("limit", limit.to_string())];
        self.call(
            Method::GET,
            Route::new("/v1/apps/{app}/machines/{id}/events", Some(id)),
            None,
            |r| r.query(&query),
        )
        .await
    }

    /// One API call with retries. `build` adds query and body to a fresh
    /// request for every try. Every try is counted by route template and
    /// status, every retry by its reason and wait ([`crate::metrics`]).
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        route: Route<'_>,
        extra_timeout: Option<Duration>,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<T, MachinesError> {
        let config = &self.config;
        let path = route.path(&config.app);
        let url = format!("{}{path}", config.base_url);
        let timeout = config.call_timeout + extra_timeout.unwrap_or_default();
        let endpoint = route.template;
        let paced = self.pacer.as_ref().and_then(|p| {
            let (action, kind) = action_of(&method, endpoint)?;
            Some((p, action, kind, route.id.unwrap_or(&config.app)))
        });
        let once = || async {
            if let Some((pacer, action, kind, key)) = paced {
                pacer.pace(action, kind, key).await;
            }
            let _permit = self.in_flight.acquire().await.expect("never closed");
            let request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&config.token)
                .timeout(timeout);
            match build(request).send().await {
                Ok(response) => {
                    metrics::record_call(&method, endpoint, Some(response.status().as_u16()));
                    decode(response).await
                }
                Err(e) => {
                    metrics::record_call(&method, endpoint, None);
                    Err(e.into())
                }
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(config.min_backoff)
            .with_max_delay(config.max_backoff)
            .with_jitter()
            .without_max_times()
            .with_total_delay(Some(config.retry_deadline));
        once.retry(backoff)
            .when(MachinesError::is_retryable)
            .adjust(|e, delay| {
                e.retry_after()
                    .or(delay)
                    .map(|d| d.min(config.retry_deadline))
            })
            .notify(|e, delay| {
                metrics::record_retry(&method, endpoint, e, delay);
                tracing::debug!(%method, path, error = %e, ?delay, "retrying Machines API call");
            })
            .await
    }
}

/// The rate-limited action a call is, and its kind; `None` for `wait`
/// (a long poll, which Fly recommends over polling).
fn action_of(method: &Method, template: &str) -> Option<(&'static str, ActionKind)> {
    let tail = template.trim_start_matches("/v1/apps/{app}/machines");
    Some(match (method.as_str(), tail) {
        ("POST", "") => ("create", ActionKind::Mutate),
        ("GET", "") => ("list", ActionKind::Read),
        ("GET", "/{id}") => ("get", ActionKind::Read),
        ("DELETE", "/{id}") => ("destroy", ActionKind::Mutate),
        ("GET", "/{id}/events") => ("events", ActionKind::Read),
        ("GET", "/{id}/wait") => return None,
        ("POST", "/{id}/start") => ("start", ActionKind::Mutate),
        ("POST", "/{id}/stop") => ("stop", ActionKind::Mutate),
        ("POST", "/{id}/signal") => ("signal", ActionKind::Mutate),
        (_, _) => ("other", ActionKind::Mutate),
    })
}

/// An API path: a fixed template such as
/// `/v1/apps/{app}/machines/{id}/wait` and the machine id filling it.
/// Metrics carry the template, never the id, so their label sets stay small.
#[derive(Clone, Copy)]
struct Route<'a> {
    template: &'static str,
    id: Option<&'a str>,
}

impl<'a> Route<'a> {
    fn new(template: &'static str, id: Option<&'a str>) -> Self {
        Self { template, id }
    }

    fn path(&self, app: &str) -> String {
        let path = self.template.replace("{app}", app);
        match self.id {
            Some(id) => path.replace("{id}", id),
            None => path,
        }
    }
}

async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, MachinesError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response.json().await?);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    let text = response.text().await.unwrap_or_default();
    let (message, code) = match serde_json::from_str::<ErrorResponse>(&text) {
        Ok(body) => (body.error, body.status),
        Err(_) if text.is_empty() => (status_text(status), None),
        Err(_) => (text, None),
    };
    Err(MachinesError::Api {
        status: status.as_u16(),
        message,
        code,
        retry_after,
    })
}

fn status_text(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("error").to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::{routing::get, Json, Router};

    use super::*;

    /// A server that counts the requests it is answering at once.
    async fn counting_server() -> (String, Arc<(AtomicUsize, AtomicUsize)>) {
        let counts = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let seen = counts.clone();
        let app = Router::new().route(
            "/v1/apps/{app}/machines/{id}/events",
            get(move || {
                let seen = seen.clone();
                async move {
                    let now = seen.0.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.1.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    seen.0.fetch_sub(1, Ordering::SeqCst);
                    Json(Vec::<MachineEvent>::new())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, counts)
    }

    #[test]
    fn capacity_answers_are_told_apart_from_rate_limits() {
        let api = |status, message: &str, code: Option<&str>| MachinesError::Api {
            status,
            message: message.into(),
            code: code.map(Into::into),
            retry_after: None,
        };
        assert!(api(412, "insufficient resources to create new machine", None).is_capacity());
        assert!(api(409, "insufficient memory available", None).is_capacity());
        assert!(api(403, "organization is over the allowed quota", None).is_capacity());
        assert!(api(422, "no capacity in region", None).is_capacity());
        assert!(api(412, "x", Some("insufficient_capacity")).is_capacity());
        assert!(!api(429, "rate limited", None).is_capacity());
        assert!(!api(409, "lease held", None).is_capacity());
        assert!(!api(412, "unable to start machine from current state", None).is_capacity());
    }

    #[tokio::test]
    async fn no_more_than_max_in_flight_calls_run_at_once() {
        let (base, counts) = counting_server().await;
        let mut config = ClientConfig::new(base, "app", "token");
        config.max_in_flight = 3;
        let client = MachinesClient::new(config);
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let client = client.clone();
            calls.spawn(async move { client.events("1857156b526dd8", 5).await });
        }
        while let Some(answer) = calls.join_next().await {
            assert!(answer.unwrap().unwrap().is_empty());
        }
        assert_eq!(counts.1.load(Ordering::SeqCst), 3, "peak concurrency");
    }
}
