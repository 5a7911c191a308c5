//! The commands behind the command line.

use std::io::Write;

use anyhow::Context;

use crate::cli::{Cli, Command};
use crate::collector;
use crate::config::{self, Settings};

/// Exit status for configuration errors; the systemd unit lists it in
/// `RestartPreventExitStatus=` so a broken file does not cause a restart loop.
pub const EXIT_CONFIG: i32 = 78; // EX_CONFIG from sysexits.h

/// An error that has already been reported to the user and carries the
/// process exit status.
#[derive(Debug, thiserror::Error)]
#[error("exit status {0}")]
pub struct Exit(pub i32);

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config_dir = config::config_dir(cli.config_dir.as_deref());
    match cli.command {
        Command::Check => check(&load(&config_dir)?),
        Command::Once { print, poller } => {
            let settings = load(&config_dir)?;
            if !print {
                anyhow::bail!("posting is not available in this build yet; use `once --print`");
            }
            once_print(&settings, poller.as_deref()).await
        }
        Command::Completions { shell } => completions(shell),
    }
}

/// Writes the completion script; generated from the clap definitions so it
/// never falls behind the real options.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    // clap_complete panics when its writer fails (a closed pipe); build the
    // script in memory and report a failed write as an error instead.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("writing the completion script")
}

/// Loads the configuration, printing every error to stderr.
pub fn load(config_dir: &std::path::Path) -> anyhow::Result<Settings> {
    config::load(config_dir).map_err(|errors| {
        eprint!("{errors}");
        Exit(EXIT_CONFIG).into()
    })
}

fn check(settings: &Settings) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "configuration in {} is valid",
        settings.config_dir.display()
    )?;
    writeln!(
        out,
        "posts to http://{}/pattoo/api/v1/agent/receive/<agent id> (from {})",
        host_port(&settings.api.ip_address, settings.api.ip_bind_port),
        settings.api_source.display()
    )?;
    writeln!(
        out,
        "caches undelivered bodies in {}",
        settings.pattoo.cache_directory.display()
    )?;
    writeln!(
        out,
        "agent ids in {}/agent_id",
        settings.pattoo.daemon_directory.display()
    )?;
    writeln!(out, "{} poller(s):", settings.pollers.len())?;
    for poller in &settings.pollers {
        writeln!(
            out,
            "  {} ({}, every {:?}, as {}): {}",
            poller.name,
            poller.kind.type_name(),
            poller.polling_interval,
            poller.agent_program,
            poller.kind.describe()
        )?;
    }
    Ok(())
}

/// `host:port`, with an IPv6 literal in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn once_print(settings: &Settings, only: Option<&str>) -> anyhow::Result<()> {
    let mut collectors = collector::collectors(settings, only).context("preparing pollers")?;
    let mut stdout = std::io::stdout().lock();
    for collector in &mut collectors {
        if let Some(body) = collector.collect().await {
            stdout.write_all(&body.json)?;
            stdout.write_all(b"\n")?;
            stdout.flush()?;
        }
    }
    Ok(())
}
