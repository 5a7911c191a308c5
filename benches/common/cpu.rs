//! CPU time for the load benches, which include this file with `#[path]`.

use std::time::Duration;

/// CPU time of the calling thread: the machine may be busy, so wall time
/// would measure the other work on it.
pub fn thread_cpu_time() -> Duration {
    let mut ts = std::mem::MaybeUninit::<libc::timespec>::zeroed();
    // SAFETY: clock_gettime writes a whole timespec into the pointer.
    let ts = unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, ts.as_mut_ptr());
        ts.assume_init()
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
