//! [`EventHub`]: the dispatcher's one subscription to the store's `events`
//! channel, fanned out in memory.
//!
//! Supervisors and long-polls subscribe to one job's events; the launcher
//! is woken when a job is queued ([`EventHub::launcher_wakeup`]) and,
//! separately, when a machine slot frees up ([`EventHub::slot_freed`]):
//! while every slot is taken, only the second can give it work, so it
//! need not claim once per submitted job. Pub/sub
//! is best effort, so every consumer re-reads the record before acting and
//! has a slow path (the Machines API, a periodic tick) for missed messages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fred::prelude::*;
use jobs::{EventKind, JobEvent, JobId, JobStatus, Store, StoreError};
use tokio::sync::{mpsc, Notify};

use crate::shutdown::Shutdown;

type Senders = HashMap<JobId, Vec<(u64, mpsc::UnboundedSender<JobEvent>)>>;

#[derive(Clone)]
pub struct EventHub {
    senders: Arc<Mutex<Senders>>,
    next_id: Arc<AtomicU64>,
    launcher: Arc<Notify>,
    slots: Arc<Notify>,
}

/// Events of one job until dropped.
pub struct Subscription {
    hub: EventHub,
    job: JobId,
    id: u64,
    rx: mpsc::UnboundedReceiver<JobEvent>,
}

impl Subscription {
    pub async fn recv(&mut self) -> Option<JobEvent> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut senders = self.hub.senders.lock().expect("hub lock");
        if let Some(list) = senders.get_mut(&self.job) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                senders.remove(&self.job);
            }
        }
    }
}

impl EventHub {
    /// Subscribes to the store's channel and starts fanning out.
    pub async fn start(store: &Store, shutdown: Shutdown) -> Result<Self, StoreError> {
        let subscriber = store.subscriber().await?;
        // Resubscribes by itself after a reconnect.
        let _manager = subscriber.manage_subscriptions();
        subscriber.subscribe(store.events_channel()).await?;
        let hub = Self {
            senders: Arc::default(),
            next_id: Arc::default(),
            launcher: Arc::new(Notify::new()),
            slots: Arc::new(Notify::new()),
        };
        let mut messages = subscriber.message_rx();
        let fan_out = hub.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    message = messages.recv() => match message {
                        Ok(message) => {
                            if let Some(event) = message.value.as_str().and_then(|t| JobEvent::parse(&t)) {
                                fan_out.dispatch(event);
                            }
                        }
                        // Lagging behind drops messages; consumers have slow paths.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "event hub lagged");
                            fan_out.launcher.notify_one();
                            fan_out.slots.notify_one();
                        }
                        Err(_) => break,
                    },
                }
            }
            let _ = subscriber.quit().await;
        });
        Ok(hub)
    }

    pub fn subscribe(&self, job: JobId) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.senders
            .lock()
            .expect("hub lock")
            .entry(job)
            .or_default()
            .push((id, tx));
        Subscription {
            hub: self.clone(),
            job,
            id,
            rx,
        }
    }

    /// Notified when there may be work for the launcher: a job was
    /// queued, or a lease handed back.
    pub fn launcher_wakeup(&self) -> Arc<Notify> {
        self.launcher.clone()
    }

    /// Notified when a machine slot was freed, or a lease handed back.
    pub fn slot_freed(&self) -> Arc<Notify> {
        self.slots.clone()
    }

    fn dispatch(&self, event: JobEvent) {
        let queued = event.kind == EventKind::Status && event.status == Some(JobStatus::Queued);
        if queued || event.kind == EventKind::Lease {
            self.launcher.notify_one();
        }
        if matches!(event.kind, EventKind::Slot | EventKind::Lease) {
            self.slots.notify_one();
        }
        let senders = self.senders.lock().expect("hub lock");
        if let Some(list) = senders.get(&event.id) {
            for (_, tx) in list {
                let _ = tx.send(event.clone());
            }
        }
    }
}
