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
//! When the hub itself falls behind and drops messages, it tells every
//! subscriber so ([`EventKind::Resync`]) and each re-reads the store at
//! once instead of waiting for its slow path.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use fred::prelude::*;
use jobs::{EventKind, JobEvent, JobId, JobStatus, Store, StoreError};
use tokio::sync::Notify;

use crate::shutdown::Shutdown;

type Mailboxes = HashMap<JobId, Vec<Arc<Mailbox>>>;

#[derive(Clone, Default)]
pub struct EventHub {
    mailboxes: Arc<Mutex<Mailboxes>>,
    /// Subscribers to every job's status changes (`GET /jobs/events`).
    watchers: Arc<Mutex<Vec<Arc<Mailbox>>>>,
    launcher: Arc<Notify>,
    slots: Arc<Notify>,
    batches: Arc<Notify>,
}

/// One subscriber's queue. Empty, it is about a hundred bytes: a channel
/// would allocate a block of slots up front, over a kilobyte, and a
/// dispatcher with ten thousand machines in flight holds ten thousand
/// subscriptions that mostly wait.
#[derive(Default)]
struct Mailbox {
    queue: Mutex<VecDeque<JobEvent>>,
    ready: Notify,
}

/// A watcher of every job whose queue grew past this is behind: its
/// queue is replaced by one `Resync`, so a slow client costs bounded
/// memory and learns it missed changes.
const MAX_WATCHER_QUEUE: usize = 4096;

/// Events of one job (or, from [`EventHub::subscribe_all`], every job's
/// status changes) until dropped.
pub struct Subscription {
    hub: EventHub,
    /// `None`: a watcher of every job.
    job: Option<JobId>,
    mailbox: Arc<Mailbox>,
}

impl Subscription {
    /// The job's next event. Cancel-safe: an event is taken off the queue
    /// only when it is returned.
    pub async fn recv(&mut self) -> JobEvent {
        loop {
            if let Some(event) = self.mailbox.queue.lock().expect("mailbox lock").pop_front() {
                return event;
            }
            // A push after the check above leaves a permit: no lost wakeup.
            self.mailbox.ready.notified().await;
        }
    }
}

