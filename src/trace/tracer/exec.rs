//! An exec: the process record and the timeline note it, the task gets a
//! fresh address space, and then either runq detaches (exec not followed)
//! or, with coverage on, puts a breakpoint on every pending line address
//! of the new executable.
//!
//! Separate because an exec is where coverage instrumentation starts and
//! where following a process may stop.

use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::unistd::Pid;

use super::procfs::{load_bias, read_cmdline};
use super::{Task, Tracer};
use crate::trace::breakpoints::{AddressSpace, SpaceId};
use crate::trace::model::{EventKind, ExecRecord};
use crate::trace::sys;

impl Tracer<'_> {
    /// PTRACE_EVENT_EXEC at `pid` (the thread group id), called by `former`.
    pub(super) fn exec(&mut self, pid: Pid, former: Pid) -> Result<()> {
        let tgid = self.tasks.get(&pid).map(|t| t.tgid).unwrap_or(pid);
        if former != pid {
            // The execing thread took over the leader's pid.
            self.tasks.remove(&former);
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        // The root's first exec is the traced program starting, not an exec
        // of the process tree.
        let initial = pid == self.root && !self.root_exec_seen;
        self.root_exec_seen |= pid == self.root;
        self.record_exec(pid, tgid, former, initial, &exe);
        let space = self.fresh_space(pid, tgid);

        if !initial && !self.config.follow_exec && !self.detaching {
            return self.detach_unfollowed(pid, tgid, &exe);
        }
        if self.coverage.is_some() && !self.killing {
            // Breakpoints already inserted stay consistent on failure: the
            // program runs on with partial coverage of this executable.
            if let Err(err) = self.instrument(pid, space, Path::new(&exe)) {
                tracing::warn!("coverage of {exe} in pid {pid} is incomplete: {err:#}");
            }
        }
        self.resume(pid, 0)
    }

    /// Notes the exec in the process record and, unless it is the initial
    /// one, as an event of the timeline.
    fn record_exec(&mut self, pid: Pid, tgid: Pid, former: Pid, initial: bool, exe: &str) {
        let command = read_cmdline(pid);
        let live_threads = self
            .tasks
            .values()
            .filter(|t| t.tgid == tgid)
            .count()
            .max(1);
        let now = self.now();
        if let Some(process) = self.process_mut(tgid) {
            process.threads_live = live_threads;
            if initial {
                process.exe = exe.to_string();
            } else {
                process.execs.push(ExecRecord {
                    time: now,
                    exe: exe.to_string(),
                    command: command.clone(),
                });
                process.execd = true;
            }
        }
        if !initial {
            self.event(
                tgid,
                EventKind::Exec {
                    exe: exe.to_string(),
                    command,
                    from_tid: (former != pid).then_some(former.as_raw()),
                },
            );
        }
    }

    /// Gives `pid` a fresh address space with no breakpoints (an exec
    /// replaced its memory) and drops spaces no task uses any more.
    fn fresh_space(&mut self, pid: Pid, tgid: Pid) -> SpaceId {
        let space = self.next_space;
        self.next_space += 1;
        self.spaces.insert(space, AddressSpace::default());
        if let Some(task) = self.tasks.get_mut(&pid) {
            task.space = Some(space);
        } else {
            self.tasks.insert(pid, Task::new(tgid, Some(space)));
        }
        self.collect_spaces();
        space
    }

    /// Lets a process that exec'd go untraced (exec is not followed).
    fn detach_unfollowed(&mut self, pid: Pid, tgid: Pid, exe: &str) -> Result<()> {
        let reason = format!("exec'd {exe} (not following exec)");
        self.event(
            tgid,
            EventKind::Detach {
                reason: reason.clone(),
            },
        );
        if let Some(process) = self.process_mut(tgid) {
            process.detached = Some(reason);
        }
        self.live.remove(&tgid);
        self.tasks.remove(&pid);
        self.collect_spaces();
        // The process keeps running untraced; its other threads are
        // dying and still report to us.
        match sys::detach(pid, 0) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e).context("PTRACE_DETACH"),
        }
    }

    /// Puts breakpoints on every line address of `exe` in the fresh address
    /// space of `pid` (stopped at its exec, single-threaded).
    fn instrument(&mut self, pid: Pid, space: SpaceId, exe: &Path) -> Result<()> {
        let Some(coverage) = self.coverage.as_mut() else {
            return Ok(());
        };
        let image_index = match coverage.image_for(exe) {
            Ok(Some(index)) => index,
            Ok(None) => return Ok(()),
            Err(err) => {
                tracing::warn!("no coverage for {}: {err:#}", exe.display());
                return Ok(());
            }
        };
        let image = &coverage.images[image_index];
        let bias = if image.position_independent {
            load_bias(pid, exe, image.first_segment_vaddr).with_context(|| {
                format!("finding where {} is mapped in pid {pid}", exe.display())
            })?
        } else {
            0
        };
        // Lines an earlier process already ran need no breakpoint here.
        let sites: Vec<(u64, usize, u64)> = image
            .sites
            .keys()
            .filter(|&&link| coverage.site_pending(image_index, link))
            .map(|&link| (link.wrapping_add(bias), image_index, link))
            .collect();
        let table = self.spaces.entry(space).or_default();
        let count = table
            .insert_all(pid, sites)
            .with_context(|| format!("inserting breakpoints into pid {pid}"))?;
        let tgid = self.tasks.get(&pid).map(|t| t.tgid).unwrap_or(pid);
        self.event(
            tgid,
            EventKind::Breakpoints {
                exe: exe.display().to_string(),
                count,
            },
        );
        Ok(())
    }
}
