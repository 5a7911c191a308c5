//! Python packages the interoperability tests run (pymodbus, snmpsim):
//! those the interpreter already has, else pinned versions installed from
//! PyPI into Cargo's scratch directory for tests, so `cargo test` works on
//! a fresh machine.

use std::path::Path;
use std::process::Command;

/// The interpreter: `$PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// A `PYTHONPATH` under which `probe` (Python code, e.g. `import pymodbus`)
/// runs: empty when the interpreter has what it needs already, else
/// `{CARGO_TARGET_TMPDIR}/{name}`, where `packages` are installed first if
/// they are not there yet.
pub fn packages_path(name: &str, packages: &[&str], probe: &str) -> String {
    let runs = |path: &str| {
        Command::new(python())
            .args(["-c", probe])
            .env("PYTHONPATH", path)
            .output()
            .expect("python3 runs")
            .status
            .success()
    };
    if runs("") {
        return String::new();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let dir = dir.display().to_string();
    if !runs(&dir) {
        // One installer at a time, across the threads of a test binary
        // and across binaries alike.
        let lock = std::fs::File::create(format!("{dir}.lock")).unwrap();
        let guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .unwrap_or_else(|(_, error)| panic!("locking {dir}.lock: {error}"));
        if !runs(&dir) {
            let install = Command::new(python())
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--target",
                    &dir,
                ])
                .args(packages)
                .output()
                .expect("python3 runs pip");
            assert!(
                install.status.success(),
                "installing {packages:?} for the tests failed:\n{}",
                String::from_utf8_lossy(&install.stderr)
            );
        }
        drop(guard);
    }
    assert!(
        runs(&dir),
        "{packages:?} were installed into {dir} but `{probe}` fails"
    );
    dir
}
