//! What a trace records: the processes of the tree and the event timeline.

use serde::Serialize;

/// How a process or thread ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExitStatus {
    Exited {
        code: i32,
    },
    Signaled {
        signal: &'static str,
        number: i32,
        core_dumped: bool,
    },
}

impl ExitStatus {
    pub fn signaled(number: i32, core_dumped: bool) -> Self {
        ExitStatus::Signaled {
            signal: signal_name(number),
            number,
            core_dumped,
        }
    }

    /// Decodes a wait(2) status word (as PTRACE_EVENT_EXIT reports it).
    pub fn from_wait_status(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            Self::signaled(libc::WTERMSIG(status), libc::WCOREDUMP(status))
        } else {
            ExitStatus::Exited {
                code: libc::WEXITSTATUS(status),
            }
        }
    }

    /// The shell's convention: the code, or 128 + the signal number.
    pub fn shell_code(&self) -> i32 {
        match *self {
            ExitStatus::Exited { code } => code,
            ExitStatus::Signaled { number, .. } => 128 + number,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited { code } => write!(f, "exit {code}"),
            ExitStatus::Signaled {
                signal,
                core_dumped,
                ..
            } => {
                write!(f, "killed by {signal}")?;
                if *core_dumped {
                    write!(f, " (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

/// The name of a signal number: "SIGTERM", "SIGRTMIN+2", or "SIG32" for
/// the numbers the C library reserves.
pub fn signal_name(number: i32) -> &'static str {
    const REALTIME: [&str; 31] = [
        "SIGRTMIN",
        "SIGRTMIN+1",
        "SIGRTMIN+2",
        "SIGRTMIN+3",
        "SIGRTMIN+4",
        "SIGRTMIN+5",
        "SIGRTMIN+6",
        "SIGRTMIN+7",
        "SIGRTMIN+8",
        "SIGRTMIN+9",
        "SIGRTMIN+10",
        "SIGRTMIN+11",
        "SIGRTMIN+12",
        "SIGRTMIN+13",
        "SIGRTMIN+14",
        "SIGRTMIN+15",
        "SIGRTMIN+16",
        "SIGRTMIN+17",
        "SIGRTMIN+18",
        "SIGRTMIN+19",
        "SIGRTMIN+20",
        "SIGRTMIN+21",
        "SIGRTMIN+22",
        "SIGRTMIN+23",
        "SIGRTMIN+24",
        "SIGRTMIN+25",
        "SIGRTMIN+26",
        "SIGRTMIN+27",
        "SIGRTMIN+28",
        "SIGRTMIN+29",
        "SIGRTMIN+30",
    ];
    const RESERVED: [&str; 3] = ["SIG32", "SIG33", "SIG34"];
    if let Ok(signal) = nix::sys::signal::Signal::try_from(number) {
        return signal.as_str();
    }
    let rtmin = libc::SIGRTMIN();
    if number >= rtmin {
        return REALTIME
            .get((number - rtmin) as usize)
            .copied()
            .unwrap_or("SIGUNKNOWN");
    }
    RESERVED
        .get(number.wrapping_sub(32) as usize)
        .copied()
        .unwrap_or("SIGUNKNOWN")
}

/// How a process came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The command runq launched.
    Root,
    Fork,
    Vfork,
    /// clone(2) without CLONE_THREAD.
    Clone,
}

/// A fatal signal's circumstances, captured while the process still existed.
#[derive(Debug, Clone, Serialize)]
pub struct Crash {
    pub signal: &'static str,
    pub tid: i32,
    /// si_addr: the faulting data address for SIGSEGV/SIGBUS.
    pub fault_address: String,
    pub instruction_pointer: String,
    /// "file:line" when the instruction is in an executable with line info,
    /// else "object+offset".
    pub location: Option<String>,
}

/// One process (thread group) of the traced tree.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessRecord {
    pub pid: i32,
    /// The traced process that created it (None for the root).
    pub parent: Option<i32>,
    pub origin: Origin,
    /// argv of the program it started with (a forked child starts with its
    /// parent's program).
    pub command: Vec<String>,
    /// Path of the executable it started with.
    pub exe: String,
    /// Every program it exec'd afterwards, in order.
    pub execs: Vec<ExecRecord>,
    /// Runs something exec'd rather than the traced program itself
    /// (it exec'd, or descends from a process that had).
    pub execd: bool,
    /// Seconds since launch.
    pub start: f64,
    pub end: Option<f64>,
    pub status: Option<ExitStatus>,
    /// Threads seen in this process, the main one included.
    pub threads_total: usize,
    /// Most threads alive at once.
    pub threads_max: usize,
    #[serde(skip)]
    pub threads_live: usize,
    pub crash: Option<Crash>,
    /// Why runq stopped following it, if it did.
    pub detached: Option<String>,
}

/// A successful execve.
#[derive(Debug, Clone, Serialize)]
pub struct ExecRecord {
    /// Seconds since launch.
    pub time: f64,
    pub exe: String,
    pub command: Vec<String>,
}

impl ProcessRecord {
    /// A process that just appeared: one live thread, nothing exec'd since,
    /// still running. `command`, `exe` and `execd` are what it started with
    /// (a forked child's are its creator's).
    pub fn started(
        pid: i32,
        parent: Option<i32>,
        origin: Origin,
        program: (Vec<String>, String, bool),
        start: f64,
    ) -> Self {
        let (command, exe, execd) = program;
        ProcessRecord {
            pid,
            parent,
            origin,
            command,
            exe,
            execs: Vec::new(),
            execd,
            start,
            end: None,
            status: None,
            threads_total: 1,
            threads_max: 1,
            threads_live: 1,
            crash: None,
            detached: None,
        }
    }

    /// argv of the program it runs last.
    pub fn current_command(&self) -> &[String] {
        self.execs.last().map_or(&self.command, |e| &e.command)
    }

    /// Path of the executable it runs last.
    pub fn current_exe(&self) -> &str {
        self.execs.last().map_or(&self.exe, |e| &e.exe)
    }
}

/// One entry of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since launch.
    pub time: f64,
    /// The process (thread group id) it concerns.
    pub pid: i32,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    Spawn {
        command: Vec<String>,
    },
    Fork {
        child: i32,
    },
    Vfork {
        child: i32,
    },
    Clone {
        child: i32,
    },
    Thread {
        tid: i32,
    },
    Exec {
        exe: String,
        command: Vec<String>,
        /// The thread that called execve, if not the leader.
        from_tid: Option<i32>,
    },
    Breakpoints {
        exe: String,
        count: usize,
    },
    Signal {
        tid: i32,
        signal: &'static str,
    },
    GroupStop {
        tid: i32,
        signal: &'static str,
    },
    ThreadExit {
        tid: i32,
        status: ExitStatus,
    },
    Exit {
        status: ExitStatus,
    },
    Detach {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_words_decode() {
        assert_eq!(
            ExitStatus::from_wait_status(3 << 8),
            ExitStatus::Exited { code: 3 }
        );
        let killed = ExitStatus::from_wait_status(libc::SIGSEGV | 0x80);
        assert_eq!(killed, ExitStatus::signaled(libc::SIGSEGV, true));
        assert_eq!(killed.shell_code(), 139);
        assert_eq!(killed.to_string(), "killed by SIGSEGV (core dumped)");
        assert_eq!(signal_name(libc::SIGRTMIN() + 2), "SIGRTMIN+2");
        assert_eq!(signal_name(32), "SIG32");
    }
}
