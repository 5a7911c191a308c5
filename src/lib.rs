//! pattoo-agentd: a pattoo agent that polls SNMP and Modbus devices (TCP
//! and RTU), HTTP endpoints and local commands, and delivers what it reads
//! to a pattoo server without losing it.
//!
//! Data flows one way: configuration → pollers → model (normalise) →
//! delivery (post or cache). The scheduler drives the pollers; the daemon
//! owns signals and shutdown.

pub mod address;
pub mod app;
pub mod cli;
pub mod collector;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod delivery;
pub mod durable;
pub mod formats;
pub mod identity;
pub mod manpage;
pub mod model;
pub mod pollers;
pub mod scheduler;
pub mod secret;
pub mod spoke;
pub mod status;
pub mod switch;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod translations;
pub mod yaml;

/// How many cores this process may use, asked once: the answer costs a
/// `sched_getaffinity` and three cgroup files, too much to repeat for every
/// target of every poll.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The async runtime every command runs on (see `src/main.rs`); the load
/// harness in `benches/load.rs` builds the same one.
///
/// At most two workers: the agent waits on the network nearly all the
/// time, and every worker thread costs memory (its stack and, with glibc,
/// its own malloc arena) on machines with many cores.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let workers = cores().min(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}

/// Keeps glibc's allocator from holding on to memory the agent has freed.
///
/// A large poll's readings and body are a few megabytes that live for
/// one cycle. By default glibc raises its mmap threshold after such a
/// block is freed, so the next cycle's blocks come from the heap and stay
/// resident after they are freed; a fixed threshold keeps them mapped
/// only while in use. One arena: with a second, each worker thread's
/// blocks of a poll went to whichever arena it held, and the few that
/// outlive a poll pinned pages in both; measured at 200 SNMP targets,
/// one arena held 1.5-2.5 MiB less between polls and 5 MiB less at the
/// peak, for no measurable CPU (BENCHMARKS.md, "SNMP memory, fourth
/// pass").
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Allocator settings for a command that runs once and exits (`once`),
/// in place of [`tune_allocator`]'s, which are for the daemon.
///
/// Memory freed is kept and reused rather than handed back: a large
/// poll's buffers (the program's output, the readings, the bodies) then
/// take pages already touched instead of new ones, each of which costs a
/// page fault, and the heap grows in large steps (untouched pages cost
/// nothing) rather than a system call every few pages. One arena: every
/// thread's blocks are freed where they were taken, and grow the one heap.
pub fn tune_allocator_for_once() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        // glibc's largest: blocks below it come from the heap.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TOP_PAD, 8 << 20);
    }
}

/// Hands memory the allocator holds but no longer uses back to the system.
///
/// A poll's readings and body are thousands of small allocations that all
/// die together at the end of a cycle; glibc keeps the pages they occupied
/// resident until the heap's top is free, which other, longer-lived
/// allocations prevent. Called after each poll has handed its bodies to
/// delivery, it keeps the daemon's steady memory near what it needs
/// between polls, for well under a millisecond of CPU.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// An error and its causes on one line, `a: b: c`, each cause once: many
/// errors already quote their cause (`cannot write {path}: {source}`), and
/// printing the chain after them would say the cause twice.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// What the crate's unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    /// The number of cases for a property test that runs more than
    /// proptest's default of 256: `default`, unless `PROPTEST_CASES` says
    /// otherwise (as it does for the tests that use the default).
    pub fn proptest_cases(default: u32) -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_the_message_already_quotes_is_not_printed_again() {
        let io = std::io::Error::from_raw_os_error(30);
        let error = anyhow::Error::new(crate::delivery::cache::CacheError::Write {
            path: "/var/lib/pattoo/cache/x.json".into(),
            source: io,
        })
        .context("caching a body");
        let text = super::error_chain(error.as_ref());
        assert_eq!(text.matches("Read-only file system").count(), 1, "{text}");
        assert!(
            text.starts_with("caching a body: cannot write cache file"),
            "{text}"
        );
        // anyhow's own chain says it twice.
        assert_eq!(
            format!("{error:#}")
                .matches("Read-only file system")
                .count(),
            2
        );
    }
}
