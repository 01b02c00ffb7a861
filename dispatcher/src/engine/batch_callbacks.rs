//! Delivers batch callbacks from the store's outbox.
//!
//! The store step that completes a batch queues its id in the outbox
//! (`batch_callbacks`), once; every dispatcher pops from it, and each pop
//! hands an entry to one dispatcher only, so a batch's callback is sent
//! once however many dispatchers finished its last members at the same
//! moment. The outbox is drained when a batch completes (its event) and
//! on a slow tick, for events missed or entries left by a dispatcher that
//! stopped.

use std::time::Duration;

use jobs::Store;

use crate::engine::callbacks::Callbacks;
use crate::engine::hub::EventHub;
use crate::shutdown::Shutdown;

/// How often the outbox is looked at when no event says a batch completed.
const TICK: Duration = Duration::from_secs(2);

pub async fn run(store: Store, hub: EventHub, callbacks: Callbacks, shutdown: Shutdown) {
    let completed = hub.batch_completed();
    loop {
        drain(&store, &callbacks).await;
        tokio::select! {
            _ = completed.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.wait() => return,
        }
    }
}

async fn drain(store: &Store, callbacks: &Callbacks) {
    loop {
        let id = match store.pop_batch_callback().await {
            Ok(Some(id)) => id,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "reading the batch callback outbox failed; will retry");
                return;
            }
        };
        match store.batch(id).await {
            Ok(Some(batch)) => callbacks.deliver_batch(&batch),
            Ok(None) => tracing::warn!(batch = %id, "completed batch gone before its callback"),
            // Popped but unread: lost, as a job callback is when its
            // dispatcher dies while sending (see `crate::engine::callbacks`).
            Err(error) => tracing::warn!(batch = %id, %error, "batch callback not sent"),
        }
    }
}
