//! Log lines on stderr carry colour codes only where someone sees colours:
//! a terminal, with `NO_COLOR` unset. The binary runs as a real child whose
//! stderr is a pipe or a pseudo-terminal.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common;

const ESC: char = '\x1b';

/// A configuration whose one poller fails, so `once` logs a warning.
fn failing_poller(dir: &Path) {
    let state = dir.display();
    std::fs::write(
        dir.join("pattoo.yaml"),
        format!(
            "pattoo:\n  log_level: info\n  log_directory: {state}/log\n  cache_directory: {state}/cache\n  daemon_directory: {state}/daemon\npattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: 9\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("pattoo_agentd.yaml"),
        "pattoo_agentd:\n  hostname: test-host\n  pollers:\n    - {name: broken, type: command, command: [/bin/false], format: keyvalue}\n",
    )
    .unwrap();
}

fn once_print(dir: &Path, no_color: Option<&str>) -> Command {
    let mut command = common::agentd(dir);
    command
        .args(["once", "--print"])
        .stdout(Stdio::null())
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM");
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    command
}

#[test]
fn log_lines_in_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    failing_poller(dir.path());
    let output = once_print(dir.path(), None)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("poll failed"), "{stderr}");
    assert!(!stderr.contains(ESC), "colour codes in a pipe: {stderr:?}");
}

/// What the child wrote to stderr when stderr is a pseudo-terminal.
fn stderr_on_a_terminal(mut command: Command) -> String {
    let mut master = -1;
    let mut slave = -1;
    // SAFETY: openpty writes two descriptors into the given integers; the
    // name, termios and window size arguments may be null.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    command.stderr(Stdio::from(slave));
    let mut child = command.spawn().unwrap();
    // The parent's copy of the terminal's other end goes with the command,
    // so reading ends (EIO) once the child has exited.
    drop(command);
    let mut master = std::fs::File::from(master);
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match master.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
        }
    }
    child.wait().unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn log_lines_on_a_terminal_are_coloured_unless_no_color_is_set() {
    let dir = tempfile::tempdir().unwrap();
    failing_poller(dir.path());

    let coloured = stderr_on_a_terminal(once_print(dir.path(), None));
    assert!(coloured.contains("poll failed"), "{coloured}");
    assert!(
        coloured.contains(ESC),
        "no colours on a terminal: {coloured:?}"
    );

    let plain = stderr_on_a_terminal(once_print(dir.path(), Some("1")));
    assert!(plain.contains("poll failed"), "{plain}");
    assert!(!plain.contains(ESC), "colours despite NO_COLOR: {plain:?}");
}
