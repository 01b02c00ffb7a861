//! [`ProcessGroup`]: a command and everything it started, signalled as one.
//!
//! A command runs as the leader of a process group of its own, so a stop
//! reaches its children too (a shell script's `sleep`, a Python pool's
//! workers), and none of them outlives the attempt. A process that leaves
//! the group on purpose (`setsid`) escapes this; on Fly the machine is
//! destroyed after the attempt anyway.

/// The group of a spawned command. Dropping it SIGKILLs the group: the
/// handler's future is dropped at the job's timeout, and that must stop
/// the command too.
pub(super) struct ProcessGroup {
    /// `None` once the group was killed after its leader was reaped: the
    /// id may then be reused by an unrelated group, so no more signals.
    pgid: Option<i32>,
}

impl ProcessGroup {
    /// The group led by the process `pid`.
    pub(super) fn led_by(pid: u32) -> Self {
        Self {
            pgid: i32::try_from(pid).ok().filter(|&pgid| pgid > 1),
        }
    }

    /// Sends `signal` to every process in the group. Errors (the group is
    /// gone already) are ignored: the caller wanted it stopped anyway.
    pub(super) fn signal(&self, signal: i32) {
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) has no memory-safety preconditions; a
            // negative pid addresses the process group.
            unsafe {
                libc::kill(-pgid, signal);
            }
        }
    }

    /// Kills whatever is left once the leader has exited, and forgets the
    /// group.
    pub(super) fn kill_rest(&mut self) {
        self.signal(libc::SIGKILL);
        self.pgid = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// The name of the common signals, for error messages.
pub(super) fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_common_signals() {
        assert_eq!(signal_name(9), Some("SIGKILL"));
        assert_eq!(signal_name(libc::SIGTERM), Some("SIGTERM"));
        assert_eq!(signal_name(libc::SIGRTMIN() + 3), None);
    }

    #[test]
    fn never_signals_init_or_everyone() {
        assert_eq!(ProcessGroup::led_by(0).pgid, None);
        assert_eq!(ProcessGroup::led_by(1).pgid, None);
        assert_eq!(ProcessGroup::led_by(u32::MAX).pgid, None);
    }
}
