//! Processes a command leaves behind outside its process group.
//!
//! A command that starts `setsid sleep 600 &` puts the sleeper in a session
//! of its own, out of reach of the group kill. Two things catch it:
//!
//! - every process of a run carries [`RUN_MARKER`]`=<run id>` in its
//!   environment (inherited unless a descendant clears it), so once the
//!   run is over every process still carrying its id is killed;
//! - the agent is a child subreaper (`PR_SET_CHILD_SUBREAPER`): an orphan
//!   is re-parented to the agent rather than to init, so it can be found
//!   even without the marker, and is reaped here once killed.
//!
//! Most runs leave nothing, and looking through /proc costs a read of two
//! files per process on the machine. So [`end_run`] first asks the kernel
//! whether the agent has any child at all ([`nothing_left`]): every process
//! a run starts descends from its program, and whenever one exits its
//! children go to the nearest reaper above them, which is the agent or one
//! of them. So while any process of a run is alive, the agent has a child
//! (the program, or whatever escaped its group or session, or an orphan of
//! those); with none, there is nothing to look for and /proc is not read.
//! If the agent could not become a subreaper, /proc is always read. (A
//! process outside the agent's tree that carries a run's id, one another
//! service started with the run's environment, is no process of the run;
//! it is found only when /proc is read for another reason.)
//!
//! tokio reaps the children it spawned by pid. The agent must never reap
//! one of those itself, or tokio's wait would fail: [`SPAWNED`] lists them,
//! and a spawn registers its child under the same lock the scans take.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag};
use nix::unistd::Pid;

/// The environment variable that names the run a process belongs to.
pub const RUN_MARKER: &str = "PATTOO_AGENTD_RUN";

/// Children spawned (and to be reaped) by tokio.
static SPAWNED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

pub fn spawned() -> MutexGuard<'static, Option<HashSet<i32>>> {
    SPAWNED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the agent is the reaper of its orphaned descendants.
static SUBREAPER: AtomicBool = AtomicBool::new(false);

/// Makes the agent the reaper of its orphaned descendants. Once per
/// process; failure (an old kernel) only means orphans go to init.
pub fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| match nix::sys::prctl::set_child_subreaper(true) {
        Ok(()) => SUBREAPER.store(true, Ordering::Relaxed),
        Err(error) => {
            tracing::debug!(%error, "cannot become a child subreaper; orphans of commands go to init");
        }
    });
}

/// True when no process of any run can be left: the agent is their
/// subreaper and has no child at all, not even a zombie (see the module's
/// notes). One system call, no /proc; false whenever in doubt.
pub fn nothing_left() -> bool {
    SUBREAPER.load(Ordering::Relaxed)
        && waitid(
            Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT | WaitPidFlag::__WALL,
        ) == Err(Errno::ECHILD)
}

/// One process as /proc shows it.
struct Process {
    pid: Pid,
    parent: i32,
    group: i32,
    zombie: bool,
    /// The run id in its environment, if it has one and it can be read.
    run: Option<String>,
}

fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').and_then(|at| stat.get(at + 2..)) else {
            continue;
        };
        let mut fields = after.split(' ');
        let state = fields.next().unwrap_or_default();
        let parent = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let group = fields.next().and_then(|g| g.parse().ok()).unwrap_or(0);
        let run = std::fs::read(entry.path().join("environ"))
            .ok()
            .and_then(|environ| {
                environ.split(|b| *b == 0).find_map(|item| {
                    let text = std::str::from_utf8(item).ok()?;
                    text.strip_prefix(RUN_MARKER)?
                        .strip_prefix('=')
                        .map(str::to_owned)
                })
            });
        found.push(Process {
            pid: Pid::from_raw(pid),
            parent,
            group,
            zombie: state == "Z",
            run,
        });
    }
    found
}

/// Runs in progress, by id.
static RUNNING: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// A run in progress; ended by [`end_run`].
pub fn start_run(run_id: &str) {
    RUNNING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(run_id.to_owned());
}

/// Ends run `run_id` at once if nothing can be left of it
/// ([`nothing_left`]); false if /proc must be looked through, which
/// [`end_run`] does.
pub fn try_end_run(run_id: &str) -> bool {
    if !nothing_left() {
        return false;
    }
    running_without(run_id);
    true
}

/// The runs still going once `run_id` is over.
fn running_without(run_id: &str) -> HashSet<String> {
    let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    let set = running.get_or_insert_with(HashSet::new);
    set.remove(run_id);
    set.clone()
}

/// Ends run `run_id`: kills every process still carrying its id, and every
/// orphan the agent inherited that belongs to no run still going; reaps
/// what it killed. Blocking unless [`nothing_left`]. Returns how many
/// processes it killed.
pub fn end_run(run_id: &str) -> usize {
    let running = running_without(run_id);
    if nothing_left() {
        return 0;
    }
    let me = std::process::id() as i32;
    let my_group = nix::unistd::getpgrp().as_raw();
    let mut killed = 0;
    // A killed process's children are re-parented and seen on the next
    // pass; a few passes reach the bottom of any real tree.
    for _ in 0..8 {
        let spawned = spawned();
        let mut acted = false;
        for process in processes() {
            if process.pid.as_raw() == me {
                continue;
            }
            // Every run starts its own process group, and whatever a run
            // left keeps that group or a session of its own: a child in the
            // agent's own group was started some other way (by a program
            // embedding this library, a test) and is not ours to reap.
            let orphan = process.parent == me
                && process.group != my_group
                && !spawned
                    .as_ref()
                    .is_some_and(|set| set.contains(&process.pid.as_raw()));
            if orphan && process.zombie {
                let _ = waitpid(process.pid, Some(WaitPidFlag::WNOHANG));
                continue;
            }
            let leftover = match &process.run {
                Some(run) => run == run_id || (orphan && !running.contains(run)),
                // An orphan that cleared its environment may belong to a
                // run still going; it is left to the last run to end.
                None => orphan && running.is_empty(),
            };
            if leftover && kill(process.pid, Signal::SIGKILL).is_ok() {
                killed += 1;
                acted = true;
                if orphan {
                    let _ = waitpid(process.pid, None);
                }
            }
        }
        drop(spawned);
        if !acted {
            break;
        }
    }
    killed
}
