//! Create, read, update and destroy machines, plus events, versions and
//! metadata.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use machines::{
    CreateMachineRequest, ImageRef, Lease, Machine, MachineConfig, MachineEvent, MachineState,
    OkResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lease::new_lease;
use super::{json_body, lease_nonce, query_flag, query_value};
use crate::error::ApiError;
use crate::ids;
use crate::server::{DropAnswer, Shared};
use crate::signals;
use crate::state::{now_rfc3339, MachineEntry, StopIntent};
use crate::supervisor;

/// `GET /v1/apps/{app}/machines`: a bare array. Filters: `include_deleted`,
/// `region`, `state=a,b`, `metadata.KEY=VALUE` (all must match); `summary`
/// leaves out config and events.
pub async fn list(
    State(shared): State<Arc<Shared>>,
    Path(app): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Vec<Value>>, ApiError> {
    shared.rate_limit("list", &app)?;
    let shape = Shape::of(&shared, query_flag(&query, "summary")?);
    let include_deleted = query_flag(&query, "include_deleted")?;
    let region = query_value(&query, "region");
    let states: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "state")
        .flat_map(|(_, v)| v.split(','))
        .filter(|s| !s.is_empty())
        .collect();
    let metadata: Vec<(&str, &str)> = query
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("metadata.")?, v.as_str())))
        .collect();
    let matches = |m: &Machine| {
        (include_deleted || m.state != MachineState::Destroyed)
            && region.is_none_or(|r| m.region == r)
            && (states.is_empty() || states.contains(&m.state.as_str()))
            && metadata
                .iter()
                .all(|(k, v)| m.config.metadata.get(*k).map(String::as_str) == Some(*v))
    };
    let machines = shared.with_app(&app, |machines| {
        let mut found: Vec<&Machine> = machines
            .values()
            .map(|e| &e.machine)
            .filter(|m| matches(m))
            .collect();
        found.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        found.into_iter().map(|m| shape.write(m)).collect()
    });
    Ok(Json(machines))
}

/// How a machine body is written: whole or as a summary, and in the
/// shapes the fault settings ask for (`lean_summaries`, `go_omitempty`,
/// `stateless_gets`).
struct Shape {
    summary: bool,
    lean: bool,
    go_omitempty: bool,
    stateless: bool,
}

impl Shape {
    fn of(shared: &Shared, summary: bool) -> Self {
        let faults = shared.faults.settings();
        Self {
            summary,
            lean: faults.lean_summaries,
            go_omitempty: faults.go_omitempty,
            stateless: false,
        }
    }

    fn write(&self, machine: &Machine) -> Value {
        let mut value = serde_json::to_value(machine).unwrap_or(Value::Null);
        let Some(object) = value.as_object_mut() else {
            return value;
        };
        if self.summary {
            object.remove("config");
            object.remove("events");
            if self.lean {
                object.remove("name");
                object.remove("created_at");
            }
        }
        if self.stateless {
            object.remove("state");
        }
        if self.go_omitempty {
            if let Some(config) = object.get_mut("config").and_then(Value::as_object_mut) {
                for map in ["env", "metadata"] {
                    config.entry(map).or_insert(Value::Null);
                }
            }
            let exits = object
                .get_mut("events")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(|event| event.pointer_mut("/request/exit_event"))
                .filter_map(Value::as_object_mut);
            for exit in exits {
                if exit.get("exit_code") == Some(&Value::from(0)) {
                    exit.remove("exit_code");
                }
            }
        }
        value
    }
}

