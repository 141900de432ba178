//! New tasks: a creator's fork/vfork/clone event records a thread or a
//! process (with the address space it shares or copies); a task whose
//! initial stop came first is held with its probable creator's breakpoint
//! table, or adopted when that creator died before its event.
//!
//! Separate because these orderings (see the module docs) are the subtle
//! part of following a process tree, and they touch only task creation.

use anyhow::Result;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::procfs::{proc_ids, read_cmdline, thread_group_of};
use super::{Task, Tracer, Unclaimed};
use crate::trace::breakpoints::SpaceId;
use crate::trace::model::{EventKind, Origin, ProcessRecord};
use crate::trace::sys::{self, WaitReport};

impl Tracer<'_> {
    /// Holds a task that stopped before its creator's event, with a copy
    /// of its probable creator's breakpoint table.
    pub(super) fn hold_unclaimed(&mut self, report: WaitReport) -> Result<()> {
        let pid = report.pid();
        tracing::debug!("pid {pid} stopped before its creator's event");
        if self.killing {
            let _ = signal::kill(pid, Signal::SIGKILL);
        }
        let creator = match proc_ids(pid) {
            Some((tgid, _)) if tgid != pid => Some(tgid),
            Some((_, parent)) => Some(parent),
            None => None,
        }
        .filter(|c| self.live.contains_key(c));
        let creator_task = creator.and_then(|c| {
            self.tasks
                .iter()
                .find(|(_, t)| t.tgid == c && t.space.is_some())
                .map(|(p, t)| (*p, t.space))
        });
        let space = match creator_task {
            Some((creator_pid, Some(id))) => {
                if sys::same_address_space(creator_pid, pid) == Some(true) {
                    Some(id)
                } else {
                    let copy = self.spaces.get(&id).cloned().unwrap_or_default();
                    let new_id = self.next_space;
                    self.next_space += 1;
                    self.spaces.insert(new_id, copy);
                    Some(new_id)
                }
            }
            _ => None,
        };
        self.unclaimed.insert(
            pid,
            Unclaimed {
                report,
                creator,
                space,
            },
        );
        if creator.is_none() {
            // No traced creator will ever report it.
            self.adopt_orphans()?;
        }
        Ok(())
    }

    /// Starts unclaimed tasks whose creator is no longer traced: it died
    /// between the fork and its event (SIGKILL), so the event never comes.
    pub(super) fn adopt_orphans(&mut self) -> Result<()> {
        let orphans: Vec<Pid> = self
            .unclaimed
            .iter()
            .filter(|(_, u)| u.creator.is_none_or(|c| !self.live.contains_key(&c)))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in orphans {
            let Some(unclaimed) = self.unclaimed.remove(&pid) else {
                continue;
            };
            tracing::debug!("pid {pid}: its creator is gone, adopting it");
            let creator_record = unclaimed
                .creator
                .and_then(|c| self.processes.iter().rposition(|p| p.pid == c.as_raw()));
            let program = match creator_record {
                Some(i) => self.program_of(i),
                None => (read_cmdline(pid), String::new(), false),
            };
            let start = self.now();
            self.add_process(ProcessRecord::started(
                pid.as_raw(),
                unclaimed.creator.map(Pid::as_raw),
                Origin::Fork,
                program,
                start,
            ));
            self.event(
                unclaimed.creator.unwrap_or(pid),
                EventKind::Fork {
                    child: pid.as_raw(),
                },
            );
            self.tasks.insert(pid, Task::new(pid, unclaimed.space));
            self.handle(unclaimed.report)?;
        }
        Ok(())
    }

    /// A creator's fork/vfork/clone event: record the new task, then start it
    /// if its initial stop already arrived.
    pub(super) fn new_task(&mut self, parent: Pid, child: Pid, origin: Origin) -> Result<()> {
        let Some(parent_task) = self.tasks.get(&parent) else {
            return Ok(());
        };
        let parent_tgid = parent_task.tgid;
        if self.tasks.contains_key(&child) {
            // Adopted early (its /proc parent was not its creator, as with
            // CLONE_PARENT): only the record's parent needs fixing.
            if let Some(process) = self.process_mut(child) {
                process.parent = Some(parent_tgid.as_raw());
            }
            return Ok(());
        }
        let parent_space = parent_task.space;
        let is_thread = origin == Origin::Clone && thread_group_of(child) == Some(parent_tgid);
        let shares_memory =
            sys::same_address_space(parent, child).unwrap_or(is_thread || origin == Origin::Vfork);
        let space = self.space_for_child(parent_space, shares_memory);
        if is_thread {
            self.tasks.insert(child, Task::new(parent_tgid, space));
            self.start_thread(parent_tgid, child);
        } else {
            self.tasks.insert(child, Task::new(child, space));
            // clone(CLONE_VM | SIGCHLD) is reported as a fork event: call a
            // process that shares its creator's memory a clone.
            let origin = if origin == Origin::Fork && shares_memory {
                Origin::Clone
            } else {
                origin
            };
            self.start_process(parent_tgid, child, origin);
        }
        if self.killing {
            let _ = signal::kill(child, Signal::SIGKILL);
        }
        if let Some(unclaimed) = self.unclaimed.remove(&child) {
            self.handle(unclaimed.report)?;
        }
        Ok(())
    }

    /// The address space of a new task: its creator's when they share
    /// memory, else a copy of it (breakpoints included).
    fn space_for_child(
        &mut self,
        parent_space: Option<SpaceId>,
        shares_memory: bool,
    ) -> Option<SpaceId> {
        match parent_space {
            Some(id) if !shares_memory => {
                let copy = self.spaces.get(&id).cloned().unwrap_or_default();
                let new_id = self.next_space;
                self.next_space += 1;
                self.spaces.insert(new_id, copy);
                Some(new_id)
            }
            other => other,
        }
    }

    /// A new thread of `tgid`: counted in its process and in the timeline.
    fn start_thread(&mut self, tgid: Pid, tid: Pid) {
        if let Some(process) = self.process_mut(tgid) {
            process.threads_live += 1;
            process.threads_total += 1;
            process.threads_max = process.threads_max.max(process.threads_live);
        }
        self.event(tgid, EventKind::Thread { tid: tid.as_raw() });
    }

    /// A new process created by `parent_tgid`: it starts with its
    /// creator's program.
    fn start_process(&mut self, parent_tgid: Pid, child: Pid, origin: Origin) {
        let program = match self.live.get(&parent_tgid) {
            Some(&i) => self.program_of(i),
            None => (Vec::new(), String::new(), false),
        };
        let start = self.now();
        self.add_process(ProcessRecord::started(
            child.as_raw(),
            Some(parent_tgid.as_raw()),
            origin,
            program,
            start,
        ));
        let child = child.as_raw();
        let kind = match origin {
            Origin::Fork => EventKind::Fork { child },
            Origin::Vfork => EventKind::Vfork { child },
            _ => EventKind::Clone { child },
        };
        self.event(parent_tgid, kind);
    }

    /// The program record `index` runs now: (argv, exe, execd), what a
    /// process it forks starts with.
    fn program_of(&self, index: usize) -> (Vec<String>, String, bool) {
        let p = &self.processes[index];
        (
            p.current_command().to_vec(),
            p.current_exe().to_string(),
            p.execd,
        )
    }

    /// Records a new live process.
    pub(super) fn add_process(&mut self, record: ProcessRecord) {
        self.live
            .insert(Pid::from_raw(record.pid), self.processes.len());
        self.processes.push(record);
    }
}
