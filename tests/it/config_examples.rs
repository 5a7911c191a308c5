//! Every poller kind's example (shipped in config/examples) is a valid
//! pattoo_agentd.yaml, and the host-metrics script the default configuration runs reads this
//! host for real.

use std::path::{Path, PathBuf};

use pattoo_agentd::config;
use pattoo_agentd::pollers::{KINDS, LEFT_OUT};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The variables of each `{env: NAME}` secret of `example` (outside
/// comments): `check` refuses a secret that is not there.
pub(crate) fn env_secrets(example: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in example.lines() {
        let code = line.split('#').next().unwrap_or_default();
        for (at, _) in code.match_indices("{env: ") {
            names.push(
                code[at + 6..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    names
}

/// The example with every file secret it names there: each `{file: /path}`
/// (outside comments) is moved into `dir` and written.
pub(crate) fn with_secrets(example: &str, dir: &Path) -> String {
    let mut text = String::new();
    for line in example.lines() {
        let mut line = line.to_owned();
        let code = line.split('#').next().unwrap_or_default().to_owned();
        for (at, _) in code.match_indices("{file: /") {
            let path: String = code[at + 7..].chars().take_while(|c| *c != '}').collect();
            let moved = dir.join(path.trim_start_matches('/').replace('/', "_"));
            std::fs::write(&moved, "example-secret\n").unwrap();
            line = line.replace(&path, &moved.display().to_string());
        }
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// Loads `example` as the whole `pattoo_agentd.yaml` of a configuration
/// directory, as `check` does.
pub(crate) fn load_example(example: &str) -> Result<config::Settings, String> {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().display();
    let text = with_secrets(example, dir.path());
    std::fs::write(
        dir.path().join("pattoo.yaml"),
        format!(
            "pattoo:\n  log_directory: {state}\n  cache_directory: {state}\n  daemon_directory: {state}\npattoo_agent_api:\n  ip_address: 127.0.0.1\n  ip_bind_port: 20201\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("pattoo_agentd.yaml"), text).unwrap();
    config::load(dir.path()).map_err(|errors| errors.to_string())
}

#[test]
fn every_kinds_example_passes_check_and_configures_pollers_of_that_kind() {
    assert!(!KINDS.is_empty());
    // The examples' `{env: NAME}` secrets are set in a process of the test's
    // own, never in the one every test shares.
    let names: Vec<String> = KINDS
        .iter()
        .flat_map(|kind| kind.examples)
        .flat_map(|example| env_secrets(example.text))
        .collect();
    let vars: Vec<(&str, &str)> = names
        .iter()
        .map(|name| (name.as_str(), "example-secret"))
        .collect();
    if !crate::common::alone::runs_here(
        module_path!(),
        "every_kinds_example_passes_check_and_configures_pollers_of_that_kind",
        &vars,
    ) {
        return;
    }
    for kind in KINDS {
        assert!(!kind.examples.is_empty(), "{} has no example", kind.name());
        for example in kind.examples {
            let settings = load_example(example.text)
                .unwrap_or_else(|errors| panic!("{}:\n{errors}", example.file_name));
            assert!(
                !settings.pollers.is_empty(),
                "{} configures no poller",
                example.file_name
            );
            for poller in &settings.pollers {
                assert_eq!(
                    poller.kind.name(),
                    kind.name(),
                    "{}: poller {}",
                    example.file_name,
                    poller.name
                );
            }
        }
    }
}

/// `config/examples/` ships each kind's examples under their names there:
/// links to the files beside each kind's code, so the two cannot differ.
#[test]
fn config_examples_holds_exactly_the_examples_of_the_kinds() {
    let mut shipped: Vec<String> = std::fs::read_dir(repo("config/examples"))
        .expect("config/examples exists")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    shipped.sort();
    let mut registered = Vec::new();
    for kind in KINDS {
        for example in kind.examples {
            let path = repo("config/examples").join(example.file_name);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                text == example.text,
                "{} is not the {} kind's example",
                path.display(),
                kind.name()
            );
            registered.push(example.file_name.to_owned());
        }
    }
    registered.sort();
    if LEFT_OUT.is_empty() {
        assert_eq!(shipped, registered, "files in config/examples");
    } else {
        // The examples of kinds this build leaves out are there too.
        assert!(registered.iter().all(|name| shipped.contains(name)));
    }
}

#[cfg(feature = "command")]
#[tokio::test]
async fn the_host_metrics_script_reads_load_and_memory_from_proc() {
    use std::time::Duration;

    use pattoo_agentd::formats::keyvalue::KeyValueOptions;
    use pattoo_agentd::formats::FormatSettings;
    use pattoo_agentd::model::Value;
    use pattoo_agentd::pollers::command::{CommandPoller, CommandSettings};
    use pattoo_agentd::pollers::PollerEnv;

    let settings = CommandSettings {
        argv: vec![repo("config/scripts/host-metrics").display().to_string()],
        format: FormatSettings::KeyValue(KeyValueOptions::default()),
        timeout: Duration::from_secs(10),
        kill_grace: Duration::from_secs(1),
        max_output_bytes: 65536,
        working_directory: None,
        environment: Default::default(),
        pass_environment: Vec::new(),
        inherit_environment: false,
        target: None,
    };
    let env = PollerEnv {
        hostname: "this-host".to_owned(),
    };
    let targets = CommandPoller::new("host", &settings, &env)
        .poll()
        .await
        .unwrap();
    assert_eq!(targets[0].target, "this-host");
    let value = |key: &str| -> f64 {
        let dp = targets[0]
            .datapoints
            .iter()
            .find(|dp| dp.key == key)
            .unwrap_or_else(|| panic!("no {key}"));
        match dp.value {
            Value::Int(v) => v as f64,
            Value::UInt(v) => v as f64,
            Value::Float(v) => v,
            ref other => panic!("{key} = {other:?}"),
        }
    };
    assert!(value("load_1m") >= 0.0);
    assert!(value("processes_total") >= 1.0);
    assert!(value("memory_total_bytes") > 1_000_000.0);
    assert!(value("memory_available_bytes") <= value("memory_total_bytes"));
    assert!((0.0..=100.0).contains(&value("memory_used_percent")));
}

/// The README's first command: the repository's default configuration,
/// run from the repository root, polls this host and prints real readings,
/// then the agent's own figures (self-monitoring is on by default).
#[cfg(feature = "command")]
#[test]
fn the_default_configuration_polls_this_host_from_the_repository_root() {
    // `--config-dir config`, relative, as the README has it.
    let output = crate::common::agentd(Path::new("config"))
        .current_dir(repo(""))
        .args(["once", "--print", "--self-monitoring"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let bodies: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one body per line"))
        .collect();
    assert_eq!(
        bodies.len(),
        2,
        "the host poller's body, then self-monitoring"
    );
    let keys = |body: &serde_json::Value| -> Vec<String> {
        body["pattoo_datapoints"]["key_value_pairs"]
            .as_object()
            .unwrap()
            .values()
            .filter(|pair| pair[0] == "pattoo_key")
            .map(|pair| pair[1].as_str().unwrap().to_owned())
            .collect()
    };
    let host = keys(&bodies[0]);
    for key in ["load_1m", "memory_total_bytes", "uptime_seconds"] {
        assert!(
            host.contains(&key.to_owned()),
            "{key} missing from {host:?}"
        );
    }
    let own = keys(&bodies[1]);
    for key in [
        "poller_polls",
        "poller_datapoints_posted",
        "cache_files",
        "process_resident_bytes",
    ] {
        assert!(own.contains(&key.to_owned()), "{key} missing from {own:?}");
    }
    assert_ne!(
        bodies[0]["pattoo_agent_id"], bodies[1]["pattoo_agent_id"],
        "self-monitoring posts under its own agent id"
    );
}

/// The README's table of kinds, as the table in `src/pollers/mod.rs` makes
/// it.
fn kinds_table() -> String {
    let code = |items: &mut dyn Iterator<Item = &str>| -> String {
        let items: Vec<String> = items.map(|item| format!("`{item}`")).collect();
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(", ")
        }
    };
    let mut table = String::from(
        "| `type:` | polls | folder | Cargo feature | default agent program | Python agent files it takes over | examples in `config/examples/` |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for kind in KINDS {
        table.push_str(&format!(
            "| {} | {} | [`{}`]({}) | `{}` | `{}` | {} | {} |\n",
            code(&mut kind.names.iter().copied()),
            kind.summary,
            kind.folder,
            kind.folder,
            kind.feature,
            kind.default_agent_program,
            code(&mut kind.drop_ins.iter().map(|d| d.file_name)),
            code(&mut kind.examples.iter().map(|e| e.file_name)),
        ));
    }
    table
}

#[test]
fn the_readmes_table_of_kinds_is_the_table_of_kinds() {
    if !LEFT_OUT.is_empty() {
        eprintln!("skipped: this build leaves out {LEFT_OUT:?}, the README lists every kind");
        return;
    }
    const START: &str = "<!-- kinds: made from the table in src/pollers/mod.rs -->\n";
    const END: &str = "<!-- end of kinds -->\n";
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let (_, rest) = readme
        .split_once(START)
        .expect("README.md has its table of kinds");
    let (written, _) = rest.split_once(END).expect("the table of kinds ends");
    let wanted = kinds_table();
    assert!(
        written == wanted,
        "README.md's table of kinds differs from the table in src/pollers/mod.rs; \
         between its markers it should read:\n{wanted}"
    );
}
