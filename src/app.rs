//! The commands behind the command line.

use std::io::Write;

use anyhow::Context;
use tracing::level_filters::LevelFilter;

use crate::address::host_port;
use crate::cli::{CacheCommand, Cli, Command};
use crate::collector;
use crate::config::{self, Settings};
use crate::daemon::{self, logging};
use crate::delivery::cache::Cache;
use crate::delivery::config::Encryption;
#[cfg(feature = "openpgp")]
use crate::delivery::openpgp;
use crate::delivery::receiver::Receiver;
use crate::delivery::{Committed, ReplayReport};
use crate::identity::HostName;
use crate::pollers::PollerEnv;

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
            // The unit has no separate check step: a configuration `run`
            // refuses is one failed start with exit status 78, which
            // `RestartPreventExitStatus=` sees because it is the main
            // process's own.
            let (settings, hostname) = load_and_build(&config_dir)?;
            let (_guard, level) =
                logging::init_daemon(&settings.pattoo.log_directory, settings.pattoo.log_level)?;
            daemon::run(settings, hostname, level).await
        }
        Command::Check => {
            logging::init_stderr(LevelFilter::WARN);
            let (settings, hostname) = load_and_build(&config_dir)?;
            check(&settings, &hostname)
        }
        Command::Reload { pid } => {
            logging::init_stderr(LevelFilter::WARN);
            let (settings, _) = load_and_build(&config_dir)?;
            signal_reload(&settings.pattoo.daemon_directory, pid)
        }
        Command::Once {
            print,
            poller,
            self_monitoring,
        } => {
            let settings = load(&config_dir)?;
            logging::init_stderr(logging::level_filter(settings.pattoo.log_level));
            let hostname = crate::identity::hostname(settings.agent.hostname.as_deref());
            hostname.log();
            let env = PollerEnv {
                hostname: hostname.name,
            };
            if !print {
                return once_deliver(&settings, &env, poller.as_deref()).await;
            }
            once_print(&settings, &env, poller.as_deref(), self_monitoring).await
        }
        Command::Status => {
            let settings = load(&config_dir)?;
            logging::init_stderr(LevelFilter::WARN);
            match crate::status::run(&settings).await? {
                true => Ok(()),
                false => Err(Exit(crate::status::EXIT_NOT_RUNNING).into()),
            }
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
        Command::Translations {
            program,
            language,
            agents,
        } => {
            let settings = load(&config_dir)?;
            translations(&settings, program.as_deref(), language.as_deref(), agents)
        }
        #[cfg(feature = "bacnet")]
        Command::Discover { kind } => {
            logging::init_stderr(LevelFilter::WARN);
            discover(kind).await
        }
        Command::SwitchFromPython {
            root,
            apply,
            undo,
            yes,
            wait,
            systemctl,
        } => {
            let exe = std::env::current_exe().context("finding this program to poll with")?;
            let plan = crate::switch::plan(&root, cli.config_dir.as_deref(), &exe)?;
            let mut stdout = std::io::stdout();
            if !undo {
                stdout.write_all(plan.text.as_bytes())?;
            }
            if !(apply || undo) {
                return Ok(());
            }
            let what = if undo { "undo the switch" } else { "switch" };
            if !yes && !confirm(&format!("{what} now?"))? {
                anyhow::bail!(
                    "did not {what}: not confirmed (give --yes when stdin is not a terminal)"
                );
            }
            if undo {
                let done = crate::switch::undo(&root, &plan.daemon_dir, &systemctl)?;
                stdout.write_all(done.as_bytes())?;
                return Ok(());
            }
            let done = crate::switch::apply(&root, &plan, &systemctl)?;
            stdout.write_all(done.as_bytes())?;
            if wait.is_zero() || plan.pollers.is_empty() {
                return Ok(());
            }
            writeln!(
                stdout,
                "waiting for the first poll of each drop-in to post (up to {} after it is due; --wait):",
                humantime::format_duration(wait)
            )?;
            stdout.flush()?;
            let checked = crate::switch::check_first_posts(&plan, wait).await?;
            stdout.write_all(checked.text.as_bytes())?;
            if !checked.all_posted {
                anyhow::bail!(
                    "not every drop-in posted its first poll; pattoo-agentd keeps running: fix what is named above (`pattoo-agentd status` shows each poller), or go back to the Python agents with `pattoo-agentd switch-from-python --undo`"
                );
            }
            writeln!(stdout, "every drop-in posted its first poll")?;
            Ok(())
        }
        Command::Completions { shell } => completions(shell),
        Command::Man => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&crate::manpage::render())
                .and_then(|()| stdout.flush())
                .context("writing the manual page to stdout")
        }
    }
}