impl Subscription {
    /// Forgets the events queued so far: for a subscriber that re-reads
    /// the record after a pause, one read covers them all.
    pub fn clear(&mut self) {
        self.mailbox.queue.lock().expect("mailbox lock").clear();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(job) = self.job else {
            let mut watchers = self.hub.watchers.lock().expect("hub lock");
            watchers.retain(|m| !Arc::ptr_eq(m, &self.mailbox));
            return;
        };
        let mut mailboxes = self.hub.mailboxes.lock().expect("hub lock");
        if let Some(list) = mailboxes.get_mut(&job) {
            list.retain(|m| !Arc::ptr_eq(m, &self.mailbox));
            if list.is_empty() {
                mailboxes.remove(&job);
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
        let hub = Self::default();
        let mut messages = subscriber.message_rx();
        let mut reconnects = subscriber.reconnect_rx();
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
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "event hub lagged; every subscriber re-reads the store");
                            fan_out.resync();
                        }
                        Err(_) => break,
                    },
                    Ok(_) = reconnects.recv() => fan_out.resync(),
                }
            }
            let _ = subscriber.quit().await;
        });
        Ok(hub)
    }

    pub fn subscribe(&self, job: JobId) -> Subscription {
        let mailbox = Arc::new(Mailbox::default());
        self.mailboxes
            .lock()
            .expect("hub lock")
            .entry(job)
            .or_default()
            .push(mailbox.clone());
        Subscription {
            hub: self.clone(),
            job: Some(job),
            mailbox,
        }
    }

    /// Every job's status changes (and `Resync` after missed messages),
    /// until dropped.
    pub fn subscribe_all(&self) -> Subscription {
        let mailbox = Arc::new(Mailbox::default());
        self.watchers
            .lock()
            .expect("hub lock")
            .push(mailbox.clone());
        Subscription {
            hub: self.clone(),
            job: None,
            mailbox,
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

    /// Notified when a batch completed (its callback may be due).
    pub fn batch_completed(&self) -> Arc<Notify> {
        self.batches.clone()
    }

    fn dispatch(&self, event: JobEvent) {
        if event.kind == EventKind::Batch && event.status.is_none() {
            self.batches.notify_one();
        }
        let queued = event.kind == EventKind::Status && event.status == Some(JobStatus::Queued);
        if queued || event.kind == EventKind::Lease {
            self.launcher.notify_one();
        }
        if matches!(event.kind, EventKind::Slot | EventKind::Lease) {
            self.slots.notify_one();
        }
        if event.kind == EventKind::Status {
            for watcher in self.watchers.lock().expect("hub lock").iter() {
                watcher.deliver_bounded(event.clone());
            }
        }
        let mailboxes = self.mailboxes.lock().expect("hub lock");
        for mailbox in mailboxes.get(&event.id).into_iter().flatten() {
            mailbox.deliver(event.clone());
        }
    }

    /// Messages may have been missed (the hub lagged, or the subscription
    /// reconnected): wake the launcher, and tell every subscriber to
    /// re-read what it waits for.
    fn resync(&self) {
        self.launcher.notify_one();
        self.slots.notify_one();
        for watcher in self.watchers.lock().expect("hub lock").iter() {
            watcher.deliver_bounded(resync_event(JobId::default()));
        }
        let mailboxes = self.mailboxes.lock().expect("hub lock");
        for (&id, list) in mailboxes.iter() {
            for mailbox in list {
                mailbox.deliver(resync_event(id));
            }
        }
    }
}

impl Mailbox {
    fn deliver(&self, event: JobEvent) {
        self.queue.lock().expect("mailbox lock").push_back(event);
        self.ready.notify_one();
    }

    /// [`Mailbox::deliver`] for a watcher of every job: past
    /// [`MAX_WATCHER_QUEUE`] the queue becomes one `Resync`.
    fn deliver_bounded(&self, event: JobEvent) {
        {
            let mut queue = self.queue.lock().expect("mailbox lock");
            if queue.len() >= MAX_WATCHER_QUEUE {
                let id = event.id;
                queue.clear();
                queue.push_back(resync_event(id));
            } else {
                queue.push_back(event);
            }
        }
        self.ready.notify_one();
    }
}

/// A `Resync` (the watcher missed messages); `id` is only a label.
fn resync_event(id: JobId) -> JobEvent {
    JobEvent {
        id,
        kind: EventKind::Resync,
        status: None,
        attempt: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn hub() -> EventHub {
        EventHub::default()
    }

    fn event(id: JobId, attempt: u32) -> JobEvent {
        JobEvent {
            id,
            kind: EventKind::Progress,
            status: None,
            attempt: Some(attempt),
        }
    }

    #[tokio::test]
    async fn each_subscriber_gets_its_jobs_events_in_order() {
        let hub = hub();
        let (job, other) = (JobId::new(), JobId::new());
        let mut first = hub.subscribe(job);
        let mut second = hub.subscribe(job);
        let mut elsewhere = hub.subscribe(other);
        for attempt in 1..=3 {
            hub.dispatch(event(job, attempt));
        }
        for subscription in [&mut first, &mut second] {
            for attempt in 1..=3 {
                assert_eq!(subscription.recv().await.attempt, Some(attempt));
            }
        }
        let nothing = tokio::time::timeout(Duration::from_millis(50), elsewhere.recv()).await;
        assert!(nothing.is_err(), "another job's events stay out");
    }

    #[tokio::test]
    async fn a_watcher_gets_every_jobs_status_changes_within_a_bound() {
        let hub = hub();
        let mut watcher = hub.subscribe_all();
        let status = |id| JobEvent {
            id,
            kind: EventKind::Status,
            status: Some(JobStatus::Queued),
            attempt: None,
        };
        let (a, b) = (JobId::new(), JobId::new());
        hub.dispatch(event(a, 1));
        hub.dispatch(status(a));
        hub.dispatch(status(b));
        assert_eq!(watcher.recv().await.id, a, "progress is left out");
        assert_eq!(watcher.recv().await.id, b);
        // One past the bound: the queue becomes one Resync, then goes on.
        for _ in 0..MAX_WATCHER_QUEUE + 2 {
            hub.dispatch(status(a));
        }
        assert_eq!(watcher.recv().await.kind, EventKind::Resync);
        assert_eq!(watcher.recv().await.kind, EventKind::Status);
        drop(watcher);
        assert!(hub.watchers.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn after_a_lag_every_subscriber_is_told_to_resync() {
        let hub = hub();
        let (job, other) = (JobId::new(), JobId::new());
        let mut subscriptions = [hub.subscribe(job), hub.subscribe(job), hub.subscribe(other)];
        hub.resync();
        for (subscription, id) in subscriptions.iter_mut().zip([job, job, other]) {
            let event = subscription.recv().await;
            assert_eq!((event.id, event.kind), (id, EventKind::Resync));
        }
    }

    #[tokio::test]
    async fn a_waiting_subscriber_is_woken_and_a_dropped_one_is_forgotten() {
        let hub = hub();
        let job = JobId::new();
        let mut waiting = hub.subscribe(job);
        let sender = hub.clone();
        let wait = tokio::spawn(async move { waiting.recv().await });
        // On this single-threaded runtime the task now runs until it waits.
        tokio::task::yield_now().await;
        sender.dispatch(event(job, 7));
        let woken = tokio::time::timeout(Duration::from_secs(5), wait).await;
        assert_eq!(woken.expect("woken").unwrap().attempt, Some(7));
        // The task owned the subscription; its end removed the mailbox.
        assert!(hub.mailboxes.lock().unwrap().is_empty());
    }
}
