//! [`Leases`]: every lease this dispatcher holds, renewed together.
//!
//! Each in-flight attempt is owned through a lease in the store that its
//! owner must renew well before it runs out. Renewing each on its own
//! timer costs one store command per attempt every few seconds: with ten
//! thousand attempts, thousands of commands a second while nothing
//! happens. Instead, one task renews them all every third of a lease, in
//! one script call per `BATCH` attempts, and tells each supervisor how
//! long its runner has been silent ([`Renewal`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobs::{JobId, Store};
use tokio::sync::watch;

/// Attempts renewed per script call: large enough that the call count
/// stays small, small enough that one call never blocks the store long.
const BATCH: usize = 500;

/// What the last renewal said about one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed; the runner last heartbeat this long ago.
    Renewed { silent: Duration },
    /// The slot is gone: released, or taken over by another dispatcher.
    Gone,
    /// The store did not answer; the next round tries again.
    Failed,
}

type Key = (JobId, u32);

/// The leases held, each with the channel its supervisor listens on.
pub struct Leases {
    store: Store,
    lease: Duration,
    held: Mutex<HashMap<Key, watch::Sender<Option<Renewal>>>>,
}

/// One held lease; dropping it stops its renewal.
pub struct Held {
    leases: Arc<Leases>,
    key: Key,
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
}

impl Drop for Held {
    fn drop(&mut self) {
        self.leases
            .held
            .lock()
            .expect("leases lock")
            .remove(&self.key);
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

    /// Starts renewing the lease on `attempt` of `job` until the returned
    /// [`Held`] is dropped.
    pub fn hold(self: &Arc<Self>, job: JobId, attempt: u32) -> Held {
        let (tx, renewals) = watch::channel(None);
        let key = (job, attempt);
        self.held.lock().expect("leases lock").insert(key, tx);
        Held {
            leases: self.clone(),
            key,
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
        let keys: Vec<Key> = self
            .held
            .lock()
            .expect("leases lock")
            .keys()
            .copied()
            .collect();
        for batch in keys.chunks(BATCH) {
            let verdicts: Vec<Renewal> = match self.store.renew(batch, self.lease).await {
                Ok(ages) => ages
                    .into_iter()
                    .map(|age| age.map_or(Renewal::Gone, |silent| Renewal::Renewed { silent }))
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, attempts = batch.len(), "lease renewal failed");
                    vec![Renewal::Failed; batch.len()]
                }
            };
            let held = self.held.lock().expect("leases lock");
            for (key, verdict) in batch.iter().zip(verdicts) {
                if let Some(tx) = held.get(key) {
                    tx.send_replace(Some(verdict));
                }
            }
        }
    }
}
