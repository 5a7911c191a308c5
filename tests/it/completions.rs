//! `pattoo-agentd completions <SHELL>`: the scripts the package installs.

use crate::common;

fn completions(shell: &str) -> std::process::Output {
    common::pattoo_agentd()
        .args(["completions", shell])
        // Completions must not need a configuration: packages generate them
        // at build time, where /etc/pattoo does not exist.
        .arg("--config-dir=/nonexistent")
        .output()
        .expect("the pattoo-agentd binary runs")
}

#[test]
fn bash_and_zsh_completions_offer_every_subcommand_without_reading_configuration() {
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef pattoo-agentd")] {
        let output = completions(shell);
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = String::from_utf8(output.stdout).expect("the script is UTF-8");
        assert!(script.contains(marker), "{shell} script lacks {marker:?}");
        for subcommand in ["check", "once", "completions"] {
            assert!(
                script.contains(subcommand),
                "{shell} script does not offer {subcommand}"
            );
        }
        assert!(script.contains("--config-dir"), "{shell}: no --config-dir");
    }
}

#[test]
fn an_unknown_shell_is_refused_with_the_supported_ones_listed() {
    let output = completions("ksh");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bash") && stderr.contains("zsh"),
        "{stderr}"
    );
}
