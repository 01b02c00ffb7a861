//! The sweeper: upkeep that keeps the system from leaking.
//!
//! - Orphaned machines: job machines of this namespace (metadata
//!   `role=job`, `jobs_namespace=…`) whose attempt holds no machine slot
//!   are destroyed once older than the grace period. Machines without that
//!   metadata (other process groups of the app, other deployments) are
//!   never touched, nor are those whose name is not a job machine's.
//!
//!   The sweep has to scale to ten thousand machines in flight. Listing
//!   them in full (config and events) buffers tens of megabytes each
//!   sweep, so it lists summaries, which carry no config: the attempt is
//!   read from the machine's name ([`JobMachineName`]). The slots are
//!   checked a batch at a time in one store command, not one round trip
//!   per machine. Fly's spec does not promise `name` or `created_at` in a
//!   summary; a machine whose summary lacks one is read in full (`GET`).
//! - Pool machines (metadata `role=pool`) that no pool owns or is
//!   creating (their creator died, or a record was lost) are destroyed
//!   once older than the grace period. Stopped machines a pool owns are
//!   its stock, not orphans.
//! - Old records: finished jobs past their retention are removed with
//!   their index entries.
//!
//! Every dispatcher runs one; the work is idempotent, so several agree.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use jobs::{JobId, PoolMachineRef};
use machines::{ListFilter, MachineState, MachineSummary};

use crate::configuration::UpkeepSettings;
use crate::engine::machine_name::JobMachineName;
use crate::engine::supervisor::Supervision;
use crate::shutdown::Shutdown;

/// Records removed per purge call, so one call never blocks the store long.
const PURGE_BATCH: usize = 500;

/// Attempts whose slots one store command checks.
const CHECK_BATCH: usize = 500;

pub async fn run(shared: Arc<Supervision>, upkeep: UpkeepSettings, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(upkeep.sweep_every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        sweep_orphans(&shared, &upkeep).await;
        sweep_pool_orphans(&shared, &upkeep).await;
        purge_old_jobs(&shared, &upkeep).await;
    }
}

/// The machines of `role` (`job`, `pool`) in this dispatcher's namespace:
/// never the app's own process groups, nor another namespace's.
pub(crate) fn role_filter(shared: &Supervision, role: &str) -> ListFilter {
    ListFilter {
        metadata: vec![
            ("role".into(), role.into()),
            (
                "jobs_namespace".into(),
                shared.store.namespace().to_string(),
            ),
        ],
        ..ListFilter::default()
    }
}

/// Destroys job machines no in-flight attempt owns. Returns how many.
pub async fn sweep_orphans(shared: &Supervision, upkeep: &UpkeepSettings) -> usize {
    let filter = role_filter(shared, "job");
    let mut machines = match shared.machines.list_summaries(&filter).await {
        Ok(machines) => machines,
        Err(e) => {
            tracing::warn!(error = %e, "sweeper could not list machines");
            return 0;
        }
    };
    complete_summaries(shared, &mut machines).await;
    let candidates: Vec<(&MachineSummary, (JobId, u32))> = machines
        .iter()
        .filter(|m| m.state != MachineState::Destroyed && older_than(m, upkeep.orphan_grace))
        .filter_map(|m| {
            let name: JobMachineName = m.name.parse().ok()?;
            Some((m, (name.job, name.attempt)))
        })
        .collect();
    let mut destroyed = 0;
    for batch in candidates.chunks(CHECK_BATCH) {
        let owners: Vec<(JobId, u32)> = batch.iter().map(|(_, owner)| *owner).collect();
        let held = match shared.store.holds_slots(&owners).await {
            Ok(held) => held,
            Err(e) => {
                tracing::debug!(error = %e, "sweeper could not check slots");
                continue;
            }
        };
        for ((machine, (job, attempt)), held) in batch.iter().zip(held) {
            if held {
                continue;
            }
            tracing::warn!(machine = %machine.id, %job, attempt, "destroying an orphaned machine");
            if let Err(e) = shared.machines.destroy(&machine.id, true).await {
                tracing::warn!(machine = %machine.id, error = %e, "could not destroy an orphan");
            } else {
                destroyed += 1;
            }
        }
    }
    destroyed
}

/// Fills in `name` and `created_at` of the live machines whose summary
/// left one out, from a full `GET`. A machine that cannot be read stays as
/// it is (and is not swept: its age is unknown).
async fn complete_summaries(shared: &Supervision, machines: &mut [MachineSummary]) {
    let incomplete = machines.iter_mut().filter(|m| {
        m.state != MachineState::Destroyed && (m.name.is_empty() || m.created_at.is_empty())
    });
    for summary in incomplete {
        match shared.machines.get(&summary.id).await {
            Ok(machine) => {
                summary.name = machine.name;
                summary.created_at = machine.created_at;
            }
            Err(e) => {
                tracing::debug!(machine = %summary.id, error = %e, "could not read a machine the summary left incomplete")
            }
        }
    }
}

/// Destroys pool machines no pool owns or is creating. Returns how many.
pub async fn sweep_pool_orphans(shared: &Supervision, upkeep: &UpkeepSettings) -> usize {
    let filter = role_filter(shared, "pool");
    let machines = match shared.machines.list_summaries(&filter).await {
        Ok(machines) => machines,
        Err(e) => {
            tracing::warn!(error = %e, "sweeper could not list pool machines");
            return 0;
        }
    };
    let candidates: Vec<PoolMachineRef> = machines
        .iter()
        .filter(|m| m.state != MachineState::Destroyed && older_than(m, upkeep.orphan_grace))
        .filter_map(|m| {
            Some(PoolMachineRef {
                id: m.id.clone(),
                name: m.name.clone(),
                pool: crate::engine::pool::pool_of_name(&m.name)?.to_string(),
            })
        })
        .collect();
    let mut destroyed = 0;
    for batch in candidates.chunks(CHECK_BATCH) {
        let known = match shared.store.pool_known(batch).await {
            Ok(known) => known,
            Err(e) => {
                tracing::debug!(error = %e, "sweeper could not check pool machines");
                continue;
            }
        };
        for (machine, known) in batch.iter().zip(known) {
            if known {
                continue;
            }
            tracing::warn!(machine = %machine.id, pool = %machine.pool, "destroying a pool machine no pool owns");
            if let Err(e) = shared.machines.destroy(&machine.id, true).await {
                tracing::warn!(machine = %machine.id, error = %e, "could not destroy an orphan");
            } else {
                destroyed += 1;
            }
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

fn older_than(machine: &MachineSummary, age: std::time::Duration) -> bool {
    match machine.created_at.parse::<DateTime<Utc>>() {
        Ok(created) => (Utc::now() - created)
            .to_std()
            .is_ok_and(|elapsed| elapsed >= age),
        // Unknown age: wait for a record that tells.
        Err(_) => false,
    }
}