/// Asks `question` on a terminal; false when stdin is not one or the answer
/// is not yes.
fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Prints the key (or agent) translation CSV on stdout.
fn translations(
    settings: &Settings,
    program: Option<&str>,
    language: Option<&str>,
    agents: bool,
) -> anyhow::Result<()> {
    use crate::model::translation::{agent_csv, key_csv, Language};
    // The server's language where it has names in it, else the first.
    let code = language.unwrap_or(&settings.pattoo.language);
    let found = Language::from_code(code).or(language.is_none().then_some(Language::ALL[0]));
    let Some(language) = found else {
        let known: Vec<&str> = Language::ALL.iter().map(|l| l.code()).collect();
        anyhow::bail!(
            "no translations in language {code:?}: this build has {}; give --language {}",
            known.join(", "),
            known[0]
        );
    };
    let csv = if agents {
        agent_csv(&crate::translations::agent_rows(
            settings, language, program,
        ))
    } else {
        key_csv(&crate::translations::key_rows(settings, language, program))
    };
    std::io::stdout()
        .write_all(csv.as_bytes())
        .context("writing the translations to stdout")
}

/// Prints what answered a discovery as configuration on stdout.
#[cfg(feature = "bacnet")]
async fn discover(kind: crate::cli::DiscoverCommand) -> anyhow::Result<()> {
    match kind {
        crate::cli::DiscoverCommand::Bacnet {
            local,
            broadcast,
            to,
            wait,
            low,
            high,
            objects,
            timeout_ms,
        } => {
            let options = crate::pollers::bacnet::discover::Discover {
                local,
                to: to.unwrap_or(broadcast),
                broadcast: to.is_none(),
                range: low.zip(high),
                wait: std::time::Duration::from_secs(wait),
                objects,
                timeout: std::time::Duration::from_millis(timeout_ms),
            };
            let text = crate::pollers::bacnet::discover::discover(&options).await?;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .context("writing the discovered devices to stdout")
        }
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
        logging::print_error(&errors.to_string());
        Exit(EXIT_CONFIG).into()
    })
}

/// Loads the configuration and builds, without starting them, the parts
/// `run` builds from it that can still fail: the client that posts to the
/// server and every poller (HTTP clients, CA, certificate and secret
/// files). So `check` fails where `run` would. Every problem is printed and
/// is a configuration error (exit 78). Reads files; no network I/O, and
/// nothing is written. Also looks up the host name posted under, once:
/// the caller passes it on rather than looking again.
pub fn load_and_build(config_dir: &std::path::Path) -> anyhow::Result<(Settings, HostName)> {
    let settings = load(config_dir)?;
    let mut problems = Vec::new();
    if let Err(error) =
        crate::delivery::poster::Poster::new(&settings.api, &settings.agent.delivery)
    {
        problems.push(format!("delivery to the pattoo server: {error}"));
    }
    let hostname = crate::identity::hostname(settings.agent.hostname.as_deref());
    let env = PollerEnv {
        hostname: hostname.name.clone(),
    };
    for poller in &settings.pollers {
        if let Err(error) = crate::pollers::Poller::new(poller, &env) {
            problems.push(format!("poller {}: {error:#}", poller.name));
        }
    }
    for spoke in &settings.spokes {
        if let Err(error) = crate::pollers::Poller::new(&spoke.poller, &env) {
            problems.push(format!("spoke {}: {error:#}", spoke.poller.name));
        }
    }
    if problems.is_empty() {
        return Ok((settings, hostname));
    }
    let mut text = format!(
        "{} problem(s) in the configuration in {}:\n",
        problems.len(),
        settings.config_dir.display()
    );
    for problem in problems {
        text.push_str(&format!("  {problem}\n"));
    }
    logging::print_error(&text);
    Err(Exit(EXIT_CONFIG).into())
}

