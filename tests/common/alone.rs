//! Tests that need the test process to themselves. All integration tests
//! share one process and run on threads of it, so a test must not change
//! what the process shares: `std::env::set_var` would race with every
//! other thread reading the environment (the C library does, for time
//! zones and name lookups), and a test measuring the process's memory
//! would count what the other tests allocate. Such a test runs again,
//! alone, in a child process of the test binary, with any environment
//! variables it needs set in the child's own environment from its start.

use std::process::Command;

/// Marks the child process: the name of the one test it runs.
const ALONE: &str = "PATTOO_TEST_ALONE";

/// Whether the test `test` of `module` (pass `module_path!()`) should run
/// its body in this process: true in the child process running it alone
/// with `vars` set; false, in any other process, after running that child
/// and seeing the test pass there. Panics with the child's output if it
/// failed, or if the test was not found.
pub fn runs_here(module: &str, test: &str, vars: &[(&str, &str)]) -> bool {
    // The harness names a test by its path below the crate.
    let name = match module.split_once("::") {
        Some((_, below)) => format!("{below}::{test}"),
        None => test.to_owned(),
    };
    if std::env::var_os(ALONE).is_some_and(|alone| alone == name.as_str()) {
        return true;
    }
    let output = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(ALONE, &name)
        .envs(vars.iter().copied())
        .output()
        .expect("the test binary runs again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} alone in a child process with {vars:?}: {}\n{stdout}{stderr}",
        output.status
    );
    false
}
