//! [`MachinesClient`]: the subset of the Machines API the dispatcher calls.
//!
//! Every call has a timeout. What is retried depends on whether sending a
//! call twice is harmless:
//!
//! - Reads, `wait`, `stop` and `destroy` repeat safely: after a 429, a 5xx
//!   or a connection error they are retried with exponential backoff and
//!   jitter until a deadline; a `Retry-After` header replaces the computed
//!   delay.
//! - `create` and `signal` are not: Fly may have acted on a request whose
//!   answer was lost. They are retried only when the request surely did
//!   not reach Fly (the connection could not be made) or was refused
//!   unread (429). Fly's own Go client retries nothing but GETs.
//!
//! A create that named its machine settles an ambiguous failure (5xx, lost
//! answer) or a duplicate name (409) by looking the name up and adopting
//! the machine it finds, so a lost answer never leads to a second machine
//! or to a failure for a machine that runs. Other 4xx answers are the
//! caller's mistake and are returned at once.
//!
//! An empty or non-JSON body on a 2xx is success for calls that need no
//! body (delete, stop, signal, wait): Fly's spec documents no body for
//! several of them.
//!
//! At most [`ClientConfig::max_in_flight`] exchanges run at once; the rest
//! queue in order. Each exchange is an HTTP/1.1 connection with its own
//! buffers, so the cap bounds the client's memory and sockets (starting ten
//! thousand machines at once would otherwise open ten thousand
//! connections) and keeps a burst from hammering the API's rate limits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::time::Instant;

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

    /// The backoff every retry loop of the client follows.
    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_backoff)
            .with_max_delay(self.max_backoff)
            .with_jitter()
            .without_max_times()
            .with_total_delay(Some(self.retry_deadline))
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
    /// A 2xx whose body lacks what the call needs to decide anything
    /// (a machine without `id` or `state`, ...). Never retried: asking
    /// again gets the same answer.
    #[error("Machines API answer of {endpoint} could not be read: {detail}")]
    Decode {
        endpoint: &'static str,
        detail: String,
    },
    /// The caller's guard withdrew the request before a try was sent
    /// ([`MachinesClient::create_guarded`]).
    #[error("the request was withdrawn before it was sent")]
    Withdrawn,
}