/// Asks the running service to re-read its configuration, which the
/// caller has just validated (`ExecReload=` in the unit, so a broken file
/// fails `systemctl reload` and keeps the service on its old one). Only
/// this configuration's running agent is signalled: `pid` must be the
/// process the daemon directory's lock file names, a pattoo-agentd that
/// holds the lock; anything else is an error and nothing is signalled.
fn signal_reload(daemon_directory: &std::path::Path, pid: i32) -> anyhow::Result<()> {
    use nix::sys::signal::{kill, Signal};
    anyhow::ensure!(pid > 0, "--pid {pid} is not a process id");
    let agent = match daemon::lock::running_agent(daemon_directory) {
        Ok(agent) => agent,
        Err(no_agent) if no_agent.is_not_running() => anyhow::bail!(
            "not signalling process {pid}: no pattoo-agentd runs for this configuration ({no_agent})"
        ),
        Err(cannot_check) => anyhow::bail!("not signalling process {pid}: {cannot_check}"),
    };
    anyhow::ensure!(
        u32::try_from(pid) == Ok(agent),
        "not signalling process {pid}: it is not this configuration's pattoo-agentd, which runs as process {agent} (the lock file in {} says so)",
        daemon_directory.display()
    );
    kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP)
        .with_context(|| format!("cannot signal the service (process {pid}) to reload"))?;
    println!("configuration is valid; process {pid} is re-reading it");
    Ok(())
}

