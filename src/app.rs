//! The commands behind the command line.

use std::io::Write;

use anyhow::Context;
use tracing::level_filters::LevelFilter;

use crate::cli::{CacheCommand, Cli, Command};
use crate::collector;
use crate::config::{self, Settings};
use crate::daemon::{self, logging};
use crate::delivery::cache::Cache;
use crate::delivery::receiver::Receiver;
use crate::delivery::{Committed, Delivery, ReplayReport};

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
        Command::Run => {
            let settings = load(&config_dir)?;
            let (_guard, level) =
                logging::init_daemon(&settings.pattoo.log_directory, settings.pattoo.log_level)?;
            daemon::run(settings, level).await
        }
        Command::Check => {
            logging::init_stderr(LevelFilter::WARN);
            check(&load(&config_dir)?)
        }
        Command::Once { print, poller } => {
            let settings = load(&config_dir)?;
            logging::init_stderr(logging::level_filter(settings.pattoo.log_level));
            if !print {
                return once_deliver(&settings, poller.as_deref()).await;
            }
            once_print(&settings, poller.as_deref()).await
        }
        Command::Cache { action } => {
            let settings = load(&config_dir)?;
            logging::init_stderr(LevelFilter::INFO);
            cache_command(&settings, action).await
        }
        Command::Receive { listen, dir } => {
            logging::init_stderr(LevelFilter::INFO);
            receive(listen, &dir).await
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
        "posts to {}://{}/pattoo/api/v1/agent/receive/<agent id> (from {})",
        settings.agent.delivery.scheme.as_str(),
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
        "  keeping at most {} and nothing older than {}",
        human_bytes(settings.agent.cache.max_bytes),
        humantime::format_duration(settings.agent.cache.max_age)
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

/// A byte count in the largest binary unit that keeps it whole, e.g.
/// `512 MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while unit + 1 < UNITS.len() && value >= 1024 && value.is_multiple_of(1024) {
        value /= 1024;
        unit += 1;
    }
    format!("{value} {}", UNITS[unit])
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

/// `once` without `--print`: poll, post or cache each body, then send what
/// is cached. One line per body on stdout, written only once it is
/// committed.
async fn once_deliver(settings: &Settings, only: Option<&str>) -> anyhow::Result<()> {
    let mut collectors = collector::collectors(settings, only).context("preparing pollers")?;
    let delivery = Delivery::new(settings).context("preparing delivery")?;
    let mut stdout = std::io::stdout().lock();
    for collector in &mut collectors {
        let Some(body) = collector.collect().await else {
            continue;
        };
        let (agent_id, timestamp_ms) = (body.agent_id.clone(), body.timestamp_ms);
        match delivery.submit(body).await {
            Committed::Posted => writeln!(stdout, "posted {agent_id} {timestamp_ms}")?,
            Committed::Cached(path) => writeln!(
                stdout,
                "cached {agent_id} {timestamp_ms} {}",
                path.display()
            )?,
            Committed::Lost => writeln!(stdout, "lost {agent_id} {timestamp_ms}")?,
        }
        stdout.flush()?;
    }
    let report = delivery.replay_now().await;
    print_replay(&mut stdout, &report)?;
    let stats = delivery.stats();
    if stats.lost > 0 {
        anyhow::bail!("{} body(ies) could not be delivered or cached", stats.lost);
    }
    Ok(())
}

fn print_replay(out: &mut impl Write, report: &ReplayReport) -> anyhow::Result<()> {
    write!(
        out,
        "replayed {} cached body(ies); {} quarantined; {} still cached",
        report.delivered, report.quarantined, report.remaining
    )?;
    match &report.stopped_by {
        Some(reason) if report.remaining > 0 => writeln!(out, " (stopped: {reason})")?,
        _ => writeln!(out)?,
    }
    out.flush()?;
    Ok(())
}

async fn cache_command(settings: &Settings, action: CacheCommand) -> anyhow::Result<()> {
    // Only `replay` needs delivery; looking at the cache must not change it
    // (opening it for delivery applies max_bytes and max_age).
    let inspect = || {
        Cache::inspect(
            &settings.pattoo.cache_directory,
            &settings.agent.cache,
            Default::default(),
        )
    };
    let mut stdout = std::io::stdout().lock();
    match action {
        CacheCommand::Status => {
            let cache = inspect();
            cache.measure_only();
            let status = cache.status();
            writeln!(
                stdout,
                "cache {}: {} agent id(s)",
                cache.root().display(),
                status.len()
            )?;
            for agent in status {
                let oldest = agent
                    .oldest_ms
                    .map(|ms| {
                        humantime::format_rfc3339_millis(
                            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                        )
                        .to_string()
                    })
                    .unwrap_or_else(|| "-".to_owned());
                writeln!(
                    stdout,
                    "{}  files {}  bytes {}  oldest {oldest}",
                    agent.agent_id, agent.files, agent.bytes
                )?;
            }
        }
        CacheCommand::Replay => {
            let delivery = Delivery::new(settings).context("opening the cache")?;
            let report = delivery.replay_now().await;
            print_replay(&mut stdout, &report)?;
            if report.remaining > 0 {
                anyhow::bail!(
                    "{} body(ies) remain cached: {}",
                    report.remaining,
                    report.stopped_by.unwrap_or_default()
                );
            }
        }
        CacheCommand::Purge { older_than, yes } => {
            let cache = inspect();
            let cutoff_ms = crate::time::now_ms().saturating_sub(older_than.as_millis() as u64);
            if !yes {
                cache.measure_only();
                let (files, bytes) = cache.count_older_than(cutoff_ms);
                writeln!(
                    stdout,
                    "would delete {files} cached body(ies), {bytes} bytes, older than {}; add --yes to delete them",
                    humantime::format_duration(older_than)
                )?;
                return Err(Exit(1).into());
            }
            cache.measure_only();
            let (files, bytes) = cache.purge_older_than(cutoff_ms);
            writeln!(
                stdout,
                "deleted {files} cached body(ies), {bytes} bytes, older than {}",
                humantime::format_duration(older_than)
            )?;
        }
    }
    Ok(())
}

/// `receive`: serve until interrupted. Prints the bound address first so a
/// caller that asked for port 0 learns the port.
async fn receive(listen: std::net::SocketAddr, dir: &std::path::Path) -> anyhow::Result<()> {
    let receiver = std::sync::Arc::new(
        Receiver::new(dir).with_context(|| format!("receiver directory {}", dir.display()))?,
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let bound = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "listening on {bound}, storing bodies in {}",
            dir.display()
        )?;
        stdout.flush()?;
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    receiver.serve(listener, stopped).await?;
    Ok(())
}
