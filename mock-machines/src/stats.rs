//! Live counters, served as [`Stats`] by `MockServer::stats` and
//! `GET /_mock/stats`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A snapshot of the mock's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Machines whose state is not `destroyed`.
    pub live: usize,
    /// The largest `live` ever observed.
    pub peak_live: usize,
    pub created: u64,
    pub destroyed: u64,
    /// Main processes (or virtual guests) launched, restarts included.
    pub boots: u64,
    /// Main processes that ended.
    pub exits: u64,
    /// Exits caused by the memory watchdog or an injected OOM.
    pub oom_kills: u64,
    /// Requests answered 429 by the rate limiter.
    pub rate_limited: u64,
    /// Faults injected (errors, crashes, dropped connections, ...).
    pub faults_injected: u64,
    /// Requests per route, keyed like `"POST /v1/apps/{app}/machines"`.
    pub calls: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    live: AtomicUsize,
    peak_live: AtomicUsize,
    created: AtomicU64,
    destroyed: AtomicU64,
    boots: AtomicU64,
    exits: AtomicU64,
    oom_kills: AtomicU64,
    rate_limited: AtomicU64,
    calls: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub fn machine_created(&self) {
        self.created.fetch_add(1, Ordering::SeqCst);
        let live = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_live.fetch_max(live, Ordering::SeqCst);
    }

    pub fn machine_destroyed(&self) {
        self.destroyed.fetch_add(1, Ordering::SeqCst);
        self.live.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn boot(&self) {
        self.boots.fetch_add(1, Ordering::Relaxed);
    }

    pub fn exit(&self, oom_killed: bool) {
        self.exits.fetch_add(1, Ordering::Relaxed);
        if oom_killed {
            self.oom_kills.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub fn call(&self, route: String) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        *calls.entry(route).or_insert(0) += 1;
    }

    pub fn snapshot(&self, faults_injected: u64) -> Stats {
        Stats {
            live: self.live.load(Ordering::SeqCst),
            peak_live: self.peak_live.load(Ordering::SeqCst),
            created: self.created.load(Ordering::SeqCst),
            destroyed: self.destroyed.load(Ordering::SeqCst),
            boots: self.boots.load(Ordering::Relaxed),
            exits: self.exits.load(Ordering::Relaxed),
            oom_kills: self.oom_kills.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            faults_injected,
            calls: self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}