/// `POST /v1/apps/{app}/machines`: 200 with the machine in `created`; it
/// boots in the background unless `skip_launch`.
pub async fn create(
    State(shared): State<Arc<Shared>>,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    shared.rate_limit("create", &app)?;
    let request: CreateMachineRequest = json_body(&body)?;
    validate_config(&request.config)?;
    let region = request
        .region
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| shared.config.region.clone());
    shared.faults.check_create(&region)?;
    let machine = shared.with_app(&app, |machines| {
        let name = match request.name.clone().filter(|n| !n.is_empty()) {
            Some(name) => {
                ensure_name_free(machines, &name, None)?;
                name
            }
            None => ids::machine_name(),
        };
        let now = now_rfc3339();
        let id = ids::machine_id();
        let machine = Machine {
            id: id.clone(),
            name,
            state: MachineState::Created,
            region: region.clone(),
            instance_id: ids::ulid(),
            private_ip: ids::private_ip(),
            created_at: now.clone(),
            updated_at: now,
            image_ref: Some(image_ref(&request.config.image)),
            config: request.config.clone(),
            events: Vec::new(),
            host_status: Some("ok".to_string()),
            nonce: None,
        };
        let mut entry = MachineEntry::new(&app, machine, shared.counters.clone());
        if !(request.skip_secrets && shared.config.honour_skip_secrets) {
            entry.secrets = shared.config.app_secrets.clone();
        }
        let lease = request
            .lease_ttl
            .map(|ttl| new_lease(&entry, ttl, String::new()));
        entry.lease = lease.clone();
        if !request.skip_launch {
            supervisor::boot(&shared, &mut entry, true);
        }
        let mut answer = entry.machine.clone();
        answer.nonce = lease.map(|l: Lease| l.nonce);
        tracing::info!(app = %app, machine_id = %id, image = %answer.config.image, "machine created");
        machines.insert(id, entry);
        Ok::<_, ApiError>(answer)
    })?;
    let mut response = Json(Shape::of(&shared, false).write(&machine)).into_response();
    if shared.faults.drop_create_answer() {
        response.extensions_mut().insert(DropAnswer);
    }
    Ok(response)
}

/// 409 when a machine that is not destroyed already has `name`.
fn ensure_name_free(
    machines: &BTreeMap<String, MachineEntry>,
    name: &str,
    except: Option<&str>,
) -> Result<(), ApiError> {
    let taken = machines.values().any(|e| {
        e.machine.name == name && e.state() != MachineState::Destroyed && Some(e.id()) != except
    });
    if taken {
        Err(ApiError::Conflict(format!(
            "already_exists: a machine with name {name:?} already exists"
        )))
    } else {
        Ok(())
    }
}

/// Checks a config the way the platform would before accepting it.
fn validate_config(config: &MachineConfig) -> Result<(), ApiError> {
    if config.image.trim().is_empty() {
        return Err(ApiError::Invalid("config.image is required".into()));
    }
    if let Some(guest) = &config.guest {
        if config.extra.contains_key("size") {
            return Err(ApiError::Invalid(
                "config.guest and config.size are mutually exclusive".into(),
            ));
        }
        if guest.memory_mb == 0 || guest.memory_mb % 256 != 0 {
            return Err(ApiError::Invalid(format!(
                "invalid memory size {}MB: must be a positive multiple of 256",
                guest.memory_mb
            )));
        }
        if guest.cpus == 0 {
            return Err(ApiError::Invalid("guest.cpus must be at least 1".into()));
        }
        if !matches!(guest.cpu_kind.as_str(), "shared" | "performance") {
            return Err(ApiError::Invalid(format!(
                "invalid cpu_kind {:?}: must be shared or performance",
                guest.cpu_kind
            )));
        }
    }
    if let Some(signal) = config
        .stop_config
        .as_ref()
        .and_then(|s| s.signal.as_deref())
    {
        signals::parse(signal)?;
    }
    Ok(())
}

/// `registry/repository:tag@digest`, split like Fly's `image_ref`.
fn image_ref(image: &str) -> ImageRef {
    let (name, digest) = image.split_once('@').unwrap_or((image, ""));
    let (name, tag) = match name.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (name, "latest"),
    };
    let (registry, repository) = match name.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => {
            (host.to_string(), rest.to_string())
        }
        Some(_) => ("registry-1.docker.io".to_string(), name.to_string()),
        None => (
            "registry-1.docker.io".to_string(),
            format!("library/{name}"),
        ),
    };
    let digest = if digest.is_empty() {
        fake_digest(image)
    } else {
        digest.to_string()
    };
    ImageRef {
        registry,
        repository,
        tag: tag.to_string(),
        digest,
        labels: BTreeMap::new(),
    }
}

/// A stable `sha256:`-shaped digest for an image the mock never pulls.
fn fake_digest(image: &str) -> String {
    use std::hash::{Hash, Hasher};
    let hex: String = (0..4u8)
        .map(|salt| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (salt, image).hash(&mut hasher);
            format!("{:016x}", hasher.finish())
        })
        .collect();
    format!("sha256:{hex}")
}

