//! [`Leases`]: every lease this dispatcher holds, renewed together.
//!
//! Each in-flight attempt is owned through a lease in the store that its
//! owner must renew well before it runs out. Renewing each on its own
//! timer costs one store command per attempt every few seconds: with ten
//! thousand attempts, thousands of commands a second while nothing
//! happens. Instead, one task renews them all every third of a lease, in
//! one script call per `BATCH` attempts, and tells each supervisor how
//! long its runner has been silent ([`Renewal`]).
//!
//! Each renewal carries the epoch of this dispatcher's ownership. One that
//! is refused means a peer took the attempt over (this dispatcher was
//! paused or cut off past its lease): the supervisor learns it from
//! [`Held::lost`] and stops without touching the machine or the job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobs::{JobId, Owned, Store};
use tokio::sync::watch;

/// Attempts renewed per script call: large enough that the call count
/// stays small, small enough that one call never blocks the store long.
const BATCH: usize = 500;

/// What the last renewal said about one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed; the runner last heartbeat this long ago.
    Renewed { silent: Duration },
    /// The attempt is no longer this dispatcher's: a peer took it over
    /// (the epoch differs) or its slot was released.
    Lost,
    /// The store did not answer; the next round tries again.
    Failed,
}

type Key = (JobId, u32);

/// One held lease: the epoch it is held under, and the channel its
/// supervisor listens on.
struct Holder {
    epoch: u64,
    tx: watch::Sender<Option<Renewal>>,
}

/// The leases held.
pub struct Leases {
    store: Store,
    lease: Duration,
    held: Mutex<HashMap<Key, Holder>>,
}

/// One held lease; dropping it stops its renewal.
pub struct Held {
    leases: Arc<Leases>,
    key: Key,
    epoch: u64,
    renewals: watch::Receiver<Option<Renewal>>,
}

impl Held {
    /// The next renewal's verdict.
    pub async fn renewed(&mut self) -> Renewal {
        match self.renewals.changed().await {
            Ok(()) => self.renewals.borrow_and_update().unwrap_or(Renewal::Failed),
            // The sender lives in the map until this is dropped.
            Err(_) => std::future::pending().await,
        }
    }

    /// Resolves once a renewal is refused (the attempt was lost to another
    /// dispatcher), or once this dispatcher holds the attempt again under
    /// a newer epoch (its own reaper took it over: the newer holder
    /// supervises it). Owns its own view of the renewals, so it can be
    /// awaited beside [`Held::renewed`].
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut renewals = self.renewals.clone();
        async move {
            let closed = renewals
                .wait_for(|r| *r == Some(Renewal::Lost))
                .await
                .is_err();
            // The sender is gone only once this is dropped: nobody waits.
            if closed {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.leases.held.lock().expect("leases lock");
        // Held again under a newer epoch: that holder's entry stays.
        if held.get(&self.key).is_some_and(|h| h.epoch == self.epoch) {
            held.remove(&self.key);
        }
    }
}

impl Leases {
    pub fn new(store: Store, lease: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            lease,
            held: Mutex::default(),
        })
    }

    /// Starts renewing the lease on `owned` until the returned [`Held`] is
    /// dropped.
    pub fn hold(self: &Arc<Self>, owned: &Owned) -> Held {
        let (tx, renewals) = watch::channel(None);
        let key = (owned.job_id, owned.attempt);
        let holder = Holder {
            epoch: owned.epoch,
            tx,
        };
        let replaced = self.held.lock().expect("leases lock").insert(key, holder);
        // This dispatcher's own reaper took the attempt over (its lease ran
        // out while this process was paused): the older holder has lost it.
        if let Some(older) = replaced {
            older.tx.send_replace(Some(Renewal::Lost));
        }
        Held {
            leases: self.clone(),
            key,
            epoch: owned.epoch,
            renewals,
        }
    }

    /// Renews every held lease each third of a lease, until dropped
    /// (the launcher aborts it on shutdown before handing leases back).
    pub async fn run(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.lease / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.renew_all().await;
        }
    }

    async fn renew_all(&self) {
        let keys: Vec<(JobId, u32, u64)> = self
            .held
            .lock()
            .expect("leases lock")
            .iter()
            .map(|(&(job, attempt), holder)| (job, attempt, holder.epoch))
            .collect();
        for batch in keys.chunks(BATCH) {
            let verdicts: Vec<Renewal> = match self.store.renew(batch, self.lease).await {
                Ok(ages) => ages
                    .into_iter()
                    .map(|age| age.map_or(Renewal::Lost, |silent| Renewal::Renewed { silent }))
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, attempts = batch.len(), "lease renewal failed");
                    vec![Renewal::Failed; batch.len()]
                }
            };
            let held = self.held.lock().expect("leases lock");
            for (&(job, attempt, epoch), verdict) in batch.iter().zip(verdicts) {
                // Held again meanwhile under another epoch: not this verdict's.
                match held.get(&(job, attempt)) {
                    Some(holder) if holder.epoch == epoch => {
                        if verdict == Renewal::Lost {
                            crate::metrics::fence_refused("renew");
                        }
                        holder.tx.send_replace(Some(verdict));
                    }
                    _ => {}
                }
            }
        }
    }
}
