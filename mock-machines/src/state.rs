//! One machine's record and the single place where its state changes.
//!
//! A [`MachineEntry`] holds the wire view ([`Machine`]: state, config,
//! events newest first), the lease, the current run, and a log of recent
//! state changes. Every transition goes through [`MachineEntry::set_state`],
//! which also keeps the live-machine counters right and wakes `wait`ers via
//! a `watch` channel. Waiters read the change log rather than only the
//! current state, so a passing state (`stopped` on the way to `destroyed`)
//! is never missed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use machines::{EventRequest, Lease, Machine, MachineConfig, MachineEvent, MachineState};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::guest::GuestControl;
use crate::ids;
use crate::stats::Counters;

/// How many state changes a machine remembers for waiters.
const LOG_CAPACITY: usize = 64;
/// How many events a machine keeps (the API returns at most 50).
const EVENT_CAPACITY: usize = 100;

/// A transition, as waiters see it.
#[derive(Clone, Debug)]
pub struct StateChange {
    pub seq: u64,
    pub state: MachineState,
    pub version: String,
    /// The newest event when the change happened.
    pub event_id: String,
}

/// Why a running machine is being brought down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopIntent {
    /// `stop`: rest in `stopped`.
    Stop,
    /// `suspend`: rest in `suspended`.
    Suspend,
    /// `restart` or `update`: boot again (with the current config).
    Reboot,
}

/// The current boot of a machine and its main process, if launched.
pub struct Run {
    /// Counts launches within this run (restarts launch again).
    pub attempt: u64,
    pub guest: Option<GuestControl>,
    pub stop: Option<StopIntent>,
    /// Turns `true` (or closes) once the run's task has ended and every
    /// process it launched has been reaped.
    pub done: watch::Receiver<bool>,
}

fn expired(lease: &Lease) -> bool {
    lease.expires_at <= chrono::Utc::now().timestamp()
}

pub struct MachineEntry {
    pub app: String,
    pub machine: Machine,
    pub lease: Option<Lease>,
    pub run: Option<Run>,
    /// Bumped whenever the current run is abandoned (destroy, cancelled
    /// boot) or replaced, so a stale run task knows to stop changing state.
    pub generation: u64,
    /// Automatic restarts since the last boot the user asked for.
    pub restart_count: u32,
    /// Every config this machine had: `(version, config)`, oldest first.
    pub versions: Vec<(String, MachineConfig)>,
    /// The app secrets this machine inherited at create (none with
    /// `skip_secrets`), under `config.env` in its environment.
    pub secrets: BTreeMap<String, String>,
    log: VecDeque<StateChange>,
    seq: u64,
    changes: watch::Sender<u64>,
    counters: Arc<Counters>,
}

impl MachineEntry {
    /// A new machine in state `created`, with its `launch` event.
    pub(crate) fn new(app: &str, machine: Machine, counters: Arc<Counters>) -> Self {
        counters.machine_created();
        let versions = vec![(machine.instance_id.clone(), machine.config.clone())];
        let mut entry = Self {
            app: app.to_string(),
            machine,
            lease: None,
            run: None,
            generation: 0,
            restart_count: 0,
            versions,
            secrets: BTreeMap::new(),
            log: VecDeque::new(),
            seq: 0,
            changes: watch::channel(0).0,
            counters,
        };
        entry.record("launch", "created", "user", None);
        entry.set_state(MachineState::Created);
        entry
    }

    pub fn id(&self) -> &str {
        &self.machine.id
    }

    pub fn state(&self) -> MachineState {
        self.machine.state
    }

    pub fn version(&self) -> &str {
        &self.machine.instance_id
    }

    /// The one place a machine's state changes.
    pub fn set_state(&mut self, state: MachineState) {
        let previous = self.machine.state;
        self.machine.state = state;
        self.machine.updated_at = now_rfc3339();
        if state == MachineState::Destroyed && previous != MachineState::Destroyed {
            self.counters.machine_destroyed();
            self.lease = None;
            self.run = None;
        }
        self.seq += 1;
        if self.log.len() == LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(StateChange {
            seq: self.seq,
            state,
            version: self.machine.instance_id.clone(),
            event_id: self.last_event_id(),
        });
        self.changes.send_replace(self.seq);
        tracing::debug!(machine_id = %self.machine.id, from = %previous, to = %state, "state change");
    }

    /// Appends an event (newest first) and returns its id.
    pub fn record(
        &mut self,
        kind: &str,
        status: &str,
        source: &str,
        request: Option<EventRequest>,
    ) -> String {
        let id = ids::ulid();
        self.machine.events.insert(
            0,
            MachineEvent {
                id: id.clone(),
                kind: kind.to_string(),
                status: status.to_string(),
                source: source.to_string(),
                timestamp: chrono::Utc::now().timestamp_millis(),
                request,
            },
        );
        self.machine.events.truncate(EVENT_CAPACITY);
        id
    }

    /// Records an event whose status is the new state, then enters it.
    pub fn enter(&mut self, state: MachineState, kind: &str, source: &str) {
        self.record(kind, state.as_str(), source, None);
        self.set_state(state);
    }

    /// Goes `destroying` → `destroyed`, recording the `destroy` event.
    pub fn finish_destroy(&mut self, source: &str) {
        if self.state() != MachineState::Destroying {
            self.set_state(MachineState::Destroying);
        }
        self.enter(MachineState::Destroyed, "destroy", source);
    }

    pub fn last_event_id(&self) -> String {
        self.machine
            .events
            .first()
            .map(|e| e.id.clone())
            .unwrap_or_default()
    }

    /// Sequence number of the newest state change.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Sequence number of the state change made with event `event_id`.
    pub fn seq_of_event(&self, event_id: &str) -> Option<u64> {
        self.log
            .iter()
            .find(|c| c.event_id == event_id)
            .map(|c| c.seq)
    }

    /// State changes made after `seq`, oldest first.
    pub fn changes_after(&self, seq: u64) -> impl Iterator<Item = &StateChange> {
        self.log.iter().filter(move |c| c.seq > seq)
    }

    /// A receiver that wakes on every state change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether the main process runs or is about to (a boot is pending).
    pub fn is_running(&self) -> bool {
        self.run.is_some()
    }

    /// A new version (instance id) for a new config.
    pub fn set_config(&mut self, config: MachineConfig) {
        let version = ids::ulid();
        self.machine.instance_id = version.clone();
        self.machine.config = config.clone();
        self.versions.push((version, config));
    }

    /// Fails with 409 unless no one holds a lease or `nonce` is its nonce.
    pub fn check_lease(&mut self, nonce: Option<&str>) -> Result<(), ApiError> {
        if self.lease.as_ref().is_some_and(expired) {
            self.lease = None;
        }
        match &self.lease {
            Some(held) if nonce != Some(held.nonce.as_str()) => Err(ApiError::Conflict(
                format!(
                    "failed_precondition: machine {} is leased by another client (owner {}), pass its nonce in fly-machine-lease-nonce",
                    self.machine.id, held.owner
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The lease, if one is held and has not expired.
    pub fn active_lease(&mut self) -> Option<&Lease> {
        if self.lease.as_ref().is_some_and(expired) {
            self.lease = None;
        }
        self.lease.as_ref()
    }
}

/// Now, as Fly writes `created_at`/`updated_at`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
