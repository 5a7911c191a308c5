//! The command poller against real scripts, written into a temporary
//! directory for each test.
#![cfg(feature = "command")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pattoo_agentd::formats::keyvalue::KeyValueOptions;
use pattoo_agentd::formats::value::ValueOptions;
use pattoo_agentd::formats::FormatSettings;
use pattoo_agentd::model::{DataType, Value};
use pattoo_agentd::pollers::command::{
    CommandError, CommandPoller, CommandSettings, DEFAULT_MAX_OUTPUT_BYTES, SAFE_PATH,
};
use pattoo_agentd::pollers::PollerEnv;

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    crate::common::write_executable(&path, &format!("#!/bin/sh\n{body}"));
    path
}

fn settings(program: &Path, format: FormatSettings) -> CommandSettings {
    CommandSettings {
        argv: vec![program.display().to_string()],
        format,
        timeout: Duration::from_secs(10),
        kill_grace: Duration::from_millis(500),
        max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        working_directory: None,
        environment: BTreeMap::new(),
        pass_environment: Vec::new(),
        inherit_environment: false,
        target: None,
    }
}

fn poller(settings: &CommandSettings) -> CommandPoller {
    CommandPoller::new(
        "test",
        settings,
        &PollerEnv {
            hostname: "this-host".to_owned(),
        },
    )
}

fn keyvalue() -> FormatSettings {
    FormatSettings::KeyValue(KeyValueOptions::default())
}

/// Whether a process is still running: gone, or dead and waiting for its
/// new parent (init) to reap it, both count as not running.
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
    }
}

async fn read_pid(file: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(file) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_script_printing_each_format_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, FormatSettings, &str)> = vec![
        (
            "printf '0.75\\n'",
            FormatSettings::Value(ValueOptions {
                key: "load".into(),
                data_type: DataType::Float,
                metadata: Vec::new(),
                naming: Default::default(),
            }),
            "this-host load=0.75",
        ),
        (
            "echo 'load1=0.5'; echo '# comment'; echo 'mem_free 2048'",
            keyvalue(),
            "this-host load1=0.5 mem_free=2048",
        ),
        (
            "echo '# TYPE hits counter'; echo 'hits{path=\"/\"} 7'",
            FormatSettings::Prometheus,
            "this-host hits=7",
        ),
        (
            "echo 'CRITICAL - disk full | used=99%;80;90;0;100'; exit 2",
            FormatSettings::Nagios,
            "this-host state=2 used=99",
        ),
        (
            r#"echo '{"targets": [{"target": "SITE_A", "datapoints": [{"key": "k", "value": 1}]}, {"datapoints": [{"key": "j", "value": 2}]}]}'"#,
            FormatSettings::Datapoints,
            "SITE_A k=1 this-host j=2",
        ),
    ];
    for (i, (body, format, expected)) in cases.into_iter().enumerate() {
        let program = script(dir.path(), &format!("format-{i}"), body);
        let targets = poller(&settings(&program, format.clone()))
            .poll()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", format.name()));
        let mut seen = Vec::new();
        for target in &targets {
            seen.push(target.target.clone());
            for dp in &target.datapoints {
                seen.push(format!("{}={}", dp.key, dp.value.to_python_string()));
            }
        }
        assert_eq!(seen.join(" "), expected, "{}", format.name());
    }
}