fn check(settings: &Settings, hostname: &HostName) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "configuration in {} is valid",
        settings.config_dir.display()
    )?;
    let server = format!(
        "{}://{}/pattoo/api/v1/agent/",
        settings.agent.delivery.scheme.as_str(),
        host_port(&settings.api.ip_address, settings.api.ip_bind_port),
    );
    match settings.agent.delivery.encryption {
        Encryption::None => writeln!(
            out,
            "posts to {server}receive/<agent id> (from {})",
            settings.api_source.display()
        )?,
        #[cfg(not(feature = "openpgp"))]
        Encryption::OpenPgp => writeln!(
            out,
            "encryption: openpgp, which this build lacks (the configuration refuses it)"
        )?,
        #[cfg(feature = "openpgp")]
        Encryption::OpenPgp => {
            writeln!(
                out,
                "posts through pattoo's encrypted exchange, {server}{{key,validation,encrypted}} (encryption: openpgp; from {})",
                settings.api_source.display()
            )?;
            let program = &settings.agent.self_monitoring.agent_program;
            let keys = openpgp::key_directory(&settings.pattoo.daemon_directory, program);
            match openpgp::existing_fingerprint(&keys) {
                Ok(Some(fingerprint)) => writeln!(
                    out,
                    "  OpenPGP key pair in {}, fingerprint {fingerprint}",
                    keys.display()
                )?,
                Ok(None) => writeln!(
                    out,
                    "  OpenPGP key pair in {}: not made yet; the agent makes it when it starts",
                    keys.display()
                )?,
                Err(error) => writeln!(
                    out,
                    "  OpenPGP key pair in {}: unusable ({error}); the agent makes a new one when it starts",
                    keys.display()
                )?,
            }
        }
    }
    writeln!(
        out,
        "caches undelivered bodies in {}",
        settings.pattoo.cache_directory.display()
    )?;
    writeln!(
        out,
        "  keeping at most {} and nothing older than {}",
        human_bytes(settings.agent.cache.max_bytes),
        human_duration(settings.agent.cache.max_age)
    )?;
    writeln!(
        out,
        "agent ids in {}/agent_id",
        settings.pattoo.daemon_directory.display()
    )?;
    writeln!(
        out,
        "posts as host name {:?} ({})",
        hostname.name, hostname.source
    )?;
    writeln!(out, "{} poller(s):", settings.pollers.len())?;
    for poller in &settings.pollers {
        writeln!(
            out,
            "  {} ({}, every {:?}, as {}): {}",
            poller.name,
            poller.kind.shown_type(),
            poller.polling_interval,
            poller.agent_program,
            poller.kind.describe()
        )?;
    }
    if !settings.spokes.is_empty() {
        writeln!(out, "{} spoke(s):", settings.spokes.len())?;
        for spoke in &settings.spokes {
            writeln!(out, "  {}: {}", spoke.poller.name, spoke.describe())?;
        }
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

/// A duration as people write it: `7 days`, `1 day 12h`, `90s`.
/// humantime's own form runs the number into the word (`7days`).
fn human_duration(duration: std::time::Duration) -> String {
    humantime::format_duration(duration)
        .to_string()
        .split(' ')
        .map(
            |part| match part.strip_suffix("days").or(part.strip_suffix("day")) {
                Some(number) => format!("{number} {}", &part[number.len()..]),
                None => part.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join(" ")
}

/// `once --print`: poll and print each body as one JSON line; with
/// `--self-monitoring` (and no one poller asked for), then the
/// self-monitoring body this run would post, so its keys, types and targets
/// can be seen before the service runs. Fails (exit status 1) when a
/// selected poller failed or read nothing, after the others printed.
async fn once_print(
    settings: &Settings,
    env: &PollerEnv,
    only: Option<&str>,
    show_self: bool,
) -> anyhow::Result<()> {
    let started_ms = crate::time::now_ms();
    let mut collectors = collector::collectors(settings, env, only).context("preparing pollers")?;
    collectors
        .iter_mut()
        .for_each(collector::Collector::poll_once);
    let mut stdout = std::io::stdout().lock();
    let mut empty = Vec::new();
    for collector in &mut collectors {
        match collector.collect().await {
            Ok(bodies) => {
                for body in bodies {
                    stdout.write_all(&body.json)?;
                    stdout.write_all(b"\n")?;
                    stdout.flush()?;
                }
            }
            Err(why) => empty.extend(nothing_from(&collector.name, &why)),
        }
    }
    if show_self && only.is_none() && settings.agent.self_monitoring.enabled {
        if let Some(body) = self_monitoring_body(settings, &env.hostname, &collectors, started_ms)?
        {
            stdout.write_all(&body.json)?;
            stdout.write_all(b"\n")?;
            stdout.flush()?;
        }
    }
    empty_pollers(&empty)
}

/// The self-monitoring body of a `once --print` run: its pollers' figures
/// and the cache as it is (looked at, not changed). Nothing was posted, so
/// whether the server is reachable is left out.
fn self_monitoring_body(
    settings: &Settings,
    hostname: &str,
    collectors: &[collector::Collector],
    started_ms: u64,
) -> anyhow::Result<Option<crate::model::PostBody>> {
    use crate::telemetry::figures::{Figures, PollerEntry, Sources};
    let pollers: Vec<PollerEntry> = collectors
        .iter()
        .map(|collector| PollerEntry {
            name: collector.name.clone(),
            kind: collector.kind,
            interval: settings
                .pollers
                .iter()
                .find(|p| p.name == collector.name)
                .map_or(settings.agent.polling_interval, |p| p.polling_interval),
            counters: collector.counters.clone(),
        })
        .collect();
    let cache = Cache::inspect(
        &settings.pattoo.cache_directory,
        &settings.agent.cache,
        Default::default(),
    );
    cache.measure_only();
    let (cached_files, cached_bytes) = cache.totals();
    let delivery = crate::delivery::StatsSnapshot {
        cached_files,
        cached_bytes,
        oldest_cached_ms: cache.oldest_ms(),
        ..Default::default()
    };
    let now_ms = crate::time::now_ms();
    let figures = Figures::read(&Sources {
        pollers: &pollers,
        delivery: &delivery,
        server_reachable: None,
        process: &Default::default(),
        started_ms,
        now_ms,
    });
    let who = crate::telemetry::SelfMonitoring::new(settings, hostname)?;
    Ok(who.body(&figures, now_ms))
}

/// `once` without `--print`: poll, post or cache each body, then send what
/// is cached. One line per body on stdout, written only once it is
/// committed. Fails (exit status 1) when a selected poller gave nothing or
/// a body was lost, after everything else was delivered.
async fn once_deliver(
    settings: &Settings,
    env: &PollerEnv,
    only: Option<&str>,
) -> anyhow::Result<()> {
    let mut collectors = collector::collectors(settings, env, only).context("preparing pollers")?;
    collectors
        .iter_mut()
        .for_each(collector::Collector::poll_once);
    let delivery =
        daemon::open_delivery(settings, Default::default()).context("preparing delivery")?;
    let mut stdout = std::io::stdout().lock();
    let mut empty = Vec::new();
    for collector in &mut collectors {
        let bodies = match collector.collect().await {
            Ok(bodies) => bodies,
            Err(why) => {
                empty.extend(nothing_from(&collector.name, &why));
                continue;
            }
        };
        for body in bodies {
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
    }
    let report = delivery.replay_now().await;
    print_replay(&mut stdout, &report)?;
    let stats = delivery.stats();
    if stats.lost > 0 {
        anyhow::bail!("{} body(ies) could not be delivered or cached", stats.lost);
    }
    empty_pollers(&empty)
}

/// Says on stderr, whatever the log level, that a poller gave nothing; an
/// operator running `once` by hand must see it. Returns the poller's name
/// when that counts as a failure: the poll failed, or it read nothing at
/// all. A poll whose every reading was dropped by the wire format's rules
/// (a value that is not a number, say) did what the format says, as the
/// Python agents do when they post nothing, so it is reported but does not
/// fail `once`.
fn nothing_from(poller: &str, why: &collector::NoBody) -> Option<String> {
    match why {
        collector::NoBody::PollFailed(_) => eprintln!("pattoo-agentd: {why}"),
        collector::NoBody::NothingValid { dropped, .. } => {
            eprintln!("pattoo-agentd: poller {poller}: {why}");
            if *dropped > 0 {
                return None;
            }
        }
    }
    Some(poller.to_owned())
}

fn empty_pollers(names: &[String]) -> anyhow::Result<()> {
    match names {
        [] => Ok(()),
        [one] => anyhow::bail!("poller {one} gave nothing to post"),
        many => anyhow::bail!(
            "{} pollers gave nothing to post: {}",
            many.len(),
            many.join(", ")
        ),
    }
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

/// Progress of `cache replay` on stderr: a bar on a terminal, a plain line
/// at each tenth otherwise (logs and pipes get no control characters).
enum ReplayProgress {
    Quiet,
    Bar(indicatif::ProgressBar),
    Lines { total: u64, next_tenth: u64 },
}

impl ReplayProgress {
    fn new(total: u64) -> ReplayProgress {
        use std::io::IsTerminal;
        if total == 0 {
            return ReplayProgress::Quiet;
        }
        if !std::io::stderr().is_terminal() {
            return ReplayProgress::Lines {
                total,
                next_tenth: 1,
            };
        }
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "replaying {bar:40} {pos}/{len} bodies, {per_sec}, {eta} left",
            )
            .expect("a valid template"),
        );
        ReplayProgress::Bar(bar)
    }

    fn update(&mut self, delivered: u64) {
        match self {
            ReplayProgress::Quiet => {}
            ReplayProgress::Bar(bar) => bar.set_position(delivered),
            ReplayProgress::Lines { total, next_tenth } => {
                // More can arrive meanwhile; never claim more than 100 %.
                while *next_tenth <= 10 && delivered * 10 >= *total * *next_tenth {
                    eprintln!(
                        "replay: {delivered} of {total} cached bodies sent ({}%)",
                        (*next_tenth * 10).min(100)
                    );
                    *next_tenth += 1;
                }
            }
        }
    }

    fn finish(self) {
        if let ReplayProgress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
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
            let delivery =
                daemon::open_delivery(settings, Default::default()).context("opening the cache")?;
            let mut progress = ReplayProgress::new(delivery.cache().totals().0);
            let report = delivery
                .replay_now_with(|delivered| progress.update(delivered))
                .await;
            progress.finish();
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
            let older_than_ms = u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX);
            let cutoff_ms = crate::time::now_ms().saturating_sub(older_than_ms);
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