impl MachinesError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::Transport(e) => e.status().map(|s| s.as_u16()),
            Self::Decode { .. } | Self::Withdrawn => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Fly may or may not have acted on the request: a 5xx, or a
    /// connection that failed after it was made (timeout, dropped answer).
    pub fn is_ambiguous(&self) -> bool {
        match self {
            Self::Api { status, .. } => *status >= 500,
            Self::Transport(e) => !e.is_connect() && !e.is_builder(),
            Self::Decode { .. } | Self::Withdrawn => false,
        }
    }

    /// Whether another try may help, for a call that does (`Repeat::Safe`)
    /// or does not (`Repeat::Once`) tolerate being carried out twice.
    fn worth_retrying(&self, repeat: Repeat) -> bool {
        let refused_unread = match self {
            Self::Api { status, .. } => *status == 429,
            Self::Transport(e) => e.is_connect(),
            Self::Decode { .. } | Self::Withdrawn => false,
        };
        refused_unread || (repeat == Repeat::Safe && self.is_ambiguous())
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
            Self::Transport(_) | Self::Decode { .. } | Self::Withdrawn => None,
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

/// Whether a call may be carried out twice without harm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Repeat {
    /// Reads, and changes that end in the same state however often they
    /// are made (stop, destroy).
    Safe,
    /// Changes that would happen twice (create, signal).
    Once,
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

    /// Creates a machine, or adopts the one an earlier try of this same
    /// request created. With a `name`, a 409, an ambiguous failure (5xx,
    /// lost answer) or an unreadable answer is settled by looking the name
    /// up: found, the machine
    /// is returned as if created now; not found after an ambiguous
    /// failure, the create is tried again (the name keeps a late first try
    /// and the retry from both succeeding). Without a name nothing can be
    /// looked up, so an ambiguous failure is returned.
    pub async fn create(&self, request: &CreateMachineRequest) -> Result<Machine, MachinesError> {
        self.create_guarded(request, unguarded).await
    }

    /// [`Self::create`], asking `still_wanted` before every try, the first
    /// and each one after a 429, a refused connection or an ambiguous
    /// failure: a try can come long after the call began (rate limits, a
    /// process paused meanwhile), and a caller that lost the right to
    /// create by then (a dispatcher whose attempt a peer took over) must
    /// not send it. The guard answers until when the try may still be
    /// sent, or `None`; a try not sent by then (the process was paused
    /// after the guard said yes) is not sent at all. Either way the call
    /// ends with [`MachinesError::Withdrawn`].
    pub async fn create_guarded<Wanted>(
        &self,
        request: &CreateMachineRequest,
        still_wanted: impl Fn() -> Wanted,
    ) -> Result<Machine, MachinesError>
    where
        Wanted: Future<Output = Option<Instant>>,
    {
        let name = request.name.as_deref().filter(|n| !n.is_empty());
        let mut pauses = self.config.backoff().build();
        loop {
            let failure = match self.create_once(request, &still_wanted).await {
                Ok(machine) => return Ok(machine),
                Err(e) => e,
            };
            if let MachinesError::Withdrawn = failure {
                return Err(failure);
            }
            let conflict = failure.status() == Some(409);
            // An unreadable 2xx made a machine too; only its answer is lost.
            let made = matches!(failure, MachinesError::Decode { .. });
            let Some(name) = name.filter(|_| conflict || made || failure.is_ambiguous()) else {
                return Err(failure);
            };
            match self.find_by_name(request, name).await {
                Ok(Some(machine)) => {
                    metrics::record_adopted(if conflict { "conflict" } else { "ambiguous" });
                    tracing::info!(machine = %machine.id, name, error = %failure, "adopted the machine an earlier create made");
                    return Ok(machine);
                }
                Ok(None) if !conflict => {}
                Ok(None) => return Err(failure),
                Err(e) => {
                    tracing::warn!(name, error = %e, "could not look for the machine of a failed create");
                    return Err(failure);
                }
            }
            let Some(pause) = pauses.next() else {
                return Err(failure);
            };
            tracing::debug!(name, error = %failure, ?pause, "create failed before a machine existed; trying again");
            tokio::time::sleep(pause).await;
        }
    }

    async fn create_once<Wanted: Future<Output = Option<Instant>>>(
        &self,
        request: &CreateMachineRequest,
        still_wanted: impl Fn() -> Wanted,
    ) -> Result<Machine, MachinesError> {
        let route = Route::new("/v1/apps/{app}/machines", None, Repeat::Once);
        let body = self
            .call_guarded(Method::POST, route, None, |r| r.json(request), still_wanted)
            .await?;
        decode_json(route, &body)
    }

    /// The machine named `name` that `request` (or an earlier try of it)
    /// created: listed by the request's metadata, deleted ones included
    /// (a short job may be over by now), a live one preferred.
    async fn find_by_name(
        &self,
        request: &CreateMachineRequest,
        name: &str,
    ) -> Result<Option<Machine>, MachinesError> {
        let filter = ListFilter {
            include_deleted: true,
            metadata: request
                .config
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..ListFilter::default()
        };
        let named: Vec<Machine> = self
            .list(&filter)
            .await?
            .into_iter()
            .filter(|m| m.name == name)
            .collect();
        let live = named
            .iter()
            .position(|m| m.state != MachineState::Destroyed);
        Ok(named.into_iter().nth(live.unwrap_or(0)))
    }

    pub async fn get(&self, id: &str) -> Result<Machine, MachinesError> {
        let route = Route::new("/v1/apps/{app}/machines/{id}", Some(id), Repeat::Safe);
        let body = self.call(Method::GET, route, None, |r| r).await?;
        decode_json(route, &body)
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
        let route = Route::new("/v1/apps/{app}/machines", None, Repeat::Safe);
        let body = self
            .call(Method::GET, route, None, |r| r.query(&query))
            .await?;
        decode_json::<NullAsEmpty<Vec<T>>>(route, &body).map(|list| list.0)
    }

    /// Blocks until the machine reaches one of `states` or `timeout_secs`
    /// (1..=60, the API's cap) pass. Several states go as repeated `state`
    /// parameters, as Fly's own Go client sends them. `instance_id` (from
    /// the create answer) is the version to wait on; Fly's docs require it
    /// for `stopped`, so pass it whenever it is known.
    pub async fn wait(
        &self,
        id: &str,
        instance_id: Option<&str>,
        states: &[&str],
        timeout_secs: u64,
    ) -> Result<WaitOutcome, MachinesError> {
        let timeout_secs = timeout_secs.clamp(1, 60);
        let mut query: Vec<(&str, String)> =
            states.iter().map(|s| ("state", s.to_string())).collect();
        if let Some(instance_id) = instance_id.filter(|i| !i.is_empty()) {
            query.push(("instance_id", instance_id.to_string()));
        }
        query.push(("timeout", timeout_secs.to_string()));
        let extra = Duration::from_secs(timeout_secs);
        let route = Route::new("/v1/apps/{app}/machines/{id}/wait", Some(id), Repeat::Safe);
        match self
            .call(Method::GET, route, Some(extra), |r| r.query(&query))
            .await
        {
            // The body only adds detail; a 2xx is the answer.
            Ok(body) => Ok(WaitOutcome::Reached(
                serde_json::from_slice(&body).unwrap_or_default(),
            )),
            Err(e) if e.status() == Some(408) => Ok(WaitOutcome::TimedOut),
            Err(e) if e.is_not_found() => Ok(WaitOutcome::Gone),
            Err(e) => Err(e),
        }
    }

    /// Boots a stopped machine again (fresh from its image: a start
    /// resets the root filesystem). A warm pool's claim.
    /// Not repeated after an ambiguous failure: a second start of a
    /// machine the first one booted is refused, which would read as a
    /// failed start.
    pub async fn start(&self, id: &str) -> Result<(), MachinesError> {
        let route = Route::new("/v1/apps/{app}/machines/{id}/start", Some(id), Repeat::Once);
        self.call(Method::POST, route, None, |r| r).await.map(drop)
    }

    pub async fn stop(&self, id: &str, request: &StopRequest) -> Result<(), MachinesError> {
        let route = Route::new("/v1/apps/{app}/machines/{id}/stop", Some(id), Repeat::Safe);
        self.call(Method::POST, route, None, |r| r.json(request))
            .await
            .map(drop)
    }

    pub async fn signal(&self, id: &str, signal: &str) -> Result<(), MachinesError> {
        let body = SignalRequest {
            signal: signal.to_string(),
        };
        let route = Route::new(
            "/v1/apps/{app}/machines/{id}/signal",
            Some(id),
            Repeat::Once,
        );
        self.call(Method::POST, route, None, |r| r.json(&body))
            .await
            .map(drop)
    }

    /// Destroys the machine, killing it first when `force`. A machine that
    /// is already gone counts as destroyed.
    pub async fn destroy(&self, id: &str, force: bool) -> Result<(), MachinesError> {
        let query = [("force", force.to_string())];
        let route = Route::new("/v1/apps/{app}/machines/{id}", Some(id), Repeat::Safe);
        match self
            .call(Method::DELETE, route, None, |r| r.query(&query))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn events(&self, id: &str, limit: u32) -> Result<Vec<MachineEvent>, MachinesError> {
        let query = [("limit", limit.to_string())];
        let route = Route::new(
            "/v1/apps/{app}/machines/{id}/events",
            Some(id),
            Repeat::Safe,
        );
        let body = self
            .call(Method::GET, route, None, |r| r.query(&query))
            .await?;
        decode_json::<NullAsEmpty<Vec<MachineEvent>>>(route, &body).map(|list| list.0)
    }

    /// One API call with the retries its [`Repeat`] allows; the answer's
    /// body, unread. `build` adds query and body to a fresh request for
    /// every try. Every try is counted by route template and status, every
    /// retry by its reason and wait ([`crate::metrics`]).
    async fn call(
        &self,
        method: Method,
        route: Route<'_>,
        extra_timeout: Option<Duration>,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Vec<u8>, MachinesError> {
        self.call_guarded(method, route, extra_timeout, build, unguarded)
            .await
    }

    /// [`Self::call`], sending each try only if `still_wanted` says so.
    async fn call_guarded<Wanted: Future<Output = Option<Instant>>>(
        &self,
        method: Method,
        route: Route<'_>,
        extra_timeout: Option<Duration>,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
        still_wanted: impl Fn() -> Wanted,
    ) -> Result<Vec<u8>, MachinesError> {
        let config = &self.config;
        let path = route.path(&config.app);
        let url = format!("{}{path}", config.base_url);
        let timeout = config.call_timeout + extra_timeout.unwrap_or_default();
        let endpoint = route.template;
        let paced = self.pacer.as_ref().map(|p| {
            let (action, kind) = action_of(&method, endpoint);
            (p, action, kind, route.id.unwrap_or(&config.app))
        });
        let once = || async {
            if let Some((pacer, action, kind, key)) = paced {
                pacer.pace(action, kind, key).await;
            }
            let Some(until) = still_wanted().await else {
                return Err(MachinesError::Withdrawn);
            };
            let _permit = self.in_flight.acquire().await.expect("never closed");
            let request = build(
                self.http
                    .request(method.clone(), &url)
                    .bearer_auth(&config.token)
                    .timeout(timeout),
            );
            // As late as possible: a pause before this point is caught here.
            if Instant::now() >= until {
                return Err(MachinesError::Withdrawn);
            }
            match request.send().await {
                Ok(response) => {
                    metrics::record_call(&method, endpoint, Some(response.status().as_u16()));
                    answer(response).await
                }
                Err(e) => {
                    metrics::record_call(&method, endpoint, None);
                    Err(e.into())
                }
            }
        };
        once.retry(config.backoff())
            .when(|e: &MachinesError| e.worth_retrying(route.repeat))
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

/// The rate-limited action a call is, and its rate class. Only Get
/// Machine has the read rate; list, events and `wait` (its own action)
/// have everything else's, as the mock enforces (see its crate doc).
fn action_of(method: &Method, template: &str) -> (&'static str, ActionKind) {
    let tail = template.trim_start_matches("/v1/apps/{app}/machines");
    match (method.as_str(), tail) {
        ("POST", "") => ("create", ActionKind::Mutate),
        ("GET", "") => ("list", ActionKind::Mutate),
        ("GET", "/{id}") => ("get", ActionKind::Read),
        ("DELETE", "/{id}") => ("destroy", ActionKind::Mutate),
        ("GET", "/{id}/events") => ("events", ActionKind::Mutate),
        ("GET", "/{id}/wait") => ("wait", ActionKind::Mutate),
        ("POST", "/{id}/start") => ("start", ActionKind::Mutate),
        ("POST", "/{id}/stop") => ("stop", ActionKind::Mutate),
        ("POST", "/{id}/signal") => ("signal", ActionKind::Mutate),
        (_, _) => ("other", ActionKind::Mutate),
    }
}

/// An API path: a fixed template such as
/// `/v1/apps/{app}/machines/{id}/wait`, the machine id filling it, and
/// whether the call may be repeated. Metrics carry the template, never the
/// id, so their label sets stay small.
#[derive(Clone, Copy)]
struct Route<'a> {
    template: &'static str,
    id: Option<&'a str>,
    repeat: Repeat,
}

impl<'a> Route<'a> {
    fn new(template: &'static str, id: Option<&'a str>, repeat: Repeat) -> Self {
        Self {
            template,
            id,
            repeat,
        }
    }

    fn path(&self, app: &str) -> String {
        let path = self.template.replace("{app}", app);
        match self.id {
            Some(id) => path.replace("{id}", id),
            None => path,
        }
    }
}

/// The body of a 2xx that the call needs; a body that lacks it is a loud
/// [`MachinesError::Decode`] naming the route and the field.
fn decode_json<T: DeserializeOwned>(route: Route<'_>, body: &[u8]) -> Result<T, MachinesError> {
    serde_json::from_slice(body).map_err(|e| MachinesError::Decode {
        endpoint: route.template,
        detail: e.to_string(),
    })
}

/// The body of a 2xx, or the error a non-2xx answer describes.
async fn answer(response: reqwest::Response) -> Result<Vec<u8>, MachinesError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response.bytes().await?.into());
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

/// The guard of a call that may always be sent.
fn unguarded() -> std::future::Ready<Option<Instant>> {
    std::future::ready(Some(Instant::now() + Duration::from_secs(24 * 3600)))
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

    /// A server whose 2xx answers carry no JSON: empty (delete, wait, get),
    /// plain text (stop), 204 (signal); it counts the deletes.
    async fn bodiless_server() -> (String, Arc<AtomicUsize>) {
        use axum::http::StatusCode;
        use axum::routing::{delete, post};
        let deletes = Arc::new(AtomicUsize::new(0));
        let counted = deletes.clone();
        let machine = "/v1/apps/{app}/machines/{id}";
        let app = Router::new()
            .route(
                machine,
                delete(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async { StatusCode::OK }
                })
                .get(|| async { StatusCode::OK }),
            )
            .route(&format!("{machine}/stop"), post(|| async { "OK" }))
            .route(
                &format!("{machine}/signal"),
                post(|| async { StatusCode::NO_CONTENT }),
            )
            .route(&format!("{machine}/wait"), get(|| async { StatusCode::OK }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, deletes)
    }

    #[tokio::test]
    async fn empty_and_non_json_2xx_bodies_are_success_where_no_body_is_needed() {
        let (base, deletes) = bodiless_server().await;
        let client = MachinesClient::new(ClientConfig::new(base, "app", "token"));
        let id = "1857156b526dd8";
        client.destroy(id, true).await.unwrap();
        client.destroy(id, true).await.unwrap();
        assert_eq!(deletes.load(Ordering::SeqCst), 2, "each delete sent once");
        client.stop(id, &StopRequest::default()).await.unwrap();
        client.signal(id, "SIGTERM").await.unwrap();
        assert_eq!(
            client.wait(id, None, &["stopped"], 1).await.unwrap(),
            WaitOutcome::Reached(WaitResponse::default())
        );
        // A machine is needed to decide anything: an empty one is loud.
        let error = client.get(id).await.unwrap_err();
        assert!(matches!(error, MachinesError::Decode { .. }), "{error}");
    }

    /// A signal may not be sent twice: after a 503 (Fly may have sent it)
    /// it is returned at once; a stop, which repeats harmlessly, is retried.
    #[tokio::test]
    async fn only_repeatable_calls_are_retried_after_a_5xx() {
        use axum::http::StatusCode;
        use axum::routing::post;
        let tries = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let (signals, stops) = (tries.clone(), tries.clone());
        let machine = "/v1/apps/{app}/machines/{id}";
        let app = Router::new()
            .route(
                &format!("{machine}/signal"),
                post(move || {
                    signals.0.fetch_add(1, Ordering::SeqCst);
                    async { StatusCode::SERVICE_UNAVAILABLE }
                }),
            )
            .route(
                &format!("{machine}/stop"),
                post(move || {
                    let first = stops.1.fetch_add(1, Ordering::SeqCst) == 0;
                    async move {
                        if first {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::OK
                        }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut config = ClientConfig::new(base, "app", "token");
        config.min_backoff = Duration::from_millis(1);
        let client = MachinesClient::new(config);
        let error = client
            .signal("1857156b526dd8", "SIGTERM")
            .await
            .unwrap_err();
        assert_eq!(error.status(), Some(503));
        assert_eq!(tries.0.load(Ordering::SeqCst), 1, "signal sent once");
        client
            .stop("1857156b526dd8", &StopRequest::default())
            .await
            .unwrap();
        assert_eq!(tries.1.load(Ordering::SeqCst), 2, "stop retried");
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
