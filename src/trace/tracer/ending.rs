//! Endings: a task's death report (its process record, crash and timeline
//! event), dropping unused breakpoint tables, and runq's own interruption:
//! kill and reap the tree, or restore every original byte and detach.
//!
//! Separate because leaving nothing behind (no traced process, no int3 in
//! a detached program) is its own contract, whichever way the trace ends.

use std::time::{Duration, Instant};

use anyhow::Result;
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::procfs::thread_group_of;
use super::{InterruptAction, Task, Tracer};
use crate::trace::breakpoints::SpaceId;
use crate::trace::model::{signal_name, EventKind, ExitStatus};
use crate::trace::sys::{self, WaitReport};

impl Tracer<'_> {
    /// A task's death report.
    pub(super) fn task_gone(&mut self, pid: Pid, status: ExitStatus) -> Result<()> {
        if pid == self.root {
            self.root_reaped = true;
        }
        self.unclaimed.remove(&pid);
        let Some(task) = self.tasks.remove(&pid) else {
            // Our own child after runq detached from it: still its end.
            if pid == self.root {
                let now = self.now();
                let process = &mut self.processes[0];
                process.end = Some(now);
                process.status = Some(status);
                self.live.remove(&pid);
            }
            return Ok(());
        };
        let now = self.now();
        if pid == task.tgid {
            let crash = match status {
                ExitStatus::Signaled { number, .. } => {
                    task.last_fault.filter(|c| c.signal == signal_name(number))
                }
                _ => None,
            };
            if let Some(index) = self.live.remove(&pid) {
                let process = &mut self.processes[index];
                process.end = Some(now);
                process.status = Some(status);
                process.threads_live = 0;
                process.crash = crash;
            }
            self.event(pid, EventKind::Exit { status });
            if !self.unclaimed.is_empty() {
                self.adopt_orphans()?;
            }
        } else {
            if let Some(process) = self.process_mut(task.tgid) {
                process.threads_live = process.threads_live.saturating_sub(1);
            }
            self.event(
                task.tgid,
                EventKind::ThreadExit {
                    tid: pid.as_raw(),
                    status,
                },
            );
        }
        self.collect_spaces();
        Ok(())
    }

    /// Drops breakpoint tables no task uses any more.
    pub(super) fn collect_spaces(&mut self) {
        let used: std::collections::HashSet<SpaceId> = self
            .tasks
            .values()
            .filter_map(|t| t.space)
            .chain(self.unclaimed.values().filter_map(|u| u.space))
            .collect();
        self.spaces.retain(|id, _| used.contains(id));
    }

    /// runq got SIGINT/SIGTERM/SIGHUP.
    pub(super) fn interrupt(&mut self, sig: Signal) {
        let repeated = self.interrupted_by.is_some();
        self.interrupted_by.get_or_insert(sig);
        if self.config.on_interrupt == InterruptAction::Detach && !repeated {
            self.detaching = true;
            let pids: Vec<Pid> = self.tasks.keys().copied().collect();
            for pid in pids {
                // Tasks already stopped here are held as their stop is handled.
                let _ = ptrace::interrupt(pid);
            }
            // Tasks stopped before their creator's event are already stopped.
            let unclaimed: Vec<Pid> = self.unclaimed.keys().copied().collect();
            for pid in unclaimed {
                let Some(held) = self.unclaimed.remove(&pid) else {
                    continue;
                };
                let tgid = thread_group_of(pid).unwrap_or(pid);
                let task = Task {
                    held: Some(0),
                    ..Task::new(tgid, held.space)
                };
                self.tasks.insert(pid, task);
            }
        } else {
            self.detaching = false;
            self.kill_everything();
        }
    }

    pub(super) fn kill_everything(&mut self) {
        self.killing = true;
        for pid in self.tasks.keys().chain(self.unclaimed.keys()) {
            let _ = signal::kill(*pid, Signal::SIGKILL);
        }
        // Programs runq detached from are only reachable through the cgroup.
        self.containment.sweep();
    }

    /// After [`Self::kill_everything`] on an error: collect the death
    /// reports, for at most `limit`.
    pub(super) fn reap_after_kill(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !(self.tasks.is_empty() && self.unclaimed.is_empty()) {
            match sys::wait_any_nohang() {
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Ok(Some(WaitReport::Exited(pid, _)))
                | Ok(Some(WaitReport::Signaled(pid, _, _))) => {
                    self.tasks.remove(&pid);
                    self.unclaimed.remove(&pid);
                }
                Ok(Some(report)) => {
                    // Stopped on the way out: let the SIGKILL act.
                    let _ = sys::cont(report.pid(), 0);
                }
                Err(Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    pub(super) fn all_held(&self) -> bool {
        self.unclaimed.is_empty() && self.tasks.values().all(|t| t.held.is_some())
    }

    /// Every task is stopped: restore all original bytes, then let go.
    pub(super) fn detach_all(&mut self) -> Result<()> {
        let mut restored = std::collections::HashSet::new();
        let tasks: Vec<(Pid, Option<SpaceId>, i32)> = self
            .tasks
            .iter()
            .map(|(pid, t)| (*pid, t.space, t.held.unwrap_or(0)))
            .collect();
        for &(pid, space, _) in &tasks {
            if let Some(space) = space {
                if restored.insert(space) {
                    if let Some(table) = self.spaces.get_mut(&space) {
                        if let Err(err) = table.remove_all(pid) {
                            tracing::warn!("restoring code of pid {pid}: {err:#}");
                        }
                    }
                }
            }
        }
        for (pid, _, signal) in tasks {
            let tgid = self.tasks.get(&pid).map(|t| t.tgid).unwrap_or(pid);
            let _ = sys::detach(pid, signal);
            if pid == tgid {
                let reason = "runq was interrupted".to_string();
                if let Some(process) = self.process_mut(tgid) {
                    process.detached = Some(reason.clone());
                }
                self.event(tgid, EventKind::Detach { reason });
            }
        }
        self.tasks.clear();
        self.spaces.clear();
        Ok(())
    }
}