#[tokio::test]
async fn a_script_that_sleeps_forever_and_its_grandchild_are_both_gone_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // Both ignore SIGTERM, so only the SIGKILL after the grace period ends
    // them; the grandchild keeps stdout open, as a careless script would.
    let program = script(
        dir.path(),
        "hang",
        &format!(
            "trap '' TERM\nsleep 1000 &\necho $! > {dir}/grandchild\necho $$ > {dir}/child\nsleep 1000\n",
            dir = dir.path().display()
        ),
    );
    let mut settings = settings(&program, keyvalue());
    settings.timeout = Duration::from_millis(500);
    settings.kill_grace = Duration::from_millis(300);
    let started = Instant::now();
    let error = poller(&settings).poll().await.unwrap_err();
    assert!(matches!(error, CommandError::Timeout { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("did not finish within 500ms; its process group was killed"),
        "{error}"
    );
    // The command sleeps for 1000 s: any bound well below shows the
    // timeout and the kill.
    assert!(started.elapsed() < Duration::from_secs(60));
    let child = read_pid(&dir.path().join("child")).await;
    let grandchild = read_pid(&dir.path().join("grandchild")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(child) || running(grandchild) {
        assert!(
            Instant::now() < deadline,
            "child {child} running: {}, grandchild {grandchild} running: {}",
            running(child),
            running(grandchild)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The poller reaped its own child: no zombie left under this process.
    assert!(!Path::new(&format!("/proc/{child}")).exists());
}

fn peak_resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_script_printing_100_mib_is_cut_off_at_the_cap_with_bounded_memory() {
    // The peak is the process's: alone, the other tests' memory is not in it.
    if !crate::common::alone::runs_here(
        module_path!(),
        "a_script_printing_100_mib_is_cut_off_at_the_cap_with_bounded_memory",
        &[],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let program = script(
        dir.path(),
        "flood",
        "head -c 104857600 /dev/zero | tr '\\0' 'x'\n",
    );
    let before = peak_resident_kib();
    let error = poller(&settings(&program, keyvalue()))
        .poll()
        .await
        .unwrap_err();
    assert!(
        matches!(error, CommandError::TooMuchOutput { limit, .. } if limit == DEFAULT_MAX_OUTPUT_BYTES),
        "{error}"
    );
    assert!(error
        .to_string()
        .contains("printed more than 1048576 bytes"));
    let grown_kib = peak_resident_kib().saturating_sub(before);
    assert!(
        grown_kib < 32 * 1024,
        "peak memory grew by {grown_kib} KiB reading a capped output"
    );
}

#[tokio::test]
async fn a_script_exiting_2_fails_the_poll_with_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(
        dir.path(),
        "fail",
        "echo 'a=1'\necho 'meter not found on /dev/ttyUSB0' >&2\nexit 2\n",
    );
    let error = poller(&settings(&program, keyvalue()))
        .poll()
        .await
        .unwrap_err();
    assert!(matches!(error, CommandError::Failed { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        format!(
            "poller test: {:?} exited with exit status: 2; stderr: meter not found on /dev/ttyUSB0",
            program.display().to_string()
        )
    );
}

#[tokio::test]
async fn the_agent_environment_is_not_passed_unless_asked_and_path_is_safe() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(
        dir.path(),
        "env",
        "echo \"home ${HOME:-unset}\"\necho \"path $PATH\"\necho \"given $GIVEN\"\necho \"cwd $(pwd)\"\n",
    );
    let mut settings = settings(
        &program,
        FormatSettings::KeyValue(KeyValueOptions {
            data_type: DataType::String,
            metadata: Vec::new(),
        }),
    );
    settings
        .environment
        .insert("GIVEN".to_owned(), "yes".to_owned());
    settings.working_directory = Some(dir.path().to_owned());
    let targets = poller(&settings).poll().await.unwrap();
    let values: Vec<(String, Value)> = targets[0]
        .datapoints
        .iter()
        .map(|dp| (dp.key.to_string(), dp.value.clone()))
        .collect();
    let cwd = dir.path().canonicalize().unwrap().display().to_string();
    assert_eq!(
        values,
        [
            ("home".to_owned(), Value::from("unset")),
            ("path".to_owned(), Value::from(SAFE_PATH)),
            ("given".to_owned(), Value::from("yes")),
            ("cwd".to_owned(), Value::from(cwd.as_str())),
        ]
    );

    settings.pass_environment = vec!["HOME".to_owned()];
    let targets = poller(&settings).poll().await.unwrap();
    assert_eq!(
        targets[0].datapoints[0].value,
        Value::from(std::env::var("HOME").unwrap().as_str())
    );
}

#[tokio::test]
async fn shell_mode_runs_a_command_line_and_argv_mode_does_not_expand_it() {
    let mut settings = settings(Path::new("/bin/sh"), keyvalue());
    settings.argv = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        "echo a=$((1 + 2))".to_owned(),
    ];
    let targets = poller(&settings).poll().await.unwrap();
    assert_eq!(targets[0].datapoints[0].value, Value::Int(3));

    settings.argv = vec!["/bin/echo".to_owned(), "b=$((1 + 2))".to_owned()];
    let parsed = poller(&settings).poll().await.unwrap();
    assert!(
        parsed[0].datapoints.is_empty(),
        "the argument reaches echo unexpanded and is not a number"
    );
}

#[tokio::test]
async fn a_missing_program_fails_to_start_with_its_name() {
    let settings = settings(Path::new("/nonexistent/read-meter"), keyvalue());
    let error = poller(&settings).poll().await.unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("poller test: cannot start \"/nonexistent/read-meter\": "),
        "{error}"
    );
}

#[tokio::test]
async fn a_setsid_shell_still_waiting_on_its_own_child_is_killed_with_that_child() {
    let dir = tempfile::tempdir().unwrap();
    let (shell_file, sleeper_file) = (dir.path().join("shell.pid"), dir.path().join("sleeper.pid"));
    // Neither is in the command's process group, and the sleeper's parent
    // is alive when the command ends: only the shell becomes the agent's
    // child, and the sleeper must be found all the same.
    let program = script(
        dir.path(),
        "escape.sh",
        &format!(
            "setsid sh -c 'sleep 300 & echo $! > \"$0\"; wait' '{}' > /dev/null 2>&1 < /dev/null &\n\
             echo $! > '{}'\n\
             while [ ! -s '{}' ]; do sleep 0.01; done\n\
             printf 'answer 42\\n'\n",
            sleeper_file.display(),
            shell_file.display(),
            sleeper_file.display(),
        ),
    );
    let mut settings = settings(&program, keyvalue());
    settings.environment.insert("PATH".into(), SAFE_PATH.into());
    let targets = poller(&settings).poll().await.expect("the poll succeeds");
    assert_eq!(targets[0].datapoints[0].key, "answer");
    let escaped = [read_pid(&shell_file).await, read_pid(&sleeper_file).await];
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(pid) = escaped.iter().find(|pid| running(**pid)) {
        assert!(
            Instant::now() < deadline,
            "{pid} of the setsid shell {escaped:?} and its sleeper outlived the poll"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_setsid_grandchild_holding_stdout_neither_fails_the_poll_nor_outlives_it() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("escaped.pid");
    // The sleeper leaves the process group (its own session) and keeps
    // stdout open: the poll must end when the script does.
    let program = script(
        dir.path(),
        "escape.sh",
        &format!(
            "setsid sleep 300 &\necho $! > '{}'\nprintf 'answer 42\\n'\n",
            pid_file.display()
        ),
    );
    let mut settings = settings(&program, keyvalue());
    settings.environment.insert("PATH".into(), SAFE_PATH.into());
    let mut poller = poller(&settings);
    let targets = poller.poll().await.expect("the poll succeeds");
    assert_eq!(targets[0].datapoints[0].key, "answer");
    let escaped = read_pid(&pid_file).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(escaped) {
        assert!(
            Instant::now() < deadline,
            "the setsid sleeper {escaped} outlived the poll"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
