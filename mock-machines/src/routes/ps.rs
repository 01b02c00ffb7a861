//! `GET .../{id}/ps`: the processes running in a machine.
//!
//! The shape is the spec's `ProcessStat` (what `fly machine ps`-style tools
//! and fly-go's `GetProcesses` read). A process machine lists its process
//! group from `/proc`; a virtual machine, or one that is not running, has
//! no processes to show and answers an empty list.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;

use crate::error::ApiError;
use crate::server::Shared;
use crate::watchdog;

/// One entry of the answer (`ProcessStat` in Fly's spec).
#[derive(Debug, Serialize)]
pub struct ProcessStat {
    pid: i32,
    command: String,
    /// The mock does not sample CPU time; always 0.
    cpu: u64,
    rss: u64,
    rtime: u64,
    stime: u64,
    directory: String,
    listen_sockets: Vec<serde_json::Value>,
}

pub async fn ps(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Vec<ProcessStat>>, ApiError> {
    shared.rate_limit("ps", &id)?;
    let group = shared.with_machine_result(&app, &id, |e| {
        Ok(e.run
            .as_ref()
            .and_then(|r| r.guest.as_ref())
            .and_then(|g| g.process_group()))
    })?;
    let Some(group) = group else {
        return Ok(Json(Vec::new()));
    };
    let stats = tokio::task::spawn_blocking(move || {
        watchdog::processes([group])
            .into_iter()
            .map(|p| ProcessStat {
                pid: p.pid,
                command: std::fs::read(format!("/proc/{}/cmdline", p.pid))
                    .map(|raw| {
                        String::from_utf8_lossy(&raw)
                            .replace('\0', " ")
                            .trim()
                            .to_string()
                    })
                    .unwrap_or_default(),
                cpu: 0,
                rss: p.rss_bytes,
                rtime: 0,
                stime: 0,
                directory: std::fs::read_link(format!("/proc/{}/cwd", p.pid))
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                listen_sockets: Vec::new(),
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    Ok(Json(stats))
}
