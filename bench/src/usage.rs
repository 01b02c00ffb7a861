//! [`Usage`]: a process's peak memory and CPU time, read from `/proc`.

use std::time::Duration;

use anyhow::Context as _;

#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// Peak resident set size (`VmHWM`), in bytes.
    pub peak_rss: u64,
    /// User plus system CPU time so far.
    pub cpu: Duration,
}

impl Usage {
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let peak_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmHWM in /proc/PID/status")?;
        // `stat`'s second field may contain spaces; the rest follows `)`.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let after_name = stat.rsplit_once(')').context("malformed stat")?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Ok(Self {
            peak_rss: peak_kib * 1024,
            cpu: Duration::from_millis(ticks * 1000 / per_second),
        })
    }
}
