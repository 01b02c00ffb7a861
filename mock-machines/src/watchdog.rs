//! The memory watchdog: enforces `guest.memory_mb` on process machines.
//!
//! One task samples the resident set size of every process on the host
//! (`/proc/<pid>/stat`), sums it per process group, and SIGKILLs any watched
//! group over its limit, flagging the kill as out-of-memory. A single scan
//! for all machines keeps the cost independent of the machine count, and
//! the task sleeps while no group is watched.
//!
//! RSS sampling is used rather than `RLIMIT_AS`, which limits virtual size
//! and so breaks multi-threaded runtimes that reserve large address spaces.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::process::signal_group;

/// Handle to the watchdog task; dropping it stops the task.
pub struct Watchdog {
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

struct Inner {
    groups: Mutex<HashMap<i32, Watched>>,
    wake: Notify,
}

struct Watched {
    limit_bytes: u64,
    oom: Arc<AtomicBool>,
}

/// Stops watching a group when dropped.
pub struct WatchGuard {
    inner: Arc<Inner>,
    pgid: i32,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.inner.lock().remove(&self.pgid);
    }
}

impl Watchdog {
    /// Starts the sampling task (needs a tokio runtime).
    pub fn start(interval: Duration) -> Self {
        let inner = Arc::new(Inner {
            groups: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        });
        let task = tokio::spawn(run(inner.clone(), interval.max(Duration::from_millis(5))));
        Self { inner, task }
    }

    /// Watches process group `pgid`: when its RSS exceeds `limit_bytes`, it
    /// is killed and `oom` is set.
    pub fn watch(&self, pgid: i32, limit_bytes: u64, oom: Arc<AtomicBool>) -> WatchGuard {
        self.inner.lock().insert(pgid, Watched { limit_bytes, oom });
        self.inner.wake.notify_one();
        WatchGuard {
            inner: self.inner.clone(),
            pgid,
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Watched>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One sample: kill every watched group over its limit.
    fn scan(&self) {
        let limits: HashMap<i32, u64> = self
            .lock()
            .iter()
            .map(|(pgid, w)| (*pgid, w.limit_bytes))
            .collect();
        if limits.is_empty() {
            return;
        }
        let usage = rss_by_group(&limits);
        let groups = self.lock();
        for (pgid, bytes) in usage {
            match groups.get(&pgid) {
                Some(watched) if bytes > watched.limit_bytes => {
                    tracing::warn!(
                        pgid,
                        rss_bytes = bytes,
                        limit_bytes = watched.limit_bytes,
                        "machine out of memory; killing it"
                    );
                    watched.oom.store(true, Ordering::SeqCst);
                    signal_group(pgid, libc::SIGKILL);
                }
                _ => {}
            }
        }
    }
}

async fn run(inner: Arc<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if inner.lock().is_empty() {
            inner.wake.notified().await;
            continue;
        }
        ticker.tick().await;
        let sampler = inner.clone();
        // Reading /proc is blocking file I/O.
        let _ = tokio::task::spawn_blocking(move || sampler.scan()).await;
    }
}

/// Total RSS in bytes of the processes in each of the `groups`.
fn rss_by_group(groups: &HashMap<i32, u64>) -> HashMap<i32, u64> {
    let mut usage = HashMap::new();
    for process in processes(|pgrp| groups.contains_key(&pgrp)) {
        *usage.entry(process.pgrp).or_insert(0) += process.rss_bytes;
    }
    usage
}

/// One process of the host, as `/proc` shows it.
pub(crate) struct ProcessSample {
    pub pid: i32,
    pub pgrp: i32,
    pub rss_bytes: u64,
}

/// The host's processes whose process group `in_group` accepts.
pub(crate) fn processes(in_group: impl Fn(i32) -> bool) -> Vec<ProcessSample> {
    // SAFETY: sysconf has no preconditions.
    let page_size = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (pgrp, rss_pages) = parse_stat(&stat)?;
            in_group(pgrp).then_some(ProcessSample {
                pid,
                pgrp,
                rss_bytes: rss_pages * page_size,
            })
        })
        .collect()
}

/// `(process group, rss in pages)` from the text of `/proc/<pid>/stat`.
/// Fields are counted after the parenthesised command name, which may itself
/// contain spaces and parentheses.
pub(crate) fn parse_stat(stat: &str) -> Option<(i32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): pgrp is field 5, rss field 24.
    let pgrp = fields.get(2)?.parse().ok()?;
    let rss = fields.get(21)?.parse().ok()?;
    Some((pgrp, rss))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat = "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 100 12345678 777 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((1234, 777)));
    }
}
