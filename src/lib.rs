//! pattoo-agentd: a pattoo agent that polls SNMP and Modbus TCP devices, HTTP
//! endpoints and local commands, and delivers what it reads to a pattoo
//! server without losing it.
//!
//! Data flows one way: configuration → pollers → model (normalise) →
//! delivery (post or cache). The scheduler drives the pollers; the daemon
//! owns signals and shutdown.

pub mod app;
pub mod cli;
pub mod collector;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod formats;
pub mod identity;
pub mod model;
pub mod pollers;
pub mod scheduler;
pub mod time;
pub mod yaml;

/// The async runtime every command runs on (see `src/main.rs`); the load
/// harness in `benches/load.rs` builds the same one.
///
/// At most two workers: the agent waits on the network nearly all the
/// time, and every worker thread costs memory (its stack and, with glibc,
/// its own malloc arena) on machines with many cores.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
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
/// only while in use. Fewer arenas keep the worker and blocking threads
/// from each growing their own heap.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Hands memory the allocator holds but no longer uses back to the system.
///
/// A poll's readings and body are thousands of small allocations that all
/// die together at the end of a cycle; glibc keeps the pages they occupied
/// resident until the heap's top is free, which other, longer-lived
/// allocations prevent. Called after each body is delivered, it keeps the
/// daemon's steady memory near what it needs between polls, for well
/// under a millisecond of CPU.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
