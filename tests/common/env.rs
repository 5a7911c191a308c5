//! Tests that need environment variables set. The tests of a binary share
//! one process and run on threads of it; `std::env::set_var` there would
//! race with every other thread that reads the environment (the C library
//! does, for time zones and name lookups). Such a test runs again in a
//! child process of the test binary instead, with the variables in the
//! child's own environment from its start.

use std::process::Command;

/// Whether the test `test` of `module` (pass `module_path!()`) should run
/// its body in this process: true where `vars` are already set as given
/// (in the child), false after running the test in a child process with
/// them set and seeing it pass there. Panics with the child's output if it
/// failed, or if the test was not found.
pub fn runs_here_with(module: &str, test: &str, vars: &[(&str, &str)]) -> bool {
    if vars
        .iter()
        .all(|(name, value)| std::env::var_os(name).is_some_and(|v| v == *value))
    {
        return true;
    }
    // The harness names a test by its path below the crate.
    let name = match module.split_once("::") {
        Some((_, below)) => format!("{below}::{test}"),
        None => test.to_owned(),
    };
    let output = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .envs(vars.iter().copied())
        .output()
        .expect("the test binary runs again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} with {vars:?} in a child process: {}\n{stdout}{stderr}",
        output.status
    );
    false
}
