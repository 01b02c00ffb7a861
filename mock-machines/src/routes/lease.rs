//! Leases: `POST`/`GET`/`DELETE .../{id}/lease`.
//!
//! Answers come wrapped as `{"status":"success","data":{...}}`; the nonce
//! travels in the `fly-machine-lease-nonce` header. A held lease makes
//! mutating calls without its nonce fail with 409 (see
//! `MachineEntry::check_lease`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use machines::{Lease, LeaseEnvelope, LeaseRequest, OkResponse};

use super::{lease_nonce, optional_json_body, query_value};
use crate::error::ApiError;
use crate::ids;
use crate::server::Shared;
use crate::state::MachineEntry;

/// Lease length when neither the body nor the query gives a `ttl`.
const DEFAULT_TTL_SECS: u64 = 30;
/// Who the mock says holds a lease.
const OWNER: &str = "mock-machines@localhost";

/// A fresh lease on `entry` for `ttl` seconds.
pub(super) fn new_lease(entry: &MachineEntry, ttl: u64, description: String) -> Lease {
    let nonce = ids::machine_id()[..12].to_string();
    Lease {
        nonce,
        expires_at: expires_at(ttl),
        owner: OWNER.to_string(),
        description,
        version: entry.version().to_string(),
    }
}

fn expires_at(ttl: u64) -> i64 {
    chrono::Utc::now().timestamp() + i64::try_from(ttl.max(1)).unwrap_or(i64::MAX / 2)
}

fn envelope(lease: Lease) -> Json<LeaseEnvelope> {
    Json(LeaseEnvelope {
        status: "success".to_string(),
        data: lease,
    })
}

/// Acquires a lease (201), or refreshes it when the caller presents the
/// current nonce; 409 when someone else holds it.
pub async fn acquire(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<(StatusCode, Json<LeaseEnvelope>), ApiError> {
    shared.rate_limit("lease", &id)?;
    let request: LeaseRequest = optional_json_body(&body)?;
    let ttl = match query_value(&query, "ttl") {
        Some(text) => Some(
            text.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid ttl {text:?}")))?,
        ),
        None => request.ttl,
    }
    .unwrap_or(DEFAULT_TTL_SECS);
    let nonce = lease_nonce(&headers);
    shared.with_machine_result(&app, &id, |e| {
        e.check_lease(nonce)?;
        let lease = match e.lease.as_mut() {
            // check_lease passed, so the caller holds it: refresh.
            Some(held) => {
                held.expires_at = expires_at(ttl);
                if let Some(description) = request.description.clone() {
                    held.description = description;
                }
                held.clone()
            }
            None => {
                let lease = new_lease(e, ttl, request.description.clone().unwrap_or_default());
                e.lease = Some(lease.clone());
                lease
            }
        };
        Ok((StatusCode::CREATED, envelope(lease)))
    })
}

/// The current lease, 404 when there is none.
pub async fn show(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<LeaseEnvelope>, ApiError> {
    shared.rate_limit("get_lease", &id)?;
    shared.with_machine_result(&app, &id, |e| {
        e.active_lease()
            .cloned()
            .map(envelope)
            .ok_or_else(ApiError::lease_not_found)
    })
}

/// Releases the lease; the caller must present its nonce.
pub async fn release(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<OkResponse>, ApiError> {
    shared.rate_limit("release_lease", &id)?;
    let nonce = lease_nonce(&headers).ok_or_else(|| {
        ApiError::BadRequest("releasing a lease needs the fly-machine-lease-nonce header".into())
    })?;
    shared.with_machine_result(&app, &id, |e| {
        if e.active_lease().is_none() {
            return Err(ApiError::lease_not_found());
        }
        e.check_lease(Some(nonce))?;
        e.lease = None;
        Ok(Json(OkResponse { ok: true }))
    })
}