/// `GET .../{id}`: destroyed machines stay visible with state `destroyed`.
pub async fn get(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    shared.rate_limit("get", &id)?;
    let shape = Shape {
        stateless: shared.faults.settings().stateless_gets,
        ..Shape::of(&shared, false)
    };
    shared
        .with_machine_result(&app, &id, |e| Ok(shape.write(&e.machine)))
        .map(Json)
}

/// `POST .../{id}`: replaces the whole config (a new version) and boots
/// the machine with it, unless `skip_launch`.
pub async fn update(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Machine>, ApiError> {
    shared.rate_limit("update", &id)?;
    let request: CreateMachineRequest = json_body(&body)?;
    validate_config(&request.config)?;
    shared.with_app(&app, |machines| {
        if let Some(name) = request.name.as_deref().filter(|n| !n.is_empty()) {
            ensure_name_free(machines, name, Some(&id))?;
        }
        let entry = machines
            .get_mut(&id)
            .ok_or_else(ApiError::machine_not_found)?;
        entry.check_lease(lease_nonce(&headers))?;
        if let Some(version) = request.current_version.as_deref() {
            if version != entry.version() {
                return Err(ApiError::Precondition(format!(
                    "machine version {version} is not the current version {}",
                    entry.version()
                )));
            }
        }
        let previous = entry.state();
        if matches!(previous, MachineState::Destroying | MachineState::Destroyed) {
            return Err(cannot("update", previous));
        }
        if let Some(name) = request.name.clone().filter(|n| !n.is_empty()) {
            entry.machine.name = name;
        }
        if let Some(region) = request.region.clone().filter(|r| !r.is_empty()) {
            entry.machine.region = region;
        }
        entry.machine.image_ref = Some(image_ref(&request.config.image));
        entry.set_config(request.config.clone());
        entry.enter(MachineState::Updating, "update", "user");
        if entry.run.as_ref().is_some_and(|r| r.guest.is_some()) {
            let intent = if request.skip_launch {
                StopIntent::Stop
            } else {
                StopIntent::Reboot
            };
            let (signal, timeout) = signals::stop_defaults(&entry.machine.config, None, None)?;
            supervisor::request_stop(&shared, entry, intent, signal, timeout);
        } else if request.skip_launch {
            // Not running and not to be launched: back where it was.
            entry.generation += 1;
            entry.run = None;
            entry.set_state(previous);
        } else {
            entry.run = None;
            supervisor::boot(&shared, entry, previous == MachineState::Created);
        }
        Ok(Json(entry.machine.clone()))
    })
}

/// The error for an action the machine's state does not allow.
pub(super) fn cannot(action: &str, state: MachineState) -> ApiError {
    ApiError::Precondition(format!(
        "unable to {action} machine from current state: '{state}'"
    ))
}

/// `DELETE .../{id}`: `force=true` or `kill=true` kill a running machine;
/// without them a running machine is refused (412). The machine is
/// `destroyed`, its processes killed and reaped, before the answer.
pub async fn destroy(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<OkResponse>, ApiError> {
    shared.rate_limit("destroy", &id)?;
    let force = query_flag(&query, "force")? || query_flag(&query, "kill")?;
    let (mut changes, guest_done) = shared.with_machine_result(&app, &id, |e| {
        e.check_lease(lease_nonce(&headers))?;
        let state = e.state();
        match state {
            MachineState::Destroyed => return Err(ApiError::machine_not_found()),
            MachineState::Destroying => return Ok((e.subscribe(), None)),
            _ => {}
        }
        let running = e.run.as_ref().is_some_and(|r| r.guest.is_some())
            || state == MachineState::Starting;
        if running && !force {
            return Err(ApiError::Precondition(format!(
                "unable to destroy machine, not currently stopped or suspended (state: {state}); use force=true"
            )));
        }
        e.set_state(MachineState::Destroying);
        e.generation += 1;
        let done = e.run.take().and_then(|run| {
            let guest = run.guest?;
            guest.signal(libc::SIGKILL);
            Some(run.done)
        });
        Ok((e.subscribe(), done))
    })?;
    match guest_done {
        Some(mut done) => {
            // Closed (the task ended) counts as done too.
            let _ = done.wait_for(|finished| *finished).await;
            shared.with_machine(&app, &id, |e| {
                if e.state() == MachineState::Destroying {
                    e.finish_destroy("user");
                }
            });
        }
        None => {
            let finished_now = shared
                .with_machine(&app, &id, |e| {
                    if e.state() == MachineState::Destroying && e.run.is_none() {
                        e.finish_destroy("user");
                    }
                    e.state() == MachineState::Destroyed
                })
                .unwrap_or(true);
            if !finished_now {
                // Another call is destroying it; answer once it is done.
                while changes.changed().await.is_ok() {
                    let destroyed = shared
                        .with_machine(&app, &id, |e| e.state() == MachineState::Destroyed)
                        .unwrap_or(true);
                    if destroyed {
                        break;
                    }
                }
            }
        }
    }
    tracing::info!(app = %app, machine_id = %id, "machine destroyed");
    Ok(Json(OkResponse { ok: true }))
}

/// `GET .../{id}/events?limit=N`: newest first; default 20, at most 50.
pub async fn events(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Vec<MachineEvent>>, ApiError> {
    shared.rate_limit("events", &id)?;
    let limit = match query_value(&query, "limit") {
        None => 20,
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| ApiError::BadRequest(format!("limit must be an integer, not {text:?}")))?
            .clamp(1, 50),
    };
    shared.with_machine_result(&app, &id, |e| {
        Ok(Json(e.machine.events.iter().take(limit).cloned().collect()))
    })
}

/// One entry of `GET .../{id}/versions` (not in the shared wire types).
#[derive(Debug, Serialize, Deserialize)]
pub struct MachineVersion {
    pub version: String,
    pub user_config: MachineConfig,
}

/// `GET .../{id}/versions`: every config the machine had, newest first.
pub async fn versions(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Vec<MachineVersion>>, ApiError> {
    shared.rate_limit("versions", &id)?;
    shared.with_machine_result(&app, &id, |e| {
        Ok(Json(
            e.versions
                .iter()
                .rev()
                .map(|(version, config)| MachineVersion {
                    version: version.clone(),
                    user_config: config.clone(),
                })
                .collect(),
        ))
    })
}

/// `GET .../{id}/metadata`.
pub async fn metadata(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    shared.rate_limit("metadata", &id)?;
    shared.with_machine_result(&app, &id, |e| Ok(Json(e.machine.config.metadata.clone())))
}

#[derive(Deserialize)]
pub struct MetadataValue {
    value: String,
}

/// `POST .../{id}/metadata/{key}` with `{"value": "..."}`: 204. Metadata
/// changes do not make a new version and are not guarded by leases.
pub async fn set_metadata(
    State(shared): State<Arc<Shared>>,
    Path((app, id, key)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    shared.rate_limit("set_metadata", &id)?;
    let MetadataValue { value } = json_body(&body)?;
    shared.with_machine_result(&app, &id, |e| {
        e.machine.config.metadata.insert(key, value);
        Ok(StatusCode::NO_CONTENT)
    })
}

/// `DELETE .../{id}/metadata/{key}`: 204.
pub async fn delete_metadata(
    State(shared): State<Arc<Shared>>,
    Path((app, id, key)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    shared.rate_limit("delete_metadata", &id)?;
    shared.with_machine_result(&app, &id, |e| {
        e.machine.config.metadata.remove(&key);
        Ok(StatusCode::NO_CONTENT)
    })
}

#[cfg(test)]
mod tests {
    use super::image_ref;

    #[test]
    fn image_refs_split_like_fly() {
        let r = image_ref("registry.fly.io/app:deployment-01H");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("registry.fly.io", "app", "deployment-01H")
        );
        let r = image_ref("ubuntu");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("registry-1.docker.io", "library/ubuntu", "latest")
        );
        let r = image_ref("localhost:5000/x/y@sha256:abc");
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.digest.as_str()
            ),
            ("localhost:5000", "x/y", "sha256:abc")
        );
        assert!(image_ref("busybox").digest.starts_with("sha256:"));
    }
}
