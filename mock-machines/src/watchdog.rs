//! The memory watchdog: enforces `guest.memory_mb` on process machines.
//!
//! One task samples the resident set size of the watched machines'
//! processes (`/proc/<pid>/stat`), sums it per process group, and SIGKILLs
//! any watched group over its limit, flagging the kill as out-of-memory.
//! A group's processes are found from its leader down
//! (`/proc/<pid>/task/<tid>/children`), so a sample costs a few reads per
//! machine, not a read of every process on the host 20 times a second
//! (on a developer's laptop, or a test host running many mocks at once).
//! The task sleeps while no group is watched.
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
    for process in processes(groups.keys().copied()) {
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

/// The processes of the process `groups`. The mock starts every machine
/// as a group leader (its pid is the group id), so a group is its leader
/// and the leader's descendants still in the group. A group whose leader
/// has exited (its members re-parented away) is found by a scan of every
/// process on the host, the one case that needs it.
pub(crate) fn processes(groups: impl IntoIterator<Item = i32>) -> Vec<ProcessSample> {
    // SAFETY: sysconf has no preconditions.
    let page_size = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let sample = |pid: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (pgrp, rss_pages) = parse_stat(&stat)?;
        Some(ProcessSample {
            pid,
            pgrp,
            rss_bytes: rss_pages * page_size,
        })
    };
    let mut found = Vec::new();
    let mut leaderless = std::collections::HashSet::new();
    for group in groups {
        let mut next = match sample(group) {
            Some(leader) if leader.pgrp == group => {
                found.push(leader);
                children(group)
            }
            _ => {
                leaderless.insert(group);
                continue;
            }
        };
        while let Some(pid) = next.pop() {
            // Descendants that left the group are walked through, not
            // counted: theirs may still belong to it.
            found.extend(sample(pid).filter(|p| p.pgrp == group));
            next.extend(children(pid));
        }
    }
    if !leaderless.is_empty() {
        found.extend(
            all_pids()
                .filter_map(sample)
                .filter(|p| leaderless.contains(&p.pgrp)),
        );
    }
    found
}

/// The children of every thread of `pid`.
fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_ascii_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// Every process id on the host.
fn all_pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
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

    /// A machine-like group: a leader (`sh`) with a `sleep` child and a
    /// subshell with a `sleep` of its own, four processes in the group;
    /// and a `sleep` outside it.
    fn a_group_and_a_stranger() -> (std::process::Child, std::process::Child) {
        use std::os::unix::process::CommandExt;
        let group = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & (sleep 30 & wait) & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let stranger = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        (group, stranger)
    }

    /// Polls `processes` until it finds `n`, each with its memory mapped
    /// (a child takes a moment to start, and is at 0 RSS while it forks or
    /// execs); panics after 10 s.
    fn until_found(group: i32, n: usize) -> Vec<ProcessSample> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found = processes([group]);
            if found.len() == n && found.iter().all(|p| p.rss_bytes > 0) {
                return found;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} found, rss {:?}",
                found.len(),
                found.iter().map(|p| p.rss_bytes).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_group_is_its_leader_and_the_descendants_in_it() {
        let (mut group, mut stranger) = a_group_and_a_stranger();
        let pgid = group.id() as i32;
        // sh, its subshell, and the two sleeps.
        let found = until_found(pgid, 4);
        assert!(found.iter().all(|p| p.pgrp == pgid));
        assert!(found.iter().all(|p| p.pid != stranger.id() as i32));
        signal_group(pgid, libc::SIGKILL);
        let _ = (group.wait(), stranger.kill(), stranger.wait());
    }

    #[test]
    fn a_group_whose_leader_exited_is_still_found() {
        use std::os::unix::process::CommandExt;
        // The leader exits at once: its sleep is re-parented away from it.
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & exit 0"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = leader.id() as i32;
        leader.wait().unwrap();
        let found = until_found(pgid, 1);
        assert_eq!(found[0].pgrp, pgid);
        assert_ne!(found[0].pid, pgid);
        signal_group(pgid, libc::SIGKILL);
    }
}
