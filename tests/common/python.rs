//! Python packages the interoperability tests run (pymodbus, snmpsim):
//! those the interpreter already has, else pinned versions installed from
//! PyPI into Cargo's scratch directory for tests, so `cargo test` works on
//! a fresh machine. The load harness (benches/load.rs) uses it too.

use std::path::Path;
use std::process::Command;

/// The interpreter: `$PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// A `PYTHONPATH` under which `probe` (Python code, e.g. `import pymodbus`)
/// runs: empty when the interpreter has what it needs already, else
/// `{CARGO_TARGET_TMPDIR}/{name}`, where `packages` are installed first if
/// they are not there yet. Panics where they cannot be had.
pub fn packages_path(name: &str, packages: &[&str], probe: &str) -> String {
    try_packages_path(name, packages, probe).unwrap_or_else(|error| panic!("{error}"))
}

/// [`packages_path`], or why the packages cannot be had.
pub fn try_packages_path(name: &str, packages: &[&str], probe: &str) -> Result<String, String> {
    let runs = |path: &str| {
        Command::new(python())
            .args(["-c", probe])
            .env("PYTHONPATH", path)
            .output()
            .map(|output| output.status.success())
            .map_err(|error| format!("{} does not run: {error}", python()))
    };
    if runs("")? {
        return Ok(String::new());
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let dir = dir.display().to_string();
    if !runs(&dir)? {
        // One installer at a time, across the threads of a test binary
        // and across binaries alike: each caller opens the lock file
        // itself, and flock(2) locks of separate opens exclude each other
        // within one process too.
        let lock = std::fs::File::create(format!("{dir}.lock"))
            .map_err(|error| format!("creating {dir}.lock: {error}"))?;
        let guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, error)| format!("locking {dir}.lock: {error}"))?;
        if !runs(&dir)? {
            let install = Command::new(python())
                .args(["-m", "pip", "install", "--quiet", "--upgrade"])
                .args(["--disable-pip-version-check", "--target", &dir])
                .args(packages)
                .output()
                .map_err(|error| format!("{} -m pip does not run: {error}", python()))?;
            if !install.status.success() {
                return Err(format!(
                    "installing {packages:?} from PyPI into {dir} failed:\n{}",
                    String::from_utf8_lossy(&install.stderr)
                ));
            }
        }
        drop(guard);
    }
    if runs(&dir)? {
        Ok(dir)
    } else {
        Err(format!(
            "{packages:?} were installed into {dir} but `{probe}` fails"
        ))
    }
}
