//! Keeps the pools filled and fresh. Every dispatcher runs one; the store
//! decides who creates what (a reservation per machine being created, up
//! to the pool's target), so several dispatchers fill a pool once.
//!
//! Each tick, per pool: retire one machine (old image, idle surplus, or
//! abandoned: see `jobs::pool`), then reserve and create machines while
//! the pool is short, at most [`MAX_WARMING`] at a time from this
//! dispatcher: creates draw on the app's create budget (1/s, burst 3 on
//! Fly), which cold starts need too. A new machine is booted once (its
//! runner finds no attempt and exits), and joins the pool when it has
//! stopped with exit code 0; one that fails is destroyed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use machines::{MachineState, WaitOutcome};
use tokio::task::JoinSet;

use super::source::retire;
use super::{machine_name, target_of, PoolSpec};
use crate::engine::supervisor::{destroy, pooled_machine_request, Supervision};
use crate::shutdown::Shutdown;

/// Machines this dispatcher creates for pools at once.
pub const MAX_WARMING: usize = 3;
/// How long a reservation lasts if its creator dies before reporting.
const RESERVATION: Duration = Duration::from_secs(180);
const TICK: Duration = Duration::from_millis(500);
/// How often the pool's records are checked against the API's machines.
const RECONCILE_EVERY: Duration = Duration::from_secs(30);

pub async fn run(shared: Arc<Supervision>, shutdown: Shutdown) {
    let mut warming = JoinSet::new();
    let mut last_reconcile: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => break,
        }
        while warming.try_join_next().is_some() {}
        if last_reconcile.is_none_or(|at| at.elapsed() >= RECONCILE_EVERY) {
            last_reconcile = Some(tokio::time::Instant::now());
            forget_vanished(&shared).await;
        }
        retire_one_per_pool(&shared).await;
        for spec in shared.launch.pools.iter().filter(|p| p.size > 0) {
            while warming.len() < MAX_WARMING {
                let name = machine_name(&spec.key());
                let reserved = shared
                    .store
                    .pool_reserve(&spec.key(), &name, spec.size, RESERVATION)
                    .await;
                match reserved {
                    Ok(true) => {
                        warming.spawn(warm(shared.clone(), spec.clone(), name));
                    }
                    Ok(false) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "could not reserve a pool machine");
                        break;
                    }
                }
            }
        }
    }
    // Machines being created are left to finish: the reservation lapses
    // and the sweeper destroys what no pool knows.
    warming.abort_all();
}

/// Forgets ready machines the API no longer has (destroyed by hand, or a
/// local mock restarted under a store that kept its records), so the pool
/// refills instead of handing them to attempts one failed start at a time.
async fn forget_vanished(shared: &Supervision) {
    let Ok(records) = shared.store.pool_machines().await else {
        return;
    };
    if records.is_empty() {
        return;
    }
    let filter = crate::engine::sweeper::role_filter(shared, "pool");
    let Ok(live) = shared.machines.list_summaries(&filter).await else {
        return;
    };
    let live: BTreeSet<&str> = live
        .iter()
        .filter(|m| m.state != MachineState::Destroyed)
        .map(|m| m.id.as_str())
        .collect();
    for (id, record) in records {
        if record.state != "in_use" && !live.contains(id.as_str()) {
            tracing::warn!(machine = %id, pool = %record.pool, "pooled machine no longer exists; forgetting it");
            let _ = shared.store.pool_forget(&id).await;
        }
    }
}

/// Retires one machine of each pool, configured or left from an earlier
/// configuration (target 0: it drains).
async fn retire_one_per_pool(shared: &Supervision) {
    let mut keys: BTreeSet<String> = shared.launch.pools.iter().map(PoolSpec::key).collect();
    if let Ok(stats) = shared.store.pool_stats().await {
        keys.extend(stats.into_keys());
    }
    for key in keys {
        let target = target_of(&shared.launch, &key);
        let picked = shared
            .store
            .pool_retire(&key, &shared.launch.image, target, shared.launch.pool_idle)
            .await;
        if let Ok(Some(id)) = picked {
            tracing::info!(machine = %id, pool = %key, "retiring a pooled machine (old image, idle surplus or abandoned)");
            retire(shared, &id).await;
        }
    }
}

/// Creates one machine for the pool, lets it boot once and stop, and adds
/// it to the pool.
async fn warm(shared: Arc<Supervision>, spec: PoolSpec, name: String) {
    let key = spec.key();
    let request = pooled_machine_request(&shared, &spec, &name);
    let machine = match shared.machines.create(&request).await {
        Ok(machine) => machine,
        Err(e) => {
            tracing::warn!(pool = %key, error = %e, "could not create a pool machine");
            let _ = shared.store.pool_unreserve(&key, &name).await;
            return;
        }
    };
    let id = machine.id;
    let instance = Some(machine.instance_id).filter(|i| !i.is_empty());
    if !first_boot_went_well(&shared, &id, instance.as_deref()).await {
        tracing::warn!(machine = %id, pool = %key, "pool machine's first boot failed; destroying it");
        destroy(&shared.machines, &id).await;
        let _ = shared.store.pool_unreserve(&key, &name).await;
        return;
    }
    match shared
        .store
        .pool_ready(&key, &name, &id, &shared.launch.image)
        .await
    {
        Ok(true) => tracing::info!(machine = %id, pool = %key, "pool machine ready"),
        Ok(false) | Err(_) => {
            tracing::warn!(machine = %id, pool = %key, "pool reservation lapsed; destroying the machine");
            destroy(&shared.machines, &id).await;
        }
    }
}

/// Whether a new pool machine booted, ran its runner (which found no
/// attempt) and stopped with exit code 0, within the reservation.
async fn first_boot_went_well(shared: &Supervision, id: &str, instance: Option<&str>) -> bool {
    let deadline = tokio::time::Instant::now() + RESERVATION / 2;
    loop {
        match shared
            .machines
            .wait(id, instance, &["stopped", "failed"], 60)
            .await
        {
            Ok(WaitOutcome::Reached(_)) => break,
            Ok(WaitOutcome::TimedOut) if tokio::time::Instant::now() < deadline => continue,
            _ => return false,
        }
    }
    match shared.machines.get(id).await {
        Ok(machine) => {
            machine.state == MachineState::Stopped
                && machine.last_exit().is_some_and(|e| e.exit_code == 0)
        }
        Err(_) => false,
    }
}
