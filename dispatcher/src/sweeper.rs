//! The sweeper: upkeep that keeps the system from leaking.
//!
//! - Orphaned machines: job machines of this namespace (metadata
//!   `role=job`, `jobs_namespace=…`) whose attempt holds no machine slot
//!   are destroyed once older than the grace period. Machines without that
//!   metadata (other process groups of the app, other deployments) are
//!   never touched.
//! - Old records: finished jobs past their retention are removed with
//!   their index entries.
//!
//! Every dispatcher runs one; the work is idempotent, so several agree.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use jobs::JobId;
use machines::{ListFilter, Machine, MachineState};

use crate::configuration::UpkeepSettings;
use crate::shutdown::Shutdown;
use crate::supervisor::Supervision;

/// Records removed per purge call, so one call never blocks the store long.
const PURGE_BATCH: usize = 500;

pub async fn run(shared: Arc<Supervision>, upkeep: UpkeepSettings, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(upkeep.sweep_every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        sweep_orphans(&shared, &upkeep).await;
        purge_old_jobs(&shared, &upkeep).await;
    }
}

/// Destroys job machines no in-flight attempt owns. Returns how many.
pub async fn sweep_orphans(shared: &Supervision, upkeep: &UpkeepSettings) -> usize {
    let filter = ListFilter {
        metadata: vec![
            ("role".into(), "job".into()),
            (
                "jobs_namespace".into(),
                shared.store.namespace().to_string(),
            ),
        ],
        ..ListFilter::default()
    };
    let machines = match shared.machines.list(&filter).await {
        Ok(machines) => machines,
        Err(e) => {
            tracing::warn!(error = %e, "sweeper could not list machines");
            return 0;
        }
    };
    let mut destroyed = 0;
    for machine in machines {
        if machine.state == MachineState::Destroyed || !older_than(&machine, upkeep.orphan_grace) {
            continue;
        }
        let Some((job, attempt)) = owner_of(&machine) else {
            continue;
        };
        match shared.store.holds_slot(job, attempt).await {
            Ok(false) => {
                tracing::warn!(machine = %machine.id, %job, attempt, "destroying an orphaned machine");
                if let Err(e) = shared.machines.destroy(&machine.id, true).await {
                    tracing::warn!(machine = %machine.id, error = %e, "could not destroy an orphan");
                } else {
                    destroyed += 1;
                }
            }
            Ok(true) => {}
            Err(e) => tracing::debug!(error = %e, "sweeper could not check a slot"),
        }
    }
    destroyed
}

async fn purge_old_jobs(shared: &Supervision, upkeep: &UpkeepSettings) {
    loop {
        match shared.store.purge(upkeep.retention, PURGE_BATCH).await {
            Ok(n) if n as usize == PURGE_BATCH => continue,
            Ok(0) => return,
            Ok(n) => {
                tracing::info!(removed = n, "purged finished jobs past their retention");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "purging old jobs failed");
                return;
            }
        }
    }
}

fn owner_of(machine: &Machine) -> Option<(JobId, u32)> {
    let metadata = &machine.config.metadata;
    Some((
        metadata.get("job_id")?.parse().ok()?,
        metadata.get("attempt")?.parse().ok()?,
    ))
}

fn older_than(machine: &Machine, age: std::time::Duration) -> bool {
    match machine.created_at.parse::<DateTime<Utc>>() {
        Ok(created) => (Utc::now() - created)
            .to_std()
            .is_ok_and(|elapsed| elapsed >= age),
        // Unknown age: wait for a record that tells.
        Err(_) => false,
    }
}
