//! The app's Machines API create budget, shared by every dispatcher
//! through the job store ([`jobs::pacing`]): creates from all of them
//! together queue at Fly's limit instead of drawing 429s.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use jobs::Store;
use machines::pacing::{Rate, SharedBudget};

/// [`SharedBudget`] on the job store.
pub struct StoreBudget(pub Store);

impl SharedBudget for StoreBudget {
    fn reserve(&self, key: String, rate: Rate) -> BoxFuture<'static, Duration> {
        let store = self.0.clone();
        async move {
            match store.pace(&key, rate.per_sec, rate.burst).await {
                Ok(wait) => wait,
                Err(e) => {
                    // The API still limits; its 429s are retried.
                    tracing::debug!(error = %e, "shared pacing unavailable; calling unpaced");
                    Duration::ZERO
                }
            }
        }
        .boxed()
    }
}
