//! The HTTP API.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /jobs` | submit a job (202 + `Location`) |
//! | `GET /jobs` | list jobs, newest first (`status`, `kind`, `tag`, `parent`, `limit`, `cursor`) |
//! | `GET /jobs/{id}` | one job with its attempts; `?wait=N` long-polls |
//! | `GET /jobs/{id}/events` | Server-Sent Events: status, progress, done |
//! | `GET /jobs/events` | Server-Sent Events: status changes of every job a filter matches (`tag`, `parent`, ...) ([`watch`]) |
//! | `GET /jobs/{id}/logs` | what the attempts printed: pages (text or JSON lines) or `follow=true` SSE |
//! | `POST /jobs/{id}/cancel`, `DELETE /jobs/{id}` | cancel |
//! | `POST /batches`, `GET /batches` | submit many jobs at once (202 + ids); list batches |
//! | `GET /batches/{id}` | counts per status, progress, completion |
//! | `GET /batches/{id}/jobs` | the members (`status`, `limit`, `cursor`, `full`) |
//! | `GET /batches/{id}/events` | Server-Sent Events: the batch's counts, then `done` |
//! | `POST /jobs/{id}/retry` | a fresh set of attempts for a failed, cancelled or expired job, with optional overrides |
//! | `POST /jobs/bulk/cancel`, `POST /jobs/bulk/retry` | cancel or retry what a filter matches, a page per request ([`bulk`]) |
//! | `POST /schedules`, `GET /schedules`, `GET`/`DELETE /schedules/{id}` | recurring jobs |
//! | `GET /flow`, `PUT`/`DELETE /concurrency[/{key}]`, `/rate-limits/{scope}/{name}`, `/pauses/{scope}/{name}` | flow control ([`flow`]) |
//! | `GET /metrics` | Prometheus text ([`crate::metrics`]) |
//! | `GET /` | the dashboard (HTML); `/jobs/{id}` too when a browser asks for HTML |
//! | `GET`/`POST /login`, `POST /logout` | the dashboard's session cookie (no auth) |
//! | `GET /healthz` | liveness and store reachability (no auth) |
//! | `GET /openapi.json` | the OpenAPI 3 description of all of the above (no auth) |

mod batches;
mod bulk;
mod dashboard;
mod error;
mod flow;
mod health;
pub(crate) mod jobs;
pub mod logs;
mod metrics;
mod openapi;
mod watch;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use tokio::sync::Notify;

pub use error::ApiError;

use crate::configuration::ApiSettings;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: ::jobs::Store,
    pub api: Arc<ApiSettings>,
    /// Poked after a submit so this dispatcher's launcher reacts at once.
    pub launcher_wakeup: Arc<Notify>,
    /// Once triggered, new jobs are refused with 503 so clients retry
    /// against a peer.
    pub shutdown: crate::shutdown::Shutdown,
    /// Job events, for long-polls and SSE streams.
    pub hub: crate::engine::hub::EventHub,
    pub callbacks: crate::engine::callbacks::Callbacks,
    /// Rate limits and caps on streams and long-polls.
    pub limits: Arc<crate::api::limits::Limits>,
}

/// Liveness path, unauthenticated (fly.toml's health check uses it).
pub const HEALTH_PATH: &str = "/healthz";

/// The OpenAPI document's frame; paths and schemas come from the
/// handlers' annotations as the router registers them.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "machine-jobs dispatcher", description = "Runs each background job on a fresh Fly Machine."),
    components(schemas(::jobs::Job, ::jobs::Schedule, ::jobs::Batch, ApiError)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        openapi.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// The routes and their OpenAPI description, built together so they can
/// never drift apart: a route exists only through its annotated handler.
pub fn routes() -> (Router<AppState>, Router<AppState>, utoipa::openapi::OpenApi) {
    use crate::engine::schedules;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;

    let (protected, mut doc) =
        OpenApiRouter::<AppState>::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
            .routes(routes!(jobs::submit, jobs::list))
            .routes(routes!(jobs::get, jobs::delete))
            .routes(routes!(jobs::cancel))
            .routes(routes!(jobs::retry))
            .routes(routes!(bulk::cancel))
            .routes(routes!(bulk::retry))
            .routes(routes!(jobs::events))
            .routes(routes!(watch::watch))
            .routes(routes!(logs::logs))
            .routes(routes!(batches::submit, batches::list))
            .routes(routes!(batches::get))
            .routes(routes!(batches::jobs))
            .routes(routes!(batches::events))
            .routes(routes!(schedules::create, schedules::list))
            .routes(routes!(schedules::get, schedules::delete))
            .routes(routes!(flow::overview))
            .routes(routes!(flow::set_default_limit, flow::remove_default_limit))
            .routes(routes!(flow::set_limit, flow::remove_limit))
            .routes(routes!(flow::set_rate, flow::remove_rate))
            .routes(routes!(flow::pause, flow::resume))
            .routes(routes!(metrics::metrics))
            .routes(routes!(dashboard::index))
            .split_for_parts();
    openapi::complete_protected(&mut doc);
    let (open, open_doc) = OpenApiRouter::<AppState>::new()
        .routes(routes!(health::healthz))
        .routes(routes!(dashboard::login_form, dashboard::login))
        .routes(routes!(dashboard::logout))
        .split_for_parts();
    doc.merge(open_doc);
    (open, protected, doc)
}

pub fn router(state: AppState) -> Router {
    let (open, protected, doc) = routes();
    let protected = protected.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::api::auth::require_token,
    ));
    let body_limits = Arc::new(crate::api::server::BodyLimits {
        max_bytes: state.api.body_limit,
        batch_max_bytes: state.api.batch_body_limit,
        timeout: state.api.limits.body_timeout,
    });
    Router::new()
        .merge(open)
        .route(OPENAPI_PATH, get(move || async move { axum::Json(doc) }))
        .merge(protected)
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method",
            )
        })
        .layer(axum::middleware::map_response(
            crate::api::dashboard::html::secure_html,
        ))
        // The exact limit per route is `read_body_within`'s, below.
        .layer(DefaultBodyLimit::max(
            state.api.body_limit.max(state.api.batch_body_limit),
        ))
        .layer(axum::middleware::from_fn_with_state(
            body_limits,
            crate::api::server::read_body_within,
        ))
        .with_state(state)
}

/// Whether the client asked for HTML: browsers put `text/html` in
/// `Accept`; API clients send `application/json`, `*/*` or nothing, so
/// JSON stays the default.
pub fn wants_html(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| media.split(';').next().unwrap_or("").trim() == "text/html")
}

/// Where the OpenAPI document is served (no auth: it holds no data).
pub const OPENAPI_PATH: &str = "/openapi.json";
